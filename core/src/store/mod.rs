//! Master state: segments, their allocators, objects, leases and eviction (SPEC §7, §8).
//!
//! [`Store`] is shared by every worker thread (`Arc<Store>`). It never reads a clock:
//! every method that depends on time takes `now`.
//!
//! # Layout
//!
//! - `segment.rs`: mappings, §5.5 splitting, the segment lifecycle state machine.
//! - `alloc.rs`: the per-segment best-fit allocator (exact sizes, coalescing, O(log n)).
//! - `object.rs`: objects and values: write → complete / abort, retire, release, remove.
//! - `evict.rs`: allocation with eviction, watermark and periodic passes (§8.6).
//! - `state.rs`: `Inner`, the metadata behind the lock; unmount, timeouts, gauges.
//!
//! # Concurrency
//!
//! All metadata lives in one `std::sync::RwLock<Inner>`.
//!
//! - **Reads** (`get`, `exists`, `query_key`, `list_keys`, `segments`, `gauges`, …) take
//!   the read lock only, so reads on different threads run in parallel. `get` grants a
//!   lease with `fetch_max` on the value's atomic deadline and counts a read in flight
//!   with atomic counters on the value and on its segment; the returned [`ValueRead`]
//!   holds an `Arc` to the mapping, so its bytes stay valid whatever happens meanwhile,
//!   and the copy of the bytes to the socket happens with no lock held.
//! - **Mutations** take the write lock. Bytes are copied into segment memory outside the
//!   lock (a [`WriteHandle`] owns its freshly allocated range; a large `put` allocates,
//!   copies unlocked, then completes), except small `put`s, copied under the lock.
//! - **Release after the last read.** Retiring a value (or unmounting a segment) sets an
//!   atomic flag, then checks the reads counter; dropping a `ValueRead` decrements the
//!   counter, then checks the flag. Both use `SeqCst`, so at least one side sees the other
//!   and releases (under the write lock; release is idempotent). No new read can start on
//!   a retired value or an UNMOUNTING segment: readers find values under the read lock and
//!   retirement happens under the write lock.
//! - A `ValueRead` drop takes the write lock only for the last read of a retired value or
//!   of an UNMOUNTING segment; a `WriteHandle` dropped unfinished takes it to abort.
//! - Mappings of removed segments are dropped (unmapped) after the lock is released; a
//!   read or write in flight keeps its mapping alive through its own `Arc`.
//! - A poisoned lock is recovered (`PoisonError::into_inner`) rather than propagated to
//!   every worker.
//!
//! # Semantics worth knowing
//!
//! - A one-step [`Store::put`] is invisible until complete: it never makes a key report
//!   "being written" (SPEC §8.2 step 2). If an unmount aborts it mid-copy it is retried.
//! - Nodes: the embedded node is node 0, always alive. Segment records refer to their node
//!   by index, so remote nodes (RPC registration, heartbeats) can be added as more `Node`
//!   records whose expiry moves their segments to UNMOUNTING.
//! - The periodic eviction check is armed after any mutation that leaves `used > H`; when
//!   it finds no candidate it sleeps until the earliest lease expiry of a would-be
//!   candidate, or until the next mutation (see `evict.rs`).
//!
//! Times are kept as nanoseconds since the `now` passed to [`Store::new`]. Deadlines
//! (grace periods, lease expiries of retired values, the periodic eviction check) are
//! reported by [`Store::poll_timeout`] and applied by [`Store::handle_timeout`].

mod alloc;
mod drain;
#[cfg(test)]
mod drain_tests;
mod evict;
mod ids;
mod journal;
#[cfg(test)]
mod journal_tests;
#[cfg(test)]
mod kv_tests;
mod metadata;
#[cfg(test)]
mod model_tests;
mod object;
#[cfg(test)]
mod pin_tests;
mod quota;
mod remote;
#[cfg(test)]
mod remote_tests;
mod segment;
mod shard;
mod state;
mod tenant;
#[cfg(test)]
mod tenant_tests;
#[cfg(test)]
mod tests;
mod types;
mod values;

use std::ops::Bound;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::{LockResult, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError, TryLockResult};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::config::{Config, Protocol};
use crate::platform::{MapError, Platform, ShmError};
use ids::ValueId;
use object::ValueShared;
use segment::{split_chunks, Mapping, SegShared};
use state::{Inner, NewSegment, Params};

pub use drain::{parse_job_id, DrainError, DrainJobView, DrainPlace, DrainRequest, DrainUnit, JobStatus};
pub use journal::{HaBatch, HaOp, Journal, ObjectRecord, SegmentRecord};
pub use metadata::{Metadata, MetadataPut};
pub use tenant::{
    is_default_key, scoped_key, split_key, valid_tenant, PolicySink, TenantError, TenantMetrics, TenantQuota,
    DEFAULT_TENANT,
};
pub use types::*;

