//! Multi-tenant mode (`tenant.rs`): what each tenant is charged along every path that adds
//! or drops memory, admission against quotas with eviction inside the tenant, the policy
//! rules, and the default tenant's view of listings.

use std::time::Duration;

use uuid::Uuid;

use super::remote_tests::seg;
use super::tests::{config, Harness, MIB};
use super::*;

const C1: Uuid = Uuid::from_u128(0xc1);
const C2: Uuid = Uuid::from_u128(0xc2);
const BASE: u64 = 0x7f00_0000_0000;

fn replicas(n: u64) -> WriteConfig {
    WriteConfig { replicas: n, preferred: Vec::new(), ..Default::default() }
}

/// A multi-tenant store with two nodes of one 16 MiB segment each (0x51 on C1, 0x52 on C2).
fn two_nodes() -> Harness {
    let h = Harness::new(Config { multi_tenants: true, client_ttl: Duration::from_secs(3600), ..config() });
    h.store.client_mount(h.now, C1, &seg(0x51, "n1", BASE, 16 * MIB)).unwrap();
    h.store.client_mount(h.now, C2, &seg(0x52, "n2", 2 * BASE, 16 * MIB)).unwrap();
    h
}

fn put(h: &Harness, tenant: &str, key: &str, len: u64, n: u64) -> Result<(), ErrorCode> {
    let k = scoped_key(tenant, key);
    h.store.client_put_start(h.now, C1, &k, len, &replicas(n), false)?;
    h.store.client_put_end(h.now, C1, &k, None).map(|_| ())
}

/// Registers `tenants` with a quota of 8 MiB each (a tenant writes only with a policy).
fn register(h: &Harness, tenants: &[&str]) {
    for t in tenants {
        h.store.set_tenant_quota(t, 8 * MIB).unwrap();
    }
}

fn charged(h: &Harness, tenant: &str) -> u64 {
    h.store.tenant_quota(tenant).map_or(0, |q| q.charged_bytes)
}

#[test]
fn a_tenant_is_charged_length_times_replicas_until_the_memory_is_freed() {
    let h = two_nodes();
    register(&h, &["a", "b"]);
    put(&h, "a", "k", 1000, 2).unwrap();
    put(&h, "b", "k", 10, 1).unwrap();
    assert_eq!((charged(&h, "a"), charged(&h, "b")), (2000, 10));
    // A write in progress is charged from its allocation; a revoke gives it back.
    let w = scoped_key("a", "w");
    h.store.client_put_start(h.now, C1, &w, 300, &replicas(1), false).unwrap();
    assert_eq!(charged(&h, "a"), 2300);
    h.store.client_put_revoke(h.now, C1, &w).unwrap();
    assert_eq!(charged(&h, "a"), 2000);
    // Losing one of two replicas (its segment unmounted) halves the charge.
    h.store.client_unmount(h.now, Uuid::from_u128(0x52)).unwrap();
    assert_eq!(charged(&h, "a"), 1000);
    // The same key of two tenants is two objects.
    assert!(h.store.client_exists(&scoped_key("a", "k")) && h.store.client_exists(&scoped_key("b", "k")));
    assert!(!h.store.client_exists("k"), "nothing in the default tenant");
    // Removed (no lease): nothing charged; once its policy is deleted the tenant is gone.
    h.store.remove_forced(h.now, &scoped_key("a", "k"), false).unwrap();
    assert_eq!(charged(&h, "a"), 0);
    assert_eq!(h.store.delete_tenant_quota("a"), Ok(None));
    assert_eq!(h.store.tenant_quota("a"), Err(TenantError::NoPolicy));
    let names: Vec<String> = h.store.tenant_quotas().unwrap().into_iter().map(|q| q.tenant_id).collect();
    assert_eq!(names, ["b"]);
}

#[test]
fn a_removed_value_read_in_flight_stays_charged_until_its_lease_ends() {
    let mut h = two_nodes();
    register(&h, &["a"]);
    put(&h, "a", "k", 100, 1).unwrap();
    h.store.client_get(h.now, &scoped_key("a", "k")).unwrap(); // lease 10 s
    h.store.remove_forced(h.now, &scoped_key("a", "k"), true).unwrap();
    assert_eq!(charged(&h, "a"), 100, "the memory is still held under the lease");
    h.advance(Duration::from_secs(10));
    assert_eq!(charged(&h, "a"), 0);
}

