//! (f) Request bytes into one `mc_core::rpc::RpcConnection` (the `--rpc-port` session) with
//! the real `RpcService` over a `Master` on `FakePlatform` (no local segment: the memory of
//! the segments the input mounts is the client's, so replies hold no heap address), fed
//! whole, split at points chosen by the input while only part of the output is consumed
//! between pieces, and one byte at a time, with an EOF or a shutdown at a chosen offset.
//!
//! Checks: no panic; after every call the output (what was written plus what is pending)
//! only grows, and only by whole reply frames (16-byte header, body of its length); each
//! reply answers the next complete, acceptable request of the input before the event, in
//! order, with its seq (`function_not_registered` exactly for the ids not served, a result
//! that decodes as the method's result type, Debug style, or `invalid rpc arg`), and there is
//! one reply per such request; input after the event or after a bad frame is ignored; the
//! connection closes; the three runs give the same output bytes; no single allocation is
//! larger than the input justifies (a length field must not size a buffer by itself).
//!
//! Input: `k` (1 byte), `k` split offsets (2 bytes each, little endian, modulo the length),
//! the event (1 byte: bit 0 shutdown instead of EOF, bit 1 at the offset that follows
//! instead of at the end; bits 2–7 the output bytes consumed after each call, 0 = all), the
//! event offset (2 bytes, modulo the length + 1), then the request bytes.
#![no_main]

use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mc_core::platform::FakePlatform;
use mc_core::rpc::{
    decode_with, error_body, lookup, RequestHeader, ResponseHeader, RpcConnection, RpcService, ERRC_INVALID_ARG,
    ERRC_NOT_REGISTERED, MAGIC, MAX_FRAME, MSG_INVALID_ARG, MSG_NOT_REGISTERED, REQ_HDR, RESP_HDR,
};
use mc_core::{Master, Now, Session};
use mc_fuzz::{at, config};

use mc_fuzz::LARGEST;

/// The connection under test, driven the way an adapter drives a session. The only code
/// that knows the connection's API: adapt it here when that API changes.
struct Driver {
    conn: RpcConnection,
    now: Now,
}

impl Driver {
    fn new(master: &Arc<Master>) -> Self {
        let now = at(Duration::ZERO);
        let svc = RpcService::new(master.clone(), master.register_worker());
        Driver { conn: svc.new_connection(now), now }
    }
    fn input(&mut self, data: &[u8]) {
        Session::handle_input(&mut self.conn, self.now, data);
    }
    fn eof(&mut self) {
        Session::handle_eof(&mut self.conn, self.now);
    }
    fn shutdown(&mut self) {
        Session::handle_shutdown(&mut self.conn, self.now);
    }
    /// Everything pending, gathered from up to four slices.
    fn pending(&self) -> Vec<u8> {
        let mut bufs = [IoSlice::new(&[]); 4];
        let n = Session::poll_transmit(&self.conn, &mut bufs);
        assert!(n <= bufs.len());
        let out: Vec<u8> = bufs[..n].iter().flat_map(|b| b.iter().copied()).collect();
        assert!(n == 0 || !out.is_empty(), "poll_transmit filled only empty slices");
        out
    }
    fn consume(&mut self, n: usize) {
        Session::consume(&mut self.conn, self.now, n);
    }
    fn wants_read(&self) -> bool {
        Session::wants_read(&self.conn)
    }
    fn is_closed(&self) -> bool {
        Session::is_closed(&self.conn)
    }
    fn poll_timeout_is_none(&self) -> bool {
        Session::poll_timeout(&self.conn).is_none()
    }
}

/// A request the connection must answer: seq and function id.
type Request = (u32, u32);

/// The requests of `input` a connection answers: complete frames with an acceptable header,
/// up to the first bad or oversized one (which closes the connection).
fn requests(input: &[u8]) -> Vec<Request> {
    let mut out = Vec::new();
    let mut rest = input;
    while rest.len() >= REQ_HDR {
        let h = RequestHeader::parse(rest);
        if !h.is_acceptable() || h.payload_len() > MAX_FRAME {
            break;
        }
        let total = REQ_HDR + h.payload_len() as usize;
        if rest.len() < total {
            break;
        }
        out.push((h.seq, h.function_id));
        rest = &rest[total..];
    }
    out
}

/// Checks one reply frame against the request it answers.
fn check_reply(h: &ResponseHeader, body: &[u8], (seq, fid): Request) {
    assert_eq!((h.magic, h.version, h.msg_type, h.attach_length), (MAGIC, 0, 0, 0), "{h:?}");
    assert_eq!(h.seq, seq, "replies out of order");
    let served = lookup(fid).filter(|i| i.def.served);
    match (h.err_code, served) {
        (ERRC_NOT_REGISTERED, None) => assert_eq!(body, error_body(MSG_NOT_REGISTERED)),
        (ERRC_INVALID_ARG, Some(info)) => {
            assert!(info.req.is_some(), "{} takes no argument and was refused", info.def.name);
            assert_eq!(body, error_body(MSG_INVALID_ARG));
        }
        (0, Some(info)) => {
            let (v, bi) = decode_with(&info.def.ret, &info.ret_literal, info.ret_hash, body)
                .unwrap_or_else(|e| panic!("{} reply does not decode: {e}", info.def.name));
            assert_eq!(bi.consumed, body.len(), "{}: trailing bytes", info.def.name);
            let code = info.def.ret.len_code_for(&v).expect("decoded");
            assert_eq!(bi.meta, Some(0x04 | (code << 3)), "{}: not Debug style", info.def.name);
        }
        (code, _) => panic!("err_code {code} for function {fid:#010x} (served: {})", served.is_some()),
    }
}

