//! Many simulated store clients against one master over the master RPC protocol, for
//! `benches/clients.sh` (docs/benchmarks.md, "Many clients").
//!
//! ```text
//! clients --addr 127.0.0.1:RPC_PORT --clients N [--ops-per-sec 0,2000] [--secs 30]
//!         [--pid MASTER_PID] [--metrics http://127.0.0.1:PORT/metrics] [--scrape-every 5] [--threads 1]
//!         [--value-size 1024] [--mix put:20,get:40,exist:40] [--ramp 128] [--preload 2] [--fetch-tasks]
//!         [--max-ops-per-client 2] [--ttl 10] [--drain 10] [--settle 2] [--baseline 2]
//!         [--setup-timeout 900] [--label NAME]
//! ```
//!
//! Every simulated client is what an upstream store client does to its master: one TCP
//! connection of its own, `ServiceReady`, `MountSegment` of one segment of its own (a unique
//! client id and segment id, fake addresses: the master never touches them), then `Ping`
//! every second, `ReMountSegment` when a Ping answers NEED_REMOUNT (the first Ping after a
//! mount does, on upstream's master and on mc-master), and with `--fetch-tasks` also
//! `FetchTasks(16)` every second, half a second after its Ping. The pings of all clients
//! are spread evenly over the second (client *k* of *M* on a thread pings at *k*/*M* s),
//! so they are not synchronized. On top of that the tool runs, at an aggregate rate, a mix
//! of operations on random clients: a put (`PutStart` of a small value, then `PutEnd`), a
//! `GetReplicaList` and an `ExistKey`, half of the reads on the client's own keys and half
//! on another client's. Each client puts `--preload` keys when it is ready, so that reads
//! find keys from the first window on. A client has at most `--max-ops-per-client`
//! operations outstanding (a put counts until its PutEnd is answered); an operation due on a
//! busy client is dropped and counted, as a real client's application threads would wait.
//!
//! All connections are non-blocking and driven by `--threads` mio event loops (1 by
//! default): 10k blocking threads would measure the scheduler, not the master. The frames
//! are built and parsed by the core's sans-IO client (`mc_core::rpc::client::RpcClient`).
//!
//! Once every client is mounted, remounted and pinging (plus `--settle` seconds), one
//! measured window of `--secs` seconds runs per `--ops-per-sec` value (`0` = heartbeats
//! only), each after `--settle` seconds at that rate. Per window: the master's CPU
//! (utime + stime of `/proc/PID/stat`, % of one core) and run-queue wait, the tool's own
//! CPU, the machine's busy cores, per-method latency from send to reply (p50/p99/max),
//! error codes, Pings that answered NEED_REMOUNT after the client had been OK (the master
//! lost it: expired, or forgot it), and, from `--metrics`, `master_active_clients`
//! (min/max of a scrape every `--scrape-every` s) and `master_expired_clients_total` (its
//! increase). The tool's own view of liveness: the longest time a client went without an
//! answered heartbeat (between two OK replies of Ping/MountSegment/ReMountSegment, or from
//! the last one to the end of the window) and how many clients had such a gap of at least
//! `--ttl` (a master with that TTL expires them, or is about to). After the last window the
//! tool sends nothing for up to `--drain` s while the calls still outstanding are answered;
//! the calls never answered are counted per window. Prints one JSON object on stdout,
//! progress on stderr.
//!
//! Raises its RLIMIT_NOFILE to what N connections need, and says so (exit 2) when the hard
//! limit is too low. `cargo bench --bench clients -- ARGS` runs it by hand (the `--bench`
//! flag cargo appends is ignored).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mc_core::rpc::client::{self, CallError, RpcClient};
use mc_core::rpc::{Rpc, Value};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value as Json};
use uuid::Uuid;

/// Base of the fake segment addresses (client *g*'s segment starts at `BASE + g * size`).
const BASE: u64 = 0x1000_0000_0000;
const TENANT: &str = "default";

// ---- arguments ----

struct Args {
    addr: SocketAddr,
    clients: usize,
    threads: usize,
    rates: Vec<f64>,
    secs: f64,
    settle: f64,
    baseline: f64,
    setup_timeout: f64,
    pid: Option<u32>,
    metrics: Option<String>,
    /// Seconds between scrapes of `--metrics` in a window (mc-master's /metrics has a series
    /// per segment: about 130 bytes and 0.5 µs of master CPU per client).
    scrape_every: f64,
    value_size: u64,
    seg_size: u64,
    /// Weights of put, get, exist.
    mix: [u32; 3],
    ramp: usize,
    /// Operations a client may have outstanding; one more is dropped (counted), as a real
    /// client's application threads wait for their calls.
    max_ops: usize,
    /// The master's client TTL: a client without a heartbeat answered for this long counts
    /// as one the master would expire.
    ttl: f64,
    /// After the last window: how long to wait for the calls still outstanding.
    drain: f64,
    /// Keys each client puts once it is ready (so that reads find keys from the start).
    preload: u32,
    fetch_tasks: bool,
    label: String,
}

