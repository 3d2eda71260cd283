//! The sans-IO handshake-port session (`rpc_port`, data-plane.md §2.5): one request frame,
//! one reply of the same type, then close (the [`mc_core::Link`] half-closes and lingers,
//! as upstream's `shutdown(SHUT_WR)` then waiting for the client to close).
//!
//! ```text
//!   Reading ──one whole frame, JSON parses──► Replying ──reply consumed──► Closed
//!      │                                         (EOF and shutdown: the reply still goes out)
//!      └── bad frame / bad JSON / EOF / shutdown / 5 s without a whole frame ──► Closed
//! ```
//!
//! | request type | reply |
//! |---|---|
//! | 0 Connection | the empty [`HandShakeDesc`] (a TCP-only engine) |
//! | 1 Metadata | this node's [`SegmentDesc`], from the acceptor's provider; the peer's JSON is ignored |
//! | 2 Notify | `{"name":"","notify_msg":"success"}`; the notification goes to the optional sink |
//! | 3 Probe | `{"status":"success"}` |
//!
//! An old-protocol request (no type byte) is a Connection and is answered without a type byte.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mc_core::{Acceptor, ListenerAtShutdown, Now, Session};
use serde::Serialize;

use super::desc::{HandShakeDesc, NotifyDesc, SegmentDesc};
use super::handshake::{Frame, FrameType, HandshakeDecoder};

/// How long a connection may take to deliver its request (upstream: 5 s `SO_RCVTIMEO`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// This node's current segment descriptor, asked for on every Metadata request.
pub type DescriptorProvider = Arc<dyn Fn() -> SegmentDesc + Send + Sync>;
/// Receives the notifications of Notify requests (upstream queues them for `getNotifies`).
pub type NotifySink = Arc<dyn Fn(NotifyDesc) + Send + Sync>;

/// The `{"status":"success"}` probe reply.
#[derive(Serialize)]
struct ProbeReply {
    status: &'static str,
}

/// Where a handshake connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Reading,
    Replying,
    Closed,
}

/// One accepted handshake-port connection. Drive it through [`Session`].
pub struct HandshakeSession {
    provider: DescriptorProvider,
    notify: Option<NotifySink>,
    decoder: HandshakeDecoder,
    phase: Phase,
    deadline: Instant,
    reply: Vec<u8>,
    sent: usize,
}

impl HandshakeSession {
    /// A connection accepted at `now` that must deliver its request within `timeout`.
    pub fn new(now: Now, provider: DescriptorProvider, notify: Option<NotifySink>, timeout: Duration) -> Self {
        Self {
            provider,
            notify,
            decoder: HandshakeDecoder::new(),
            phase: Phase::Reading,
            deadline: now.mono + timeout,
            reply: Vec::new(),
            sent: 0,
        }
    }

    /// The reply to `req`, or `None` (close) when its JSON does not parse.
    fn answer(&self, req: &Frame) -> Option<Frame> {
        let mut reply = match req.kind {
            FrameType::Connection => {
                let peer: HandShakeDesc = parse(req)?;
                log::debug!(
                    "TE handshake: connection request from {:?} for {:?} ({} QPs); TCP only, empty reply",
                    peer.local_nic_path,
                    peer.peer_nic_path,
                    peer.qp_num.len()
                );
                Frame::json(FrameType::Connection, &HandShakeDesc::default())
            }
            FrameType::Metadata => {
                parse::<serde_json::Value>(req)?;
                Frame::json(FrameType::Metadata, &(self.provider)())
            }
            FrameType::Notify => {
                let note: NotifyDesc = parse(req)?;
                if let Some(sink) = &self.notify {
                    sink(note);
                }
                Frame::json(FrameType::Notify, &NotifyDesc { name: String::new(), notify_msg: "success".into() })
            }
            FrameType::Probe => {
                parse::<serde_json::Value>(req)?;
                Frame::json(FrameType::Probe, &ProbeReply { status: "success" })
            }
        };
        reply.legacy = req.legacy;
        Some(reply)
    }
}

fn parse<T: serde::de::DeserializeOwned>(frame: &Frame) -> Option<T> {
    match serde_json::from_slice(&frame.json) {
        Ok(v) => Some(v),
        Err(e) => {
            log::info!("TE handshake: {:?} request with invalid JSON ({e}); closing", frame.kind);
            None
        }
    }
}

impl Session for HandshakeSession {
    fn handle_input(&mut self, _now: Now, data: &[u8]) {
        if self.phase != Phase::Reading {
            return;
        }
        self.decoder.push(data);
        match self.decoder.next_frame() {
            Ok(None) => {}
            Ok(Some(req)) => match self.answer(&req) {
                Some(reply) => {
                    self.reply = reply.encode();
                    self.phase = Phase::Replying;
                    self.decoder = HandshakeDecoder::new();
                }
                None => self.phase = Phase::Closed,
            },
            Err(e) => {
                log::info!("TE handshake: {e}; closing");
                self.phase = Phase::Closed;
            }
        }
    }

    fn handle_eof(&mut self, _now: Now) {
        if self.phase == Phase::Reading {
            self.phase = Phase::Closed;
        }
    }

    fn handle_timeout(&mut self, now: Now) {
        if self.phase == Phase::Reading && self.deadline <= now.mono {
            log::info!("TE handshake: no request within the deadline; closing");
            self.phase = Phase::Closed;
        }
    }

    fn handle_shutdown(&mut self, _now: Now) {
        if self.phase == Phase::Reading {
            self.phase = Phase::Closed;
        }
    }

    fn poll_transmit<'a>(&'a self, bufs: &mut [IoSlice<'a>]) -> usize {
        match bufs.first_mut() {
            Some(slot) if self.phase == Phase::Replying => {
                *slot = IoSlice::new(&self.reply[self.sent..]);
                1
            }
            _ => 0,
        }
    }

    fn consume(&mut self, _now: Now, n: usize) {
        if self.phase == Phase::Replying {
            self.sent = (self.sent + n).min(self.reply.len());
            if self.sent == self.reply.len() {
                self.phase = Phase::Closed;
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (self.phase == Phase::Reading).then_some(self.deadline)
    }

    fn wants_read(&self) -> bool {
        self.phase == Phase::Reading
    }

    fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }
}

/// Makes [`HandshakeSession`]s for one handshake-port listener on one worker.
#[derive(Clone)]
pub struct HandshakeAcceptor {
    provider: DescriptorProvider,
    notify: Option<NotifySink>,
    timeout: Duration,
}

impl HandshakeAcceptor {
    /// Sessions answering Metadata requests with `provider()`, with the 5 s request deadline
    /// and notifications dropped.
    pub fn new(provider: DescriptorProvider) -> Self {
        Self { provider, notify: None, timeout: REQUEST_TIMEOUT }
    }

    /// Hands Notify requests to `sink`.
    pub fn with_notify(mut self, sink: NotifySink) -> Self {
        self.notify = Some(sink);
        self
    }

    /// Another request deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Acceptor for HandshakeAcceptor {
    fn accept(&mut self, now: Now) -> Box<dyn Session> {
        Box::new(HandshakeSession::new(now, self.provider.clone(), self.notify.clone(), self.timeout))
    }

    /// The handshake port closes at once.
    fn on_shutdown(&self) -> ListenerAtShutdown {
        ListenerAtShutdown::Close
    }
}

#[cfg(test)]
#[path = "handshake_server_tests.rs"]
mod tests;
