//! Objects and values (SPEC §8.1–§8.5): write → complete / abort, replace, retire,
//! release, remove and remove_all.
//!
//! ```text
//!   allocate ──► Writing ──complete──► Complete ──replace/remove/evict/unmount──► Retired
//!                  │                                                                │
//!                  └──abort (client gone, segment unmounted)──► freed      released │
//!                                                   (no read in flight and lease over,
//!                                                    or no read in flight after an unmount)
//! ```
//!
//! A value record lives in `Inner::values` from allocation to release. Its
//! [`ValueShared`] part (lease deadline, reads in flight, release flag, abort flag) is
//! shared with the readers and writers that hold it, which touch it without the write lock.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use smallvec::SmallVec;
use uuid::Uuid;

use super::ids::ValueId;
use super::segment::Mapping;

/// One memory replica: a range of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Loc {
    pub(super) seg: Uuid,
    /// Offset inside the segment.
    pub(super) off: u64,
    /// Replica id (process-wide counter, reported in RPC replica descriptors).
    pub(super) rid: u64,
}

/// State of a value (SPEC §8.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ValueState {
    /// Allocated, bytes arriving. `visible`: the key reports a write in progress
    /// (`begin_write`); a one-step `put` is invisible until it completes (SPEC §8.2).
    Writing { visible: bool },
    /// The current value of its key.
    Complete,
    /// Replaced, removed, evicted or dropped; waiting for its release.
    Retired,
}

/// The part of a value that readers and writers touch without the write lock.
#[derive(Debug, Default)]
pub(super) struct ValueShared {
    /// Lease deadline, ns since the store epoch; starts at the completion time (expired).
    /// Raised with `fetch_max` under the read lock; stable once the value is retired.
    pub(super) lease: AtomicU64,
    /// Reads in flight.
    pub(super) reads: AtomicU64,
    /// Retired and its lease no longer matters: the memory goes when `reads` reaches 0.
    pub(super) release_ready: AtomicBool,
    /// The write was aborted by an unmount.
    pub(super) aborted: AtomicBool,
    /// Soft pin deadline (ns since the store epoch) of a soft-pinned value, 0 otherwise:
    /// set at completion to `now + soft_ttl`, raised by every read like the lease. Eviction
    /// takes values soft-pinned past `now` only after every unpinned one (`evict.rs`).
    pub(super) soft_pin: AtomicU64,
}

/// A value record.
pub(super) struct Value {
    pub(super) key: Arc<str>,
    pub(super) len: u64,
    /// Inline for the usual single replica: no heap allocation per value.
    pub(super) replicas: SmallVec<[Loc; 1]>,
    pub(super) state: ValueState,
    /// Completion order (ties of the eviction order).
    pub(super) seq: u64,
    /// Entry in `Inner::pending` (lease expiry awaited), if any.
    pub(super) pending_at: Option<u64>,
    pub(super) shared: Arc<ValueShared>,
    /// The RPC client writing it (`None`: written over REST by this process).
    pub(super) writer: Option<Uuid>,
    /// When the write started (ns).
    pub(super) started: u64,
    /// Checksum given by an RPC writer at PutEnd.
    pub(super) checksum: Option<u64>,
    /// Soft pin TTL (ns; 0 = not soft-pinned) and hard pin (never evicted), from the write's
    /// `ReplicateConfig`.
    pub(super) pins: Pins,
}

/// The pins of a value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Pins {
    /// Soft pin TTL in ns; 0 = not soft-pinned.
    pub(super) soft_ttl: u64,
    /// Hard-pinned: never evicted (removes, unmounts and client expiry still drop it).
    pub(super) hard: bool,
}

impl Value {
    /// A read at `now` (ns): the lease is raised to `now + lease_ttl` (when positive) and a
    /// soft pin to `now + soft_ttl`.
    pub(super) fn touch(&self, now: u64, lease_ttl: u64) {
        if lease_ttl > 0 {
            self.shared.lease.fetch_max(now.saturating_add(lease_ttl), std::sync::atomic::Ordering::SeqCst);
        }
        if self.pins.soft_ttl > 0 {
            self.shared.soft_pin.fetch_max(now.saturating_add(self.pins.soft_ttl), std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// An object record: exists while it has a complete value or a visible write in progress.
#[derive(Debug, Default)]
pub(super) struct Object {
    pub(super) current: Option<ValueId>,
    /// Visible writes in progress, in start order.
    pub(super) writes: Vec<ValueId>,
}

impl Object {
    pub(super) fn is_empty(&self) -> bool {
        self.current.is_none() && self.writes.is_empty()
    }
}

/// What a new allocation hands to its writer.
pub(super) struct NewValue {
    pub(super) vid: ValueId,
    pub(super) seg: Uuid,
    pub(super) mapping: Arc<Mapping>,
    /// Offset of the value inside `mapping`.
    pub(super) map_off: u64,
    pub(super) shared: Arc<ValueShared>,
}