fn usage(msg: &str) -> ! {
    eprintln!("clients: {msg}");
    eprintln!(
        "usage: clients --addr HOST:PORT --clients N [--ops-per-sec R[,R...]] [--secs S] [--settle S] \
         [--baseline S] [--setup-timeout S] [--pid PID] [--metrics URL] [--scrape-every S] [--threads T] [--value-size B] \
         [--segment-size B] [--mix put:P,get:G,exist:E] [--ramp N] [--preload K] [--max-ops-per-client K] [--ttl S] [--drain S] [--fetch-tasks] [--label NAME]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
        clients: 1000,
        threads: 1,
        rates: vec![0.0, 2000.0],
        secs: 30.0,
        settle: 2.0,
        baseline: 2.0,
        setup_timeout: 900.0,
        pid: None,
        metrics: None,
        scrape_every: 5.0,
        value_size: 1024,
        seg_size: 64 << 20,
        mix: [20, 40, 40],
        ramp: 128,
        max_ops: 2,
        ttl: 10.0,
        drain: 10.0,
        preload: 2,
        fetch_tasks: false,
        label: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--bench" => continue,
            "--fetch-tasks" => {
                a.fetch_tasks = true;
                continue;
            }
            "-h" | "--help" => usage("many simulated store clients against one master"),
            _ => {}
        }
        let val = it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let num = |v: &str| v.parse::<u64>().unwrap_or_else(|_| usage(&format!("{flag}: not a number: {v}")));
        let float = |v: &str| v.parse::<f64>().unwrap_or_else(|_| usage(&format!("{flag}: not a number: {v}")));
        match flag.as_str() {
            "--addr" => {
                a.addr = val
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut i| i.next())
                    .unwrap_or_else(|| usage(&format!("--addr: cannot resolve {val}")))
            }
            "--clients" => a.clients = num(&val) as usize,
            "--threads" => a.threads = num(&val) as usize,
            "--ops-per-sec" => a.rates = val.split(',').map(|r| float(r.trim())).collect(),
            "--secs" => a.secs = float(&val),
            "--settle" => a.settle = float(&val),
            "--baseline" => a.baseline = float(&val),
            "--setup-timeout" => a.setup_timeout = float(&val),
            "--pid" => a.pid = Some(num(&val) as u32),
            "--metrics" => a.metrics = Some(val),
            "--scrape-every" => a.scrape_every = float(&val).max(0.1),
            "--value-size" => a.value_size = num(&val),
            "--segment-size" => a.seg_size = num(&val),
            "--ramp" => a.ramp = num(&val) as usize,
            "--preload" => a.preload = num(&val) as u32,
            "--max-ops-per-client" => a.max_ops = num(&val) as usize,
            "--ttl" => a.ttl = float(&val),
            "--drain" => a.drain = float(&val),
            "--label" => a.label = val,
            "--mix" => {
                let mut mix = [0u32; 3];
                for part in val.split(',') {
                    let (k, w) = part.split_once(':').unwrap_or_else(|| usage("--mix: put:P,get:G,exist:E"));
                    let slot = match k {
                        "put" => 0,
                        "get" => 1,
                        "exist" => 2,
                        _ => usage(&format!("--mix: unknown operation {k}")),
                    };
                    mix[slot] = num(w) as u32;
                }
                a.mix = mix;
            }
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if a.clients == 0
        || a.threads == 0
        || a.ramp == 0
        || a.max_ops == 0
        || a.value_size == 0
        || a.seg_size < a.value_size
    {
        usage("--clients, --threads, --ramp, --max-ops-per-client, --value-size must be positive and --segment-size ≥ --value-size");
    }
    if a.rates.iter().any(|r| *r > 0.0) && a.mix.iter().all(|w| *w == 0) {
        usage("--mix: every weight is 0");
    }
    a.threads = a.threads.min(a.clients);
    a
}

// ---- methods and statistics ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum M {
    ServiceReady,
    MountSegment,
    ReMountSegment,
    Ping,
    FetchTasks,
    PutStart,
    PutEnd,
    GetReplicaList,
    ExistKey,
}

const METHODS: [M; 9] = [
    M::ServiceReady,
    M::MountSegment,
    M::ReMountSegment,
    M::Ping,
    M::FetchTasks,
    M::PutStart,
    M::PutEnd,
    M::GetReplicaList,
    M::ExistKey,
];

impl M {
    fn rpc(self) -> Rpc {
        match self {
            M::ServiceReady => Rpc::ServiceReady,
            M::MountSegment => Rpc::MountSegment,
            M::ReMountSegment => Rpc::ReMountSegment,
            M::Ping => Rpc::Ping,
            M::FetchTasks => Rpc::FetchTasks,
            M::PutStart => Rpc::PutStart,
            M::PutEnd => Rpc::PutEnd,
            M::GetReplicaList => Rpc::GetReplicaList,
            M::ExistKey => Rpc::ExistKey,
        }
    }

    fn name(self) -> String {
        format!("{self:?}")
    }
}

/// What happened in one window (index 0: outside every window: set-up and settling).
#[derive(Clone)]
struct Win {
    /// Latency of every reply, per method, in ns (by the window its call was sent in).
    lat: Vec<Vec<u64>>,
    /// Error replies per method: `-704` (an `ErrorCode`), `rpc 4` (a coro_rpc error), `bad reply`.
    errors: Vec<HashMap<String, u64>>,
    pings_sent: u64,
    /// Pings not sent because the client's previous one was still unanswered.
    pings_skipped: u64,
    ping_ok: u64,
    /// NEED_REMOUNT answered to a client that had been OK (the master lost it).
    ping_lost: u64,
    /// Distinct clients with at least one `ping_lost` in this window.
    lost_clients: u64,
    /// NEED_REMOUNT of a client not yet remounted (expected once after the mount).
    ping_initial_remount: u64,
    ops: u64,
    /// Operations dropped because the tool fell more than a second behind its schedule.
    ops_behind: u64,
    /// Reads of a key that does not exist (yet): -704, -703, or `ExistKey` false.
    read_misses: u64,
    disconnects: u64,
    /// Operations not sent because their client had `max_ops` outstanding.
    ops_dropped_busy: u64,
    /// Longest time a client went without an answered heartbeat (consecutive OK replies of
    /// Ping/MountSegment/ReMountSegment, or the last one to the end of the window), ns.
    max_gap: u64,
    /// Clients with such a gap of at least `--ttl`.
    stale_clients: u64,
    /// Calls sent in this window and never answered (by the end of the run).
    unanswered: u64,
}

impl Win {
    fn new() -> Self {
        Win {
            lat: vec![Vec::new(); METHODS.len()],
            errors: vec![HashMap::new(); METHODS.len()],
            pings_sent: 0,
            pings_skipped: 0,
            ping_ok: 0,
            ping_lost: 0,
            lost_clients: 0,
            ping_initial_remount: 0,
            ops: 0,
            ops_behind: 0,
            read_misses: 0,
            disconnects: 0,
            ops_dropped_busy: 0,
            max_gap: 0,
            stale_clients: 0,
            unanswered: 0,
        }
    }

    fn merge(&mut self, o: Win) {
        for (i, l) in o.lat.into_iter().enumerate() {
            self.lat[i].extend(l);
        }
        for (i, e) in o.errors.into_iter().enumerate() {
            for (k, v) in e {
                *self.errors[i].entry(k).or_default() += v;
            }
        }
        self.pings_sent += o.pings_sent;
        self.pings_skipped += o.pings_skipped;
        self.ping_ok += o.ping_ok;
        self.ping_lost += o.ping_lost;
        self.lost_clients += o.lost_clients;
        self.ping_initial_remount += o.ping_initial_remount;
        self.ops += o.ops;
        self.ops_behind += o.ops_behind;
        self.read_misses += o.read_misses;
        self.disconnects += o.disconnects;
        self.ops_dropped_busy += o.ops_dropped_busy;
        self.max_gap = self.max_gap.max(o.max_gap);
        self.stale_clients += o.stale_clients;
        self.unanswered += o.unanswered;
    }

