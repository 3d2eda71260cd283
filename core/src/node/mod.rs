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
//! and here [`NodeState`], what the driver shares with the HTTP side: health and counters.

pub mod membership;
pub mod op;
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

/// Upper bounds (seconds) of the latency histograms of node metrics.
pub const LATENCY_BUCKETS: [f64; 10] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0];

/// A fixed-bucket latency histogram (lock-free counters).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| s <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        use std::fmt::Write;
        let mut cum = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cum += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
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

#[derive(Debug, Default)]
struct RpcCounters {
    calls: AtomicU64,
    errors: AtomicU64,
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
    rpc: [RpcCounters; NODE_RPCS.len()],
    rpc_latency: Histogram,
    /// Bytes: [local read, local write, remote read, remote write].
    bytes: [AtomicU64; 4],
    move_failures: AtomicU64,
    move_latency: [Histogram; 2],
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

    /// The node's series of `/metrics` (appended after the master's).
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let up = u8::from(self.health().is_ok());
        let _ = writeln!(out, "# HELP node_master_up 1 while this node is registered with its master.");
        let _ = writeln!(out, "# TYPE node_master_up gauge");
        let _ = writeln!(out, "node_master_up{{master=\"{}\"}} {up}", escape(&self.master));
        let m = *self.membership.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, help, v) in [
            ("node_master_connects_total", "Connections to the master established.", m.connects),
            ("node_master_disconnects_total", "Connections to the master lost or given up.", m.disconnects),
            ("node_master_remounts_total", "ReMountSegment calls after NEED_REMOUNT.", m.remounts),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let _ = writeln!(out, "# HELP node_master_rpc_total RPC calls made to the master, by method.");
        let _ = writeln!(out, "# TYPE node_master_rpc_total counter");
        for (i, r) in NODE_RPCS.iter().enumerate() {
            let name = crate::rpc::info(*r).def.name;
            let _ = writeln!(
                out,
                "node_master_rpc_total{{method=\"{name}\"}} {}",
                self.rpc[i].calls.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP node_master_rpc_errors_total RPC calls without a successful reply, by method.");
        let _ = writeln!(out, "# TYPE node_master_rpc_errors_total counter");
        for (i, r) in NODE_RPCS.iter().enumerate() {
            let name = crate::rpc::info(*r).def.name;
            let v = self.rpc[i].errors.load(Ordering::Relaxed);
            let _ = writeln!(out, "node_master_rpc_errors_total{{method=\"{name}\"}} {v}");
        }
        let _ = writeln!(out, "# HELP node_master_rpc_duration_seconds Round trip of RPC calls to the master.");
        let _ = writeln!(out, "# TYPE node_master_rpc_duration_seconds histogram");
        self.rpc_latency.render(out, "node_master_rpc_duration_seconds", "");
        let _ = writeln!(out, "# HELP node_transfer_bytes_total Value bytes moved for REST requests.");
        let _ = writeln!(out, "# TYPE node_transfer_bytes_total counter");
        for (i, (path, dir)) in
            [("local", "read"), ("local", "write"), ("remote", "read"), ("remote", "write")].iter().enumerate()
        {
            let v = self.bytes[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "node_transfer_bytes_total{{path=\"{path}\",direction=\"{dir}\"}} {v}");
        }
        let _ = writeln!(out, "# HELP node_transfer_failures_total Moves of value bytes that failed.");
        let _ = writeln!(out, "# TYPE node_transfer_failures_total counter");
        let _ = writeln!(out, "node_transfer_failures_total {}", self.move_failures.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP node_transfer_duration_seconds Duration of moves of value bytes.");
        let _ = writeln!(out, "# TYPE node_transfer_duration_seconds histogram");
        self.move_latency[0].render(out, "node_transfer_duration_seconds", "path=\"local\"");
        self.move_latency[1].render(out, "node_transfer_duration_seconds", "path=\"remote\"");
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
