//! The HTTP metadata server of the upstream transfer engine (upstream-behavior §7), on the main
//! listener: `GET/PUT/DELETE /metadata?key=K`.
//!
//! One key rule for every method: the `key` query parameter is percent-decoded like every
//! other query parameter (SPEC §1.4), so the transfer engine's escaped keys
//! (`mooncake%2Fram%2Fhost%3Aport`) and plain ones name the same entry. Bodies are stored and
//! returned verbatim. Status codes and texts are upstream's (the transfer engine treats any
//! non-200 as a failure).

use crate::http::{Method, RequestHead, Response};
use crate::store::MetadataPut;

use super::params::query_param;
use super::reply::{json_reply, text_reply};
use super::Service;

impl Service {
    /// `/metadata?key=K` (GET, HEAD, PUT, DELETE).
    pub(super) fn metadata(&self, head: &RequestHead, body: &[u8]) -> Response {
        let text = |status, msg: &'static str| text_reply(status, msg.as_bytes());
        let Some(raw) = query_param(head.query.as_deref(), "key") else {
            return text(400, "Missing key parameter");
        };
        let key = String::from_utf8_lossy(&raw);
        let meta = self.master.store().metadata();
        match head.method {
            Method::Put => match meta.put(&key, body) {
                MetadataPut::Updated => text(200, "metadata updated"),
                MetadataPut::Unchanged => text(200, "metadata unchanged"),
                MetadataPut::Duplicate => text(400, "Duplicate rpc_meta key not allowed"),
            },
            Method::Delete => match meta.delete(&key) {
                true => text(200, "metadata deleted"),
                false => text(404, "metadata not found"),
            },
            _ => match meta.get(&key) {
                Some(v) => json_reply(200, v),
                None => text(404, "metadata not found"),
            },
        }
    }
}