/// Largest value `put` copies while holding the write lock; larger ones are copied
/// unlocked between allocation and completion.
const SMALL_PUT: usize = 16 * 1024;
/// Objects one step of a removal of many keys looks at under one hold of the write lock
/// (about a millisecond at 10M keys; [`Store::remove_all`]).
const REMOVE_STEP: usize = 2048;

/// The master state shared by all workers.
pub struct Store {
    inner: RwLock<Inner>,
    /// Threads blocked waiting for `inner` (see [`Store::let_waiters_in`]).
    waiting: AtomicUsize,
    platform: Arc<dyn Platform>,
    epoch: Instant,
    client_id: Uuid,
    lease_ttl_ns: u64,
    mount_alignment: u64,
    max_registration_size: u64,
    metadata: Metadata,
    /// See [`Store::set_buffers_observer`].
    observer: std::sync::Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// See [`Store::set_policy_sink`]; its lock orders policy changes.
    policy_sink: std::sync::Mutex<Option<Arc<dyn PolicySink>>>,
}

/// A value borrowed for a read: its bytes stay valid (and the memory unreleased) until drop.
pub struct ValueRead {
    store: Arc<Store>,
    mapping: Arc<Mapping>,
    map_off: u64,
    len: u64,
    vid: ValueId,
    seg: Uuid,
    value: Arc<ValueShared>,
    seg_shared: Arc<SegShared>,
}

impl ValueRead {
    /// The value's bytes, straight from segment memory.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the range was allocated inside the mapping, which `self.mapping` keeps
        // alive; the value was complete when the read started (its bytes were written
        // before completion, under the write lock) and its range is not freed, so not
        // rewritten, while this read is counted in `value.reads`.
        unsafe { self.mapping.bytes(self.map_off, self.len) }
    }
}

impl Drop for ValueRead {
    fn drop(&mut self) {
        // SeqCst pairs with the flag stores in `Inner::mark_ready` / `segment_read_ended`.
        let last_value = self.value.reads.fetch_sub(1, Ordering::SeqCst) == 1;
        let last_seg = self.seg_shared.reads.fetch_sub(1, Ordering::SeqCst) == 1;
        let release_value = last_value && self.value.release_ready.load(Ordering::SeqCst);
        let remove_seg = last_seg && self.seg_shared.unmounting.load(Ordering::SeqCst);
        if release_value || remove_seg {
            let (vid, seg) = (self.vid, self.seg);
            self.store.with_write(|inner| {
                inner.value_read_ended(vid);
                inner.segment_read_ended(seg, false);
            });
        }
    }
}

/// A raw range of a live segment of this process ([`Store::open_raw_range`]); the segment
/// is not unmapped while it lives.
pub struct RawRange {
    store: Arc<Store>,
    mapping: Arc<Mapping>,
    map_off: u64,
    len: u64,
    seg: Uuid,
    seg_shared: Arc<SegShared>,
}

impl RawRange {
    /// The bytes of the range (no value guards them: they may change under the reader).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the range lies inside the segment's mapping, which `self.mapping` keeps
        // alive; the segment's in-flight count keeps it from being removed.
        unsafe { self.mapping.bytes(self.map_off, self.len) }
    }

    /// The range from `offset` to its end, to receive bytes into directly.
    pub fn dest(&mut self, offset: u64) -> &mut [u8] {
        let offset = offset.min(self.len);
        // SAFETY: inside the mapping, kept alive as in `bytes`; raw access is what the
        // operator asked for (`--te-open-access`); `&mut self` keeps the slice unique here.
        unsafe { self.mapping.bytes_mut(self.map_off + offset, self.len - offset) }
    }

    /// Copies `data` to `offset` of the range (bytes past its end are dropped).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) {
        let room = self.len.saturating_sub(offset);
        let data = &data[..data.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        if !data.is_empty() {
            // SAFETY: inside the mapping, kept alive as in `bytes`; raw access is what the
            // operator asked for (`--te-open-access`).
            unsafe { self.mapping.write(self.map_off + offset, data) };
        }
    }
}

impl Drop for RawRange {
    fn drop(&mut self) {
        let last = self.seg_shared.reads.fetch_sub(1, Ordering::SeqCst) == 1;
        if last && self.seg_shared.unmounting.load(Ordering::SeqCst) {
            let seg = self.seg;
            self.store.with_write(|inner| inner.segment_read_ended(seg, false));
        }
    }
}

/// A data-plane write into an allocation of a write in progress ([`Store::open_write_range`]).
/// Holds the allocation (it is not freed while this lives).
pub struct RangeWrite {
    guard: ValueRead,
}

impl RangeWrite {
    /// Length of the range.
    pub fn len(&self) -> u64 {
        self.guard.len
    }

