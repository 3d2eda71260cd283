//! Master state: segments, their allocators, objects, leases and eviction (SPEC §7, §8).
//!
//! [`Store`] is shared by every worker thread (`Arc<Store>`). It must let reads on
//! different threads proceed in parallel (see docs/architecture.md for the design).
//! It never reads a clock: every method that depends on time takes `now`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::config::{Config, Protocol};
use crate::http::ValueBytes;
use crate::platform::Platform;

/// How a segment was created; decides which unmount endpoint accepts it (SPEC §5.2, §5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountKind {
    /// `POST /api/mount`.
    Anonymous,
    /// The start-up segment (`--global-segment-size`); unmounted like `Anonymous`.
    Startup,
    /// `POST /api/mount_shm`.
    Shm,
}

/// Which unmount endpoint is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmountFamily {
    /// `POST /api/unmount`: accepts `Anonymous` and `Startup` segments.
    Anonymous,
    /// `POST /api/unmount_shm`: accepts `Shm` segments.
    Shm,
}

/// Segment status (SPEC §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentStatus {
    /// Allocatable and readable.
    Mounted,
    /// Readable, not allocatable, until a deadline.
    GracefullyUnmounting,
    /// Replicas dropped; the record stays while reads are in flight.
    Unmounting,
}

impl SegmentStatus {
    /// `MOUNTED`, `GRACEFULLY_UNMOUNTING` or `UNMOUNTING`.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentStatus::Mounted => "MOUNTED",
            SegmentStatus::GracefullyUnmounting => "GRACEFULLY_UNMOUNTING",
            SegmentStatus::Unmounting => "UNMOUNTING",
        }
    }
}

/// Result of a successful mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOutcome {
    /// New segment ids, in address order.
    pub segment_ids: Vec<Uuid>,
    /// Total bytes mounted (sum of the chunks).
    pub allocated_size: u64,
}

/// Why a mount failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// The OS refused an anonymous allocation (507).
    #[error("insufficient memory")]
    OutOfMemory,
    /// `/dev/shm/<name>` does not exist (404).
    #[error("shared memory object not found")]
    ShmNotFound,
    /// Not a regular file (400).
    #[error("not a regular file")]
    NotRegularFile,
    /// File smaller than offset + size; carries the file size (400).
    #[error("object too small")]
    TooSmall(u64),
    /// The OS refused the mapping (500); carries the OS error text.
    #[error("{0}")]
    Os(String),
}

/// Why a write could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PutError {
    /// No space even after eviction (507).
    #[error("insufficient storage")]
    InsufficientStorage,
}

/// A write in progress was aborted because its segment became UNMOUNTING.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("write aborted: segment unmounted")]
pub struct WriteAborted;

/// Why a remove failed (SPEC §6.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    /// No complete value and no write in progress (404).
    #[error("key not found")]
    NotFound,
    /// The current value holds an unexpired lease (409).
    #[error("key has an active lease")]
    Leased,
    /// A write for the key is in progress (409).
    #[error("key is being written")]
    BeingWritten,
}

/// Why a replica query failed (SPEC §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No object record (-704).
    #[error("OBJECT_NOT_FOUND")]
    NotFound,
    /// First write still in progress (-703).
    #[error("REPLICA_IS_NOT_READY")]
    NotReady,
}

/// One memory replica of a value (SPEC §4.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// Owning node's name.
    pub endpoint: String,
    /// Address of the value's first byte.
    pub address: u64,
    /// Value length.
    pub size: u64,
    /// Protocol of the segment holding it.
    pub protocol: Protocol,
}

/// One segment record, for `/get_segments_detail` (SPEC §4.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Owning node's name.
    pub name: String,
    /// Segment id.
    pub id: Uuid,
    /// Owning node's client id.
    pub client_id: Uuid,
    /// Address of the first byte.
    pub base_address: u64,
    /// Size in bytes.
    pub size: u64,
    /// Protocol.
    pub protocol: Protocol,
    /// Status.
    pub status: SegmentStatus,
    /// Bytes occupied by values (0 when UNMOUNTING).
    pub used: u64,
}

/// Per-node gauges (`segment_*` series, SPEC §9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeGauge {
    /// Node name.
    pub name: String,
    /// Used bytes over MOUNTED and GRACEFULLY_UNMOUNTING segments.
    pub allocated: u64,
    /// Size over the same segments.
    pub capacity: u64,
}

/// Gauges of the store (SPEC §9, §4.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Object records.
    pub key_count: u64,
    /// Sum of used bytes over all segments.
    pub allocated_bytes: u64,
    /// Sum of sizes of MOUNTED and GRACEFULLY_UNMOUNTING segments.
    pub total_capacity_bytes: u64,
    /// Alive store nodes.
    pub active_clients: u64,
    /// Per node with at least one MOUNTED or GRACEFULLY_UNMOUNTING segment, sorted by name.
    pub nodes: Vec<NodeGauge>,
    /// Segment records of any status.
    pub segments_total: u64,
    /// Segments MOUNTED.
    pub segments_mounted: u64,
    /// Segments GRACEFULLY_UNMOUNTING or UNMOUNTING.
    pub segments_unmounting: u64,
    /// Distinct node names with a MOUNTED segment.
    pub nodes_mounted: u64,
}

