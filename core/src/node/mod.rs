//! Store-node mode (`--master HOST:PORT`): this process's memory is mounted into another
//! master, and its Store REST API works on the cluster that master keeps (docs/cluster.md).
//!
//! ```text
//!   REST request ──► api::Service (node mode) ──► Transfer { op: TransferOp::Cluster(ClusterOp) }
//!        ▲                                              │ Session::poll_transfer (as any transfer)
//!        │                                              ▼
//!        │                           driver (the binary): op::OpRun step machine
//!        │                              Step::Call ──► master RPC (rpc::client::RpcClient)
//!        │                              Step::Move ──► memcpy (this node) | data plane (others)
//!        └── TransferOutcome::Cluster(ClusterReply) ◄── Step::Done
//!
//!   membership::Membership (driver thread): ServiceReady, MountSegment, Ping, ReMountSegment,
//!   reconnect with backoff, UnmountSegment on leave ──► NodeState::set_health (→ /health)
//! ```
//!
//! Layout: `op` (one request's RPCs and moves), `membership` (registration and heartbeat),
//! `self_drain` (the drain job a node asks for before it leaves, `--drain-on-shutdown`),
//! and here [`NodeState`], what the driver shares with the HTTP side: health and counters.

pub mod membership;
pub mod op;
pub mod self_drain;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub use membership::{Action, Membership, MembershipStats};
pub use op::{
    CallOutcomeError, CallResult, ClusterError, ClusterOp, ClusterReply, Move, NodeIdentity, NodeSegment, OpRun, Step,
};

use crate::rpc::Rpc;
use crate::stats::{DURATION_BOUNDS_NS, NDUR};

/// A latency histogram with the buckets of `http_request_duration_seconds`
/// ([`crate::stats::DURATION_BOUNDS_NS`], `+Inf` last), lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Bucket counts, not cumulative.
    pub(crate) buckets: [AtomicU64; NDUR],
    pub(crate) sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let b = DURATION_BOUNDS_NS.iter().position(|&bound| ns <= bound).unwrap_or(NDUR - 1);
        self.buckets[b].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// The RPCs a node makes, each with its own counters.
pub const NODE_RPCS: [Rpc; 13] = [
    Rpc::ServiceReady,
    Rpc::MountSegment,
    Rpc::ReMountSegment,
    Rpc::UnmountSegment,
    Rpc::GracefulUnmountSegment,
    Rpc::Ping,
    Rpc::ExistKey,
    Rpc::GetReplicaList,
    Rpc::UpsertStart,
    Rpc::UpsertEnd,
    Rpc::UpsertRevoke,
    Rpc::Remove,
    Rpc::RemoveAll,
];

/// Calls of one RPC, and those without a successful reply.
#[derive(Debug, Default)]
pub(crate) struct RpcCounters {
    pub(crate) calls: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// Where a move went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MovePath {
    /// A memcpy within this node.
    Local,
    /// Through the data plane to another node.
    Remote,
}

/// What the node driver shares with the HTTP side: the master's reachability (for
/// `/health`) and the node's counters (for `/metrics`).
#[derive(Debug)]
pub struct NodeState {
    master: String,
    health: Mutex<Result<(), String>>,
    /// Per [`NODE_RPCS`] entry.
    pub(crate) rpc: [RpcCounters; NODE_RPCS.len()],
    pub(crate) rpc_latency: Histogram,
    /// Bytes: [local read, local write, remote read, remote write].
    pub(crate) bytes: [AtomicU64; 4],
    pub(crate) move_failures: AtomicU64,
    /// [local, remote].
    pub(crate) move_latency: [Histogram; 2],
    membership: Mutex<MembershipStats>,
}

impl NodeState {
    /// The state of a node of `master` (an address), down until the first registration.
    pub fn new(master: &str) -> Self {
        Self {
            master: master.to_string(),
            health: Mutex::new(Err(format!("connecting to the master at {master}"))),
            rpc: Default::default(),
            rpc_latency: Histogram::default(),
            bytes: Default::default(),
            move_failures: AtomicU64::new(0),
            move_latency: Default::default(),
            membership: Mutex::new(MembershipStats::default()),
        }
    }

    /// The master's address.
    pub fn master(&self) -> &str {
        &self.master
    }

    /// Ok while registered with the master; otherwise why not.
    pub fn health(&self) -> Result<(), String> {
        self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Records the membership's state.
    pub fn set_membership(&self, health: Result<(), &str>, stats: MembershipStats) {
        *self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = health.map_err(str::to_string);
        *self.membership.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = stats;
    }

    /// Records one RPC round trip (`failed`: no usable reply, or an error code).
    pub fn record_rpc(&self, rpc: Rpc, took: Duration, failed: bool) {
        if let Some(i) = NODE_RPCS.iter().position(|&r| r == rpc) {
            self.rpc[i].calls.fetch_add(1, Ordering::Relaxed);
            if failed {
                self.rpc[i].errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.rpc_latency.observe(took);
    }

    /// Records one move of `bytes` (a read when `read`).
    pub fn record_move(&self, path: MovePath, read: bool, bytes: u64, took: Duration, ok: bool) {
        let i = match path {
            MovePath::Local => 0,
            MovePath::Remote => 2,
        } + usize::from(!read);
        if ok {
            self.bytes[i].fetch_add(bytes, Ordering::Relaxed);
        } else {
            self.move_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.move_latency[i / 2].observe(took);
    }

    /// The membership counters last recorded.
    pub fn membership(&self) -> MembershipStats {
        *self.membership.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
