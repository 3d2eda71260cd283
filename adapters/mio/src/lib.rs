//! # mc-mio: the mio runtime adapter
//!
//! Thread-per-core: each worker thread owns a `mio::Poll`, its own `SO_REUSEPORT`
//! listener(s) and its connections; nothing is shared between workers except the
//! `Arc<Master>` of the core. The adapter only moves bytes and time:
//!
//! ```text
//! readable  -> read() -> Connection::handle_input / handle_eof
//! writable  -> Connection::poll_transmit_vectored -> writev() -> Connection::consume
//! deadline  -> Connection::handle_timeout, Master::handle_timeout
//! waker     -> Master::is_shutting_down -> Connection::handle_shutdown
//! ```
//! Every HTTP decision is made by `mc_core`. The RPC listener (`--rpc-port`, see `rpc.rs`)
//! is driven the same way with `mc_core::rpc::RpcConnection`.

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mc_core::api::{Listener, StreamState};
use mc_core::http::Connection;
use mc_core::{Master, Now, Service};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

mod rpc;

const MAIN: Token = Token(0);
const ADMIN: Token = Token(1);
const WAKE: Token = Token(2);
const FIRST_CONN: usize = 3;
/// How long a closing connection keeps draining unread input so the peer sees our last
/// response instead of a reset.
const LINGER: Duration = Duration::from_millis(500);
/// Slices handed to one `writev`.
const MAX_IOV: usize = 16;
/// While shutting down, how often an idle worker rechecks whether the process may exit.
const SHUTDOWN_RECHECK: Duration = Duration::from_millis(20);
/// Reads (of up to 64 KiB each) one connection gets per turn. A connection that would read
/// more once its budget is spent is queued and driven again after the other ready
/// connections had their turn, so a client that pipelines without pause cannot starve the
/// other connections of its worker, nor its accepts (tests/abuse.rs). Two reads let a plain
/// request/response exchange finish in one turn (read, answer, find the socket empty).
const DRIVE_BUDGET: usize = 2;

/// The listeners of one worker thread.
pub struct WorkerSockets {
    /// Main listener (every endpoint).
    pub main: std::net::TcpListener,
    /// Admin listener (`--admin-port`), if any.
    pub admin: Option<std::net::TcpListener>,
    /// Master RPC listener (`--rpc-port`), if any.
    pub rpc: Option<std::net::TcpListener>,
}

/// Wakes every worker (used to announce shutdown).
#[derive(Clone)]
pub struct Waker(Arc<Vec<mio::Waker>>);

