//! (h) A store node's side of the master RPC (`mc_core::rpc::client`, `mc_core::node`):
//! operations (`OpRun`) and the membership state machine talking through one `RpcClient` to
//! a real `RpcService` over a `Master` on `FakePlatform`, while the input also injects raw
//! bytes into the reply stream, answers the operations' moves with arbitrary outcomes,
//! breaks the connection and advances the clock.
//!
//! Checks: no panic; a reply never reaches a call that did not send its seq (the client
//! returns each seq once, for its own method); once the connection broke, every operation
//! ends (`Step::Done`) within a bounded number of steps as its calls fail, and the
//! membership reports itself down; no single allocation is larger than the input justifies.
//!
//! Input: a sequence of commands, one byte each (low 4 bits the command, high 4 bits its
//! argument), some followed by bytes of their own:
//! - 0–6: start an operation (put, get, exist, remove, remove-all, mount, unmount) on key
//!   `k<arg>`; a put takes a length byte for its value;
//! - 7: exchange: every frame written so far goes to the master, its replies come back;
//! - 8: `arg` raw bytes of the input are fed to the client as if from the master;
//! - 9: the oldest waiting move ends: Read of `arg * 7` bytes, Written, or Failed by `arg`;
//! - 10: time passes (`arg` × 250 ms) for the membership;
//! - 11: the connection breaks (every outstanding call fails, a new client follows).
#![no_main]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mc_core::node::{Action, CallOutcomeError, ClusterOp, Membership, NodeIdentity, NodeSegment, OpRun, Step};
use mc_core::rpc::client::RpcClient;
use mc_core::rpc::{Rpc, RpcConnection, RpcService};
use mc_core::transfer::{TransferOp, TransferOutcome};
use mc_fuzz::{at, config, LARGEST};
use uuid::Uuid;

/// Who waits for a seq.
#[derive(Clone, Copy)]
enum Owner {
    Op(usize),
    Membership(u64),
}

/// The moves of one op's `Step::Move`: the op, their count, outcomes so far, the moves.
type PendingMoves = (usize, usize, Vec<Option<TransferOutcome>>, Vec<TransferOp>);

struct World {
    master: std::sync::Arc<mc_core::Master>,
    conn: RpcConnection,
    client: RpcClient,
    out: Vec<u8>,
    waiting: HashMap<u32, (Owner, Rpc)>,
    ops: Vec<Option<OpRun>>,
    moves: VecDeque<PendingMoves>,
    membership: Membership,
    now: Duration,
    id: NodeIdentity,
}

impl World {
    fn new() -> Self {
        let master = mc_fuzz::master(config());
        let conn = RpcService::new(master.clone(), master.register_worker()).new_connection(at(Duration::ZERO));
        let id = NodeIdentity {
            client_id: Uuid::from_u64_pair(7, 7),
            name: "127.0.0.1:9100".into(),
            tenant: "default".into(),
            version: mc_core::rpc::SERVICE_VERSION.into(),
        };
        let seg = NodeSegment { id: Uuid::from_u64_pair(8, 8), base: 1 << 30, size: 1 << 20, protocol: "tcp".into() };
        let membership = Membership::new(id.clone(), "master", vec![seg], at(Duration::ZERO).mono);
        World {
            master,
            conn,
            client: RpcClient::new(),
            out: Vec::new(),
            waiting: HashMap::new(),
            ops: Vec::new(),
            moves: VecDeque::new(),
            membership,
            now: Duration::ZERO,
            id,
        }
    }

    /// Carries `step` of op `i` out as far as it goes without an answer.
    fn step(&mut self, i: usize, step: Step) {
        match step {
            Step::Done(_) => self.ops[i] = None,
            Step::Call(rpc, args) => {
                let seq = self.client.call(rpc, args, &mut self.out);
                self.waiting.insert(seq, (Owner::Op(i), rpc));
            }
            Step::Move(moves) => {
                assert!(!moves.is_empty());
                let n = moves.len();
                self.moves.push_back((i, n, vec![None; n], moves.into_iter().map(|m| m.op).collect()));
            }
        }
    }

    fn start(&mut self, kind: u8, arg: u8, len: u8) {
        let key = format!("k{arg}");
        let op = match kind {
            0 => ClusterOp::Put { key, value: vec![arg; usize::from(len).max(1)].into(), replicas: u64::from(arg % 3) },
            1 => ClusterOp::Get { key },
            2 => ClusterOp::Exist { key },
            3 => ClusterOp::Remove { key },
            4 => ClusterOp::RemoveAll,
            5 => ClusterOp::Mount {
                segments: vec![NodeSegment {
                    id: Uuid::from_u64_pair(9, u64::from(arg)),
                    base: (2 + u64::from(arg)) << 30,
                    size: 1 << 20,
                    protocol: "tcp".into(),
                }],
            },
            _ => ClusterOp::Unmount { ids: vec![Uuid::from_u64_pair(9, u64::from(arg))], grace_ms: u64::from(len) },
        };
        let (run, step) = OpRun::start(op, &self.id);
        self.ops.push(Some(run));
        let i = self.ops.len() - 1;
        self.step(i, step);
    }

