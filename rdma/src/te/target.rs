//! The sans-IO TE TCP target: the server side of one data-port connection
//! (data-plane.md §1.3-§1.6).
//!
//! Requests are served strictly in sequence; pipelined requests are fine, and v1 and v2 may
//! be mixed on one connection. There is no idle timeout (upstream has none); an optional
//! progress deadline closes a connection whose request in progress moves no byte for a while.
//!
//! ```text
//!                      ┌──────────── v2: OK queued ◄─────────── finish() ok ──┐
//!                      ▼                                                      │
//!   ──► Header ──24 bytes, WRITE, window opened──► Body ──all `size` bytes──────┘
//!        │  ▲  └────24 bytes, READ, window opened──► Sending (v2: OK + bytes; v1: bytes)
//!        │  └──────────────── all of it consumed ◄─────┘   input waits in the stash
//!        │
//!        ├─ rejected range (or finish() failed) ──► Closing   (v2: status 1 queued first)
//!        ├─ EOF / shutdown between requests ──────► Closing
//!        └─ progress deadline ─────────────────────► Closing   (queued output dropped)
//!   Body ── EOF mid-body ──► Closing (the window is dropped unfinished, no ack)
//!   Closing: input ignored; is_closed() once the queued output is consumed.
//! ```
//!
//! Shutdown lets the request in progress finish (its ack or READ bytes go out), then closes;
//! requests pipelined behind it are dropped.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mc_core::{Acceptor, ListenerAtShutdown, Now, Session};

use super::memory::{ReadWindow, Reject, TargetMemory, WriteWindow};
use super::wire::{Framing, Header, Op, Status, HEADER_LEN, STATUS_LEN};

/// Stop wanting input while this many status frames wait to be sent (a peer that pipelines
/// writes and never reads its acks).
const MAX_QUEUED_STATUS: usize = 256;

/// Limits of a target connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetConfig {
    /// Requests larger than this are rejected. Default: no limit beyond the memory's.
    pub max_request_size: u64,
    /// Closes a connection when a request is in progress (header started, payload being
    /// received, response being sent) and no byte moved for this long. Default: none, like
    /// upstream (data-plane.md §1.4; `MC_TCP_PROGRESS_TIMEOUT_SEC` exists in newer wheels).
    pub progress_timeout: Option<Duration>,
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self { max_request_size: u64::MAX, progress_timeout: None }
    }
}

/// Counters of every target connection that shares them (plain relaxed atomics).
#[derive(Debug, Default)]
pub struct TargetStats {
    connections: AtomicU64,
    open: AtomicU64,
    requests: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    rejects: AtomicU64,
    timeouts: AtomicU64,
}

/// A copy of [`TargetStats`] at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetStatsSnapshot {
    /// Connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub open: u64,
    /// Request headers received.
    pub requests: u64,
    /// READ requests served (their bytes queued).
    pub reads: u64,
    /// WRITE requests completed (payload in memory).
    pub writes: u64,
    /// READ payload bytes sent (consumed by the socket).
    pub bytes_read: u64,
    /// WRITE payload bytes received into memory windows.
    pub bytes_written: u64,
    /// Requests rejected (range refused, too large, size 0, overflow, finish failed).
    pub rejects: u64,
    /// Connections closed by the progress deadline.
    pub timeouts: u64,
}

impl TargetStats {
    /// New counters, all zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The counters now.
    pub fn snapshot(&self) -> TargetStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TargetStatsSnapshot {
            connections: get(&self.connections),
            open: get(&self.open),
            requests: get(&self.requests),
            reads: get(&self.reads),
            writes: get(&self.writes),
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
            rejects: get(&self.rejects),
            timeouts: get(&self.timeouts),
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Where a connection is (see the module diagram).
enum Phase {
    /// Waiting for (the rest of) a request header.
    Header,
    /// Receiving a WRITE's payload into `window`.
    Body { framing: Framing, window: Box<dyn WriteWindow>, addr: u64, size: u64, done: u64 },
    /// A READ's response is queued; input waits in the stash until it is consumed.
    Sending,
    /// No more input; closed once the queued output is consumed.
    Closing,
}

/// A piece of queued output.
enum Chunk {
    Status([u8; STATUS_LEN]),
    Read(Box<dyn ReadWindow>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Status(b) => b,
            Chunk::Read(w) => w.bytes(),
        }
    }
}

/// One data-port connection of a TE TCP target. Drive it through [`Session`].
pub struct TargetSession {
    memory: Arc<dyn TargetMemory>,
    config: TargetConfig,
    stats: Arc<TargetStats>,
    phase: Phase,
    header: [u8; HEADER_LEN],
    header_len: usize,
    out: VecDeque<Chunk>,
    /// Bytes of `out[0]` already consumed.
    out_pos: usize,
    /// Input received while a READ is being sent.
    stash: Vec<u8>,
    eof: bool,
    shutdown: bool,
    last_progress: Instant,
}

impl TargetSession {
    /// A connection accepted at `now`, serving `memory`, counting into `stats`.
    pub fn new(now: Now, memory: Arc<dyn TargetMemory>, config: TargetConfig, stats: Arc<TargetStats>) -> Self {
        add(&stats.connections, 1);
        add(&stats.open, 1);
        Self {
            memory,
            config,
            stats,
            phase: Phase::Header,
            header: [0; HEADER_LEN],
            header_len: 0,
            out: VecDeque::new(),
            out_pos: 0,
            stash: Vec::new(),
            eof: false,
            shutdown: false,
            last_progress: now.mono,
        }
    }

