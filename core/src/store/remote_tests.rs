//! Remote store nodes (RPC clients): registration, heartbeats and expiry, the write path,
//! reads and leases, removes, unmounts, placement rules and the admin views (SPEC §8.7,
//! rpc-spec §6 invariants).

use std::time::Duration;

use uuid::Uuid;

use super::tests::{config, Harness, MIB};
use super::*;

const BASE: u64 = 0x7f00_0000_0000;

pub(super) fn seg(id: u128, name: &str, base: u64, size: u64) -> RemoteSegment {
    RemoteSegment {
        id: Uuid::from_u128(id),
        name: name.to_string(),
        base,
        size,
        te_endpoint: format!("te-{name}"),
        protocol: "tcp".to_string(),
    }
}

fn one() -> WriteConfig {
    WriteConfig { replicas: 1, preferred: Vec::new(), ..Default::default() }
}

const C1: Uuid = Uuid::from_u128(0xc1);
const C2: Uuid = Uuid::from_u128(0xc2);

/// A store with client C1 owning one 16 MiB segment `s1` (id 0x51) named `n1`; clients
/// expire after `ttl`.
fn mounted_ttl(ttl: Duration) -> Harness {
    let h = Harness::new(Config { client_ttl: ttl, ..config() });
    assert_eq!(h.store.client_mount(h.now, C1, &seg(0x51, "n1", BASE, 16 * MIB)), Ok(true));
    h
}

/// [`mounted_ttl`] with a TTL long enough never to expire in a test.
fn mounted() -> Harness {
    mounted_ttl(Duration::from_secs(3600))
}

fn put(h: &Harness, client: Uuid, key: &str, len: u64) -> Vec<ReplicaDesc> {
    let d = h.store.client_put_start(h.now, client, key, len, &one(), false).unwrap();
    assert_eq!(h.store.client_put_end(h.now, client, key, None), Ok(Some(len)));
    d
}

#[test]
fn mount_registers_a_node_and_ping_asks_for_a_remount_first() {
    let h = Harness::new(config());
    assert_eq!(h.store.gauges().active_clients, 1, "the embedded node");
    assert_eq!(h.store.client_ping(h.now, C1), ClientStatus::NeedRemount, "unknown client");
    let s = seg(0x51, "n1", BASE, 16 * MIB);
    assert_eq!(h.store.client_mount(h.now, C1, &s), Ok(true));
    assert_eq!(h.store.client_mount(h.now, C1, &s), Ok(false), "idempotent");
    assert_eq!(h.store.gauges().active_clients, 2);
    assert_eq!(h.store.client_ping(h.now, C1), ClientStatus::NeedRemount);
    assert_eq!(h.store.client_remount(h.now, C1, std::slice::from_ref(&s)), Ok(0));
    assert_eq!(h.store.client_ping(h.now, C1), ClientStatus::Ok);
    // Invalid mounts.
    assert_eq!(h.store.client_mount(h.now, C1, &seg(0x52, "n1", 0, MIB)), Err(ErrorCode::InvalidParams));
    assert_eq!(h.store.client_mount(h.now, C1, &seg(0x52, "n1", BASE, 0)), Err(ErrorCode::InvalidParams));
    assert_eq!(h.store.client_mount(h.now, C2, &s), Err(ErrorCode::InvalidParams), "another client's id");
    let moved = seg(0x51, "n1", BASE + MIB, 16 * MIB);
    assert_eq!(h.store.client_mount(h.now, C1, &moved), Err(ErrorCode::InvalidParams), "same id, other range");
    // The admin views show the remote segment with its own name, endpoint and client id.
    let info = h.store.segments();
    assert_eq!(info.len(), 1);
    assert_eq!((info[0].name.as_str(), info[0].te_endpoint.as_str()), ("n1", "te-n1"));
    assert_eq!((info[0].client_id, info[0].base_address, info[0].size), (C1, BASE, 16 * MIB));
    assert_eq!(h.store.mounted_node_names(), vec!["n1".to_string()]);
    assert_eq!(h.store.query_segment("n1"), Some((0, 16 * MIB)));
    assert_eq!(h.store.segment_status(Uuid::from_u128(0x51)), Some(SegmentStatus::Mounted));
    assert_eq!(h.store.segment_status_by_name("n1"), Some(SegmentStatus::Mounted));
}

