//! The Mooncake wire types and the RPC table (`reference/rpc/rpc-spec.md` §4–§5).
//!
//! Every type is a [`Ty`] constant; literals, hashes, encoders and decoders derive from it.
//! The RPC table gives each `WrappedMasterService` method its function id (computed at compile
//! time: `MD5("mooncake::WrappedMasterService::" + name)[0..4]` big-endian), its argument types
//! in wire order, its result type, and whether this master serves it. Unserved methods, and
//! ids not in the table, are answered `function_not_registered` like upstream.

use std::sync::OnceLock;

use super::md5::md5_hash32;
use super::pack::Ty;

/// `ErrorCode` (int32 enum).
pub const ERROR_CODE: Ty = Ty::I32;
/// `UUID = std::pair<uint64_t, uint64_t>`, a trivially serializable struct.
pub const UUID: Ty = Ty::Trivial(&[Ty::U64, Ty::U64], 8, 8);
/// `Segment {id, name, base, size, te_endpoint, protocol, host_id}`.
pub const SEGMENT: Ty = Ty::Struct(&[UUID, Ty::Str, Ty::U64, Ty::U64, Ty::Str, Ty::Str, Ty::Str]);
/// `ReplicateConfig` (13 fields, §4).
pub const REPLICATE_CONFIG: Ty = Ty::Struct(&[
    Ty::U64,                     // replica_num
    Ty::U64,                     // nof_replica_num
    Ty::U64,                     // dfs_replica_num
    Ty::U8,                      // soft_pin_action
    Ty::Opt(&Ty::U64),           // soft_pin_ttl_ms
    Ty::Bool,                    // with_hard_pin
    Ty::Vec(&Ty::Str),           // preferred_segments
    Ty::Str,                     // preferred_segment
    Ty::Vec(&Ty::Str),           // preferred_nof_segments
    Ty::Bool,                    // prefer_alloc_in_same_node
    Ty::U8,                      // data_type
    Ty::Str,                     // host_id
    Ty::Opt(&Ty::Vec(&Ty::Str)), // group_ids
]);
/// `ObjectMeta {key, object_checksum}`.
pub const OBJECT_META: Ty = Ty::Struct(&[Ty::Str, Ty::Opt(&Ty::U64)]);
/// `AllocatedBuffer::Descriptor {size_, buffer_address_, protocol_, transport_endpoint_}`.
pub const BUFFER_DESCRIPTOR: Ty = Ty::Struct(&[Ty::U64, Ty::U64, Ty::Str, Ty::Str]);
/// `MemoryDescriptor` (and `NoFDescriptor`): `{buffer_descriptor}`.
pub const MEMORY_DESCRIPTOR: Ty = Ty::Struct(&[BUFFER_DESCRIPTOR]);
/// `DiskDescriptor {file_path, object_size}`.
pub const DISK_DESCRIPTOR: Ty = Ty::Struct(&[Ty::Str, Ty::U64]);
/// `LocalDiskDescriptor {client_id, object_size, transport_endpoint}`.
pub const LOCAL_DISK_DESCRIPTOR: Ty = Ty::Struct(&[UUID, Ty::U64, Ty::Str]);
/// `DistributedFSDescriptor {file_path, offset, object_size, aligned_size, shard_idx}`.
pub const DFS_DESCRIPTOR: Ty = Ty::Struct(&[Ty::Str, Ty::U64, Ty::U64, Ty::U64, Ty::I32]);
/// `Replica::Descriptor {id, descriptor_variant, status}`.
pub const REPLICA_DESCRIPTOR: Ty = Ty::Struct(&[
    Ty::U64,
    Ty::Variant(&[MEMORY_DESCRIPTOR, MEMORY_DESCRIPTOR, DISK_DESCRIPTOR, LOCAL_DISK_DESCRIPTOR, DFS_DESCRIPTOR]),
    Ty::I32,
]);
/// `std::vector<Replica::Descriptor>`.
pub const DESCRIPTORS: Ty = Ty::Vec(&REPLICA_DESCRIPTOR);
/// `GetReplicaListResponse {replicas, lease_ttl_ms, object_checksum}`.
pub const GET_REPLICA_LIST_RESPONSE: Ty = Ty::Struct(&[DESCRIPTORS, Ty::U64, Ty::Opt(&Ty::U64)]);
/// `PingResponse {view_version_id, client_status}`.
pub const PING_RESPONSE: Ty = Ty::Struct(&[Ty::I64, Ty::I32]);
/// `GetStorageConfigResponse {fsdir, enable_disk_eviction, quota_bytes}`.
pub const STORAGE_CONFIG: Ty = Ty::Struct(&[Ty::Str, Ty::Bool, Ty::U64]);
/// `TaskAssignment {id, type, payload, created_at_ms_epoch, max_retry_attempts}`.
pub const TASK_ASSIGNMENT: Ty = Ty::Struct(&[UUID, Ty::I32, Ty::Str, Ty::I64, Ty::U32]);
/// `OffloadTaskItem {tenant_id, key, size}`.
pub const OFFLOAD_TASK_ITEM: Ty = Ty::Struct(&[Ty::Str, Ty::Str, Ty::I64]);
/// The body of a coro_rpc error reply with err_code 1..=254: the message.
pub const ERROR_BODY: Ty = Ty::Str;
/// The body of a coro_rpc error reply with err_code 255: `{u16 code, string msg}`.
pub const ERROR_BODY_255: Ty = Ty::Struct(&[Ty::U16, Ty::Str]);