    fn error(&mut self, m: M, what: String) {
        *self.errors[m as usize].entry(what).or_default() += 1;
    }
}

/// State shared by the main thread and the driver threads.
struct Shared {
    /// 0 while not measuring, else the window being measured (1-based).
    phase: AtomicU32,
    /// Aggregate operation rate (ops/s × 1000).
    rate_milli: AtomicU64,
    stop: AtomicBool,
    /// Set after the last window: nothing new is sent, outstanding calls are waited for.
    quiesce: AtomicBool,
    ready: AtomicUsize,
    failed: AtomicUsize,
    dead: AtomicUsize,
    lost: AtomicU64,
    /// Calls sent and not answered, all threads.
    outstanding: AtomicU64,
    /// Per client (global index): number of its keys whose PutEnd succeeded.
    puts_done: Vec<AtomicU32>,
}

/// What a driver thread hands back.
struct ThreadResult {
    wins: Vec<Win>,
    setup_failures: HashMap<String, u64>,
    /// Calls sent and never answered by the end, per method (older than 1 s at the stop).
    unanswered: Vec<u64>,
    not_ready: u64,
    version: Option<String>,
}

// ---- one simulated client ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Idle,
    Connecting,
    Handshake,
    Mounting,
    /// Mounted, pinging, not remounted yet.
    Mounted,
    Ready,
    Dead,
}

struct Pending {
    seq: u32,
    sent: Instant,
    win: u32,
    m: M,
    /// Put: the key's number.
    n: u32,
}

struct Client {
    g: usize,
    sock: Option<TcpStream>,
    rpc: RpcClient,
    out: Vec<u8>,
    st: St,
    id: Value,
    seg: Value,
    pending: Vec<Pending>,
    ping_out: bool,
    fetch_out: bool,
    remount_out: bool,
    ok_seen: bool,
    /// Last window in which this client was counted in `lost_clients`.
    lost_win: u32,
    next_put: u32,
    /// Operations outstanding (puts count until their PutEnd is answered).
    ops_out: usize,
    /// When the last heartbeat of this client was answered OK.
    last_ok: Option<Instant>,
    /// Last window in which this client was counted in `stale_clients`.
    stale_win: u32,
}

impl Client {
    fn new(g: usize, nonce: u64, seg_size: u64) -> Self {
        let id = Uuid::from_u64_pair(nonce, 2 * g as u64 + 1);
        let seg_id = Uuid::from_u64_pair(nonce, 2 * g as u64 + 2);
        // A unique, fake transfer-engine endpoint on a loopback address.
        let name = format!("127.{}.{}.{}:15000", 100 + (g >> 16), (g >> 8) & 255, g & 255);
        let seg = client::segment(seg_id, &name, BASE + g as u64 * seg_size, seg_size, &name, "tcp");
        Client {
            g,
            sock: None,
            rpc: RpcClient::new(),
            out: Vec::new(),
            st: St::Idle,
            id: client::uuid(id),
            seg,
            pending: Vec::new(),
            ping_out: false,
            fetch_out: false,
            remount_out: false,
            ok_seen: false,
            lost_win: 0,
            next_put: 0,
            ops_out: 0,
            last_ok: None,
            stale_win: u32::MAX,
        }
    }

    fn pinging(&self) -> bool {
        matches!(self.st, St::Mounted | St::Ready)
    }
}

fn key(g: usize, n: u32) -> String {
    format!("c{g}-{n}")
}

/// xorshift64*: enough to pick clients and operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

// ---- a driver thread: some of the clients on one mio Poll ----

struct Driver {
    args: Arc<Args>,
    shared: Arc<Shared>,
    threads: usize,
    poll: Poll,
    clients: Vec<Client>,
    buf: Vec<u8>,
    wins: Vec<Win>,
    rng: Rng,
    ramp: usize,
    next_connect: usize,
    in_setup: usize,
    setup_failures: HashMap<String, u64>,
    version: Option<String>,
    t0: Instant,
    ping_cursor: u64,
    fetch_cursor: u64,
    op_rate: f64,
    op_t0: Instant,
    ops_issued: u64,
    /// The window this thread saw last (to close it when it ends).
    seen_phase: u32,
    ttl_ns: u64,
}