#[test]
fn a_tenant_over_its_quota_evicts_its_own_values_then_is_refused() {
    let mut h = two_nodes();
    register(&h, &["b"]);
    let q = h.store.set_tenant_quota("a", MIB).unwrap();
    assert_eq!((q.requested_quota_bytes, q.effective_quota_bytes, q.charged_bytes), (MIB, MIB, 0));
    put(&h, "b", "other", MIB, 1).unwrap();
    put(&h, "a", "k1", MIB / 2, 1).unwrap();
    h.advance(Duration::from_millis(1));
    put(&h, "a", "k2", MIB / 2, 1).unwrap();
    let q = h.store.tenant_quota("a").unwrap();
    assert!(q.admission_closed && !q.over_quota, "{q:?}");
    // Full: the tenant's oldest value goes to make room, no other tenant's.
    h.advance(Duration::from_millis(1));
    put(&h, "a", "k3", MIB / 4, 1).unwrap();
    assert!(!h.store.client_exists(&scoped_key("a", "k1")));
    assert!(h.store.client_exists(&scoped_key("a", "k2")) && h.store.client_exists(&scoped_key("b", "other")));
    assert_eq!(charged(&h, "a"), 3 * MIB / 4);
    // Leased values are no candidates: refused, counted, nothing lost.
    h.store.client_get(h.now, &scoped_key("a", "k2")).unwrap();
    h.store.client_get(h.now, &scoped_key("a", "k3")).unwrap();
    assert_eq!(put(&h, "a", "k4", MIB / 2, 1), Err(ErrorCode::TenantQuotaExceeded));
    assert_eq!(put(&h, "a", "big", 2 * MIB, 1), Err(ErrorCode::TenantQuotaExceeded), "larger than the quota");
    assert_eq!(charged(&h, "a"), 3 * MIB / 4);
    let m = h.store.tenant_metrics().unwrap();
    assert_eq!(m.rejects, [("a".to_string(), 2)]);
    assert_eq!(m.evicted_bytes, [("a".to_string(), MIB / 2)]);
    assert_eq!(m.capacity, 32 * MIB);
    // The replicas asked count: two replicas of 1/8 MiB fit the 1/4 MiB left, three do not.
    assert_eq!(put(&h, "a", "r3", MIB / 8, 3), Err(ErrorCode::TenantQuotaExceeded));
    assert_eq!(put(&h, "a", "r2", MIB / 8, 2), Ok(()));
    // A tenant without a policy may not write at all, and leaves no trace (no state is kept
    // for tenant ids from the network).
    assert_eq!(put(&h, "c", "k", 1, 1), Err(ErrorCode::TenantNotRegistered));
    assert_eq!(put(&h, "", "k", 1, 1), Err(ErrorCode::TenantNotRegistered), "the default tenant neither");
    assert_eq!(h.store.tenant_quota("c"), Err(TenantError::NoPolicy));
    assert_eq!(h.store.tenant_metrics().unwrap().rejects, [("a".to_string(), 3)]);
}

#[test]
fn rest_writes_are_the_default_tenants_and_listings_show_only_its_keys() {
    let h = two_nodes();
    h.mount(MIB);
    assert_eq!(h.put("plain", b"v"), Err(PutError::TenantNotRegistered), "REST is the default tenant");
    register(&h, &["a", DEFAULT_TENANT]);
    h.put("plain", b"v").unwrap();
    put(&h, "a", "hidden", 5, 1).unwrap();
    assert_eq!(charged(&h, DEFAULT_TENANT), 1);
    let mut keys = Vec::new();
    h.store.list_keys("", None, 100, &mut keys);
    assert_eq!(keys, ["plain"]);
    // The default tenant's quota applies to REST writes.
    h.store.set_tenant_quota(DEFAULT_TENANT, 2).unwrap();
    assert_eq!(h.put("big", b"abc"), Err(PutError::QuotaExceeded));
    assert!(h.get("plain").is_some(), "nothing of the tenant could make room: nothing lost");
}

#[test]
fn policies_are_deleted_only_when_the_tenant_is_empty() {
    let h = two_nodes();
    assert_eq!(h.store.delete_tenant_quota("a"), Err(TenantError::NoPolicy));
    h.store.set_tenant_quota("a", MIB).unwrap();
    register(&h, &["b"]);
    put(&h, "a", "k", 10, 1).unwrap();
    put(&h, "b", "k", 10, 1).unwrap();
    assert_eq!(h.store.delete_tenant_quota("a"), Err(TenantError::NotEmpty));
    assert_eq!(h.store.remove_tenant(h.now, "a", false), 1);
    assert!(h.store.client_exists(&scoped_key("b", "k")), "remove_all of one tenant leaves the others");
    assert_eq!(h.store.delete_tenant_quota("a"), Ok(None));
    assert_eq!(h.store.remove_tenant(h.now, "", false), 1, "an empty tenant: every tenant");
}