/// Counters the store keeps itself (the request counters are kept per worker by `crate::api`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreCounters {
    /// `master_put_revoke_requests_total`.
    pub put_revokes: u64,
    /// `master_attempted_evictions_total`.
    pub attempted_evictions: u64,
    /// `master_successful_evictions_total`.
    pub successful_evictions: u64,
    /// `master_evicted_key_count`.
    pub evicted_keys: u64,
    /// `master_evicted_size_bytes`.
    pub evicted_bytes: u64,
}

/// The master state shared by all workers.
pub struct Store {
    _todo: (),
}

/// A value borrowed for a read: its bytes stay valid (and the memory unreleased) until drop.
pub struct ValueRead {
    _todo: (),
}

impl ValueBytes for ValueRead {
    fn bytes(&self) -> &[u8] {
        todo!()
    }
}

/// A write in progress (`PUT /api/put/{key}` with `Content-Length`). Dropping it before
/// [`WriteHandle::complete`] aborts the write (SPEC §8.2 step 4).
pub struct WriteHandle {
    _todo: (),
}

impl WriteHandle {
    /// Appends body bytes into segment memory. Fails once the segment became UNMOUNTING.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), WriteAborted> {
        let _ = chunk;
        todo!()
    }
    /// All bytes written: the value becomes current. Returns its length.
    pub fn complete(self, now: Instant) -> Result<u64, WriteAborted> {
        let _ = now;
        todo!()
    }
}

impl Store {
    /// An empty store. `config.node_name` names the embedded node; its client id comes from
    /// `platform.random_u128()`.
    pub fn new(config: &Config, platform: Arc<dyn Platform>, now: Instant) -> Self {
        let _ = (config, platform, now);
        todo!()
    }
    /// The embedded node's client id.
    pub fn client_id(&self) -> Uuid {
        todo!()
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
        let _ = (now, kind, size, protocol, location);
        todo!()
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
        let _ = (now, name, offset, size, protocol, location);
        todo!()
    }
    /// Unmounts `ids` (distinct) with grace `grace`. Returns, per id, whether it succeeded.
    pub fn unmount(&self, now: Instant, family: UnmountFamily, ids: &[Uuid], grace: Duration) -> Vec<bool> {
        let _ = (now, family, ids, grace);
        todo!()
    }
    /// Allocate, write and complete in one step (`PUT /api/put`, chunked `PUT /api/put/{key}`).
    pub fn put(&self, now: Instant, key: &str, value: &[u8]) -> Result<(), PutError> {
        let _ = (now, key, value);
        todo!()
    }
    /// Starts a write of `len` bytes (len ≥ 1) that stays in progress until completed.
    pub fn begin_write(self: &Arc<Self>, now: Instant, key: &str, len: u64) -> Result<WriteHandle, PutError> {
        let _ = (now, key, len);
        todo!()
    }
    /// The current complete value of `key`; grants a lease when `grant_lease`.
    pub fn get(self: &Arc<Self>, now: Instant, key: &str, grant_lease: bool) -> Option<ValueRead> {
        let _ = (now, key, grant_lease);
        todo!()
    }
    /// True when `key` has a complete current value.
    pub fn exists(&self, key: &str) -> bool {
        let _ = key;
        todo!()
    }
    /// `DELETE /api/remove/{key}`.
    pub fn remove(&self, now: Instant, key: &str) -> Result<(), RemoveError> {
        let _ = (now, key);
        todo!()
    }
    /// `DELETE /api/remove_all`: returns the number removed.
    pub fn remove_all(&self, now: Instant) -> u64 {
        let _ = now;
        todo!()
    }
    /// Replicas of the current complete value (read-only: no lease).
    pub fn query_key(&self, key: &str) -> Result<Vec<Replica>, QueryError> {
        let _ = key;
        todo!()
    }
    /// Appends to `out` up to `limit` keys with a complete value that start with `prefix` and
    /// are byte-wise greater than `after`, ascending.
    pub fn list_keys(&self, prefix: &str, after: Option<&str>, limit: usize, out: &mut Vec<String>) {
        let _ = (prefix, after, limit, out);
        todo!()
    }
    /// Every segment record, sorted by name then id string (SPEC §4.8).
    pub fn segments(&self) -> Vec<SegmentInfo> {
        todo!()
    }
    /// Distinct names of nodes with a MOUNTED segment, sorted.
    pub fn mounted_node_names(&self) -> Vec<String> {
        todo!()
    }
    /// (used, capacity) over the MOUNTED segments named `name`, or None if there is none.
    pub fn query_segment(&self, name: &str) -> Option<(u64, u64)> {
        let _ = name;
        todo!()
    }
    /// Current gauges.
    pub fn gauges(&self) -> Gauges {
        todo!()
    }
    /// Current store-kept counters.
    pub fn counters(&self) -> StoreCounters {
        todo!()
    }
    /// The next deadline (grace period end, periodic eviction check, lease expiry of a retired value).
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
    /// Runs every transition that is due at `now`.
    pub fn handle_timeout(&self, now: Instant) {
        let _ = now;
        todo!()
    }
}
