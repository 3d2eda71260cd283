//! Store-node mode (`--master HOST:PORT`, docs/cluster.md): the driver of the core's
//! [`mc_core::node`] state machines. It owns the one RPC connection to the master (requests
//! pipelined, replies matched by seq on a reader thread), runs the membership (register,
//! heartbeat, remount, reconnect, leave) on a thread of its own, and is the process's
//! [`DataPlane`]: a REST request's [`TransferOp::Cluster`] runs as an [`OpRun`] whose calls go
//! to the master and whose moves are a memcpy (this node's memory) or a transfer of the TE
//! initiator (any other node). Every decision is in the core; this file only does the IO.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mc_core::node::{
    Action, CallOutcomeError, CallResult, ClusterOp, ClusterReply, Membership, Move, MovePath, NodeIdentity,
    NodeSegment, NodeState, OpRun, Step,
};
use mc_core::rpc::client::RpcClient;
use mc_core::rpc::{Rpc, Value};
use mc_core::store::Store;
use mc_core::transfer::{DataPlane, Transfer, TransferOp, TransferOutcome};
use mc_rdma::TcpDataPlane;

use crate::ha::etcd::Etcd;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type Callback = Box<dyn FnOnce(CallResult) + Send>;

/// What the membership thread hears about.
enum Event {
    Reply(u64, CallResult),
    Lost(String),
    Leave,
}

struct LinkState {
    client: RpcClient,
    waiting: HashMap<u32, (Rpc, Instant, Callback)>,
    /// Frames waiting for the writer thread, which sends whatever accumulated in one write
    /// (calls made while it writes go out together): no request thread waits on a send.
    outbox: Vec<u8>,
    /// Bumped by every connect and disconnect: the reader and writer of an older
    /// connection stop, and their failures no longer count.
    generation: u64,
    connected: bool,
    reason: String,
}

/// The RPC connection to the master.
struct MasterLink {
    /// For messages: what `--master` said.
    addr: String,
    target: MasterAddr,
    state: Mutex<LinkState>,
    /// Signalled when `state.outbox` gets frames or the connection changes.
    outbox_ready: Condvar,
    /// The socket (for shutting it down); the reader and writer threads own clones.
    socket: Mutex<Option<TcpStream>>,
    node: Arc<NodeState>,
    events: Sender<Event>,
}

/// Where the master is: a fixed `HOST:PORT`, or (`etcd://HOST:PORT[;HOST:PORT...]`, as
/// upstream's client) whatever the HA leader publishes as `master_view`, read at every connect.
pub enum MasterAddr {
    Fixed(String),
    Etcd { etcd: Etcd, view_key: Vec<u8> },
}

impl MasterAddr {
    /// `master` as given to `--master`; `cluster_id` names the view of an `etcd://` one.
    pub fn parse(master: &str, cluster_id: &str) -> Result<Self, String> {
        let Some(list) = master.strip_prefix("etcd://") else { return Ok(Self::Fixed(master.to_string())) };
        let endpoints: Vec<String> =
            list.split([';', ',']).map(str::trim).filter(|e| !e.is_empty()).map(String::from).collect();
        if endpoints.is_empty() {
            return Err(format!("--master {master:?} names no etcd endpoint (etcd://HOST:PORT[;HOST:PORT...])"));
        }
        let view_key = mc_core::ha::view_key(cluster_id).into_bytes();
        Ok(Self::Etcd { etcd: Etcd::new(&endpoints, Duration::from_secs(2)), view_key })
    }

    /// The master's RPC address now.
    fn current(&self) -> Result<String, String> {
        match self {
            Self::Fixed(a) => Ok(a.clone()),
            Self::Etcd { etcd, view_key } => {
                let (kvs, _, _) = etcd.range(view_key, None, 0, 0)?;
                let kv = kvs
                    .into_iter()
                    .next()
                    .ok_or_else(|| format!("no leader: etcd has no {}", String::from_utf8_lossy(view_key)))?;
                String::from_utf8(kv.value).map_err(|_| "the master_view in etcd is not UTF-8".to_string())
            }
        }
    }
}

impl MasterLink {
    fn resolve(&self) -> Result<SocketAddr, String> {
        let addr = self.target.current()?;
        addr.to_socket_addrs()
            .map_err(|e| format!("{addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr} has no address"))
    }

