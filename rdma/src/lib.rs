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
//! To serve TE: implement [`te::memory::TargetMemory`] over the node's mounted segments,
//! register a [`te::target::TargetAcceptor`] on the data port and a
//! [`te::handshake_server::HandshakeAcceptor`] on the handshake (rpc) port, and publish the
//! [`te::desc::SegmentDesc`] of the mounted segments.
#![warn(missing_docs)]

pub mod http;
pub mod publish;
pub mod resolve;
pub mod store_memory;
pub mod tcp_plane;
pub mod te;

pub use publish::{PublishConfig, Publisher};
pub use store_memory::StoreMemory;
pub use tcp_plane::{TcpDataPlane, TcpPlaneConfig};
