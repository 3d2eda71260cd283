//! Store-node state machines against a real core master over its RPC connection (bytes in,
//! bytes out, through `rpc::client`), with the nodes' memory as byte vectors and a virtual
//! clock: every RPC, move, timer and backoff runs in microseconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::*;
use crate::platform::FakePlatform;
use crate::rpc::client::{self, RpcClient};
use crate::rpc::{RpcConnection, RpcService, Value};
use crate::transfer::{TransferOp, TransferOutcome};
use crate::{Config, Master, Now};

const SEG: u64 = 1 << 20;

/// A master and some fake nodes, each with its memory at a distinct base address.
struct Cluster {
    master: Arc<Master>,
    conn: RpcConnection,
    client: RpcClient,
    now: Now,
    nodes: Vec<(NodeIdentity, u64, Vec<u8>)>,
    /// Nodes whose memory refuses every move (a dead peer).
    dead: Vec<String>,
}

impl Cluster {
    fn new(n: usize) -> Self {
        let now = Now::new(Instant::now(), 1_700_000_000);
        let master = Master::new(Config::default(), Arc::new(FakePlatform::new(7)), now);
        let conn = RpcService::new(master.clone(), master.register_worker()).new_connection(now);
        let mut c = Cluster { master, conn, client: RpcClient::new(), now, nodes: Vec::new(), dead: Vec::new() };
        for i in 0..n {
            let id = NodeIdentity {
                client_id: Uuid::from_u64_pair(0x100 + i as u64, 1),
                name: format!("127.0.0.1:{}", 9000 + i),
                tenant: "default".into(),
                version: "2.0.0".into(),
            };
            let base = 0x1000_0000 * (i as u64 + 1);
            let seg =
                NodeSegment { id: Uuid::from_u64_pair(0x200 + i as u64, 2), base, size: SEG, protocol: "tcp".into() };
            let (run, step) = OpRun::start(ClusterOp::Mount { segments: vec![seg] }, &id);
            c.nodes.push((id, base, vec![0; SEG as usize]));
            assert_eq!(c.run(i, run, step), ClusterReply::Mounted);
        }
        c
    }

    /// One call through the wire: encode, feed the master, decode its reply.
    fn call(&mut self, rpc: crate::rpc::Rpc, args: Vec<Value>) -> CallResult {
        let mut frame = Vec::new();
        let seq = self.client.call(rpc, args, &mut frame);
        self.conn.handle_input(self.now, &frame);
        while let Some(b) = self.conn.poll_transmit() {
            let b = b.to_vec();
            self.conn.consume(self.now, b.len());
            self.client.handle_input(&b);
        }
        let (got, got_rpc, result) = self.client.poll_reply().expect("a well-formed reply").expect("a reply");
        assert_eq!((got, got_rpc), (seq, rpc));
        result.map_err(CallOutcomeError::Call)
    }

    fn mv(&mut self, m: &Move) -> TransferOutcome {
        if self.dead.contains(&m.endpoint) {
            return TransferOutcome::Failed(format!("{}: connection refused", m.endpoint));
        }
        let Some((_, base, mem)) = self.nodes.iter_mut().find(|(id, _, _)| id.name == m.endpoint) else {
            return TransferOutcome::Failed(format!("{}: unknown node", m.endpoint));
        };
        match &m.op {
            TransferOp::Read { addr, len } => {
                let off = (addr - *base) as usize;
                TransferOutcome::Read(mem[off..off + *len as usize].to_vec())
            }
            TransferOp::Write { addr, data } => {
                let off = (addr - *base) as usize;
                mem[off..off + data.len()].copy_from_slice(data);
                TransferOutcome::Written
            }
            TransferOp::Cluster(_) | TransferOp::Durable { .. } => TransferOutcome::Failed("not a move".into()),
        }
    }

    /// Runs an operation of node `node` to its end.
    fn run(&mut self, node: usize, mut run: OpRun, mut step: Step) -> ClusterReply {
        let me = self.nodes[node].0.name.clone();
        loop {
            step = match step {
                Step::Done(r) => return r,
                Step::Call(rpc, args) => {
                    let r = self.call(rpc, args);
                    run.on_reply(r)
                }
                Step::Move(moves) => {
                    for m in &moves {
                        assert_eq!(m.local, m.endpoint == me, "local means this node");
                    }
                    let outs = moves.iter().map(|m| self.mv(m)).collect();
                    run.on_moved(outs)
                }
            };
        }
    }

