//! [`TcpDataPlane`]: mc-master's [`DataPlane`] over the TE TCP protocol, the initiator side
//! (data-plane.md §1.6, §5.1 item 4). Blocking std sockets on threads of its own; the caller
//! of [`DataPlane::submit`] never blocks, `done` is called from the plane's threads.
//!
//! ```text
//!   submit ──queue──► worker thread: resolve the endpoint (cache, see crate::resolve)
//!                       └─ split into slices of ≤ 16 MiB − 16 B at addr + Σ previous slices
//!                          └─ each slice on a lane of the peer (≤ 4 per host:port, one request
//!                             in flight each, persistent; a big value uses several at once)
//!                     connect failure or reject ──► drop the cached descriptor, re-fetch once,
//!                                                   run again if it changed (or the connect failed)
//!                     done(Read(bytes) | Written | Failed("<endpoint>: <cause>"))
//! ```
//!
//! Framing: v2 when the descriptor's `tcp_proto_version >= 2`, else v1 (a v1 WRITE is
//! "written" once its bytes are in the socket, as upstream: data-plane.md §1.3). A v2 WRITE
//! completes after every slice's OK status. The transfer's deadline bounds the connect, the
//! status wait and every socket read and write. A ranged request outside every buffer of the
//! descriptor is refused before anything is sent (like a reject, it re-fetches once).
//!
//! Idle lanes are checked before reuse (a peer that closed them is noticed); a request that
//! fails on a reused lane, other than by a reject, is retried once on a fresh connection.

use std::collections::HashMap;
use std::fmt;
use std::io::{IoSlice, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mc_core::store::Store;
use mc_core::transfer::{DataPlane, Transfer, TransferOp, TransferOutcome};
use mc_core::Now;

use crate::http::Url;
use crate::resolve::{connect, Resolved, Resolver, ResolverConfig};
use crate::te::handshake_server::DescriptorProvider;
use crate::te::initiator::{Completion, Lane, LaneConfig, Lost, ReadDest, TransferResult};
use crate::te::memory::ReadWindow;
use crate::te::wire::{Framing, Op};

/// Upstream's largest slice of a store value (`kMaxSliceSize`): 16 MiB − 16 B.
pub const MAX_SLICE: u64 = (16 << 20) - 16;
/// Upstream's default lanes per peer (`MC_TCP_LANES_PER_PEER`).
pub const LANES_PER_PEER: usize = 4;
/// Socket read granularity.
const READ_CHUNK: usize = 256 * 1024;

/// Configuration of a [`TcpDataPlane`].
#[derive(Clone)]
pub struct TcpPlaneConfig {
    /// Threads carrying transfers (each runs one transfer at a time; the slices of a large
    /// one run on extra scoped threads, one per lane used).
    pub threads: usize,
    /// Persistent lanes per peer `(host, port)`, at most.
    pub lanes_per_peer: usize,
    /// Largest request; larger transfers are split.
    pub slice_size: u64,
    /// Connect, status and progress deadlines of a lane (the transfer's deadline bounds them).
    pub lane: LaneConfig,
    /// Metadata key prefix (`mooncake/` or `mooncake/<cluster id>/`).
    pub key_prefix: String,
    /// Look descriptors up in this process's metadata map.
    pub local_metadata: bool,
    /// An external metadata server to look descriptors up in (`http://host:port/metadata`).
    pub metadata_server: Option<String>,
    /// Fall back to P2PHANDSHAKE (type-1 exchange with the endpoint as `host:port`).
    pub handshake: bool,
    /// Our descriptor, sent in P2PHANDSHAKE requests (`{}` without one).
    pub own_descriptor: Option<DescriptorProvider>,
}

impl Default for TcpPlaneConfig {
    fn default() -> Self {
        Self {
            threads: 8,
            lanes_per_peer: LANES_PER_PEER,
            slice_size: MAX_SLICE,
            lane: LaneConfig::default(),
            key_prefix: crate::publish::DEFAULT_PREFIX.to_owned(),
            local_metadata: true,
            metadata_server: None,
            handshake: true,
            own_descriptor: None,
        }
    }
}

impl fmt::Debug for TcpPlaneConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpPlaneConfig")
            .field("threads", &self.threads)
            .field("lanes_per_peer", &self.lanes_per_peer)
            .field("slice_size", &self.slice_size)
            .field("lane", &self.lane)
            .field("key_prefix", &self.key_prefix)
            .field("local_metadata", &self.local_metadata)
            .field("metadata_server", &self.metadata_server)
            .field("handshake", &self.handshake)
            .field("own_descriptor", &self.own_descriptor.is_some())
            .finish()
    }
}

