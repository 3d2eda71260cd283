//! Allocation and eviction (SPEC §8.2 step 1, §8.6).
//!
//! - **Candidates**: complete current values with no unexpired lease, not hard-pinned,
//!   whose key has no visible write in progress, with a replica on a MOUNTED segment that is
//!   not withheld; ordered by `(soft-pinned, lease_timeout, completion order)`: values
//!   soft-pinned past now come after every unpinned one (and are no candidates at all with
//!   `--allow-evict-soft-pinned-objects false`). A never-read value's lease deadline is its
//!   completion time.
//! - **Watermark pass** after each completed write while `used > H`, evicting the first
//!   `min(N, ceil(N × max(r, used − H + r)))` candidates; also on a periodic check
//!   every 10 ms while `used > H` and candidates exist.
//! - **Allocation-failure passes** (`r > 0`) of `min(N, ceil(N × r))` candidates until the
//!   allocation fits or no candidate remains.
//!
//! The periodic check is armed cheaply (`used > H` is O(segments)) after every mutation;
//! when it runs and finds neither a candidate nor a leased value that will become one, it
//! disarms until the next mutation. So `poll_timeout` may report one check that turns out
//! to have nothing to do, never a stream of them.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::ids::ValueId;
use super::object::ValueState;
use super::segment::Placement;
use super::state::{Inner, EVICTION_PERIOD_NS};
use super::types::PutError;

/// An eviction candidate: ordered by `(soft_pinned, lease, seq)`.
#[derive(Clone, Copy)]
pub(super) struct Candidate {
    pub(super) soft_pinned: bool,
    pub(super) lease: u64,
    pub(super) seq: u64,
    pub(super) vid: ValueId,
}

/// Puts the `k` first candidates (by `(soft_pinned, lease, seq)`) in front, in no
/// particular order: a selection, O(n), instead of sorting them all (the pass evicts all `k`
/// anyway).
fn select_first(cands: &mut [Candidate], k: usize) {
    if k > 0 && k < cands.len() {
        cands.select_nth_unstable_by_key(k - 1, |c| (c.soft_pinned, c.lease, c.seq));
    }
}

impl Inner {
    /// `master_allocated_bytes / master_total_capacity_bytes`, 0 when the capacity is 0.
    pub(super) fn used_ratio(&self) -> f64 {
        let (allocated, capacity) = self.totals();
        if capacity == 0 {
            0.0
        } else {
            allocated as f64 / capacity as f64
        }
    }

    fn above_watermark(&self) -> bool {
        self.used_ratio() > self.params.high_watermark
    }

    /// Complete values of keys without a visible write, with a replica on a MOUNTED
    /// segment (of the `only` kind, if given). Returns (candidates at `now`, unordered:
    /// see [`select_first`]; earliest lease of the leased ones).
    pub(super) fn candidates(
        &self,
        now: u64,
        only: Option<Placement>,
        tenant: Option<&str>,
    ) -> (Vec<Candidate>, Option<u64>) {
        // The admitted segments once, not one B-tree search per replica.
        let admitted: HashSet<Uuid> = self
            .segments
            .values()
            .filter(|s| s.is_mounted() && !s.withheld && only.is_none_or(|p| p.admits(s)))
            .map(|s| s.id)
            .collect();
        let mut out = Vec::new();
        let mut next_lease: Option<u64> = None;
        for obj in self.objects.values() {
            if !obj.writes.is_empty() {
                continue;
            }
            let Some(vid) = obj.current else { continue };
            let Some(v) = self.values.get(&vid) else {
                continue;
            };
            debug_assert_eq!(v.state, ValueState::Complete);
            if v.pins.hard
                || !v.replicas.iter().any(|l| admitted.contains(&l.seg))
                || tenant.is_some_and(|t| super::tenant::split_key(&v.key).0 != t)
            {
                continue;
            }
            let lease = v.shared.lease.load(Ordering::SeqCst);
            if lease > now {
                next_lease = Some(next_lease.map_or(lease, |n| n.min(lease)));
                continue;
            }
            let soft = v.shared.soft_pin.load(Ordering::SeqCst);
            let soft_pinned = soft > now;
            if soft_pinned && !self.params.evict_soft_pinned {
                // A candidate again when its soft pin runs out.
                next_lease = Some(next_lease.map_or(soft, |n| n.min(soft)));
                continue;
            }
            out.push(Candidate { soft_pinned, lease, seq: v.seq, vid });
        }
        (out, next_lease)
    }