/// The output seen so far, checked as it grows.
struct Wire<'a> {
    /// Every byte the connection has produced (written or still pending).
    seen: Vec<u8>,
    /// Bytes consumed (written to the peer).
    written: usize,
    /// `seen[..frames]` is whole reply frames, all checked.
    frames: usize,
    replies: usize,
    expect: &'a [Request],
}

impl<'a> Wire<'a> {
    fn new(expect: &'a [Request]) -> Self {
        Wire { seen: Vec::new(), written: 0, frames: 0, replies: 0, expect }
    }

    /// After every call: what is pending continues what was seen, and ends on a frame boundary.
    fn observe(&mut self, d: &Driver) -> usize {
        let pending = d.pending();
        let known = &self.seen[self.written..];
        assert!(pending.len() >= known.len(), "pending output shrank from {} to {} bytes", known.len(), pending.len());
        assert!(pending[..known.len()] == *known, "pending output changed");
        self.seen.extend_from_slice(&pending[known.len()..]);
        while self.frames < self.seen.len() {
            let rest = &self.seen[self.frames..];
            assert!(rest.len() >= RESP_HDR, "output grew by part of a reply header");
            let h = ResponseHeader::parse(rest);
            let end = RESP_HDR + h.length as usize;
            assert!(rest.len() >= end, "output grew by part of a reply body");
            assert!(self.replies < self.expect.len(), "more replies than complete requests");
            check_reply(&h, &rest[RESP_HDR..end], self.expect[self.replies]);
            self.replies += 1;
            self.frames += end;
        }
        pending.len()
    }

    /// Consumes up to `step` bytes of the pending output (all of it when `step` is 0).
    fn consume(&mut self, d: &mut Driver, step: usize) {
        loop {
            let pending = self.observe(d);
            if pending == 0 {
                return;
            }
            let n = if step == 0 { pending } else { step.min(pending) };
            d.consume(n);
            self.written += n;
            if step != 0 {
                self.observe(d);
                return;
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Eof,
    Shutdown,
}

/// One connection's life: `pieces` of the input in order, `event` before the piece that starts
/// at `event_at` (or after the last), `step` output bytes consumed after each call. Returns
/// the output.
fn run(pieces: &[&[u8]], event: Event, event_at: usize, step: usize, expect: &[Request], limit: usize) -> Vec<u8> {
    let master = Master::new(config(), Arc::new(FakePlatform::new(7)), at(Duration::ZERO));
    LARGEST.store(0, Ordering::Relaxed);
    let mut d = Driver::new(&master);
    let mut w = Wire::new(expect);
    let deliver = |d: &mut Driver, w: &mut Wire| {
        // An adapter delivers neither input nor EOF while the session does not want to read:
        // it writes first (after which only a closed session still refuses).
        if !d.wants_read() {
            w.consume(d, 0);
        }
        match event {
            Event::Eof => d.eof(),
            Event::Shutdown => d.shutdown(),
        }
        w.consume(d, step);
    };
    let mut offset = 0;
    let mut delivered = false;
    for piece in pieces {
        if !delivered && offset >= event_at {
            deliver(&mut d, &mut w);
            delivered = true;
        }
        if !d.wants_read() {
            w.consume(&mut d, 0);
        }
        d.input(piece);
        w.consume(&mut d, step);
        offset += piece.len();
    }
    if !delivered {
        deliver(&mut d, &mut w);
    }
    w.consume(&mut d, 0);
    // The peer closes too (after a shutdown), which changes nothing.
    d.eof();
    w.consume(&mut d, 0);
    assert_eq!(w.replies, expect.len(), "requests left unanswered");
    assert_eq!(w.frames, w.seen.len());
    assert!(d.is_closed(), "not closed after {event:?} with every reply written");
    assert!(!d.wants_read() && d.poll_timeout_is_none());
    d.input(b"\x15\0\0\0\0\0\0\0\x56\xbb\x81\x7b\0\0\0\0\0\0\0\0");
    assert_eq!(w.observe(&d), 0, "a closed connection answered");
    drop(d);
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest <= limit, "an allocation of {largest} bytes (limit {limit})");
    w.seen
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else { return };
    let k = usize::from(k % 16);
    if rest.len() < 2 * k + 3 {
        return;
    }
    let (offsets, rest) = rest.split_at(2 * k);
    let (ctl, input) = (rest[0], &rest[3..]);
    let len = input.len();
    let event = if ctl & 1 == 0 { Event::Eof } else { Event::Shutdown };
    let event_at = if ctl & 2 == 0 { len } else { usize::from(u16::from_le_bytes([rest[1], rest[2]])) % (len + 1) };
    let step = usize::from(ctl >> 2);

    let mut cuts: Vec<usize> = offsets
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (len + 1))
        .chain([event_at])
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let pieces = mc_fuzz::pieces(input, &cuts);
    let expect = requests(&input[..event_at]);
    // Output is held back above 1 MiB (a buffer of up to twice that), the input is bounded:
    // nothing needs more than a few MiB, whatever the headers announce.
    let limit = (4 << 20) + 64 * len;

    let whole = [&input[..event_at], &input[event_at..]];
    let a = run(&whole, event, event_at, 0, &expect, limit);
    let b = run(&pieces, event, event_at, step, &expect, limit);
    assert!(
        a == b,
        "split at {:?}, consuming {step} bytes at a time: other output",
        pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
    );
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let c = run(&bytes, event, event_at, 0, &expect, limit);
    assert!(a == c, "fed one byte at a time: other output");
});