impl Driver {
    fn new(args: Arc<Args>, shared: Arc<Shared>, t: usize, nonce: u64) -> std::io::Result<Self> {
        let n = args.clients;
        let threads = args.threads;
        let (from, to) = (t * n / threads, (t + 1) * n / threads);
        let clients = (from..to).map(|g| Client::new(g, nonce, args.seg_size)).collect();
        let ramp = (args.ramp / threads).max(1);
        let windows = args.rates.len() + 1;
        let now = Instant::now();
        Ok(Driver {
            poll: Poll::new()?,
            clients,
            buf: vec![0u8; 64 * 1024],
            wins: vec![Win::new(); windows],
            rng: Rng((0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) << 32) ^ nonce) | 1),
            ramp,
            next_connect: 0,
            in_setup: 0,
            setup_failures: HashMap::new(),
            version: None,
            t0: now,
            ping_cursor: 0,
            fetch_cursor: 0,
            op_rate: 0.0,
            op_t0: now,
            ops_issued: 0,
            seen_phase: 0,
            ttl_ns: (args.ttl * 1e9) as u64,
            threads,
            args,
            shared,
        })
    }

    fn run(mut self) -> ThreadResult {
        let mut events = Events::with_capacity(1024);
        while !self.shared.stop.load(Ordering::Relaxed) {
            let phase = self.win();
            if phase != self.seen_phase {
                if self.seen_phase != 0 {
                    self.close_window(self.seen_phase);
                }
                self.seen_phase = phase;
            }
            self.ramp_up();
            let now = Instant::now();
            self.schedule(now);
            let timeout = self.next_due(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                panic!("poll: {e}");
            }
            for ev in events.iter() {
                let i = ev.token().0;
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                self.on_event(i, readable, ev.is_writable() || ev.is_write_closed());
            }
        }
        let stop = Instant::now();
        let mut unanswered = vec![0u64; METHODS.len()];
        for c in &self.clients {
            for p in &c.pending {
                self.wins[p.win as usize].unanswered += 1;
                if stop.duration_since(p.sent) > Duration::from_secs(1) {
                    unanswered[p.m as usize] += 1;
                }
            }
        }
        let not_ready = self.clients.iter().filter(|c| c.st != St::Ready).count() as u64;
        ThreadResult {
            wins: self.wins,
            setup_failures: self.setup_failures,
            unanswered,
            not_ready,
            version: self.version,
        }
    }

    /// Window `k` ended: the heartbeat gaps still open count in it.
    fn close_window(&mut self, k: u32) {
        let now = Instant::now();
        for c in &mut self.clients {
            if !c.pinging() {
                continue;
            }
            let Some(last) = c.last_ok else { continue };
            let gap = now.duration_since(last).as_nanos() as u64;
            let w = &mut self.wins[k as usize];
            w.max_gap = w.max_gap.max(gap);
            if gap >= self.ttl_ns && c.stale_win != k {
                c.stale_win = k;
                w.stale_clients += 1;
            }
        }
    }

    /// A heartbeat of client `i` was answered OK now.
    fn heartbeat(&mut self, i: usize, now: Instant) {
        let w = self.win();
        let c = &mut self.clients[i];
        if let Some(last) = c.last_ok {
            let gap = now.duration_since(last).as_nanos() as u64;
            let win = &mut self.wins[w as usize];
            win.max_gap = win.max_gap.max(gap);
            if gap >= self.ttl_ns && c.stale_win != w {
                c.stale_win = w;
                win.stale_clients += 1;
            }
        }
        c.last_ok = Some(now);
    }

    fn win(&self) -> u32 {
        self.shared.phase.load(Ordering::Relaxed)
    }

    /// Opens connections while fewer than `ramp` clients are setting up.
    fn ramp_up(&mut self) {
        while self.in_setup < self.ramp && self.next_connect < self.clients.len() {
            let i = self.next_connect;
            self.next_connect += 1;
            self.in_setup += 1;
            match TcpStream::connect(self.args.addr) {
                Ok(mut s) => {
                    match self.poll.registry().register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE) {
                        Ok(()) => {
                            self.clients[i].sock = Some(s);
                            self.clients[i].st = St::Connecting;
                        }
                        Err(e) => self.setup_failed(i, format!("register: {e}")),
                    }
                }
                Err(e) => self.setup_failed(i, format!("connect: {e}")),
            }
        }
    }

    fn setup_failed(&mut self, i: usize, why: String) {
        let c = &mut self.clients[i];
        if let Some(mut s) = c.sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.st = St::Dead;
        self.shared.outstanding.fetch_sub(c.pending.len() as u64, Ordering::Relaxed);
        c.pending.clear();
        self.in_setup -= 1;
        self.shared.failed.fetch_add(1, Ordering::Relaxed);
        *self.setup_failures.entry(why).or_default() += 1;
    }

    /// The connection of a client broke (during set-up: a set-up failure).
    fn broken(&mut self, i: usize, why: String) {
        match self.clients[i].st {
            St::Connecting | St::Handshake | St::Mounting | St::Mounted => self.setup_failed(i, why),
            St::Ready => {
                let win = self.win();
                self.wins[win as usize].disconnects += 1;
                self.shared.dead.fetch_add(1, Ordering::Relaxed);
                let c = &mut self.clients[i];
                if let Some(mut s) = c.sock.take() {
                    let _ = self.poll.registry().deregister(&mut s);
                }
                c.st = St::Dead;
                self.shared.outstanding.fetch_sub(c.pending.len() as u64, Ordering::Relaxed);
                c.pending.clear();
                eprintln!("clients: client {} lost its connection: {why}", c.g);
            }
            St::Idle | St::Dead => {}
        }
    }

    fn ready(&mut self, i: usize) {
        if self.clients[i].st != St::Ready {
            self.clients[i].st = St::Ready;
            self.in_setup -= 1;
            self.shared.ready.fetch_add(1, Ordering::Relaxed);
            for _ in 0..self.args.preload {
                self.put(i);
            }
        }
    }

    /// Sends `m(args)` on client `i`'s connection.
    fn send(&mut self, i: usize, m: M, args: Vec<Value>, n: u32) {
        let win = self.win();
        let c = &mut self.clients[i];
        if c.sock.is_none() {
            return;
        }
        let seq = c.rpc.call(m.rpc(), args, &mut c.out);
        c.pending.push(Pending { seq, sent: Instant::now(), win, m, n });
        self.shared.outstanding.fetch_add(1, Ordering::Relaxed);
        self.flush(i);
    }

    fn flush(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let Some(sock) = c.sock.as_mut() else { return };
        let mut done = 0;
        let mut err = None;
        while done < c.out.len() {
            match sock.write(&c.out[done..]) {
                Ok(0) => {
                    err = Some("write returned 0".to_string());
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    err = Some(format!("write: {e}"));
                    break;
                }
            }
        }
        c.out.drain(..done);
        if let Some(why) = err {
            self.broken(i, why);
        }
    }

    fn on_event(&mut self, i: usize, readable: bool, writable: bool) {
        let Some(c) = self.clients.get_mut(i) else { return };
        if c.st == St::Connecting {
            let Some(sock) = c.sock.as_mut() else { return };
            match sock.take_error() {
                Ok(Some(e)) | Err(e) => return self.setup_failed(i, format!("connect: {e}")),
                Ok(None) => {}
            }
            match sock.peer_addr() {
                Ok(_) => {
                    let _ = sock.set_nodelay(true);
                    c.st = St::Handshake;
                    self.send(i, M::ServiceReady, vec![], 0);
                }
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => return self.setup_failed(i, format!("connect: {e}")),
            }
        }
        if writable {
            self.flush(i);
        }
        if readable {
            self.read(i);
        }
    }

    fn read(&mut self, i: usize) {
        let mut broken = None;
        {
            let c = &mut self.clients[i];
            let Some(sock) = c.sock.as_mut() else { return };
            loop {
                match sock.read(&mut self.buf) {
                    Ok(0) => {
                        broken = Some("closed by the master".to_string());
                        break;
                    }
                    Ok(n) => {
                        c.rpc.handle_input(&self.buf[..n]);
                        if n < self.buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        broken = Some(format!("read: {e}"));
                        break;
                    }
                }
            }
        }
        // Replies that arrived before an EOF still count.
        loop {
            match self.clients[i].rpc.poll_reply() {
                Ok(Some((seq, _, result))) => self.on_reply(i, seq, result),
                Ok(None) => break,
                Err(e) => {
                    broken = Some(format!("bad reply stream: {e}"));
                    break;
                }
            }
            if self.clients[i].st == St::Dead {
                return;
            }
        }
        if let Some(why) = broken {
            self.broken(i, why);
        }
    }

    fn on_reply(&mut self, i: usize, seq: u32, result: Result<Value, CallError>) {
        let now = Instant::now();
        let c = &mut self.clients[i];
        let Some(pos) = c.pending.iter().position(|p| p.seq == seq) else { return };
        let p = c.pending.swap_remove(pos);
        self.shared.outstanding.fetch_sub(1, Ordering::Relaxed);
        if matches!(p.m, M::GetReplicaList | M::ExistKey | M::PutEnd) {
            c.ops_out = c.ops_out.saturating_sub(1);
        }
        let w = p.win as usize;
        self.wins[w].lat[p.m as usize].push(now.duration_since(p.sent).as_nanos() as u64);
        // The method's value, or the error (counted).
        let value = match result {
            Ok(v) => v,
            Err(e) => {
                let what = match e {
                    CallError::Rpc(code, _) => format!("rpc {code}"),
                    CallError::BadReply(_) => "bad reply".to_string(),
                };
                self.wins[w].error(p.m, what.clone());
                return self.call_failed(i, p.m, what);
            }
        };
        let expected = match &value {
            Value::Ok(inner) => Ok(&**inner),
            Value::Err(code) => Err(match **code {
                Value::Int(c) => c.to_string(),
                _ => "bad error".to_string(),
            }),
            _ => Err("not an expected".to_string()),
        };
        let miss = |e: &str| e == "-704" || e == "-703";
        match (p.m, expected) {
            (M::ServiceReady, Ok(v)) => {
                if self.version.is_none() {
                    self.version = v.as_bytes().map(|b| String::from_utf8_lossy(b).into_owned());
                }
                self.clients[i].st = St::Mounting;
                let c = &self.clients[i];
                let args = vec![c.seg.clone(), c.id.clone()];
                self.send(i, M::MountSegment, args, 0);
            }
            (M::MountSegment, Ok(_)) => {
                self.clients[i].st = St::Mounted;
                self.heartbeat(i, now);
            }
            (M::ReMountSegment, Ok(_)) => {
                self.heartbeat(i, now);
                self.clients[i].remount_out = false;
                self.ready(i);
            }
            (M::Ping, Ok(v)) => {
                self.clients[i].ping_out = false;
                let status = match v.as_fields() {
                    Some([_, Value::Int(s)]) => *s,
                    _ => -1,
                };
                if status == 1 {
                    self.wins[w].ping_ok += 1;
                    self.heartbeat(i, now);
                    self.clients[i].ok_seen = true;
                    // A master that never asks for a remount.
                    if self.clients[i].st == St::Mounted {
                        self.ready(i);
                    }
                } else if status == client::NEED_REMOUNT {
                    let c = &mut self.clients[i];
                    if c.ok_seen {
                        self.wins[w].ping_lost += 1;
                        self.shared.lost.fetch_add(1, Ordering::Relaxed);
                        if c.lost_win != p.win || p.win == 0 {
                            c.lost_win = p.win;
                            self.wins[w].lost_clients += 1;
                        }
                        c.ok_seen = false;
                    } else {
                        self.wins[w].ping_initial_remount += 1;
                    }
                    if !c.remount_out {
                        c.remount_out = true;
                        let args = vec![Value::List(vec![c.seg.clone()]), c.id.clone()];
                        self.send(i, M::ReMountSegment, args, 0);
                    }
                } else {
                    self.wins[w].error(M::Ping, format!("status {status}"));
                }
            }
            (M::FetchTasks, Ok(_)) => self.clients[i].fetch_out = false,
            (M::PutStart, Ok(_)) => {
                let c = &self.clients[i];
                let args = vec![
                    c.id.clone(),
                    client::object_meta(&key(c.g, p.n)),
                    Value::Int(client::REPLICA_TYPE_ALL),
                    Value::str(TENANT),
                ];
                self.send(i, M::PutEnd, args, p.n);
            }
            (M::PutEnd, Ok(_)) => {
                self.shared.puts_done[self.clients[i].g].fetch_max(p.n + 1, Ordering::Relaxed);
            }
            (M::GetReplicaList, Ok(_)) => {}
            (M::ExistKey, Ok(v)) => {
                if v.as_bool() == Some(false) {
                    self.wins[w].read_misses += 1;
                }
            }
            (M::GetReplicaList | M::ExistKey, Err(e)) if miss(&e) => self.wins[w].read_misses += 1,
            (m, Err(e)) => {
                self.wins[w].error(m, e.clone());
                self.call_failed(i, m, e);
            }
        }
    }

    /// A call answered with an error: set-up calls fail the client; the others are counted.
    fn call_failed(&mut self, i: usize, m: M, what: String) {
        if m == M::PutStart {
            let c = &mut self.clients[i];
            c.ops_out = c.ops_out.saturating_sub(1);
        }
        match m {
            M::ServiceReady | M::MountSegment => self.setup_failed(i, format!("{m:?}: {what}")),
            M::ReMountSegment => self.clients[i].remount_out = false,
            M::Ping => self.clients[i].ping_out = false,
            M::FetchTasks => self.clients[i].fetch_out = false,
            _ => {}
        }
    }

    /// Sends the Pings (and FetchTasks) and operations that are due.
    fn schedule(&mut self, now: Instant) {
        if self.shared.quiesce.load(Ordering::Relaxed) {
            return;
        }
        let m = self.clients.len() as u128;
        let since = now.duration_since(self.t0).as_nanos();
        let due = (since * m / 1_000_000_000) as u64;
        while self.ping_cursor < due {
            let i = (self.ping_cursor % m as u64) as usize;
            self.ping_cursor += 1;
            let c = &mut self.clients[i];
            if !c.pinging() {
                continue;
            }
            let w = self.shared.phase.load(Ordering::Relaxed) as usize;
            if c.ping_out {
                self.wins[w].pings_skipped += 1;
                continue;
            }
            c.ping_out = true;
            self.wins[w].pings_sent += 1;
            let args = vec![c.id.clone()];
            self.send(i, M::Ping, args, 0);
        }
        if self.args.fetch_tasks {
            let due = (since.saturating_sub(500_000_000) * m / 1_000_000_000) as u64;
            while self.fetch_cursor < due {
                let i = (self.fetch_cursor % m as u64) as usize;
                self.fetch_cursor += 1;
                let c = &mut self.clients[i];
                if c.pinging() && !c.fetch_out {
                    c.fetch_out = true;
                    let args = vec![c.id.clone(), Value::UInt(16)];
                    self.send(i, M::FetchTasks, args, 0);
                }
            }
        }
        let rate = self.shared.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0 / self.threads as f64;
        if rate != self.op_rate {
            self.op_rate = rate;
            self.op_t0 = now;
            self.ops_issued = 0;
        }
        if rate > 0.0 {
            let due = (now.duration_since(self.op_t0).as_secs_f64() * rate) as u64;
            let late = due.saturating_sub(self.ops_issued);
            if late > rate as u64 + 1 {
                let w = self.win() as usize;
                self.wins[w].ops_behind += late - 1;
                self.ops_issued = due - 1;
            }
            while self.ops_issued < due {
                self.ops_issued += 1;
                self.operation();
            }
        }
    }

    /// One operation of the mix on a random ready client.
    fn operation(&mut self) {
        let n = self.clients.len() as u64;
        let mut pick = None;
        for _ in 0..8 {
            let i = self.rng.below(n) as usize;
            if self.clients[i].st == St::Ready {
                pick = Some(i);
                break;
            }
        }
        let Some(i) = pick else { return };
        let w = self.win() as usize;
        if self.clients[i].ops_out >= self.args.max_ops {
            self.wins[w].ops_dropped_busy += 1;
            return;
        }
        self.wins[w].ops += 1;
        let [put, get, exist] = self.args.mix;
        let r = self.rng.below(u64::from(put + get + exist)) as u32;
        if r < put {
            return self.put(i);
        }
        // Half on the client's own keys, half on another client's (one that has keys, if
        // one of a few random picks has).
        let mut owner = self.clients[i].g;
        if self.rng.below(2) == 1 {
            for _ in 0..4 {
                owner = self.rng.below(self.args.clients as u64) as usize;
                if self.shared.puts_done[owner].load(Ordering::Relaxed) > 0 {
                    break;
                }
            }
        }
        let done = self.shared.puts_done[owner].load(Ordering::Relaxed);
        let k = if done == 0 { key(owner, u32::MAX) } else { key(owner, self.rng.below(u64::from(done)) as u32) };
        let m = if r < put + get { M::GetReplicaList } else { M::ExistKey };
        self.clients[i].ops_out += 1;
        self.send(i, m, vec![Value::str(&k), Value::str(TENANT)], 0);
    }

    /// A put of a new key of client `i` (PutStart; its reply sends the PutEnd).
    fn put(&mut self, i: usize) {
        let c = &mut self.clients[i];
        c.ops_out += 1;
        let k = c.next_put;
        c.next_put += 1;
        let args = vec![
            c.id.clone(),
            Value::str(&key(c.g, k)),
            Value::UInt(self.args.value_size),
            client::replicate_config(1),
            Value::str(TENANT),
        ];
        self.send(i, M::PutStart, args, k);
    }

    /// How long the loop may sleep: until the next Ping or operation is due (at most 20 ms).
    fn next_due(&self, now: Instant) -> Duration {
        let m = self.clients.len() as u128;
        let next_ping = self.t0 + Duration::from_nanos(((self.ping_cursor as u128 + 1) * 1_000_000_000 / m) as u64);
        let mut next = next_ping.min(now + Duration::from_millis(20));
        if self.op_rate > 0.0 {
            next = next.min(self.op_t0 + Duration::from_secs_f64((self.ops_issued + 1) as f64 / self.op_rate));
        }
        next.saturating_duration_since(now)
    }
}