#[test]
fn put_start_end_get_and_the_descriptor_invariants() {
    let h = mounted();
    let d = h.store.client_put_start(h.now, C2, "k", 5, &one(), false).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].address, d[0].size, d[0].endpoint.as_str(), d[0].complete), (BASE, 5, "te-n1", false));
    // In progress: reported as being written, not readable, not listed.
    assert_eq!(h.store.query_key("k"), Err(QueryError::NotReady));
    assert_eq!(h.store.client_get(h.now, "k"), Err(ErrorCode::ReplicaNotReady));
    assert!(!h.store.client_exists("k"));
    assert_eq!(h.store.gauges().key_count, 1);
    // Another put of the key while in progress, and PutEnd by another client.
    assert_eq!(h.store.client_put_start(h.now, C1, "k", 5, &one(), false), Err(ErrorCode::ObjectAlreadyExists));
    assert_eq!(h.store.client_put_end(h.now, C1, "k", None), Err(ErrorCode::IllegalClient));
    assert_eq!(h.store.client_put_end(h.now, C2, "k", Some(7)), Ok(Some(5)));
    assert_eq!(h.store.client_put_end(h.now, C2, "k", Some(7)), Ok(None), "a repeated end succeeds");
    let list = h.store.client_get(h.now, "k").unwrap();
    assert_eq!((list.replicas[0].address, list.replicas[0].complete, list.checksum), (BASE, true, Some(7)));
    assert!(h.store.client_exists("k"));
    // PutStart on an existing key: -705, nothing overwritten.
    assert_eq!(h.store.client_put_start(h.now, C2, "k", 9, &one(), false), Err(ErrorCode::ObjectAlreadyExists));
    // Values are packed without padding.
    let d2 = put(&h, C2, "k2", 8);
    assert_eq!(d2[0].address, BASE + 5);
    assert_eq!(h.store.query_segment("n1"), Some((13, 16 * MIB)));
    let r = h.store.query_key("k").unwrap();
    assert_eq!((r[0].endpoint.as_str(), r[0].address, r[0].size), ("te-n1", BASE, 5));
    let mut keys = Vec::new();
    h.store.list_keys("", None, 10, &mut keys);
    assert_eq!(keys, ["k", "k2"]);
    // REST cannot serve bytes that live in a client's memory.
    assert!(h.store.get(h.now, "k", true).is_none());
    assert!(!h.store.exists("k"));
    // Invalid puts.
    assert_eq!(h.store.client_put_start(h.now, C2, "z", 0, &one(), false), Err(ErrorCode::InvalidParams));
    let none = WriteConfig { replicas: 0, preferred: vec![], ..Default::default() };
    assert_eq!(h.store.client_put_start(h.now, C2, "z", 1, &none, false), Err(ErrorCode::InvalidParams));
    assert_eq!(h.store.client_put_start(h.now, C2, "z", 17 * MIB, &one(), false), Err(ErrorCode::NoAvailableHandle));
}

#[test]
fn revoke_upsert_and_stale_writes() {
    let mut h = mounted();
    h.store.client_put_start(h.now, C2, "k", 5, &one(), false).unwrap();
    assert_eq!(h.store.client_put_revoke(h.now, C1, "k"), Err(ErrorCode::IllegalClient));
    assert_eq!(h.store.client_put_revoke(h.now, C2, "k"), Ok(()));
    assert_eq!(h.store.client_put_revoke(h.now, C2, "k"), Err(ErrorCode::ObjectNotFound));
    assert_eq!(h.store.gauges().key_count, 0);
    assert_eq!(h.store.gauges().allocated_bytes, 0);
    assert_eq!(h.store.counters().put_revokes, 1);
    // Upsert replaces a complete value atomically at its end.
    put(&h, C2, "k", 5);
    let d = h.store.client_put_start(h.now, C2, "k", 6, &one(), true).unwrap();
    assert_eq!(h.store.client_get(h.now, "k").unwrap().replicas[0].size, 5, "old value until the end");
    assert_eq!(h.store.client_put_start(h.now, C1, "k", 6, &one(), true), Err(ErrorCode::ObjectReplicaBusy));
    assert_eq!(h.store.client_put_end(h.now, C2, "k", None), Ok(Some(6)));
    assert_eq!(h.store.client_get(h.now, "k").unwrap().replicas[0].address, d[0].address);
    // A write left in progress for 30 s is discarded by the next PutStart of the key.
    h.store.client_put_start(h.now, C2, "s", 5, &one(), false).unwrap();
    h.advance(Duration::from_secs(29));
    assert_eq!(h.store.client_put_start(h.now, C1, "s", 5, &one(), false), Err(ErrorCode::ObjectAlreadyExists));
    h.advance(Duration::from_secs(1));
    assert!(h.store.client_put_start(h.now, C1, "s", 5, &one(), false).is_ok());
    assert_eq!(h.store.client_put_end(h.now, C2, "s", None), Err(ErrorCode::IllegalClient));
    assert_eq!(h.store.client_put_end(h.now, C1, "s", None), Ok(Some(5)));
}

