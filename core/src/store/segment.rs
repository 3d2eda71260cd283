//! Segments: memory mappings, registration-size splitting (SPEC §5.5) and the segment
//! lifecycle (SPEC §7) as an enum state machine.
//!
//! ```text
//!   mount ──► Mounted { alloc }
//!               │  unmount g > 0                 unmount g = 0
//!               ▼                                      │
//!   GracefullyUnmounting { alloc, deadline } ──────────┤  deadline reached, or a later
//!      (a later unmount: deadline = min(old, now + g)) │  unmount with g = 0
//!                                                      ▼
//!                                   Unmounting  (allocator dropped: replicas gone,
//!                                      │         writes aborted; used = 0)
//!                                      │  no read in flight (at once if none)
//!                                      ▼
//!                         record removed; the mapping is unmapped when its
//!                         last user (segment record or read in flight) goes
//! ```
//!
//! The allocator lives inside the state, so only the states that own memory bookkeeping
//! can allocate or free: an `Unmounting` segment has nothing left to free.

use std::collections::BTreeMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use uuid::Uuid;

use super::alloc::Allocator;
use super::ids::{IdHasher, NodeId, ValueId};
use super::shard::{ShardedMap, SMALL_SHARDS};
use super::types::{MountKind, SegmentStatus, UnmountFamily};
use crate::config::Protocol;
use crate::platform::Region;

/// The embedded store node (always alive).
pub(super) const EMBEDDED: NodeId = NodeId(0);

/// Liveness of a store node (`remote.rs` draws the transitions). The embedded node is
/// always `Active`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Liveness {
    /// Heard from within `--client-ttl`.
    Active,
    /// Silent for longer than `--client-ttl`, not yet for `--client-suspicion-ttl` more: its
    /// resources are kept, its replicas withheld from reads and its segments from allocation.
    Suspected,
    /// Expired: its segments unmount, its writes abort. A later mount registers it anew.
    Offline,
}

/// A store node: the owner of segments. The embedded node never expires; remote nodes
/// (registered over RPC by client id, see `remote.rs`) are alive while they heartbeat.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) name: String,
    pub(super) client_id: Uuid,
    pub(super) liveness: Liveness,
    /// Remote nodes: last heartbeat (mount or ping), ns since the store epoch. `None`: the
    /// embedded node, which never expires.
    pub(super) last_seen: Option<u64>,
    /// Remote nodes: ReMountSegment seen since registration (Ping answers OK, else
    /// NEED_REMOUNT), as upstream.
    pub(super) remounted: bool,
    /// Restored from the replicated state of a former leader (HA): its replicas are hidden
    /// from readers until the client mounts or remounts here (`journal.rs`).
    pub(super) restored: bool,
}

impl Node {
    /// Not offline: its segments and writes are kept (Active or Suspected).
    pub(super) fn alive(&self) -> bool {
        self.liveness != Liveness::Offline
    }
}

/// One platform mapping; several segments (chunks of one mount) may share it.
/// The region is released when the last `Arc<Mapping>` goes: the last segment record
/// using it is removed and no read or write in flight holds it.
pub(super) struct Mapping {
    region: Box<dyn Region>,
}

impl Mapping {
    pub(super) fn new(region: Box<dyn Region>) -> Arc<Self> {
        Arc::new(Self { region })
    }

    /// Address of the first byte.
    pub(super) fn base(&self) -> u64 {
        self.region.as_ptr() as u64
    }

    /// Copies `data` to `off`.
    ///
    /// # Safety
    /// `[off, off + data.len())` must lie inside the region, and no other thread may read
    /// or write that range during the call (it is an allocation owned by the caller).
    pub(super) unsafe fn write(&self, off: u64, data: &[u8]) {
        debug_assert!(off + data.len() as u64 <= self.region.len());
        // SAFETY: in bounds and exclusively owned per this function's contract; the
        // source is a distinct Rust slice, so the ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.region.as_ptr().add(off as usize), data.len()) }
    }

    /// Fills `len` bytes at `off` with zeros. Same contract as [`Mapping::write`].
    pub(super) unsafe fn zero(&self, off: u64, len: u64) {
        debug_assert!(off + len <= self.region.len());
        // SAFETY: in bounds and exclusively owned per this function's contract.
        unsafe { std::ptr::write_bytes(self.region.as_ptr().add(off as usize), 0, len as usize) }
    }

