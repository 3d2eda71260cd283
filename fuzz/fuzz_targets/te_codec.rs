//! The TE data-plane codecs of `mc-rdma` (the data port's target session, the handshake
//! decoder and the handshake-port session) on arbitrary bytes:
//!
//! (a) no input panics;
//! (b) the same bytes fed unsplit, one byte at a time, and split at points chosen by the
//!     input give identical output, final state and (for the target) memory contents;
//!     output is also consumed in small pieces in the split runs.
//!
//! Input: `k` (1 byte), then `k` split offsets (2 bytes each, little endian, modulo the
//! length), then the bytes. The target serves a 4 KiB heap memory at address 0.
#![no_main]

use std::io::IoSlice;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mc_core::{Acceptor, Now, Session};
use mc_rdma::te::desc::SegmentDesc;
use mc_rdma::te::handshake::{Frame, HandshakeDecoder};
use mc_rdma::te::handshake_server::HandshakeAcceptor;
use mc_rdma::te::memory::HeapMemory;
use mc_rdma::te::target::{TargetConfig, TargetSession, TargetStats};

const MEMORY: usize = 4096;

/// A fixed clock: no deadline is due during a run.
fn at(offset: Duration) -> Now {
    static BASE: OnceLock<Instant> = OnceLock::new();
    Now::new(*BASE.get_or_init(Instant::now) + offset, 1_700_000_000)
}

/// Feeds `pieces`, draining the output `step` bytes at a time after each, then EOF.
fn drive(session: &mut dyn Session, pieces: &[&[u8]], step: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let drain = |s: &mut dyn Session, out: &mut Vec<u8>| loop {
        let mut bufs = [IoSlice::new(&[]); 4];
        let n = s.poll_transmit(&mut bufs);
        let mut taken = Vec::new();
        for b in &bufs[..n] {
            taken.extend_from_slice(b);
        }
        taken.truncate(step);
        if taken.is_empty() {
            return;
        }
        out.extend_from_slice(&taken);
        s.consume(at(Duration::ZERO), taken.len());
    };
    for p in pieces {
        session.handle_input(at(Duration::ZERO), p);
        drain(session, &mut out);
    }
    session.handle_eof(at(Duration::ZERO));
    drain(session, &mut out);
    (out, session.is_closed())
}

fn target_run(pieces: &[&[u8]], step: usize) -> (Vec<u8>, bool, Vec<u8>) {
    let mem = HeapMemory::new(0, MEMORY);
    let config = TargetConfig { max_request_size: 2048, ..TargetConfig::default() };
    let mut s = TargetSession::new(at(Duration::ZERO), Arc::new(mem.clone()), config, TargetStats::new());
    let (out, closed) = drive(&mut s, pieces, step);
    (out, closed, mem.read(0, MEMORY).unwrap_or_default())
}

fn handshake_run(pieces: &[&[u8]], step: usize) -> (Vec<u8>, bool) {
    let desc = || SegmentDesc::tcp("127.0.0.1:1", "127.0.0.1", 2, "t".into(), &[(4096, 4096)]);
    let mut s = HandshakeAcceptor::new(Arc::new(desc)).accept(at(Duration::ZERO));
    drive(&mut *s, pieces, step)
}

fn decode_frames(pieces: &[&[u8]]) -> (Vec<Frame>, bool) {
    let mut d = HandshakeDecoder::new();
    let mut frames = Vec::new();
    for p in pieces {
        d.push(p);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((input, cuts)) = mc_fuzz::split_spec(data, &[]) else { return };
    let input = &input[..];
    let pieces = mc_fuzz::pieces(input, &cuts);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let step = 1 + usize::from(data[0] / 16);

    let whole = target_run(&[input], usize::MAX);
    assert_eq!(target_run(&pieces, step), whole, "target, split at {pieces:?}");
    assert_eq!(target_run(&bytes, 3), whole, "target, one byte at a time");
    assert!(whole.1, "the target closes after EOF");

    let whole = handshake_run(&[input], usize::MAX);
    assert_eq!(handshake_run(&pieces, step), whole, "handshake, split at {pieces:?}");
    assert_eq!(handshake_run(&bytes, 1), whole, "handshake, one byte at a time");
    assert!(whole.1, "the handshake session closes after EOF");

    let whole = decode_frames(&[input]);
    assert_eq!(decode_frames(&pieces), whole, "decoder, split at {pieces:?}");
    assert_eq!(decode_frames(&bytes), whole, "decoder, one byte at a time");
    for f in &whole.0 {
        assert_eq!(decode_frames(&[&f.encode()]).0, vec![f.clone()], "frame re-encodes");
    }
});