#[test]
fn leases_remove_force_and_remove_all_counts() {
    let mut h = mounted();
    put(&h, C2, "a", 1);
    put(&h, C2, "b", 1);
    put(&h, C2, "c", 1);
    h.store.client_put_start(h.now, C2, "w", 1, &one(), false).unwrap();
    h.store.client_get(h.now, "a").unwrap(); // lease 10 s
    assert_eq!(h.store.remove_forced(h.now, "a", false), Err(RemoveError::Leased));
    assert_eq!(h.store.remove_forced(h.now, "w", true), Err(RemoveError::BeingWritten));
    assert_eq!(h.store.remove_forced(h.now, "nope", true), Err(RemoveError::NotFound));
    assert_eq!(h.store.remove_where(h.now, false, &|k| k.starts_with('b')), 1);
    assert_eq!(h.store.remove_where(h.now, false, &|_| true), 1, "c; a is leased, w is being written");
    assert_eq!(h.store.remove_where(h.now, true, &|_| true), 1, "a with force");
    assert_eq!(h.store.keys_where(&|_| true), Vec::<String>::new());
    put(&h, C2, "d", 1);
    h.store.client_get(h.now, "d").unwrap();
    h.advance(Duration::from_secs(10));
    assert_eq!(h.store.remove_forced(h.now, "d", false), Ok(()), "the lease expired");
    assert_eq!(h.store.lease_ttl(), Duration::from_secs(10));
}

#[test]
fn immediate_and_graceful_unmount() {
    let mut h = mounted();
    let s2 = seg(0x52, "n1", BASE + 16 * MIB, 16 * MIB);
    h.store.client_mount(h.now, C1, &s2).unwrap();
    put(&h, C2, "k", 5);
    let id1 = Uuid::from_u128(0x51);
    let on = h.store.query_key("k").unwrap()[0].address;
    let (first, other) = if on < BASE + 16 * MIB { (id1, s2.id) } else { (s2.id, id1) };
    h.store.client_get(h.now, "k").unwrap();
    // Immediate unmount drops the replica regardless of its lease.
    assert_eq!(h.store.client_unmount(h.now, first), Ok(()));
    assert_eq!(h.store.query_key("k"), Err(QueryError::NotFound));
    assert_eq!(h.store.segment_status(first), None);
    assert_eq!(h.store.client_unmount(h.now, first), Ok(()), "unknown ids succeed");
    // Graceful: readable until the deadline, no new allocation, then gone.
    put(&h, C2, "g", 5);
    h.store.client_mount(h.now, C2, &seg(0x61, "n2", BASE * 2, MIB)).unwrap();
    h.store.client_unmount(h.now, Uuid::from_u128(0x61)).unwrap();
    assert_eq!(
        h.store.client_graceful_unmount(h.now, other, C2, Duration::from_secs(1)),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        h.store.client_graceful_unmount(h.now, other, Uuid::from_u128(9), Duration::from_secs(1)),
        Err(ErrorCode::SegmentNotFound)
    );
    assert_eq!(h.store.client_graceful_unmount(h.now, other, C1, Duration::from_secs(1)), Ok(()));
    assert_eq!(h.store.client_graceful_unmount(h.now, other, C1, Duration::from_secs(5)), Ok(()));
    assert_eq!(h.store.segment_status(other), Some(SegmentStatus::GracefullyUnmounting));
    assert!(h.store.client_get(h.now, "g").is_ok());
    assert_eq!(h.store.client_put_start(h.now, C2, "x", 5, &one(), false), Err(ErrorCode::NoAvailableHandle));
    assert_eq!(h.store.mounted_node_names(), Vec::<String>::new());
    h.advance(Duration::from_secs(1));
    assert_eq!(h.store.segment_status(other), None, "removed at the deadline (not 10 s later)");
    assert_eq!(h.store.client_get(h.now, "g"), Err(ErrorCode::ObjectNotFound));
    // A REST unmount cannot touch a remote segment, an RPC unmount no local one.
    let local = h.store.mount_anonymous(h.now, MountKind::Anonymous, MIB, Protocol::Tcp, "").unwrap();
    assert_eq!(h.store.unmount(h.now, UnmountFamily::Anonymous, &[id1], Duration::ZERO), vec![false]);
    assert_eq!(h.store.client_unmount(h.now, local.segment_ids[0]), Err(ErrorCode::InvalidParams));
}

