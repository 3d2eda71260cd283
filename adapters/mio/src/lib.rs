//! # mc-mio: the mio runtime adapter
//!
//! Thread-per-core: each worker thread owns a `mio::Poll`, its own `SO_REUSEPORT`
//! listeners and its connections; nothing is shared between workers except the
//! `Arc<Master>` of the core. Every connection, whatever its protocol, is a socket plus a
//! core [`Link`] (made by the listener's [`Acceptor`]), driven by one loop:
//!
//! ```text
//! readable  -> read()   -> Link::handle_input / handle_eof
//! writable  -> Link::poll_transmit -> writev() -> Link::consume
//! finished  -> Link::poll_half_close -> shutdown(Write); Link::is_done -> close
//! deadline  -> Link::handle_timeout, Master::handle_timeout
//! waker     -> Lifecycle::is_shutting_down -> Link::handle_shutdown, close `Close` listeners
//! ```
//! Every protocol decision (parsing, routing, timeouts, backpressure, linger, which
//! connection hears about the shutdown, when the process may exit) is made by `mc_core`.

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mc_core::session::SHUTDOWN_RECHECK;
use mc_core::transfer::TransferOutcome;
use mc_core::{Acceptor, Link, ListenerAtShutdown, Master, Now, WorkerListeners};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const WAKE: Token = Token(0);
/// Listener tokens are `1..FIRST_CONN`; connection tokens start here.
const FIRST_CONN: usize = 64;
/// Slices handed to one `writev`.
const MAX_IOV: usize = 16;
/// Reads (of up to 64 KiB each) one connection gets per turn. A connection that would read
/// more once its budget is spent is queued and driven again after the other ready
/// connections had their turn, so a client that pipelines without pause cannot starve the
/// other connections of its worker, nor its accepts (tests/abuse.rs). Two reads let a plain
/// request/response exchange finish in one turn (read, answer, find the socket empty).
const DRIVE_BUDGET: usize = 2;

/// The running worker threads.
pub struct Runtime {
    threads: Vec<JoinHandle<()>>,
    wakers: Arc<Vec<Arc<mio::Waker>>>,
}

impl mc_core::Runtime for Runtime {
    fn waker(&self) -> Arc<dyn Fn() + Send + Sync> {
        let wakers = self.wakers.clone();
        Arc::new(move || {
            for w in wakers.iter() {
                let _ = w.wake();
            }
        })
    }
    fn join(self: Box<Self>) {
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

/// Starts one worker thread per entry of `workers` (its listeners, each with the acceptor
/// of its protocol).
pub fn start(
    master: Arc<Master>,
    workers: Vec<WorkerListeners<std::net::TcpListener>>,
    opts: Options,
) -> io::Result<Runtime> {
    let (mut threads, mut wakers) = (Vec::new(), Vec::new());
    for (i, listeners) in workers.into_iter().enumerate() {
        if listeners.len() >= FIRST_CONN {
            return Err(io::Error::other("too many listeners for one worker"));
        }
        let poll = Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE)?);
        wakers.push(waker.clone());
        let mut w = Worker::new(master.clone(), poll, listeners, opts, waker)?;
        threads.push(std::thread::Builder::new().name(format!("mc-mio-{i}")).spawn(move || {
            if let Err(e) = w.run() {
                log::error!("worker {i} failed: {e}");
            }
        })?);
    }
    Ok(Runtime { threads, wakers: Arc::new(wakers) })
}

fn now() -> Now {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Now::new(Instant::now(), wall)
}

/// Outcomes of data-plane transfers, pushed by the data plane's threads: (slot, serial of the
/// connection, transfer id, outcome).
type Done = Arc<Mutex<Vec<(usize, u64, u64, TransferOutcome)>>>;

