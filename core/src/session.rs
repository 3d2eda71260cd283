//! The one driving API of every connection kind (HTTP, master RPC, the data plane's TE and
//! handshake connections), and the rules every adapter applies the same way.
//!
//! A [`Session`] is the sans-IO state machine of one accepted socket. An adapter drives
//! "a socket plus a session" in one loop, whatever the protocol:
//!
//! ```text
//!   readable  ─► read() ─► handle_input(now, bytes) | handle_eof(now)
//!   writable  ─► poll_transmit(&mut [IoSlice]) ─► writev() ─► consume(now, n)
//!   deadline  ─► poll_timeout() due ─► handle_timeout(now)
//!   shutdown  ─► handle_shutdown(now)            (once, see [`Link`])
//!   after each call: drain poll_transmit until 0 or the socket would block;
//!                    stop reading while !wants_read(); close once is_closed()
//! ```
//!
//! Sessions are made by an [`Acceptor`], one per listener and worker; the binary builds
//! them, so adding a protocol means writing a `Session` and an `Acceptor` and registering
//! a listener. [`Link`] wraps a session with the rules that are the same for every
//! protocol (half-close and linger, the shutdown delivery, the process-wide count that
//! decides when a worker may exit); adapters drive `Link`s only.
//!
//! ```text
//!   Link:  Open ──session closed──► HalfClose (adapter: shutdown(Write)) ──► Lingering
//!           │                                    (input drained and dropped, LINGER)
//!           └────────────── peer EOF already seen ──────────────┐          │ EOF / deadline
//!                                                               ▼          ▼
//!                                                             Done (adapter: close the socket)
//! ```

use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::time::Now;
use crate::transfer::{DataPlane, Transfer, TransferOutcome};

/// How long a finished connection keeps draining unread input after its half-close, so the
/// peer reads the last response instead of a reset.
pub const LINGER: Duration = Duration::from_millis(500);
/// While shutting down, how often an idle worker rechecks whether the process may exit.
pub const SHUTDOWN_RECHECK: Duration = Duration::from_millis(20);

/// The sans-IO state machine of one connection. Every entry point takes `now`; outputs are
/// pulled by the caller. After every `handle_*` call and after `consume`, drain
/// [`Session::poll_transmit`] again and re-read [`Session::poll_timeout`].
pub trait Session: Send {
    /// Bytes received from the peer.
    fn handle_input(&mut self, now: Now, data: &[u8]);
    /// The peer half-closed (a read returned 0).
    fn handle_eof(&mut self, now: Now);
    /// Time passed; called once [`Session::poll_timeout`] is due (extra calls are harmless).
    fn handle_timeout(&mut self, now: Now);
    /// The process started shutting down. Called at most once (see [`Link`]).
    fn handle_shutdown(&mut self, now: Now);
    /// The next bytes to write, as up to `bufs.len()` slices; returns how many it filled
    /// (0: nothing to write now). Write a prefix, then call [`Session::consume`].
    #[must_use]
    fn poll_transmit<'a>(&'a self, bufs: &mut [IoSlice<'a>]) -> usize;
    /// As [`Session::poll_transmit`], but at most `limit` bytes in all. The default gives
    /// the whole slices that fit (none if the first one does not); a session whose output
    /// is one buffer cuts it exactly (a wrapper that may release only a prefix of the
    /// output, [`crate::ha::DurableSession`], relies on that to never stall a stream).
    fn poll_transmit_upto<'a>(&'a self, bufs: &mut [IoSlice<'a>], limit: usize) -> usize {
        let n = self.poll_transmit(bufs);
        let mut total = 0;
        for (i, b) in bufs[..n].iter().enumerate() {
            total += b.len();
            if total > limit {
                return i;
            }
        }
        n
    }
    /// `n` bytes of what [`Session::poll_transmit`] returned were written.
    fn consume(&mut self, now: Now, n: usize);
    /// The next instant at which [`Session::handle_timeout`] must be called.
    #[must_use]
    fn poll_timeout(&self) -> Option<Instant>;
    /// False while the caller should not read (backpressure, or no more input wanted).
    fn wants_read(&self) -> bool;
    /// True once everything that will ever be sent was consumed: the socket should close.
    fn is_closed(&self) -> bool;
    /// A transfer of value bytes to or from another node that this session needs (see
    /// [`crate::transfer`]); drain after every call, like `poll_transmit`. Sessions that
    /// never need one keep the default.
    fn poll_transfer(&mut self) -> Option<Transfer> {
        None
    }
    /// The outcome of the transfer `id` that [`Session::poll_transfer`] asked for.
    fn handle_transfer(&mut self, now: Now, id: u64, outcome: TransferOutcome) {
        let _ = (now, id, outcome);
    }
    /// Memory of the session's own that the next bytes should be read into directly (a
    /// transfer's payload going straight into segment memory), instead of the adapter's
    /// buffer; after a read of `n > 0` bytes into it, call [`Session::handle_read_into`].
    /// `None` (the default): read into the adapter's buffer and call `handle_input`.
    fn read_into(&mut self) -> Option<&mut [u8]> {
        None
    }
    /// `n` bytes were read into the slice [`Session::read_into`] returned.
    fn handle_read_into(&mut self, now: Now, n: usize) {
        let _ = (now, n);
    }
}

/// Makes the sessions of one listener on one worker.
pub trait Acceptor: Send {
    /// A session for a socket accepted at `now`.
    fn accept(&mut self, now: Now) -> Box<dyn Session>;
    /// What the listener does once the process starts shutting down.
    fn on_shutdown(&self) -> ListenerAtShutdown;
}

/// What a listener does during a graceful shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerAtShutdown {
    /// Stays open until no connection is left in the process (HTTP, SPEC §2.7: a
    /// connection accepted while others drain gets one response with `Connection: close`).
    KeepOpen,
    /// Closes at once (master RPC, data plane).
    Close,
}