#[test]
fn placement_follows_the_writer() {
    let h = mounted();
    let local = h.store.mount_anonymous(h.now, MountKind::Anonymous, MIB, Protocol::Tcp, "").unwrap();
    // A REST write lands in this process's memory; an RPC write in a client's.
    h.store.put(h.now, "rest", b"hello").unwrap();
    let r = h.store.query_key("rest").unwrap();
    assert_eq!(r[0].endpoint, "127.0.0.1:8080");
    assert!(h.store.get(h.now, "rest", false).is_some());
    assert_eq!(h.store.client_get(h.now, "rest"), Err(ErrorCode::ObjectNotFound), "not reachable over RPC");
    assert!(!h.store.client_exists("rest"));
    assert_eq!(h.store.client_put_start(h.now, C2, "rest", 3, &one(), false), Err(ErrorCode::ObjectAlreadyExists));
    put(&h, C2, "rpc", 3);
    assert_eq!(h.store.query_key("rpc").unwrap()[0].endpoint, "te-n1");
    // Without a remote segment an RPC write has nowhere to go, even with local room.
    h.store.client_unmount(h.now, Uuid::from_u128(0x51)).unwrap();
    assert_eq!(h.store.client_put_start(h.now, C2, "x", 3, &one(), false), Err(ErrorCode::NoAvailableHandle));
    // And a REST write does not land on a remote segment.
    h.store.unmount(h.now, UnmountFamily::Anonymous, &local.segment_ids, Duration::ZERO);
    h.store.client_mount(h.now, C1, &seg(0x53, "n1", BASE, 16 * MIB)).unwrap();
    assert_eq!(h.store.put(h.now, "y", b"v"), Err(PutError::InsufficientStorage));
}

#[test]
fn replicas_on_distinct_nodes_preferred_first() {
    let h = mounted();
    h.store.client_mount(h.now, C2, &seg(0x61, "n2", BASE * 2, 16 * MIB)).unwrap();
    let cfg = WriteConfig { replicas: 3, preferred: vec!["n2".to_string()], ..Default::default() };
    let d = h.store.client_put_start(h.now, C1, "k", 4, &cfg, false).unwrap();
    let eps: Vec<&str> = d.iter().map(|r| r.endpoint.as_str()).collect();
    assert_eq!(eps, ["te-n2", "te-n1"], "two nodes: two replicas, the preferred one first");
    assert_ne!(d[0].id, d[1].id);
    h.store.client_put_end(h.now, C1, "k", None).unwrap();
    assert_eq!(h.store.client_get(h.now, "k").unwrap().replicas.len(), 2);
    assert_eq!(h.store.gauges().allocated_bytes, 8);
    // Unmounting one node's segment keeps the object readable through the other.
    h.store.client_unmount(h.now, Uuid::from_u128(0x61)).unwrap();
    assert_eq!(h.store.client_get(h.now, "k").unwrap().replicas.len(), 1);
}

