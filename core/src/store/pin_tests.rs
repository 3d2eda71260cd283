//! Pins and allocation strategies of RPC writes: hard pins are never evicted, soft pins go
//! after every unpinned value (or never, with `--allow-evict-soft-pinned-objects false`) until
//! they run out, upserts keep or drop them as asked; `--allocation-strategy` picks the first
//! replica's node.

use std::time::Duration;

use uuid::Uuid;

use super::remote_tests::seg;
use super::tests::{config, Harness, MIB};
use super::*;
use crate::config::AllocationStrategy;

const C1: Uuid = Uuid::from_u128(0xc1);
const C2: Uuid = Uuid::from_u128(0xc2);
const KIB: u64 = 1024;

/// A store with one 1 MiB segment of C1; leases of 10 s.
fn one_segment(c: Config) -> Harness {
    let h = Harness::new(c);
    h.store.client_mount(h.now, C1, &seg(0x51, "n1", 0x7f00_0000_0000, MIB)).unwrap();
    h
}

fn write(h: &Harness, key: &str, len: u64, cfg: &WriteConfig) -> Result<(), ErrorCode> {
    h.store.client_put_start(h.now, C1, key, len, cfg, false)?;
    h.store.client_put_end(h.now, C1, key, None).map(|_| ())
}

fn plain() -> WriteConfig {
    WriteConfig { replicas: 1, ..Default::default() }
}

fn soft(ms: Option<u64>) -> WriteConfig {
    WriteConfig { replicas: 1, soft_pin: SoftPin::Enable(ms), ..Default::default() }
}

fn hard() -> WriteConfig {
    WriteConfig { replicas: 1, hard_pin: true, ..Default::default() }
}

fn has(h: &Harness, key: &str) -> bool {
    h.store.client_exists(key)
}

#[test]
fn a_hard_pinned_value_is_never_evicted() {
    let mut h = one_segment(config());
    write(&h, "pinned", 512 * KIB, &hard()).unwrap();
    h.advance(Duration::from_millis(1));
    write(&h, "a", 256 * KIB, &plain()).unwrap();
    h.advance(Duration::from_millis(1));
    write(&h, "b", 256 * KIB, &plain()).unwrap();
    // Full: a 512 KiB write evicts the unpinned values, never the older pinned one.
    write(&h, "new", 512 * KIB, &plain()).unwrap();
    assert!(has(&h, "pinned") && has(&h, "new"));
    assert!(!has(&h, "a") && !has(&h, "b"));
    // Nothing but the pinned value and the new one: a write that needs the pinned space fails.
    assert!(write(&h, "big", 768 * KIB, &plain()).is_err());
    assert!(has(&h, "pinned"));
}

#[test]
fn soft_pinned_values_are_evicted_after_every_unpinned_one() {
    let mut h = one_segment(config());
    write(&h, "soft", 512 * KIB, &soft(None)).unwrap();
    h.advance(Duration::from_millis(1));
    write(&h, "a", 256 * KIB, &plain()).unwrap();
    h.advance(Duration::from_millis(1));
    write(&h, "b", 256 * KIB, &plain()).unwrap();
    // The oldest value is soft-pinned: the unpinned ones go first.
    write(&h, "c", 256 * KIB, &plain()).unwrap();
    assert!(has(&h, "soft") && has(&h, "c"));
    assert_eq!(u8::from(has(&h, "a")) + u8::from(has(&h, "b")), 1, "one unpinned value made room");
    // When only the soft-pinned value can make room, it goes (allowed by default).
    write(&h, "big", 768 * KIB, &plain()).unwrap();
    assert!(!has(&h, "soft"));
}

#[test]
fn soft_pinned_values_stay_when_their_eviction_is_not_allowed() {
    let mut h = one_segment(Config { allow_evict_soft_pinned: false, ..config() });
    write(&h, "soft", 512 * KIB, &soft(None)).unwrap();
    h.advance(Duration::from_millis(1));
    write(&h, "a", 512 * KIB, &plain()).unwrap();
    assert_eq!(write(&h, "big", 768 * KIB, &plain()), Err(ErrorCode::NoAvailableHandle));
    assert!(has(&h, "soft"));
    assert!(!has(&h, "a"), "the unpinned value was evicted trying");
}

#[test]
fn a_soft_pin_runs_out_its_ttl_after_the_last_read() {
    let mut h = one_segment(Config { allow_evict_soft_pinned: false, lease_ttl: Duration::ZERO, ..config() });
    write(&h, "soft", 512 * KIB, &soft(Some(1000))).unwrap();
    h.advance(Duration::from_millis(600));
    // A read moves the pin's end to 1 s from now.
    h.store.client_get(h.now, "soft").unwrap();
    h.advance(Duration::from_millis(600));
    write(&h, "a", 512 * KIB, &plain()).unwrap();
    assert_eq!(write(&h, "b", 512 * KIB, &plain()).map(|_| has(&h, "soft")), Ok(true), "a went, soft stays");
    h.advance(Duration::from_millis(500));
    // 1.1 s after the read: an ordinary candidate, the oldest.
    write(&h, "c", 512 * KIB, &plain()).unwrap();
    assert!(!has(&h, "soft") && has(&h, "b") && has(&h, "c"));
}

