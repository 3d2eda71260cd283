//! # mc-glommio: the glommio (io_uring) runtime adapter
//!
//! Thread-per-core, like `mc-mio`: each worker thread owns one glommio `LocalExecutor`
//! (pinned to one CPU while there are no more workers than allowed CPUs, unpinned
//! otherwise), its own `SO_REUSEPORT` listener(s) and its connections; nothing is shared
//! between workers except the `Arc<Master>` of the core. Each connection is one task:
//!
//! ```text
//! readable  -> TcpStream::poll_read -> Connection::handle_input / handle_eof
//! writable  -> Connection::poll_transmit_vectored -> sendmsg / TcpStream::poll_write -> Connection::consume
//! deadline  -> glommio Timer -> Connection::handle_timeout (timer task: Master::handle_timeout)
//! waker     -> Master::is_shutting_down -> Connection::handle_shutdown
//! ```
//!
//! The RPC listener (`--rpc-port`) is served by the same task body driving
//! `mc_core::rpc::RpcConnection` (both connection types are reached through the private
//! `Core` trait).
//!
//! What it does: moves bytes and time between sockets and `mc_core`, half-closes and
//! drains a finished connection for [`LINGER`] (as `mc-mio` does), runs
//! `Master::handle_timeout` from a per-worker timer task, and exits a worker once shutdown
//! was announced and no connection is left in the process. What it does not do: every
//! HTTP and RPC decision (parsing, routing, framing, keep-alive, timeouts, backpressure,
//! `Connection: close` on shutdown) is made by `mc_core`; the adapter only asks
//! `wants_read`, `poll_transmit_vectored`, `poll_timeout` and `is_closed`. The core's
//! connection is owned by its task and the services sit in `RefCell`s on the worker,
//! borrowed only between awaits.
//!
//! Timers: a connection's task polls, in one `poll_fn`, its socket (write, then read) and a
//! glommio `Timer` armed at `Connection::poll_timeout` (or at the end of the linger), so a
//! deadline fires while a read or a write is pending. The master timer task sleeps until
//! `Master::poll_timeout`; connection tasks wake it when a request moved that deadline
//! earlier (the mio loop re-reads it after every event).
//!
//! Shutdown (SPEC §2.7), as in `mc-mio`: [`Waker::wake_all`] writes a byte to one socket
//! pair per worker; the worker's wake task then (if `Master::is_shutting_down`) delivers
//! `handle_shutdown` once to every connection open at that moment, except HTTP connections
//! accepted after the shutdown began (they are not idle at the signal; the core closes them
//! after one response). The RPC listener closes at once. The HTTP listeners stay open, on
//! every worker, until no HTTP connection is open in the whole process
//! (`Master::connections_open`) and the worker has no RPC connection, rechecked every
//! [`SHUTDOWN_RECHECK`]; then the worker closes its listeners, stops its tasks and returns
//! from the executor.
//!
//! IO path: glommio 0.9's `TcpStream` first tries a non-blocking `recv`/`send` on the
//! caller's buffer and, when that would block, waits for readiness with an io_uring
//! `POLL_ADD`; accepts that would block, timers and wake-ups also go through the rings.
//! `TcpStream::poll_write` takes one slice, though (glommio has no vectored write), and a
//! response is usually two (head, then a body served from segment memory, a `/metrics`
//! page or a `/get_all_keys` chunk), pipelined responses more. So when the core returns
//! more than one slice, the adapter first sends up to `MAX_IOV` of them with one
//! non-blocking `sendmsg` on the stream's descriptor (as `mc-mio`'s `writev`); only when
//! that would block does it fall back to `poll_write` with the first slice, which retries
//! the send and otherwise registers the readiness wait with glommio, so the task is woken
//! when the socket drains. A single slice goes to `poll_write` directly. Either way the
//! bytes go out straight from the slices the core returns, without a user-space copy; see
//! `ZERO_COPY.md`. Reads complete inside a poll, so one read buffer per worker suffices,
//! as in `mc-mio`.
//!
//! Start-up: [`start`] probes io_uring (a throw-away ring and the opcodes glommio needs:
//! glommio itself panics or exits the process when they are missing), then builds every
//! executor on its thread and waits for all of them before returning. A kernel without
//! io_uring, a seccomp filter, or a `RLIMIT_MEMLOCK` too low for the rings and registered
//! buffers (about 240 KiB per worker, see `IO_MEMORY`) is thus reported by `start`, and
//! the binary exits 1, before anything is served.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io::{self, ErrorKind, IoSlice, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Waker as TaskWaker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite};
use glommio::net::{TcpListener, TcpStream, UnixStream};
use glommio::timer::Timer;
use glommio::{GlommioError, LocalExecutor, LocalExecutorBuilder, Placement, Task};
use mc_core::api::{Listener, StreamState};
use mc_core::http::Connection;
use mc_core::rpc::{RpcConnection, RpcService};
use mc_core::{Master, Now, Service};

