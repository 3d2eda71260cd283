//! Per-segment allocator: exact-size, best-fit, with coalescing of free ranges.
//!
//! Free ranges are kept twice: by offset (to find the neighbours of a freed range and
//! merge with them) and by `(length, offset)` (to find the smallest range that fits,
//! lowest offset first). Every operation is O(log n) in the number of free ranges.
//! There is no padding: a value of 11 bytes takes exactly 11 bytes (SPEC §8.1).

use std::collections::{BTreeMap, BTreeSet};

/// Offsets are relative to the start of the segment.
#[derive(Debug)]
pub(super) struct Allocator {
    size: u64,
    used: u64,
    /// offset → length of each free range.
    by_offset: BTreeMap<u64, u64>,
    /// (length, offset) of each free range.
    by_size: BTreeSet<(u64, u64)>,
}

impl Allocator {
    /// An allocator over `size` free bytes.
    pub(super) fn new(size: u64) -> Self {
        let mut a = Self { size, used: 0, by_offset: BTreeMap::new(), by_size: BTreeSet::new() };
        if size > 0 {
            a.insert_free(0, size);
        }
        a
    }

    /// Bytes handed out and not yet freed.
    pub(super) fn used(&self) -> u64 {
        self.used
    }

    /// Length of the free range `alloc(len)` would carve from, if any.
    pub(super) fn best_fit(&self, len: u64) -> Option<u64> {
        self.by_size.range((len, 0)..).next().map(|&(l, _)| l)
    }

    /// Takes `len` (≥ 1) bytes; returns their offset.
    pub(super) fn alloc(&mut self, len: u64) -> Option<u64> {
        debug_assert!(len > 0);
        let &(blen, boff) = self.by_size.range((len, 0)..).next()?;
        self.remove_free(boff, blen);
        if blen > len {
            self.insert_free(boff + len, blen - len);
        }
        self.used += len;
        Some(boff)
    }

    /// Takes exactly `[off, off + len)` (≥ 1 byte) if it is free; false otherwise. A standby
    /// restores a replicated value at the place its leader allocated (`journal.rs`).
    pub(super) fn reserve(&mut self, off: u64, len: u64) -> bool {
        let Some(end) = off.checked_add(len) else { return false };
        if len == 0 || end > self.size {
            return false;
        }
        let Some((&foff, &flen)) = self.by_offset.range(..=off).next_back() else { return false };
        if foff + flen < end {
            return false;
        }
        self.remove_free(foff, flen);
        if foff < off {
            self.insert_free(foff, off - foff);
        }
        if end < foff + flen {
            self.insert_free(end, foff + flen - end);
        }
        self.used += len;
        true
    }

    /// Returns `[off, off + len)`, which must have come from [`Allocator::alloc`].
    pub(super) fn free(&mut self, off: u64, len: u64) {
        debug_assert!(len > 0 && off + len <= self.size && self.used >= len);
        let mut start = off;
        let mut end = off + len;
        if let Some((&poff, &plen)) = self.by_offset.range(..off).next_back() {
            debug_assert!(poff + plen <= off, "double free or overlap at {off}");
            if poff + plen == off {
                self.remove_free(poff, plen);
                start = poff;
            }
        }
        if let Some(&slen) = self.by_offset.get(&end) {
            self.remove_free(end, slen);
            end += slen;
        }
        debug_assert!(self.by_offset.range(start..end).next().is_none(), "double free at {off}");
        self.insert_free(start, end - start);
        self.used -= len;
    }

    /// Free ranges in address order (tests and invariant checks).
    #[cfg(test)]
    pub(super) fn free_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.by_offset.iter().map(|(&o, &l)| (o, l))
    }

    fn insert_free(&mut self, off: u64, len: u64) {
        self.by_offset.insert(off, len);
        self.by_size.insert((len, off));
    }

    fn remove_free(&mut self, off: u64, len: u64) {
        self.by_offset.remove(&off);
        self.by_size.remove(&(len, off));
    }
}
