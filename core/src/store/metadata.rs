//! The entries of the HTTP metadata server the upstream transfer engine uses
//! (`GET/PUT/DELETE /metadata?key=K`, upstream-behavior §7): an in-memory map from key to
//! bytes, lost on restart (clients re-publish when they remount).
//!
//! Keys are stored decoded (the HTTP layer applies one decoding rule to every method), so the
//! entries of a node can be found by name: `mooncake/[<cluster>/]ram/<node name>` and
//! `mooncake/[<cluster>/]rpc_meta/<node name>` are deleted when the node expires.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The outcome of a PUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataPut {
    /// Stored (new or replaced).
    Updated,
    /// An `rpc_meta` key already held exactly these bytes.
    Unchanged,
    /// An `rpc_meta` key already held other bytes: refused (as upstream).
    Duplicate,
}

/// The metadata map.
#[derive(Debug, Default)]
pub struct Metadata {
    map: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl Metadata {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bytes stored under `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().get(key).cloned()
    }

    /// Stores `value` under `key`. A key containing `rpc_meta` cannot be changed once set.
    pub fn put(&self, key: &str, value: &[u8]) -> MetadataPut {
        let mut map = self.lock();
        if key.contains("rpc_meta") {
            if let Some(old) = map.get(key) {
                return if old == value { MetadataPut::Unchanged } else { MetadataPut::Duplicate };
            }
        }
        map.insert(key.to_string(), value.to_vec());
        MetadataPut::Updated
    }

    /// Deletes `key`; false when it was not there.
    pub fn delete(&self, key: &str) -> bool {
        self.lock().remove(key).is_some()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deletes the transfer-engine entries of node `name`: every key `mooncake/…/ram/<name>`
    /// or `mooncake/…/rpc_meta/<name>`. Returns how many were deleted.
    pub fn remove_node(&self, name: &str) -> usize {
        if name.is_empty() {
            return 0;
        }
        let ram = format!("/ram/{name}");
        let rpc = format!("/rpc_meta/{name}");
        let mut map = self.lock();
        let before = map.len();
        map.retain(|k, _| !(k.starts_with("mooncake/") && (k.ends_with(&ram) || k.ends_with(&rpc))));
        before - map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_delete_and_rpc_meta_rules() {
        let m = Metadata::default();
        assert_eq!(m.put("mooncake/ram/h:1", b"{}"), MetadataPut::Updated);
        assert_eq!(m.put("mooncake/ram/h:1", b"{\"a\":1}"), MetadataPut::Updated);
        assert_eq!(m.get("mooncake/ram/h:1").as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(m.put("mooncake/rpc_meta/h:1", b"x"), MetadataPut::Updated);
        assert_eq!(m.put("mooncake/rpc_meta/h:1", b"x"), MetadataPut::Unchanged);
        assert_eq!(m.put("mooncake/rpc_meta/h:1", b"y"), MetadataPut::Duplicate);
        assert_eq!(m.get("mooncake/rpc_meta/h:1").as_deref(), Some(&b"x"[..]));
        assert!(m.delete("mooncake/rpc_meta/h:1"));
        assert!(!m.delete("mooncake/rpc_meta/h:1"));
        assert_eq!(m.put("", b""), MetadataPut::Updated);
        assert_eq!(m.get("").as_deref(), Some(&b""[..]));
    }

    #[test]
    fn node_entries_are_removed_by_name() {
        let m = Metadata::default();
        for k in [
            "mooncake/ram/h:1",
            "mooncake/rpc_meta/h:1",
            "mooncake/cluster-a/ram/h:1",
            "mooncake/ram/h:10",
            "mooncake/ram/xh:1",
            "other/ram/h:1",
        ] {
            m.put(k, b"v");
        }
        assert_eq!(m.remove_node("h:1"), 3);
        assert_eq!(m.len(), 3);
        assert!(m.get("mooncake/ram/h:10").is_some());
        assert!(m.get("mooncake/ram/xh:1").is_some(), "names match whole path segments only");
        assert_eq!(m.remove_node(""), 0);
    }
}