// ---- measurements of processes ----

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// utime + stime of a process (all threads), seconds.
fn proc_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state is field 3 of stat(5), utime 14 and stime 15.
    Some((f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?) as f64 / clk_tck())
}

/// utime + stime of each thread of a process ("name/tid"), seconds.
fn proc_threads_cpu(pid: u32) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for t in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else { continue };
        let (Some((head, rest)), tid) = (stat.rsplit_once(')'), t.file_name().to_string_lossy().into_owned()) else {
            continue;
        };
        let name = head.split_once('(').map_or("?", |(_, n)| n);
        let f: Vec<&str> = rest.split_whitespace().collect();
        if let (Some(u), Some(s)) =
            (f.get(11).and_then(|v| v.parse::<u64>().ok()), f.get(12).and_then(|v| v.parse::<u64>().ok()))
        {
            out.push((format!("{name}/{tid}"), (u + s) as f64 / clk_tck()));
        }
    }
    out
}

/// Time the threads of a process waited for a CPU while runnable (schedstat), seconds.
fn proc_runq_wait(pid: u32) -> Option<f64> {
    let mut total = 0u64;
    let mut seen = false;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            if let Some(w) = s.split_whitespace().nth(1).and_then(|w| w.parse::<u64>().ok()) {
                total += w;
                seen = true;
            }
        }
    }
    seen.then_some(total as f64 / 1e9)
}

