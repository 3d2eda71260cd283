//! The store's public types: what it takes and answers (mount kinds, statuses, errors,
//! descriptors, gauges and counters). A leaf: it imports no other file of the store.

use uuid::Uuid;

use crate::config::Protocol;

/// How a segment was created; decides which unmount endpoint accepts it (SPEC §5.2, §5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountKind {
    /// `POST /api/mount`.
    Anonymous,
    /// The start-up segment (`--global-segment-size`); unmounted like `Anonymous`.
    Startup,
    /// `POST /api/mount_shm`.
    Shm,
    /// `MountSegment` of an RPC client (remote memory, see `remote.rs`).
    Remote,
}

/// Which unmount endpoint is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmountFamily {
    /// `POST /api/unmount`: accepts `Anonymous` and `Startup` segments.
    Anonymous,
    /// `POST /api/unmount_shm`: accepts `Shm` segments.
    Shm,
    /// `UnmountSegment` / `GracefulUnmountSegment` over RPC: accepts `Remote` segments.
    Remote,
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
    /// The tenant's quota is used up and nothing of its own can be evicted (507, -1700;
    /// `--enable-multi-tenants`).
    #[error("tenant quota exceeded")]
    QuotaExceeded,
    /// The writer's tenant has no quota policy (403, -1701; `--enable-multi-tenants` admits
    /// only registered tenants, as upstream).
    #[error("tenant not registered")]
    TenantNotRegistered,
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

/// A [`Replica`] borrowed from the store while its read lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaRef<'a> {
    /// Owning node's name.
    pub endpoint: &'a str,
    /// Address of the value's first byte.
    pub address: u64,
    /// Value length.
    pub size: u64,
    /// Protocol of the segment holding it.
    pub protocol: Protocol,
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
    /// Transfer endpoint: the node's name, or a remote segment's own endpoint.
    pub te_endpoint: String,
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
    /// End of the grace period, while GRACEFULLY_UNMOUNTING (ns since the store epoch;
    /// [`crate::store::Store::remaining`] turns it into a duration).
    pub grace_deadline_ns: Option<u64>,
    /// `DRAINING` or `DRAINED` while a drain job has it (out of allocation).
    pub drain: Option<&'static str>,
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
    /// `master_suspected_clients`: remote nodes Suspected now (counted in `active_clients`).
    pub suspected_clients: u64,
    /// Segments a running drain job is emptying (`master_draining_segments`).
    pub segments_draining: u64,
    /// Segments a drain job emptied (`master_drained_segments`).
    pub segments_drained: u64,
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
    /// The oldest heartbeat among alive RPC clients (ns since the store epoch), if any
    /// (`master_client_oldest_heartbeat_age_seconds`).
    pub oldest_heartbeat_ns: Option<u64>,
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
    /// `master_expired_clients_total`: RPC clients expired for missed heartbeats (gone
    /// Offline).
    pub expired_clients: u64,
    /// `master_suspected_clients_total`: Active -> Suspected transitions.
    pub suspected_clients: u64,
    /// `master_recovered_clients_total`: Suspected -> Active transitions (a heartbeat came).
    pub recovered_clients: u64,
}

/// A segment as an RPC client describes it (`Segment` of the wire protocol, minus `host_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSegment {
    /// Segment id (chosen by the client).
    pub id: Uuid,
    /// Node name (`local_hostname:port` of the client).
    pub name: String,
    /// Address of the first byte in the client's process.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// Transfer-engine endpoint the replicas' bytes are reached at.
    pub te_endpoint: String,
    /// Protocol string of the mount (`tcp`, `rdma`, …).
    pub protocol: String,
}

/// Mooncake `ErrorCode`s the RPC operations of the store return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorCode {
    /// -101
    #[error("SEGMENT_NOT_FOUND")]
    SegmentNotFound,
    /// -200
    #[error("NO_AVAILABLE_HANDLE")]
    NoAvailableHandle,
    /// -600
    #[error("INVALID_PARAMS")]
    InvalidParams,
    /// -601
    #[error("ILLEGAL_CLIENT")]
    IllegalClient,
    /// -700
    #[error("INVALID_WRITE")]
    InvalidWrite,
    /// -703
    #[error("REPLICA_IS_NOT_READY")]
    ReplicaNotReady,
    /// -704
    #[error("OBJECT_NOT_FOUND")]
    ObjectNotFound,
    /// -705
    #[error("OBJECT_ALREADY_EXISTS")]
    ObjectAlreadyExists,
    /// -706
    #[error("OBJECT_HAS_LEASE")]
    ObjectHasLease,
    /// -714
    #[error("OBJECT_REPLICA_BUSY")]
    ObjectReplicaBusy,
    /// -1010
    #[error("UNAVAILABLE_IN_CURRENT_STATUS")]
    UnavailableInCurrentStatus,
    /// -1700
    #[error("TENANT_QUOTA_EXCEEDED")]
    TenantQuotaExceeded,
    /// -1701
    #[error("TENANT_NOT_REGISTERED")]
    TenantNotRegistered,
}

