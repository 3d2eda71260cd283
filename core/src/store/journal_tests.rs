//! The HA journal: what a leader's mutations mark, the batch they make, and a standby that
//! applies it (hidden replicas until the owner remounts, then the same answers).

use std::time::Duration;

use uuid::Uuid;

use super::tests::{config, Harness, MIB};
use super::*;

const BASE: u64 = 0x7f00_0000_0000;
const C1: Uuid = Uuid::from_u128(0xc1);

fn seg(id: u128) -> RemoteSegment {
    RemoteSegment {
        id: Uuid::from_u128(id),
        name: "n1".into(),
        base: BASE,
        size: 16 * MIB,
        te_endpoint: "te-n1".into(),
        protocol: "tcp".into(),
    }
}

fn one() -> WriteConfig {
    WriteConfig { replicas: 1, preferred: Vec::new(), ..Default::default() }
}

fn leader() -> (Harness, std::sync::Arc<Journal>) {
    let h = Harness::new(Config { client_ttl: Duration::from_secs(3600), ..config() });
    let j = h.store.enable_journal();
    h.store.ha_promote(h.now);
    (h, j)
}

fn put(h: &Harness, key: &str, len: u64) {
    h.store.client_put_start(h.now, C1, key, len, &one(), false).unwrap();
    assert_eq!(h.store.client_put_end(h.now, C1, key, None), Ok(Some(len)));
}

#[test]
fn nothing_is_recorded_without_promotion_or_journal() {
    let h = Harness::new(config());
    assert!(h.store.journal().is_none());
    let j = h.store.enable_journal();
    h.store.client_mount(h.now, C1, &seg(0x51)).unwrap();
    assert_eq!(j.seq(), 0, "a standby records nothing");
    assert!(h.store.ha_take(h.now).is_none());
}

#[test]
fn a_leader_marks_mounts_puts_and_removes_and_a_batch_holds_the_latest_state() {
    let (h, j) = leader();
    h.store.client_mount(h.now, C1, &seg(0x51)).unwrap();
    put(&h, "a", 100);
    put(&h, "b", 200);
    assert!(j.seq() >= 3);
    let b = h.store.ha_take(h.now).unwrap();
    assert_eq!(b.upto, j.seq());
    assert!(matches!(&b.ops[0], HaOp::Segment(id, Some(r)) if *id == Uuid::from_u128(0x51) && r.client == C1));
    let objs: Vec<_> = b.ops.iter().filter(|o| matches!(o, HaOp::Object(_, Some(_)))).collect();
    assert_eq!(objs.len(), 2);
    assert!(h.store.ha_take(h.now).is_none(), "taken");
    // A key written then removed before the next batch is one delete.
    put(&h, "c", 10);
    h.store.remove_forced(h.now, "c", true).unwrap();
    let b = h.store.ha_take(h.now).unwrap();
    assert_eq!(b.ops, vec![HaOp::Object("c".into(), None)]);
    j.set_durable(b.upto);
    assert_eq!(j.durable(), j.seq());
}

#[test]
fn a_standby_applies_a_batch_hides_replicas_until_the_owner_remounts() {
    let (h, _) = leader();
    h.store.client_mount(h.now, C1, &seg(0x51)).unwrap();
    put(&h, "a", 100);
    put(&h, "b", 4096);
    let before_a = h.store.client_get(h.now, "a").unwrap();
    let b = h.store.ha_take(h.now).unwrap();

    let s = Harness::new(Config { client_ttl: Duration::from_secs(3600), ..config() });
    s.store.enable_journal();
    s.store.ha_apply(s.now, b.ops.clone());
    assert_eq!(s.store.ha_counts(), (1, 2));
    // Applying the same batch again changes nothing.
    s.store.ha_apply(s.now, b.ops);
    assert_eq!(s.store.ha_counts(), (1, 2));
    s.store.ha_promote(s.now);
    assert_eq!(s.store.client_get(s.now, "a").err(), Some(ErrorCode::ReplicaNotReady), "hidden");
    assert_eq!(s.store.client_ping(s.now, C1), ClientStatus::NeedRemount);
    assert_eq!(s.store.client_remount(s.now, C1, &[seg(0x51)]), Ok(0));
    let after_a = s.store.client_get(s.now, "a").unwrap();
    assert_eq!(after_a.replicas[0].address, before_a.replicas[0].address, "same place");
    assert_eq!(after_a.replicas[0].size, 100);
    // The restored ranges are taken: a new put does not overlap them.
    let d = s.store.client_put_start(s.now, C1, "c", 100, &one(), false).unwrap();
    assert!(d[0].address >= BASE + 100 + 4096 || d[0].address + 100 <= BASE);
}

#[test]
fn unmount_and_clear_drop_the_replica() {
    let (h, _) = leader();
    h.store.client_mount(h.now, C1, &seg(0x51)).unwrap();
    put(&h, "a", 100);
    let b = h.store.ha_take(h.now).unwrap();
    let s = Harness::new(config());
    s.store.enable_journal();
    s.store.ha_apply(s.now, b.ops);
    h.store.client_unmount(h.now, Uuid::from_u128(0x51)).unwrap();
    let b = h.store.ha_take(h.now).unwrap();
    assert!(b.ops.contains(&HaOp::Segment(Uuid::from_u128(0x51), None)));
    s.store.ha_apply(s.now, b.ops);
    assert_eq!(s.store.ha_counts(), (0, 0));
    let s2 = Harness::new(config());
    s2.store.enable_journal();
    s2.store.ha_clear(s2.now);
    assert_eq!(s2.store.ha_counts(), (0, 0));
}

#[test]
fn tenant_quota_policies_are_replicated_and_dropped_with_the_state() {
    let h = Harness::new(Config { client_ttl: Duration::from_secs(3600), multi_tenants: true, ..config() });
    let j = h.store.enable_journal();
    h.store.ha_promote(h.now);
    h.store.set_tenant_quota("a", 4 * MIB).unwrap();
    h.store.set_tenant_quota("b", 2 * MIB).unwrap();
    h.store.delete_tenant_quota("b").unwrap();
    assert!(j.seq() >= 3);
    let b = h.store.ha_take(h.now).unwrap();
    assert_eq!(
        b.ops,
        vec![HaOp::TenantPolicy("a".into(), Some(4 * MIB)), HaOp::TenantPolicy("b".into(), None)],
        "the latest state of each tenant, once"
    );
    // A multi-tenant standby takes them as they are; a single-tenant one ignores them.
    let standby = Harness::new(Config { multi_tenants: true, ..config() });
    standby.store.enable_journal();
    standby.store.client_mount(standby.now, C1, &seg(0x51)).unwrap();
    standby.store.ha_apply(standby.now, b.ops.clone());
    let q = standby.store.tenant_quota("a").unwrap();
    assert_eq!((q.requested_quota_bytes, q.has_explicit_policy), (4 * MIB, true));
    assert_eq!(standby.store.tenant_quota("b"), Err(TenantError::NoPolicy));
    let plain = Harness::new(config());
    plain.store.enable_journal();
    plain.store.ha_apply(plain.now, b.ops);
    assert_eq!(plain.store.tenant_quota("a"), Err(TenantError::Disabled));
    // Stepping down drops them with the rest; the reload brings them back.
    standby.store.ha_clear(standby.now);
    assert_eq!(standby.store.tenant_quota("a"), Err(TenantError::NoPolicy));
    // Nothing is recorded by a standby's own policy calls.
    assert!(standby.store.ha_take(standby.now).is_none());
}