struct Conn {
    sock: TcpStream,
    link: Link,
    /// Distinguishes the connections that used this slot (a late transfer outcome is
    /// dropped, not given to the next one).
    serial: u64,
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
    /// By token index - 1; `None` once closed at shutdown.
    listeners: Vec<Option<(TcpListener, Box<dyn Acceptor>)>>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    buf: Vec<u8>,
    shutdown_seen: bool,
    /// Connections to drive again without waiting for an event (budget exhausted).
    again: Vec<usize>,
    /// No connection has a deadline before this (it may be earlier than the true minimum,
    /// never later): connections are scanned for timeouts only once it is due, instead of
    /// on every turn of the loop.
    conn_deadline: Option<Instant>,
    /// `Master::poll_timeout` as of the end of the previous turn.
    master_deadline: Option<Instant>,
    opts: Options,
    waker: Arc<mio::Waker>,
    done: Done,
    next_serial: u64,
}

impl Worker {
    fn new(
        master: Arc<Master>,
        poll: Poll,
        listeners: WorkerListeners<std::net::TcpListener>,
        opts: Options,
        waker: Arc<mio::Waker>,
    ) -> io::Result<Self> {
        let mut registered = Vec::new();
        for (i, (l, acceptor)) in listeners.into_iter().enumerate() {
            let mut l = TcpListener::from_std(l);
            poll.registry().register(&mut l, Token(1 + i), Interest::READABLE)?;
            registered.push(Some((l, acceptor)));
        }
        Ok(Self {
            master_deadline: master.poll_timeout(),
            master,
            poll,
            listeners: registered,
            conns: Vec::new(),
            free: Vec::new(),
            buf: vec![0u8; 64 * 1024],
            shutdown_seen: false,
            again: Vec::new(),
            conn_deadline: None,
            opts,
            waker,
            done: Done::default(),
            next_serial: 0,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            if self.shutdown_seen && self.master.lifecycle().may_exit() {
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
                    Token(t) if t < FIRST_CONN => self.accept(now, t - 1),
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
            // Transfers that ended meanwhile.
            let done = std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()));
            for (i, serial, id, outcome) in done {
                if let Some(c) = self.conns.get_mut(i).and_then(|c| c.as_mut()).filter(|c| c.serial == serial) {
                    c.link.handle_transfer(now, id, outcome);
                    self.drive(now, i);
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
                self.begin_shutdown(now);
            }
            self.fire_timers(now);
            if self.opts.yield_between_turns && !events.is_empty() {
                std::thread::yield_now();
            }
        }
    }

    /// Closes the listeners that close at shutdown and tells every connection.
    fn begin_shutdown(&mut self, now: Now) {
        for slot in &mut self.listeners {
            if slot.as_ref().is_some_and(|(_, a)| a.on_shutdown() == ListenerAtShutdown::Close) {
                if let Some((mut l, _)) = slot.take() {
                    let _ = self.poll.registry().deregister(&mut l);
                }
            }
        }
        for i in 0..self.conns.len() {
            if let Some(c) = self.conns[i].as_mut() {
                c.link.handle_shutdown(now);
                self.drive(now, i);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conn_deadline.into_iter().chain(self.master_deadline).min()
    }

    /// Folds connection `i`'s next deadline into `conn_deadline`.
    fn note_deadline(&mut self, i: usize) {
        if let Some(d) = self.conns.get(i).and_then(|c| c.as_ref()).and_then(|c| c.link.poll_timeout()) {
            self.conn_deadline = Some(self.conn_deadline.map_or(d, |m| m.min(d)));
        }
    }

    fn fire_timers(&mut self, now: Now) {
        if self.master.poll_timeout().is_some_and(|d| d <= now.mono) {
            self.master.handle_timeout(now);
        }
        self.master_deadline = self.master.poll_timeout();
        if self.conn_deadline.is_none_or(|d| d > now.mono) {
            return;
        }
        self.conn_deadline = None;
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else { continue };
            if c.link.poll_timeout().is_some_and(|d| d <= now.mono) {
                c.link.handle_timeout(now);
                self.drive(now, i);
            } else {
                self.note_deadline(i);
            }
        }
    }

    fn accept(&mut self, now: Now, idx: usize) {
        loop {
            let Some(Some((listener, acceptor))) = self.listeners.get_mut(idx) else { return };
            let mut sock = match listener.accept() {
                Ok((s, _)) => s,
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
            let token = Token(slot + FIRST_CONN);
            if let Err(e) = self.poll.registry().register(&mut sock, token, Interest::READABLE | Interest::WRITABLE) {
                log::warn!("register failed: {e}");
                self.free.push(slot);
                continue;
            }
            let link = Link::new(now, acceptor.accept(now), self.master.lifecycle());
            self.next_serial += 1;
            let serial = self.next_serial;
            self.conns[slot] =
                Some(Conn { sock, link, serial, queued: false, readable: true, writable: true, hup: false });
            self.drive(now, slot);
        }
    }

    /// Moves bytes both ways until the socket would block, the core pauses or the read
    /// budget is spent, then notes the connection's next deadline.
    fn drive(&mut self, now: Now, i: usize) {
        self.drive_io(now, i);
        self.start_transfers(i);
        self.note_deadline(i);
    }

    /// Hands the transfers connection `i` asks for to the data plane; their outcomes come
    /// back through `done` and the worker's waker.
    fn start_transfers(&mut self, i: usize) {
        let Some(c) = self.conns.get_mut(i).and_then(|c| c.as_mut()) else { return };
        let (done, waker, serial) = (&self.done, &self.waker, c.serial);
        c.link.start_transfers(self.master.data_plane(), || {
            let (done, waker) = (done.clone(), waker.clone());
            move |id, outcome| {
                let mut q = done.lock().unwrap_or_else(|e| e.into_inner());
                q.push((i, serial, id, outcome));
                // A queue that was not empty already has a wake pending (the worker drains
                // it whole): one syscall per batch of outcomes, not per outcome.
                let first = q.len() == 1;
                drop(q);
                if first {
                    let _ = waker.wake();
                }
            }
        });
    }

    fn drive_io(&mut self, now: Now, i: usize) {
        let Some(c) = self.conns.get_mut(i).and_then(|c| c.as_mut()) else { return };
        let mut budget = DRIVE_BUDGET;
        loop {
            let mut progressed = false;
            while c.writable {
                // Head and body (and pipelined responses) in one writev.
                let mut bufs = [IoSlice::new(&[]); MAX_IOV];
                let n = c.link.poll_transmit(&mut bufs);
                if n == 0 {
                    break;
                }
                match c.sock.write_vectored(&bufs[..n]) {
                    Ok(0) => return self.close(i),
                    Ok(n) => {
                        c.link.consume(now, n);
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => c.writable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return self.close(i),
                }
            }
            if c.link.poll_half_close(now) {
                let _ = c.sock.shutdown(Shutdown::Write);
            }
            if c.link.is_done() {
                return self.close(i);
            }
            if c.readable && c.link.wants_read() {
                if budget == 0 {
                    return self.drive_again(i);
                }
                budget -= 1;
                // Into the session's own memory when it offers some (a transfer's payload
                // straight into segment memory), else into the worker's buffer.
                let (read, direct) = match c.link.read_into() {
                    Some(dst) => (c.sock.read(dst).map(|n| (n, dst.len())), true),
                    None => (c.sock.read(&mut self.buf).map(|n| (n, self.buf.len())), false),
                };
                match read {
                    Ok((0, _)) => c.link.handle_eof(now),
                    Ok((n, cap)) => {
                        // A short read drained the socket: the next bytes bring a new edge.
                        if n < cap && !c.hup {
                            c.readable = false;
                        }
                        if direct {
                            c.link.handle_read_into(now, n);
                        } else {
                            c.link.handle_input(now, &self.buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        c.readable = false;
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return self.close(i),
                }
                progressed = true;
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