/// The process-wide part of the connection rules: the shutdown flag and the count of open
/// [`Link`]s of every kind, on every worker. One per process ([`crate::Master::lifecycle`]).
#[derive(Debug, Default)]
pub struct Lifecycle {
    shutting_down: AtomicBool,
    open: AtomicI64,
}

impl Lifecycle {
    /// A new lifecycle, not shutting down, with no link open.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Enters the shutting-down state (SPEC §2.7). Idempotent.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// True after [`Lifecycle::begin_shutdown`].
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Links open in the whole process.
    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Acquire)
    }

    /// A worker that saw the shutdown may exit: no link is open anywhere in the process.
    /// Listeners that stay open ([`ListenerAtShutdown::KeepOpen`]) stay open on every worker
    /// until then, so an idle worker keeps accepting while another one drains; a worker that
    /// may not exit yet rechecks every [`SHUTDOWN_RECHECK`].
    pub fn may_exit(&self) -> bool {
        self.is_shutting_down() && self.open() <= 0
    }
}

/// Where a [`Link`] is in its life (see the diagram in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    /// The session is running.
    Open,
    /// The session closed; the adapter has not half-closed the socket yet.
    HalfClose,
    /// Half-closed: input is read and dropped until EOF or the deadline.
    Lingering(Instant),
    /// Close the socket.
    Done,
}

/// A [`Session`] with the rules every protocol shares: half-close and [`LINGER`], one
/// shutdown delivery (none to a link accepted after the shutdown began: it is not "idle at
/// the signal"; its session decides for itself), and the process-wide count of
/// [`Lifecycle::open`]. Adapters drive links, never sessions directly.
pub struct Link {
    session: Box<dyn Session>,
    state: LinkState,
    /// Accepted after the shutdown began.
    late: bool,
    shutdown_delivered: bool,
    /// The peer's EOF was seen.
    read_closed: bool,
    life: Arc<Lifecycle>,
}

