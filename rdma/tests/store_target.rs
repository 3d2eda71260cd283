//! mc-master as a TE target of its own segments (StoreMemory behind a TargetSession) and the
//! TcpDataPlane reading and writing them over loopback sockets.

mod common;

use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{master, now, pattern, Server, MIB};
use mc_core::store::WriteConfig;
use mc_core::transfer::{DataPlane, Transfer, TransferOp, TransferOutcome};
use mc_core::Master;
use mc_rdma::te::target::{TargetAcceptor, TargetConfig, TargetStats};
use mc_rdma::{PublishConfig, Publisher, StoreMemory, TcpDataPlane, TcpPlaneConfig};
use uuid::Uuid;

const NAME: &str = "127.0.0.1:17001";

struct Node {
    master: Arc<Master>,
    plane: Arc<TcpDataPlane>,
    stats: Arc<TargetStats>,
    _target: Server,
    _publisher: Arc<Publisher>,
}

/// A master with `segment` bytes, its TE target on a random port, its descriptor published
/// in its own metadata, and a data plane that resolves through that metadata.
fn node(segment: u64) -> Node {
    let master = master(NAME, segment);
    let stats = TargetStats::new();
    let memory = Arc::new(StoreMemory::new(master.store().clone()));
    let target = Server::start(Box::new(TargetAcceptor::new(memory, TargetConfig::default(), stats.clone())));
    let publisher = Publisher::install(master.store(), PublishConfig::new(NAME, "127.0.0.1", target.port())).unwrap();
    let config = TcpPlaneConfig { handshake: false, ..TcpPlaneConfig::default() };
    let plane = TcpDataPlane::new(master.store().clone(), config).unwrap();
    Node { master, plane, stats, _target: target, _publisher: publisher }
}

fn transfer(op: TransferOp) -> Transfer {
    Transfer { id: 1, endpoint: NAME.to_owned(), op, deadline: Instant::now() + Duration::from_secs(20) }
}

/// Submits and waits for the outcome (checking that `done` comes from another thread).
fn run(plane: &TcpDataPlane, op: TransferOp) -> TransferOutcome {
    let (tx, rx) = channel();
    let caller = std::thread::current().id();
    plane.submit(
        transfer(op),
        Box::new(move |o| {
            assert_ne!(std::thread::current().id(), caller, "done runs on the plane's threads");
            tx.send(o).unwrap();
        }),
    );
    rx.recv_timeout(Duration::from_secs(30)).expect("an outcome")
}

fn read(plane: &TcpDataPlane, addr: u64, len: u64) -> TransferOutcome {
    run(plane, TransferOp::Read { addr, len })
}

fn write(plane: &TcpDataPlane, addr: u64, data: &[u8]) -> TransferOutcome {
    run(plane, TransferOp::Write { addr, data: bytes::Bytes::copy_from_slice(data) })
}

fn address(m: &Master, key: &str) -> u64 {
    let replicas = m.store().query_key(key).unwrap();
    assert_eq!(replicas[0].endpoint, NAME);
    replicas[0].address
}