    /// Borrows `len` bytes at `off` for writing (a socket read straight into segment memory).
    ///
    /// # Safety
    /// As [`Mapping::write`], for as long as the slice lives: `[off, off + len)` inside the
    /// region and written by nobody else.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn bytes_mut(&self, off: u64, len: u64) -> &mut [u8] {
        debug_assert!(off + len <= self.region.len());
        // SAFETY: in bounds, exclusively owned per the contract above.
        unsafe { std::slice::from_raw_parts_mut(self.region.as_ptr().add(off as usize), len as usize) }
    }

    /// Borrows `len` bytes at `off`.
    ///
    /// # Safety
    /// `[off, off + len)` must lie inside the region and must not be written by this
    /// process while the slice lives (a complete value: its range is not freed while a
    /// read is in flight). For shared memory another process may still write the bytes;
    /// that is the documented contract of `/api/mount_shm` (SPEC §5.1).
    pub(super) unsafe fn bytes(&self, off: u64, len: u64) -> &[u8] {
        debug_assert!(off + len <= self.region.len());
        // SAFETY: in bounds, and the memory lives as long as `self` per the contract above.
        unsafe { std::slice::from_raw_parts(self.region.as_ptr().add(off as usize), len as usize) }
    }
}

/// Lifecycle state of a segment.
#[derive(Debug)]
pub(super) enum SegState {
    /// Allocatable and readable.
    Mounted { alloc: Allocator },
    /// Readable, not allocatable, until `deadline` (ns since the store epoch).
    GracefullyUnmounting { alloc: Allocator, deadline: u64 },
    /// Replicas dropped; waiting for the reads in flight to end.
    Unmounting,
}

/// A segment's place in a drain job (`drain.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SegDrain {
    /// Not drained.
    None,
    /// A source of running job `.0`: readable, out of allocation.
    Draining(u64),
    /// Emptied by a drain job: out of allocation until unmounted.
    Drained,
}

/// The part of a segment that reads in flight touch without the store lock.
#[derive(Debug, Default)]
pub(super) struct SegShared {
    /// Reads in flight on values of this segment.
    pub(super) reads: AtomicU64,
    /// Set (under the write lock) when the segment becomes UNMOUNTING.
    pub(super) unmounting: AtomicBool,
}

/// One segment record.
pub(super) struct Segment {
    pub(super) id: Uuid,
    pub(super) node: NodeId,
    pub(super) kind: MountKind,
    pub(super) protocol: Protocol,
    /// Stored, reported nowhere (SPEC §3).
    #[allow(dead_code)]
    pub(super) location: String,
    /// The memory of a segment of the embedded node; `None` for a remote segment, whose
    /// bytes live in its client's process (moved by the client's transfer engine).
    pub(super) mapping: Option<Arc<Mapping>>,
    /// Offset of the segment's first byte inside `mapping`; for a remote segment, its base
    /// address in the client's process.
    pub(super) map_off: u64,
    /// Transfer-engine endpoint of a remote segment (`None`: the owning node's name).
    pub(super) te_endpoint: Option<String>,
    pub(super) size: u64,
    pub(super) state: SegState,
    /// Its node is Suspected: replicas here are not handed to readers and nothing new is
    /// placed here, until the node is heard from again (or goes offline).
    pub(super) withheld: bool,
    /// Drain state: a draining or drained segment takes no new allocation.
    pub(super) drain: SegDrain,
    pub(super) shared: Arc<SegShared>,
    /// Values with a replica (or a write in progress) on this segment.
    /// Values with a replica here (dropped when the segment starts unmounting). Hashed by
    /// id: inserted on every write, removed on every free.
    pub(super) values: ShardedMap<ValueId, (), BuildHasherDefault<IdHasher>, SMALL_SHARDS>,
    /// The same values by offset, on segments of this process only (the data plane's
    /// target finds the allocation a transfer's range falls in).
    pub(super) allocs: BTreeMap<u64, ValueId>,
}

impl Segment {
    pub(super) fn status(&self) -> SegmentStatus {
        match self.state {
            SegState::Mounted { .. } => SegmentStatus::Mounted,
            SegState::GracefullyUnmounting { .. } => SegmentStatus::GracefullyUnmounting,
            SegState::Unmounting => SegmentStatus::Unmounting,
        }
    }

    pub(super) fn is_mounted(&self) -> bool {
        matches!(self.state, SegState::Mounted { .. })
    }

    /// MOUNTED or GRACEFULLY_UNMOUNTING: counted in capacity, replicas readable.
    pub(super) fn is_live(&self) -> bool {
        !matches!(self.state, SegState::Unmounting)
    }

    /// Live and not withheld: replicas here may be handed to a reader.
    pub(super) fn is_readable(&self) -> bool {
        self.is_live() && !self.withheld
    }

    /// Bytes occupied by values (0 when UNMOUNTING).
    pub(super) fn used(&self) -> u64 {
        self.allocator().map_or(0, Allocator::used)
    }

    pub(super) fn allocator(&self) -> Option<&Allocator> {
        match &self.state {
            SegState::Mounted { alloc } | SegState::GracefullyUnmounting { alloc, .. } => Some(alloc),
            SegState::Unmounting => None,
        }
    }

    pub(super) fn allocator_mut(&mut self) -> Option<&mut Allocator> {
        match &mut self.state {
            SegState::Mounted { alloc } | SegState::GracefullyUnmounting { alloc, .. } => Some(alloc),
            SegState::Unmounting => None,
        }
    }