/// How long a closing connection keeps draining unread input so the peer sees our last
/// response instead of a reset (same as `mc-mio`).
pub const LINGER: Duration = Duration::from_millis(500);
/// Registered io memory per executor: glommio's floor. It only serves DMA file IO and
/// socket `peek`, neither of which this adapter uses, but glommio registers it with each
/// of its three rings and the kernel charges every registration to the user's
/// `RLIMIT_MEMLOCK` (3 × 64 KiB), unless the process has `CAP_IPC_LOCK`.
const IO_MEMORY: usize = 64 * 1024;
/// Submission ring depth (glommio's default). glommio does not cap requests in flight at
/// the ring size (it queues and batches submissions), so this bounds no connection count.
/// Recent kernels (seen on 6.18) also charge ring memory to `RLIMIT_MEMLOCK`: about
/// 16 KiB per ring at this depth (inferred from the measured total below).
const RING_DEPTH: usize = 128;
/// What one worker costs in locked memory, as measured on Linux 6.18 (3 × 64 KiB buffers
/// plus the rings): 16 workers need about 3.8 MiB of the usual 8 MiB `ulimit -l`; about
/// 34 fit. Only used to explain an `ENOMEM` at start-up.
const PER_WORKER_MEMLOCK: usize = 240 * 1024;
const READ_BUF: usize = 64 * 1024;
/// Most slices sent by one `sendmsg` (as `mc-mio`'s `writev`).
const MAX_IOV: usize = 16;
/// While shutting down, how often a worker rechecks whether the process may exit.
pub const SHUTDOWN_RECHECK: Duration = Duration::from_millis(20);
/// Pause after a failed accept (e.g. `EMFILE`), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The io_uring opcodes glommio 0.9 checks at its first ring (it exits the process when
/// one is missing): NOP … FSYNC, READ/WRITE_FIXED, POLL_ADD/REMOVE, SENDMSG, RECVMSG,
/// TIMEOUT(_REMOVE), ACCEPT, LINK_TIMEOUT, CONNECT, FALLOCATE, OPENAT, CLOSE, STATX,
/// READ, WRITE, SEND, RECV (Linux 5.8).
const URING_OPS: [u8; 23] = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 15, 16, 17, 18, 19, 21, 22, 23, 26, 27];

/// The listeners of one worker thread.
pub struct WorkerSockets {
    /// Main listener (every endpoint).
    pub main: std::net::TcpListener,
    /// Admin listener (`--admin-port`), if any.
    pub admin: Option<std::net::TcpListener>,
    /// Master RPC listener (`--rpc-port`), if any.
    pub rpc: Option<std::net::TcpListener>,
}

/// Wakes every worker (used to announce shutdown). One socket pair per worker: the
/// worker awaits a byte on its end through io_uring.
#[derive(Clone)]
pub struct Waker(Arc<Vec<StdUnixStream>>);

impl Waker {
    /// Wakes all workers so they observe `Master::is_shutting_down`.
    pub fn wake_all(&self) {
        for s in self.0.iter() {
            // Non-blocking: a full buffer already holds a pending wake-up.
            let _ = (&*s).write(&[1]);
        }
    }
}

/// The running worker threads.
pub struct Runtime {
    threads: Vec<JoinHandle<()>>,
    waker: Waker,
}

impl Runtime {
    /// A handle that wakes every worker.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }
    /// Waits until every worker has exited (after shutdown, once its connections are closed).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Knobs of the glommio runtime.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// While a worker is busy, yield its CPU to the OS scheduler (`sched_yield`) after a
    /// connection event once this long has passed since the last yield; `None`: never.
    /// The reason is `mc-mio`'s (its `Options::yield_between_turns`): a worker that always
    /// has work never blocks, so clients sharing its cores wait for the end of its time
    /// slice to read their responses. glommio has no loop turn the adapter sees, hence a
    /// time interval. With wrk on the same 2 cores, /health went from 130k to 165k req/s
    /// and its p99 from 3.1 to 0.8 ms (docs/benchmarks.md).
    pub yield_every: Option<Duration>,
}

