//! The sans-IO TE TCP initiator lane: one persistent data-port connection to a peer, one
//! request in flight at a time (the wheel's connection pool, data-plane.md §1.6).
//!
//! ```text
//!   new() ──► Connecting ──handle_connected──► Idle ◄──────────── completed Ok ───────┐
//!                │ deadline                      │ submit_*()                          │
//!                ▼                               ▼                                     │
//!              Dead ◄── reject / EOF / ──────  Busy: send header (+ payload) ──────────┘
//!                       timeout / bad bytes          v1 WRITE: Ok once all bytes are consumed
//!                                                    v2 WRITE: Ok after all sent and status OK
//!                                                    v1 READ:  Ok after `len` bytes received
//!                                                    v2 READ:  status OK, then `len` bytes
//! ```
//!
//! A request may be submitted while still connecting; it goes out once connected. A
//! rejected request (status ≠ 0) completes [`TransferResult::Rejected`] and kills the lane,
//! as upstream does (the server closes after a reject); so do a lost connection, a status
//! frame with a wrong magic, unexpected bytes and a deadline. A dead lane
//! [`is_closed`](Lane::is_closed): close the socket and open a new lane.
//!
//! Deadlines: connect (default 5 s), status (v2: from the end of sending, default 30 s,
//! `MC_TCP_STATUS_TIMEOUT_SEC`), progress (a request in flight moving no byte, default 30 s).
//!
//! READ bytes are copied from `handle_input` into the request's [`ReadDest`]: a buffer the
//! lane allocates and hands back with the completion, or a caller-owned [`WriteWindow`]
//! (e.g. straight into segment memory). WRITE payloads are sent from a [`ReadWindow`] the
//! lane holds until completion (zero-copy: `poll_transmit` hands its slice out).

use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use mc_core::Now;

use super::memory::{ReadWindow, Reject, WriteWindow};
use super::wire::{Framing, Header, Op, Status, HEADER_LEN, STATUS_LEN};

/// Deadlines of a lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneConfig {
    /// From [`Lane::new`] to [`Lane::handle_connected`].
    pub connect_timeout: Duration,
    /// v2: from the last request byte consumed to the status frame.
    pub status_timeout: Duration,
    /// A request in flight with no byte moved either way for this long; `None`: no limit.
    pub progress_timeout: Option<Duration>,
}

impl Default for LaneConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            status_timeout: Duration::from_secs(30),
            progress_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// Where a READ's bytes go.
pub enum ReadDest {
    /// A buffer the lane allocates; handed back in [`Completion::data`].
    Buffer,
    /// A caller-owned window, filled in order; `finish` is called on success only.
    Window(Box<dyn WriteWindow>),
}

/// Why a request was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The peer closed the connection before the request completed.
    Eof,
    /// The connect, status or progress deadline passed.
    Timeout,
    /// The peer sent something this protocol does not allow.
    Protocol(&'static str),
    /// [`Lane::close`] was called while the request was in flight.
    Closed,
    /// The READ arrived, but the destination window refused it at `finish` (the lane is
    /// still usable).
    Local(Reject),
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferResult {
    /// Done. For a v1 WRITE: all bytes were handed to the socket (upstream's meaning; a
    /// target that rejects a v1 WRITE closes silently).
    Ok,
    /// The target answered a status other than OK (1: address rejected).
    Rejected {
        /// The status code.
        code: u32,
    },
    /// See [`Lost`].
    Lost(Lost),
}

/// A finished request.
#[derive(Debug)]
pub struct Completion {
    /// The id [`Lane::submit_read`] / [`Lane::submit_write`] returned.
    pub id: u64,
    /// READ or WRITE.
    pub op: Op,
    /// The remote address.
    pub addr: u64,
    /// The length.
    pub len: u64,
    /// The outcome.
    pub result: TransferResult,
    /// A successful READ into [`ReadDest::Buffer`]: the bytes.
    pub data: Option<Vec<u8>>,
}

/// Why a request could not be submitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// A request is in flight (one at a time per lane).
    Busy,
    /// The lane is dead; open a new one.
    Dead,
    /// A READ into a buffer larger than this machine can allocate.
    TooLarge,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubmitError::Busy => "a request is already in flight on this lane",
            SubmitError::Dead => "the lane is closed",
            SubmitError::TooLarge => "read too large for a local buffer",
        })
    }
}

impl std::error::Error for SubmitError {}

enum Dest {
    None,
    Buffer(Vec<u8>),
    Window(Box<dyn WriteWindow>),
}

/// The request in flight.
struct InFlight {
    id: u64,
    header: Header,
    head: [u8; HEADER_LEN],
    /// WRITE: the payload.
    src: Option<Box<dyn ReadWindow>>,
    /// Request bytes consumed (header, then payload).
    sent: u64,
    /// When the last request byte was consumed.
    sent_at: Option<Instant>,
    status: [u8; STATUS_LEN],
    status_len: usize,
    /// v2: the decoded status.
    status_ok: bool,
    dest: Dest,
    received: u64,
}