    fn deliver(&mut self, seq: u32, rpc: Rpc, result: mc_core::node::CallResult) {
        let (owner, want) = self.waiting.remove(&seq).expect("a reply only for a seq that was sent");
        assert_eq!(want, rpc, "a reply for the method of its call");
        self.answer(owner, result);
    }

    fn answer(&mut self, owner: Owner, result: mc_core::node::CallResult) {
        match owner {
            Owner::Op(i) => {
                let mut run = self.ops[i].take().expect("an op waits for its call");
                let step = run.on_reply(result);
                self.ops[i] = Some(run);
                self.step(i, step);
            }
            Owner::Membership(token) => self.membership.handle_reply(at(self.now).mono, token, result),
        }
    }

    /// Replies the client has complete; a stream error breaks the connection.
    fn poll_replies(&mut self) {
        loop {
            match self.client.poll_reply() {
                Ok(None) => return,
                Ok(Some((seq, rpc, r))) => self.deliver(seq, rpc, r.map_err(CallOutcomeError::Call)),
                Err(_) => return self.break_connection(),
            }
        }
    }

    fn exchange(&mut self) {
        let frames = std::mem::take(&mut self.out);
        self.conn.handle_input(at(self.now), &frames);
        while let Some(b) = self.conn.poll_transmit() {
            let b = b.to_vec();
            self.conn.consume(at(self.now), b.len());
            self.client.handle_input(&b);
        }
        self.poll_replies();
    }

    fn break_connection(&mut self) {
        let waiting: Vec<(u32, (Owner, Rpc))> = self.waiting.drain().collect();
        self.client = RpcClient::new();
        self.out.clear();
        self.conn = RpcService::new(self.master.clone(), self.master.register_worker()).new_connection(at(self.now));
        self.membership.handle_disconnected(at(self.now).mono, "broken");
        for (_, (owner, _)) in waiting {
            self.answer(owner, Err(CallOutcomeError::Unreachable("broken".into())));
        }
    }

    fn end_move(&mut self, arg: u8) {
        let Some((i, n, mut outs, ops)) = self.moves.pop_front() else { return };
        let k = outs.iter().position(Option::is_none).expect("a move left");
        outs[k] = Some(match (arg % 3, &ops[k]) {
            (0, _) => TransferOutcome::Read(vec![arg; usize::from(arg) * 7]),
            (1, _) => TransferOutcome::Written,
            _ => TransferOutcome::Failed(format!("peer {arg}")),
        });
        if outs.iter().all(Option::is_some) {
            let mut run = self.ops[i].take().expect("an op waits for its moves");
            let step = run.on_moved(outs.into_iter().map(Option::unwrap).collect());
            self.ops[i] = Some(run);
            self.step(i, step);
        } else {
            self.moves.push_front((i, n, outs, ops));
        }
    }

    fn membership_turn(&mut self) {
        self.membership.handle_timeout(at(self.now).mono);
        while let Some(a) = self.membership.poll_action() {
            match a {
                Action::Connect => self.membership.handle_connected(at(self.now).mono),
                Action::Call { token, rpc, args } => {
                    let seq = self.client.call(rpc, args, &mut self.out);
                    self.waiting.insert(seq, (Owner::Membership(token), rpc));
                }
                Action::Disconnect => {}
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    LARGEST.store(0, Ordering::Relaxed);
    let mut w = World::new();
    let mut p = 0;
    let next = |p: &mut usize| -> u8 {
        let b = data.get(*p).copied().unwrap_or(0);
        *p += 1;
        b
    };
    while p < data.len() && w.ops.len() < 64 {
        let cmd = next(&mut p);
        let (code, arg) = (cmd & 0x0f, cmd >> 4);
        match code {
            0 => {
                let len = next(&mut p);
                w.start(0, arg, len);
            }
            1..=6 => w.start(code, arg, 0),
            7 => w.exchange(),
            8 => {
                let end = (p + usize::from(arg)).min(data.len());
                w.client.handle_input(&data[p..end]);
                p = end;
                w.poll_replies();
            }
            9 => w.end_move(arg),
            10 => {
                w.now += Duration::from_millis(250) * u32::from(arg);
                w.membership_turn();
            }
            _ => w.break_connection(),
        }
        w.membership_turn();
    }
    // Everything ends once the master is gone: moves fail, calls fail.
    for _ in 0..1000 {
        while !w.moves.is_empty() {
            w.end_move(2);
        }
        w.break_connection();
        if w.ops.iter().all(Option::is_none) && w.moves.is_empty() {
            break;
        }
    }
    assert!(w.ops.iter().all(Option::is_none), "every operation ends once the master is unreachable");
    assert!(w.membership.health().is_err(), "down after the connection broke");
    assert!(
        LARGEST.load(Ordering::Relaxed) <= 64 * data.len() + (16 << 20),
        "an allocation the input does not justify"
    );
});
