use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;
use crate::te::memory::HeapMemory;

const BASE: u64 = 0x7fee_c000_0000;
const LEN: usize = 1 << 16;
const OK: [u8; 8] = [0, 0, 0, 0, 0x56, 0x54, 0x43, 0x4d];
const REJECTED: [u8; 8] = [1, 0, 0, 0, 0x56, 0x54, 0x43, 0x4d];

fn at(ms: u64) -> Now {
    static T0: OnceLock<Instant> = OnceLock::new();
    Now::new(*T0.get_or_init(Instant::now) + Duration::from_millis(ms), 1_700_000_000)
}

fn hdr(op: Op, framing: Framing, addr: u64, size: u64) -> Vec<u8> {
    Header { size, addr, op, framing }.encode().to_vec()
}

fn session(mem: &HeapMemory, config: TargetConfig) -> TargetSession {
    TargetSession::new(at(0), Arc::new(mem.clone()), config, TargetStats::new())
}

/// Everything the session wants to send now, consumed `step` bytes at a time.
fn drain(s: &mut TargetSession, out: &mut Vec<u8>, step: usize) {
    loop {
        let mut bufs = [IoSlice::new(&[]); 4];
        let n = s.poll_transmit(&mut bufs);
        let mut taken = Vec::new();
        for b in &bufs[..n] {
            taken.extend_from_slice(b);
            if taken.len() >= step {
                break;
            }
        }
        taken.truncate(step);
        if taken.is_empty() {
            return;
        }
        out.extend_from_slice(&taken);
        s.consume(at(0), taken.len());
    }
}

/// Feeds `pieces` one after the other, draining after each, then EOF if `eof`.
fn run(s: &mut TargetSession, pieces: &[&[u8]], eof: bool, step: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        s.handle_input(at(0), p);
        drain(s, &mut out, step);
    }
    if eof {
        s.handle_eof(at(0));
        drain(s, &mut out, step);
    }
    out
}

fn one(mem: &HeapMemory, input: &[u8]) -> (Vec<u8>, bool) {
    let mut s = session(mem, TargetConfig::default());
    let out = run(&mut s, &[input], false, usize::MAX);
    (out, s.is_closed())
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 1) as u8).collect()
}

#[test]
fn v2_write_then_read_on_one_connection() {
    // te-tcp-frames.txt conn 1 req#0 and req#1.
    let mem = HeapMemory::new(BASE, LEN);
    let mut s = session(&mem, TargetConfig::default());
    let payload = pattern(100);
    let mut input = hdr(Op::Write, Framing::V2, BASE, 100);
    assert_eq!(input[16], 0x81);
    input.extend_from_slice(&payload);
    assert_eq!(run(&mut s, &[&input], false, usize::MAX), OK);
    assert_eq!(mem.read(BASE, 100).unwrap(), payload);
    let out = run(&mut s, &[&hdr(Op::Read, Framing::V2, BASE, 100)], false, usize::MAX);
    assert_eq!(out[..8], OK);
    assert_eq!(out[8..], payload[..]);
    assert!(!s.is_closed() && s.wants_read());
    let stats = s.stats.snapshot();
    assert_eq!((stats.requests, stats.writes, stats.reads, stats.bytes_written, stats.bytes_read), (2, 1, 1, 100, 100));
}

#[test]
fn v2_ack_only_after_the_whole_payload() {
    let mem = HeapMemory::new(BASE, LEN);
    let mut s = session(&mem, TargetConfig::default());
    let mut input = hdr(Op::Write, Framing::V2, BASE + 0x1000, 4096);
    input.extend_from_slice(&pattern(4096));
    assert!(run(&mut s, &[&input[..24 + 4095]], false, usize::MAX).is_empty());
    assert!(s.wants_read());
    assert_eq!(run(&mut s, &[&input[24 + 4095..]], false, usize::MAX), OK);
}

#[test]
fn v1_write_sends_nothing_and_v1_read_sends_the_bytes() {
    // te-tcp-frames.txt conns 5 and 6: v1 with garbage padding.
    let mem = HeapMemory::new(BASE, LEN);
    let mut w = hdr(Op::Write, Framing::V1, BASE, 100);
    w[17..].copy_from_slice(&[0x65, 0x79, 0x3a, 0x20, 0x73, 0x74, 0x72]);
    w.extend_from_slice(&pattern(100));
    let (out, closed) = one(&mem, &w);
    assert!(out.is_empty() && !closed);
    assert_eq!(mem.read(BASE, 100).unwrap(), pattern(100));
    let mut r = hdr(Op::Read, Framing::V1, BASE, 100);
    r[17..].copy_from_slice(&[0x65, 0x79, 0x3a, 0x20, 0x73, 0x74, 0x72]);
    assert_eq!(one(&mem, &r).0, pattern(100));
}

