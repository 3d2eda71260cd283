//! Record layout, the role gate and the durable wait of a session.

use std::time::{Duration, Instant};

use super::*;
use crate::store::{HaOp, ObjectRecord, SegmentRecord};
use crate::transfer::TransferOutcome;

#[test]
fn records_round_trip_through_their_etcd_keys() {
    let p = "mooncake-store/c/ha/";
    let id = uuid::Uuid::from_u128(7);
    let seg = HaOp::Segment(
        id,
        Some(SegmentRecord {
            client: uuid::Uuid::from_u128(9),
            name: "n:1".into(),
            base: 4096,
            size: 1 << 20,
            protocol: "tcp".into(),
            te: "127.0.0.1:1".into(),
            grace_ms: Some(5),
        }),
    );
    let obj = HaOp::Object(
        "k/ü".into(),
        Some(ObjectRecord {
            len: 3,
            checksum: None,
            replicas: vec![(id, 64)],
            soft_pin_ttl_ms: Some(60_000),
            hard_pin: true,
        }),
    );
    let ops = [
        seg,
        obj,
        HaOp::Object("gone".into(), None),
        HaOp::Segment(id, None),
        HaOp::TenantPolicy("team/a".into(), Some(1 << 30)),
        HaOp::TenantPolicy("b".into(), None),
    ];
    for op in ops {
        let (k, v) = encode_op(p, &op);
        assert_eq!(decode_op(p, &k, v.as_deref()), Ok(Some(op)));
    }
    assert_eq!(decode_op(p, b"mooncake-store/c/master_view", Some(b"h:1")), Ok(None));
    assert!(decode_op(p, b"mooncake-store/c/ha/s/not-a-uuid", None).is_err());
    assert!(decode_op(p, b"mooncake-store/c/ha/o/k", Some(b"{bad")).is_err());
    assert!(decode_op(p, b"mooncake-store/c/ha/t/a", Some(b"{}")).is_err());
    assert_eq!(view_key("mooncake_cluster/"), "mooncake-store/mooncake_cluster/master_view");
}

#[test]
fn a_leader_serves_only_within_its_lease() {
    let t0 = Instant::now();
    let s = HaState::new("c", "127.0.0.1:1", t0);
    assert!(!s.serves(t0));
    s.serve(5, t0 + Duration::from_secs(2));
    assert!(s.serves(t0 + Duration::from_secs(1)));
    assert!(!s.serves(t0 + Duration::from_secs(3)), "lease may be gone");
    s.renew(t0 + Duration::from_secs(4));
    assert!(s.serves(t0 + Duration::from_secs(3)));
    s.set(HaRole::Standby, Some("other:1".into()), Some(9));
    assert!(!s.serves(t0 + Duration::from_secs(1)));
    assert_eq!(s.view().leader.as_deref(), Some("other:1"));
}

/// An inner session for the durable wrapper: each input byte is a request; `c` changes the
/// store (a mark in the journal) and is answered `C`, anything else is answered in kind
/// without a change. Its output is one buffer, like the RPC connection's.
struct Echo {
    journal: Arc<Journal>,
    out: Vec<u8>,
    pos: usize,
}