#[test]
fn client_expiry_unmounts_drops_objects_aborts_writes_and_cleans_metadata() {
    let mut h = mounted_ttl(Duration::from_secs(10));
    let store = h.store.clone();
    let md = store.metadata();
    md.put("mooncake/ram/n1", b"{}");
    md.put("mooncake/rpc_meta/n1", b"{}");
    md.put("mooncake/ram/n2", b"{}");
    h.store.client_mount(h.now, C2, &seg(0x61, "n2", BASE * 2, 16 * MIB)).unwrap();
    let cfg = WriteConfig { replicas: 1, preferred: vec!["n1".to_string()], ..Default::default() };
    h.store.client_put_start(h.now, C2, "on-n1", 4, &cfg, false).unwrap();
    h.store.client_put_end(h.now, C2, "on-n1", None).unwrap();
    h.store.client_get(h.now, "on-n1").unwrap(); // leased: expiry ignores it
    let cfg2 = WriteConfig { replicas: 1, preferred: vec!["n2".to_string()], ..Default::default() };
    h.store.client_put_start(h.now, C1, "by-c1", 4, &cfg2, false).unwrap();
    assert_eq!(h.store.gauges().active_clients, 3);
    // C2 keeps pinging, C1 goes silent.
    for _ in 0..9 {
        h.advance(Duration::from_secs(1));
        assert_eq!(h.store.client_ping(h.now, C2), ClientStatus::NeedRemount);
    }
    let g = h.store.gauges();
    assert_eq!(g.active_clients, 3);
    // The oldest heartbeat is C1's (9 s old), what `master_client_oldest_heartbeat_age_seconds` shows.
    assert_eq!(g.oldest_heartbeat_ns.map(|ns| h.store.since(h.now, ns)), Some(Duration::from_secs(9)));
    assert_eq!(h.store.counters().expired_clients, 0);
    h.advance(Duration::from_secs(1));
    let g = h.store.gauges();
    assert_eq!(g.active_clients, 2, "C1 expired 10 s after its last heartbeat");
    assert_eq!(h.store.counters().expired_clients, 1);
    assert_eq!(
        g.oldest_heartbeat_ns.map(|ns| h.store.since(h.now, ns)),
        Some(Duration::from_secs(1)),
        "C2 pinged 1 s ago"
    );
    assert_eq!(h.store.segment_status(Uuid::from_u128(0x51)), None);
    assert_eq!(h.store.query_key("on-n1"), Err(QueryError::NotFound));
    assert_eq!(h.store.query_key("by-c1"), Err(QueryError::NotFound), "its write was aborted");
    assert_eq!(g.key_count, 0);
    assert_eq!(md.get("mooncake/ram/n1"), None);
    assert_eq!(md.get("mooncake/rpc_meta/n1"), None);
    assert!(md.get("mooncake/ram/n2").is_some());
    // The expired client comes back: NEED_REMOUNT, then a remount revives it (empty).
    assert_eq!(h.store.client_ping(h.now, C1), ClientStatus::NeedRemount);
    assert_eq!(h.store.client_remount(h.now, C1, &[seg(0x51, "n1", BASE, 16 * MIB)]), Ok(1));
    assert_eq!(h.store.client_ping(h.now, C1), ClientStatus::Ok);
    assert_eq!(h.store.gauges().active_clients, 3);
    assert_eq!(h.store.query_segment("n1"), Some((0, 16 * MIB)));
}

// ---------------------------------------------------------------------------------------------
// Cluster mode: the data plane's access to this process's memory, RPC writers placed on it.

fn cluster() -> Harness {
    Harness::new(Config { cluster: true, client_ttl: Duration::from_secs(3600), ..config() })
}

/// The address of the first replica of `key` as `/query_key` reports it.
fn address_of(h: &Harness, key: &str) -> u64 {
    h.store.query_key(key).expect("replicas")[0].address
}