#[test]
fn soft_pin_ttls_are_capped_and_upserts_keep_or_drop_the_pin() {
    let mut h = one_segment(Config {
        allow_evict_soft_pinned: false,
        lease_ttl: Duration::ZERO,
        soft_pin_max_ttl: Duration::from_secs(2),
        ..config()
    });
    // Asked for an hour, granted the 2 s maximum.
    write(&h, "k", 512 * KIB, &soft(Some(3_600_000))).unwrap();
    // Upsert with PRESERVE keeps the pin (a fresh 2 s from its completion).
    h.store.client_put_start(h.now, C1, "k", 256 * KIB, &plain(), true).unwrap();
    h.store.client_put_end(h.now, C1, "k", None).unwrap();
    h.advance(Duration::from_millis(1));
    write(&h, "x", 512 * KIB, &plain()).unwrap();
    // Room for y: the unpinned x goes, the pinned k stays.
    write(&h, "y", 512 * KIB, &plain()).unwrap();
    assert!(has(&h, "k") && !has(&h, "x"), "still pinned after the upsert");
    // Upsert with DISABLE drops it: now an ordinary candidate.
    let off = WriteConfig { replicas: 1, soft_pin: SoftPin::Disable, ..Default::default() };
    h.store.client_put_start(h.now, C1, "k", 128 * KIB, &off, true).unwrap();
    h.store.client_put_end(h.now, C1, "k", None).unwrap();
    write(&h, "z", MIB, &plain()).unwrap();
    assert!(!has(&h, "k") && !has(&h, "y"));
    // After the cap the pin of an ENABLE write runs out too.
    let mut h2 = one_segment(Config {
        allow_evict_soft_pinned: false,
        soft_pin_max_ttl: Duration::from_secs(2),
        lease_ttl: Duration::ZERO,
        ..config()
    });
    write(&h2, "k", 512 * KIB, &soft(Some(3_600_000))).unwrap();
    h2.advance(Duration::from_millis(2001));
    write(&h2, "w", 768 * KIB, &plain()).unwrap();
    assert!(!has(&h2, "k"));
}

/// Two nodes: n1 (C1, 64 MiB) and n2 (C2, 16 MiB, so n1 has the larger free share).
fn two_nodes(strategy: AllocationStrategy) -> Harness {
    let h = Harness::new(Config { allocation_strategy: strategy, ..config() });
    h.store.client_mount(h.now, C1, &seg(0x51, "10.0.0.1:1", 0x7f00_0000_0000, 64 * MIB)).unwrap();
    h.store.client_mount(h.now, C2, &seg(0x61, "10.0.0.2:1", 0x7e00_0000_0000, 16 * MIB)).unwrap();
    h
}

fn placed_on(h: &Harness, client: Uuid, key: &str, cfg: &WriteConfig) -> String {
    let d = h.store.client_put_start(h.now, client, key, 4096, cfg, false).unwrap();
    h.store.client_put_end(h.now, client, key, None).unwrap();
    d[0].endpoint.clone()
}

#[test]
fn free_ratio_first_takes_the_emptiest_node() {
    let h = two_nodes(AllocationStrategy::FreeRatioFirst);
    // n2 half full: n1 has the larger free share.
    let on_n2 = WriteConfig { replicas: 1, preferred: vec!["10.0.0.2:1".into()], ..Default::default() };
    h.store.client_put_start(h.now, C2, "fill", 8 * MIB, &on_n2, false).unwrap();
    for i in 0..10 {
        assert_eq!(placed_on(&h, C2, &format!("k{i}"), &plain()), "te-10.0.0.1:1");
    }
}

#[test]
fn random_spreads_over_the_nodes_with_room() {
    let h = two_nodes(AllocationStrategy::Random);
    let on_n1 = (0..200).filter(|i| placed_on(&h, C2, &format!("k{i}"), &plain()) == "te-10.0.0.1:1").count();
    assert!((40..=160).contains(&on_n1), "{on_n1} of 200 on n1");
}

#[test]
fn local_first_prefers_the_writers_node_then_its_host() {
    let h = two_nodes(AllocationStrategy::LocalFirst);
    // C2's own node although n1 is emptier.
    assert_eq!(placed_on(&h, C2, "own", &plain()), "te-10.0.0.2:1");
    // A writer without a segment: the node on its host_id.
    let c3 = Uuid::from_u128(0xc3);
    h.store.client_ping(h.now, c3);
    let on_host = WriteConfig { replicas: 1, host_id: "10.0.0.2".into(), ..Default::default() };
    assert_eq!(placed_on(&h, c3, "host", &on_host), "te-10.0.0.2:1");
    // Neither: free ratio first.
    assert_eq!(placed_on(&h, c3, "other", &plain()), "te-10.0.0.1:1");
    // Preferred segments still come first.
    let pref = WriteConfig { replicas: 1, preferred: vec!["10.0.0.1:1".into()], ..Default::default() };
    assert_eq!(placed_on(&h, C2, "pref", &pref), "te-10.0.0.1:1");
}