    /// The allocator, only while MOUNTED (new allocations).
    pub(super) fn mounted_allocator_mut(&mut self) -> Option<&mut Allocator> {
        match &mut self.state {
            SegState::Mounted { alloc } => Some(alloc),
            _ => None,
        }
    }

    /// The grace deadline, while GRACEFULLY_UNMOUNTING.
    pub(super) fn deadline(&self) -> Option<u64> {
        match self.state {
            SegState::GracefullyUnmounting { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// Address of the first byte in the owning process.
    pub(super) fn base_address(&self) -> u64 {
        self.mapping.as_ref().map_or(0, |m| m.base()) + self.map_off
    }

    /// True for a segment mounted by an RPC client (no local memory).
    pub(super) fn is_remote(&self) -> bool {
        self.mapping.is_none()
    }

    /// Whether `family`'s unmount endpoint may unmount this segment (SPEC §5.2, §5.4).
    pub(super) fn accepts(&self, family: UnmountFamily) -> bool {
        match family {
            UnmountFamily::Anonymous => {
                matches!(self.kind, MountKind::Anonymous | MountKind::Startup)
            }
            UnmountFamily::Shm => self.kind == MountKind::Shm,
            UnmountFamily::Remote => self.kind == MountKind::Remote,
        }
    }

    /// MOUNTED → GRACEFULLY_UNMOUNTING, or a GRACEFULLY_UNMOUNTING deadline moved earlier.
    /// Returns false when the segment is already UNMOUNTING (nothing to do).
    /// The value whose allocation holds `[off, off + len)`, if its offset index knows one.
    pub(super) fn alloc_at(&self, off: u64) -> Option<(u64, ValueId)> {
        self.allocs.range(..=off).next_back().map(|(&o, &v)| (o, v))
    }

    /// Records a new allocation at `off` (segments of this process keep an offset index).
    /// Takes `[off, off + len)` in a segment that still allocates or drains (a standby
    /// restoring a replica); false when the range is not free or the segment is unmounting.
    pub(super) fn mounted_or_draining_reserve(&mut self, off: u64, len: u64) -> bool {
        match &mut self.state {
            SegState::Mounted { alloc } | SegState::GracefullyUnmounting { alloc, .. } => alloc.reserve(off, len),
            SegState::Unmounting => false,
        }
    }

    pub(super) fn add_value(&mut self, vid: ValueId, off: u64) {
        self.values.insert(vid, ());
        if self.mapping.is_some() {
            self.allocs.insert(off, vid);
        }
    }

    /// Forgets the allocation of `vid` at `off`.
    pub(super) fn remove_value(&mut self, vid: ValueId, off: u64) {
        self.values.remove(&vid);
        if self.allocs.get(&off) == Some(&vid) {
            self.allocs.remove(&off);
        }
    }

    pub(super) fn set_grace(&mut self, new_deadline: u64) -> bool {
        let state = std::mem::replace(&mut self.state, SegState::Unmounting);
        self.state = match state {
            SegState::Mounted { alloc } => SegState::GracefullyUnmounting { alloc, deadline: new_deadline },
            SegState::GracefullyUnmounting { alloc, deadline } => {
                SegState::GracefullyUnmounting { alloc, deadline: deadline.min(new_deadline) }
            }
            SegState::Unmounting => return false,
        };
        true
    }
}

/// Where a write may place replicas: a writer can only move bytes to memory it reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Placement {
    /// REST writers: segments of this process (mapped memory).
    Local,
    /// RPC writers: segments of RPC clients (their transfer engines move the bytes).
    Remote,
    /// RPC writers of a process with a data plane: any segment (this process's own are
    /// reached through its transfer-engine target).
    Any,
}

impl Placement {
    pub(super) fn admits(self, seg: &Segment) -> bool {
        if seg.withheld || seg.drain != SegDrain::None {
            return false;
        }
        match self {
            Placement::Any => true,
            Placement::Local => !seg.is_remote(),
            Placement::Remote => seg.is_remote(),
        }
    }
}

/// Splits a mount of `total` bytes into chunks per SPEC §5.5 (limit 0 = unlimited).
pub(super) fn split_chunks(total: u64, limit: u64, align: u64) -> Vec<u64> {
    if total == 0 {
        return Vec::new();
    }
    if limit == 0 || total <= limit {
        return vec![total];
    }
    let align = align.max(1);
    let aligned_limit = align.max(limit / align * align);
    let mut chunks = Vec::new();
    let mut remaining = total;
    while remaining > 0 {
        let n = remaining.div_ceil(aligned_limit);
        let chunk = remaining.min(remaining.div_ceil(n).div_ceil(align).saturating_mul(align));
        chunks.push(chunk);
        remaining -= chunk;
    }
    chunks
}
