//! Hash maps split into shards, so that growing one never moves more than a shard.
//!
//! A `HashMap` doubles its table when it fills up, moving every entry while the store's
//! write lock is held. With a million values that is one stall of tens of milliseconds
//! (the value records are ~150 bytes), and every writer and reader waits behind it: it
//! was the p99 of 64-byte PUTs. With [`SHARDS`] shards a doubling moves 1/64 of the
//! entries; the total work is the same, spread over many small steps.
//!
//! The shard is chosen by [`ShardKey::shard`], a cheap function of the key that is not
//! keyed: someone choosing keys could put them all in one shard, which is no worse than
//! one unsharded map, and within a shard the map's own hasher (SipHash with a random key
//! for client-chosen strings) still spreads them.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

/// Number of shards (a power of two).
pub(super) const SHARDS: usize = 64;

/// Picks a key's shard.
pub(super) trait ShardKey {
    fn shard(&self) -> usize;
}

impl ShardKey for u64 {
    fn shard(&self) -> usize {
        // Ids are sequential: consecutive ids go to consecutive shards.
        (*self as usize) & (SHARDS - 1)
    }
}

impl ShardKey for str {
    fn shard(&self) -> usize {
        // Length and the last 8 bytes (keys often share long prefixes and differ at the
        // end), folded with a multiply.
        let b = self.as_bytes();
        let mut tail = [0u8; 8];
        let n = b.len().min(8);
        tail[..n].copy_from_slice(&b[b.len() - n..]);
        let x = (u64::from_le_bytes(tail) ^ b.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (x >> 58) as usize & (SHARDS - 1)
    }
}

impl ShardKey for Arc<str> {
    fn shard(&self) -> usize {
        str::shard(self)
    }
}

/// A `HashMap` in [`SHARDS`] pieces, with the part of `HashMap`'s API the store uses.
pub(super) struct ShardedMap<K, V, S> {
    shards: Box<[HashMap<K, V, S>]>,
}

impl<K: Hash + Eq + ShardKey, V, S: BuildHasher + Default> Default for ShardedMap<K, V, S> {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| HashMap::default()).collect() }
    }
}

impl<K: Hash + Eq + ShardKey, V, S: BuildHasher> ShardedMap<K, V, S> {
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }

    pub(super) fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ShardKey + ?Sized,
    {
        self.shards[k.shard()].get(k)
    }

    pub(super) fn get_mut<Q>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ShardKey + ?Sized,
    {
        self.shards[k.shard()].get_mut(k)
    }

    #[cfg(test)]
    pub(super) fn contains_key<Q>(&self, k: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ShardKey + ?Sized,
    {
        self.shards[k.shard()].contains_key(k)
    }

    pub(super) fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.shards[k.shard()].insert(k, v)
    }

    pub(super) fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ShardKey + ?Sized,
    {
        self.shards[k.shard()].remove(k)
    }

    /// Entries in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }
}

impl<K, Q, V, S> std::ops::Index<&Q> for ShardedMap<K, V, S>
where
    K: Hash + Eq + ShardKey + Borrow<Q>,
    Q: Hash + Eq + ShardKey + ?Sized,
    S: BuildHasher,
{
    type Output = V;
    /// Panics when `k` is absent, as `HashMap`'s index does.
    fn index(&self, k: &Q) -> &V {
        self.get(k).expect("key present in ShardedMap")
    }
}

/// `for (k, v) in &map` (the invariant checks of the tests).
#[cfg(test)]
impl<'a, K: Hash + Eq + ShardKey, V, S: BuildHasher> IntoIterator for &'a ShardedMap<K, V, S> {
    type Item = (&'a K, &'a V);
    type IntoIter = Box<dyn Iterator<Item = (&'a K, &'a V)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::RandomState;

    #[test]
    fn behaves_like_one_map() {
        let mut m: ShardedMap<Arc<str>, u64, RandomState> = ShardedMap::default();
        let mut model = HashMap::new();
        for i in 0..5000u64 {
            let k: Arc<str> = Arc::from(format!("key-{}", i * 7919 % 3001));
            if i % 3 == 0 {
                assert_eq!(m.remove(&*k), model.remove(&k));
            } else {
                assert_eq!(m.insert(k.clone(), i), model.insert(k, i));
            }
            assert_eq!(m.len(), model.len());
        }
        for (k, v) in &model {
            assert_eq!(m.get(&**k), Some(v));
            assert!(m.contains_key(&**k));
        }
        assert_eq!(m.iter().count(), model.len());
        let used = m.shards.iter().filter(|s| !s.is_empty()).count();
        assert!(used > SHARDS / 2, "keys spread over shards: {used}");
    }

    #[test]
    fn short_and_empty_keys() {
        let mut m: ShardedMap<Arc<str>, u8, RandomState> = ShardedMap::default();
        for k in ["", "a", "ab", "12345678", "123456789"] {
            m.insert(Arc::from(k), 1);
            assert_eq!(m.get(k), Some(&1));
        }
        assert_eq!(m.len(), 5);
    }
}
