//! One REST request of a store node carried out on the cluster: the RPCs it makes to the
//! master and the bytes it moves, as a step machine. The driver feeds it replies and
//! transfer outcomes and carries out the [`Step`]s it yields; nothing here does IO.
//!
//! ```text
//!   Put:    UpsertStart ──► write every replica (local memcpy / data plane) ──► UpsertEnd ──► Stored
//!                                  └── a write failed ──► UpsertRevoke ──► Failed(Transfer)
//!   Get:    GetReplicaList ──► read a complete replica, ours first; on failure the next one ──► Value
//!   Exist:  ExistKey ──► Exists(bool)
//!   Remove: Remove(force = false) ──► Removed         RemoveAll(false) ──► RemovedAll(n)
//!   Mount:  MountSegment per new segment ──► Mounted (the first error: Failed, the rest not sent)
//!   Unmount: (Graceful)UnmountSegment per id ──► Unmounted(per-id results)
//! ```

use uuid::Uuid;

use crate::rpc::client::{self, CallError, MemoryReplica};
use crate::rpc::{Rpc, Value};
use crate::transfer::{TransferOp, TransferOutcome};

/// A segment of this node's memory, as it is mounted into the master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSegment {
    /// Segment id (the same in this node's store and in the master).
    pub id: Uuid,
    /// Address of its first byte in this node's advertised space.
    pub base: u64,
    /// Bytes.
    pub size: u64,
    /// `tcp` or `rdma`.
    pub protocol: String,
}

/// What a store node's REST request asks of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterOp {
    /// Store `value` under `key` with `replicas` copies on distinct nodes (replacing any).
    Put {
        /// Key.
        key: String,
        /// The bytes.
        value: bytes::Bytes,
        /// Copies wanted (at least 1).
        replicas: u64,
    },
    /// Read the value of `key`.
    Get {
        /// Key.
        key: String,
    },
    /// Whether `key` has a readable value.
    Exist {
        /// Key.
        key: String,
    },
    /// Remove `key` (not forced: a leased value stays).
    Remove {
        /// Key.
        key: String,
    },
    /// Remove every unleased key.
    RemoveAll,
    /// Register new segments of this node with the master.
    Mount {
        /// The segments.
        segments: Vec<NodeSegment>,
    },
    /// Unregister segments (gracefully when `grace_ms > 0`).
    Unmount {
        /// Segment ids.
        ids: Vec<Uuid>,
        /// Grace period in milliseconds.
        grace_ms: u64,
    },
}

/// Why a cluster operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterError {
    /// The master answered this `ErrorCode`.
    Master(i32),
    /// The master could not be asked (no connection, or it broke): the reason.
    Unreachable(String),
    /// The master's reply was not understood.
    Protocol(String),
    /// Bytes could not be moved to or from a node (the text names it).
    Transfer(String),
}

/// How a cluster operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterReply {
    /// A put was acknowledged by every replica and committed.
    Stored,
    /// A get's bytes.
    Value(Vec<u8>),
    /// An exist check.
    Exists(bool),
    /// A remove.
    Removed,
    /// A remove-all: how many keys went.
    RemovedAll(u64),
    /// Every segment was mounted.
    Mounted,
    /// Per id (in order): unmounted, or why not.
    Unmounted(Vec<Result<(), ClusterError>>),
    /// It failed.
    Failed(ClusterError),
}

/// Who this node is to the master.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    /// The client id of this node's RPCs.
    pub client_id: Uuid,
    /// This node's transfer-engine segment name (`host:port`).
    pub name: String,
    /// Tenant of every key (upstream's default `default`).
    pub tenant: String,
    /// The version the master's `ServiceReady` must answer (`--service-version`; a master
    /// of another version is refused, as upstream's client does).
    pub version: String,
}

/// A move of bytes the driver carries out: on this node (`local`) or through the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The holder's segment name.
    pub endpoint: String,
    /// The holder is this node: copy in memory.
    pub local: bool,
    /// What to move.
    pub op: TransferOp,
}

/// What the driver does next for an operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this call to the master; feed its reply to [`OpRun::on_reply`].
    Call(Rpc, Vec<Value>),
    /// Carry out these moves (all of them, in any order); feed their outcomes, in the same
    /// order, to [`OpRun::on_moved`].
    Move(Vec<Move>),
    /// Finished.
    Done(ClusterReply),
}

