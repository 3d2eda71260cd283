//! Identifiers the store assigns: [`NodeId`] (a store node's index) and [`ValueId`] (a
//! value's sequence number), and the cheap hasher for maps keyed by them. A leaf.

use std::hash::Hasher;

/// Index of a store node in `Inner::nodes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct NodeId(pub(super) usize);

/// A value's id: a sequence number the store assigns (never chosen by a client), also the
/// RPC replica id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct ValueId(pub(super) u64);

impl ValueId {
    /// This id, and advances `self` to the next one.
    pub(super) fn take_next(&mut self) -> ValueId {
        let id = *self;
        self.0 += 1;
        id
    }
}

/// Hashes a [`ValueId`] (a sequence number the store assigns, never chosen by a client)
/// with one multiply instead of SipHash: values are looked up on every read.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing; hashbrown takes the top 7 bits as tags and the low bits as the
        // bucket, so fold the high half down.
        let h = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
}

impl super::shard::ShardKey for ValueId {
    fn spread(&self) -> u64 {
        self.0.spread()
    }
}