fn failed(o: TransferOutcome) -> String {
    match o {
        TransferOutcome::Failed(why) => {
            assert!(why.starts_with(&format!("{NAME}: ")), "names the node: {why}");
            why
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn reads_values_by_address_and_is_refused_outside_them() {
    let n = node(64 * MIB);
    let store = n.master.store();
    store.put(now().mono, "k", b"value stored by mc-master").unwrap();
    store.put(now().mono, "other", &pattern(4096, 1)).unwrap();
    let addr = address(&n.master, "k");
    assert_eq!(read(&n.plane, addr, 25), TransferOutcome::Read(b"value stored by mc-master".to_vec()));
    assert_eq!(read(&n.plane, addr + 6, 6), TransferOutcome::Read(b"stored".to_vec()), "inside one value");

    let why = failed(read(&n.plane, addr + 20, 10));
    assert!(why.contains("rejected by the target (status 1)"), "{why}");
    let (base, size) = store.local_buffers()[0];
    let why = failed(read(&n.plane, base + size - 100, 100));
    assert!(why.contains("rejected"), "unallocated memory: {why}");
    let why = failed(read(&n.plane, base + size, 1));
    assert!(why.contains("outside every buffer"), "{why}");
    let why = failed(write(&n.plane, addr, b"overwrite"));
    assert!(why.contains("WRITE of 9 bytes") && why.contains("rejected"), "complete values are not writable: {why}");
    assert_eq!(read(&n.plane, addr, 25), TransferOutcome::Read(b"value stored by mc-master".to_vec()));

    let s = n.stats.snapshot();
    assert_eq!(s.rejects, 3, "{s:?}");
    assert_eq!(s.open, 1, "one lane left open: {s:?}");
    assert_eq!(read(&n.plane, addr, 0), TransferOutcome::Read(Vec::new()), "zero length: local");
    assert_eq!(n.plane.stats().requests, 6, "the range outside every buffer is never sent");
}

#[test]
fn writes_into_an_rpc_allocation_then_put_end_completes_it() {
    let n = node(64 * MIB);
    let store = n.master.store();
    let client = Uuid::from_u128(0xc1);
    let value = pattern(57, 3);
    let cfg = WriteConfig { replicas: 1, preferred: Vec::new(), ..Default::default() };
    let replicas = store.client_put_start(now().mono, client, "rpc", 57, &cfg, false).unwrap();
    assert_eq!(replicas[0].endpoint, NAME);
    let addr = replicas[0].address;
    assert_eq!(write(&n.plane, addr, &value), TransferOutcome::Written);
    let why = failed(read(&n.plane, addr, 57));
    assert!(why.contains("rejected"), "not readable before PutEnd: {why}");
    assert_eq!(store.client_put_end(now().mono, client, "rpc", None), Ok(Some(57)));
    assert_eq!(store.get(now().mono, "rpc", false).unwrap().bytes(), &value[..]);
    assert_eq!(read(&n.plane, addr, 57), TransferOutcome::Read(value));
    let why = failed(write(&n.plane, addr, b"late"));
    assert!(why.contains("rejected"), "complete now: {why}");
}

#[test]
fn a_3_mib_and_a_40_mib_value_both_ways() {
    let n = node(128 * MIB);
    let store = n.master.store();
    let client = Uuid::from_u128(0xc2);
    let cfg = WriteConfig { replicas: 1, preferred: Vec::new(), ..Default::default() };
    for (key, len) in [("three", 3 * MIB), ("forty", 40 * MIB)] {
        let value = pattern(len as usize, len as u8);
        let before = n.plane.stats().requests;
        let addr = store.client_put_start(now().mono, client, key, len, &cfg, false).unwrap()[0].address;
        assert_eq!(write(&n.plane, addr, &value), TransferOutcome::Written);
        assert_eq!(store.client_put_end(now().mono, client, key, None), Ok(Some(len)));
        assert!(store.get(now().mono, key, false).unwrap().bytes() == &value[..], "{key} landed");
        match read(&n.plane, addr, len) {
            TransferOutcome::Read(bytes) => assert!(bytes == value, "{key} read back"),
            other => panic!("{other:?}"),
        }
        let slices = len.div_ceil(mc_rdma::tcp_plane::MAX_SLICE);
        assert_eq!(n.plane.stats().requests - before, 2 * slices, "{key}: one request per slice each way");
    }
    let s = n.plane.stats();
    assert!(s.lanes_peak >= 2 && s.lanes_peak <= 4, "the 40 MiB slices ran on several lanes: {s:?}");
    assert_eq!(s.bytes_read, 43 * MIB);
    assert_eq!(s.bytes_written, 43 * MIB);
}

#[test]
fn lanes_grow_to_at_most_four_with_concurrent_transfers() {
    let n = node(64 * MIB);
    let store = n.master.store();
    let mut keys = Vec::new();
    for i in 0..16u8 {
        let value = pattern(MIB as usize, i);
        store.put(now().mono, &format!("k{i}"), &value).unwrap();
        keys.push((address(&n.master, &format!("k{i}")), value));
    }
    for _round in 0..3 {
        let (tx, rx) = channel();
        for (i, (addr, _)) in keys.iter().enumerate() {
            let tx = tx.clone();
            n.plane.submit(
                Transfer { id: i as u64, ..transfer(TransferOp::Read { addr: *addr, len: MIB }) },
                Box::new(move |o| tx.send((i, o)).unwrap()),
            );
        }
        for _ in 0..keys.len() {
            let (i, o) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
            assert!(o == TransferOutcome::Read(keys[i].1.clone()), "transfer {i}");
        }
    }
    let s = n.plane.stats();
    assert!(s.lanes_peak >= 2, "concurrent transfers opened several lanes: {s:?}");
    assert!(s.lanes_peak <= 4 && s.connects <= 4, "at most 4 lanes: {s:?}");
    assert_eq!(n.plane.lanes_to("127.0.0.1", n._target.port()), s.connects as usize, "lanes persist");
    let t = n.stats.snapshot();
    assert_eq!(t.connections, s.connects);
    assert_eq!(t.reads, 48);
}