    fn op(&mut self, node: usize, op: ClusterOp) -> ClusterReply {
        let id = self.nodes[node].0.clone();
        let (run, step) = OpRun::start(op, &id);
        self.run(node, run, step)
    }

    fn put(&mut self, node: usize, key: &str, value: &[u8], replicas: u64) -> ClusterReply {
        self.op(node, ClusterOp::Put { key: key.into(), value: bytes::Bytes::copy_from_slice(value), replicas })
    }

    fn get(&mut self, node: usize, key: &str) -> ClusterReply {
        self.op(node, ClusterOp::Get { key: key.into() })
    }
}

#[test]
fn a_put_on_one_node_is_read_byte_for_byte_on_every_other() {
    let mut c = Cluster::new(3);
    for (i, len) in [1usize, 64, 4096, 100_000].into_iter().enumerate() {
        let value: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
        let key = format!("k{len}");
        assert_eq!(c.put(0, &key, &value, 1), ClusterReply::Stored);
        for n in 0..3 {
            assert_eq!(c.get(n, &key), ClusterReply::Value(value.clone()), "node {n}, {len} bytes");
        }
        assert_eq!(c.op(2, ClusterOp::Exist { key: key.clone() }), ClusterReply::Exists(true));
    }
    assert_eq!(c.op(1, ClusterOp::Exist { key: "nope".into() }), ClusterReply::Exists(false));
    assert_eq!(c.get(1, "nope"), ClusterReply::Failed(ClusterError::Master(-704)));
}

#[test]
fn a_put_replaces_the_value() {
    let mut c = Cluster::new(2);
    assert_eq!(c.put(0, "k", b"first", 1), ClusterReply::Stored);
    assert_eq!(c.put(1, "k", b"second value", 1), ClusterReply::Stored);
    assert_eq!(c.get(0, "k"), ClusterReply::Value(b"second value".to_vec()));
}