/// Counters of a [`TcpDataPlane`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlaneStats {
    /// Transfers finished (any outcome).
    pub transfers: u64,
    /// Transfers that failed.
    pub failed: u64,
    /// Requests sent (slices).
    pub requests: u64,
    /// Connections opened.
    pub connects: u64,
    /// Lanes open now, all peers.
    pub lanes_open: u64,
    /// The most lanes ever open to one peer at once.
    pub lanes_peak: u64,
    /// Descriptors dropped and re-fetched after a connect failure or a reject.
    pub refetches: u64,
    /// Payload bytes read.
    pub bytes_read: u64,
    /// Payload bytes written.
    pub bytes_written: u64,
}

#[derive(Default)]
struct Counters {
    transfers: AtomicU64,
    failed: AtomicU64,
    requests: AtomicU64,
    connects: AtomicU64,
    lanes_open: AtomicU64,
    lanes_peak: AtomicU64,
    refetches: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

type Done = Box<dyn FnOnce(TransferOutcome) + Send>;

struct Job {
    transfer: Transfer,
    done: Done,
}

/// The TE TCP initiator as mc-master's data plane. See the module docs.
pub struct TcpDataPlane {
    inner: Arc<Inner>,
    queue: Mutex<Option<Sender<Job>>>,
}

impl fmt::Debug for TcpDataPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpDataPlane").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

struct Inner {
    config: TcpPlaneConfig,
    resolver: Resolver,
    /// Connection pools by data address and the owner's `tcp_instance_id` (newer owners
    /// regenerate it per transport incarnation: a restarted owner on the same port gets a
    /// fresh pool, the old one's lanes are dropped).
    peers: Mutex<HashMap<PeerKey, Arc<Peer>>>,
    counters: Counters,
}

/// `(data host, data port, tcp_instance_id)`.
type PeerKey = (String, u16, Option<String>);

/// Why one attempt failed, and whether a re-fetch of the descriptor may help.
#[derive(Debug)]
struct Fail {
    kind: FailKind,
    msg: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailKind {
    /// No connection could be made.
    Connect,
    /// The target refused the range (or the descriptor does not list it).
    Rejected,
    /// A deadline passed.
    Timeout,
    /// The connection broke or the peer misbehaved.
    Lost,
}

impl Fail {
    fn new(kind: FailKind, msg: impl Into<String>) -> Self {
        Self { kind, msg: msg.into() }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now() -> Now {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Now::new(Instant::now(), wall)
}

impl TcpDataPlane {
    /// Starts the plane's threads. `store` is whose metadata map descriptors are looked up
    /// in first (this process's).
    pub fn new(store: Arc<Store>, config: TcpPlaneConfig) -> Result<Arc<Self>, String> {
        let metadata_server = match &config.metadata_server {
            Some(u) => Some(Url::parse(u)?),
            None => None,
        };
        let resolver = Resolver::new(
            store,
            ResolverConfig {
                key_prefix: config.key_prefix.clone(),
                local: config.local_metadata,
                metadata_server,
                handshake: config.handshake,
                own_descriptor: config.own_descriptor.clone(),
            },
        );
        let threads = config.threads.max(1);
        let inner = Arc::new(Inner { config, resolver, peers: Mutex::default(), counters: Counters::default() });
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let (inner, rx) = (inner.clone(), rx.clone());
            std::thread::Builder::new()
                .name(format!("te-tcp-{i}"))
                .spawn(move || worker(&inner, &rx))
                .map_err(|e| format!("cannot start a data-plane thread: {e}"))?;
        }
        Ok(Arc::new(Self { inner, queue: Mutex::new(Some(tx)) }))
    }

    /// The counters now.
    pub fn stats(&self) -> PlaneStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PlaneStats {
            transfers: get(&c.transfers),
            failed: get(&c.failed),
            requests: get(&c.requests),
            connects: get(&c.connects),
            lanes_open: get(&c.lanes_open),
            lanes_peak: get(&c.lanes_peak),
            refetches: get(&c.refetches),
            bytes_read: get(&c.bytes_read),
            bytes_written: get(&c.bytes_written),
        }
    }

