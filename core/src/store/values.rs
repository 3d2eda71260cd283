//! The value operations of the state (SPEC §8.1–§8.5): begin a write, complete or abort
//! it, retire, release, remove and remove_all, over the types of `object.rs` (see its
//! diagram).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use smallvec::smallvec;
use uuid::Uuid;

use super::ids::ValueId;
use super::object::*;
use super::segment::Placement;
use super::state::Inner;
use super::types::{PutError, RemoveError, WriteAborted};
use crate::kv_events::{KvEvent, KvEventKind};

impl Inner {
    /// Allocates `len` bytes for a write of `key` (SPEC §8.2 step 1), evicting if needed.
    pub(super) fn begin_value(&mut self, now: u64, key: &str, len: u64, visible: bool) -> Result<NewValue, PutError> {
        debug_assert!(len > 0);
        self.admit(now, key, len)?;
        let (seg_id, off) = self.allocate_space(now, len, Placement::Local)?;
        let rid = self.next_replica;
        self.next_replica += 1;
        let vid = self.next_value.take_next();
        let key: Arc<str> = match self.objects.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => Arc::from(key),
        };
        if visible {
            self.objects.entry(key.clone()).or_default().writes.push(vid);
        }
        let shared = Arc::new(ValueShared::default());
        let seg = self.segments.get_mut(&seg_id).expect("allocated on a known segment");
        seg.add_value(vid, off);
        let out = NewValue {
            vid,
            seg: seg_id,
            mapping: seg.mapping.clone().expect("local placement picks mapped segments"),
            map_off: seg.map_off + off,
            shared: shared.clone(),
        };
        self.insert_value(
            vid,
            Box::new(Value {
                key,
                len,
                replicas: smallvec![Loc { seg: seg_id, off, rid }],
                state: ValueState::Writing { visible },
                seq: 0,
                pending_at: None,
                shared,
                writer: None,
                started: now,
                checksum: None,
                pins: Pins::default(),
            }),
        );
        Ok(out)
    }

    /// The value becomes the key's current value (SPEC §8.2 step 3); the previous one is
    /// retired. Then the watermark pass runs if needed.
    pub(super) fn complete(&mut self, now: u64, vid: ValueId) -> Result<(), WriteAborted> {
        let seq = self.next_seq;
        let Some(v) = self.values.get_mut(&vid) else {
            return Err(WriteAborted);
        };
        let ValueState::Writing { visible } = v.state else {
            return Err(WriteAborted);
        };
        if v.shared.aborted.load(Ordering::SeqCst) {
            return Err(WriteAborted);
        }
        self.next_seq += 1;
        v.state = ValueState::Complete;
        v.seq = seq;
        // Relaxed: no reader can reach the value before the write lock we hold is released
        // (lookups go through the lock), which orders this store before any read of it. A
        // SeqCst store is an `xchg` that waits for every earlier store to drain, including
        // the value's bytes just copied into the segment: 8% of a 64-byte put.
        v.shared.lease.store(now, Ordering::Relaxed);
        if v.pins.soft_ttl > 0 {
            v.shared.soft_pin.store(now.saturating_add(v.pins.soft_ttl), Ordering::Relaxed);
        }
        let key = v.key.clone();
        if let Some(q) = self.kv.as_mut() {
            q.push(KvEvent { kind: KvEventKind::Stored, key: key.clone() });
        }
        self.current.insert(key.clone(), vid);
        let obj = self.objects.entry(key).or_default();
        if visible {
            obj.writes.retain(|&w| w != vid);
        }
        if let Some(old) = obj.current.replace(vid) {
            self.retire(old, now, false);
        }
        self.ha_value(vid);
        self.watermark_pass(now);
        Ok(())
    }

    /// Aborts a write (SPEC §8.2 step 4): frees its space, the key returns to its previous
    /// state. `count` adds one to `master_put_revoke_requests_total` for a visible write.
    pub(super) fn abort(&mut self, vid: ValueId, count: bool) {
        let Some(v) = self.values.get(&vid) else {
            return;
        };
        let ValueState::Writing { visible } = v.state else {
            return;
        };
        if self.values.get(&vid).is_some_and(|v| v.shared.reads.load(Ordering::SeqCst) > 0) {
            // A data-plane transfer is writing into it: the memory goes when the last one
            // ends (`value_read_ended`), as for a retired value, so it is never reused under
            // a late write.
            let v = self.values.get_mut(&vid).expect("present");
            v.shared.aborted.store(true, Ordering::SeqCst);
            v.state = ValueState::Retired;
            let key = v.key.clone();
            v.shared.release_ready.store(true, Ordering::SeqCst);
            if visible {
                self.detach_write(&key, vid);
                if count {
                    self.counters.put_revokes += 1;
                }
            }
            if self.values.get(&vid).is_some_and(|v| v.shared.reads.load(Ordering::SeqCst) == 0) {
                self.release(vid);
            }
            return;
        }
        let v = self.take_value(vid).expect("present");
        v.shared.aborted.store(true, Ordering::SeqCst);
        self.free_replicas(vid, &v);
        if visible {
            self.detach_write(&v.key, vid);
            if count {
                self.counters.put_revokes += 1;
            }
        }
    }

    /// Removes a visible write from its object, erasing the object if nothing is left.
    fn detach_write(&mut self, key: &str, vid: ValueId) {
        if let Some(obj) = self.objects.get_mut(key) {
            obj.writes.retain(|&w| w != vid);
            if obj.is_empty() {
                self.objects.remove(key);
            }
        }
    }

    /// Frees every replica's range on segments that still keep an allocator.
    fn free_replicas(&mut self, vid: ValueId, v: &Value) {
        for loc in &v.replicas {
            if let Some(seg) = self.segments.get_mut(&loc.seg) {
                seg.remove_value(vid, loc.off);
                if let Some(alloc) = seg.allocator_mut() {
                    alloc.free(loc.off, v.len);
                }
            }
        }
    }

    /// A complete value stops being current (replaced, removed, evicted, dropped).
    /// Its memory is released once no read is in flight and, unless `ignore_lease`,
    /// its lease has expired (SPEC §8.1).
    pub(super) fn retire(&mut self, vid: ValueId, now: u64, ignore_lease: bool) {
        self.ha_value(vid);
        let Some(v) = self.values.get_mut(&vid) else {
            return;
        };
        debug_assert_eq!(v.state, ValueState::Complete);
        v.state = ValueState::Retired;
        // Leave the point index unless a newer value of the key already took its place.
        let replaced = match self.current.get(&*v.key) {
            Some(slot) if *slot == vid => {
                self.current.remove(&*v.key);
                false
            }
            Some(_) => true,
            None => false,
        };
        if !replaced {
            // The key lost its value (a replaced value is reported by its successor's
            // `stored`).
            if let Some(q) = self.kv.as_mut() {
                q.push(KvEvent { kind: KvEventKind::Removed, key: v.key.clone() });
            }
        }
        let lease = v.shared.lease.load(Ordering::SeqCst);
        if ignore_lease || lease <= now {
            self.mark_ready(vid);
        } else {
            v.pending_at = Some(lease);
            self.pending.insert((lease, vid));
        }
    }

    /// The lease of a retired value no longer matters: release now or at the last read's end.
    pub(super) fn mark_ready(&mut self, vid: ValueId) {
        let Some(v) = self.values.get_mut(&vid) else {
            return;
        };
        if let Some(at) = v.pending_at.take() {
            self.pending.remove(&(at, vid));
        }
        // Pairs with the `fetch_sub` in `ValueRead::drop` (SeqCst on both sides): either
        // this load sees the last read gone, or that reader sees the flag and comes back.
        v.shared.release_ready.store(true, Ordering::SeqCst);
        if v.shared.reads.load(Ordering::SeqCst) == 0 {
            self.release(vid);
        }
    }

    /// Frees a retired value's memory. Idempotent (the record goes).
    pub(super) fn release(&mut self, vid: ValueId) {
        let Some(v) = self.take_value(vid) else {
            return;
        };
        debug_assert_eq!(v.state, ValueState::Retired);
        if let Some(at) = v.pending_at {
            self.pending.remove(&(at, vid));
        }
        self.free_replicas(vid, &v);
    }

    /// A read ended on `vid`; release it if it was the last one and the value waits for it.
    pub(super) fn value_read_ended(&mut self, vid: ValueId) {
        if let Some(v) = self.values.get(&vid) {
            if v.state == ValueState::Retired
                && v.shared.release_ready.load(Ordering::SeqCst)
                && v.shared.reads.load(Ordering::SeqCst) == 0
            {
                self.release(vid);
            }
        }
    }

    /// Is `vid` leased at `now` (`now < lease_timeout`)?
    pub(super) fn leased(&self, vid: ValueId, now: u64) -> bool {
        self.values.get(&vid).is_some_and(|v| v.shared.lease.load(Ordering::SeqCst) > now)
    }

    /// The current complete value of `key`.
    pub(super) fn current(&self, key: &str) -> Option<(ValueId, &Value)> {
        let vid = *self.current.get(key)?;
        Some((vid, self.values.get(&vid)?))
    }

    /// Removes `key`'s object and retires its current value (SPEC §6.6). `force` (RPC
    /// `Remove(key, true)`) ignores the lease.
    pub(super) fn remove_key(&mut self, now: u64, key: &str, force: bool) -> Result<(), RemoveError> {
        let obj = self.objects.get(key).ok_or(RemoveError::NotFound)?;
        if !force && obj.current.is_some_and(|vid| self.leased(vid, now)) {
            return Err(RemoveError::Leased);
        }
        if !obj.writes.is_empty() {
            return Err(RemoveError::BeingWritten);
        }
        let obj = self.objects.remove(key).expect("present");
        if let Some(vid) = obj.current {
            self.retire(vid, now, false);
        }
        Ok(())
    }

    /// One step of a removal of every removable object whose key satisfies `pick`: looks at
    /// up to `scan` objects in key order after `after` (from the first without it), removes
    /// those with a complete value, no write in progress and (unless `force`) no lease.
    /// Returns the number removed and the last key looked at, or None when the end was
    /// reached. [`crate::store::Store::remove_all`] runs it step by step, releasing the lock
    /// in between (docs/api.md §5.11).
    pub(super) fn remove_some(
        &mut self,
        now: u64,
        force: bool,
        pick: &dyn Fn(&str) -> bool,
        after: Option<&str>,
        scan: usize,
    ) -> (u64, Option<Arc<str>>) {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut last: Option<Arc<str>> = None;
        let mut seen = 0;
        let mut doomed: Vec<(Arc<str>, ValueId)> = Vec::new();
        for (k, o) in self.objects.range::<str, _>((start, Bound::Unbounded)) {
            if seen == scan {
                break;
            }
            seen += 1;
            last = Some(k.clone());
            if !o.writes.is_empty() || !pick(k) {
                continue;
            }
            let Some(vid) = o.current else { continue };
            if force || !self.leased(vid, now) {
                doomed.push((k.clone(), vid));
            }
        }
        let more = seen == scan;
        for (key, vid) in &doomed {
            self.objects.remove(key);
            self.retire(*vid, now, false);
        }
        (doomed.len() as u64, last.filter(|_| more))
    }

    /// Drops the replica of `vid` on the segment `seg`, which became UNMOUNTING (SPEC §7):
    /// writes are aborted, complete values left without a replica are erased regardless of
    /// leases, retired values lose their memory bookkeeping.
    pub(super) fn drop_replica(&mut self, now: u64, seg: Uuid, vid: ValueId) {
        if self.values.get(&vid).is_some_and(|v| v.state == ValueState::Complete) {
            self.ha_value(vid);
        }
        let Some(v) = self.values.get_mut(&vid) else {
            return;
        };
        match v.state {
            ValueState::Writing { .. } => {
                v.shared.aborted.store(true, Ordering::SeqCst);
                self.abort(vid, true);
            }
            ValueState::Complete => {
                let before = v.replicas.len();
                v.replicas.retain(|l| l.seg != seg);
                if let Some(t) = self.tenants.as_mut() {
                    t.uncharge(&v.key, v.len * (before - v.replicas.len()) as u64, 0);
                }
                if v.replicas.is_empty() {
                    let key = v.key.clone();
                    if let Some(obj) = self.objects.get_mut(&*key) {
                        obj.current = None;
                        if obj.is_empty() {
                            self.objects.remove(&*key);
                        }
                    }
                    self.retire(vid, now, true);
                }
            }
            ValueState::Retired => {
                let before = v.replicas.len();
                v.replicas.retain(|l| l.seg != seg);
                if let Some(t) = self.tenants.as_mut() {
                    t.uncharge(&v.key, v.len * (before - v.replicas.len()) as u64, 0);
                }
                if v.replicas.is_empty() {
                    // Nothing left to free: readers in flight keep the mapping themselves.
                    let v = self.take_value(vid).expect("present");
                    if let Some(at) = v.pending_at {
                        self.pending.remove(&(at, vid));
                    }
                }
            }
        }
    }
}
