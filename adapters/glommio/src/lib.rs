//! # mc-glommio: the glommio (io_uring) runtime adapter
//!
//! Thread-per-core, like `mc-mio`: each worker thread owns one glommio `LocalExecutor`
//! (pinned to one CPU while there are no more workers than allowed CPUs, unpinned
//! otherwise), its own `SO_REUSEPORT` listeners and its connections; nothing is shared
//! between workers except the `Arc<Master>` of the core. Every connection, whatever its
//! protocol, is one task driving a socket plus a core [`Link`] (made by the listener's
//! [`Acceptor`]):
//!
//! ```text
//! readable  -> TcpStream::poll_read -> Link::handle_input / handle_eof
//! writable  -> Link::poll_transmit -> sendmsg / TcpStream::poll_write -> Link::consume
//! finished  -> Link::poll_half_close -> shutdown(Write); Link::is_done -> drop the socket
//! deadline  -> glommio Timer at Link::poll_timeout -> Link::handle_timeout
//! waker     -> Lifecycle::is_shutting_down -> Link::handle_shutdown, stop `Close` listeners
//! ```
//!
//! Every protocol decision (parsing, routing, framing, keep-alive, timeouts, backpressure,
//! linger, which connection hears about the shutdown, when the process may exit) is made
//! by `mc_core`. The services live inside the sessions, so a task borrows nothing shared
//! across an await.
//!
//! Timers: a connection's task polls, in one `poll_fn`, its socket (write, then read) and a
//! glommio `Timer` armed at `Link::poll_timeout`, so a deadline fires while a read or a
//! write is pending. The master timer task sleeps until `Master::poll_timeout`; connection
//! tasks wake it when a request moved that deadline earlier.
//!
//! Shutdown (SPEC §2.7): [`Runtime`]'s `wake_all` writes a byte to one socket pair per
//! worker; the worker's wake task then delivers `handle_shutdown` to every link and stops
//! the accept tasks of listeners that close at shutdown. The worker exits once
//! `Lifecycle::may_exit`, rechecked every `SHUTDOWN_RECHECK`.
//!
//! IO path: glommio 0.9's `TcpStream` first tries a non-blocking `recv`/`send` on the
//! caller's buffer and, when that would block, waits for readiness with an io_uring
//! `POLL_ADD`. `TcpStream::poll_write` takes one slice, and a response is usually two
//! (head, then a body served from segment memory), so when the core returns more than one
//! slice the adapter first sends them with one non-blocking `sendmsg` (socket2's
//! `send_vectored_with_flags`); only when that would block does it fall back to
//! `poll_write` with the first slice, which registers the readiness wait. Bytes go out
//! straight from the slices the core returns; see `ZERO_COPY.md`.
//!
//! Start-up: [`start`] probes io_uring with the `io-uring` crate (a throw-away ring and the
//! opcodes glommio needs: glommio itself panics or exits the process when they are
//! missing), then builds every executor on its thread and waits for all of them before
//! returning. A kernel without io_uring, a seccomp filter, or a `RLIMIT_MEMLOCK` too low for
//! the rings and registered buffers (about 240 KiB per worker, see `IO_MEMORY`) is thus
//! reported by `start`, and the binary exits 1, before anything is served.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io::{self, ErrorKind, IoSlice, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker as TaskWaker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite};
use glommio::net::{TcpListener, TcpStream, UnixStream};
use glommio::timer::Timer;
use glommio::{GlommioError, LocalExecutor, LocalExecutorBuilder, Placement, Task};
use mc_core::session::SHUTDOWN_RECHECK;
use mc_core::transfer::TransferOutcome;
use mc_core::{Acceptor, Link, ListenerAtShutdown, Master, Now, WorkerListeners};

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
/// Pause after a failed accept (e.g. `EMFILE`), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The io_uring opcodes glommio 0.9 checks at its first ring (it exits the process when
/// one is missing): NOP … FSYNC, READ/WRITE_FIXED, POLL_ADD/REMOVE, SENDMSG, RECVMSG,
/// TIMEOUT(_REMOVE), ACCEPT, LINK_TIMEOUT, CONNECT, FALLOCATE, OPENAT, CLOSE, STATX,
/// READ, WRITE, SEND, RECV (Linux 5.8).
const URING_OPS: [u8; 23] = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 15, 16, 17, 18, 19, 21, 22, 23, 26, 27];

