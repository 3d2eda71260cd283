//! KV events, path by path: every way a key gains or loses its value records exactly one
//! event; replacing records only the new value's `stored`; aborted writes record nothing.

use std::time::Duration;

use uuid::Uuid;

use super::tests::{config, Harness, MIB};
use super::*;
use crate::kv_events::{KvEvent, KvEventKind};

const C1: Uuid = Uuid::from_u128(0xc1);

fn events(h: &Harness) -> Vec<(KvEventKind, String)> {
    let (evs, dropped) = h.store.take_kv_events(10_000);
    assert_eq!(dropped, 0);
    evs.into_iter().map(|KvEvent { kind, key }| (kind, key.to_string())).collect()
}

use KvEventKind::{Removed as R, Stored as S};

fn s(k: &str) -> (KvEventKind, String) {
    (S, k.to_string())
}

fn r(k: &str) -> (KvEventKind, String) {
    (R, k.to_string())
}

fn harness(c: Config) -> Harness {
    let h = Harness::new(Config { lease_ttl: Duration::ZERO, ..c });
    h.store.enable_kv_events(0);
    h
}

#[test]
fn rest_puts_replaces_removes_and_remove_all() {
    let h = harness(config());
    assert!(events(&h).is_empty(), "nothing before the first write");
    h.mount(16 * MIB);
    h.put("a", b"1").unwrap();
    h.put("b", b"2").unwrap();
    h.put("a", b"3").unwrap(); // replace: only the new value's stored
    assert_eq!(events(&h), [s("a"), s("b"), s("a")]);
    h.store.remove(h.now, "a").unwrap();
    assert_eq!(events(&h), [r("a")]);
    h.put("c", b"4").unwrap();
    assert_eq!(h.store.remove_all(h.now), 2);
    let mut got = events(&h);
    got.sort();
    assert_eq!(got, [s("c"), r("b"), r("c")]);
}

#[test]
fn eviction_and_unmount_record_removed() {
    let mut c = config();
    c.eviction_high_watermark_ratio = 0.5;
    let mut h = harness(c);
    let seg = h.mount(MIB);
    for i in 0..4 {
        h.put(&format!("k{i}"), &[0u8; 200 * 1024]).unwrap();
        h.advance(Duration::from_millis(20));
    }
    let got = events(&h);
    let evicted: Vec<_> = got.iter().filter(|(k, _)| *k == R).collect();
    assert!(!evicted.is_empty(), "{got:?}");
    assert_eq!(got.iter().filter(|(k, _)| *k == S).count(), 4);
    let left = h.store.gauges().key_count;
    h.store.unmount(h.now, UnmountFamily::Anonymous, &[seg], Duration::ZERO);
    assert_eq!(events(&h).len() as u64, left, "one removed per key left");
}

#[test]
fn rpc_writes_aborts_and_client_expiry() {
    let mut h = harness(Config { client_ttl: Duration::from_secs(1), ..config() });
    h.store.client_mount(h.now, C1, &super::remote_tests::seg(0x51, "n1", 0x7f00_0000_0000, 16 * MIB)).unwrap();
    let one = WriteConfig { replicas: 1, ..Default::default() };
    h.store.client_put_start(h.now, C1, "k", 10, &one, false).unwrap();
    assert!(events(&h).is_empty(), "a write in progress is no event");
    h.store.client_put_end(h.now, C1, "k", None).unwrap();
    h.store.client_put_start(h.now, C1, "revoked", 10, &one, false).unwrap();
    h.store.client_put_revoke(h.now, C1, "revoked").unwrap();
    h.store.client_put_start(h.now, C1, "k", 20, &one, true).unwrap();
    h.store.client_put_end(h.now, C1, "k", None).unwrap();
    assert_eq!(events(&h), [s("k"), s("k")], "the revoked write and the upsert's replace record nothing else");
    h.store.client_put_start(h.now, C1, "w", 10, &one, false).unwrap();
    h.store.client_put_start(h.now, C1, "x", 10, &one, false).unwrap();
    h.store.client_put_end(h.now, C1, "x", None).unwrap();
    assert_eq!(h.store.remove_where(h.now, true, &|k| k == "x"), 1);
    assert_eq!(events(&h), [s("x"), r("x")]);
    // Expiry drops `k` (one removed) and aborts `w` (none).
    h.advance(Duration::from_secs(2));
    assert_eq!(events(&h), [r("k")]);
}

#[test]
fn a_full_queue_drops_the_oldest_and_says_how_many() {
    let h = Harness::new(config());
    h.store.enable_kv_events(2);
    h.mount(16 * MIB);
    for k in ["a", "b", "c", "d"] {
        h.put(k, b"v").unwrap();
    }
    let (evs, dropped) = h.store.take_kv_events(64);
    assert_eq!(dropped, 2);
    assert_eq!(evs.iter().map(|e| &*e.key).collect::<Vec<_>>(), ["c", "d"]);
}