    /// Runs `input` through the state machine until it is used up, stashed or ignored.
    fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            match &mut self.phase {
                Phase::Closing => return,
                Phase::Sending => {
                    self.stash.extend_from_slice(input);
                    return;
                }
                Phase::Header if self.shutdown => {
                    self.phase = Phase::Closing;
                    return;
                }
                Phase::Header => {
                    let n = (HEADER_LEN - self.header_len).min(input.len());
                    self.header[self.header_len..self.header_len + n].copy_from_slice(&input[..n]);
                    self.header_len += n;
                    input = &input[n..];
                    if self.header_len == HEADER_LEN {
                        self.header_len = 0;
                        self.start(Header::decode(&self.header));
                    }
                }
                Phase::Body { window, size, done, .. } => {
                    // `size - done` is at least 1 here: a finished body leaves this phase.
                    let n = usize::try_from(*size - *done).map_or(input.len(), |left| left.min(input.len()));
                    window.write_at(*done, &input[..n]);
                    *done += n as u64;
                    add(&self.stats.bytes_written, n as u64);
                    input = &input[n..];
                    if *done == *size {
                        self.finish_write();
                    }
                }
            }
        }
    }

    /// A full header arrived: validate it and open the window.
    fn start(&mut self, h: Header) {
        add(&self.stats.requests, 1);
        if h.size == 0 {
            return self.reject(h, Reject::new("size 0"));
        }
        if h.addr.checked_add(h.size).is_none() {
            return self.reject(h, Reject::new("address range overflows"));
        }
        if h.size > self.config.max_request_size {
            return self.reject(h, Reject::new("request larger than the configured maximum"));
        }
        match h.op {
            Op::Write => match self.memory.open_write(h.addr, h.size) {
                Ok(window) => {
                    self.phase = Phase::Body { framing: h.framing, window, addr: h.addr, size: h.size, done: 0 }
                }
                Err(e) => self.reject(h, e),
            },
            Op::Read => match self.memory.open_read(h.addr, h.size) {
                Ok(window) if window.bytes().len() as u64 == h.size => {
                    add(&self.stats.reads, 1);
                    if h.framing == Framing::V2 {
                        self.out.push_back(Chunk::Status(Status::OK.encode()));
                    }
                    self.out.push_back(Chunk::Read(window));
                    self.phase = Phase::Sending;
                }
                Ok(window) => {
                    log::error!("TE target: memory opened {} bytes for a READ of {}", window.bytes().len(), h.size);
                    self.reject(h, Reject::new("read window of the wrong length"))
                }
                Err(e) => self.reject(h, e),
            },
        }
    }

    /// The whole WRITE payload arrived.
    fn finish_write(&mut self) {
        let Phase::Body { framing, window, addr, size, .. } = std::mem::replace(&mut self.phase, Phase::Header) else {
            return;
        };
        match window.finish() {
            Ok(()) => {
                add(&self.stats.writes, 1);
                if framing == Framing::V2 {
                    self.out.push_back(Chunk::Status(Status::OK.encode()));
                }
            }
            Err(e) => {
                let h = Header { size, addr, op: Op::Write, framing };
                self.reject(h, e);
            }
        }
    }

    /// v2: status 1, then close; v1: close (§1.4).
    fn reject(&mut self, h: Header, why: Reject) {
        add(&self.stats.rejects, 1);
        log::info!(
            "TE target: {:?} {:?} of {} bytes at {:#x} rejected ({why}); closing the connection",
            h.framing,
            h.op,
            h.size,
            h.addr
        );
        if h.framing == Framing::V2 {
            self.out.push_back(Chunk::Status(Status::REJECTED.encode()));
        }
        self.phase = Phase::Closing;
        self.stash = Vec::new();
    }

    /// Closes between requests once EOF or the shutdown was seen; drops a body cut by EOF.
    fn settle(&mut self) {
        match self.phase {
            Phase::Header if self.eof || self.shutdown => self.phase = Phase::Closing,
            Phase::Body { .. } if self.eof => self.phase = Phase::Closing,
            _ => {}
        }
        if matches!(self.phase, Phase::Closing) {
            self.stash = Vec::new();
        }
    }

    /// A request is started, or output waits: the progress deadline applies.
    fn in_progress(&self) -> bool {
        self.header_len > 0 || !self.out.is_empty() || matches!(self.phase, Phase::Body { .. } | Phase::Sending)
    }
}