    /// Connects (blocking, bounded); the previous connection, if any, is dropped.
    fn connect(self: &Arc<Self>) -> Result<(), String> {
        let addr = self.resolve()?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let reader = stream.try_clone().map_err(|e| e.to_string())?;
        let out = stream.try_clone().map_err(|e| e.to_string())?;
        *lock(&self.socket) = Some(stream);
        let generation = {
            let mut st = lock(&self.state);
            st.client = RpcClient::new();
            st.outbox.clear();
            st.generation += 1;
            st.connected = true;
            st.generation
        };
        let me = self.clone();
        std::thread::Builder::new()
            .name("master-rpc".into())
            .spawn(move || me.read_loop(reader, generation))
            .map_err(|e| e.to_string())?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("master-rpc-out".into())
            .spawn(move || me.write_loop(out, generation))
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn write_loop(self: Arc<Self>, mut sock: TcpStream, generation: u64) {
        let mut batch = Vec::new();
        loop {
            {
                let mut st = lock(&self.state);
                while st.outbox.is_empty() && st.generation == generation {
                    st = self.outbox_ready.wait(st).unwrap_or_else(PoisonError::into_inner);
                }
                if st.generation != generation {
                    return;
                }
                std::mem::swap(&mut batch, &mut st.outbox);
            }
            if let Err(e) = sock.write_all(&batch) {
                self.lost(generation, &e.to_string());
                return;
            }
            batch.clear();
        }
    }

    /// Closes the connection: every call in flight fails with `why`.
    fn disconnect(&self, why: &str) {
        if let Some(s) = lock(&self.socket).take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        let waiting: Vec<_> = {
            let mut st = lock(&self.state);
            st.connected = false;
            st.generation += 1;
            st.outbox.clear();
            st.reason = why.to_string();
            st.client.take_outstanding();
            st.waiting.drain().map(|(_, w)| w).collect()
        };
        self.outbox_ready.notify_all();
        for (rpc, sent, cb) in waiting {
            self.node.record_rpc(rpc, sent.elapsed(), true);
            cb(Err(CallOutcomeError::Unreachable(why.to_string())));
        }
    }

    /// Sends `rpc(args)`; `cb` gets the reply (or the failure) exactly once.
    fn call(&self, rpc: Rpc, args: Vec<Value>, cb: Callback) {
        let refused = {
            let mut st = lock(&self.state);
            if st.connected {
                let st = &mut *st;
                let was_empty = st.outbox.is_empty();
                let seq = st.client.call(rpc, args, &mut st.outbox);
                st.waiting.insert(seq, (rpc, Instant::now(), cb));
                if was_empty {
                    self.outbox_ready.notify_one();
                }
                None
            } else {
                let why =
                    if st.reason.is_empty() { format!("not connected to {}", self.addr) } else { st.reason.clone() };
                Some((why, cb))
            }
        };
        if let Some((why, cb)) = refused {
            self.node.record_rpc(rpc, Duration::ZERO, true);
            cb(Err(CallOutcomeError::Unreachable(why)));
        }
    }

    /// Connection `generation` failed (nothing happens when it was replaced already).
    fn lost(&self, generation: u64, why: &str) {
        if lock(&self.state).generation != generation {
            return;
        }
        let why = format!("connection to the master at {} lost: {why}", self.addr);
        self.disconnect(&why);
        let _ = self.events.send(Event::Lost(why));
    }

    fn read_loop(self: Arc<Self>, mut sock: TcpStream, generation: u64) {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match sock.read(&mut buf) {
                Ok(0) => Err("closed by the master".to_string()),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e.to_string()),
            };
            let mut ready: Vec<(Rpc, Instant, Callback, CallResult)> = Vec::new();
            let broken = {
                let mut st = lock(&self.state);
                if st.generation != generation {
                    return;
                }
                match n {
                    Err(why) => Some(why),
                    Ok(n) => {
                        st.client.handle_input(&buf[..n]);
                        loop {
                            match st.client.poll_reply() {
                                Ok(None) => break None,
                                Ok(Some((seq, _, result))) => {
                                    if let Some((rpc, sent, cb)) = st.waiting.remove(&seq) {
                                        ready.push((rpc, sent, cb, result.map_err(CallOutcomeError::Call)));
                                    }
                                }
                                Err(e) => break Some(e.0),
                            }
                        }
                    }
                }
            };
            for (rpc, sent, cb, result) in ready {
                let failed = match &result {
                    Ok(Value::Err(_)) | Err(_) => true,
                    Ok(_) => false,
                };
                self.node.record_rpc(rpc, sent.elapsed(), failed);
                cb(result);
            }
            if let Some(why) = broken {
                self.lost(generation, &why);
                return;
            }
        }
    }
}

struct Inner {
    link: Arc<MasterLink>,
    te: Arc<TcpDataPlane>,
    store: Arc<Store>,
    id: NodeIdentity,
    node: Arc<NodeState>,
    membership: Mutex<Membership>,
}