#[test]
fn pipelined_mixed_requests_are_answered_in_order() {
    // te-tcp-frames.txt raw probe (a): v2 WRITE, v2 READ and v1 READ in one send.
    let mem = HeapMemory::new(BASE, LEN);
    let mut input = hdr(Op::Write, Framing::V2, BASE, 8);
    input.extend_from_slice(b"ABCDEFGH");
    input.extend(hdr(Op::Read, Framing::V2, BASE, 8));
    input.extend(hdr(Op::Read, Framing::V1, BASE, 8));
    let (out, closed) = one(&mem, &input);
    assert_eq!(out, [&OK[..], &OK, b"ABCDEFGH", b"ABCDEFGH"].concat());
    assert!(!closed);
}

#[test]
fn unknown_opcodes_are_served_as_reads() {
    // Raw probes (b) and (b2): opcode 0x85 (v2) and 0x07 (v1).
    let mem = HeapMemory::new(BASE, LEN);
    assert!(mem.write(BASE, b"ABCDEFGH"));
    let mut h = hdr(Op::Read, Framing::V2, BASE, 8);
    h[16] = 0x85;
    assert_eq!(one(&mem, &h).0, [&OK[..], b"ABCDEFGH"].concat());
    let mut h = hdr(Op::Read, Framing::V1, BASE, 4);
    h[16] = 0x07;
    assert_eq!(one(&mem, &h).0, b"ABCD");
}

/// Every "rejected" row of data-plane.md §1.4, v2 and v1.
#[test]
fn rejected_requests_close_the_connection() {
    let mem = HeapMemory::new(BASE, LEN);
    let end = BASE + LEN as u64;
    let cases = [
        ("size 0 WRITE", Op::Write, 0x1000, 0),
        ("size 0 READ", Op::Read, BASE, 0),
        ("overflow", Op::Write, u64::MAX - 10, 100),
        ("overflow READ", Op::Read, u64::MAX, 1),
        ("spans the buffer end", Op::Read, end - 50, 100),
        ("spans the buffer end (WRITE)", Op::Write, end - 50, 100),
        ("below the buffer", Op::Read, BASE - 1, 2),
        ("outside every buffer", Op::Read, 0x7fef_0000_1000, 100),
    ];
    for (what, op, addr, size) in cases {
        let mut input = hdr(op, Framing::V2, addr, size);
        input.extend_from_slice(&[0xAA; 100]); // a payload (or the next request): never read
        let mut s = session(&mem, TargetConfig::default());
        assert_eq!(run(&mut s, &[&input], false, usize::MAX), REJECTED, "v2 {what}");
        assert!(s.is_closed() && !s.wants_read(), "v2 {what}");
        assert_eq!(s.stats.snapshot().rejects, 1);
        let mut input = hdr(op, Framing::V1, addr, size);
        input.extend_from_slice(&[0xAA; 100]);
        let (out, closed) = one(&mem, &input);
        assert!(out.is_empty() && closed, "v1 {what}");
    }
    assert_eq!(mem.read(BASE, LEN).unwrap(), vec![0; LEN], "no rejected write landed");
}

#[test]
fn reject_is_queued_behind_earlier_answers_and_stops_reading() {
    let mem = HeapMemory::new(BASE, LEN);
    let mut input = hdr(Op::Write, Framing::V2, BASE, 4);
    input.extend_from_slice(b"abcd");
    input.extend(hdr(Op::Write, Framing::V2, BASE, 0));
    input.extend(hdr(Op::Read, Framing::V2, BASE, 4)); // after the reject: ignored
    let mut s = session(&mem, TargetConfig::default());
    s.handle_input(at(0), &input);
    assert!(!s.is_closed(), "not closed before the status is written");
    let mut out = Vec::new();
    drain(&mut s, &mut out, 3);
    assert_eq!(out, [OK, REJECTED].concat());
    assert!(s.is_closed());
    s.handle_input(at(0), &hdr(Op::Read, Framing::V2, BASE, 4));
    assert_eq!(s.poll_transmit(&mut [IoSlice::new(&[])]), 0);
}