impl Link {
    /// Wraps `session`, accepted at `now`, and counts it as open in `life`.
    pub fn new(now: Now, session: Box<dyn Session>, life: &Arc<Lifecycle>) -> Self {
        let _ = now;
        life.open.fetch_add(1, Ordering::AcqRel);
        let late = life.is_shutting_down();
        let mut link = Self {
            session,
            state: LinkState::Open,
            late,
            shutdown_delivered: false,
            read_closed: false,
            life: life.clone(),
        };
        link.settle();
        link
    }

    /// Bytes read from the socket (dropped while lingering).
    pub fn handle_input(&mut self, now: Now, data: &[u8]) {
        if self.state == LinkState::Open {
            self.session.handle_input(now, data);
            self.settle();
        }
    }

    /// A read returned 0.
    pub fn handle_eof(&mut self, now: Now) {
        self.read_closed = true;
        match self.state {
            LinkState::Open => {
                self.session.handle_eof(now);
                self.settle();
            }
            LinkState::Lingering(_) => self.state = LinkState::Done,
            LinkState::HalfClose | LinkState::Done => {}
        }
    }

    /// Time passed: fires the session's deadline or ends the linger, whichever is due.
    pub fn handle_timeout(&mut self, now: Now) {
        match self.state {
            LinkState::Open if self.session.poll_timeout().is_some_and(|d| d <= now.mono) => {
                self.session.handle_timeout(now);
                self.settle();
            }
            LinkState::Lingering(until) if until <= now.mono => self.state = LinkState::Done,
            _ => {}
        }
    }

    /// The process is shutting down: delivered to the session once, unless this link was
    /// accepted after the shutdown began.
    pub fn handle_shutdown(&mut self, now: Now) {
        if self.late || self.shutdown_delivered {
            return;
        }
        self.shutdown_delivered = true;
        if self.state == LinkState::Open {
            self.session.handle_shutdown(now);
            self.settle();
        }
    }

    /// The next bytes to write (none once the session closed).
    #[must_use]
    pub fn poll_transmit<'a>(&'a self, bufs: &mut [IoSlice<'a>]) -> usize {
        match self.state {
            LinkState::Open => self.session.poll_transmit(bufs),
            _ => 0,
        }
    }

    /// `n` bytes of [`Link::poll_transmit`] were written.
    pub fn consume(&mut self, now: Now, n: usize) {
        if self.state == LinkState::Open {
            self.session.consume(now, n);
            self.settle();
        }
    }