const X_VOID: Ty = Ty::Expected(&Ty::Void, &ERROR_CODE);
const X_BOOL: Ty = Ty::Expected(&Ty::Bool, &ERROR_CODE);
const X_STR: Ty = Ty::Expected(&Ty::Str, &ERROR_CODE);
const X_DESCRIPTORS: Ty = Ty::Expected(&DESCRIPTORS, &ERROR_CODE);
const X_REPLICA_LIST: Ty = Ty::Expected(&GET_REPLICA_LIST_RESPONSE, &ERROR_CODE);
const X_SEGMENT_STATUS: Ty = Ty::Expected(&Ty::I32, &ERROR_CODE);
const STRS: Ty = Ty::Vec(&Ty::Str);

const SERVICE_PREFIX: &str = "mooncake::WrappedMasterService::";

/// coro_rpc function id of a `WrappedMasterService` method (`auto_gen_register_key`).
pub const fn function_id(method: &str) -> u32 {
    md5_hash32(SERVICE_PREFIX.as_bytes(), method.as_bytes())
}

/// One RPC: id, argument types (wire order), result type.
#[derive(Debug)]
pub struct RpcDef {
    /// Which method.
    pub rpc: Rpc,
    /// Method name.
    pub name: &'static str,
    /// Function id.
    pub id: u32,
    /// Argument types in wire order (0 → empty body, 1 → that type, ≥ 2 → a tuple).
    pub args: &'static [Ty],
    /// Result type.
    pub ret: Ty,
    /// Served by this master; otherwise answered "function not registered".
    pub served: bool,
}

macro_rules! rpc_table {
    ($($name:ident ($($arg:expr),*) -> $ret:expr, $served:expr;)*) => {
        /// The methods of the RPC table.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Rpc {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                $name,
            )*
        }

        /// Every method whose wire types are known, in the order of the spec's table.
        pub static RPCS: &[RpcDef] = &[$(RpcDef {
            rpc: Rpc::$name,
            name: stringify!($name),
            id: function_id(stringify!($name)),
            args: &[$($arg),*],
            ret: $ret,
            served: $served,
        }),*];
    };
}