    /// One pass evicting the first `k` candidates; updates the counters.
    pub(super) fn eviction_pass(&mut self, now: u64, cands: &mut [Candidate], k: usize) {
        let mut keys = 0;
        let mut bytes = 0;
        select_first(cands, k);
        for c in &cands[..k.min(cands.len())] {
            let Some((len, key)) = self.values.get(&c.vid).map(|v| (v.len, v.key.clone())) else {
                continue;
            };
            self.objects.remove(&key);
            self.retire(c.vid, now, false);
            keys += 1;
            bytes += len;
        }
        let ctr = &mut self.counters;
        ctr.attempted_evictions += 1;
        if keys > 0 {
            ctr.successful_evictions += 1;
        }
        ctr.evicted_keys += keys;
        ctr.evicted_bytes += bytes;
        log::debug!("eviction pass: {keys} values, {bytes} bytes");
    }

    /// `min(N, ceil(N × f))`.
    fn share(n: usize, f: f64) -> usize {
        let k = (n as f64 * f).ceil();
        if k >= n as f64 {
            n
        } else if k > 0.0 {
            k as usize
        } else {
            0
        }
    }

    /// The watermark pass (SPEC §8.6): runs if `used > H`, evicting
    /// `min(N, ceil(N × max(r, used − H + r)))` candidates.
    pub(super) fn watermark_pass(&mut self, now: u64) {
        let used = self.used_ratio();
        let (h, r) = (self.params.high_watermark, self.params.eviction_ratio);
        if used > h {
            let (mut cands, _) = self.candidates(now, None, None);
            let f = r.max(used - h + r);
            let k = Self::share(cands.len(), f);
            self.eviction_pass(now, &mut cands, k);
        }
        self.arm_eviction(now);
    }

    /// The periodic check: a watermark pass if `used > H` and a candidate exists; then the
    /// next check is scheduled (10 ms later while candidates remain, at the earliest lease
    /// expiry if only leased values are left, none otherwise).
    pub(super) fn periodic_eviction(&mut self, now: u64) {
        self.evict_at = None;
        if !self.above_watermark() {
            return;
        }
        let (mut cands, next_lease) = self.candidates(now, None, None);
        let mut left = cands.len();
        if !cands.is_empty() {
            let used = self.used_ratio();
            let (h, r) = (self.params.high_watermark, self.params.eviction_ratio);
            let k = Self::share(cands.len(), r.max(used - h + r));
            self.eviction_pass(now, &mut cands, k);
            if !self.above_watermark() {
                return;
            }
            // What the scan found minus what was evicted (evicting changes no lease): no
            // second scan.
            left -= k.min(left);
        }
        let next = now + EVICTION_PERIOD_NS;
        self.evict_at = if left > 0 { Some(next) } else { next_lease.map(|l| l.max(next)) };
    }

    /// After a mutation: arms the periodic check if `used > H` and it is not armed,
    /// disarms it if `used ≤ H`.
    pub(super) fn arm_eviction(&mut self, now: u64) {
        if !self.above_watermark() {
            self.evict_at = None;
        } else if self.evict_at.is_none() {
            self.evict_at = Some(now + EVICTION_PERIOD_NS);
        }
    }

    /// Takes `len` bytes on the MOUNTED segment with the tightest fit (SPEC §8.2 step 1)
    /// among those `place` admits and `pick` accepts.
    pub(super) fn try_place(
        &mut self,
        len: u64,
        place: Placement,
        pick: &dyn Fn(&super::segment::Segment) -> bool,
    ) -> Option<(Uuid, u64)> {
        let (_, id) = self
            .segments
            .values()
            .filter(|s| s.is_mounted() && place.admits(s) && pick(s))
            .filter_map(|s| Some((s.allocator()?.best_fit(len)?, s.id)))
            .min()?;
        let off = self.segments.get_mut(&id)?.mounted_allocator_mut()?.alloc(len)?;
        Some((id, off))
    }

    /// Allocation with eviction on failure (SPEC §8.2 step 1, §8.6), on segments `place`
    /// admits; allocation-failure passes evict only values stored there.
    pub(super) fn allocate_space(&mut self, now: u64, len: u64, place: Placement) -> Result<(Uuid, u64), PutError> {
        let largest = self.segments.values().filter(|s| s.is_mounted() && place.admits(s)).map(|s| s.size).max();
        if largest.is_none_or(|l| len > l) {
            return Err(PutError::InsufficientStorage);
        }
        loop {
            if let Some(spot) = self.try_place(len, place, &|_| true) {
                return Ok(spot);
            }
            let r = self.params.eviction_ratio;
            if r.is_nan() || r <= 0.0 {
                return Err(PutError::InsufficientStorage);
            }
            let (mut cands, _) = self.candidates(now, Some(place), None);
            if cands.is_empty() {
                return Err(PutError::InsufficientStorage);
            }
            let k = Self::share(cands.len(), r).max(1);
            self.eviction_pass(now, &mut cands, k);
        }
    }
}