impl ErrorCode {
    /// The numeric code (upstream `ErrorCode`).
    pub fn code(self) -> i32 {
        match self {
            ErrorCode::SegmentNotFound => -101,
            ErrorCode::NoAvailableHandle => -200,
            ErrorCode::InvalidParams => -600,
            ErrorCode::IllegalClient => -601,
            ErrorCode::InvalidWrite => -700,
            ErrorCode::ReplicaNotReady => -703,
            ErrorCode::ObjectNotFound => -704,
            ErrorCode::ObjectAlreadyExists => -705,
            ErrorCode::ObjectHasLease => -706,
            ErrorCode::ObjectReplicaBusy => -714,
            ErrorCode::UnavailableInCurrentStatus => -1010,
            ErrorCode::TenantQuotaExceeded => -1700,
            ErrorCode::TenantNotRegistered => -1701,
        }
    }
}

impl From<RemoveError> for ErrorCode {
    fn from(e: RemoveError) -> Self {
        match e {
            RemoveError::NotFound => ErrorCode::ObjectNotFound,
            RemoveError::Leased => ErrorCode::ObjectHasLease,
            RemoveError::BeingWritten => ErrorCode::ReplicaNotReady,
        }
    }
}

/// What a Ping tells the client (`ClientStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientStatus {
    /// Registered and remounted.
    Ok,
    /// Unknown, expired, or not remounted since registration: call ReMountSegment.
    NeedRemount,
}

/// One memory replica as an RPC client sees it (`Replica::Descriptor` with a
/// `MemoryDescriptor`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaDesc {
    /// Replica id.
    pub id: u64,
    /// Address of the value's first byte in the owning client's process.
    pub address: u64,
    /// Value length.
    pub size: u64,
    /// Transfer-engine endpoint of the owning segment.
    pub endpoint: String,
    /// True once the write completed (`COMPLETE`), else `PROCESSING`.
    pub complete: bool,
}

/// Placement wishes of an RPC write (`ReplicateConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteConfig {
    /// Memory replicas wanted, on distinct nodes (best effort, at least one).
    pub replicas: u64,
    /// Node names tried first, in order.
    pub preferred: Vec<String>,
    /// `soft_pin_action` with `soft_pin_ttl_ms`.
    pub soft_pin: SoftPin,
    /// `with_hard_pin`: never evicted.
    pub hard_pin: bool,
    /// `host_id`: the writer's host, preferred by `--allocation-strategy local_first`.
    pub host_id: String,
}

/// `ReplicateConfig.soft_pin_action` (upstream's PRESERVE 0, ENABLE 1, DISABLE 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SoftPin {
    /// Keep the pin of the value replaced (an upsert), none for a new key.
    #[default]
    Preserve,
    /// Soft-pin it, for this long (ms; `None`: `--default-kv-soft-pin-ttl`), at most
    /// `--max-kv-soft-pin-ttl`.
    Enable(Option<u64>),
    /// Not soft-pinned.
    Disable,
}

/// A GetReplicaList answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaList {
    /// The readable replicas.
    pub replicas: Vec<ReplicaDesc>,
    /// Checksum given at PutEnd.
    pub checksum: Option<u64>,
}

/// Why a put did not start (PutStart): allocation or the object state.
pub type PutStartResult = Result<Vec<ReplicaDesc>, ErrorCode>;

/// Why the data plane may not touch a range of this process's memory (see
/// `Store::open_read_range`): every case is answered with a reject, never with bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeRefused {
    /// Not inside one live segment of this process.
    #[error("not within any segment of this node")]
    NoSegment,
    /// Not inside one allocation.
    #[error("not within one value")]
    NotInValue,
    /// A read of a value whose write is still in progress.
    #[error("the value is not complete")]
    NotComplete,
    /// A write outside an allocation of a write in progress (or of an aborted one).
    #[error("not within a write in progress")]
    NotWritable,
}

/// Where a value lives on another node: what the data plane reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteReplica {
    /// Transfer-engine segment name of the owning node.
    pub endpoint: String,
    /// Address of the first byte in the owner's advertised address space.
    pub address: u64,
    /// Value length.
    pub len: u64,
}

/// A REST put placed on another node's segment: the data plane writes it there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemotePut {
    /// Identifies the write for `Store::finish_remote_put`.
    pub id: u64,
    /// Transfer-engine segment name of the owning node.
    pub endpoint: String,
    /// Address of the first byte in the owner's advertised address space.
    pub address: u64,
}