/// The result of a call as the driver saw it.
pub type CallResult = Result<Value, CallOutcomeError>;

/// A call that got no usable reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcomeError {
    /// The connection was down or broke before the reply.
    Unreachable(String),
    /// The master answered a coro_rpc error, or a malformed reply.
    Call(CallError),
}

#[derive(Debug)]
enum State {
    PutStarted { key: String, value: bytes::Bytes },
    PutWriting { key: String },
    PutEnding,
    PutRevoking { why: String },
    GetListing,
    GetReading { replicas: Vec<MemoryReplica>, next: usize, errors: Vec<String> },
    Single(Rpc),
    Mounting { rest: Vec<NodeSegment> },
    Unmounting { ids: Vec<Uuid>, grace_ms: u64, results: Vec<Result<(), ClusterError>> },
    Done,
}

/// One operation in progress.
#[derive(Debug)]
pub struct OpRun {
    id: NodeIdentity,
    state: State,
}

fn key_args(id: &NodeIdentity, key: &str) -> Vec<Value> {
    vec![Value::str(key), Value::str(&id.tenant)]
}

impl OpRun {
    /// Starts `op`; the first step is always a call.
    pub fn start(op: ClusterOp, id: &NodeIdentity) -> (OpRun, Step) {
        let cid = client::uuid(id.client_id);
        let (state, step) = match op {
            ClusterOp::Put { key, value, replicas } => {
                let args = vec![
                    cid,
                    Value::str(&key),
                    Value::UInt(value.len() as u64),
                    client::replicate_config(replicas.max(1)),
                    Value::str(&id.tenant),
                ];
                (State::PutStarted { key, value }, Step::Call(Rpc::UpsertStart, args))
            }
            ClusterOp::Get { key } => (State::GetListing, Step::Call(Rpc::GetReplicaList, key_args(id, &key))),
            ClusterOp::Exist { key } => (State::Single(Rpc::ExistKey), Step::Call(Rpc::ExistKey, key_args(id, &key))),
            ClusterOp::Remove { key } => (
                State::Single(Rpc::Remove),
                Step::Call(Rpc::Remove, vec![Value::str(&key), Value::Bool(false), Value::str(&id.tenant)]),
            ),
            ClusterOp::RemoveAll => (
                State::Single(Rpc::RemoveAll),
                Step::Call(Rpc::RemoveAll, vec![Value::Bool(false), Value::str(&id.tenant)]),
            ),
            ClusterOp::Mount { mut segments } => {
                if segments.is_empty() {
                    return (OpRun { id: id.clone(), state: State::Done }, Step::Done(ClusterReply::Mounted));
                }
                let first = segments.remove(0);
                (State::Mounting { rest: segments }, Step::Call(Rpc::MountSegment, mount_args(id, &first)))
            }
            ClusterOp::Unmount { ids, grace_ms } => {
                if ids.is_empty() {
                    return (OpRun { id: id.clone(), state: State::Done }, Step::Done(ClusterReply::Unmounted(vec![])));
                }
                let step = unmount_call(id, ids[0], grace_ms);
                (State::Unmounting { ids, grace_ms, results: Vec::new() }, step)
            }
        };
        (OpRun { id: id.clone(), state }, step)
    }