    /// Always false: ranges have at least one byte.
    pub fn is_empty(&self) -> bool {
        self.guard.len == 0
    }

    /// Copies `data` to `offset` of the range. Bytes past the range's end are dropped.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) {
        let g = &self.guard;
        let room = g.len.saturating_sub(offset);
        let data = &data[..data.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        if data.is_empty() {
            return;
        }
        // SAFETY: `[offset, offset + data.len())` lies inside the range, which lies inside an
        // allocation of a write in progress; the guard keeps that allocation from being
        // freed (and the mapping alive) until it is dropped. Only its writer (the peer that
        // was handed the replica) writes there.
        unsafe { g.mapping.write(g.map_off + offset, data) };
    }

    /// The range from `offset` to its end, to receive bytes into directly (a socket read
    /// into segment memory, no intermediate copy).
    pub fn dest(&mut self, offset: u64) -> &mut [u8] {
        let g = &self.guard;
        let offset = offset.min(g.len);
        // SAFETY: as in `write_at`: inside the allocation of a write in progress, which the
        // guard keeps allocated and mapped, written by this range's owner only; `&mut self`
        // keeps the slice unique.
        unsafe { g.mapping.bytes_mut(g.map_off + offset, g.len - offset) }
    }

    /// The transfer is complete: refused if the write was aborted meanwhile (revoked, the
    /// writer expired, the segment unmounted).
    pub fn finish(self) -> Result<(), RangeRefused> {
        if self.guard.value.aborted.load(Ordering::SeqCst) {
            return Err(RangeRefused::NotWritable);
        }
        Ok(())
    }
}

impl std::fmt::Debug for ValueRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueRead").field("len", &self.len).field("segment", &self.seg).finish()
    }
}

/// A write in progress (`PUT /api/put/{key}` with `Content-Length`). Dropping it before
/// [`WriteHandle::complete`] aborts the write (SPEC §8.2 step 4).
pub struct WriteHandle {
    store: Arc<Store>,
    vid: ValueId,
    seg: Uuid,
    mapping: Arc<Mapping>,
    map_off: u64,
    len: u64,
    written: u64,
    value: Arc<ValueShared>,
    finished: bool,
}

impl WriteHandle {
    /// Appends body bytes into segment memory. Fails once the segment became UNMOUNTING.
    /// Bytes beyond the announced length are ignored.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), WriteAborted> {
        if self.value.aborted.load(Ordering::SeqCst) {
            return Err(WriteAborted);
        }
        let room = (self.len - self.written) as usize;
        debug_assert!(chunk.len() <= room, "write past the announced length");
        let chunk = &chunk[..chunk.len().min(room)];
        // SAFETY: `[written, written + chunk.len())` lies inside this write's allocation,
        // which only this handle touches until it completes or aborts; `self.mapping`
        // keeps the memory alive even if the segment was unmounted meanwhile.
        unsafe { self.mapping.write(self.map_off + self.written, chunk) };
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// All bytes written: the value becomes current. Returns its length.
    pub fn complete(mut self, now: Instant) -> Result<u64, WriteAborted> {
        self.finished = true;
        if self.value.aborted.load(Ordering::SeqCst) {
            return Err(WriteAborted);
        }
        debug_assert_eq!(self.written, self.len, "complete before the last byte");
        if self.written < self.len {
            // SAFETY: as in `write`: the tail of this write's own allocation.
            unsafe { self.mapping.zero(self.map_off + self.written, self.len - self.written) };
        }
        let now = self.store.ns(now);
        let vid = self.vid;
        let result = self.store.with_write_at(now, |inner, now| {
            let r = inner.complete(now, vid);
            if r.is_err() {
                inner.abort(vid, false);
            }
            r
        });
        result.map(|()| self.len)
    }

    /// Id of the segment the value is being written to.
    pub fn segment_id(&self) -> Uuid {
        self.seg
    }

    /// Announced length of the value.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: values have at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

impl Drop for WriteHandle {
    fn drop(&mut self) {
        if !self.finished {
            let vid = self.vid;
            self.store.with_write(|inner| {
                inner.abort(vid, true);
                let now = inner.last_now;
                inner.arm_eviction(now);
            });
        }
    }
}

impl std::fmt::Debug for WriteHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHandle")
            .field("len", &self.len)
            .field("written", &self.written)
            .field("segment", &self.seg)
            .finish()
    }
}

fn new_uuid(platform: &dyn Platform) -> Uuid {
    uuid::Builder::from_random_bytes(platform.random_u128().to_le_bytes()).into_uuid()
}