    /// Lanes open now to `host:port`.
    pub fn lanes_to(&self, host: &str, port: u16) -> usize {
        lock(&self.inner.peers)
            .iter()
            .filter(|((h, p, _), _)| h == host && *p == port)
            .map(|(_, peer)| lock(&peer.state).open)
            .sum()
    }

    /// The descriptor lookup (its cache can be dropped with [`Resolver::invalidate`]).
    pub fn resolver(&self) -> &Resolver {
        &self.inner.resolver
    }

    /// Runs `transfer` on the calling thread (what the plane's threads do).
    pub fn run_blocking(&self, transfer: &Transfer) -> TransferOutcome {
        self.inner.run(transfer)
    }

    /// Stops taking transfers; the threads exit once the queued ones are done.
    pub fn close(&self) {
        lock(&self.queue).take();
    }
}

impl DataPlane for TcpDataPlane {
    fn submit(&self, transfer: Transfer, done: Box<dyn FnOnce(TransferOutcome) + Send>) {
        let job = Job { transfer, done };
        let rejected = match lock(&self.queue).as_ref() {
            Some(tx) => tx.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = rejected {
            (job.done)(TransferOutcome::Failed(format!("{}: the data plane is closed", job.transfer.endpoint)));
        }
    }
}

fn worker(inner: &Inner, rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match lock(rx).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.run(&job.transfer)));
        let outcome = run.unwrap_or_else(|_| {
            log::error!("TE transfer {} panicked", job.transfer.id);
            TransferOutcome::Failed(format!("{}: internal error in the data plane", job.transfer.endpoint))
        });
        (job.done)(outcome);
    }
}

/// One slice's operation.
#[derive(Clone)]
enum SliceOp {
    Read { addr: u64, len: u64 },
    Write { addr: u64, src: SliceSrc },
}

/// A slice of a write's bytes, sent without a copy.
#[derive(Clone)]
struct SliceSrc {
    data: bytes::Bytes,
    start: usize,
    end: usize,
}

impl ReadWindow for SliceSrc {
    fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }
}

impl Inner {
    fn run(&self, t: &Transfer) -> TransferOutcome {
        let outcome = self.run_inner(t);
        bump(&self.counters.transfers, 1);
        match &outcome {
            TransferOutcome::Failed(why) => {
                bump(&self.counters.failed, 1);
                log::info!("TE transfer {} failed: {why}", t.id);
            }
            TransferOutcome::Read(b) => bump(&self.counters.bytes_read, b.len() as u64),
            TransferOutcome::Written => {
                if let TransferOp::Write { data, .. } = &t.op {
                    bump(&self.counters.bytes_written, data.len() as u64);
                }
            }
            TransferOutcome::Cluster(_) => {}
        }
        outcome
    }