    /// The reply of the call of the last [`Step::Call`].
    pub fn on_reply(&mut self, reply: CallResult) -> Step {
        let state = std::mem::replace(&mut self.state, State::Done);
        let v = match reply {
            Ok(v) => v,
            Err(e) => {
                let err = match e {
                    CallOutcomeError::Unreachable(why) => ClusterError::Unreachable(why),
                    CallOutcomeError::Call(c) => ClusterError::Protocol(c.to_string()),
                };
                return match state {
                    State::Unmounting { ids, grace_ms, mut results } => {
                        results.push(Err(err));
                        self.next_unmount(ids, grace_ms, results)
                    }
                    _ => Step::Done(ClusterReply::Failed(err)),
                };
            }
        };
        match state {
            State::PutStarted { key, value } => match expected_of(&v) {
                Err(e) => Step::Done(ClusterReply::Failed(e)),
                Ok(descs) => match client::memory_replicas(descs) {
                    Err(e) => Step::Done(ClusterReply::Failed(ClusterError::Protocol(e.to_string()))),
                    Ok(reps) if reps.is_empty() => {
                        Step::Done(ClusterReply::Failed(ClusterError::Protocol("no memory replica placed".into())))
                    }
                    Ok(reps) => {
                        let moves = reps
                            .iter()
                            .map(|r| Move {
                                local: r.endpoint == self.id.name,
                                endpoint: r.endpoint.clone(),
                                op: TransferOp::Write { addr: r.address, data: value.clone() },
                            })
                            .collect();
                        self.state = State::PutWriting { key };
                        Step::Move(moves)
                    }
                },
            },
            State::PutEnding => match expected_of(&v) {
                Ok(_) => Step::Done(ClusterReply::Stored),
                Err(e) => Step::Done(ClusterReply::Failed(e)),
            },
            State::PutRevoking { why } => Step::Done(ClusterReply::Failed(ClusterError::Transfer(why))),
            State::GetListing => match expected_of(&v) {
                Err(e) => Step::Done(ClusterReply::Failed(e)),
                Ok(list) => {
                    let descs = list.as_fields().and_then(|f| f.first());
                    let reps = match descs.map(client::memory_replicas) {
                        Some(Ok(r)) => r,
                        Some(Err(e)) => return Step::Done(ClusterReply::Failed(ClusterError::Protocol(e.to_string()))),
                        None => {
                            return Step::Done(ClusterReply::Failed(ClusterError::Protocol(
                                "GetReplicaListResponse without replicas".into(),
                            )))
                        }
                    };
                    let mut reps: Vec<MemoryReplica> = reps.into_iter().filter(|r| r.complete).collect();
                    if reps.is_empty() {
                        return Step::Done(ClusterReply::Failed(ClusterError::Master(-704)));
                    }
                    // Ours first (a memcpy), the others in the master's order.
                    reps.sort_by_key(|r| r.endpoint != self.id.name);
                    self.read_next(reps, 0, Vec::new())
                }
            },
            State::Single(Rpc::ExistKey) => match expected_of(&v) {
                Ok(Value::Bool(b)) => Step::Done(ClusterReply::Exists(*b)),
                Ok(_) => Step::Done(ClusterReply::Failed(ClusterError::Protocol("ExistKey: not a bool".into()))),
                Err(e) => Step::Done(ClusterReply::Failed(e)),
            },
            State::Single(Rpc::Remove) => match expected_of(&v) {
                Ok(_) => Step::Done(ClusterReply::Removed),
                Err(e) => Step::Done(ClusterReply::Failed(e)),
            },
            State::Single(_) => match v {
                // RemoveAll answers a plain long (negative: an error code).
                Value::Int(n) if n >= 0 => Step::Done(ClusterReply::RemovedAll(n as u64)),
                Value::Int(n) => Step::Done(ClusterReply::Failed(ClusterError::Master(n as i32))),
                _ => Step::Done(ClusterReply::Failed(ClusterError::Protocol("RemoveAll: not a long".into()))),
            },
            State::Mounting { mut rest } => match expected_of(&v) {
                Err(e) => Step::Done(ClusterReply::Failed(e)),
                Ok(_) if rest.is_empty() => Step::Done(ClusterReply::Mounted),
                Ok(_) => {
                    let next = rest.remove(0);
                    let step = Step::Call(Rpc::MountSegment, mount_args(&self.id, &next));
                    self.state = State::Mounting { rest };
                    step
                }
            },
            State::Unmounting { ids, grace_ms, mut results } => {
                results.push(expected_of(&v).map(|_| ()));
                self.next_unmount(ids, grace_ms, results)
            }
            State::PutWriting { .. } | State::GetReading { .. } | State::Done => {
                Step::Done(ClusterReply::Failed(ClusterError::Protocol("a reply nobody waited for".into())))
            }
        }
    }