impl Waker {
    /// Wakes all workers so they observe `Master::is_shutting_down`.
    pub fn wake_all(&self) {
        for w in self.0.iter() {
            let _ = w.wake();
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

/// Knobs of the mio runtime.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Yield the CPU (`sched_yield`) after every loop turn that handled events. A worker
    /// that always has work never blocks, so the scheduler treats it as a CPU hog: when it
    /// shares cores with its clients (or with other workers), a client woken by a response
    /// waits for the end of the worker's time slice to read it, and requests pile up behind
    /// that. Yielding lets tasks that are behind on their fair share (clients that sleep
    /// and wake) run first; the scheduler still picks the worker again at once over any
    /// task that has had more than its share, so a CPU-bound neighbour does not starve it.
    /// On an idle core the call returns at once (one syscall per turn, not per request).
    /// With wrk on the same 2 cores, /health p99 went from 4.4 ms to 0.6–2.7 ms
    /// (docs/benchmarks.md).
    pub yield_between_turns: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { yield_between_turns: true }
    }
}

/// Starts one worker per element of `sockets` with the default [`Options`].
pub fn start(master: Arc<Master>, sockets: Vec<WorkerSockets>) -> io::Result<Runtime> {
    start_with(master, sockets, Options::default())
}

/// Starts one worker thread per entry of `sockets`.
pub fn start_with(master: Arc<Master>, sockets: Vec<WorkerSockets>, opts: Options) -> io::Result<Runtime> {
    let mut polls = Vec::new();
    let mut wakers = Vec::new();
    for _ in &sockets {
        let poll = Poll::new()?;
        wakers.push(mio::Waker::new(poll.registry(), WAKE)?);
        polls.push(poll);
    }
    let mut threads = Vec::new();
    for (i, (poll, socks)) in polls.into_iter().zip(sockets).enumerate() {
        let master = master.clone();
        let t = std::thread::Builder::new().name(format!("mc-mio-{i}")).spawn(move || {
            if let Err(e) = Worker::new(master, poll, socks, opts).and_then(|mut w| w.run()) {
                log::error!("worker {i} failed: {e}");
            }
        })?;
        threads.push(t);
    }
    Ok(Runtime { threads, waker: Waker(Arc::new(wakers)) })
}

fn now() -> Now {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Now::new(Instant::now(), wall)
}

struct Conn {
    sock: TcpStream,
    core: Connection<StreamState>,
    listener: Listener,
    read_closed: bool,
    /// Set once the core is done: we half-closed and drain input until this instant.
    linger_until: Option<Instant>,
    /// Accepted after shutdown began: not an "idle connection at the signal" (SPEC §2.7).
    after_shutdown: bool,
    /// Queued in `Worker::again` (its budget ran out with work left).
    queued: bool,
    /// Readiness as last reported (edge-triggered): cleared when a read or write would
    /// block (or a read came back short), set again by the next event. Saves a syscall
    /// that would only return `WouldBlock` on every request.
    readable: bool,
    writable: bool,
    /// The peer's FIN (or an error) was reported: read until EOF, whatever the read sizes.
    hup: bool,
}

struct Worker {
    master: Arc<Master>,
    poll: Poll,
    listeners: Vec<(Token, TcpListener, Listener)>,
    main_svc: Service,
    admin_svc: Service,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    buf: Vec<u8>,
    shutdown_seen: bool,
    /// The RPC listener and its connections (`rpc.rs`).
    rpc: rpc::RpcSide,
    /// Connections to drive again without waiting for an event (budget exhausted).
    again: Vec<usize>,
    /// No connection has a deadline before this (it may be earlier than the true minimum,
    /// never later): connections are scanned for timeouts only once it is due, instead of
    /// on every turn of the loop.
    conn_deadline: Option<Instant>,
    /// `Master::poll_timeout` as of the end of the previous turn.
    master_deadline: Option<Instant>,
    opts: Options,
}

impl Worker {
    fn new(master: Arc<Master>, poll: Poll, socks: WorkerSockets, opts: Options) -> io::Result<Self> {
        let stats = master.register_worker();
        let rpc = rpc::RpcSide::new(&master, &stats, &poll, socks.rpc)?;
        let master_deadline = master.poll_timeout();
        let mut listeners = Vec::new();
        let mut main = TcpListener::from_std(socks.main);
        poll.registry().register(&mut main, MAIN, Interest::READABLE)?;
        listeners.push((MAIN, main, Listener::Main));
        if let Some(a) = socks.admin {
            let mut admin = TcpListener::from_std(a);
            poll.registry().register(&mut admin, ADMIN, Interest::READABLE)?;
            listeners.push((ADMIN, admin, Listener::Admin));
        }
        Ok(Self {
            main_svc: master.service(Listener::Main, stats.clone()),
            admin_svc: master.service(Listener::Admin, stats),
            master,
            poll,
            listeners,
            conns: Vec::new(),
            free: Vec::new(),
            buf: vec![0u8; 64 * 1024],
            shutdown_seen: false,
            rpc,
            again: Vec::new(),
            conn_deadline: None,
            master_deadline,
            opts,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            // Listeners stay open until no connection is open in the whole process
            // (SPEC §2.7): an idle worker keeps accepting while another one drains.
            if self.shutdown_seen && self.master.connections_open.load(Ordering::Relaxed) <= 0 && self.rpc.open() == 0 {
                return Ok(());
            }
            let mut timeout = self.next_deadline().map(|d| d.saturating_duration_since(Instant::now()));
            if self.shutdown_seen {
                timeout = Some(timeout.map_or(SHUTDOWN_RECHECK, |t| t.min(SHUTDOWN_RECHECK)));
            }
            if !self.again.is_empty() {
                timeout = Some(Duration::ZERO);
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = now();
            for ev in events.iter() {
                match ev.token() {
                    WAKE => {}
                    t @ (MAIN | ADMIN) => self.accept(now, t),
                    t if rpc::owns(t) => self.rpc_event(now, t),
                    Token(t) => {
                        if let Some(c) = self.conns.get_mut(t - FIRST_CONN).and_then(|c| c.as_mut()) {
                            c.hup |= ev.is_read_closed() || ev.is_error();
                            c.readable |= ev.is_readable() || c.hup;
                            c.writable |= ev.is_writable() || ev.is_write_closed() || ev.is_error();
                        }
                        self.drive(now, t - FIRST_CONN)
                    }
                }
            }
            // Then the connections whose budget ran out last turn.
            for i in std::mem::take(&mut self.again) {
                if let Some(c) = self.conns.get_mut(i).and_then(|c| c.as_mut()) {
                    c.queued = false;
                    self.drive(now, i);
                }
            }
            if self.master.is_shutting_down() && !self.shutdown_seen {
                self.shutdown_seen = true;
                for i in 0..self.conns.len() {
                    if let Some(c) = self.conns[i].as_mut().filter(|c| !c.after_shutdown) {
                        let svc = if c.listener == Listener::Main { &mut self.main_svc } else { &mut self.admin_svc };
                        c.core.handle_shutdown(now, svc);
                        self.drive(now, i);
                    }
                }
                self.rpc_shutdown(now);
            }
            self.fire_timers(now);
            if self.opts.yield_between_turns && !events.is_empty() {
                std::thread::yield_now();
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conn_deadline.into_iter().chain(self.master_deadline).chain(self.rpc.next_deadline()).min()
    }

    /// Folds connection `i`'s next deadline into `conn_deadline`.
    fn note_deadline(&mut self, i: usize) {
        let Some(c) = self.conns.get(i).and_then(|c| c.as_ref()) else { return };
        if let Some(d) = c.linger_until.or_else(|| c.core.poll_timeout()) {
            self.conn_deadline = Some(self.conn_deadline.map_or(d, |m| m.min(d)));
        }
    }

    fn fire_timers(&mut self, now: Now) {
        if self.master.poll_timeout().is_some_and(|d| d <= now.mono) {
            self.master.handle_timeout(now);
        }
        self.master_deadline = self.master.poll_timeout();
        self.rpc_timers(now);
        if self.conn_deadline.is_none_or(|d| d > now.mono) {
            return;
        }
        self.conn_deadline = None;
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else { continue };
            match c.linger_until {
                Some(t) if t <= now.mono => self.close(i),
                Some(_) => {}
                None if c.core.poll_timeout().is_some_and(|d| d <= now.mono) => {
                    let svc = if c.listener == Listener::Main { &mut self.main_svc } else { &mut self.admin_svc };
                    c.core.handle_timeout(now, svc);
                    self.drive(now, i);
                }
                None => {}
            }
            self.note_deadline(i);
        }
    }

    fn accept(&mut self, now: Now, token: Token) {
        let Some(idx) = self.listeners.iter().position(|(t, _, _)| *t == token) else { return };
        loop {
            let (mut sock, kind) = match self.listeners[idx].1.accept() {
                Ok((s, _)) => (s, self.listeners[idx].2),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    return;
                }
            };
            let _ = sock.set_nodelay(true);
            let slot = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            if let Err(e) = self.poll.registry().register(
                &mut sock,
                Token(slot + FIRST_CONN),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("register failed: {e}");
                self.free.push(slot);
                continue;
            }
            let svc = if kind == Listener::Main { &self.main_svc } else { &self.admin_svc };
            let core = svc.new_connection(now);
            let after_shutdown = self.master.is_shutting_down();
            self.conns[slot] = Some(Conn {
                sock,
                core,
                listener: kind,
                read_closed: false,
                linger_until: None,
                after_shutdown,
                queued: false,
                readable: true,
                writable: true,
                hup: false,
            });
            self.note_deadline(slot);
        }
    }

    /// Moves bytes both ways until the socket would block, the core pauses or the read
    /// budget is spent, then notes the connection's next deadline.
    fn drive(&mut self, now: Now, i: usize) {
        self.drive_io(now, i);
        self.note_deadline(i);
    }

    fn drive_io(&mut self, now: Now, i: usize) {
        let Some(c) = self.conns.get_mut(i).and_then(|c| c.as_mut()) else { return };
        let svc = if c.listener == Listener::Main { &mut self.main_svc } else { &mut self.admin_svc };
        let mut budget = DRIVE_BUDGET;
        if let Some(until) = c.linger_until {
            // Drain and drop input until EOF or the linger deadline.
            loop {
                if now.mono >= until {
                    return self.close(i);
                }
                if budget == 0 {
                    return self.drive_again(i);
                }
                budget -= 1;
                match c.sock.read(&mut self.buf) {
                    Ok(0) => return self.close(i),
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return self.close(i),
                }
            }
        }
        loop {
            let mut progressed = false;
            while c.writable {
                // Head and body (and pipelined responses) in one writev.
                let mut bufs = [IoSlice::new(&[]); MAX_IOV];
                let n = c.core.poll_transmit_vectored(&mut bufs);
                if n == 0 {
                    break;
                }
                match c.sock.write_vectored(&bufs[..n]) {
                    Ok(0) => return self.close(i),
                    Ok(n) => {
                        c.core.consume(now, n, svc);
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => c.writable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return self.close(i),
                }
            }
            if c.core.is_closed() {
                let _ = c.sock.shutdown(Shutdown::Write);
                if c.read_closed {
                    return self.close(i);
                }
                c.linger_until = Some(now.mono + LINGER);
                return self.drive_io(now, i);
            }
            if c.readable && !c.read_closed && c.core.wants_read() {
                if budget == 0 {
                    return self.drive_again(i);
                }
                budget -= 1;
                match c.sock.read(&mut self.buf) {
                    Ok(0) => {
                        c.read_closed = true;
                        c.core.handle_eof(now, svc);
                        progressed = true;
                    }
                    Ok(n) => {
                        // A short read drained the socket: the next bytes bring a new edge.
                        if n < self.buf.len() && !c.hup {
                            c.readable = false;
                        }
                        c.core.handle_input(now, &self.buf[..n], svc);
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => c.readable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => progressed = true,
                    Err(_) => return self.close(i),
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// Queues connection `i` to be driven again after the others had their turn.
    fn drive_again(&mut self, i: usize) {
        if let Some(c) = self.conns.get_mut(i).and_then(|c| c.as_mut()) {
            if !c.queued {
                c.queued = true;
                self.again.push(i);
            }
        }
    }

    fn close(&mut self, i: usize) {
        if let Some(mut c) = self.conns[i].take() {
            let _ = self.poll.registry().deregister(&mut c.sock);
            self.free.push(i);
        }
    }
}