/// The data plane of a store node: cluster operations, and plain transfers for the rest.
pub struct NodePlane {
    inner: Arc<Inner>,
    events: Sender<Event>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

type Done = Box<dyn FnOnce(TransferOutcome) + Send>;

/// What a finished operation changes in the membership.
#[derive(Clone)]
enum Effect {
    None,
    Mounted(Vec<NodeSegment>),
    Unmounted(Vec<uuid::Uuid>),
}

impl NodePlane {
    /// Starts the node: the membership thread connects to `master` and registers
    /// `segments` (this node's start-up memory). `te` moves bytes to other nodes.
    pub fn start(
        master: &str,
        target: MasterAddr,
        id: NodeIdentity,
        segments: Vec<NodeSegment>,
        store: Arc<Store>,
        te: Arc<TcpDataPlane>,
        node: Arc<NodeState>,
    ) -> Result<Arc<Self>, String> {
        let (tx, rx) = channel();
        let link = Arc::new(MasterLink {
            addr: master.to_string(),
            target,
            state: Mutex::new(LinkState {
                client: RpcClient::new(),
                waiting: HashMap::new(),
                outbox: Vec::new(),
                generation: 0,
                connected: false,
                reason: format!("connecting to the master at {master}"),
            }),
            outbox_ready: Condvar::new(),
            socket: Mutex::new(None),
            node: node.clone(),
            events: tx.clone(),
        });
        let membership = Mutex::new(Membership::new(id.clone(), master, segments, Instant::now()));
        let inner = Arc::new(Inner { link, te, store, id, node, membership });
        let me = inner.clone();
        let thread = std::thread::Builder::new()
            .name("membership".into())
            .spawn(move || membership_loop(&me, &rx))
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(Self { inner, events: tx, thread: Mutex::new(Some(thread)) }))
    }

