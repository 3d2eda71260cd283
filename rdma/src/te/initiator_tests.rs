use std::sync::{Arc, OnceLock};

use mc_core::Session;
use proptest::prelude::*;

use super::*;
use crate::te::memory::{HeapMemory, TargetMemory};
use crate::te::target::{TargetConfig, TargetSession, TargetStats};

const BASE: u64 = 0x5a00_0000_0000;
const LEN: usize = 1 << 20;

fn at(ms: u64) -> Now {
    static T0: OnceLock<Instant> = OnceLock::new();
    Now::new(*T0.get_or_init(Instant::now) + Duration::from_millis(ms), 1_700_000_000)
}

/// A lane connected to a target over an in-memory "socket".
struct Pair {
    lane: Lane,
    target: TargetSession,
    mem: HeapMemory,
    /// At most this many bytes move per write (a small socket buffer).
    step: usize,
    target_eof_sent: bool,
}

impl Pair {
    fn new(step: usize, config: TargetConfig) -> Self {
        let mem = HeapMemory::new(BASE, LEN);
        let target = TargetSession::new(at(0), Arc::new(mem.clone()), config, TargetStats::new());
        let mut lane = Lane::new(at(0), LaneConfig::default());
        lane.handle_connected(at(0));
        Self { lane, target, mem, step, target_eof_sent: false }
    }