/// The default interval of [`Options::yield_every`].
pub const YIELD_EVERY: Duration = Duration::from_micros(100);

impl Default for Options {
    fn default() -> Self {
        Self { yield_every: Some(YIELD_EVERY) }
    }
}

/// [`start_with`] the default [`Options`].
pub fn start(master: Arc<Master>, sockets: Vec<WorkerSockets>) -> io::Result<Runtime> {
    start_with(master, sockets, Options::default())
}

/// Starts one worker thread (one executor) per entry of `sockets`. Returns once every
/// executor is built; if io_uring is unusable or any executor fails, no worker runs and
/// the error names the cause.
pub fn start_with(master: Arc<Master>, sockets: Vec<WorkerSockets>, opts: Options) -> io::Result<Runtime> {
    probe_io_uring()?;
    let cpus = allowed_cpus();
    let pin = sockets.len() <= cpus.len();
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    let (mut threads, mut wakers, mut gos) = (Vec::new(), Vec::new(), Vec::new());
    for (i, socks) in sockets.into_iter().enumerate() {
        let (wake_tx, wake_rx) = StdUnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wakers.push(wake_tx);
        let (go_tx, go_rx) = mpsc::channel::<bool>();
        gos.push(go_tx);
        let placement = if pin { Placement::Fixed(cpus[i]) } else { Placement::Unbound };
        let (master, ready_tx) = (master.clone(), ready_tx.clone());
        let t = std::thread::Builder::new().name(format!("mc-glommio-{i}")).spawn(move || {
            let made = std::panic::catch_unwind(|| build_executor(i, placement))
                .unwrap_or_else(|_| Err(io::Error::other("glommio panicked while creating the executor")));
            let (ex, ok) = match made {
                Ok(ex) => (Some(ex), Ok(())),
                Err(e) => (None, Err(e)),
            };
            let _ = ready_tx.send(ok);
            if let (Some(ex), Ok(true)) = (ex, go_rx.recv()) {
                ex.run(run_worker(master, socks, wake_rx, opts));
            }
        })?;
        threads.push(t);
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..threads.len() {
        let r = ready_rx.recv().unwrap_or_else(|_| Err(io::Error::other("a worker thread died")));
        failure = failure.or(r.err());
    }
    for go in gos {
        let _ = go.send(failure.is_none());
    }
    if let Some(e) = failure {
        for t in threads {
            let _ = t.join();
        }
        return Err(e);
    }
    let waker = Waker(Arc::new(wakers));
    Ok(Runtime { threads, waker })
}

/// Whether this machine can run the glommio runtime: io_uring with the opcodes glommio
/// needs, and enough locked memory for one executor (one is built, on a scratch thread,
/// and dropped). The end-to-end tests use it to pick their default runtimes.
pub fn probe() -> io::Result<()> {
    probe_io_uring()?;
    let panicked = || io::Error::other("glommio panicked while creating the executor");
    std::thread::spawn(move || {
        std::panic::catch_unwind(|| build_executor(0, Placement::Unbound).map(drop)).unwrap_or_else(|_| Err(panicked()))
    })
    .join()
    .unwrap_or_else(|_| Err(panicked()))
}

fn build_executor(i: usize, placement: Placement) -> io::Result<LocalExecutor> {
    let make = |p: Placement| {
        LocalExecutorBuilder::new(p).name(&format!("mc-glommio-{i}")).io_memory(IO_MEMORY).ring_depth(RING_DEPTH).make()
    };
    let pinned = matches!(placement, Placement::Fixed(_));
    match make(placement) {
        Err(e) if pinned => {
            log::debug!("worker {i}: cannot pin ({e}); running unpinned");
            make(Placement::Unbound)
        }
        r => r,
    }
    .map_err(|e| match e {
        GlommioError::IoError(e) => explain(e),
        e => io::Error::other(e.to_string()),
    })
}

/// The soft `RLIMIT_MEMLOCK` in KiB, as text.
fn memlock_limit() -> String {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct.
    match unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } {
        0 if lim.rlim_cur == libc::RLIM_INFINITY => "unlimited".to_string(),
        0 => format!("{} KiB", lim.rlim_cur / 1024),
        _ => "unknown".to_string(),
    }
}