impl Store {
    /// An empty store. `config.node_name` names the embedded node; its client id comes from
    /// `platform.random_u128()`.
    pub fn new(config: &Config, platform: Arc<dyn Platform>, now: Instant) -> Self {
        let client_id = new_uuid(&*platform);
        let params = Params {
            high_watermark: config.eviction_high_watermark_ratio,
            eviction_ratio: config.eviction_ratio,
            client_ttl: u64::try_from(config.client_ttl.as_nanos()).unwrap_or(u64::MAX),
            suspicion_ttl: u64::try_from(config.client_suspicion_ttl.as_nanos()).unwrap_or(u64::MAX),
            soft_pin_default: u64::try_from(config.soft_pin_default_ttl.as_nanos()).unwrap_or(u64::MAX),
            soft_pin_max: u64::try_from(config.soft_pin_max_ttl.as_nanos()).unwrap_or(u64::MAX),
            evict_soft_pinned: config.allow_evict_soft_pinned,
            strategy: config.allocation_strategy,
            cluster: config.cluster,
        };
        let mut inner = Inner::new(params, config.node_name.clone(), client_id);
        if config.multi_tenants {
            inner.tenants = Some(tenant::Tenants::default());
        }
        Self {
            inner: RwLock::new(inner),
            waiting: AtomicUsize::new(0),
            platform,
            epoch: now,
            client_id,
            lease_ttl_ns: u64::try_from(config.lease_ttl.as_nanos()).unwrap_or(u64::MAX),
            mount_alignment: config.mount_alignment.max(1),
            max_registration_size: config.max_registration_size,
            metadata: Metadata::default(),
            observer: std::sync::Mutex::new(None),
            policy_sink: std::sync::Mutex::new(None),
        }
    }

    /// The HTTP metadata server's entries (upstream-behavior §7).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Nanoseconds since the epoch.
    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Time left at `now` until `ns` (a deadline of [`SegmentInfo`]); zero once passed.
    pub fn remaining(&self, now: Instant, ns: u64) -> Duration {
        self.instant(ns).saturating_duration_since(now)
    }

    /// Time elapsed at `now` since `ns` (a time of [`Gauges`]); zero if it is later.
    pub fn since(&self, now: Instant, ns: u64) -> Duration {
        now.saturating_duration_since(self.instant(ns))
    }

    fn instant(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.counted(self.inner.try_read(), || self.inner.read())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.counted(self.inner.try_write(), || self.inner.write())
    }