#[test]
fn max_request_size_is_enforced() {
    let mem = HeapMemory::new(BASE, LEN);
    let config = TargetConfig { max_request_size: 64, ..TargetConfig::default() };
    let mut s = session(&mem, config);
    assert_eq!(run(&mut s, &[&hdr(Op::Read, Framing::V2, BASE, 64)], false, usize::MAX).len(), 8 + 64);
    assert_eq!(run(&mut s, &[&hdr(Op::Read, Framing::V2, BASE, 65)], false, usize::MAX), REJECTED);
    assert!(s.is_closed());
}

/// A memory that refuses one address and fails every write at finish.
struct Picky(HeapMemory);

struct FailingWrite;

impl WriteWindow for FailingWrite {
    fn write_at(&mut self, _: u64, _: &[u8]) {}
    fn finish(self: Box<Self>) -> Result<(), Reject> {
        Err(Reject::new("segment unmounted meanwhile"))
    }
}

impl TargetMemory for Picky {
    fn open_read(&self, addr: u64, len: u64) -> Result<Box<dyn ReadWindow>, Reject> {
        if addr == BASE + 8 {
            return Err(Reject::new("refused"));
        }
        if addr == BASE + 16 {
            return Ok(Box::new(vec![0u8; 1])); // wrong length: a contract violation
        }
        self.0.open_read(addr, len)
    }
    fn open_write(&self, _: u64, _: u64) -> Result<Box<dyn WriteWindow>, Reject> {
        Ok(Box::new(FailingWrite))
    }
}

#[test]
fn memory_refusals_and_failed_finishes_are_rejects() {
    let picky: Arc<dyn TargetMemory> = Arc::new(Picky(HeapMemory::new(BASE, LEN)));
    let new = || TargetSession::new(at(0), picky.clone(), TargetConfig::default(), TargetStats::new());
    for addr in [BASE + 8, BASE + 16] {
        let mut s = new();
        assert_eq!(run(&mut s, &[&hdr(Op::Read, Framing::V2, addr, 4)], false, usize::MAX), REJECTED);
        assert!(s.is_closed());
    }
    let mut s = new();
    let mut input = hdr(Op::Write, Framing::V2, BASE, 4);
    input.extend_from_slice(b"abcd");
    assert_eq!(run(&mut s, &[&input], false, usize::MAX), REJECTED);
    assert!(s.is_closed());
    let mut s = new();
    input[16] = 0x01;
    assert!(run(&mut s, &[&input], false, usize::MAX).is_empty());
    assert!(s.is_closed());
}

#[test]
fn eof_mid_body_closes_without_an_ack() {
    let mem = HeapMemory::new(BASE, LEN);
    let mut input = hdr(Op::Write, Framing::V2, BASE, 100);
    input.extend_from_slice(&pattern(50));
    let mut s = session(&mem, TargetConfig::default());
    assert!(run(&mut s, &[&input], true, usize::MAX).is_empty());
    assert!(s.is_closed());
}

#[test]
fn eof_after_pipelined_requests_answers_them_first() {
    let mem = HeapMemory::new(BASE, LEN);
    assert!(mem.write(BASE, b"0123456789"));
    let mut input = hdr(Op::Read, Framing::V2, BASE, 10);
    input.extend(hdr(Op::Read, Framing::V1, BASE, 4));
    let mut s = session(&mem, TargetConfig::default());
    s.handle_input(at(0), &input);
    s.handle_eof(at(0));
    assert!(!s.is_closed());
    let mut out = Vec::new();
    drain(&mut s, &mut out, 5);
    assert_eq!(out, [&OK[..], b"0123456789", b"0123"].concat());
    assert!(s.is_closed());
    // EOF between requests, and EOF with half a header.
    let mut s = session(&mem, TargetConfig::default());
    assert!(run(&mut s, &[], true, 1).is_empty() && s.is_closed());
    let mut s = session(&mem, TargetConfig::default());
    assert!(run(&mut s, &[&input[..10]], true, 1).is_empty() && s.is_closed());
}

