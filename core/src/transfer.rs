//! Transfers of value bytes to and from other processes' memory: the effects a session
//! yields when a request needs bytes that live on another node, and the [`DataPlane`] an
//! adapter hands them to.
//!
//! ```text
//!   session: request needs remote bytes ──► Session::poll_transfer() ──► Transfer { id, endpoint, op, deadline }
//!   adapter: DataPlane::submit(transfer, done) ── (the data plane's threads move the bytes) ──┐
//!   adapter: done(outcome) ─► worker queue ─► wake ─► Link::handle_transfer(now, id, outcome) ◄┘
//!   session: answers (200 with the bytes, or 502 naming the node); a deadline that passes first
//!            answers 504, and a late outcome is dropped
//! ```
//!
//! The core never moves bytes between processes itself: it only says what to move, where,
//! and by when. `mc-rdma` implements [`DataPlane`] over the transfer engine's TCP protocol.

use std::time::Instant;

/// What to move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferOp {
    /// Read `len` bytes at `addr` of the peer's advertised address space.
    Read {
        /// Address (the replica descriptor's `buffer_address_`).
        addr: u64,
        /// Length.
        len: u64,
    },
    /// Write `data` at `addr` of the peer's advertised address space.
    Write {
        /// Address.
        addr: u64,
        /// The bytes (shared, not copied, by every copy of the transfer and its slices).
        data: bytes::Bytes,
    },
    /// Store-node mode: a REST request carried out on the cluster (the master's RPCs and the
    /// moves they call for; `endpoint` is the master). See [`crate::node`].
    Cluster(crate::node::ClusterOp),
    /// A highly available master: wait until the replication journal is durable up to
    /// `seq` (answered `Written`, or `Failed` when the changes cannot be made durable by
    /// this master). See [`crate::ha::DurableSession`].
    Durable {
        /// The journal mark to wait for.
        seq: u64,
    },
}

/// One transfer a session asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Chosen by the session; handed back with the outcome.
    pub id: u64,
    /// The transfer-engine segment name of the peer (a replica's `transport_endpoint_`).
    pub endpoint: String,
    /// What to move.
    pub op: TransferOp,
    /// Give up after this instant.
    pub deadline: Instant,
}

/// How a transfer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferOutcome {
    /// A read's bytes.
    Read(Vec<u8>),
    /// A write landed (acknowledged by the peer).
    Written,
    /// It failed; the text names the peer and the cause.
    Failed(String),
    /// How a [`TransferOp::Cluster`] operation ended.
    Cluster(crate::node::ClusterReply),
}

/// Carries transfers out. Called from worker threads; `done` may be called from any thread,
/// once, possibly before `submit` returns.
pub trait DataPlane: Send + Sync {
    /// Starts `transfer`; `done` gets its outcome.
    fn submit(&self, transfer: Transfer, done: Box<dyn FnOnce(TransferOutcome) + Send>);
}
