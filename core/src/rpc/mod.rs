//! The Mooncake master RPC protocol (`reference/rpc/rpc-spec.md`): coro_rpc framing and the
//! struct_pack subset its payloads use, sans-IO.
//!
//! ```text
//!   bytes in ──► RpcConnection (frames: 20-byte header, body, attachment)
//!                     │  function id ──► types::lookup ──► not served: err_code 11
//!                     │  body ──► pack::decode (hash, literal, LEN_SIZE) ──► error: err_code 4
//!                     ▼
//!                RpcService::call ──► Store (remote nodes, segments, objects) ──► Value
//!                     │
//!   bytes out ◄── pack::encode (Debug style: hash|1, meta, literal) ◄─┘  seq echoed
//! ```
//!
//! Layout: `md5` (const MD5 for ids and hashes), `pack` (type descriptions, values, codec),
//! `types` (the Mooncake wire types and the RPC table), `frame` (headers, error bodies),
//! `conn` (the per-connection state machine), `service` (the methods over the store).

pub mod client;
mod conn;
#[cfg(test)]
mod conn_tests;
mod frame;
mod md5;
mod pack;
mod service;
#[cfg(test)]
mod tests;
mod types;

pub use conn::{RpcAcceptor, RpcConnection, MAX_FRAME};
pub use frame::{
    error_body, write_response, RequestHeader, ResponseHeader, ERRC_EXCEPTION, ERRC_INVALID_ARG, ERRC_NOT_REGISTERED,
    MAGIC, MSG_INVALID_ARG, MSG_NOT_REGISTERED, REQ_HDR, RESP_HDR,
};
pub use md5::{md5_concat, md5_hash32};
pub use pack::{decode, decode_with, encode, encode_with, BufInfo, DecodeError, Mismatch, Style, Ty, Value};
pub use service::{RpcService, SERVICE_VERSION};
pub use types::{
    function_id, info, lookup, method_name, Rpc, RpcDef, RpcInfo, CLIENT_METHODS, NEWER_CLIENT_METHODS, RPCS,
};

/// Every wire type of the Mooncake RPC surface.
pub mod wire {
    pub use super::types::{
        BUFFER_DESCRIPTOR, DESCRIPTORS, DFS_DESCRIPTOR, DISK_DESCRIPTOR, ERROR_BODY, ERROR_BODY_255, ERROR_CODE,
        GET_REPLICA_LIST_RESPONSE, LOCAL_DISK_DESCRIPTOR, MEMORY_DESCRIPTOR, OBJECT_META, OFFLOAD_TASK_ITEM,
        PING_RESPONSE, REPLICATE_CONFIG, REPLICA_DESCRIPTOR, SEGMENT, STORAGE_CONFIG, TASK_ASSIGNMENT, UUID,
    };
}