#[test]
fn single_tenant_mode_has_no_quotas() {
    let h = Harness::new(config());
    assert_eq!(h.store.set_tenant_quota("a", 1), Err(TenantError::Disabled));
    assert_eq!(h.store.tenant_quotas(), Err(TenantError::Disabled));
    assert!(h.store.tenant_metrics().is_none());
}

#[test]
fn a_drained_value_keeps_its_charge_and_the_charges_match_the_records() {
    let h = two_nodes();
    register(&h, &["a"]);
    let on_n1 = WriteConfig { replicas: 1, preferred: vec!["n1".into()], ..Default::default() };
    let k = scoped_key("a", "k");
    h.store.client_put_start(h.now, C1, &k, 4096, &on_n1, false).unwrap();
    h.store.client_put_end(h.now, C1, &k, None).unwrap();
    let req = DrainRequest { segments: vec!["n1".into()], targets: vec!["n2".into()], max_concurrency: 1 };
    h.store.drain_create(&req, 0).unwrap();
    let units = h.store.drain_poll(h.now, 1);
    assert_eq!(units.len(), 1);
    h.store.drain_finish(units[0].id, Ok(()), 2);
    assert_eq!(h.store.client_get(h.now, &k).unwrap().replicas[0].endpoint, "te-n2");
    assert_eq!(charged(&h, "a"), 4096);
    super::model_tests::check_inner(&h.store.inner.read().unwrap());
}

/// A policy store that records what it saves, or fails.
struct Sink {
    saved: std::sync::Mutex<Vec<Vec<(String, u64)>>>,
    fail: std::sync::atomic::AtomicBool,
}

impl PolicySink for Sink {
    fn save(&self, policies: &[(String, u64)]) -> Result<(), String> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("disk full".into());
        }
        self.saved.lock().unwrap().push(policies.to_vec());
        Ok(())
    }
}

#[test]
fn every_policy_change_is_saved_in_order_and_a_failed_save_undoes_it() {
    let h = two_nodes();
    let sink = std::sync::Arc::new(Sink { saved: Default::default(), fail: Default::default() });
    h.store.set_policy_sink(sink.clone());
    h.store.set_tenant_quota("b", 5).unwrap();
    h.store.set_tenant_quota("a", 7).unwrap();
    h.store.delete_tenant_quota("b").unwrap();
    let saved = sink.saved.lock().unwrap().clone();
    assert_eq!(
        saved,
        [vec![("b".to_string(), 5)], vec![("a".to_string(), 7), ("b".to_string(), 5)], vec![("a".to_string(), 7)]]
    );
    // A refused change saves nothing.
    assert_eq!(h.store.delete_tenant_quota("zz"), Err(TenantError::NoPolicy));
    assert_eq!(sink.saved.lock().unwrap().len(), 3);
    // The store cannot save: the change is undone and said so (500 -1).
    sink.fail.store(true, std::sync::atomic::Ordering::Relaxed);
    let e = h.store.set_tenant_quota("a", 9).unwrap_err();
    assert_eq!((e.code(), e.to_string().as_str()), (-1, "failed to save tenant quota policy: disk full"));
    assert_eq!(h.store.tenant_quota("a").unwrap().requested_quota_bytes, 7, "the old policy is back");
    assert!(matches!(h.store.set_tenant_quota("new", 9), Err(TenantError::SaveFailed(_))));
    assert_eq!(h.store.tenant_quota("new"), Err(TenantError::NoPolicy), "a new one is gone again");
    assert!(matches!(h.store.delete_tenant_quota("a"), Err(TenantError::SaveFailed(_))));
    assert_eq!(h.store.tenant_quota("a").unwrap().requested_quota_bytes, 7, "a deleted one is back");
}

#[test]
fn policies_loaded_at_start_are_checked_as_a_put_would() {
    let h = two_nodes();
    h.store.load_tenant_policies(&[("a".into(), 10), ("b".into(), MIB)]).unwrap();
    assert_eq!(h.store.tenant_quotas().unwrap().len(), 2);
    put(&h, "a", "k", 10, 1).unwrap();
    let bad = [("ok".to_string(), 1), ("x\ny".to_string(), 1)];
    assert!(matches!(h.store.load_tenant_policies(&bad), Err(TenantError::InvalidPolicy(t, _)) if t == "x\ny"));
    assert!(matches!(h.store.load_tenant_policies(&[("z".into(), 0)]), Err(TenantError::InvalidPolicy(..))));
    assert_eq!(h.store.tenant_quotas().unwrap().len(), 2, "nothing loaded from a bad list");
    let plain = Harness::new(config());
    assert_eq!(plain.store.load_tenant_policies(&[]), Err(TenantError::Disabled));
}