/// The running worker threads. One socket pair per worker: the worker awaits a byte on its
/// end through io_uring.
pub struct Runtime {
    threads: Vec<JoinHandle<()>>,
    wakers: Arc<Vec<StdUnixStream>>,
}

impl mc_core::Runtime for Runtime {
    fn waker(&self) -> Arc<dyn Fn() + Send + Sync> {
        let wakers = self.wakers.clone();
        Arc::new(move || {
            for s in wakers.iter() {
                // Non-blocking: a full buffer already holds a pending wake-up.
                let _ = (&*s).write(&[1]);
            }
        })
    }
    fn join(self: Box<Self>) {
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

/// Starts one worker thread (one executor) per entry of `workers` (its listeners, each with
/// the acceptor of its protocol). Returns once every executor is built; if io_uring is
/// unusable or any executor fails, no worker runs and the error names the cause.
pub fn start(
    master: Arc<Master>,
    workers: Vec<WorkerListeners<std::net::TcpListener>>,
    opts: Options,
) -> io::Result<Runtime> {
    probe_io_uring()?;
    let cpus = allowed_cpus();
    let pin = workers.len() <= cpus.len();
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    let (mut threads, mut wakers, mut gos) = (Vec::new(), Vec::new(), Vec::new());
    for (i, listeners) in workers.into_iter().enumerate() {
        let (wake_tx, wake_rx) = StdUnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        let wake_self = Arc::new(wake_tx.try_clone()?);
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
                ex.run(run_worker(master, listeners, wake_rx, wake_self, opts));
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
    Ok(Runtime { threads, wakers: Arc::new(wakers) })
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
    let ring = io_uring::IoUring::new(4).map_err(|e| unavailable(explain(e)))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| {
        unavailable(io::Error::other(format!("cannot probe opcodes ({e}); Linux 5.8 or later is needed")))
    })?;
    match URING_OPS.iter().find(|&&op| !probe.is_supported(op)) {
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

/// One non-blocking `sendmsg` of `bufs`; `None` if it would block.
fn try_sendmsg(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> Option<io::Result<usize>> {
    match socket2::SockRef::from(&fd).send_vectored_with_flags(bufs, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => None,
        r => Some(r),
    }
}

/// A connection as the worker sees it: how to wake its task, and whether a shutdown is
/// waiting to be delivered to it.
#[derive(Default)]
struct Slot {
    waker: Option<TaskWaker>,
    shutdown: bool,
    /// Outcomes of data-plane transfers waiting to be delivered.
    transfers: Vec<(u64, TransferOutcome)>,
}

/// Outcomes of data-plane transfers, pushed by the data plane's threads: (connection id,
/// transfer id, outcome); the pusher then writes a byte to the worker's wake socket.
type Done = Arc<Mutex<Vec<(u64, u64, TransferOutcome)>>>;

/// Per-worker state, shared by the worker's tasks (never across threads).
struct Worker {
    master: Arc<Master>,
    /// Open connections, by id.
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
    done: Done,
    /// This worker's end of the binary's wake socket pair: data-plane threads write to it.
    wake_self: Arc<StdUnixStream>,
}

impl Worker {
    /// Hands the transfers connection `id` asks for to the data plane; their outcomes come
    /// back through `done` and the wake socket.
    fn start_transfers(&self, id: u64, link: &mut Link) {
        link.start_transfers(self.master.data_plane(), || {
            let (done, wake) = (self.done.clone(), self.wake_self.clone());
            move |tid, outcome| {
                let mut q = done.lock().unwrap_or_else(|e| e.into_inner());
                q.push((id, tid, outcome));
                // A queue that was not empty already has a wake pending (drained whole).
                let first = q.len() == 1;
                drop(q);
                if first {
                    let _ = (&*wake).write(&[2]);
                }
            }
        });
    }

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

    /// See [`Options::yield_every`].
    fn os_yield_if_due(&self) {
        let Some(every) = self.os_yield_every else { return };
        let now = Instant::now();
        if now.duration_since(self.last_os_yield.get()) >= every {
            std::thread::yield_now();
            self.last_os_yield.set(Instant::now());
        }
    }

    /// Called after every connection event: a request may have moved the process-wide
    /// deadline earlier than the one the timer task sleeps until.
    fn check_master_deadline(&self) {
        if let Some(at) = self.master.poll_timeout() {
            if self.master_armed.get().is_none_or(|armed| at < armed) {
                if let Some(w) = self.master_timer.take() {
                    w.wake();
                }
            }
        }
    }
}

async fn run_worker(
    master: Arc<Master>,
    listeners: WorkerListeners<std::net::TcpListener>,
    wake: StdUnixStream,
    wake_self: Arc<StdUnixStream>,
    opts: Options,
) {
    let w = Rc::new(Worker {
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
        done: Done::default(),
        wake_self,
    });
    // SAFETY: each descriptor comes from an owned std socket given up here.
    let wake = unsafe { UnixStream::from_raw_fd(wake.into_raw_fd()) };
    let mut keep: Vec<Task<()>> =
        vec![glommio::spawn_local(master_timer(w.clone())), glommio::spawn_local(on_wake(w.clone(), wake))];
    let mut close = Vec::new();
    for (l, acceptor) in listeners {
        // SAFETY: as above.
        let l = unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) };
        let at_shutdown = acceptor.on_shutdown();
        let task = glommio::spawn_local(accept_loop(w.clone(), l, acceptor));
        match at_shutdown {
            ListenerAtShutdown::KeepOpen => keep.push(task),
            ListenerAtShutdown::Close => close.push(task),
        }
    }
    w.shutdown_seen().await;
    for t in close {
        t.cancel().await;
    }
    while !w.master.lifecycle().may_exit() {
        glommio::timer::sleep(SHUTDOWN_RECHECK).await;
    }
    // Close the remaining listeners and stop the timer and wake tasks; then wait for a
    // connection accepted meanwhile, if any.
    for t in keep {
        t.cancel().await;
    }
    while !w.conns.borrow().is_empty() {
        glommio::timer::sleep(SHUTDOWN_RECHECK).await;
    }
}

async fn accept_loop(w: Rc<Worker>, listener: TcpListener, mut acceptor: Box<dyn Acceptor>) {
    loop {
        match listener.accept().await {
            Ok(sock) => {
                let _ = sock.set_nodelay(true);
                let id = w.next_id.get();
                w.next_id.set(id + 1);
                let now = now();
                let link = Link::new(now, acceptor.accept(now), w.master.lifecycle());
                w.conns.borrow_mut().insert(id, Slot::default());
                glommio::spawn_local(serve(w.clone(), id, sock, link)).detach();
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
        let done = std::mem::take(&mut *w.done.lock().unwrap_or_else(|e| e.into_inner()));
        if !done.is_empty() {
            let mut conns = w.conns.borrow_mut();
            for (id, tid, outcome) in done {
                if let Some(slot) = conns.get_mut(&id) {
                    slot.transfers.push((tid, outcome));
                    if let Some(k) = slot.waker.take() {
                        k.wake();
                    }
                }
            }
        }
        if w.master.is_shutting_down() && !w.shutdown_seen.replace(true) {
            for slot in w.conns.borrow_mut().values_mut() {
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
    Transfer(u64, TransferOutcome),
    Wrote(usize),
    Read(usize),
    /// `n` bytes were read into the session's own memory ([`Link::read_into`]).
    ReadInto(usize),
    Timeout,
    Retry,
    Close,
}

struct Conn {
    id: u64,
    sock: TcpStream,
    link: Link,
    deadline: Deadline,
}

impl Conn {
    /// The next thing to do, in `mc-mio`'s order: deliver a shutdown, write pending
    /// output, read (if the link wants input), fire a deadline.
    fn poll_event(&mut self, cx: &mut Context<'_>, w: &Worker) -> Poll<Event> {
        if let Some(slot) = w.conns.borrow_mut().get_mut(&self.id) {
            if std::mem::take(&mut slot.shutdown) {
                return Poll::Ready(Event::Shutdown);
            }
            if let Some((tid, outcome)) = slot.transfers.pop() {
                return Poll::Ready(Event::Transfer(tid, outcome));
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
        let mut bufs = [IoSlice::new(&[]); MAX_IOV];
        let n = self.link.poll_transmit(&mut bufs);
        // Several slices (head and body, pipelined responses): one sendmsg. When it would
        // block, poll_write of the first slice registers the wait for writability.
        if n > 1 {
            // SAFETY: the descriptor is the stream's own, open for the whole call.
            let fd = unsafe { BorrowedFd::borrow_raw(self.sock.as_raw_fd()) };
            if let Some(r) = try_sendmsg(fd, &bufs[..n]) {
                return Poll::Ready(io_event(r, true));
            }
        }
        if n > 0 {
            if let Poll::Ready(r) = Pin::new(&mut self.sock).poll_write(cx, &bufs[0]) {
                return Poll::Ready(io_event(r, true));
            }
        }
        if self.link.wants_read() {
            // Into the session's own memory when it offers some, else into the worker's buffer.
            if let Some(dst) = self.link.read_into() {
                if let Poll::Ready(r) = Pin::new(&mut self.sock).poll_read(cx, dst) {
                    return Poll::Ready(match io_event(r, false) {
                        Event::Read(n) => Event::ReadInto(n),
                        e => e,
                    });
                }
            } else {
                let mut buf = w.buf.borrow_mut();
                if let Poll::Ready(r) = Pin::new(&mut self.sock).poll_read(cx, &mut buf) {
                    return Poll::Ready(io_event(r, false));
                }
            }
        }
        self.deadline.poll(cx, self.link.poll_timeout()).map(|()| Event::Timeout)
    }

    /// Feeds `event` to the link. False once the socket is to be closed.
    fn handle(&mut self, event: Event, w: &Worker) -> bool {
        let now = now();
        match event {
            Event::Shutdown => self.link.handle_shutdown(now),
            Event::Transfer(id, outcome) => self.link.handle_transfer(now, id, outcome),
            Event::Wrote(n) => self.link.consume(now, n),
            Event::Read(0) | Event::ReadInto(0) => self.link.handle_eof(now),
            Event::ReadInto(n) => self.link.handle_read_into(now, n),
            Event::Read(n) => self.link.handle_input(now, &w.buf.borrow()[..n]),
            Event::Timeout => self.link.handle_timeout(now),
            Event::Retry => {}
            Event::Close => return false,
        }
        true
    }
}

async fn serve(w: Rc<Worker>, id: u64, sock: TcpStream, link: Link) {
    let mut c = Conn { id, sock, link, deadline: Deadline::default() };
    loop {
        if c.link.poll_half_close(now()) {
            let _ = c.sock.shutdown(Shutdown::Write).await;
        }
        if c.link.is_done() {
            break;
        }
        let event = poll_fn(|cx| c.poll_event(cx, &w)).await;
        if !c.handle(event, &w) {
            break;
        }
        w.start_transfers(id, &mut c.link);
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
        use std::os::fd::AsFd;
        let (a, mut b) = StdUnixStream::pair().expect("pair");
        let bufs = [IoSlice::new(b"head "), IoSlice::new(b""), IoSlice::new(b"body")];
        assert_eq!(try_sendmsg(a.as_fd(), &bufs).expect("sent").expect("ok"), 9);
        let mut got = [0u8; 9];
        b.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"head body");
        let chunk = vec![0u8; 64 * 1024];
        let full = (0..1024).find_map(|_| try_sendmsg(a.as_fd(), &[IoSlice::new(&chunk)]).is_none().then_some(()));
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