    /// Moves bytes both ways until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            let mut chunk = Vec::new();
            {
                let mut bufs = [IoSlice::new(&[]); 3];
                let n = self.lane.poll_transmit(&mut bufs);
                for b in &bufs[..n] {
                    chunk.extend_from_slice(b);
                }
            }
            chunk.truncate(self.step);
            if !chunk.is_empty() {
                // Bytes sent to a closed target still fit the socket buffers: dropped.
                self.lane.consume(at(0), chunk.len());
                if !self.target.is_closed() {
                    self.target.handle_input(at(0), &chunk);
                }
                moved = true;
            }
            let mut chunk = Vec::new();
            {
                let mut bufs = [IoSlice::new(&[]); 3];
                let n = self.target.poll_transmit(&mut bufs);
                for b in &bufs[..n] {
                    chunk.extend_from_slice(b);
                }
            }
            chunk.truncate(self.step);
            if !chunk.is_empty() {
                self.target.consume(at(0), chunk.len());
                self.lane.handle_input(at(0), &chunk);
                moved = true;
            }
            if !moved && self.target.is_closed() && !self.target_eof_sent {
                // The target's socket closes: the lane reads EOF.
                self.target_eof_sent = true;
                self.lane.handle_eof(at(0));
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn write(&mut self, addr: u64, data: &[u8], framing: Framing) -> Completion {
        let id = self.lane.submit_write(at(0), addr, Box::new(data.to_vec()), framing).unwrap();
        self.pump();
        let c = self.lane.poll_completion().expect("a completion");
        assert_eq!((c.id, c.op, c.addr, c.len), (id, Op::Write, addr, data.len() as u64));
        c
    }

    fn read(&mut self, addr: u64, len: u64, framing: Framing) -> Completion {
        let id = self.lane.submit_read(at(0), addr, len, ReadDest::Buffer, framing).unwrap();
        self.pump();
        let c = self.lane.poll_completion().expect("a completion");
        assert_eq!((c.id, c.op, c.addr, c.len), (id, Op::Read, addr, len));
        c
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn e2e_sequence_of_the_stand_in_on_one_lane() {
    // te-e2e-fake-target.txt: READ 25, WRITE 57, READ 57, WRITE 3 MiB, READ 3 MiB, all v2.
    let mut p = Pair::new(64 * 1024, TargetConfig::default());
    assert!(p.mem.write(BASE, b"value stored by mc-master"));
    let c = p.read(BASE, 25, Framing::V2);
    assert_eq!((c.result, c.data.as_deref()), (TransferResult::Ok, Some(&b"value stored by mc-master"[..])));
    let small = pattern(57, 3);
    assert_eq!(p.write(BASE + 0x1000, &small, Framing::V2).result, TransferResult::Ok);
    assert_eq!(p.read(BASE + 0x1000, 57, Framing::V2).data.unwrap(), small);
    let big = pattern(3 << 20, 9);
    let mut p = Pair { mem: HeapMemory::new(BASE, 4 << 20), ..p };
    p.target = TargetSession::new(at(0), Arc::new(p.mem.clone()), TargetConfig::default(), TargetStats::new());
    assert_eq!(p.write(BASE + 0x1039, &big, Framing::V2).result, TransferResult::Ok);
    assert_eq!(p.mem.read(BASE + 0x1039, big.len()).unwrap(), big);
    assert_eq!(p.read(BASE + 0x1039, big.len() as u64, Framing::V2).data.unwrap(), big);
    assert!(p.lane.is_idle() && !p.lane.is_closed());
}

#[test]
fn v1_requests() {
    let mut p = Pair::new(100, TargetConfig::default());
    let data = pattern(1000, 1);
    assert_eq!(p.write(BASE, &data, Framing::V1).result, TransferResult::Ok);
    assert_eq!(p.read(BASE, 1000, Framing::V1).data.unwrap(), data);
    // Mixed on one lane.
    assert_eq!(p.write(BASE + 7, b"xyz", Framing::V2).result, TransferResult::Ok);
    assert_eq!(p.read(BASE + 6, 5, Framing::V1).data.unwrap(), [data[6], b'x', b'y', b'z', data[10]]);
}

#[test]
fn v1_write_completes_once_consumed() {
    let mut lane = Lane::new(at(0), LaneConfig::default());
    lane.handle_connected(at(0));
    lane.submit_write(at(0), BASE, Box::new(vec![7u8; 10]), Framing::V1).unwrap();
    let mut bufs = [IoSlice::new(&[]); 2];
    assert_eq!(lane.poll_transmit(&mut bufs), 2);
    assert_eq!(bufs[0].len() + bufs[1].len(), 34);
    lane.consume(at(0), 33);
    assert!(lane.poll_completion().is_none());
    lane.consume(at(0), 1);
    assert_eq!(lane.poll_completion().unwrap().result, TransferResult::Ok);
    assert!(lane.is_idle());
}

#[test]
fn rejects_kill_the_lane() {
    for (op, framing) in [(Op::Write, Framing::V2), (Op::Read, Framing::V2)] {
        let mut p = Pair::new(1 << 16, TargetConfig::default());
        let c = match op {
            Op::Write => p.write(BASE + LEN as u64 - 10, &[1; 100], framing),
            Op::Read => p.read(BASE + LEN as u64 - 10, 100, framing),
        };
        assert_eq!(c.result, TransferResult::Rejected { code: 1 });
        assert!(c.data.is_none());
        assert!(p.lane.is_closed() && !p.lane.is_idle() && !p.lane.wants_read());
        assert_eq!(p.lane.submit_read(at(0), BASE, 1, ReadDest::Buffer, Framing::V2).unwrap_err(), SubmitError::Dead);
        assert!(p.target.is_closed());
    }
}

#[test]
fn v1_rejects_are_silent_loss_or_eof() {
    // data-plane.md §1.4: a rejected v1 WRITE completes (silent loss); a v1 READ sees EOF.
    let mut p = Pair::new(1 << 16, TargetConfig::default());
    assert_eq!(p.write(BASE + LEN as u64, &[1; 100], Framing::V1).result, TransferResult::Ok);
    assert!(p.lane.is_closed(), "the target closed: the lane saw EOF");
    let mut p = Pair::new(1 << 16, TargetConfig::default());
    assert_eq!(p.read(0x7fef_0000_1000, 100, Framing::V1).result, TransferResult::Lost(Lost::Eof));
}

#[test]
fn early_reject_interrupts_a_large_write() {
    let config = TargetConfig { max_request_size: 1024, ..TargetConfig::default() };
    let mut p = Pair::new(4096, config);
    let id = p.lane.submit_write(at(0), BASE, Box::new(vec![0u8; 1 << 20]), Framing::V2).unwrap();
    p.pump();
    let c = p.lane.poll_completion().unwrap();
    assert_eq!((c.id, c.result), (id, TransferResult::Rejected { code: 1 }));
    assert_eq!(p.lane.poll_transmit(&mut [IoSlice::new(&[])]), 0, "the body is not sent on");
}

#[test]
fn one_request_at_a_time_and_zero_length_is_local() {
    let mut lane = Lane::new(at(0), LaneConfig::default());
    let id = lane.submit_read(at(0), BASE, 0, ReadDest::Buffer, Framing::V2).unwrap();
    let c = lane.poll_completion().unwrap();
    assert_eq!((c.id, c.result, c.data), (id, TransferResult::Ok, Some(Vec::new())));
    assert_eq!(lane.poll_transmit(&mut [IoSlice::new(&[])]), 0);
    lane.submit_write(at(0), BASE, Box::new(Vec::new()), Framing::V1).unwrap();
    assert_eq!(lane.poll_completion().unwrap().result, TransferResult::Ok);
    // Submitted while connecting: sent once connected.
    lane.submit_read(at(0), BASE, 8, ReadDest::Buffer, Framing::V2).unwrap();
    assert_eq!(lane.submit_read(at(0), BASE, 8, ReadDest::Buffer, Framing::V2), Err(SubmitError::Busy));
    assert_eq!(lane.poll_transmit(&mut [IoSlice::new(&[])]), 0, "not connected yet");
    assert!(!lane.wants_read());
    lane.handle_connected(at(1));
    let mut bufs = [IoSlice::new(&[])];
    assert_eq!(lane.poll_transmit(&mut bufs), 1);
    assert_eq!(bufs[0].len(), 24);
    assert_eq!(bufs[0][16], 0x80);
    assert_eq!(lane.submit_read(at(0), BASE, u64::MAX, ReadDest::Buffer, Framing::V2), Err(SubmitError::Busy));
}

#[test]
fn read_into_a_caller_window() {
    let mut p = Pair::new(333, TargetConfig::default());
    let data = pattern(5000, 4);
    assert!(p.mem.write(BASE + 100, &data));
    let local = HeapMemory::new(0x1000, 8192);
    let window = local.open_write(0x1000 + 10, 5000).unwrap();
    p.lane.submit_read(at(0), BASE + 100, 5000, ReadDest::Window(window), Framing::V2).unwrap();
    p.pump();
    let c = p.lane.poll_completion().unwrap();
    assert_eq!((c.result, c.data), (TransferResult::Ok, None));
    assert_eq!(local.read(0x1000 + 10, 5000).unwrap(), data);
}

#[test]
fn deadlines() {
    // Connect.
    let mut lane = Lane::new(at(0), LaneConfig::default());
    assert_eq!(lane.poll_timeout(), Some(at(5000).mono));
    lane.handle_timeout(at(4999));
    assert!(!lane.is_closed());
    lane.handle_timeout(at(5000));
    assert!(lane.is_closed());
    assert_eq!(lane.poll_timeout(), None);
    lane.handle_connected(at(5001));
    assert!(!lane.wants_read(), "a dead lane stays dead");

    // Idle and connected: none. Status: 30 s after the request was sent.
    let config = LaneConfig { progress_timeout: None, ..LaneConfig::default() };
    let mut lane = Lane::new(at(0), config);
    lane.handle_connected(at(0));
    assert_eq!(lane.poll_timeout(), None);
    lane.submit_write(at(0), BASE, Box::new(vec![1; 10]), Framing::V2).unwrap();
    assert_eq!(lane.poll_timeout(), None, "no status deadline before the request is sent");
    lane.consume(at(1000), 34);
    assert_eq!(lane.poll_timeout(), Some(at(31_000).mono));
    lane.handle_input(at(2000), &Status::OK.encode()[..4]);
    assert_eq!(lane.poll_timeout(), Some(at(31_000).mono));
    lane.handle_timeout(at(31_000));
    let c = lane.poll_completion().unwrap();
    assert_eq!(c.result, TransferResult::Lost(Lost::Timeout));
    assert!(lane.is_closed());

    // Progress: a READ whose bytes stop coming.
    let mut lane = Lane::new(at(0), LaneConfig::default());
    lane.handle_connected(at(0));
    lane.submit_read(at(0), BASE, 100, ReadDest::Buffer, Framing::V1).unwrap();
    lane.consume(at(10), 24);
    lane.handle_input(at(20), &[0; 50]);
    assert_eq!(lane.poll_timeout(), Some(at(30_020).mono));
    lane.handle_timeout(at(30_020));
    assert_eq!(lane.poll_completion().unwrap().result, TransferResult::Lost(Lost::Timeout));
}

#[test]
fn protocol_errors_and_close() {
    let connected = || {
        let mut lane = Lane::new(at(0), LaneConfig::default());
        lane.handle_connected(at(0));
        lane
    };
    // Bytes on an idle lane.
    let mut lane = connected();
    lane.handle_input(at(0), b"x");
    assert!(lane.is_closed() && lane.poll_completion().is_none());
    // A wrong magic.
    let mut lane = connected();
    lane.submit_read(at(0), BASE, 4, ReadDest::Buffer, Framing::V2).unwrap();
    lane.consume(at(0), 24);
    lane.handle_input(at(0), b"ABCDEFGH");
    assert_eq!(
        lane.poll_completion().unwrap().result,
        TransferResult::Lost(Lost::Protocol("status frame with a wrong magic"))
    );
    // Too many bytes for a READ; bytes after a WRITE's status; bytes during a v1 WRITE.
    let mut lane = connected();
    lane.submit_read(at(0), BASE, 4, ReadDest::Buffer, Framing::V1).unwrap();
    lane.consume(at(0), 24);
    lane.handle_input(at(0), b"12345");
    assert!(matches!(lane.poll_completion().unwrap().result, TransferResult::Lost(Lost::Protocol(_))));
    let mut lane = connected();
    lane.submit_write(at(0), BASE, Box::new(vec![0; 4]), Framing::V2).unwrap();
    lane.handle_input(at(0), &[Status::OK.encode().as_slice(), b"!"].concat());
    assert!(matches!(lane.poll_completion().unwrap().result, TransferResult::Lost(Lost::Protocol(_))));
    let mut lane = connected();
    lane.submit_write(at(0), BASE, Box::new(vec![0; 4]), Framing::V1).unwrap();
    lane.handle_input(at(0), b"?");
    assert!(matches!(lane.poll_completion().unwrap().result, TransferResult::Lost(Lost::Protocol(_))));
    // EOF mid-request and close().
    let mut lane = connected();
    lane.submit_read(at(0), BASE, 4, ReadDest::Buffer, Framing::V2).unwrap();
    lane.handle_eof(at(0));
    assert_eq!(lane.poll_completion().unwrap().result, TransferResult::Lost(Lost::Eof));
    let mut lane = connected();
    lane.submit_read(at(0), BASE, 4, ReadDest::Buffer, Framing::V2).unwrap();
    lane.close(at(0));
    assert_eq!(lane.poll_completion().unwrap().result, TransferResult::Lost(Lost::Closed));
    assert!(lane.is_closed());
    // A status other than 0 or 1 is a rejection too.
    let mut lane = connected();
    lane.submit_read(at(0), BASE, 4, ReadDest::Buffer, Framing::V2).unwrap();
    lane.consume(at(0), 24);
    lane.handle_input(at(0), &Status { code: 7 }.encode());
    assert_eq!(lane.poll_completion().unwrap().result, TransferResult::Rejected { code: 7 });
}

#[derive(Clone, Debug)]
enum Step {
    Write { off: u64, len: usize, seed: u8, framing: Framing },
    Read { off: u64, len: u64, framing: Framing },
}

fn step() -> impl Strategy<Value = Step> {
    let framing = prop_oneof![Just(Framing::V1), Just(Framing::V2)];
    prop_oneof![
        (0u64..4096, 0usize..3000, any::<u8>(), framing.clone()).prop_map(|(off, len, seed, framing)| Step::Write {
            off,
            len,
            seed,
            framing
        }),
        (0u64..4096, 0u64..3000, framing).prop_map(|(off, len, framing)| Step::Read { off, len, framing }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn lane_against_target_matches_a_model(steps in proptest::collection::vec(step(), 1..10), chunk in 1usize..5000) {
        const SMALL: u64 = 6000;
        let mut p = Pair::new(chunk, TargetConfig::default());
        p.mem = HeapMemory::new(BASE, SMALL as usize);
        p.target = TargetSession::new(at(0), Arc::new(p.mem.clone()), TargetConfig::default(), TargetStats::new());
        let mut model = vec![0u8; SMALL as usize];
        for s in steps {
            if p.lane.is_closed() {
                break;
            }
            match s {
                Step::Write { off, len, seed, framing } => {
                    let data = pattern(len, seed);
                    let fits = off + len as u64 <= SMALL;
                    let c = p.write(BASE + off, &data, framing);
                    if len == 0 {
                        prop_assert_eq!(c.result, TransferResult::Ok);
                    } else if fits {
                        prop_assert_eq!(c.result, TransferResult::Ok);
                        model[off as usize..off as usize + len].copy_from_slice(&data);
                    } else if framing == Framing::V2 {
                        prop_assert_eq!(c.result, TransferResult::Rejected { code: 1 });
                    } else {
                        prop_assert_eq!(c.result, TransferResult::Ok); // silent loss
                        prop_assert!(p.lane.is_closed());
                    }
                }
                Step::Read { off, len, framing } => {
                    let fits = off + len <= SMALL;
                    let c = p.read(BASE + off, len, framing);
                    if len == 0 || fits {
                        prop_assert_eq!(c.result, TransferResult::Ok);
                        prop_assert_eq!(c.data.unwrap(), model[off as usize..(off + len) as usize].to_vec());
                    } else if framing == Framing::V2 {
                        prop_assert_eq!(c.result, TransferResult::Rejected { code: 1 });
                    } else {
                        prop_assert_eq!(c.result, TransferResult::Lost(Lost::Eof));
                    }
                }
            }
        }
        prop_assert_eq!(p.mem.read(BASE, SMALL as usize).unwrap(), model);
    }
}