impl InFlight {
    fn request_len(&self) -> u64 {
        HEADER_LEN as u64 + if self.header.op == Op::Write { self.header.size } else { 0 }
    }

    fn all_sent(&self) -> bool {
        self.sent == self.request_len()
    }

    fn v2(&self) -> bool {
        self.header.framing == Framing::V2
    }
}

/// One initiator connection. See the module docs for the driving rules; drive it like a
/// [`mc_core::Session`] (input, EOF, timeouts, transmit/consume), plus submit and completions.
pub struct Lane {
    config: LaneConfig,
    connected: bool,
    connect_deadline: Instant,
    dead: bool,
    inflight: Option<InFlight>,
    done: VecDeque<Completion>,
    next_id: u64,
    last_progress: Instant,
}

impl Lane {
    /// A lane whose socket started connecting at `now`.
    pub fn new(now: Now, config: LaneConfig) -> Self {
        Self {
            config,
            connected: false,
            connect_deadline: now.mono + config.connect_timeout,
            dead: false,
            inflight: None,
            done: VecDeque::new(),
            next_id: 1,
            last_progress: now.mono,
        }
    }

    /// The socket connected.
    pub fn handle_connected(&mut self, now: Now) {
        if !self.dead {
            self.connected = true;
            self.last_progress = now.mono;
        }
    }

    /// True when a request may be submitted (alive, nothing in flight).
    pub fn is_idle(&self) -> bool {
        !self.dead && self.inflight.is_none()
    }

    /// Starts a WRITE of `src.bytes()` to the peer's `addr`.
    pub fn submit_write(
        &mut self,
        now: Now,
        addr: u64,
        src: Box<dyn ReadWindow>,
        framing: Framing,
    ) -> Result<u64, SubmitError> {
        let size = src.bytes().len() as u64;
        self.submit(now, Header { size, addr, op: Op::Write, framing }, Some(src), Dest::None)
    }

    /// Starts a READ of `len` bytes at the peer's `addr` into `dest`.
    pub fn submit_read(
        &mut self,
        now: Now,
        addr: u64,
        len: u64,
        dest: ReadDest,
        framing: Framing,
    ) -> Result<u64, SubmitError> {
        self.check()?;
        let dest = match dest {
            ReadDest::Buffer => {
                let cap = usize::try_from(len).map_err(|_| SubmitError::TooLarge)?;
                let mut buf = Vec::new();
                buf.try_reserve_exact(cap).map_err(|_| SubmitError::TooLarge)?;
                Dest::Buffer(buf)
            }
            ReadDest::Window(w) => Dest::Window(w),
        };
        self.submit(now, Header { size: len, addr, op: Op::Read, framing }, None, dest)
    }

    fn submit(
        &mut self,
        now: Now,
        header: Header,
        src: Option<Box<dyn ReadWindow>>,
        dest: Dest,
    ) -> Result<u64, SubmitError> {
        self.check()?;
        let id = self.next_id;
        self.next_id += 1;
        let mut req = InFlight {
            id,
            header,
            head: header.encode(),
            src,
            sent: 0,
            sent_at: None,
            status: [0; STATUS_LEN],
            status_len: 0,
            status_ok: false,
            dest,
            received: 0,
        };
        if header.size == 0 {
            // Completed locally and never sent (data-plane.md §1.3).
            let data = match std::mem::replace(&mut req.dest, Dest::None) {
                Dest::Buffer(v) => Some(v),
                _ => None,
            };
            self.push_done(&req, TransferResult::Ok, data);
            return Ok(id);
        }
        self.last_progress = now.mono;
        self.inflight = Some(req);
        Ok(id)
    }

    fn check(&self) -> Result<(), SubmitError> {
        if self.dead {
            Err(SubmitError::Dead)
        } else if self.inflight.is_some() {
            Err(SubmitError::Busy)
        } else {
            Ok(())
        }
    }

