//! The client half of the master RPC (a store node calling a master, rpc-spec §1, §5.3),
//! sans-IO: [`RpcClient`] writes request frames into a caller's buffer and takes reply bytes
//! in; replies are matched to their calls by `seq` (several may be outstanding on one
//! connection, and replies may come in any order). The typed helpers build the argument
//! values of the calls a store node makes and read their results.
//!
//! ```text
//!   call(rpc, args, out) ──► seq (frame appended to `out`: 20-byte header, Debug-style body)
//!   handle_input(bytes)  ──► poll_reply() ──► (seq, rpc, Ok(result) | Err(CallError))
//!   a frame that is not a reply of an outstanding call ──► ClientError (close the connection)
//! ```

use std::collections::HashMap;

use uuid::Uuid;

use super::frame::{RequestHeader, ResponseHeader, MAGIC, REQ_HDR, RESP_HDR};
use super::pack::{decode_with, encode_with, Style, Value};
use super::types::{info, Rpc};

/// Largest reply body accepted (a reply of a batch call can be large; nothing legitimate
/// is near this).
pub const MAX_REPLY: usize = 256 << 20;

/// Why one call failed (the connection stays usable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The master answered a coro_rpc error (err_code ≠ 0): the code and its message.
    Rpc(u8, String),
    /// The reply body is not a value of the method's result type.
    BadReply(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Rpc(code, msg) => write!(f, "rpc error {code}: {msg}"),
            CallError::BadReply(why) => write!(f, "malformed reply: {why}"),
        }
    }
}

/// The connection is unusable (close it; every outstanding call failed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One reply: the call's seq and method, and its result.
pub type Reply = (u32, Rpc, Result<Value, CallError>);

/// The client side of one RPC connection.
#[derive(Debug, Default)]
pub struct RpcClient {
    next_seq: u32,
    outstanding: HashMap<u32, Rpc>,
    input: Vec<u8>,
    failed: Option<ClientError>,
}

impl RpcClient {
    /// A client for a fresh connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the request frame of `rpc(args)` to `out` and returns its seq. `args` is one
    /// value per argument, in wire order. Panics if `args` does not fit the method's types
    /// (a programming error: the helpers below build them).
    pub fn call(&mut self, rpc: Rpc, args: Vec<Value>, out: &mut Vec<u8>) -> u32 {
        let i = info(rpc);
        let body = match i.req {
            None => Vec::new(),
            Some(ty) => {
                let v = if i.def.args.len() == 1 {
                    args.into_iter().next().expect("one argument")
                } else {
                    Value::Struct(args)
                };
                encode_with(&ty, &i.req_literal, i.req_hash, &v, Style { type_info: true, len_code: 0 })
                    .expect("arguments of the method's types")
            }
        };
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        RequestHeader::new(seq, i.def.id, u32::try_from(body.len()).expect("requests are small")).write(out);
        out.extend_from_slice(&body);
        self.outstanding.insert(seq, rpc);
        seq
    }

    /// Calls sent and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Bytes read from the connection.
    pub fn handle_input(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.input.extend_from_slice(data);
        }
    }

    /// The next complete reply, `Ok(None)` when more bytes are needed, or the error that
    /// makes the connection unusable.
    pub fn poll_reply(&mut self) -> Result<Option<Reply>, ClientError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.input.len() < RESP_HDR {
            return Ok(None);
        }
        let h = ResponseHeader::parse(&self.input);
        if h.magic != MAGIC {
            return Err(self.fail(format!("bad magic {:#04x} in a reply", h.magic)));
        }
        let total = RESP_HDR as u64 + u64::from(h.length) + u64::from(h.attach_length);
        if u64::from(h.length) > MAX_REPLY as u64 || u64::from(h.attach_length) > MAX_REPLY as u64 {
            return Err(self.fail(format!("a reply of {total} bytes")));
        }
        let total = total as usize;
        if self.input.len() < total {
            return Ok(None);
        }
        let Some(rpc) = self.outstanding.remove(&h.seq) else {
            return Err(self.fail(format!("a reply with unknown seq {}", h.seq)));
        };
        let body = &self.input[RESP_HDR..RESP_HDR + h.length as usize];
        let result = if h.err_code != 0 {
            let msg = super::pack::decode(&super::types::ERROR_BODY, body)
                .ok()
                .and_then(|(v, _)| v.as_bytes().map(|b| String::from_utf8_lossy(b).into_owned()))
                .unwrap_or_default();
            Err(CallError::Rpc(h.err_code, msg))
        } else {
            let i = info(rpc);
            decode_with(&i.def.ret, &i.ret_literal, i.ret_hash, body)
                .map(|(v, _)| v)
                .map_err(|e| CallError::BadReply(format!("{e:?}")))
        };
        self.input.drain(..total);
        Ok(Some((h.seq, rpc, result)))
    }

    fn fail(&mut self, why: String) -> ClientError {
        let e = ClientError(why);
        self.failed = Some(e.clone());
        self.input.clear();
        e
    }

    /// The seqs of the calls still outstanding, forgotten (the connection closed).
    pub fn take_outstanding(&mut self) -> Vec<(u32, Rpc)> {
        self.outstanding.drain().collect()
    }
}