#[test]
fn cluster_rpc_writers_land_on_this_process_and_write_through_the_target() {
    let h = cluster();
    h.mount(16 * MIB);
    let value = b"written-by-upstream-client: 0123456789";
    let len = value.len() as u64;
    let reps = h.store.client_put_start(h.now, C1, "k2", len, &one(), false).expect("placed");
    assert_eq!(reps.len(), 1);
    let local = h.store.local_buffers();
    assert_eq!(local.len(), 1);
    let (base, size) = local[0];
    let addr = reps[0].address;
    assert!(addr >= base && addr + len <= base + size, "replica inside the local segment");
    assert_eq!(reps[0].endpoint, "127.0.0.1:8080", "this node's name is the TE endpoint");
    // While written: readable by nobody, writable inside the allocation only.
    assert_eq!(h.store.open_read_range(addr, len).err(), Some(RangeRefused::NotComplete));
    assert_eq!(h.store.open_write_range(addr, len + 1).err(), Some(RangeRefused::NotInValue));
    assert!(h.store.open_write_range(addr + len, 1).is_err());
    let mut w = h.store.open_write_range(addr, len).expect("writable");
    w.write_at(0, &value[..10]);
    w.write_at(10, &value[10..]);
    w.finish().expect("finished");
    assert_eq!(h.store.client_put_end(h.now, C1, "k2", None), Ok(Some(len)));
    // Complete: no more writes, reads of any sub-range, and the REST API sees it.
    assert_eq!(h.store.open_write_range(addr, len).err(), Some(RangeRefused::NotWritable));
    assert_eq!(h.store.open_read_range(addr + 3, 5).expect("readable").bytes(), &value[3..8]);
    assert_eq!(h.get("k2").as_deref(), Some(&value[..]));
    // RPC readers see REST-written values.
    h.put("rest", b"stored over REST").unwrap();
    let list = h.store.client_get(h.now, "rest").expect("visible over RPC");
    assert_eq!(list.replicas[0].address, address_of(&h, "rest"));
    assert!(h.store.client_exists("rest"));
}

#[test]
fn cluster_target_refuses_everything_outside_live_values() {
    let h = cluster();
    let seg = h.mount(16 * MIB);
    h.put("a", b"hello world").unwrap();
    let addr = address_of(&h, "a");
    let (base, size) = h.store.local_buffers()[0];
    assert_eq!(h.store.open_read_range(addr, 11).expect("inside").bytes(), b"hello world");
    for (at, len) in [(addr, 12), (addr + 11, 1), (base + size - 1, 2), (u64::MAX - 1, 4), (addr, 0), (0x10, 8)] {
        assert!(h.store.open_read_range(at, len).is_err(), "{at:#x}+{len} must be refused");
        assert!(h.store.open_write_range(at, len).is_err(), "{at:#x}+{len} must be refused");
    }
    // A REST value is never writable by the data plane.
    assert_eq!(h.store.open_write_range(addr, 11).err(), Some(RangeRefused::NotWritable));
    // A read in flight holds the value through a replace; the unmount ends access.
    let r = h.store.open_read_range(addr, 11).unwrap();
    h.put("a", b"HELLO WORLD").unwrap();
    assert_eq!(r.bytes(), b"hello world", "the old bytes stay until the read ends");
    drop(r);
    assert!(h.unmount(seg, Duration::ZERO));
    assert!(h.store.local_buffers().is_empty());
    assert_eq!(h.store.open_read_range(addr, 11).err(), Some(RangeRefused::NoSegment));
}

#[test]
fn cluster_revoked_write_keeps_its_memory_until_the_transfer_ends() {
    let h = cluster();
    h.mount(MIB);
    let len = 600 * 1024;
    let reps = h.store.client_put_start(h.now, C1, "big", len, &one(), false).unwrap();
    let addr = reps[0].address;
    let mut w = h.store.open_write_range(addr, len).unwrap();
    h.store.client_put_revoke(h.now, C1, "big").unwrap();
    // The range is not free: a new write of the same size does not fit the 1 MiB segment.
    assert!(h.store.client_put_start(h.now, C1, "next", len, &one(), false).is_err());
    w.write_at(0, &[7u8; 1024]);
    assert_eq!(w.finish().err(), Some(RangeRefused::NotWritable), "the writer learns of the revoke");
    // Once the transfer's guard is gone the space is back.
    assert!(h.store.client_put_start(h.now, C1, "next", len, &one(), false).is_ok());
}