impl Session for TargetSession {
    fn handle_input(&mut self, now: Now, data: &[u8]) {
        if !data.is_empty() {
            self.last_progress = now.mono;
        }
        self.feed(data);
        self.settle();
    }

    fn handle_eof(&mut self, _now: Now) {
        self.eof = true;
        self.settle();
    }

    fn handle_timeout(&mut self, now: Now) {
        if self.poll_timeout().is_some_and(|due| due <= now.mono) {
            add(&self.stats.timeouts, 1);
            log::info!("TE target: no progress for {:?}; closing the connection", self.config.progress_timeout);
            self.out.clear();
            self.out_pos = 0;
            self.phase = Phase::Closing;
            self.stash = Vec::new();
        }
    }

    fn handle_shutdown(&mut self, _now: Now) {
        self.shutdown = true;
        self.settle();
    }

    fn poll_transmit<'a>(&'a self, bufs: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, chunk) in self.out.iter().enumerate() {
            if n == bufs.len() {
                break;
            }
            let bytes = if i == 0 { &chunk.bytes()[self.out_pos..] } else { chunk.bytes() };
            bufs[n] = IoSlice::new(bytes);
            n += 1;
        }
        n
    }

    fn consume(&mut self, now: Now, mut n: usize) {
        if n > 0 {
            self.last_progress = now.mono;
        }
        let mut read_done = false;
        while n > 0 {
            let Some(front) = self.out.front() else { break };
            let left = front.bytes().len() - self.out_pos;
            let used = left.min(n);
            if matches!(front, Chunk::Read(_)) {
                add(&self.stats.bytes_read, used as u64);
            }
            n -= used;
            if used == left {
                read_done |= matches!(self.out.pop_front(), Some(Chunk::Read(_)));
                self.out_pos = 0;
            } else {
                self.out_pos += used;
            }
        }
        if read_done && matches!(self.phase, Phase::Sending) {
            self.phase = Phase::Header;
            if !self.shutdown {
                let stash = std::mem::take(&mut self.stash);
                self.feed(&stash);
            }
        }
        self.settle();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self.config.progress_timeout?;
        if matches!(self.phase, Phase::Closing) && self.out.is_empty() {
            return None;
        }
        self.in_progress().then(|| self.last_progress + timeout)
    }

    fn wants_read(&self) -> bool {
        matches!(self.phase, Phase::Header | Phase::Body { .. }) && !self.eof && self.out.len() < MAX_QUEUED_STATUS
    }

    /// A WRITE's payload goes straight into the window's memory when it offers it.
    fn read_into(&mut self) -> Option<&mut [u8]> {
        match &mut self.phase {
            Phase::Body { window, size, done, .. } if *done < *size => {
                let left = usize::try_from(*size - *done).unwrap_or(usize::MAX);
                window.dest(*done).map(|d| {
                    let n = d.len().min(left);
                    &mut d[..n]
                })
            }
            _ => None,
        }
    }

    fn handle_read_into(&mut self, now: Now, n: usize) {
        if let Phase::Body { size, done, .. } = &mut self.phase {
            let n = (n as u64).min(*size - *done);
            if n > 0 {
                self.last_progress = now.mono;
                *done += n;
                add(&self.stats.bytes_written, n);
                if *done == *size {
                    self.finish_write();
                }
            }
        }
        self.settle();
    }

    fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closing) && self.out.is_empty()
    }
}

impl Drop for TargetSession {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Makes [`TargetSession`]s for one data-port listener on one worker.
#[derive(Clone)]
pub struct TargetAcceptor {
    memory: Arc<dyn TargetMemory>,
    config: TargetConfig,
    stats: Arc<TargetStats>,
}

impl TargetAcceptor {
    /// Sessions serving `memory` with `config`, counting into `stats`.
    pub fn new(memory: Arc<dyn TargetMemory>, config: TargetConfig, stats: Arc<TargetStats>) -> Self {
        Self { memory, config, stats }
    }

    /// The counters its sessions update.
    pub fn stats(&self) -> &Arc<TargetStats> {
        &self.stats
    }
}

impl Acceptor for TargetAcceptor {
    fn accept(&mut self, now: Now) -> Box<dyn Session> {
        Box::new(TargetSession::new(now, self.memory.clone(), self.config, self.stats.clone()))
    }

    /// The data port closes at once (in-flight requests on open connections still finish).
    fn on_shutdown(&self) -> ListenerAtShutdown {
        ListenerAtShutdown::Close
    }
}

#[cfg(test)]
#[path = "target_tests.rs"]
mod tests;
