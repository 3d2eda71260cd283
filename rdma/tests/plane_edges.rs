//! The data plane against misbehaving or upstream-like targets: an early reject of a large
//! write by a target that closes at once, a silent target and the transfer deadline.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{master, MIB};
use mc_core::transfer::{DataPlane, Transfer, TransferOp, TransferOutcome};
use mc_rdma::te::desc::SegmentDesc;
use mc_rdma::te::wire::{Header, Status, HEADER_LEN};
use mc_rdma::{TcpDataPlane, TcpPlaneConfig};

const BASE: u64 = 0x5a00_0000_0000;

/// A plane whose own metadata says segment `name` has 1 GiB at [`BASE`] behind `port`.
fn plane_for(name: &str, port: u16) -> Arc<TcpDataPlane> {
    let m = master(name, 0);
    let desc = SegmentDesc::tcp(name, "127.0.0.1", port, String::new(), &[(BASE, 1 << 30)]);
    m.store().metadata().put(&format!("mooncake/ram/{name}"), &desc.to_json());
    TcpDataPlane::new(m.store().clone(), TcpPlaneConfig { handshake: false, ..Default::default() }).unwrap()
}

fn run(plane: &TcpDataPlane, name: &str, op: TransferOp, within: Duration) -> (TransferOutcome, Duration) {
    let (tx, rx) = channel();
    let start = Instant::now();
    let t = Transfer { id: 1, endpoint: name.to_owned(), op, deadline: start + within };
    plane.submit(t, Box::new(move |o| tx.send(o).unwrap()));
    let o = rx.recv_timeout(within + Duration::from_secs(10)).expect("an outcome");
    (o, start.elapsed())
}

#[test]
fn early_reject_of_a_large_write_by_a_target_that_closes_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut headers = Vec::new();
        // Upstream's target: status 1, then close, with the body unread.
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = [0u8; HEADER_LEN];
            s.read_exact(&mut head).unwrap();
            headers.push(Header::decode(&head));
            s.write_all(&Status::REJECTED.encode()).unwrap();
        }
        headers
    });
    let plane = plane_for("127.0.0.1:17020", port);
    let data = bytes::Bytes::from(vec![7u8; 8 * MIB as usize]);
    let (o, _) = run(&plane, "127.0.0.1:17020", TransferOp::Write { addr: BASE, data }, Duration::from_secs(10));
    match o {
        TransferOutcome::Failed(why) => assert!(why.contains("rejected by the target (status 1)"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The reject re-fetched the (unchanged) descriptor and did not retry.
    let s = plane.stats();
    assert_eq!((s.refetches, s.connects, s.lanes_open), (1, 1, 0), "{s:?}");
    drop(plane);
    let _ = std::net::TcpStream::connect(("127.0.0.1", port)).map(|mut s| s.write_all(&[0; 24]));
    let headers = server.join().unwrap();
    assert_eq!(headers[0].size, 8 * MIB);
    assert_eq!(headers[0].addr, BASE);
}

#[test]
fn a_silent_target_fails_at_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts (the kernel does), never answers.
    let plane = plane_for("127.0.0.1:17021", port);
    let (o, took) =
        run(&plane, "127.0.0.1:17021", TransferOp::Read { addr: BASE, len: 100 }, Duration::from_millis(300));
    match o {
        TransferOutcome::Failed(why) => {
            assert!(why.starts_with("127.0.0.1:17021: READ of 100 bytes at 0x5a0000000000"), "{why}");
            assert!(why.contains("deadline passed"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert!(took >= Duration::from_millis(290) && took < Duration::from_secs(3), "{took:?}");
    drop(listener);
}

#[test]
fn deadlines_passed_and_closed_planes_fail_at_once() {
    let plane = plane_for("127.0.0.1:17022", 1);
    let (o, _) = run(&plane, "127.0.0.1:17022", TransferOp::Read { addr: BASE, len: 1 }, Duration::ZERO);
    assert_eq!(o, TransferOutcome::Failed("127.0.0.1:17022: the deadline passed before the transfer started".into()));
    let (o, _) = run(&plane, "127.0.0.1:17022", TransferOp::Read { addr: BASE, len: 0 }, Duration::ZERO);
    assert_eq!(o, TransferOutcome::Read(Vec::new()), "zero-length: done locally");
    plane.close();
    let (o, _) = run(&plane, "127.0.0.1:17022", TransferOp::Read { addr: BASE, len: 1 }, Duration::from_secs(1));
    assert_eq!(o, TransferOutcome::Failed("127.0.0.1:17022: the data plane is closed".into()));
}