impl Session for Echo {
    fn handle_input(&mut self, _now: Now, data: &[u8]) {
        for &b in data {
            if b == b'c' {
                self.journal.mark_for_test();
                self.out.push(b'C');
            } else {
                self.out.push(b);
            }
        }
    }
    fn handle_eof(&mut self, _now: Now) {}
    fn handle_timeout(&mut self, _now: Now) {}
    fn handle_shutdown(&mut self, _now: Now) {}
    fn poll_transmit<'a>(&'a self, bufs: &mut [IoSlice<'a>]) -> usize {
        if self.pos == self.out.len() || bufs.is_empty() {
            return 0;
        }
        bufs[0] = IoSlice::new(&self.out[self.pos..]);
        1
    }
    fn poll_transmit_upto<'a>(&'a self, bufs: &mut [IoSlice<'a>], limit: usize) -> usize {
        let end = self.out.len().min(self.pos + limit);
        if self.pos == end || bufs.is_empty() {
            return 0;
        }
        bufs[0] = IoSlice::new(&self.out[self.pos..end]);
        1
    }
    fn consume(&mut self, _now: Now, n: usize) {
        self.pos += n;
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn wants_read(&self) -> bool {
        true
    }
    fn is_closed(&self) -> bool {
        false
    }
}

fn durable_session() -> (DurableSession, Arc<Journal>) {
    let journal = Arc::new(Journal::default());
    let inner = Echo { journal: journal.clone(), out: Vec::new(), pos: 0 };
    (DurableSession::new(Box::new(inner), journal.clone()), journal)
}

/// Everything the session lets out now (written and consumed).
fn drain(s: &mut DurableSession, now: Now) -> Vec<u8> {
    let mut got = Vec::new();
    loop {
        let mut bufs = [IoSlice::new(&[]); 4];
        let n = s.poll_transmit(&mut bufs);
        let chunk: Vec<u8> = bufs[..n].iter().flat_map(|b| b.iter().copied()).collect();
        if chunk.is_empty() {
            return got;
        }
        got.extend_from_slice(&chunk);
        s.consume(now, chunk.len());
    }
}

/// The durable wait the session asks for (its seq), if any.
fn wait_of(s: &mut DurableSession) -> Option<u64> {
    match s.poll_transfer()?.op {
        TransferOp::Durable { seq } => Some(seq),
        _ => None,
    }
}

#[test]
fn a_reply_waits_for_its_change_to_be_durable_and_what_came_before_does_not() {
    let now = Now::new(Instant::now(), 0);
    let (mut s, journal) = durable_session();
    s.handle_input(now, b"ab");
    assert_eq!(drain(&mut s, now), b"ab", "no change: nothing held");
    assert_eq!(wait_of(&mut s), None);

    // A change: the output of that call and everything after it wait; what was already
    // pending before the call does not.
    s.handle_input(now, b"x");
    s.handle_input(now, b"c");
    s.handle_input(now, b"y");
    assert_eq!(drain(&mut s, now), b"x", "bytes before the change go");
    assert_eq!(wait_of(&mut s), Some(1));
    assert!(!s.is_closed());
    journal.set_durable(1);
    s.handle_transfer(now, DURABLE_ID, TransferOutcome::Written);
    assert_eq!(drain(&mut s, now), b"Cy");
    assert_eq!(wait_of(&mut s), None);
}

#[test]
fn under_a_steady_stream_of_changes_each_reply_leaves_when_its_own_batch_is_durable() {
    // The store node's link: one connection, requests of many clients, a change always
    // pending. The old rule (hold all output while anything is pending) never sent a byte.
    let now = Now::new(Instant::now(), 0);
    let (mut s, journal) = durable_session();
    let mut sent = Vec::new();
    for round in 1..=5u64 {
        s.handle_input(now, b"c");
        // The previous round's change becomes durable while this one is pending.
        journal.set_durable(round - 1);
        if let Some(seq) = wait_of(&mut s) {
            assert!(seq <= round);
        }
        s.handle_transfer(now, DURABLE_ID, TransferOutcome::Written);
        sent.extend(drain(&mut s, now));
        assert_eq!(sent.len() as u64, round - 1, "round {round}: the replies of durable changes left");
    }
    journal.set_durable(5);
    s.handle_transfer(now, DURABLE_ID, TransferOutcome::Written);
    sent.extend(drain(&mut s, now));
    assert_eq!(sent, b"CCCCC");
}

#[test]
fn a_failed_wait_drops_the_held_replies_and_ends_the_session() {
    let now = Now::new(Instant::now(), 0);
    let (mut s, _journal) = durable_session();
    s.handle_input(now, b"a");
    s.handle_input(now, b"c");
    assert_eq!(drain(&mut s, now), b"a");
    assert_eq!(wait_of(&mut s), Some(1));
    s.handle_transfer(now, DURABLE_ID, TransferOutcome::Failed("fenced".into()));
    assert_eq!(drain(&mut s, now), b"", "a reply of a change that is not durable never leaves");
    assert!(s.is_closed());
    assert!(!s.wants_read());
}

#[test]
fn a_partial_write_inside_a_held_region_never_releases_a_held_byte() {
    // The adapter writes fewer bytes than offered; the boundary stays where the change began.
    let now = Now::new(Instant::now(), 0);
    let (mut s, journal) = durable_session();
    s.handle_input(now, b"ab");
    s.handle_input(now, b"cd");
    let mut bufs = [IoSlice::new(&[]); 4];
    let n = s.poll_transmit(&mut bufs);
    assert_eq!(&*bufs[..n][0], b"ab");
    s.consume(now, 1);
    assert_eq!(drain(&mut s, now), b"b");
    s.handle_input(now, b"e");
    assert_eq!(drain(&mut s, now), b"", "still behind the held change");
    journal.set_durable(1);
    s.handle_transfer(now, DURABLE_ID, TransferOutcome::Written);
    assert_eq!(drain(&mut s, now), b"Cde");
}