#[test]
fn reads_apply_backpressure_and_are_sent_from_the_window() {
    let mem = HeapMemory::new(BASE, LEN);
    assert!(mem.write(BASE, &pattern(1000)));
    let mut input = hdr(Op::Read, Framing::V2, BASE, 1000);
    input.extend(hdr(Op::Read, Framing::V2, BASE, 10));
    let mut s = session(&mem, TargetConfig::default());
    s.handle_input(at(0), &input);
    assert!(!s.wants_read(), "no input wanted while a READ is being sent");
    let mut bufs = [IoSlice::new(&[]); 4];
    assert_eq!(s.poll_transmit(&mut bufs), 2, "status and payload as two slices");
    assert_eq!(&*bufs[0], &OK);
    assert_eq!(bufs[1].len(), 1000);
    let mut one = [IoSlice::new(&[])];
    assert_eq!(s.poll_transmit(&mut one), 1);
    assert_eq!(s.poll_transmit(&mut []), 0);
    s.consume(at(0), 8 + 500);
    assert!(!s.wants_read());
    s.consume(at(0), 500);
    // The second (stashed) READ was started as soon as the first was consumed.
    assert!(!s.wants_read());
    let mut out = Vec::new();
    drain(&mut s, &mut out, usize::MAX);
    assert_eq!(out, [&OK[..], &pattern(10)].concat());
    assert!(s.wants_read());
}

#[test]
fn shutdown_finishes_the_request_in_progress() {
    let mem = HeapMemory::new(BASE, LEN);
    // Idle: closes at once.
    let mut s = session(&mem, TargetConfig::default());
    s.handle_shutdown(at(0));
    assert!(s.is_closed());
    // Mid-body: the body completes and is acknowledged; the pipelined request is dropped.
    let mut s = session(&mem, TargetConfig::default());
    let mut input = hdr(Op::Write, Framing::V2, BASE, 8);
    input.extend_from_slice(b"abcdefgh");
    input.extend(hdr(Op::Read, Framing::V2, BASE, 8));
    s.handle_input(at(0), &input[..28]);
    s.handle_shutdown(at(0));
    assert!(!s.is_closed() && s.wants_read());
    assert_eq!(run(&mut s, &[&input[28..]], false, usize::MAX), OK);
    assert!(s.is_closed());
    assert_eq!(mem.read(BASE, 8).unwrap(), b"abcdefgh");
    // Half a header counts as nothing started.
    let mut s = session(&mem, TargetConfig::default());
    s.handle_input(at(0), &input[..20]);
    s.handle_shutdown(at(0));
    assert!(s.is_closed());
    // While a READ is sent: it completes, the stash is dropped.
    let mut s = session(&mem, TargetConfig::default());
    let mut input = hdr(Op::Read, Framing::V1, BASE, 8);
    input.extend(hdr(Op::Read, Framing::V1, BASE, 8));
    s.handle_input(at(0), &input);
    s.handle_shutdown(at(0));
    let mut out = Vec::new();
    drain(&mut s, &mut out, 3);
    assert_eq!(out, b"abcdefgh");
    assert!(s.is_closed());
}

#[test]
fn progress_deadline_is_off_by_default_and_only_while_busy() {
    let mem = HeapMemory::new(BASE, LEN);
    let mut s = session(&mem, TargetConfig::default());
    s.handle_input(at(0), &hdr(Op::Write, Framing::V2, BASE, 8)[..10]);
    assert_eq!(s.poll_timeout(), None);

    let config = TargetConfig { progress_timeout: Some(Duration::from_secs(5)), ..TargetConfig::default() };
    let mut s = session(&mem, config);
    assert_eq!(s.poll_timeout(), None, "idle between requests: no deadline");
    s.handle_input(at(1000), &hdr(Op::Write, Framing::V2, BASE, 8));
    assert_eq!(s.poll_timeout(), Some(at(6000).mono));
    s.handle_input(at(2000), b"abcd");
    assert_eq!(s.poll_timeout(), Some(at(7000).mono));
    s.handle_timeout(at(6999));
    assert!(!s.is_closed());
    s.handle_input(at(3000), b"efgh");
    // The ack waits to be written: still a request in progress.
    assert_eq!(s.poll_timeout(), Some(at(8000).mono));
    let mut out = Vec::new();
    drain(&mut s, &mut out, usize::MAX);
    assert_eq!(out, OK);
    assert_eq!(s.poll_timeout(), None);
    // A READ the peer does not read: closes at the deadline, output dropped.
    s.handle_input(at(10_000), &hdr(Op::Read, Framing::V2, BASE, 8));
    s.consume(at(11_000), 3);
    assert_eq!(s.poll_timeout(), Some(at(16_000).mono));
    s.handle_timeout(at(16_000));
    assert!(s.is_closed());
    assert_eq!(s.poll_transmit(&mut [IoSlice::new(&[])]), 0);
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.stats.snapshot().timeouts, 1);
}