fn proc_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// This process's CPU (all threads), seconds.
fn own_cpu() -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Busy time of the whole machine (all CPUs, less idle and iowait), seconds.
fn machine_busy() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = s.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|x| x.parse().ok()).collect();
    (v.len() == 8).then(|| (v.iter().sum::<u64>() - v[3] - v[4]) as f64 / clk_tck())
}

struct Sample {
    at: Instant,
    master: Option<f64>,
    /// Per thread of the master ("name/tid"): utime + stime, seconds.
    master_threads: Vec<(String, f64)>,
    runq: Option<f64>,
    own: f64,
    machine: Option<f64>,
}

fn sample(pid: Option<u32>) -> Sample {
    Sample {
        at: Instant::now(),
        master: pid.and_then(proc_cpu),
        master_threads: pid.map(proc_threads_cpu).unwrap_or_default(),
        runq: pid.and_then(proc_runq_wait),
        own: own_cpu(),
        machine: machine_busy(),
    }
}

/// % of one core between two samples.
fn pct_of(a: Option<f64>, b: Option<f64>, wall: f64) -> Json {
    match (a, b) {
        (Some(a), Some(b)) if wall > 0.0 => json!(round2((b - a) / wall * 100.0)),
        _ => Json::Null,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// ---- /metrics ----

/// `GET url` (http only), the body.
fn http_get(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let addr = hostport.to_socket_addrs().ok()?.next()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut body = &raw[split + 4..];
    if !head.starts_with("http/1.1 200") && !head.starts_with("http/1.0 200") {
        return None;
    }
    if !head.contains("transfer-encoding: chunked") {
        return Some(String::from_utf8_lossy(body).into_owned());
    }
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&body[..eol]).ok()?.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(body.get(eol + 2..eol + 2 + size)?);
        body = body.get(eol + 4 + size..)?;
    }
}