    /// The next finished request.
    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.done.pop_front()
    }

    /// Bytes received from the peer.
    pub fn handle_input(&mut self, now: Now, mut data: &[u8]) {
        if self.dead || data.is_empty() {
            return;
        }
        self.last_progress = now.mono;
        let Some(req) = self.inflight.as_mut() else {
            return self.fail(Lost::Protocol("bytes received with no request in flight"));
        };
        if req.v2() && req.status_len < STATUS_LEN {
            let n = (STATUS_LEN - req.status_len).min(data.len());
            req.status[req.status_len..req.status_len + n].copy_from_slice(&data[..n]);
            req.status_len += n;
            data = &data[n..];
            if req.status_len < STATUS_LEN {
                return;
            }
            match Status::decode(&req.status) {
                Err(_) => return self.fail(Lost::Protocol("status frame with a wrong magic")),
                Ok(s) if !s.is_ok() => return self.fail_with(TransferResult::Rejected { code: s.code }),
                Ok(_) => req.status_ok = true,
            }
        }
        if req.header.op == Op::Write {
            if !data.is_empty() {
                return self.fail(Lost::Protocol("bytes received after a WRITE's status"));
            }
        } else {
            let left = req.header.size - req.received;
            let n = usize::try_from(left).map_or(data.len(), |l| l.min(data.len()));
            match &mut req.dest {
                Dest::Buffer(v) => v.extend_from_slice(&data[..n]),
                Dest::Window(w) => w.write_at(req.received, &data[..n]),
                Dest::None => {}
            }
            req.received += n as u64;
            if data.len() > n {
                return self.fail(Lost::Protocol("bytes received beyond a READ's length"));
            }
        }
        self.try_complete();
    }

    /// The peer closed the connection.
    pub fn handle_eof(&mut self, _now: Now) {
        if !self.dead {
            self.fail(Lost::Eof);
        }
    }

    /// Time passed: a due connect, status or progress deadline kills the lane.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.poll_timeout().is_some_and(|due| due <= now.mono) {
            log::info!("TE lane: deadline passed; closing");
            self.fail(Lost::Timeout);
        }
    }

    /// The caller gives the lane up: a request in flight is lost.
    pub fn close(&mut self, _now: Now) {
        if !self.dead {
            self.fail(Lost::Closed);
        }
    }

    /// The next request bytes to write (header, then the WRITE payload straight from its
    /// window); 0 when nothing is to be sent now.
    #[must_use]
    pub fn poll_transmit<'a>(&'a self, bufs: &mut [IoSlice<'a>]) -> usize {
        let Some(req) = self.inflight.as_ref().filter(|_| self.connected && !self.dead) else { return 0 };
        let mut n = 0;
        let head = HEADER_LEN as u64;
        if req.sent < head && n < bufs.len() {
            bufs[n] = IoSlice::new(&req.head[req.sent as usize..]);
            n += 1;
        }
        if let Some(src) = &req.src {
            let from = req.sent.saturating_sub(head) as usize;
            let bytes = src.bytes().get(from..).unwrap_or_default();
            if !bytes.is_empty() && n < bufs.len() {
                bufs[n] = IoSlice::new(bytes);
                n += 1;
            }
        }
        n
    }

    /// `n` bytes of [`Lane::poll_transmit`] were written.
    pub fn consume(&mut self, now: Now, n: usize) {
        let Some(req) = self.inflight.as_mut() else { return };
        if n == 0 || self.dead {
            return;
        }
        self.last_progress = now.mono;
        req.sent = (req.sent + n as u64).min(req.request_len());
        if req.all_sent() {
            req.sent_at = Some(now.mono);
        }
        self.try_complete();
    }

    /// The next deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.dead {
            return None;
        }
        if !self.connected {
            return Some(self.connect_deadline);
        }
        let req = self.inflight.as_ref()?;
        let progress = self.config.progress_timeout.map(|t| self.last_progress + t);
        let status = match req.sent_at {
            Some(at) if req.v2() && req.status_len < STATUS_LEN => Some(at + self.config.status_timeout),
            _ => None,
        };
        [progress, status].into_iter().flatten().min()
    }

    /// Whether to read from the socket (always while connected and alive: an idle lane
    /// learns of the peer's close by EOF).
    pub fn wants_read(&self) -> bool {
        self.connected && !self.dead
    }

    /// True once the lane is dead: close the socket.
    pub fn is_closed(&self) -> bool {
        self.dead
    }

    /// Completes the request in flight if everything it waits for happened.
    fn try_complete(&mut self) {
        let Some(req) = &self.inflight else { return };
        let done = match (req.header.op, req.header.framing) {
            (Op::Write, Framing::V1) => req.all_sent(),
            (Op::Write, Framing::V2) => req.all_sent() && req.status_ok,
            (Op::Read, Framing::V1) => req.all_sent() && req.received == req.header.size,
            (Op::Read, Framing::V2) => req.all_sent() && req.status_ok && req.received == req.header.size,
        };
        if !done {
            return;
        }
        let Some(mut req) = self.inflight.take() else { return };
        let (result, data) = match std::mem::replace(&mut req.dest, Dest::None) {
            Dest::None => (TransferResult::Ok, None),
            Dest::Buffer(v) => (TransferResult::Ok, Some(v)),
            Dest::Window(w) => match w.finish() {
                Ok(()) => (TransferResult::Ok, None),
                Err(e) => (TransferResult::Lost(Lost::Local(e)), None),
            },
        };
        self.push_done(&req, result, data);
    }

    fn fail(&mut self, why: Lost) {
        self.fail_with(TransferResult::Lost(why));
    }

    /// Kills the lane; the request in flight (if any) completes with `result`.
    fn fail_with(&mut self, result: TransferResult) {
        self.dead = true;
        if let Some(req) = self.inflight.take() {
            log::debug!(
                "TE lane: {:?} of {} bytes at {:#x}: {result:?}",
                req.header.op,
                req.header.size,
                req.header.addr
            );
            self.push_done(&req, result, None);
        }
    }

    fn push_done(&mut self, req: &InFlight, result: TransferResult, data: Option<Vec<u8>>) {
        let h = req.header;
        self.done.push_back(Completion { id: req.id, op: h.op, addr: h.addr, len: h.size, result, data });
    }
}

#[cfg(test)]
#[path = "initiator_tests.rs"]
mod tests;