/// The size of a request header (for buffer sizing).
pub const REQUEST_HEADER: usize = REQ_HDR;

// ---- argument builders (rpc-spec §4) ----

/// A `UUID` value.
pub fn uuid(id: Uuid) -> Value {
    let (a, b) = id.as_u64_pair();
    Value::Struct(vec![Value::UInt(a), Value::UInt(b)])
}

/// A `Segment {id, name, base, size, te_endpoint, protocol, host_id}` value.
pub fn segment(id: Uuid, name: &str, base: u64, size: u64, te_endpoint: &str, protocol: &str) -> Value {
    Value::Struct(vec![
        uuid(id),
        Value::str(name),
        Value::UInt(base),
        Value::UInt(size),
        Value::str(te_endpoint),
        Value::str(protocol),
        Value::str(""),
    ])
}

/// A `ReplicateConfig` asking for `replicas` copies (the rest as upstream's defaults).
pub fn replicate_config(replicas: u64) -> Value {
    Value::Struct(vec![
        Value::UInt(replicas),
        Value::UInt(0),
        Value::UInt(0),
        Value::UInt(0),
        Value::opt(None),
        Value::Bool(false),
        Value::List(vec![]),
        Value::str(""),
        Value::List(vec![]),
        Value::Bool(false),
        Value::UInt(0),
        Value::str(""),
        Value::opt(None),
    ])
}

/// An `ObjectMeta {key, object_checksum: none}` value.
pub fn object_meta(key: &str) -> Value {
    Value::Struct(vec![Value::str(key), Value::opt(None)])
}

/// `ReplicaType::MEMORY` (PutEnd, PutRevoke of memory replicas, what a store node writes).
pub const REPLICA_TYPE_MEMORY: i64 = 0;
/// `ReplicaType::ALL` (what upstream's Python client sends).
pub const REPLICA_TYPE_ALL: i64 = 4;

/// `ClientStatus::NEED_REMOUNT` of a Ping reply.
pub const NEED_REMOUNT: i64 = 2;

// ---- result readers ----

/// A method's `expected<T, ErrorCode>` result: the value, or the master's error code.
pub fn expected(v: &Value) -> Result<Result<&Value, i32>, CallError> {
    match v {
        Value::Ok(inner) => Ok(Ok(inner)),
        Value::Err(code) => match **code {
            Value::Int(c) => Ok(Err(i32::try_from(c).unwrap_or(i32::MIN))),
            _ => Err(CallError::BadReply("error code is not an integer".into())),
        },
        _ => Err(CallError::BadReply("not an expected value".into())),
    }
}

/// One memory replica of a `Replica::Descriptor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryReplica {
    /// Replica id.
    pub id: u64,
    /// Transfer-engine segment name of the holder.
    pub endpoint: String,
    /// Address in the holder's advertised space.
    pub address: u64,
    /// Bytes.
    pub size: u64,
    /// `ReplicaStatus::COMPLETE`.
    pub complete: bool,
}

/// The memory replicas of a `vector<Replica::Descriptor>` (disk and other kinds skipped).
pub fn memory_replicas(v: &Value) -> Result<Vec<MemoryReplica>, CallError> {
    let bad = |w: &str| CallError::BadReply(format!("replica descriptor: {w}"));
    let list = v.as_list().ok_or_else(|| bad("not a list"))?;
    let mut out = Vec::with_capacity(list.len());
    for d in list {
        let [Value::UInt(id), Value::Variant(kind, inner), Value::Int(status)] =
            d.as_fields().ok_or_else(|| bad("fields"))?
        else {
            return Err(bad("field types"));
        };
        if *kind != 0 {
            continue;
        }
        let buf = inner.as_fields().and_then(|f| f.first()).and_then(Value::as_fields).ok_or_else(|| bad("buffer"))?;
        let [Value::UInt(size), Value::UInt(address), _, endpoint] = buf else {
            return Err(bad("buffer fields"));
        };
        let endpoint = endpoint.as_bytes().ok_or_else(|| bad("endpoint"))?;
        out.push(MemoryReplica {
            id: *id,
            endpoint: String::from_utf8_lossy(endpoint).into_owned(),
            address: *address,
            size: *size,
            complete: *status == 3,
        });
    }
    Ok(out)
}