#[test]
fn two_replicas_land_on_distinct_nodes_and_a_get_falls_back_when_one_is_dead() {
    let mut c = Cluster::new(3);
    assert_eq!(c.put(0, "r", b"replicated", 2), ClusterReply::Stored);
    let holders: Vec<String> = match c.master.store().query_key("r") {
        Ok(reps) => reps.into_iter().map(|r| r.endpoint).collect(),
        Err(e) => panic!("{e:?}"),
    };
    assert_eq!(holders.len(), 2);
    assert_ne!(holders[0], holders[1]);
    // Whichever holder is asked first, a dead one is skipped.
    for dead in &holders {
        c.dead = vec![dead.clone()];
        let reader = (0..3).find(|&n| !holders.contains(&c.nodes[n].0.name)).expect("a node without a replica");
        assert_eq!(c.get(reader, "r"), ClusterReply::Value(b"replicated".to_vec()));
    }
    c.dead = holders.clone();
    let reader = (0..3).find(|&n| !holders.contains(&c.nodes[n].0.name)).unwrap();
    match c.get(reader, "r") {
        ClusterReply::Failed(ClusterError::Transfer(why)) => {
            assert!(why.contains(&holders[0]) && why.contains(&holders[1]), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_write_revokes_the_put_and_names_the_node() {
    let mut c = Cluster::new(2);
    c.dead = vec![c.nodes[0].0.name.clone(), c.nodes[1].0.name.clone()];
    match c.put(0, "k", b"v", 1) {
        ClusterReply::Failed(ClusterError::Transfer(why)) => assert!(why.contains("connection refused"), "{why}"),
        other => panic!("{other:?}"),
    }
    c.dead.clear();
    // Revoked: nothing left behind, and the key can be written again at once.
    assert_eq!(c.op(1, ClusterOp::Exist { key: "k".into() }), ClusterReply::Exists(false));
    assert_eq!(c.put(1, "k", b"v2", 1), ClusterReply::Stored);
    assert_eq!(c.get(0, "k"), ClusterReply::Value(b"v2".to_vec()));
}

#[test]
fn remove_respects_leases_and_remove_all_counts() {
    let mut c = Cluster::new(1);
    assert_eq!(c.put(0, "a", b"1", 1), ClusterReply::Stored);
    assert_eq!(c.put(0, "b", b"2", 1), ClusterReply::Stored);
    assert_eq!(c.op(0, ClusterOp::Remove { key: "a".into() }), ClusterReply::Removed);
    assert_eq!(c.op(0, ClusterOp::Remove { key: "a".into() }), ClusterReply::Failed(ClusterError::Master(-704)));
    // A get grants a lease: a plain remove is refused until it ends.
    assert!(matches!(c.get(0, "b"), ClusterReply::Value(_)));
    assert_eq!(c.op(0, ClusterOp::Remove { key: "b".into() }), ClusterReply::Failed(ClusterError::Master(-706)));
    c.now = Now::new(c.now.mono + Duration::from_secs(11), c.now.wall_unix_secs + 11);
    assert_eq!(c.put(0, "c", b"3", 1), ClusterReply::Stored);
    assert_eq!(c.op(0, ClusterOp::RemoveAll), ClusterReply::RemovedAll(2));
    assert_eq!(c.get(0, "c"), ClusterReply::Failed(ClusterError::Master(-704)));
}

#[test]
fn an_unreachable_master_fails_the_operation_with_its_reason() {
    let id = NodeIdentity {
        client_id: Uuid::from_u64_pair(1, 1),
        name: "127.0.0.1:1".into(),
        tenant: "default".into(),
        version: "2.0.0".into(),
    };
    let (mut run, step) = OpRun::start(ClusterOp::Get { key: "k".into() }, &id);
    assert!(matches!(step, Step::Call(crate::rpc::Rpc::GetReplicaList, _)));
    let step = run.on_reply(Err(CallOutcomeError::Unreachable("connection refused".into())));
    assert_eq!(step, Step::Done(ClusterReply::Failed(ClusterError::Unreachable("connection refused".into()))));
}

#[test]
fn unmount_reports_each_segment() {
    let mut c = Cluster::new(1);
    let seg = Uuid::from_u64_pair(0x200, 2);
    let other = Uuid::from_u64_pair(9, 9);
    match c.op(0, ClusterOp::Unmount { ids: vec![seg, other], grace_ms: 0 }) {
        ClusterReply::Unmounted(r) => {
            assert_eq!(r.len(), 2, "one result per id");
            assert_eq!(r[0], Ok(()));
        }
        other => panic!("{other:?}"),
    }
    assert!(c.master.store().segments().is_empty());
}

// ---- membership, on a virtual clock ----

fn ident() -> NodeIdentity {
    NodeIdentity {
        client_id: Uuid::from_u64_pair(5, 5),
        name: "127.0.0.1:7000".into(),
        tenant: "default".into(),
        version: "2.0.0".into(),
    }
}

fn seg() -> NodeSegment {
    NodeSegment { id: Uuid::from_u64_pair(6, 6), base: 0x1000, size: SEG, protocol: "tcp".into() }
}

fn actions(m: &mut Membership) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

/// The token of the only call among `a`, which must be of `rpc`.
fn call_of(a: &[Action], rpc: crate::rpc::Rpc) -> u64 {
    match a {
        [Action::Call { token, rpc: r, .. }] if *r == rpc => *token,
        other => panic!("expected one {rpc:?}, got {other:?}"),
    }
}

fn ping_reply(status: i64) -> CallResult {
    Ok(Value::ok(Value::Struct(vec![Value::Int(0), Value::Int(status)])))
}

/// Brings a fresh membership to Up at `t`.
fn up(t: Instant) -> Membership {
    let mut m = Membership::new(ident(), "127.0.0.1:50051", vec![seg()], t);
    assert!(m.health().is_err());
    m.handle_timeout(t);
    assert_eq!(actions(&mut m), vec![Action::Connect]);
    m.handle_connected(t);
    let tok = call_of(&actions(&mut m), crate::rpc::Rpc::ServiceReady);
    m.handle_reply(t, tok, Ok(Value::ok(Value::str("2.0.0"))));
    let tok = call_of(&actions(&mut m), crate::rpc::Rpc::MountSegment);
    m.handle_reply(t, tok, Ok(Value::ok_void()));
    assert_eq!(m.health(), Ok(()));
    m
}

#[test]
fn registration_then_a_heartbeat_every_second_and_a_remount_when_asked() {
    let t0 = Instant::now();
    let mut m = up(t0);
    assert_eq!(m.poll_timeout(), Some(t0));
    m.handle_timeout(t0);
    let tok = call_of(&actions(&mut m), crate::rpc::Rpc::Ping);
    m.handle_reply(t0, tok, ping_reply(client::NEED_REMOUNT));
    let tok = match actions(&mut m).as_slice() {
        [Action::Call { token, rpc: crate::rpc::Rpc::ReMountSegment, args }] => {
            assert_eq!(args[0].as_list().map(<[Value]>::len), Some(1), "every segment");
            *token
        }
        other => panic!("{other:?}"),
    };
    m.handle_reply(t0, tok, Ok(Value::ok_void()));
    assert_eq!(m.stats().remounts, 1);
    assert_eq!(m.poll_timeout(), Some(t0 + membership::PING_INTERVAL));
    let t1 = t0 + membership::PING_INTERVAL;
    m.handle_timeout(t1);
    let tok = call_of(&actions(&mut m), crate::rpc::Rpc::Ping);
    m.handle_reply(t1, tok, ping_reply(1));
    assert!(actions(&mut m).is_empty());
    assert_eq!(m.health(), Ok(()));
}

#[test]
fn three_unanswered_pings_give_the_connection_up_and_reconnect_with_backoff() {
    let t0 = Instant::now();
    let mut m = up(t0);
    let mut t = t0;
    for _ in 0..membership::PING_MISSES {
        m.handle_timeout(t);
        assert!(call_of(&actions(&mut m), crate::rpc::Rpc::Ping) > 0);
        t = m.poll_timeout().unwrap();
    }
    m.handle_timeout(t);
    assert_eq!(actions(&mut m), vec![Action::Disconnect]);
    let why = m.health().unwrap_err().to_string();
    assert!(why.contains("stopped answering heartbeats"), "{why}");
    // Reconnects after the backoff; failures double it up to the cap.
    let mut delays = Vec::new();
    for _ in 0..8 {
        let at = m.poll_timeout().unwrap();
        delays.push(at - t);
        t = at;
        m.handle_timeout(t);
        assert_eq!(actions(&mut m), vec![Action::Connect]);
        m.handle_connect_failed(t, "connection refused");
        assert!(m.health().unwrap_err().contains("connection refused"));
    }
    assert_eq!(delays[0], membership::MIN_BACKOFF);
    assert_eq!(delays[1], membership::MIN_BACKOFF * 2);
    assert_eq!(*delays.last().unwrap(), membership::MAX_BACKOFF);
    // A master that comes back gets the segments again.
    t = m.poll_timeout().unwrap();
    m.handle_timeout(t);
    assert_eq!(actions(&mut m), vec![Action::Connect]);
    m.handle_connected(t);
    let tok = call_of(&actions(&mut m), crate::rpc::Rpc::ServiceReady);
    m.handle_reply(t, tok, Ok(Value::ok(Value::str("2.0.0"))));
    let tok = call_of(&actions(&mut m), crate::rpc::Rpc::MountSegment);
    m.handle_reply(t, tok, Ok(Value::ok_void()));
    assert_eq!(m.health(), Ok(()));
    assert_eq!(m.stats().connects, 2);
    // The backoff starts over after a success.
    m.handle_disconnected(t, "reset");
    assert_eq!(m.poll_timeout(), Some(t + membership::MIN_BACKOFF));
}

#[test]
fn a_lost_connection_is_reported_and_a_master_of_another_version_is_refused() {
    let t0 = Instant::now();
    let mut m = up(t0);
    m.handle_disconnected(t0, "closed by the master");
    assert!(m.health().unwrap_err().contains("closed by the master"));
    let t = m.poll_timeout().unwrap();
    m.handle_timeout(t);
    assert_eq!(actions(&mut m), vec![Action::Connect]);
    m.handle_connected(t);
    let tok = call_of(&actions(&mut m), crate::rpc::Rpc::ServiceReady);
    m.handle_reply(t, tok, Ok(Value::ok(Value::str("9.9.9"))));
    assert_eq!(actions(&mut m), vec![Action::Disconnect]);
    let why = m.health().unwrap_err().to_string();
    assert!(why.contains("9.9.9") && why.contains("2.0.0"), "{why}");
    assert_eq!(m.poll_timeout(), Some(t + membership::MAX_BACKOFF));
}

#[test]
fn a_registration_without_an_answer_times_out() {
    let t0 = Instant::now();
    let mut m = Membership::new(ident(), "m", vec![seg()], t0);
    m.handle_timeout(t0);
    actions(&mut m);
    m.handle_connected(t0);
    actions(&mut m);
    let t = t0 + membership::SETUP_TIMEOUT;
    assert_eq!(m.poll_timeout(), Some(t));
    m.handle_timeout(t);
    assert_eq!(actions(&mut m), vec![Action::Disconnect]);
    assert!(m.health().unwrap_err().contains("in time"));
}

#[test]
fn leaving_unmounts_every_segment_added_and_not_removed() {
    let t0 = Instant::now();
    let mut m = up(t0);
    let extra = NodeSegment { id: Uuid::from_u64_pair(8, 8), base: 0x9000, size: SEG, protocol: "tcp".into() };
    let gone = NodeSegment { id: Uuid::from_u64_pair(9, 9), base: 0xa000, size: SEG, protocol: "tcp".into() };
    m.add_segments([extra.clone(), gone.clone(), extra.clone()]);
    m.remove_segments(&[gone.id]);
    assert_eq!(m.segments().len(), 2);
    m.leave(t0);
    let calls = actions(&mut m);
    let ids: Vec<Value> = calls
        .iter()
        .map(|a| match a {
            Action::Call { rpc: crate::rpc::Rpc::UnmountSegment, args, .. } => args[0].clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, vec![client::uuid(seg().id), client::uuid(extra.id)]);
    for a in &calls {
        if let Action::Call { token, .. } = a {
            assert!(!m.has_left());
            m.handle_reply(t0, *token, Ok(Value::ok_void()));
        }
    }
    assert!(m.has_left());
    assert_eq!(actions(&mut m), vec![Action::Disconnect]);
}

#[test]
fn leaving_gives_up_after_its_deadline() {
    let t0 = Instant::now();
    let mut m = up(t0);
    m.leave(t0);
    actions(&mut m);
    let t = m.poll_timeout().unwrap();
    assert!(t > t0 && t <= t0 + Duration::from_secs(2));
    m.handle_timeout(t);
    assert!(m.has_left());
}

// ---- the RPC client codec ----

#[test]
fn replies_out_of_order_are_matched_by_seq_and_a_stray_reply_breaks_the_connection() {
    use crate::rpc::{write_response, Rpc};
    let mut c = RpcClient::new();
    let mut out = Vec::new();
    let a = c.call(Rpc::ServiceReady, vec![], &mut out);
    let b = c.call(Rpc::RemoveAll, vec![Value::Bool(false), Value::str("default")], &mut out);
    let mut replies = Vec::new();
    let info = crate::rpc::info(Rpc::RemoveAll);
    let body =
        crate::rpc::encode(&info.def.ret, &Value::Int(3), crate::rpc::Style { type_info: true, len_code: 0 }).unwrap();
    write_response(&mut replies, b, 0, &body);
    write_response(&mut replies, a, 1, &crate::rpc::error_body("busy"));
    // Fed one byte at a time.
    for byte in &replies {
        c.handle_input(std::slice::from_ref(byte));
    }
    assert_eq!(c.poll_reply().unwrap(), Some((b, Rpc::RemoveAll, Ok(Value::Int(3)))));
    match c.poll_reply().unwrap() {
        Some((seq, Rpc::ServiceReady, Err(client::CallError::Rpc(1, msg)))) => {
            assert_eq!(seq, a);
            assert_eq!(msg, "busy");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.poll_reply().unwrap(), None);
    assert_eq!(c.outstanding(), 0);
    let mut stray = Vec::new();
    write_response(&mut stray, 77, 0, &body);
    c.handle_input(&stray);
    assert!(c.poll_reply().is_err());
    assert!(c.poll_reply().is_err(), "stays broken");
}