#[test]
fn cluster_rest_reads_find_values_on_other_nodes() {
    let h = cluster();
    assert_eq!(h.store.client_mount(h.now, C1, &seg(0x51, "n1", BASE, 16 * MIB)), Ok(true));
    let reps = h.store.client_put_start(h.now, C1, "remote", 5, &one(), false).unwrap();
    assert!(!h.store.exists("remote"), "not before it is complete");
    h.store.client_put_end(h.now, C1, "remote", None).unwrap();
    assert!(h.store.exists("remote"));
    assert!(h.store.get(h.now, "remote", true).is_none(), "no local bytes");
    let r = h.store.remote_replica(h.now, "remote", true).expect("on n1");
    assert_eq!(r, RemoteReplica { endpoint: "te-n1".into(), address: reps[0].address, len: 5 });
    // Without cluster mode the split stays.
    let split = mounted();
    split.store.client_put_start(split.now, C1, "remote", 5, &one(), false).unwrap();
    split.store.client_put_end(split.now, C1, "remote", None).unwrap();
    assert!(!split.store.exists("remote"));
    assert!(split.store.remote_replica(split.now, "remote", true).is_none());
}

#[test]
fn open_access_serves_any_range_of_a_live_segment_only() {
    let h = cluster();
    let seg = h.mount(MIB);
    let (base, size) = h.store.local_buffers()[0];
    let mut w = h.store.open_raw_range(base + 100, 4).expect("inside the segment");
    w.write_at(0, b"abcd");
    drop(w);
    assert_eq!(h.store.open_raw_range(base + 100, 4).unwrap().bytes(), b"abcd");
    assert!(h.store.open_raw_range(base + size - 2, 4).is_err(), "past the end");
    assert!(h.store.open_raw_range(base, 0).is_err());
    // A range in flight keeps the segment's memory until it ends.
    let r = h.store.open_raw_range(base, 8).unwrap();
    assert!(h.unmount(seg, Duration::ZERO));
    assert!(h.store.open_raw_range(base, 8).is_err(), "no longer live");
    assert_eq!(r.bytes().len(), 8);
    drop(r);
    assert!(h.store.segments().is_empty(), "removed once the last range ended");
}

/// C1 with segment `s1` (on which it wrote `k`, and began writing `w`) and C2 with
/// segment `s2`; a client TTL of 10 s and a suspicion TTL of 20 s.
fn suspicion_setup() -> Harness {
    let h = Harness::new(Config {
        client_ttl: Duration::from_secs(10),
        client_suspicion_ttl: Duration::from_secs(20),
        ..config()
    });
    h.store.client_mount(h.now, C1, &seg(0x51, "n1", BASE, 16 * MIB)).unwrap();
    h.store.client_mount(h.now, C2, &seg(0x61, "n2", BASE * 2, MIB)).unwrap();
    let on_n1 = WriteConfig { replicas: 1, preferred: vec!["n1".to_string()], ..Default::default() };
    h.store.client_put_start(h.now, C1, "k", 4096, &on_n1, false).unwrap();
    h.store.client_put_end(h.now, C1, "k", None).unwrap();
    h.store.client_put_start(h.now, C1, "w", 4096, &on_n1, false).unwrap();
    h
}

/// Advances `d` in 1 s steps while C2 keeps pinging (only C1 goes silent).
fn silent_c1(h: &mut Harness, d: Duration) {
    let end = h.now + d;
    while h.now < end {
        h.advance(Duration::from_secs(1).min(end - h.now));
        h.store.client_ping(h.now, C2);
    }
}