/// The sum of the samples of metric `name` (any labels).
fn metric(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let v = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = v {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

#[derive(Default)]
struct Scrape {
    active: Option<f64>,
    expired: Option<f64>,
}

fn scrape(url: &Option<String>) -> Scrape {
    let Some(text) = url.as_deref().and_then(http_get) else { return Scrape::default() };
    Scrape { active: metric(&text, "master_active_clients"), expired: metric(&text, "master_expired_clients_total") }
}

// ---- RLIMIT_NOFILE ----

fn raise_nofile(need: u64) {
    // SAFETY: getrlimit/setrlimit on a valid struct.
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return;
    }
    if rl.rlim_cur >= need {
        return;
    }
    if rl.rlim_max >= need {
        rl.rlim_cur = need;
    } else {
        // Root may raise the hard limit (up to fs.nr_open).
        rl = libc::rlimit { rlim_cur: need, rlim_max: need };
    }
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
        let mut cur = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) };
        eprintln!(
            "clients: {need} open files are needed, and the hard limit of open files is {} (ulimit -Hn): \
             raise it (as root: `ulimit -Hn {need}`, LimitNOFILE= of a systemd unit, or nofile in \
             /etc/security/limits.conf) or run fewer --clients. The master needs as many.",
            cur.rlim_max
        );
        std::process::exit(2);
    }
}

// ---- results ----

fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn lat_json(v: &mut [u64]) -> Json {
    v.sort_unstable();
    json!({
        "count": v.len(),
        "p50_us": us(percentile(v, 0.50)),
        "p99_us": us(percentile(v, 0.99)),
        "p999_us": us(percentile(v, 0.999)),
        "max_us": us(v.last().copied().unwrap_or(0)),
    })
}

fn methods_json(w: &mut Win) -> (Json, Json) {
    let mut out = serde_json::Map::new();
    let mut all = Vec::new();
    for m in METHODS {
        let lat = &mut w.lat[m as usize];
        if lat.is_empty() && w.errors[m as usize].is_empty() {
            continue;
        }
        all.extend_from_slice(lat);
        let mut j = lat_json(lat);
        j["errors"] = json!(w.errors[m as usize]);
        out.insert(m.name(), j);
    }
    (Json::Object(out), lat_json(&mut all))
}