    /// Leaves the cluster: unmounts every segment from the master (bounded wait), then
    /// closes the connection.
    pub fn leave(&self) {
        let _ = self.events.send(Event::Leave);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

fn membership_loop(inner: &Arc<Inner>, rx: &Receiver<Event>) {
    loop {
        // Run what is due until the membership asks for nothing more.
        loop {
            let actions: Vec<Action> = {
                let mut m = lock(&inner.membership);
                m.handle_timeout(Instant::now());
                let actions = std::iter::from_fn(|| m.poll_action()).collect();
                inner.node.set_membership(m.health(), m.stats());
                actions
            };
            if actions.is_empty() {
                break;
            }
            for a in actions {
                match a {
                    Action::Connect => {
                        let r = inner.link.connect();
                        let mut m = lock(&inner.membership);
                        match r {
                            Ok(()) => m.handle_connected(Instant::now()),
                            Err(why) => m.handle_connect_failed(Instant::now(), &why),
                        }
                    }
                    Action::Call { token, rpc, args } => {
                        let tx = inner.link.events.clone();
                        inner.link.call(rpc, args, Box::new(move |r| drop(tx.send(Event::Reply(token, r)))));
                    }
                    Action::Disconnect => inner.link.disconnect("closed by this node"),
                }
            }
        }
        let (next, left) = {
            let m = lock(&inner.membership);
            (m.poll_timeout(), m.has_left())
        };
        if left {
            return;
        }
        let wait = next.map_or(Duration::from_millis(500), |t| t.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(wait.min(Duration::from_millis(500))) {
            Ok(ev) => {
                let mut m = lock(&inner.membership);
                let now = Instant::now();
                match ev {
                    Event::Reply(token, r) => m.handle_reply(now, token, r),
                    Event::Lost(why) => m.handle_disconnected(now, &why),
                    // Bounded by the membership: its unmounts get 2 s, then it has left.
                    Event::Leave => m.leave(now),
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl DataPlane for NodePlane {
    fn submit(&self, transfer: Transfer, done: Done) {
        match transfer.op {
            TransferOp::Cluster(op) => {
                let effect = match &op {
                    ClusterOp::Mount { segments } => Effect::Mounted(segments.clone()),
                    ClusterOp::Unmount { ids, .. } => Effect::Unmounted(ids.clone()),
                    _ => Effect::None,
                };
                let (run, step) = OpRun::start(op, &self.inner.id);
                drive(self.inner.clone(), run, step, transfer.deadline, effect, done);
            }
            _ => self.inner.te.submit(transfer, done),
        }
    }
}

/// Carries `run` on from `step` until it waits for a reply or a transfer (continued by
/// their callbacks) or is done.
fn drive(inner: Arc<Inner>, mut run: OpRun, mut step: Step, deadline: Instant, effect: Effect, done: Done) {
    loop {
        match step {
            Step::Done(reply) => {
                apply_effect(&inner, &effect, &reply);
                done(TransferOutcome::Cluster(reply));
                return;
            }
            Step::Call(rpc, args) => {
                let me = inner.clone();
                inner.link.call(
                    rpc,
                    args,
                    Box::new(move |r| {
                        let s = run.on_reply(r);
                        drive(me, run, s, deadline, effect, done);
                    }),
                );
                return;
            }
            Step::Move(moves) => {
                if moves.iter().all(|m| m.local) {
                    let outcomes = moves.iter().map(|m| local_move(&inner, m)).collect();
                    step = run.on_moved(outcomes);
                    continue;
                }
                start_moves(inner, run, moves, deadline, effect, done);
                return;
            }
        }
    }
}

/// Runs `moves` (local ones here, the others on the data plane); the last outcome
/// continues `run`.
fn start_moves(inner: Arc<Inner>, run: OpRun, moves: Vec<Move>, deadline: Instant, effect: Effect, done: Done) {
    struct Pending {
        outcomes: Vec<Option<TransferOutcome>>,
        left: usize,
        rest: Option<(OpRun, Effect, Done)>,
    }
    let n = moves.len();
    let pending = Arc::new(Mutex::new(Pending { outcomes: vec![None; n], left: n, rest: Some((run, effect, done)) }));
    let finish = {
        let inner = inner.clone();
        move |pending: &Arc<Mutex<Pending>>, i: usize, o: TransferOutcome| {
            let next = {
                let mut p = lock(pending);
                p.outcomes[i] = Some(o);
                p.left -= 1;
                if p.left == 0 {
                    let outs = p.outcomes.iter_mut().map(|o| o.take().expect("every move ended")).collect::<Vec<_>>();
                    p.rest.take().map(|r| (r, outs))
                } else {
                    None
                }
            };
            if let Some(((mut run, effect, done), outs)) = next {
                let s = run.on_moved(outs);
                drive(inner.clone(), run, s, deadline, effect, done);
            }
        }
    };
    for (i, m) in moves.into_iter().enumerate() {
        if m.local {
            let o = local_move(&inner, &m);
            finish(&pending, i, o);
            continue;
        }
        let (p, f, node) = (pending.clone(), finish.clone(), inner.node.clone());
        let (read, len) = direction(&m.op);
        let started = Instant::now();
        let t = Transfer { id: i as u64, endpoint: m.endpoint, op: m.op, deadline };
        inner.te.submit(
            t,
            Box::new(move |o| {
                record(&node, MovePath::Remote, read, len, started, &o);
                f(&p, i, o);
            }),
        );
    }
}

/// Whether a move reads, and how many bytes it moves.
fn direction(op: &TransferOp) -> (bool, u64) {
    match op {
        TransferOp::Read { len, .. } => (true, *len),
        TransferOp::Write { data, .. } => (false, data.len() as u64),
        TransferOp::Cluster(_) | TransferOp::Durable { .. } => (true, 0),
    }
}

/// Counts one move in the node's metrics.
fn record(node: &NodeState, path: MovePath, read: bool, len: u64, started: Instant, o: &TransferOutcome) {
    node.record_move(path, read, len, started.elapsed(), !matches!(o, TransferOutcome::Failed(_)));
}

/// A move within this node's memory.
fn local_move(inner: &Inner, m: &Move) -> TransferOutcome {
    let started = Instant::now();
    let (read, len) = direction(&m.op);
    let out = match &m.op {
        TransferOp::Read { addr, len } => match inner.store.open_raw_range(*addr, *len) {
            Ok(r) => TransferOutcome::Read(r.bytes().to_vec()),
            Err(e) => TransferOutcome::Failed(format!("{}: {e}", m.endpoint)),
        },
        TransferOp::Write { addr, data } => match inner.store.open_raw_range(*addr, data.len() as u64) {
            Ok(mut r) => {
                r.write_at(0, data);
                TransferOutcome::Written
            }
            Err(e) => TransferOutcome::Failed(format!("{}: {e}", m.endpoint)),
        },
        TransferOp::Cluster(_) | TransferOp::Durable { .. } => TransferOutcome::Failed("not a move".into()),
    };
    record(&inner.node, MovePath::Local, read, len, started, &out);
    out
}

fn apply_effect(inner: &Inner, effect: &Effect, reply: &ClusterReply) {
    let mut m = lock(&inner.membership);
    match (effect, reply) {
        (Effect::Mounted(segs), ClusterReply::Mounted) => m.add_segments(segs.iter().cloned()),
        (Effect::Unmounted(ids), ClusterReply::Unmounted(_)) => m.remove_segments(ids),
        _ => {}
    }
}