#[test]
fn acceptor_makes_sessions_and_closes_at_shutdown() {
    let mem = HeapMemory::new(BASE, LEN);
    let stats = TargetStats::new();
    let mut acceptor = TargetAcceptor::new(Arc::new(mem), TargetConfig::default(), stats.clone());
    assert_eq!(acceptor.on_shutdown(), ListenerAtShutdown::Close);
    let mut a = acceptor.accept(at(0));
    let b = acceptor.accept(at(0));
    assert_eq!((stats.snapshot().connections, stats.snapshot().open), (2, 2));
    drop(b);
    a.handle_input(at(0), &hdr(Op::Read, Framing::V2, BASE, 0));
    assert!(!a.is_closed());
    let mut bufs = [IoSlice::new(&[])];
    assert_eq!(a.poll_transmit(&mut bufs), 1);
    assert_eq!(&*bufs[0], &REJECTED);
    a.consume(at(0), 8);
    assert!(a.is_closed());
    assert_eq!(acceptor.stats().snapshot().open, 1);
}

/// One request of a generated sequence.
#[derive(Clone, Debug)]
struct Req {
    op: Op,
    framing: Framing,
    addr: u64,
    size: u64,
    padding: [u8; 7],
    fill: u8,
}

fn req() -> impl Strategy<Value = Req> {
    let addr = prop_oneof![
        8 => (0u64..256).prop_map(|o| BASE + o),
        1 => Just(BASE - 1),
        1 => Just(u64::MAX - 4),
    ];
    let size = prop_oneof![10 => 1u64..300, 1 => Just(0u64)];
    let op = prop_oneof![Just(Op::Read), Just(Op::Write)];
    let framing = prop_oneof![Just(Framing::V1), Just(Framing::V2)];
    (op, framing, addr, size, any::<[u8; 7]>(), any::<u8>()).prop_map(|(op, framing, addr, size, padding, fill)| Req {
        op,
        framing,
        addr,
        size,
        padding,
        fill,
    })
}

const MODEL_LEN: u64 = 512;

fn encode(reqs: &[Req]) -> Vec<u8> {
    let mut input = Vec::new();
    for r in reqs {
        let mut h = hdr(r.op, r.framing, r.addr, r.size);
        h[17..].copy_from_slice(&r.padding);
        input.extend(h);
        if r.op == Op::Write {
            input.extend((0..r.size.min(1000)).map(|i| r.fill.wrapping_add(i as u8)));
        }
    }
    input
}

/// The expected output, computed like fake_te_target.py (the reference stand-in) does.
fn model(reqs: &[Req]) -> (Vec<u8>, bool) {
    let mut mem = vec![0u8; MODEL_LEN as usize];
    let mut out = Vec::new();
    for r in reqs {
        let valid = r.size > 0 && r.addr >= BASE && r.addr.checked_add(r.size).is_some_and(|e| e <= BASE + MODEL_LEN);
        if !valid {
            if r.framing == Framing::V2 {
                out.extend_from_slice(&REJECTED);
            }
            return (out, true);
        }
        let off = (r.addr - BASE) as usize;
        if r.op == Op::Write {
            for i in 0..r.size as usize {
                mem[off + i] = r.fill.wrapping_add(i as u8);
            }
            if r.framing == Framing::V2 {
                out.extend_from_slice(&OK);
            }
        } else {
            if r.framing == Framing::V2 {
                out.extend_from_slice(&OK);
            }
            out.extend_from_slice(&mem[off..off + r.size as usize]);
        }
    }
    (out, false)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_split_gives_the_model_output(
        reqs in proptest::collection::vec(req(), 0..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        step in 1usize..64,
    ) {
        let input = encode(&reqs);
        let (want, want_closed) = model(&reqs);
        let mem = HeapMemory::new(BASE, MODEL_LEN as usize);
        let mut s = session(&mem, TargetConfig::default());
        prop_assert_eq!(&run(&mut s, &[&input], false, usize::MAX), &want);
        prop_assert_eq!(s.is_closed(), want_closed);

        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        points.sort_unstable();
        let mut pieces = Vec::new();
        let mut prev = 0;
        for p in points.into_iter().chain([input.len()]) {
            pieces.push(&input[prev..p]);
            prev = p;
        }
        let mem = HeapMemory::new(BASE, MODEL_LEN as usize);
        let mut s = session(&mem, TargetConfig::default());
        prop_assert_eq!(&run(&mut s, &pieces, false, step), &want);
        prop_assert_eq!(s.is_closed(), want_closed);

        // EOF after everything: the same answers, then closed.
        let mem = HeapMemory::new(BASE, MODEL_LEN as usize);
        let mut s = session(&mem, TargetConfig::default());
        prop_assert_eq!(&run(&mut s, &pieces, true, step), &want);
        prop_assert!(s.is_closed());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), step in 1usize..32) {
        let mem = HeapMemory::new(BASE, MODEL_LEN as usize);
        let mut s = session(&mem, TargetConfig::default());
        let whole = run(&mut s, &[&bytes], true, usize::MAX);
        prop_assert!(s.is_closed());
        let pieces: Vec<&[u8]> = bytes.chunks(step).collect();
        let mem2 = HeapMemory::new(BASE, MODEL_LEN as usize);
        let mut s2 = session(&mem2, TargetConfig::default());
        prop_assert_eq!(run(&mut s2, &pieces, true, step), whole);
        prop_assert!(s2.is_closed());
    }
}