fn main() {
    let args = Arc::new(parse_args());
    raise_nofile(args.clients as u64 + 64);
    let log = |msg: String| eprintln!("[clients {}] {msg}", args.label);

    let idle = if args.baseline > 0.0 {
        let a = sample(args.pid);
        std::thread::sleep(Duration::from_secs_f64(args.baseline));
        let b = sample(args.pid);
        pct_of(a.master, b.master, b.at.duration_since(a.at).as_secs_f64())
    } else {
        Json::Null
    };
    let rss_before = args.pid.and_then(proc_rss_kib);
    let metrics_before = scrape(&args.metrics);

    let shared = Arc::new(Shared {
        phase: AtomicU32::new(0),
        rate_milli: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        quiesce: AtomicBool::new(false),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        dead: AtomicUsize::new(0),
        lost: AtomicU64::new(0),
        outstanding: AtomicU64::new(0),
        puts_done: (0..args.clients).map(|_| AtomicU32::new(0)).collect(),
    });
    let nonce = Uuid::new_v4().as_u64_pair().0;
    log(format!("{} clients on {} thread(s) against {}", args.clients, args.threads, args.addr));
    let setup_start = Instant::now();
    let setup_cpu = sample(args.pid);
    let threads: Vec<_> = (0..args.threads)
        .map(|t| {
            let (args, shared) = (args.clone(), shared.clone());
            std::thread::Builder::new()
                .name(format!("clients-{t}"))
                .spawn(move || Driver::new(args, shared, t, nonce).expect("mio poll").run())
                .expect("spawn")
        })
        .collect();

    // Set-up: every client connected, mounted and remounted (or failed).
    let mut last_log = Instant::now();
    let setup_end = loop {
        std::thread::sleep(Duration::from_millis(50));
        let (ready, failed) = (shared.ready.load(Ordering::Relaxed), shared.failed.load(Ordering::Relaxed));
        if ready + failed >= args.clients {
            break Instant::now();
        }
        if setup_start.elapsed().as_secs_f64() > args.setup_timeout {
            log(format!("set-up timed out: {ready} ready, {failed} failed of {}", args.clients));
            break Instant::now();
        }
        if last_log.elapsed() > Duration::from_secs(2) {
            last_log = Instant::now();
            log(format!("set-up: {ready} ready, {failed} failed of {}", args.clients));
        }
    };
    let setup_secs = setup_end.duration_since(setup_start).as_secs_f64();
    let setup_sample = sample(args.pid);
    let (ready, failed) = (shared.ready.load(Ordering::Relaxed), shared.failed.load(Ordering::Relaxed));
    log(format!("set-up done in {setup_secs:.1} s: {ready} ready, {failed} failed"));
    std::thread::sleep(Duration::from_secs_f64(args.settle));

    // The measured windows.
    let mut windows = Vec::new();
    for (k, &rate) in args.rates.iter().enumerate() {
        shared.rate_milli.store((rate * 1000.0) as u64, Ordering::Relaxed);
        if rate > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(args.settle));
        }
        let m0 = scrape(&args.metrics);
        let lost0 = shared.lost.load(Ordering::Relaxed);
        let s0 = sample(args.pid);
        shared.phase.store(k as u32 + 1, Ordering::Relaxed);
        let end = s0.at + Duration::from_secs_f64(args.secs);
        let (mut active_min, mut active_max): (Option<f64>, Option<f64>) = (None, None);
        let mut fold = |s: &Scrape| {
            if let Some(a) = s.active {
                active_min = Some(active_min.map_or(a, |m| m.min(a)));
                active_max = Some(active_max.map_or(a, |m| m.max(a)));
            }
        };
        fold(&m0);
        while Instant::now() < end {
            std::thread::sleep(
                end.saturating_duration_since(Instant::now()).min(Duration::from_secs_f64(args.scrape_every)),
            );
            if Instant::now() + Duration::from_millis(200) < end {
                fold(&scrape(&args.metrics));
            }
        }
        shared.phase.store(0, Ordering::Relaxed);
        let s1 = sample(args.pid);
        let m1 = scrape(&args.metrics);
        fold(&m1);
        let wall = s1.at.duration_since(s0.at).as_secs_f64();
        let lost = shared.lost.load(Ordering::Relaxed) - lost0;
        let j = json!({
            "ops_per_sec_target": rate,
            "secs": round2(wall),
            "master_cpu_pct": pct_of(s0.master, s1.master, wall),
            "master_runq_wait_pct": pct_of(s0.runq, s1.runq, wall),
            // Threads that used at least 0.5% of a core.
            "master_threads_cpu_pct": s1
                .master_threads
                .iter()
                .filter_map(|(k, b)| {
                    let a = s0.master_threads.iter().find(|(k0, _)| k0 == k).map_or(0.0, |x| x.1);
                    let p = (b - a) / wall * 100.0;
                    (p >= 0.5).then(|| (k.clone(), json!(round2(p))))
                })
                .collect::<serde_json::Map<String, Json>>(),
            "tool_cpu_pct": pct_of(Some(s0.own), Some(s1.own), wall),
            "machine_busy_cores": match (s0.machine, s1.machine) {
                (Some(a), Some(b)) => json!(round2((b - a) / wall)),
                _ => Json::Null,
            },
            "active_clients_min": active_min,
            "active_clients_max": active_max,
            "expired_clients_increase": match (m0.expired, m1.expired) {
                (Some(a), Some(b)) => json!(b - a),
                _ => Json::Null,
            },
        });
        log(format!(
            "window {} ({rate} ops/s, {wall:.1} s): master CPU {}%, tool CPU {}%, active {:?}..{:?}, lost {lost}",
            k + 1,
            j["master_cpu_pct"],
            j["tool_cpu_pct"],
            active_min,
            active_max
        ));
        windows.push((j, wall));
    }
    // Calls of the last window still outstanding: wait for them (bounded), sending nothing new.
    shared.quiesce.store(true, Ordering::Relaxed);
    let drain_end = Instant::now() + Duration::from_secs_f64(args.drain);
    while shared.outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < drain_end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = shared.outstanding.load(Ordering::Relaxed);
    if left > 0 {
        log(format!("{left} calls still unanswered after {} s", args.drain));
    }
    shared.stop.store(true, Ordering::Relaxed);
    let results: Vec<ThreadResult> = threads.into_iter().map(|t| t.join().expect("driver thread")).collect();
    let rss_after = args.pid.and_then(proc_rss_kib);
    let metrics_after = scrape(&args.metrics);

    // Fold the threads' results.
    let mut wins = vec![Win::new(); args.rates.len() + 1];
    let mut setup_failures: HashMap<String, u64> = HashMap::new();
    let mut unanswered = vec![0u64; METHODS.len()];
    let mut not_ready = 0;
    let mut version = None;
    for r in results {
        for (i, w) in r.wins.into_iter().enumerate() {
            wins[i].merge(w);
        }
        for (k, v) in r.setup_failures {
            *setup_failures.entry(k).or_default() += v;
        }
        for (i, u) in r.unanswered.into_iter().enumerate() {
            unanswered[i] += u;
        }
        not_ready += r.not_ready;
        version = version.or(r.version);
    }
    let mut out_windows = Vec::new();
    for (k, (mut j, wall)) in windows.into_iter().enumerate() {
        let w = &mut wins[k + 1];
        let (methods, all) = methods_json(w);
        j["ops_per_sec"] = json!(round2(w.ops as f64 / wall));
        j["ops"] = json!(w.ops);
        j["ops_behind"] = json!(w.ops_behind);
        j["read_misses"] = json!(w.read_misses);
        j["pings"] = json!({
            "sent": w.pings_sent,
            "per_sec": round2(w.pings_sent as f64 / wall),
            "ok": w.ping_ok,
            "need_remount_after_ok": w.ping_lost,
            "lost_clients": w.lost_clients,
            "initial_need_remount": w.ping_initial_remount,
            "skipped_previous_unanswered": w.pings_skipped,
        });
        j["disconnects"] = json!(w.disconnects);
        j["ops_dropped_busy"] = json!(w.ops_dropped_busy);
        j["max_heartbeat_gap_s"] = json!(round2(w.max_gap as f64 / 1e9));
        j["clients_gap_over_ttl"] = json!(w.stale_clients);
        j["unanswered_calls"] = json!(w.unanswered);
        j["methods"] = methods;
        j["all_rpcs"] = all;
        out_windows.push(j);
    }
    let (setup_methods, _) = methods_json(&mut wins[0]);
    let unanswered: serde_json::Map<String, Json> = METHODS
        .iter()
        .filter(|m| unanswered[**m as usize] > 0)
        .map(|m| (m.name(), json!(unanswered[*m as usize])))
        .collect();
    let out = json!({
        "label": args.label,
        "addr": args.addr.to_string(),
        "master_version": version,
        "clients": args.clients,
        "tool_threads": args.threads,
        "value_size": args.value_size,
        "mix": {"put": args.mix[0], "get": args.mix[1], "exist": args.mix[2]},
        "fetch_tasks": args.fetch_tasks,
        "ramp": args.ramp,
        "scrape_every": args.scrape_every,
        "preload": args.preload,
        "secs": args.secs,
        "ttl": args.ttl,
        "max_ops_per_client": args.max_ops,
        "master_pid": args.pid,
        "master_idle_cpu_pct": idle,
        "master_rss_kib_before": rss_before,
        "master_rss_kib_after": rss_after,
        "setup": {
            "secs": round2(setup_secs),
            "ready": ready,
            "failed": failed,
            "failures": setup_failures,
            "master_cpu_pct": pct_of(setup_cpu.master, setup_sample.master, setup_secs),
            "tool_cpu_pct": pct_of(Some(setup_cpu.own), Some(setup_sample.own), setup_secs),
            "methods": setup_methods,
            // Pings before and between the windows: NEED_REMOUNT after OK here is a loss too.
            "pings_lost_outside_windows": wins[0].ping_lost,
            "disconnects_outside_windows": wins[0].disconnects,
        },
        "windows": out_windows,
        "end": {
            "not_ready": not_ready,
            "disconnected": shared.dead.load(Ordering::Relaxed),
            "need_remount_after_ok_total": shared.lost.load(Ordering::Relaxed),
            "unanswered_calls": unanswered,
            "active_clients_before": metrics_before.active,
            "active_clients_after": metrics_after.active,
            "expired_clients_total_before": metrics_before.expired,
            "expired_clients_total_after": metrics_after.expired,
        },
    });
    println!("{out}");
}
