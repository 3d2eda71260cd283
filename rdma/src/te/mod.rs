//! Upstream Mooncake Transfer Engine (TE) protocols, sans-IO, wire-compatible with the
//! upstream wheel and HEAD (the spec is data-plane.md; §-references below are to it).
//!
//! Nothing here opens a socket, spawns a thread or reads a clock: bytes and a
//! [`mc_core::Now`] go in, bytes (as `IoSlice`s) and deadlines come out. The connection types
//! implement [`mc_core::Session`] and are made by [`mc_core::Acceptor`]s, so the runtime
//! adapters drive them like the HTTP and RPC connections (through [`mc_core::Link`]).
//!
//! | module | what |
//! |---|---|
//! | [`wire`] | the data port's 24-byte request header and 8-byte status frame (§1.2, §1.3) |
//! | [`desc`] | segment descriptor, `rpc_meta`, `HandShakeDesc`, notify JSON (§2.3, §2.5, §3.3) |
//! | [`handshake`] | handshake-port frames `u64 len \| u8 type \| JSON\n` (§2.5) |
//! | [`memory`] | the [`memory::TargetMemory`] contract, and [`memory::HeapMemory`] |
//! | [`target`] | the data-port server session (§1.3-§1.6) and its acceptor |
//! | [`handshake_server`] | the handshake-port server session and its acceptor (§2.5) |
//! | [`initiator`] | the initiator lane: one persistent connection, one request in flight (§1.6) |
//!
//! ## State machines
//!
//! Target connection ([`target::TargetSession`]):
//!
//! ```text
//!   Header ──WRITE ok──► Body ──payload in memory, v2: OK queued──► Header
//!     │ └────READ ok───► Sending (v2: OK + bytes; input stashed) ──consumed──► Header
//!     └──reject (v2: status 1) / EOF / shutdown / progress deadline──► Closing ──drained──► closed
//! ```
//!
//! Handshake connection ([`handshake_server::HandshakeSession`]):
//!
//! ```text
//!   Reading ──frame──► Replying ──reply consumed──► Closed
//!      └──bad frame / bad JSON / EOF / shutdown / 5 s──► Closed
//! ```
//!
//! Initiator lane ([`initiator::Lane`]):
//!
//! ```text
//!   Connecting ──connected──► Idle ◄──Ok── Busy ◄──submit── Idle
//!        └──deadline──► Dead ◄──reject / EOF / deadline / protocol error── Busy
//! ```
//!
//! ## Upstream behaviours matched
//!
//! * Header: `size` before `addr`, little-endian; padding ignored on decode, zeros on encode;
//!   opcode bit 7 = v2, low 7 bits `1` = WRITE, **anything else READ** (`0x85`, `0x07`) (§1.2).
//! * Status `0x4D435456_0000_0000 | code`; a wrong magic drops the connection (§1.3).
//! * v1 WRITE: no reply, the initiator completes once the bytes are in the socket; v2 WRITE:
//!   status only after the whole payload is in memory, the initiator reads it while still
//!   sending (an early reject interrupts the body); READ: v2 status then bytes, v1 bytes (§1.3).
//! * Rejects (size 0, overflow, outside one buffer): v2 status 1 then close, v1 close at once;
//!   a rejected v1 WRITE is a silent loss for the initiator; a reject kills the lane (§1.4,
//!   §1.6). The server has no idle timeout (§1.4); the progress deadline is opt-in.
//! * Requests are served strictly in sequence; pipelining and v1/v2 mixing work (§1.6).
//! * Zero-length requests are completed locally by the initiator and never sent (§1.3).
//! * Descriptors: jsoncpp's sorted keys, compact; a TCP descriptor carries `tcp_data_host`,
//!   `tcp_data_port`, `tcp_proto_version: 2`, `timestamp`, `buffers[{addr,length,name}]`
//!   and no RDMA fields; missing `tcp_proto_version` means 1, missing `tcp_data_host` means
//!   "use rpc_meta"; "Corrupted segment descriptor" for empty names, zero addr or length (§2.3).
//! * Handshake: length = 1 + JSON, 1 ..= 1 MiB; first body byte > 3 = old protocol; replies
//!   of the same type: Metadata → own descriptor (the peer's ignored), Notify →
//!   `{"name":"","notify_msg":"success"}`, Probe → `{"status":"success"}`, Connection → the
//!   empty `HandShakeDesc` a TCP-only engine sends; then close; 5 s for the request (§2.5).
//!
//! Not here: the RDMA QP exchange of §3.3 (type 0 only answers as TCP-only). The
//! lanes-per-peer pool and descriptor cache around [`initiator::Lane`] are in
//! [`crate::tcp_plane`] and [`crate::resolve`], descriptor publication in [`crate::publish`].

pub mod desc;
pub mod handshake;
pub mod handshake_server;
pub mod initiator;
pub mod memory;
pub mod target;
pub mod wire;
