//! # mc-rdma: the data plane of mc-master
//!
//! How object bytes move between nodes: upstream Mooncake's Transfer Engine (TE) protocols,
//! so that unchanged upstream clients can read and write mc-master's segments and mc-master
//! can read and write theirs. The crate name is historical; the first transport is TE over
//! TCP, RDMA verbs come later behind the same seams.
//!
//! Everything in [`te`] is sans-IO, like `mc-core`: sessions take bytes and a
//! [`mc_core::Now`] and hand out bytes and deadlines; the runtime adapters own the sockets.
//!
//! ```text
//!   upstream client ──TE data port──► te::target::TargetSession ──► te::memory::TargetMemory
//!                   ──handshake port─► te::handshake_server::HandshakeSession ──► SegmentDesc
//!   mc-master       ──te::initiator::Lane──► any TE target (upstream or mc-master)
//! ```
//!
//! ## How the pieces fit
//!
//! ```text
//!                         ┌─────────────── this process ────────────────────────────────┐
//!   upstream client ─TE data port─► TargetSession ─► StoreMemory ─► Store::open_*_range  │
//!                   ─handshake port► HandshakeSession ─► Publisher::descriptor()          │
//!                   ─HTTP /metadata─► Store::metadata() ◄── Publisher (on every mount,    │
//!                                                            unmount; + external server)  │
//!   REST read of a remote replica ─► Session::poll_transfer ─► TcpDataPlane ─► resolve ─► │
//!                                     lanes (te::initiator::Lane) ─► the peer's data port │
//!                         └───────────────────────────────────────────────────────────────┘
//! ```
//!
//! * **Target memory** ([`store_memory::StoreMemory`]): the [`te::memory::TargetMemory`] of
//!   mc-master's own segments. The store decides every range: reads only inside complete
//!   values, writes only inside allocations of writes in progress; the rest is rejected. A
//!   window keeps its value and segment from being freed while the transfer runs.
//! * **Publication** ([`publish::Publisher`]): this node's [`te::desc::SegmentDesc`] (one
//!   buffer per live local segment) under `mooncake/ram/<name>`, and `mooncake/rpc_meta/<name>`,
//!   in the store's metadata map (served on `/metadata`) and optionally on an external
//!   metadata server; republished by the store's buffers observer. Its
//!   [`publish::Publisher::provider`] feeds the handshake port's type-1 answers.
//! * **Data plane** ([`tcp_plane::TcpDataPlane`]): the [`mc_core::transfer::DataPlane`] the
//!   adapters hand transfers to. It resolves the endpoint ([`resolve::Resolver`]: local
//!   metadata, external server, P2PHANDSHAKE; cached, re-fetched once after a connect failure
//!   or a reject), splits values into 16 MiB − 16 B slices and runs them over up to 4
//!   persistent lanes per peer, on threads of its own.
//!
//! Wiring, in order: build the `Master` and mount; [`Publisher::install`] (first publication,
//! observer); register a [`te::target::TargetAcceptor`] over a [`StoreMemory`] on the data
//! port and a [`te::handshake_server::HandshakeAcceptor`] over
//! [`publish::Publisher::provider`] on the handshake port; `master.set_data_plane(`
//! [`TcpDataPlane::new`]`(store, config))`. docs/data-plane.md has the operator's view.
#![warn(missing_docs)]

pub mod http;
pub mod publish;
pub mod resolve;
pub mod store_memory;
pub mod tcp_plane;
pub mod te;
pub mod verbs;

pub use publish::{PublishConfig, Publisher};
pub use store_memory::StoreMemory;
pub use tcp_plane::{TcpDataPlane, TcpPlaneConfig};
