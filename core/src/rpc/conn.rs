//! The per-connection state machine of the RPC listener: bytes in, frames out, like
//! [`crate::http::Connection`].
//!
//! ```text
//!   handle_input ──► buffer ──► complete frame? ──► header acceptable? ── no ──► close (no reply)
//!                                   │                      │ yes
//!                                   │                      ▼
//!                                   │            RpcService::call(fid, body) ──► reply queued
//!                                   └─ (repeat while output is below the high-water mark)
//!   poll_transmit / consume ◄── replies, in request order, each with its request's seq
//! ```
//!
//! Requests of one connection are answered strictly one after another, in order, like the
//! real master. Attachments are read and discarded. There is no idle timeout (upstream's
//! default). The connection is closed when the peer closed its side and every reply has been
//! written, after a frame with a bad magic, version or serialize type (like upstream), or
//! after a frame larger than [`MAX_FRAME`].

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Instant;

use super::frame::{RequestHeader, REQ_HDR};
use super::service::RpcService;
use super::types::{lookup, Rpc};
use crate::master::Master;
use crate::session::{Acceptor, ListenerAtShutdown, Session};
use crate::stats::WorkerStats;
use crate::time::Now;

/// Largest body + attachment accepted; a larger frame closes the connection.
pub const MAX_FRAME: u64 = 256 * 1024 * 1024;
/// Stop processing pipelined requests while this many reply bytes are pending.
const OUT_HIGH: usize = 1024 * 1024;

/// One RPC connection with its service. See the module docs.
pub struct RpcConnection {
    svc: RpcService,
    /// Received bytes; `inbuf[in_pos..]` is not processed yet.
    inbuf: Vec<u8>,
    in_pos: usize,
    /// Reply bytes; `out[out_pos..]` is not written yet.
    out: Vec<u8>,
    out_pos: usize,
    /// No further request is processed (peer EOF, bad frame, shutdown).
    read_done: bool,
    /// Requests answered.
    answered: u64,
    /// Every request answered so far was `ServiceReady` (a client that leaves after it most
    /// likely refused the version: logged at EOF).
    ready_only: bool,
}

impl RpcConnection {
    /// A new connection answered by `svc`.
    pub fn new(_now: Now, svc: RpcService) -> Self {
        Self {
            svc,
            inbuf: Vec::new(),
            in_pos: 0,
            out: Vec::new(),
            out_pos: 0,
            read_done: false,
            answered: 0,
            ready_only: true,
        }
    }

    /// Bytes received from the peer; complete requests are answered. Poll output afterwards.
    pub fn handle_input(&mut self, now: Now, data: &[u8]) {
        if self.read_done || data.is_empty() {
            return;
        }
        if self.in_pos == self.inbuf.len() {
            self.inbuf.clear();
            self.in_pos = 0;
        }
        self.inbuf.extend_from_slice(data);
        self.process(now);
    }

    /// The peer half-closed: requests already complete are answered, a partial one is dropped.
    pub fn handle_eof(&mut self, now: Now) {
        if !self.read_done {
            self.process(now);
            self.stop_reading();
            if self.answered > 0 && self.ready_only {
                // The unchanged upstream client compares the version with its own build's
                // and, on a difference, logs INVALID_VERSION and disconnects.
                log::warn!(
                    "rpc: a client disconnected right after ServiceReady (answered version {:?}); an upstream \
                     client of another build refuses it (INVALID_VERSION, -300): start mc-master with \
                     --service-version set to the client's version",
                    self.svc.service_version()
                );
            }
        }
    }

    /// Shutting down: no new request is processed; the connection closes once its replies
    /// are written.
    pub fn handle_shutdown(&mut self, _now: Now) {
        self.stop_reading();
    }

    /// Bytes to write, if any.
    pub fn poll_transmit(&self) -> Option<&[u8]> {
        (self.out_pos < self.out.len()).then(|| &self.out[self.out_pos..])
    }

    /// `n` bytes of [`RpcConnection::poll_transmit`] were written. Requests held back by the
    /// output high-water mark resume.
    pub fn consume(&mut self, now: Now, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        if !self.read_done {
            self.process(now);
        }
    }

    /// The next deadline: none (the RPC port has no idle timeout, like upstream).
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Nothing is timed; present for symmetry with [`crate::http::Connection`].
    pub fn handle_timeout(&mut self, _now: Now) {}

    /// Whether the caller should read more input (false while replies pile up, or once done).
    pub fn wants_read(&self) -> bool {
        !self.read_done && self.out.len() - self.out_pos < OUT_HIGH
    }

    /// The connection is finished: close the socket.
    pub fn is_closed(&self) -> bool {
        self.read_done && self.poll_transmit().is_none()
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.answered
    }

    fn stop_reading(&mut self) {
        self.read_done = true;
        self.inbuf = Vec::new();
        self.in_pos = 0;
    }