    fn run_inner(&self, t: &Transfer) -> TransferOutcome {
        let ep = &t.endpoint;
        let empty = match &t.op {
            TransferOp::Read { len, .. } => *len == 0,
            TransferOp::Write { data, .. } => data.is_empty(),
            // A store node's operations are run by its own plane, never by this one.
            TransferOp::Cluster(_) => {
                return TransferOutcome::Failed(format!("{ep}: cluster operations need a store node's plane"))
            }
            // A highly available master's durability waits are answered by its committer.
            TransferOp::Durable { .. } => return TransferOutcome::Failed("durability waits need an HA master".into()),
        };
        if empty {
            // Completed locally and never sent (data-plane.md §1.3).
            return match t.op {
                TransferOp::Write { .. } => TransferOutcome::Written,
                _ => TransferOutcome::Read(Vec::new()),
            };
        }
        if Instant::now() >= t.deadline {
            return TransferOutcome::Failed(format!("{ep}: the deadline passed before the transfer started"));
        }
        let first = match self.resolver.get(ep, t.deadline) {
            Ok(r) => r,
            Err(e) => return TransferOutcome::Failed(format!("{ep}: {e}")),
        };
        let fail = match self.attempt(&first, t) {
            Ok(o) => return o,
            Err(f) => f,
        };
        if !matches!(fail.kind, FailKind::Connect | FailKind::Rejected) {
            return TransferOutcome::Failed(format!("{ep}: {}", fail.msg));
        }
        // Upstream never re-reads a descriptor; a peer that restarted elsewhere (or mounted
        // more memory) is found again here.
        self.resolver.invalidate(ep);
        bump(&self.counters.refetches, 1);
        let again = match self.resolver.get(ep, t.deadline) {
            Ok(r) => r,
            Err(e) => return TransferOutcome::Failed(format!("{ep}: {}; re-fetching its descriptor: {e}", fail.msg)),
        };
        if *again == *first && fail.kind == FailKind::Rejected {
            return TransferOutcome::Failed(format!("{ep}: {}", fail.msg));
        }
        log::debug!("TE: {ep}: {}; retrying with a re-fetched descriptor", fail.msg);
        match self.attempt(&again, t) {
            Ok(o) => o,
            Err(f) => TransferOutcome::Failed(format!("{ep}: {}", f.msg)),
        }
    }

    fn peer(&self, host: &str, port: u16, instance: Option<&str>) -> Arc<Peer> {
        let mut peers = lock(&self.peers);
        let key = (host.to_owned(), port, instance.map(str::to_owned));
        if !peers.contains_key(&key) {
            // Another incarnation of the owner at this address: its pooled lanes lead to a
            // transport that is gone (lanes in use finish with their guards).
            peers.retain(|(h, p, _), old| {
                let same = h == host && *p == port;
                if same {
                    old.retire(&self.counters);
                }
                !same
            });
        }
        peers
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Peer {
                    host: host.to_owned(),
                    port,
                    max: self.config.lanes_per_peer.max(1),
                    state: Mutex::default(),
                    freed: Condvar::new(),
                    retired: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Runs every slice of `t` against `r` once.
    fn attempt(&self, r: &Resolved, t: &Transfer) -> Result<TransferOutcome, Fail> {
        let (addr, len) = match &t.op {
            TransferOp::Read { addr, len } => (*addr, *len),
            TransferOp::Write { addr, data } => (*addr, data.len() as u64),
            TransferOp::Cluster(_) | TransferOp::Durable { .. } => {
                return Err(Fail::new(FailKind::Rejected, "not a transfer"))
            }
        };
        if r.desc.buffer_containing(addr, len).is_none() {
            return Err(Fail::new(
                FailKind::Rejected,
                format!("{len} bytes at {addr:#x} are outside every buffer of its segment descriptor"),
            ));
        }
        let framing = r.desc.framing();
        let peer = self.peer(&r.data_host, r.data_port, r.desc.tcp_instance_id.as_deref());
        let step = self.config.slice_size.max(1);
        let slices: Vec<SliceOp> = (0..len.div_ceil(step))
            .map(|i| {
                let off = i * step;
                let n = step.min(len - off);
                match &t.op {
                    TransferOp::Write { data, .. } => SliceOp::Write {
                        addr: addr + off,
                        src: SliceSrc { data: data.clone(), start: off as usize, end: (off + n) as usize },
                    },
                    _ => SliceOp::Read { addr: addr + off, len: n },
                }
            })
            .collect();
        let results = if slices.len() == 1 {
            vec![self.run_slice(&peer, framing, &slices[0], t.deadline)?]
        } else {
            self.run_parallel(&peer, framing, &slices, t.deadline)?
        };
        Ok(match t.op {
            TransferOp::Write { .. } => TransferOutcome::Written,
            _ => {
                let mut parts = results.into_iter().map(Option::unwrap_or_default);
                let mut out = parts.next().unwrap_or_default();
                out.reserve_exact(usize::try_from(len).unwrap_or(0).saturating_sub(out.len()));
                for p in parts {
                    out.extend_from_slice(&p);
                }
                TransferOutcome::Read(out)
            }
        })
    }

    /// The slices of one transfer over up to `lanes_per_peer` lanes at once.
    fn run_parallel(
        &self,
        peer: &Arc<Peer>,
        framing: Framing,
        slices: &[SliceOp],
        deadline: Instant,
    ) -> Result<Vec<Option<Vec<u8>>>, Fail> {
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Vec<u8>>>> = Mutex::new(vec![None; slices.len()]);
        let first_fail: Mutex<Option<Fail>> = Mutex::new(None);
        let workers = slices.len().min(peer.max);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(slice) = slices.get(i) else { return };
                        match self.run_slice(peer, framing, slice, deadline) {
                            Ok(data) => lock(&results)[i] = data,
                            Err(f) => {
                                stop.store(true, Ordering::Relaxed);
                                lock(&first_fail).get_or_insert(f);
                                return;
                            }
                        }
                    }
                });
            }
        });
        match first_fail.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Some(f) => Err(f),
            None => Ok(results.into_inner().unwrap_or_else(PoisonError::into_inner)),
        }
    }

    /// One request on a lane of `peer`: READ bytes, or `None` for a WRITE.
    fn run_slice(
        &self,
        peer: &Arc<Peer>,
        framing: Framing,
        op: &SliceOp,
        deadline: Instant,
    ) -> Result<Option<Vec<u8>>, Fail> {
        let mut guard = peer.acquire(&self.counters, deadline)?;
        for try_no in 0..2 {
            let reused = guard.conn.is_some();
            if guard.conn.is_none() {
                let stream = connect((peer.host.as_str(), peer.port), self.config.lane.connect_timeout, deadline)
                    .map_err(|e| Fail::new(FailKind::Connect, e))?;
                bump(&self.counters.connects, 1);
                let mut lane = Lane::new(now(), self.config.lane);
                lane.handle_connected(now());
                guard.conn = Some(Conn { stream, lane, buf: Vec::new() });
            }
            let conn = guard.conn.as_mut().expect("connected above");
            bump(&self.counters.requests, 1);
            match conn.request(op.clone(), framing, deadline) {
                Ok(data) => {
                    if conn.lane.is_closed() {
                        guard.conn = None;
                    }
                    return Ok(data);
                }
                Err(f) => {
                    guard.conn = None;
                    let stale = reused && f.kind == FailKind::Lost && try_no == 0;
                    if !stale {
                        return Err(f);
                    }
                    log::debug!(
                        "TE: a reused lane to {}:{} failed ({}); retrying on a new one",
                        peer.host,
                        peer.port,
                        f.msg
                    );
                }
            }
        }
        unreachable!("the second try returns")
    }
}