/// Adds the likely cause to an out-of-memory error: io_uring charges its rings and
/// registered buffers to `RLIMIT_MEMLOCK`. (glommio reports a limit under its 512 KiB
/// minimum as an opaque `MemLockLimit(..)`; say it plainly.)
fn explain(e: io::Error) -> io::Error {
    let hint = format!(
        "io_uring memory is charged to RLIMIT_MEMLOCK (now {}, shared by all processes of \
         the user): glommio needs at least 512 KiB and about {} KiB per worker; raise \
         `ulimit -l` or lower --threads",
        memlock_limit(),
        PER_WORKER_MEMLOCK / 1024
    );
    match e.raw_os_error() {
        Some(libc::ENOMEM) => io::Error::new(e.kind(), format!("{e}: {hint}")),
        None if e.to_string().starts_with("MemLockLimit") => io::Error::other(hint),
        _ => e,
    }
}

/// Checks that io_uring can be set up and offers the opcodes glommio needs, with a
/// throw-away ring: glommio itself panics or exits the process in these cases.
fn probe_io_uring() -> io::Result<()> {
    let unavailable = |e: io::Error| io::Error::new(e.kind(), format!("io_uring is unavailable: {e}"));
    // struct io_uring_params is 120 bytes; all zero but the entry count, which is an argument.
    let mut params = [0u32; 30];
    // SAFETY: plain syscalls on a buffer of the size the kernel expects.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(unavailable(explain(io::Error::last_os_error())));
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let ring = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // struct io_uring_probe: 16-byte header, then 256 entries of 8 bytes
    // (u8 op, u8 resv, u16 flags, u32 resv2); flags bit 0 = IO_URING_OP_SUPPORTED.
    const REGISTER_PROBE: u32 = 8;
    let mut probe = vec![0u8; 16 + 256 * 8];
    // SAFETY: as above; the buffer holds the 256 entries announced.
    let r = unsafe {
        libc::syscall(libc::SYS_io_uring_register, ring.as_raw_fd(), REGISTER_PROBE, probe.as_mut_ptr(), 256u32)
    };
    if r < 0 {
        return Err(unavailable(io::Error::other(format!(
            "cannot probe opcodes ({}); Linux 5.8 or later is needed",
            io::Error::last_os_error()
        ))));
    }
    let supported = |op: u8| {
        let e = 16 + 8 * op as usize;
        u16::from_ne_bytes([probe[e + 2], probe[e + 3]]) & 1 == 1
    };
    match URING_OPS.iter().find(|&&op| !supported(op)) {
        Some(op) => {
            Err(unavailable(io::Error::other(format!("the kernel lacks opcode {op}; Linux 5.8 or later is needed"))))
        }
        None => Ok(()),
    }
}

/// The CPUs this process may run on (empty if unknown).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

fn now() -> Now {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Now::new(Instant::now(), wall)
}