rpc_table! {
    ServiceReady() -> X_STR, true;
    GetStorageConfig() -> Ty::Expected(&STORAGE_CONFIG, &ERROR_CODE), true;
    GetFsdir() -> X_STR, true;
    Ping(UUID) -> Ty::Expected(&PING_RESPONSE, &ERROR_CODE), true;
    FetchTasks(UUID, Ty::U64) -> Ty::Expected(&Ty::Vec(&TASK_ASSIGNMENT), &ERROR_CODE), true;
    MountSegment(SEGMENT, UUID) -> X_VOID, true;
    ReMountSegment(Ty::Vec(&SEGMENT), UUID) -> X_VOID, true;
    UnmountSegment(UUID, UUID) -> X_VOID, true;
    GracefulUnmountSegment(UUID, UUID, Ty::U64) -> X_VOID, true;
    QuerySegmentStatusById(UUID) -> X_SEGMENT_STATUS, true;
    QuerySegmentStatus(Ty::Str) -> X_SEGMENT_STATUS, true;
    ExistKey(Ty::Str, Ty::Str) -> X_BOOL, true;
    BatchExistKey(STRS, Ty::Str) -> Ty::Vec(&X_BOOL), true;
    GetReplicaList(Ty::Str, Ty::Str) -> X_REPLICA_LIST, true;
    BatchGetReplicaList(STRS, Ty::Str) -> Ty::Vec(&X_REPLICA_LIST), true;
    GetReplicaListByRegex(Ty::Str, Ty::Str) -> Ty::Expected(&Ty::Map(&Ty::Str, &DESCRIPTORS), &ERROR_CODE), true;
    PutStart(UUID, Ty::Str, Ty::U64, REPLICATE_CONFIG, Ty::Str) -> X_DESCRIPTORS, true;
    PutEnd(UUID, OBJECT_META, Ty::I32, Ty::Str) -> X_VOID, true;
    PutRevoke(UUID, Ty::Str, Ty::I32, Ty::Str) -> X_VOID, true;
    BatchPutStart(UUID, STRS, Ty::Vec(&Ty::U64), REPLICATE_CONFIG, Ty::Str) -> Ty::Vec(&X_DESCRIPTORS), true;
    BatchPutEnd(UUID, Ty::Vec(&OBJECT_META), Ty::I32, Ty::Str) -> Ty::Vec(&X_VOID), true;
    BatchPutRevoke(UUID, STRS, Ty::I32, Ty::Str) -> Ty::Vec(&X_VOID), true;
    UpsertStart(UUID, Ty::Str, Ty::U64, REPLICATE_CONFIG, Ty::Str) -> X_DESCRIPTORS, true;
    UpsertEnd(UUID, OBJECT_META, Ty::I32, Ty::Str) -> X_VOID, true;
    UpsertRevoke(UUID, Ty::Str, Ty::I32, Ty::Str) -> X_VOID, true;
    BatchUpsertStart(UUID, STRS, Ty::Vec(&Ty::U64), REPLICATE_CONFIG, Ty::Str) -> Ty::Vec(&X_DESCRIPTORS), true;
    BatchUpsertEnd(UUID, Ty::Vec(&OBJECT_META), Ty::Str) -> Ty::Vec(&X_VOID), true;
    BatchUpsertRevoke(UUID, STRS, Ty::Str) -> Ty::Vec(&X_VOID), true;
    Remove(Ty::Str, Ty::Bool, Ty::Str) -> X_VOID, true;
    RemoveByRegex(Ty::Str, Ty::Bool, Ty::Str) -> Ty::Expected(&Ty::I64, &ERROR_CODE), true;
    RemoveAll(Ty::Bool, Ty::Str) -> Ty::I64, true;
    BatchRemove(STRS, Ty::Bool, Ty::Str) -> Ty::Vec(&X_VOID), true;
    BatchQueryIp(Ty::Vec(&UUID)) -> Ty::Expected(&Ty::Map(&UUID, &STRS), &ERROR_CODE), false;
    BatchReplicaClear(STRS, UUID, Ty::Str) -> Ty::Expected(&STRS, &ERROR_CODE), false;
    MountLocalDiskSegment(UUID, Ty::Bool) -> X_VOID, false;
    UnmountLocalDiskSegment(UUID) -> X_VOID, false;
    OffloadObjectHeartbeat(UUID, Ty::Bool) -> Ty::Expected(&Ty::Vec(&OFFLOAD_TASK_ITEM), &ERROR_CODE), false;
    PollRemoveAll(UUID) -> X_BOOL, false;
    // Newer clients (after 0.3.13; upstream-ha.md "Related changes"): lease-free twins of
    // ExistKey / BatchExistKey, same shapes. Not in rpc-spec's table.
    ProbeKey(Ty::Str, Ty::Str) -> X_BOOL, true;
    BatchProbeKey(STRS, Ty::Str) -> Ty::Vec(&X_BOOL), true;
}

/// Methods of clients newer than the one rpc-spec was read from, served by name (their ids
/// are the same hash of the name).
pub const NEWER_CLIENT_METHODS: [&str; 2] = ["ProbeKey", "BatchProbeKey"];