    fn process(&mut self, now: Now) {
        while !self.read_done && self.out.len() - self.out_pos < OUT_HIGH {
            let avail = &self.inbuf[self.in_pos..];
            if avail.len() < REQ_HDR {
                break;
            }
            let h = RequestHeader::parse(avail);
            if !h.is_acceptable() {
                log::debug!(
                    "rpc: closing on a frame with magic {:#04x}, version {}, serialize type {}",
                    h.magic,
                    h.version,
                    h.serialize_type
                );
                self.stop_reading();
                break;
            }
            if h.payload_len() > MAX_FRAME {
                log::warn!("rpc: closing on a frame of {} bytes", h.payload_len());
                self.stop_reading();
                break;
            }
            let total = REQ_HDR + h.payload_len() as usize;
            if avail.len() < total {
                // Grow with the bytes that arrive, never by what a header announces (up to
                // `MAX_FRAME`): reserve at most 1 MiB ahead.
                self.inbuf.reserve((total - avail.len()).min(1 << 20));
                break;
            }
            if !self.svc.serves(now) {
                // A highly available master that is not the leader (any more) answers no
                // RPC: the client turns to the leader etcd names (docs/ha.md).
                log::debug!("rpc: closing: this master is not the serving leader");
                self.stop_reading();
                break;
            }
            // Looked up only until the first other call (then it stays false).
            if self.ready_only && lookup(h.function_id).is_none_or(|i| i.def.rpc != Rpc::ServiceReady) {
                self.ready_only = false;
            }
            let body = &avail[REQ_HDR..REQ_HDR + h.length as usize];
            self.svc.call_into(now, &h, body, &mut self.out);
            self.answered += 1;
            self.in_pos += total;
        }
        if self.in_pos == self.inbuf.len() {
            self.inbuf.clear();
            self.in_pos = 0;
        } else if self.in_pos > 64 * 1024 && self.in_pos * 2 > self.inbuf.len() {
            self.inbuf.drain(..self.in_pos);
            self.in_pos = 0;
        }
    }
}

impl Session for RpcConnection {
    fn handle_input(&mut self, now: Now, data: &[u8]) {
        RpcConnection::handle_input(self, now, data);
    }
    fn handle_eof(&mut self, now: Now) {
        RpcConnection::handle_eof(self, now);
    }
    fn handle_timeout(&mut self, now: Now) {
        RpcConnection::handle_timeout(self, now);
    }
    fn handle_shutdown(&mut self, now: Now) {
        RpcConnection::handle_shutdown(self, now);
    }
    fn poll_transmit<'a>(&'a self, bufs: &mut [IoSlice<'a>]) -> usize {
        match (RpcConnection::poll_transmit(self), bufs.first_mut()) {
            (Some(out), Some(b)) => {
                *b = IoSlice::new(out);
                1
            }
            _ => 0,
        }
    }
    fn poll_transmit_upto<'a>(&'a self, bufs: &mut [IoSlice<'a>], limit: usize) -> usize {
        match (RpcConnection::poll_transmit(self), bufs.first_mut()) {
            (Some(out), Some(b)) if limit > 0 => {
                *b = IoSlice::new(&out[..out.len().min(limit)]);
                1
            }
            _ => 0,
        }
    }
    fn consume(&mut self, now: Now, n: usize) {
        RpcConnection::consume(self, now, n);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        RpcConnection::poll_timeout(self)
    }
    fn wants_read(&self) -> bool {
        RpcConnection::wants_read(self)
    }
    fn is_closed(&self) -> bool {
        RpcConnection::is_closed(self)
    }
}

impl RpcService {
    /// A new connection accepted at `now`, answered by this service.
    pub fn new_connection(&self, now: Now) -> RpcConnection {
        RpcConnection::new(now, self.clone())
    }
}

/// Makes the RPC sessions of one worker's `--rpc-port` listener.
pub struct RpcAcceptor {
    svc: RpcService,
}

impl RpcAcceptor {
    /// The acceptor for the worker whose counters are `stats` (shared with its HTTP services).
    pub fn new(master: Arc<Master>, stats: Arc<WorkerStats>) -> Self {
        Self { svc: RpcService::new(master, stats) }
    }
}

impl Acceptor for RpcAcceptor {
    fn accept(&mut self, now: Now) -> Box<dyn Session> {
        let mut conn = self.svc.new_connection(now);
        // The listener is closing: a connection accepted meanwhile reads nothing.
        if self.svc.shutting_down() {
            conn.handle_shutdown(now);
        }
        Box::new(conn)
    }
    fn on_shutdown(&self) -> ListenerAtShutdown {
        ListenerAtShutdown::Close
    }
}

#[cfg(test)]
impl RpcConnection {
    /// Capacity of the input buffer (tests).
    pub(crate) fn inbuf_capacity_for_test(&self) -> usize {
        self.inbuf.capacity()
    }
}