    /// A guard of `inner`: `attempt` when it got one, else `block()`, counted in `waiting`
    /// while it blocks (see [`Store::let_waiters_in`]). Poisoning is ignored: the state is
    /// left as the last mutation made it, as everywhere in the store.
    fn counted<G>(&self, attempt: TryLockResult<G>, block: impl FnOnce() -> LockResult<G>) -> G {
        match attempt {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                self.waiting.fetch_add(1, Ordering::SeqCst);
                let g = block().unwrap_or_else(PoisonError::into_inner);
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                g
            }
        }
    }

    /// Between two steps of a long operation (the lock released): lets every thread that was
    /// blocked on the lock take it before the next step does. Without this the stepping
    /// thread took the lock back within nanoseconds, before a woken reader ran, and a
    /// `/query_key` waited for a whole 10M-key `remove_all` although it was cut in steps.
    /// Bounded: after a few hundred yields the next step goes ahead anyway.
    fn let_waiters_in(&self) {
        for _ in 0..256 {
            if self.waiting.load(Ordering::SeqCst) == 0 {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Runs `f` under the write lock; mappings it removed are unmapped after unlocking.
    fn with_write<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = self.write();
        let r = f(&mut guard);
        let garbage = std::mem::take(&mut guard.garbage);
        let changed = std::mem::take(&mut guard.buffers_changed);
        drop(guard);
        drop(garbage);
        if changed {
            self.buffers_changed();
        }
        r
    }

    /// [`Store::with_write`] for a mutation at `now` (nanoseconds): the state learns the
    /// time first (`Inner::last_now`), then `f` runs with it.
    fn with_write_at<R>(&self, now: u64, f: impl FnOnce(&mut Inner, u64) -> R) -> R {
        self.with_write(|inner| {
            let now = inner.tick(now);
            f(inner, now)
        })
    }

    /// The embedded node's client id.
    pub fn client_id(&self) -> Uuid {
        self.client_id
    }

    /// Registers `sizes` chunks of `mapping` as new segments.
    fn register(
        &self,
        now: Instant,
        mapping: Arc<Mapping>,
        sizes: Vec<u64>,
        kind: MountKind,
        protocol: Protocol,
        location: &str,
    ) -> MountOutcome {
        let mut chunks = Vec::with_capacity(sizes.len());
        let mut off = 0;
        for size in sizes {
            chunks.push(NewSegment { id: new_uuid(&*self.platform), map_off: off, size });
            off += size;
        }
        let outcome = MountOutcome { segment_ids: chunks.iter().map(|c| c.id).collect(), allocated_size: off };
        let now = self.ns(now);
        self.with_write_at(now, |inner, now| {
            inner.add_segments(&mapping, chunks, kind, protocol, location);
            inner.arm_eviction(now);
        });
        outcome
    }

    /// `POST /api/mount` or the start-up segment: maps `size` rounded up to the alignment,
    /// split per SPEC §5.5.
    pub fn mount_anonymous(
        &self,
        now: Instant,
        kind: MountKind,
        size: u64,
        protocol: Protocol,
        location: &str,
    ) -> Result<MountOutcome, MountError> {
        let align = self.mount_alignment;
        // `/api/mount` rounds up to the alignment; the start-up segment has exactly the
        // configured size (SPEC §11), and only its splitting uses the alignment.
        let total = match kind {
            MountKind::Startup => size,
            _ => size.div_ceil(align).checked_mul(align).ok_or(MountError::OutOfMemory)?,
        };
        if total == 0 {
            return Ok(MountOutcome { segment_ids: Vec::new(), allocated_size: 0 });
        }
        let region = self.platform.map_anonymous(total).map_err(|e| match e {
            MapError::OutOfMemory => MountError::OutOfMemory,
            MapError::Os(s) => MountError::Os(s),
        })?;
        let sizes = split_chunks(total, self.max_registration_size, align);
        Ok(self.register(now, Mapping::new(region), sizes, kind, protocol, location))
    }

    /// `POST /api/mount_shm`: maps `/dev/shm/<name>` (already validated), split per SPEC §5.5.
    pub fn mount_shm(
        &self,
        now: Instant,
        name: &str,
        offset: u64,
        size: u64,
        protocol: Protocol,
        location: &str,
    ) -> Result<MountOutcome, MountError> {
        if size == 0 {
            return Ok(MountOutcome { segment_ids: Vec::new(), allocated_size: 0 });
        }
        let region = self.platform.map_shm(name, offset, size).map_err(|e| match e {
            ShmError::NotFound => MountError::ShmNotFound,
            ShmError::NotRegularFile => MountError::NotRegularFile,
            ShmError::TooSmall(n) => MountError::TooSmall(n),
            ShmError::Os(s) => MountError::Os(s),
        })?;
        let sizes = split_chunks(size, self.max_registration_size, self.platform.page_size());
        Ok(self.register(now, Mapping::new(region), sizes, MountKind::Shm, protocol, location))
    }

    /// Unmounts `ids` (distinct) with grace `grace`. Returns, per id, whether it succeeded.
    pub fn unmount(&self, now: Instant, family: UnmountFamily, ids: &[Uuid], grace: Duration) -> Vec<bool> {
        let now = self.ns(now);
        let grace = u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX);
        self.with_write_at(now, |inner, now| {
            let out = inner.unmount(now, family, ids, grace);
            inner.arm_eviction(now);
            out
        })
    }

    /// Allocate, write and complete in one step (`PUT /api/put`, chunked `PUT /api/put/{key}`).
    ///
    /// The write is invisible until it completes (no "write in progress" is observable).
    /// Should its segment be unmounted while a large value is copied, it is retried.
    pub fn put(&self, now: Instant, key: &str, value: &[u8]) -> Result<(), PutError> {
        debug_assert!(!value.is_empty(), "empty values are rejected by the caller");
        if value.is_empty() {
            return Err(PutError::InsufficientStorage);
        }
        let len = value.len() as u64;
        let now = self.ns(now);
        if value.len() <= SMALL_PUT {
            return self.with_write_at(now, |inner, now| {
                let nv = inner.begin_value(now, key, len, false)?;
                // SAFETY: a fresh allocation of `len` bytes inside the mapping; nothing
                // else can reach it before `complete` (we hold the write lock).
                unsafe { nv.mapping.write(nv.map_off, value) };
                inner.complete(now, nv.vid).expect("cannot be aborted under the lock");
                Ok(())
            });
        }
        loop {
            let nv = self.with_write_at(now, |inner, now| inner.begin_value(now, key, len, false))?;
            // SAFETY: a fresh allocation of `len` bytes that only this call touches until it
            // completes or aborts; `nv.mapping` keeps the memory alive.
            unsafe { nv.mapping.write(nv.map_off, value) };
            let done = self.with_write_at(now, |inner, now| {
                let r = inner.complete(now, nv.vid);
                if r.is_err() {
                    inner.abort(nv.vid, false);
                }
                r
            });
            if done.is_ok() {
                return Ok(());
            }
        }
    }

    /// Starts a write of `len` bytes (len ≥ 1) that stays in progress until completed.
    pub fn begin_write(self: &Arc<Self>, now: Instant, key: &str, len: u64) -> Result<WriteHandle, PutError> {
        debug_assert!(len > 0, "empty values are rejected by the caller");
        if len == 0 {
            return Err(PutError::InsufficientStorage);
        }
        let now = self.ns(now);
        let nv = self.with_write_at(now, |inner, now| {
            let nv = inner.begin_value(now, key, len, true);
            inner.arm_eviction(now);
            nv
        })?;
        Ok(WriteHandle {
            store: self.clone(),
            vid: nv.vid,
            seg: nv.seg,
            mapping: nv.mapping,
            map_off: nv.map_off,
            len,
            written: 0,
            value: nv.shared,
            finished: false,
        })
    }

    /// The current complete value of `key`; grants a lease when `grant_lease`.
    pub fn get(self: &Arc<Self>, now: Instant, key: &str, grant_lease: bool) -> Option<ValueRead> {
        let inner = self.read();
        let (vid, v) = inner.current(key)?;
        // Only this process's memory can be served (a remote replica lives in its client).
        let (loc, seg, mapping) = v.replicas.iter().find_map(|l| {
            let seg = inner.segments.get(&l.seg)?;
            Some((*l, seg, seg.mapping.clone()?))
        })?;
        debug_assert!(seg.is_live());
        v.shared.reads.fetch_add(1, Ordering::SeqCst);
        seg.shared.reads.fetch_add(1, Ordering::SeqCst);
        if grant_lease {
            v.touch(self.ns(now), self.lease_ttl_ns);
        }
        Some(ValueRead {
            store: self.clone(),
            mapping,
            map_off: seg.map_off + loc.off,
            len: v.len,
            vid,
            seg: loc.seg,
            value: v.shared.clone(),
            seg_shared: seg.shared.clone(),
        })
    }

    /// The data plane's read of `[addr, addr + len)` in this process's memory (addresses as
    /// advertised: a segment's base address plus an offset). Allowed only inside one
    /// complete (or retired, not yet released) value on a live segment of this process; the
    /// read counts as in flight until the `ValueRead` is dropped. Grants no lease.
    pub fn open_read_range(self: &Arc<Self>, addr: u64, len: u64) -> Result<ValueRead, RangeRefused> {
        let inner = self.read();
        let (seg, vid, off) = inner.range_value(addr, len)?;
        let v = inner.values.get(&vid).ok_or(RangeRefused::NotInValue)?;
        if matches!(v.state, object::ValueState::Writing { .. }) {
            return Err(RangeRefused::NotComplete);
        }
        Ok(self.range_guard(seg, vid, v, off, len))
    }

    /// The data plane's write of `[addr, addr + len)` in this process's memory: allowed only
    /// inside one allocation whose write is in progress (an RPC writer's PutStart placed it
    /// here). The bytes go straight into segment memory; the allocation is not freed (even if
    /// the write is revoked meanwhile) until the `RangeWrite` is dropped.
    pub fn open_write_range(self: &Arc<Self>, addr: u64, len: u64) -> Result<RangeWrite, RangeRefused> {
        let inner = self.read();
        let (seg, vid, off) = inner.range_value(addr, len)?;
        let v = inner.values.get(&vid).ok_or(RangeRefused::NotInValue)?;
        if !matches!(v.state, object::ValueState::Writing { .. }) || v.shared.aborted.load(Ordering::SeqCst) {
            return Err(RangeRefused::NotWritable);
        }
        Ok(RangeWrite { guard: self.range_guard(seg, vid, v, off, len) })
    }

    /// Upstream's access rule (`--te-open-access`): any range inside one live segment of
    /// this process, read or written raw, whatever the values (data-plane.md §1.5). The
    /// segment stays mapped while the range lives. For benchmarks and clients that move
    /// bytes without the master's allocations; never the default.
    pub fn open_raw_range(self: &Arc<Self>, addr: u64, len: u64) -> Result<RawRange, RangeRefused> {
        let inner = self.read();
        let seg = inner.local_segment_at(addr, len)?;
        seg.shared.reads.fetch_add(1, Ordering::SeqCst);
        Ok(RawRange {
            store: self.clone(),
            mapping: seg.mapping.clone().expect("mapped"),
            map_off: seg.map_off + (addr - seg.base_address()),
            len,
            seg: seg.id,
            seg_shared: seg.shared.clone(),
        })
    }

    /// Counts a data-plane access of `[off, off + len)` of `seg` as a read in flight on `vid`.
    fn range_guard(
        self: &Arc<Self>,
        seg: &segment::Segment,
        vid: ValueId,
        v: &object::Value,
        off: u64,
        len: u64,
    ) -> ValueRead {
        v.shared.reads.fetch_add(1, Ordering::SeqCst);
        seg.shared.reads.fetch_add(1, Ordering::SeqCst);
        ValueRead {
            store: self.clone(),
            mapping: seg.mapping.clone().expect("range_value picks mapped segments"),
            map_off: seg.map_off + off,
            len,
            vid,
            seg: seg.id,
            value: v.shared.clone(),
            seg_shared: seg.shared.clone(),
        }
    }

    /// Starts recording KV events (`--enable-kv-events`) in a queue of at most `capacity`
    /// (0: unbounded); see [`crate::kv_events`].
    pub fn enable_kv_events(&self, capacity: usize) {
        let mut inner = self.write();
        if inner.kv.is_none() {
            inner.kv = Some(crate::kv_events::KvQueue::new(capacity));
        }
    }

    /// Up to `max` recorded KV events, oldest first, and how many were dropped from the full
    /// queue since the last call.
    pub fn take_kv_events(&self, max: usize) -> (Vec<crate::kv_events::KvEvent>, u64) {
        // An idle publisher polls often: it takes the write lock only when there is something.
        if self.read().kv.as_ref().is_none_or(|q| q.is_empty() && !q.has_dropped()) {
            return (Vec::new(), 0);
        }
        self.write().kv.as_mut().map_or((Vec::new(), 0), |q| q.take(max))
    }

    /// KV events waiting.
    pub fn kv_events_pending(&self) -> usize {
        self.read().kv.as_ref().map_or(0, |q| q.len())
    }

    /// The live segments of this process as `(base address, size)`, in base order: the
    /// buffers a transfer-engine descriptor of this node lists.
    pub fn local_buffers(&self) -> Vec<(u64, u64)> {
        let inner = self.read();
        let mut out: Vec<(u64, u64)> = inner
            .segments
            .values()
            .filter(|s| s.mapping.is_some() && s.is_live())
            .map(|s| (s.base_address(), s.size))
            .collect();
        out.sort_unstable();
        out
    }

    /// Calls `f` (outside the lock) after every change of [`Store::local_buffers`] (a mount,
    /// an unmount, a segment removed). Replaces any earlier observer.
    pub fn set_buffers_observer(&self, f: Box<dyn Fn() + Send + Sync>) {
        *self.observer.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::from(f));
    }

    /// Tells the observer, if any, that the local buffers may have changed.
    fn buffers_changed(&self) {
        let f = self.observer.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(f) = f {
            f();
        }
    }

    /// True when `key` has a complete current value that [`Store::get`] can serve (a replica
    /// in this process's memory).
    pub fn exists(&self, key: &str) -> bool {
        let inner = self.read();
        let cluster = inner.params.cluster;
        inner.current(key).is_some_and(|(_, v)| {
            v.replicas
                .iter()
                .any(|l| inner.segments.get(&l.seg).is_some_and(|s| s.is_readable() && (cluster || !s.is_remote())))
        })
    }

    /// The current complete value of `key` when none of its replicas is in this process's
    /// memory but one is on another node (cluster mode): where to read it with the data
    /// plane. Grants a lease when `grant_lease`, as [`Store::get`].
    pub fn remote_replica(&self, now: Instant, key: &str, grant_lease: bool) -> Option<RemoteReplica> {
        let inner = self.read();
        if !inner.params.cluster {
            return None;
        }
        let (_, v) = inner.current(key)?;
        let (loc, seg) = v.replicas.iter().find_map(|l| {
            let seg = inner.segments.get(&l.seg).filter(|s| s.is_remote() && s.is_readable())?;
            Some((l, seg))
        })?;
        if grant_lease {
            v.touch(self.ns(now), self.lease_ttl_ns);
        }
        Some(RemoteReplica {
            endpoint: inner.endpoint(seg).to_string(),
            address: seg.base_address() + loc.off,
            len: v.len,
        })
    }

    /// `DELETE /api/remove/{key}`.
    pub fn remove(&self, now: Instant, key: &str) -> Result<(), RemoveError> {
        let now = self.ns(now);
        self.with_write_at(now, |inner, now| {
            let r = inner.remove_key(now, key, false);
            inner.arm_eviction(now);
            r
        })
    }

    /// `DELETE /api/remove_all`: returns the number removed.
    pub fn remove_all(&self, now: Instant) -> u64 {
        self.remove_stepwise(now, false, &|_| true)
    }

    /// Removes every removable object whose key satisfies `pick` in steps of
    /// [`REMOVE_STEP`] objects, each under its own hold of the write lock, so that readers,
    /// writers and heartbeats are served in between (a single hold took 1.3 s at 1M keys and
    /// 17 s at 10M). A key written meanwhile is removed if the walk has not passed it yet.
    pub(super) fn remove_stepwise(&self, now: Instant, force: bool, pick: &dyn Fn(&str) -> bool) -> u64 {
        let now = self.ns(now);
        let mut removed = 0;
        let mut cursor: Option<Arc<str>> = None;
        loop {
            let (n, next) = self.with_write_at(now, |inner, now| {
                let r = inner.remove_some(now, force, pick, cursor.as_deref(), REMOVE_STEP);
                inner.arm_eviction(now);
                r
            });
            removed += n;
            match next {
                Some(k) => cursor = Some(k),
                None => return removed,
            }
            self.let_waiters_in();
        }
    }

    /// Replicas of the current complete value (read-only: no lease).
    pub fn query_key(&self, key: &str) -> Result<Vec<Replica>, QueryError> {
        let mut out = Err(QueryError::NotFound);
        self.query_keys_with(&[key], |_, r| {
            out = r.map(|reps| {
                reps.iter()
                    .map(|r| Replica {
                        endpoint: r.endpoint.to_string(),
                        address: r.address,
                        size: r.size,
                        protocol: r.protocol,
                    })
                    .collect()
            })
        });
        out
    }

    /// What [`Store::query_key`] answers, for each of `keys` in order, under one read lock
    /// and without allocating per key: calls `f(index, replicas)`.
    pub fn query_keys_with(&self, keys: &[&str], mut f: impl FnMut(usize, Result<&[ReplicaRef<'_>], QueryError>)) {
        let inner = self.read();
        let mut reps: Vec<ReplicaRef<'_>> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let Some((_, v)) = inner.current(key) else {
                // No complete value: a write in progress makes it "not ready".
                let writing = inner.objects.get(*key).is_some_and(|o| !o.writes.is_empty());
                f(i, Err(if writing { QueryError::NotReady } else { QueryError::NotFound }));
                continue;
            };
            reps.clear();
            reps.extend(v.replicas.iter().filter_map(|loc| {
                let seg = inner.segments.get(&loc.seg).filter(|s| s.is_live())?;
                Some(ReplicaRef {
                    endpoint: inner.endpoint(seg),
                    address: seg.base_address() + loc.off,
                    size: v.len,
                    protocol: seg.protocol,
                })
            }));
            f(i, Ok(&reps));
        }
    }

    /// Appends to `out` up to `limit` keys with a complete value that start with `prefix` and
    /// are byte-wise greater than `after`, ascending.
    pub fn list_keys(&self, prefix: &str, after: Option<&str>, limit: usize, out: &mut Vec<String>) {
        self.visit_keys(prefix, after, limit, |k| out.push(k.to_string()));
    }

    /// Calls `f`, under the read lock, with up to `limit` keys with a complete value that
    /// start with `prefix` and are byte-wise greater than `after`, ascending (what
    /// [`Store::list_keys`] lists, without a `String` per key). Returns how many it visited
    /// and the last of them (where a next page starts).
    pub fn visit_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        mut f: impl FnMut(&str),
    ) -> (usize, Option<String>) {
        if limit == 0 {
            return (0, None);
        }
        let inner = self.read();
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            // Other tenants' keys (`tenant.rs`) sort first: start past them.
            _ if prefix.is_empty() => Bound::Included(tenant::TENANT_KEYS_END),
            _ => Bound::Included(prefix),
        };
        let mut n = 0;
        let mut last: Option<&str> = None;
        for (key, obj) in inner.objects.range::<str, _>((start, Bound::Unbounded)) {
            if !is_default_key(key) {
                continue;
            }
            // `is_empty` first: a zero-length compare still calls memcmp, which can cost
            // ~100 ns on an empty string's dangling pointer (docs/benchmarks.md).
            if !prefix.is_empty() && !key.starts_with(prefix) {
                break;
            }
            if obj.current.is_some() {
                f(key);
                last = Some(key);
                n += 1;
                if n == limit {
                    break;
                }
            }
        }
        (n, last.map(str::to_string))
    }

    /// Every segment record, sorted by name then id string (SPEC §4.8).
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.read().segment_infos()
    }

    /// Distinct names of nodes with a MOUNTED segment, sorted.
    pub fn mounted_node_names(&self) -> Vec<String> {
        self.read().mounted_node_names()
    }

    /// (used, capacity) over the MOUNTED segments named `name`, or None if there is none.
    pub fn query_segment(&self, name: &str) -> Option<(u64, u64)> {
        self.read().query_segment(name)
    }

    /// Current gauges.
    pub fn gauges(&self) -> Gauges {
        self.read().gauges()
    }

    /// Current store-kept counters.
    pub fn counters(&self) -> StoreCounters {
        self.read().counters
    }

    /// The next deadline (grace period end, periodic eviction check, lease expiry of a retired value).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.read().next_deadline().map(|ns| self.instant(ns))
    }

    /// Runs every transition that is due at `now`.
    pub fn handle_timeout(&self, now: Instant) {
        let now = self.ns(now);
        if self.read().next_deadline().is_none_or(|d| d > now) {
            return;
        }
        let expired = self.with_write_at(now, |inner, now| {
            inner.handle_timeout(now);
            std::mem::take(&mut inner.expired_names)
        });
        for name in expired {
            let n = self.metadata.remove_node(&name);
            if n > 0 {
                log::info!("removed {n} metadata entries of expired node {name}");
            }
        }
    }
}