    /// The outcomes of the moves of the last [`Step::Move`], in its order.
    pub fn on_moved(&mut self, outcomes: Vec<TransferOutcome>) -> Step {
        let state = std::mem::replace(&mut self.state, State::Done);
        match state {
            State::PutWriting { key } => {
                let failed: Vec<String> = outcomes
                    .into_iter()
                    .filter_map(|o| match o {
                        TransferOutcome::Written => None,
                        TransferOutcome::Failed(why) => Some(why),
                        other => Some(format!("unexpected outcome {other:?}")),
                    })
                    .collect();
                let cid = client::uuid(self.id.client_id);
                let tenant = Value::str(&self.id.tenant);
                let all = Value::Int(client::REPLICA_TYPE_MEMORY);
                if failed.is_empty() {
                    self.state = State::PutEnding;
                    Step::Call(Rpc::UpsertEnd, vec![cid, client::object_meta(&key), all, tenant])
                } else {
                    self.state = State::PutRevoking { why: failed.join("; ") };
                    Step::Call(Rpc::UpsertRevoke, vec![cid, Value::str(&key), all, tenant])
                }
            }
            State::GetReading { replicas, next, mut errors } => {
                let r = &replicas[next - 1];
                match outcomes.into_iter().next() {
                    Some(TransferOutcome::Read(bytes)) if bytes.len() as u64 == r.size => {
                        Step::Done(ClusterReply::Value(bytes))
                    }
                    Some(TransferOutcome::Read(b)) => {
                        errors.push(format!("{}: {} bytes instead of {}", r.endpoint, b.len(), r.size));
                        self.read_next(replicas, next, errors)
                    }
                    Some(TransferOutcome::Failed(why)) => {
                        errors.push(why);
                        self.read_next(replicas, next, errors)
                    }
                    other => {
                        errors.push(format!("{}: unexpected outcome {other:?}", r.endpoint));
                        self.read_next(replicas, next, errors)
                    }
                }
            }
            _ => Step::Done(ClusterReply::Failed(ClusterError::Protocol("a move nobody waited for".into()))),
        }
    }

    fn read_next(&mut self, replicas: Vec<MemoryReplica>, next: usize, errors: Vec<String>) -> Step {
        let Some(r) = replicas.get(next) else {
            return Step::Done(ClusterReply::Failed(ClusterError::Transfer(errors.join("; "))));
        };
        let m = Move {
            endpoint: r.endpoint.clone(),
            local: r.endpoint == self.id.name,
            op: TransferOp::Read { addr: r.address, len: r.size },
        };
        self.state = State::GetReading { replicas, next: next + 1, errors };
        Step::Move(vec![m])
    }

    fn next_unmount(&mut self, ids: Vec<Uuid>, grace_ms: u64, results: Vec<Result<(), ClusterError>>) -> Step {
        match ids.get(results.len()) {
            None => Step::Done(ClusterReply::Unmounted(results)),
            Some(&next) => {
                let step = unmount_call(&self.id, next, grace_ms);
                self.state = State::Unmounting { ids, grace_ms, results };
                step
            }
        }
    }
}

/// The arguments of `MountSegment(segment, client)` for one of this node's segments.
pub fn mount_args(id: &NodeIdentity, s: &NodeSegment) -> Vec<Value> {
    vec![segment_value(id, s), client::uuid(id.client_id)]
}

/// The wire `Segment` of one of this node's segments.
pub fn segment_value(id: &NodeIdentity, s: &NodeSegment) -> Value {
    client::segment(s.id, &id.name, s.base, s.size, &id.name, &s.protocol)
}

fn unmount_call(id: &NodeIdentity, seg: Uuid, grace_ms: u64) -> Step {
    let (s, c) = (client::uuid(seg), client::uuid(id.client_id));
    if grace_ms > 0 {
        Step::Call(Rpc::GracefulUnmountSegment, vec![s, c, Value::UInt(grace_ms)])
    } else {
        Step::Call(Rpc::UnmountSegment, vec![s, c])
    }
}

/// The value of an `expected` result, or its error as a [`ClusterError`].
pub fn expected_of(v: &Value) -> Result<&Value, ClusterError> {
    match client::expected(v) {
        Ok(Ok(inner)) => Ok(inner),
        Ok(Err(code)) => Err(ClusterError::Master(code)),
        Err(e) => Err(ClusterError::Protocol(e.to_string())),
    }
}