#[test]
fn a_silent_client_is_suspected_its_replicas_withheld_and_a_ping_restores_them() {
    let mut h = suspicion_setup();
    assert!(h.store.client_get(h.now, "k").is_ok());
    silent_c1(&mut h, Duration::from_secs(9));
    assert_eq!(h.store.counters().suspected_clients, 0, "9 s: still Active");
    silent_c1(&mut h, Duration::from_secs(1));
    let (g, c) = (h.store.gauges(), h.store.counters());
    assert_eq!((c.suspected_clients, c.expired_clients, c.recovered_clients), (1, 0, 0));
    assert_eq!(g.suspected_clients, 1);
    assert_eq!(g.active_clients, 3, "a suspected client keeps its resources: still counted");
    // Withheld from reads: -703, not "not found"; kept: the segment and the key are there.
    assert_eq!(h.store.client_get(h.now, "k"), Err(ErrorCode::ReplicaNotReady));
    assert!(!h.store.client_exists("k"));
    assert_eq!(h.store.segment_status(Uuid::from_u128(0x51)), Some(SegmentStatus::Mounted));
    assert_eq!(h.store.gauges().key_count, 2);
    // Withheld from allocation: a write that only fits on n1 has nowhere to go, a small
    // one goes to n2 even when n1 is preferred.
    assert_eq!(h.store.client_put_start(h.now, C2, "big", 2 * MIB, &one(), false), Err(ErrorCode::NoAvailableHandle));
    let on_n1 = WriteConfig { replicas: 1, preferred: vec!["n1".to_string()], ..Default::default() };
    let d = h.store.client_put_start(h.now, C2, "small", 4096, &on_n1, false).unwrap();
    assert_eq!(d[0].endpoint, "te-n2");
    // The next Ping makes it Active again: everything readable, its write still completes.
    assert_eq!(h.store.client_ping(h.now, C1), ClientStatus::NeedRemount);
    let (g, c) = (h.store.gauges(), h.store.counters());
    assert_eq!((c.suspected_clients, c.recovered_clients, c.expired_clients), (1, 1, 0));
    assert_eq!(g.suspected_clients, 0);
    assert_eq!(h.store.client_get(h.now, "k").unwrap().replicas[0].endpoint, "te-n1");
    assert!(h.store.client_exists("k"));
    assert_eq!(h.store.client_put_end(h.now, C1, "w", None), Ok(Some(4096)));
    assert!(h.store.client_put_start(h.now, C2, "big", 2 * MIB, &one(), false).is_ok());
}

#[test]
fn a_suspected_client_goes_offline_after_the_suspicion_ttl_and_is_cleaned_up() {
    let mut h = suspicion_setup();
    silent_c1(&mut h, Duration::from_secs(10));
    assert_eq!(h.store.counters().suspected_clients, 1);
    silent_c1(&mut h, Duration::from_secs(19));
    assert_eq!(h.store.counters().expired_clients, 0, "29 s: still Suspected");
    assert_eq!(h.store.segment_status(Uuid::from_u128(0x51)), Some(SegmentStatus::Mounted));
    silent_c1(&mut h, Duration::from_secs(1));
    let (g, c) = (h.store.gauges(), h.store.counters());
    assert_eq!((c.suspected_clients, c.expired_clients, c.recovered_clients), (1, 1, 0));
    assert_eq!((g.suspected_clients, g.active_clients), (0, 2));
    assert_eq!(h.store.segment_status(Uuid::from_u128(0x51)), None, "Offline: unmounted");
    assert_eq!(h.store.client_get(h.now, "k"), Err(ErrorCode::ObjectNotFound));
    assert_eq!(h.store.query_key("w"), Err(QueryError::NotFound), "its write was aborted");
    // An offline client is a new one when it comes back: NEED_REMOUNT, nothing recovered.
    assert_eq!(h.store.client_ping(h.now, C1), ClientStatus::NeedRemount);
    assert_eq!(h.store.counters().recovered_clients, 0);
}

#[test]
fn a_recovered_client_gets_a_fresh_ttl() {
    let mut h = suspicion_setup();
    silent_c1(&mut h, Duration::from_secs(10));
    silent_c1(&mut h, Duration::from_secs(5));
    h.store.client_ping(h.now, C1); // t = 15 s: Active again
    silent_c1(&mut h, Duration::from_secs(9));
    assert_eq!(h.store.counters().suspected_clients, 1, "t = 24 s: Active since 15 s");
    silent_c1(&mut h, Duration::from_secs(1));
    assert_eq!(h.store.counters().suspected_clients, 2, "t = 25 s: suspected again");
    silent_c1(&mut h, Duration::from_secs(19));
    assert_eq!(h.store.counters().expired_clients, 0, "t = 44 s: not the first deadline (30 s)");
    silent_c1(&mut h, Duration::from_secs(1));
    assert_eq!(h.store.counters().expired_clients, 1, "t = 45 s: 10 s + 20 s after its last ping");
}

#[test]
fn without_a_suspicion_ttl_a_silent_client_expires_at_the_ttl() {
    let mut h = Harness::new(Config { client_ttl: Duration::from_secs(10), ..config() });
    h.store.client_mount(h.now, C1, &seg(0x51, "n1", BASE, 16 * MIB)).unwrap();
    h.advance(Duration::from_secs(10));
    let c = h.store.counters();
    assert_eq!((c.suspected_clients, c.expired_clients), (0, 1));
}