#[test]
fn under_a_link_the_reject_status_goes_out_then_the_socket_half_closes() {
    use mc_core::{Lifecycle, Link};
    let life = Lifecycle::new();
    let mem = HeapMemory::new(BASE, LEN);
    let mut acceptor = TargetAcceptor::new(Arc::new(mem), TargetConfig::default(), TargetStats::new());
    let mut link = Link::new(at(0), acceptor.accept(at(0)), &life);
    assert_eq!(life.open(), 1);
    link.handle_input(at(0), &hdr(Op::Write, Framing::V2, BASE - 8, 16));
    assert!(!link.poll_half_close(at(0)), "the status is not written yet");
    let mut bufs = [IoSlice::new(&[])];
    assert_eq!(link.poll_transmit(&mut bufs), 1);
    assert_eq!(&*bufs[0], &REJECTED);
    link.consume(at(0), 8);
    assert!(link.poll_half_close(at(0)));
    link.handle_eof(at(1));
    assert!(link.is_done());
    drop(link);
    assert_eq!(life.open(), 0);
}

/// Memory whose write windows offer their bytes for direct reads (`WriteWindow::dest`).
struct Direct(Arc<std::sync::Mutex<Vec<u8>>>);

struct DirectWindow {
    mem: Arc<std::sync::Mutex<Vec<u8>>>,
    buf: Vec<u8>,
}

impl WriteWindow for DirectWindow {
    fn write_at(&mut self, offset: u64, data: &[u8]) {
        self.buf[offset as usize..offset as usize + data.len()].copy_from_slice(data);
    }
    fn finish(self: Box<Self>) -> Result<(), Reject> {
        *self.mem.lock().unwrap() = self.buf;
        Ok(())
    }
    fn dest(&mut self, offset: u64) -> Option<&mut [u8]> {
        Some(&mut self.buf[offset as usize..])
    }
}

impl TargetMemory for Direct {
    fn open_read(&self, _addr: u64, _len: u64) -> Result<Box<dyn ReadWindow>, Reject> {
        Err(Reject::new("write-only"))
    }
    fn open_write(&self, _addr: u64, len: u64) -> Result<Box<dyn WriteWindow>, Reject> {
        Ok(Box::new(DirectWindow { mem: self.0.clone(), buf: vec![0; len as usize] }))
    }
}

/// A WRITE's payload can be received straight into the window (no intermediate buffer),
/// mixed with ordinary input, and the ack follows the last byte either way.
#[test]
fn a_write_payload_is_received_straight_into_the_window() {
    let mem = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut s = TargetSession::new(at(0), Arc::new(Direct(mem.clone())), TargetConfig::default(), TargetStats::new());
    assert!(s.read_into().is_none(), "no window before a header");
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let mut first = hdr(Op::Write, Framing::V2, BASE, payload.len() as u64);
    first.extend_from_slice(&payload[..100]);
    s.handle_input(at(0), &first);
    let mut pos = 100;
    while pos < payload.len() {
        let dst = s.read_into().expect("the window's rest");
        assert_eq!(dst.len(), payload.len() - pos);
        let n = dst.len().min(3000);
        dst[..n].copy_from_slice(&payload[pos..pos + n]);
        s.handle_read_into(at(0), n);
        pos += n;
    }
    assert!(s.read_into().is_none(), "the body is complete");
    let mut out = Vec::new();
    drain(&mut s, &mut out, usize::MAX);
    assert_eq!(out, OK);
    assert_eq!(*mem.lock().unwrap(), payload);
}