/// What a connection task needs of a core connection. `http::Connection` and
/// `rpc::RpcConnection` have the same shape (bytes in, bytes out, a deadline, shutdown),
/// so one task body serves both.
trait Core {
    type Svc;
    /// The pending output as up to `bufs.len()` slices; how many were filled.
    fn poll_transmit_vectored<'a>(&'a self, bufs: &mut [IoSlice<'a>]) -> usize;
    fn consume(&mut self, now: Now, n: usize, svc: &mut Self::Svc);
    fn handle_input(&mut self, now: Now, data: &[u8], svc: &mut Self::Svc);
    fn handle_eof(&mut self, now: Now, svc: &mut Self::Svc);
    fn handle_timeout(&mut self, now: Now, svc: &mut Self::Svc);
    fn handle_shutdown(&mut self, now: Now, svc: &mut Self::Svc);
    fn poll_timeout(&self) -> Option<Instant>;
    fn wants_read(&self) -> bool;
    fn is_closed(&self) -> bool;
}

/// Forwards [`Core`] to the inherent methods of `$ty`; `$shutdown` calls its
/// `handle_shutdown`, `$transmit` fills the slices `$b` from `$t`.
macro_rules! forward_core {
    ($ty:ty, $svc:ty, |$c:ident, $now:ident, $s:ident| $shutdown:expr, |$t:ident, $b:ident| $transmit:expr) => {
        impl Core for $ty {
            type Svc = $svc;
            fn poll_transmit_vectored<'a>(&'a self, $b: &mut [IoSlice<'a>]) -> usize {
                // `$t` is `&$ty`, so `$transmit` reaches the inherent `&self` method.
                let $t = self;
                $transmit
            }
            fn consume(&mut self, now: Now, n: usize, svc: &mut $svc) {
                <$ty>::consume(self, now, n, svc)
            }
            fn handle_input(&mut self, now: Now, data: &[u8], svc: &mut $svc) {
                <$ty>::handle_input(self, now, data, svc)
            }
            fn handle_eof(&mut self, now: Now, svc: &mut $svc) {
                <$ty>::handle_eof(self, now, svc)
            }
            fn handle_timeout(&mut self, now: Now, svc: &mut $svc) {
                <$ty>::handle_timeout(self, now, svc)
            }
            fn handle_shutdown(&mut self, $now: Now, $s: &mut $svc) {
                let $c = self;
                $shutdown
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$ty>::poll_timeout(self)
            }
            fn wants_read(&self) -> bool {
                <$ty>::wants_read(self)
            }
            fn is_closed(&self) -> bool {
                <$ty>::is_closed(self)
            }
        }
    };
}

forward_core!(Connection<StreamState>, Service, |c, now, svc| c.handle_shutdown(now, svc), |c, bufs| {
    c.poll_transmit_vectored(bufs)
});
forward_core!(RpcConnection, RpcService, |c, now, _svc| c.handle_shutdown(now), |c, bufs| {
    one_slice(c.poll_transmit(), bufs)
});

/// `out` as the first of `bufs` (the RPC connection keeps its output in one buffer).
fn one_slice<'a>(out: Option<&'a [u8]>, bufs: &mut [IoSlice<'a>]) -> usize {
    match (out, bufs.first_mut()) {
        (Some(out), Some(b)) => {
            *b = IoSlice::new(out);
            1
        }
        _ => 0,
    }
}

/// One non-blocking `sendmsg` of `bufs`; `None` if it would block.
fn try_sendmsg(fd: RawFd, bufs: &[IoSlice<'_>]) -> Option<io::Result<usize>> {
    // SAFETY: msghdr is plain data; all zero is an empty message with no address.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix (documented by std); sendmsg only
    // reads the slices, which outlive the call.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    // SAFETY: `msg` points at `bufs.len()` valid iovecs and no address or control data.
    let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if r >= 0 {
        return Some(Ok(r as usize));
    }
    match io::Error::last_os_error() {
        e if e.kind() == ErrorKind::WouldBlock => None,
        e => Some(Err(e)),
    }
}

/// Which listener a socket came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http(Listener),
    Rpc,
}

/// A connection as the worker sees it: how to wake its task, and whether a shutdown is
/// waiting to be delivered to it.
#[derive(Default)]
struct Slot {
    waker: Option<TaskWaker>,
    shutdown: bool,
    /// An HTTP connection accepted after shutdown began: not an "idle connection at the
    /// signal" (SPEC §2.7), so it gets no `handle_shutdown` (the core closes it after its
    /// first response).
    late: bool,
}

/// Per-worker state, shared by the worker's tasks (never across threads).
struct Worker {
    master: Arc<Master>,
    main_svc: Rc<RefCell<Service>>,
    admin_svc: Rc<RefCell<Service>>,
    rpc_svc: Rc<RefCell<RpcService>>,
    /// Open connections (HTTP and RPC), by id.
    conns: RefCell<HashMap<u64, Slot>>,
    next_id: Cell<u64>,
    /// When this worker last yielded its CPU to the OS scheduler (see `os_yield_if_due`).
    last_os_yield: Cell<Instant>,
    /// [`Options::yield_every`] of this runtime.
    os_yield_every: Option<Duration>,
    buf: RefCell<Vec<u8>>,
    shutdown_seen: Cell<bool>,
    /// The worker's main future, waiting for shutdown.
    exit: Cell<Option<TaskWaker>>,
    /// The master timer task and the deadline it sleeps until.
    master_timer: Cell<Option<TaskWaker>>,
    master_armed: Cell<Option<Instant>>,
}

impl Worker {
    /// Resolves once this worker saw the shutdown.
    async fn shutdown_seen(&self) {
        poll_fn(|cx| {
            if self.shutdown_seen.get() {
                return Poll::Ready(());
            }
            self.exit.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// No connection of this worker, and no HTTP connection of any worker, is open.
    fn process_idle(&self) -> bool {
        self.conns.borrow().is_empty() && self.master.connections_open.load(Ordering::Relaxed) <= 0
    }

    /// Called after every connection event: a request may have moved the process-wide
    /// deadline earlier than the one the timer task sleeps until.
    /// See [`Options::yield_every`].
    fn os_yield_if_due(&self) {
        let Some(every) = self.os_yield_every else { return };
        let now = Instant::now();
        if now.duration_since(self.last_os_yield.get()) >= every {
            std::thread::yield_now();
            self.last_os_yield.set(Instant::now());
        }
    }

    fn check_master_deadline(&self) {
        if let Some(at) = self.master.poll_timeout() {
            let earlier = match self.master_armed.get() {
                Some(armed) => at < armed,
                None => true,
            };
            if earlier {
                if let Some(w) = self.master_timer.take() {
                    w.wake();
                }
            }
        }
    }
}

async fn run_worker(master: Arc<Master>, socks: WorkerSockets, wake: StdUnixStream, opts: Options) {
    let stats = master.register_worker();
    let w = Rc::new(Worker {
        main_svc: Rc::new(RefCell::new(master.service(Listener::Main, stats.clone()))),
        admin_svc: Rc::new(RefCell::new(master.service(Listener::Admin, stats.clone()))),
        rpc_svc: Rc::new(RefCell::new(RpcService::new(master.clone(), stats))),
        master,
        conns: RefCell::default(),
        next_id: Cell::new(0),
        last_os_yield: Cell::new(Instant::now()),
        os_yield_every: opts.yield_every,
        buf: RefCell::new(vec![0u8; READ_BUF]),
        shutdown_seen: Cell::new(false),
        exit: Cell::new(None),
        master_timer: Cell::new(None),
        master_armed: Cell::new(None),
    });
    // SAFETY: each descriptor comes from an owned std socket given up here.
    let listener = |l: std::net::TcpListener| unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) };
    let wake = unsafe { UnixStream::from_raw_fd(wake.into_raw_fd()) };
    let mut tasks: Vec<Task<()>> = vec![
        glommio::spawn_local(accept_loop(w.clone(), listener(socks.main), Kind::Http(Listener::Main))),
        glommio::spawn_local(master_timer(w.clone())),
        glommio::spawn_local(on_wake(w.clone(), wake)),
    ];
    if let Some(a) = socks.admin {
        tasks.push(glommio::spawn_local(accept_loop(w.clone(), listener(a), Kind::Http(Listener::Admin))));
    }
    let rpc = socks.rpc.map(|r| glommio::spawn_local(accept_loop(w.clone(), listener(r), Kind::Rpc)));
    w.shutdown_seen().await;
    // The RPC listener closes at once (as in `mc-mio`); the HTTP listeners stay open until
    // no connection is open in the whole process (SPEC §2.7): an idle worker keeps
    // accepting while another one drains.
    if let Some(t) = rpc {
        t.cancel().await;
    }
    while !w.process_idle() {
        glommio::timer::sleep(SHUTDOWN_RECHECK).await;
    }
    // Close the listeners and stop the timer and wake tasks; then wait for a connection
    // accepted meanwhile, if any.
    for t in tasks {
        t.cancel().await;
    }
    while !w.conns.borrow().is_empty() {
        glommio::timer::sleep(SHUTDOWN_RECHECK).await;
    }
}

async fn accept_loop(w: Rc<Worker>, listener: TcpListener, kind: Kind) {
    loop {
        match listener.accept().await {
            Ok(sock) => {
                let _ = sock.set_nodelay(true);
                let id = w.next_id.get();
                w.next_id.set(id + 1);
                let http = kind != Kind::Rpc;
                // An RPC connection accepted while its listener is closing is shut down too.
                let slot = Slot {
                    shutdown: !http && w.shutdown_seen.get(),
                    late: http && w.master.is_shutting_down(),
                    waker: None,
                };
                w.conns.borrow_mut().insert(id, slot);
                let task = match kind {
                    Kind::Http(l) => {
                        let svc = if l == Listener::Main { w.main_svc.clone() } else { w.admin_svc.clone() };
                        let core = svc.borrow().new_connection(now());
                        glommio::spawn_local(serve(w.clone(), id, sock, core, svc))
                    }
                    Kind::Rpc => {
                        let core = w.rpc_svc.borrow().new_connection(now());
                        glommio::spawn_local(serve(w.clone(), id, sock, core, w.rpc_svc.clone()))
                    }
                };
                task.detach();
            }
            Err(e) => {
                log::warn!("accept failed: {e}");
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Announces shutdown to this worker's connections when the binary wakes us.
async fn on_wake(w: Rc<Worker>, mut wake: UnixStream) {
    let mut b = [0u8; 64];
    while let Ok(1..) = wake.read(&mut b).await {
        if w.master.is_shutting_down() && !w.shutdown_seen.replace(true) {
            for slot in w.conns.borrow_mut().values_mut().filter(|s| !s.late) {
                slot.shutdown = true;
                if let Some(k) = slot.waker.take() {
                    k.wake();
                }
            }
            if let Some(k) = w.exit.take() {
                k.wake();
            }
        }
    }
}

/// Runs `Master::handle_timeout` whenever `Master::poll_timeout` is due.
async fn master_timer(w: Rc<Worker>) {
    let mut deadline = Deadline::default();
    loop {
        poll_fn(|cx| {
            let at = w.master.poll_timeout();
            w.master_armed.set(at);
            w.master_timer.set(Some(cx.waker().clone()));
            deadline.poll(cx, at)
        })
        .await;
        w.master.handle_timeout(now());
    }
}

/// One glommio timer, re-armed when the wanted deadline changes.
#[derive(Default)]
struct Deadline {
    at: Option<Instant>,
    timer: Option<Timer>,
}

impl Deadline {
    /// Ready once `at` has passed; otherwise the task is woken at `at`.
    fn poll(&mut self, cx: &mut Context<'_>, at: Option<Instant>) -> Poll<()> {
        let now = Instant::now();
        match at {
            Some(at) if at > now => {
                if self.at != Some(at) {
                    self.at = Some(at);
                    self.timer = Some(Timer::new(at - now));
                }
                let timer = self.timer.as_mut().expect("armed");
                Pin::new(timer).poll(cx).map(|_| ())
            }
            due => {
                (self.at, self.timer) = (None, None);
                if due.is_some() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

enum Event {
    Shutdown,
    Wrote(usize),
    Read(usize),
    Timeout,
    Retry,
    Close,
}

struct Conn<C: Core> {
    id: u64,
    sock: TcpStream,
    core: C,
    svc: Rc<RefCell<C::Svc>>,
    read_closed: bool,
    /// Set once the core is done: we half-closed and drain input until this instant.
    linger_until: Option<Instant>,
    deadline: Deadline,
}

impl<C: Core> Conn<C> {
    /// The next thing to do, in `mc-mio`'s order: deliver a shutdown, write pending
    /// output, read (if the core wants input, or to drain while lingering), fire a deadline.
    fn poll_event(&mut self, cx: &mut Context<'_>, w: &Worker) -> Poll<Event> {
        if let Some(slot) = w.conns.borrow_mut().get_mut(&self.id) {
            if std::mem::take(&mut slot.shutdown) {
                return Poll::Ready(Event::Shutdown);
            }
            if !slot.waker.as_ref().is_some_and(|k| k.will_wake(cx.waker())) {
                slot.waker = Some(cx.waker().clone());
            }
        }
        let io_event = |r: io::Result<usize>, wrote: bool| match r {
            Ok(0) if wrote => Event::Close,
            Ok(n) if wrote => Event::Wrote(n),
            Ok(n) => Event::Read(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => Event::Retry,
            Err(_) => Event::Close,
        };
        if self.linger_until.is_none() {
            let mut bufs = [IoSlice::new(&[]); MAX_IOV];
            let n = self.core.poll_transmit_vectored(&mut bufs);
            // Several slices (head and body, pipelined responses): one sendmsg. When it
            // would block, poll_write of the first slice registers the wait for writability.
            if n > 1 {
                if let Some(r) = try_sendmsg(self.sock.as_raw_fd(), &bufs[..n]) {
                    return Poll::Ready(io_event(r, true));
                }
            }
            if n > 0 {
                if let Poll::Ready(r) = Pin::new(&mut self.sock).poll_write(cx, &bufs[0]) {
                    return Poll::Ready(io_event(r, true));
                }
            }
        }
        if self.linger_until.is_some() || (!self.read_closed && self.core.wants_read()) {
            let mut buf = w.buf.borrow_mut();
            if let Poll::Ready(r) = Pin::new(&mut self.sock).poll_read(cx, &mut buf) {
                return Poll::Ready(io_event(r, false));
            }
        }
        let at = self.linger_until.or_else(|| self.core.poll_timeout());
        self.deadline.poll(cx, at).map(|()| Event::Timeout)
    }

    /// Feeds `event` to the core. False once the socket is to be closed.
    fn handle(&mut self, event: Event, w: &Worker) -> bool {
        let now = now();
        let svc = &mut *self.svc.borrow_mut();
        match event {
            Event::Shutdown => self.core.handle_shutdown(now, svc),
            Event::Wrote(n) => self.core.consume(now, n, svc),
            // Lingering: drop input until EOF or the deadline.
            Event::Read(0) | Event::Timeout if self.linger_until.is_some() => return false,
            Event::Read(_) if self.linger_until.is_some() => {}
            Event::Read(0) => {
                self.read_closed = true;
                self.core.handle_eof(now, svc);
            }
            Event::Read(n) => self.core.handle_input(now, &w.buf.borrow()[..n], svc),
            Event::Timeout => self.core.handle_timeout(now, svc),
            Event::Retry => {}
            Event::Close => return false,
        }
        true
    }
}

async fn serve<C: Core>(w: Rc<Worker>, id: u64, sock: TcpStream, core: C, svc: Rc<RefCell<C::Svc>>) {
    let mut c = Conn { id, sock, core, svc, read_closed: false, linger_until: None, deadline: Deadline::default() };
    loop {
        if c.linger_until.is_none() && c.core.is_closed() {
            let _ = c.sock.shutdown(Shutdown::Write).await;
            if c.read_closed {
                break;
            }
            c.linger_until = Some(Instant::now() + LINGER);
        }
        let event = poll_fn(|cx| c.poll_event(cx, &w)).await;
        if !c.handle(event, &w) {
            break;
        }
        w.check_master_deadline();
        w.os_yield_if_due();
        glommio::yield_if_needed().await;
    }
    drop(c);
    w.conns.borrow_mut().remove(&id);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `try_sendmsg` sends all slices in order, and reports a full socket as `None`.
    #[test]
    fn sendmsg_sends_every_slice() {
        use std::io::Read;
        let (a, mut b) = StdUnixStream::pair().expect("pair");
        let bufs = [IoSlice::new(b"head "), IoSlice::new(b""), IoSlice::new(b"body")];
        assert_eq!(try_sendmsg(a.as_raw_fd(), &bufs).expect("sent").expect("ok"), 9);
        let mut got = [0u8; 9];
        b.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"head body");
        let chunk = vec![0u8; 64 * 1024];
        let full = (0..1024).find_map(|_| try_sendmsg(a.as_raw_fd(), &[IoSlice::new(&chunk)]).is_none().then_some(()));
        assert!(full.is_some(), "the socket never filled");
    }

    /// A deadline fires while a read is pending, and not before.
    #[test]
    fn deadline_races_a_pending_read() {
        if let Err(e) = probe_io_uring() {
            eprintln!("skipped: {e}");
            return;
        }
        let ex = build_executor(0, Placement::Unbound).expect("executor");
        ex.run(async {
            let (_peer, sock) = UnixStream::pair().expect("pair");
            let mut sock = sock;
            let mut deadline = Deadline::default();
            let mut buf = [0u8; 16];
            let start = Instant::now();
            let at = Some(start + Duration::from_millis(50));
            let fired = poll_fn(|cx| {
                if let Poll::Ready(r) = Pin::new(&mut sock).poll_read(cx, &mut buf) {
                    return Poll::Ready(Err(r));
                }
                deadline.poll(cx, at).map(Ok)
            })
            .await;
            assert!(fired.is_ok(), "the read completed instead of the deadline");
            let waited = start.elapsed();
            assert!(waited >= Duration::from_millis(50) && waited < Duration::from_secs(2), "{waited:?}");
        });
    }
}