    /// The next deadline: the session's, or the end of the linger.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            LinkState::Open => self.session.poll_timeout(),
            LinkState::Lingering(until) => Some(until),
            LinkState::HalfClose | LinkState::Done => None,
        }
    }

    /// Whether to read from the socket: what the session wants, and always while lingering
    /// (input is drained until EOF).
    pub fn wants_read(&self) -> bool {
        match self.state {
            LinkState::Open => !self.read_closed && self.session.wants_read(),
            LinkState::Lingering(_) => !self.read_closed,
            LinkState::HalfClose | LinkState::Done => false,
        }
    }

    /// A transfer the session needs (none once it closed): hand it to the data plane.
    pub fn poll_transfer(&mut self) -> Option<Transfer> {
        match self.state {
            LinkState::Open => self.session.poll_transfer(),
            _ => None,
        }
    }

    /// Where to read the next bytes directly, if the session offers it
    /// ([`Session::read_into`]; never while lingering).
    pub fn read_into(&mut self) -> Option<&mut [u8]> {
        match self.state {
            LinkState::Open if !self.read_closed => self.session.read_into(),
            _ => None,
        }
    }

    /// `n > 0` bytes were read into the slice of [`Link::read_into`].
    pub fn handle_read_into(&mut self, now: Now, n: usize) {
        if self.state == LinkState::Open {
            self.session.handle_read_into(now, n);
            self.settle();
        }
    }

    /// Hands every transfer the session asks for to `plane`; the callback `make_done()` builds
    /// (only when there is a transfer: nothing is cloned on the usual path) runs once per
    /// transfer with its id and outcome, on any thread (the adapter queues it for its worker
    /// and wakes it, then calls [`Link::handle_transfer`]). Without a data plane each
    /// transfer fails at once.
    pub fn start_transfers<F>(&mut self, plane: Option<&Arc<dyn DataPlane>>, make_done: impl FnOnce() -> F)
    where
        F: Fn(u64, TransferOutcome) + Clone + Send + 'static,
    {
        let Some(first) = self.poll_transfer() else { return };
        let done = make_done();
        for t in std::iter::once(first).chain(std::iter::from_fn(|| self.poll_transfer())) {
            let (done, id) = (done.clone(), t.id);
            match plane {
                Some(dp) => dp.submit(t, Box::new(move |outcome| done(id, outcome))),
                None => done(id, TransferOutcome::Failed("no data plane in this process".into())),
            }
        }
    }

    /// The outcome of a transfer of [`Link::poll_transfer`] (dropped once the session closed).
    pub fn handle_transfer(&mut self, now: Now, id: u64, outcome: TransferOutcome) {
        if self.state == LinkState::Open {
            self.session.handle_transfer(now, id, outcome);
            self.settle();
        }
    }

    /// True once: the session is finished and the adapter must shut the socket's write side
    /// down now. The link then lingers ([`LINGER`] from `now`) or, after the peer's EOF, is
    /// done at once.
    pub fn poll_half_close(&mut self, now: Now) -> bool {
        if self.state != LinkState::HalfClose {
            return false;
        }
        self.state = if self.read_closed { LinkState::Done } else { LinkState::Lingering(now.mono + LINGER) };
        true
    }

    /// True once the socket is to be closed (and the link dropped).
    pub fn is_done(&self) -> bool {
        self.state == LinkState::Done
    }

    /// Moves to [`LinkState::HalfClose`] once the session closed.
    fn settle(&mut self) {
        if self.state == LinkState::Open && self.session.is_closed() {
            self.state = LinkState::HalfClose;
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.life.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A started runtime adapter (its worker threads), as the binary holds it whatever the
/// runtime: every adapter's `start` returns one.
pub trait Runtime: Send {
    /// A function that wakes every worker so it observes [`Lifecycle::is_shutting_down`].
    /// Callable from any thread (a signal handler thread), any number of times.
    fn waker(&self) -> Arc<dyn Fn() + Send + Sync>;
    /// Waits until every worker has exited (after shutdown, once its connections closed).
    fn join(self: Box<Self>);
}

/// The listeners of one worker: each socket with the acceptor that makes its sessions.
/// Sockets are bound (and set non-blocking) by the caller; the adapter registers them.
pub type WorkerListeners<L> = Vec<(L, Box<dyn Acceptor>)>;

/// Serves two protocols on one listener, told apart by their first bytes: `pick` looks at
/// what arrived so far and says `Some(true)` for the alternate protocol, `Some(false)` for
/// the primary one, `None` while it cannot tell yet. (mc-master answers the transfer
/// engine's handshake on its HTTP port this way, so that its node name `host:port` is also
/// the handshake address a P2PHANDSHAKE client dials.)
pub struct SniffAcceptor {
    primary: Box<dyn Acceptor>,
    alternate: Box<dyn Acceptor>,
    pick: fn(&[u8]) -> Option<bool>,
}

impl SniffAcceptor {
    /// `primary` serves a connection unless `pick` decides for `alternate`.
    pub fn new(primary: Box<dyn Acceptor>, alternate: Box<dyn Acceptor>, pick: fn(&[u8]) -> Option<bool>) -> Self {
        Self { primary, alternate, pick }
    }
}

impl Acceptor for SniffAcceptor {
    fn accept(&mut self, now: Now) -> Box<dyn Session> {
        let primary = self.primary.accept(now);
        // A primary session that speaks first (a connection refused with 503 at the limit)
        // is not held back waiting for the peer's first bytes.
        let mut probe = [IoSlice::new(&[])];
        if primary.poll_transmit(&mut probe) > 0 {
            return primary;
        }
        Box::new(Sniff::Undecided { buf: Vec::new(), primary, alternate: self.alternate.accept(now), pick: self.pick })
    }
    fn on_shutdown(&self) -> ListenerAtShutdown {
        self.primary.on_shutdown()
    }
}

/// A session of a [`SniffAcceptor`]: undecided (the primary's deadlines apply) until the
/// first bytes tell, then the chosen protocol's session.
enum Sniff {
    Undecided {
        buf: Vec<u8>,
        primary: Box<dyn Session>,
        alternate: Box<dyn Session>,
        pick: fn(&[u8]) -> Option<bool>,
    },
    Decided(Box<dyn Session>),
    /// Transient, while deciding.
    Gone,
}

impl Sniff {
    /// Decides with `buf` (or for the primary protocol when `force`), replaying it.
    fn decide(&mut self, now: Now, force: bool) {
        let Sniff::Undecided { buf, pick, .. } = self else { return };
        let choice = match pick(buf) {
            Some(c) => c,
            None if force => false,
            None => return,
        };
        let Sniff::Undecided { buf, primary, alternate, .. } = std::mem::replace(self, Sniff::Gone) else {
            return;
        };
        let mut chosen = if choice { alternate } else { primary };
        if !buf.is_empty() {
            chosen.handle_input(now, &buf);
        }
        *self = Sniff::Decided(chosen);
    }

    fn session(&self) -> Option<&dyn Session> {
        match self {
            Sniff::Undecided { primary, .. } => Some(&**primary),
            Sniff::Decided(s) => Some(&**s),
            Sniff::Gone => None,
        }
    }
}

impl Session for Sniff {
    fn handle_input(&mut self, now: Now, data: &[u8]) {
        match self {
            Sniff::Decided(s) => s.handle_input(now, data),
            Sniff::Undecided { buf, .. } => {
                buf.extend_from_slice(data);
                self.decide(now, false);
            }
            Sniff::Gone => {}
        }
    }
    fn handle_eof(&mut self, now: Now) {
        self.decide(now, true);
        if let Sniff::Decided(s) = self {
            s.handle_eof(now);
        }
    }
    fn handle_timeout(&mut self, now: Now) {
        self.decide(now, true);
        if let Sniff::Decided(s) = self {
            s.handle_timeout(now);
        }
    }
    fn handle_shutdown(&mut self, now: Now) {
        self.decide(now, true);
        if let Sniff::Decided(s) = self {
            s.handle_shutdown(now);
        }
    }
    fn poll_transmit<'a>(&'a self, bufs: &mut [IoSlice<'a>]) -> usize {
        match self {
            Sniff::Decided(s) => s.poll_transmit(bufs),
            _ => 0,
        }
    }
    fn consume(&mut self, now: Now, n: usize) {
        if let Sniff::Decided(s) = self {
            s.consume(now, n);
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.session().and_then(|s| s.poll_timeout())
    }
    fn wants_read(&self) -> bool {
        match self {
            Sniff::Undecided { .. } => true,
            Sniff::Decided(s) => s.wants_read(),
            Sniff::Gone => false,
        }
    }
    fn is_closed(&self) -> bool {
        match self {
            Sniff::Undecided { .. } => false,
            Sniff::Decided(s) => s.is_closed(),
            Sniff::Gone => true,
        }
    }
    fn poll_transfer(&mut self) -> Option<Transfer> {
        match self {
            Sniff::Decided(s) => s.poll_transfer(),
            _ => None,
        }
    }
    fn handle_transfer(&mut self, now: Now, id: u64, outcome: TransferOutcome) {
        if let Sniff::Decided(s) = self {
            s.handle_transfer(now, id, outcome);
        }
    }
    fn read_into(&mut self) -> Option<&mut [u8]> {
        match self {
            Sniff::Decided(s) => s.read_into(),
            _ => None,
        }
    }
    fn handle_read_into(&mut self, now: Now, n: usize) {
        if let Sniff::Decided(s) = self {
            s.handle_read_into(now, n);
        }
    }
}