/// The lanes of one `(host, port)`.
struct Peer {
    host: String,
    port: u16,
    max: usize,
    state: Mutex<PeerState>,
    freed: Condvar,
    /// Replaced by another incarnation of the owner: lanes are closed, not pooled.
    retired: AtomicBool,
}

#[derive(Default)]
struct PeerState {
    idle: Vec<Conn>,
    /// Lanes open or being opened (idle ones included).
    open: usize,
}

impl Peer {
    /// Closes the idle lanes; lanes in use close when their requests end.
    fn retire(&self, counters: &Counters) {
        self.retired.store(true, Ordering::SeqCst);
        let mut s = lock(&self.state);
        let n = s.idle.len();
        s.idle.clear();
        s.open -= n;
        counters.lanes_open.fetch_sub(n as u64, Ordering::Relaxed);
    }

    /// A lane slot: an idle connection, or the right to open one.
    fn acquire<'a>(self: &'a Arc<Self>, counters: &'a Counters, deadline: Instant) -> Result<LaneGuard<'a>, Fail> {
        let mut s = lock(&self.state);
        loop {
            while let Some(mut conn) = s.idle.pop() {
                if conn.alive() {
                    return Ok(LaneGuard { peer: self, counters, conn: Some(conn) });
                }
                s.open -= 1;
                counters.lanes_open.fetch_sub(1, Ordering::Relaxed);
            }
            if s.open < self.max {
                s.open += 1;
                bump(&counters.lanes_open, 1);
                counters.lanes_peak.fetch_max(s.open as u64, Ordering::Relaxed);
                return Ok(LaneGuard { peer: self, counters, conn: None });
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                return Err(Fail::new(
                    FailKind::Timeout,
                    format!("no free lane to {}:{} before the deadline", self.host, self.port),
                ));
            };
            s = self.freed.wait_timeout(s, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

/// A lane slot held by one request; returns the connection to the idle list (or frees the
/// slot) when dropped.
struct LaneGuard<'a> {
    peer: &'a Arc<Peer>,
    counters: &'a Counters,
    conn: Option<Conn>,
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        let mut s = lock(&self.peer.state);
        match self.conn.take() {
            Some(conn) if conn.lane.is_idle() && !self.peer.retired.load(Ordering::SeqCst) => s.idle.push(conn),
            _ => {
                s.open -= 1;
                self.counters.lanes_open.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.peer.freed.notify_one();
    }
}

/// A connected socket and the lane that drives it.
struct Conn {
    stream: TcpStream,
    lane: Lane,
    buf: Vec<u8>,
}

fn io_timeout(lane: &Lane, deadline: Instant) -> Duration {
    let due = lane.poll_timeout().map_or(deadline, |d| d.min(deadline));
    due.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

impl Conn {
    /// An idle connection the peer has not closed (and sent nothing on).
    fn alive(&mut self) -> bool {
        if self.lane.is_closed() || self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        let alive = matches!(self.stream.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        alive && self.stream.set_nonblocking(false).is_ok()
    }

    /// Sends one request and waits for its completion.
    fn request(&mut self, op: SliceOp, framing: Framing, deadline: Instant) -> Result<Option<Vec<u8>>, Fail> {
        let op_kind = match op {
            SliceOp::Read { .. } => Op::Read,
            SliceOp::Write { .. } => Op::Write,
        };
        let submitted = match op {
            SliceOp::Read { addr, len } => self.lane.submit_read(now(), addr, len, ReadDest::Buffer, framing),
            SliceOp::Write { addr, src } => self.lane.submit_write(now(), addr, Box::new(src), framing),
        };
        submitted.map_err(|e| Fail::new(FailKind::Lost, e.to_string()))?;
        if self.buf.len() < READ_CHUNK {
            self.buf = vec![0; READ_CHUNK];
        }
        // A v2 WRITE's status is read while the body is still going out, so an early reject
        // interrupts it (as upstream's initiator does).
        let early_status = framing == Framing::V2 && matches!(op_kind, Op::Write);
        let mut send_error = None;
        loop {
            let written = {
                let mut bufs = [IoSlice::new(&[]); 2];
                let n = self.lane.poll_transmit(&mut bufs);
                if n == 0 {
                    break;
                }
                if let Err(e) = self.stream.set_write_timeout(Some(io_timeout(&self.lane, deadline))) {
                    return Err(Fail::new(FailKind::Lost, e.to_string()));
                }
                self.stream.write_vectored(&bufs[..n])
            };
            match written {
                Ok(0) => {
                    send_error = Some("the connection closed while sending".to_owned());
                    break;
                }
                Ok(k) => {
                    self.lane.consume(now(), k);
                    if early_status {
                        self.poll_early_input();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => self.tick(deadline),
                Err(e) => {
                    // Maybe an early reject: its status may still be readable.
                    send_error = Some(format!("send: {e}"));
                    break;
                }
            }
            if self.lane.is_closed() {
                break;
            }
        }
        loop {
            if let Some(c) = self.lane.poll_completion() {
                return completion(c, send_error);
            }
            if self.lane.is_closed() {
                return Err(Fail::new(FailKind::Lost, send_error.unwrap_or_else(|| "the lane closed".into())));
            }
            if let Err(e) = self.stream.set_read_timeout(Some(io_timeout(&self.lane, deadline))) {
                return Err(Fail::new(FailKind::Lost, e.to_string()));
            }
            match self.stream.read(&mut self.buf) {
                Ok(0) => self.lane.handle_eof(now()),
                Ok(k) => self.lane.handle_input(now(), &self.buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => self.tick(deadline),
                Err(e) => {
                    self.lane.close(now());
                    let why = send_error.unwrap_or_else(|| format!("receive: {e}"));
                    return Err(Fail::new(FailKind::Lost, why));
                }
            }
        }
    }

    /// Whatever the peer already sent (a WRITE's early status), without waiting.
    fn poll_early_input(&mut self) {
        if self.stream.set_nonblocking(true).is_err() {
            return;
        }
        match self.stream.read(&mut self.buf) {
            Ok(0) => self.lane.handle_eof(now()),
            Ok(k) => self.lane.handle_input(now(), &self.buf[..k]),
            Err(_) => {}
        }
        if self.stream.set_nonblocking(false).is_err() {
            self.lane.close(now());
        }
    }

    /// A socket timeout: the lane's deadlines, then the transfer's.
    fn tick(&mut self, deadline: Instant) {
        let n = now();
        self.lane.handle_timeout(n);
        if n.mono >= deadline && !self.lane.is_closed() {
            log::debug!("TE lane: the transfer's deadline passed");
            self.lane.close(n);
        }
    }
}

fn completion(c: Completion, send_error: Option<String>) -> Result<Option<Vec<u8>>, Fail> {
    let what = match c.op {
        Op::Read => "READ",
        Op::Write => "WRITE",
    };
    let request = format!("{what} of {} bytes at {:#x}", c.len, c.addr);
    match c.result {
        TransferResult::Ok => Ok(c.data),
        TransferResult::Rejected { code } => {
            Err(Fail::new(FailKind::Rejected, format!("{request} rejected by the target (status {code})")))
        }
        TransferResult::Lost(lost) => {
            let (kind, why) = match lost {
                Lost::Eof => (FailKind::Lost, "the target closed the connection".to_owned()),
                Lost::Timeout => (FailKind::Timeout, "timed out".to_owned()),
                Lost::Closed => (FailKind::Timeout, "the deadline passed".to_owned()),
                Lost::Protocol(p) => (FailKind::Lost, p.to_owned()),
                Lost::Local(r) => (FailKind::Lost, r.to_string()),
            };
            let why = match send_error {
                Some(s) => format!("{why} ({s})"),
                None => why,
            };
            Err(Fail::new(kind, format!("{request}: {why}")))
        }
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;
    use mc_core::platform::FakePlatform;
    use mc_core::{Config, Master};

    fn plane() -> Arc<TcpDataPlane> {
        let m = Master::new(Config::default(), Arc::new(FakePlatform::new(7)), now());
        TcpDataPlane::new(m.store().clone(), TcpPlaneConfig { handshake: false, ..Default::default() }).unwrap()
    }

    /// Pools are keyed by the owner's `tcp_instance_id` too: the same incarnation shares one,
    /// a new incarnation at the same address gets a fresh one and the old one is retired
    /// (its idle lanes closed and uncounted, lanes in use not pooled again).
    #[test]
    fn a_new_tcp_instance_id_gets_a_fresh_pool_and_retires_the_old() {
        let p = plane();
        let inner = &p.inner;
        let one = inner.peer("127.0.0.1", 9, Some("one"));
        assert!(Arc::ptr_eq(&one, &inner.peer("127.0.0.1", 9, Some("one"))));
        // An idle lane counted in the old pool (as a finished request leaves it).
        one.state.lock().unwrap().open = 1;
        inner.counters.lanes_open.store(1, Ordering::Relaxed);
        let two = inner.peer("127.0.0.1", 9, Some("two"));
        assert!(!Arc::ptr_eq(&one, &two));
        assert!(one.retired.load(Ordering::SeqCst));
        assert!(!two.retired.load(Ordering::SeqCst));
        assert_eq!(lock(&inner.peers).len(), 1, "only the live incarnation is kept");
        // Other addresses are untouched; descriptors without the field share one pool.
        let other = inner.peer("127.0.0.1", 10, None);
        assert!(Arc::ptr_eq(&other, &inner.peer("127.0.0.1", 10, None)));
        assert_eq!(lock(&inner.peers).len(), 2);
        assert_eq!(p.lanes_to("127.0.0.1", 9), 0);
    }
}