/// Every method name the upstream client binary knows (65), for naming ids in logs and tests.
pub const CLIENT_METHODS: [&str; 65] = [
    "ExistKey",
    "BatchQueryIp",
    "BatchReplicaClear",
    "GetReplicaListByRegex",
    "GetReplicaList",
    "BatchGetReplicaList",
    "PutStart",
    "PutEnd",
    "PutRevoke",
    "BatchPutStart",
    "BatchPutEnd",
    "BatchPutRevoke",
    "UpsertStart",
    "UpsertEnd",
    "UpsertRevoke",
    "BatchUpsertStart",
    "BatchUpsertEnd",
    "BatchUpsertRevoke",
    "Remove",
    "RemoveByRegex",
    "RemoveAll",
    "BatchRemove",
    "MountSegment",
    "MountNoFSegment",
    "ReMountSegment",
    "ReMountNoFSegment",
    "UnmountSegment",
    "GracefulUnmountSegment",
    "UnmountNoFSegment",
    "GetAllNoFSegments",
    "GetNoFSegmentsByName",
    "Ping",
    "GetFsdir",
    "QuerySegmentStatus",
    "QuerySegmentStatusById",
    "GetStorageConfig",
    "BatchExistKey",
    "ServiceReady",
    "MountLocalDiskSegment",
    "UnmountLocalDiskSegment",
    "OffloadObjectHeartbeat",
    "ReportSsdCapacity",
    "NotifyOffloadSuccess",
    "PromotionObjectHeartbeat",
    "PromotionAllocStart",
    "NotifyPromotionSuccess",
    "NotifyPromotionFailure",
    "CopyStart",
    "DynamicReplicaCopyStart",
    "CopyEnd",
    "DynamicReplicaCopyEnd",
    "CopyRevoke",
    "DynamicReplicaCopyRevoke",
    "MoveStart",
    "MoveEnd",
    "MoveRevoke",
    "EvictDiskReplica",
    "BatchEvictDiskReplica",
    "PollRemoveAll",
    "CreateCopyTask",
    "CreateMoveTask",
    "QueryTask",
    "FetchTasks",
    "MarkTaskToComplete",
    "CalcCacheStats",
];

/// The name of a function id the client knows, if any.
pub fn method_name(id: u32) -> Option<&'static str> {
    CLIENT_METHODS.iter().chain(&NEWER_CLIENT_METHODS).copied().find(|m| function_id(m) == id)
}

/// An RPC with its request and response types resolved and their literals and hashes cached.
#[derive(Debug)]
pub struct RpcInfo {
    /// The table entry.
    pub def: &'static RpcDef,
    /// Request root type (`None`: zero arguments, empty body).
    pub req: Option<Ty>,
    /// Literal of the request type.
    pub req_literal: Vec<u8>,
    /// Hash bits of the request type.
    pub req_hash: u32,
    /// Literal of the result type.
    pub ret_literal: Vec<u8>,
    /// Hash bits of the result type.
    pub ret_hash: u32,
}

impl RpcDef {
    /// The root type of a request body (§3.1: 0 args → none, 1 → the type, ≥ 2 → a tuple).
    pub fn request_type(&self) -> Option<Ty> {
        match self.args {
            [] => None,
            [one] => Some(*one),
            many => Some(Ty::Struct(many)),
        }
    }
}

/// The table with resolved types, sorted by function id.
fn infos() -> &'static [RpcInfo] {
    static INFOS: OnceLock<Vec<RpcInfo>> = OnceLock::new();
    INFOS.get_or_init(|| {
        let mut v: Vec<RpcInfo> = RPCS
            .iter()
            .map(|def| {
                let req = def.request_type();
                let req_literal = req.map(|t| t.literal()).unwrap_or_default();
                RpcInfo {
                    def,
                    req,
                    req_hash: req.map_or(0, |t| t.hash()),
                    req_literal,
                    ret_literal: def.ret.literal(),
                    ret_hash: def.ret.hash(),
                }
            })
            .collect();
        v.sort_by_key(|i| i.def.id);
        v
    })
}

/// The table entry of a function id, served or not.
pub fn lookup(id: u32) -> Option<&'static RpcInfo> {
    let t = infos();
    t.binary_search_by_key(&id, |i| i.def.id).ok().map(|i| &t[i])
}

/// The table entry of a method.
pub fn info(rpc: Rpc) -> &'static RpcInfo {
    infos().iter().find(|i| i.def.rpc == rpc).expect("every Rpc is in the table")
}
