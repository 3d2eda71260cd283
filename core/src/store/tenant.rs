//! Multi-tenant mode (`--enable-multi-tenants`, upstream's `--enable_multi_tenants`): keys
//! scoped by the `tenant` of each RPC, per-tenant memory quotas, admission against them.
//!
//! # Keys
//!
//! The store keeps one key space. A key of the default tenant (`default`, or an empty
//! tenant) is stored as itself; a key `k` of tenant `t` is stored as `\u{1}t\u{1}k`. Keys and
//! tenant ids may not contain control characters (the key rules, SPEC §1.4), so a scoped key
//! can never collide with a plain one nor with another tenant's. The REST API and its
//! listings (`/get_all_keys`, `/api/v1/keys`, `/query_key`, ...) see the default tenant only,
//! as upstream's do; KV events carry the tenant and the tenant-local key.
//!
//! # Quotas
//!
//! ```text
//!   C = allocatable capacity (memory of every mounted segment)
//!   S = sum of the requested quotas of tenants with a policy (PUT /api/v1/tenant_quotas)
//!   tenant with a policy R:  effective = R            if S <= C
//!                            effective = R * C / S    otherwise (scaled down, floor)
//!   tenant without a policy: not registered: its writes are refused (TENANT_NOT_REGISTERED,
//!                -1701), as upstream's strict admission; values it still holds (its policy
//!                deleted under HA restore, say) show with effective = 0
//!   charged    = bytes of the tenant's values in memory (length x replicas), from
//!                allocation until the memory is freed (writes in progress included)
//!   admission_closed = charged >= effective        over_quota = charged > effective
//! ```
//!
//! A write whose bytes (length × replicas asked) do not fit under its tenant's effective
//! quota first evicts the tenant's own eviction candidates (in the store's eviction order,
//! `evict.rs`), counted in `mooncake_tenant_evict_bytes_total`; when nothing of the tenant
//! can go it is refused with `TENANT_QUOTA_EXCEEDED` (-1700) and counted in
//! `mooncake_tenant_quota_reject_total{reason="quota_exceeded"}`. So a tenant at its quota
//! keeps caching in its own share, as a cache should, and never takes another's.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use super::ids::ValueId;
use super::object::Value;
use super::state::Inner;
use super::types::PutError;

/// The tenant of the REST API and of RPCs that name none.
pub const DEFAULT_TENANT: &str = "default";

/// Separates a non-default tenant from its keys inside the store (a control character:
/// never part of a key or a tenant id).
const MARK: char = '\u{1}';

/// Every store key of a tenant other than the default one sorts before this (and every
/// default key, which has no control characters, after it).
pub(super) const TENANT_KEYS_END: &str = "\u{2}";

/// The longest tenant id accepted (bytes).
pub const MAX_TENANT_LEN: usize = 256;

/// Is `tenant` a valid tenant id: 1 to 256 bytes, no control characters?
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty() && tenant.len() <= MAX_TENANT_LEN && !tenant.chars().any(char::is_control)
}

/// The store key of `key` in `tenant` (`key` itself for the default tenant).
pub fn scoped_key<'a>(tenant: &str, key: &'a str) -> Cow<'a, str> {
    if tenant.is_empty() || tenant == DEFAULT_TENANT {
        Cow::Borrowed(key)
    } else {
        let mut s = String::with_capacity(tenant.len() + key.len() + 2);
        s.push(MARK);
        s.push_str(tenant);
        s.push(MARK);
        s.push_str(key);
        Cow::Owned(s)
    }
}

/// (tenant, tenant-local key) of a store key.
pub fn split_key(stored: &str) -> (&str, &str) {
    if let Some(rest) = stored.strip_prefix(MARK) {
        if let Some((t, k)) = rest.split_once(MARK) {
            return (t, k);
        }
    }
    (DEFAULT_TENANT, stored)
}

/// Does a store key belong to the default tenant?
pub fn is_default_key(stored: &str) -> bool {
    !stored.starts_with(MARK)
}

/// One tenant's quota, as `/api/v1/tenant_quotas` shows it (upstream-behavior §1.4.9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantQuota {
    /// The tenant.
    pub tenant_id: String,
    /// The policy's quota (0 without a policy).
    pub requested_quota_bytes: u64,
    /// What the tenant may use now (see the module docs).
    pub effective_quota_bytes: u64,
    /// What it uses.
    pub charged_bytes: u64,
    /// No write is admitted (`charged >= effective`).
    pub admission_closed: bool,
    /// It uses more than it may (`charged > effective`: its quota or the capacity shrank).
    pub over_quota: bool,
    /// A policy was set with PUT.
    pub has_explicit_policy: bool,
}

/// Why a quota change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    /// Multi-tenant mode is off (409, -1011).
    #[error("UNAVAILABLE_IN_CURRENT_MODE: tenant quotas need --enable-multi-tenants")]
    Disabled,
    /// No policy (nor values) for the tenant: 404, -704, as upstream answers it.
    #[error("OBJECT_NOT_FOUND")]
    NoPolicy,
    /// The tenant still holds values (409, -1702).
    #[error("TENANT_NOT_EMPTY")]
    NotEmpty,
    /// The policy store (`--tenant-quota-connector-uri`) could not save the change, which was
    /// undone (500, -1).
    #[error("failed to save tenant quota policy: {0}")]
    SaveFailed(String),
    /// A policy loaded at start is not valid (its tenant id or quota).
    #[error("invalid tenant quota policy for {0:?}: {1}")]
    InvalidPolicy(String, &'static str),
}

impl TenantError {
    /// Upstream's numeric code.
    pub fn code(&self) -> i32 {
        match self {
            TenantError::Disabled => -1011,
            TenantError::NoPolicy => -704,
            TenantError::NotEmpty => -1702,
            TenantError::SaveFailed(_) | TenantError::InvalidPolicy(..) => -1,
        }
    }
}

/// Where quota policies are kept across restarts (upstream's tenant quota connector): the
/// embedding program saves the whole set after every change. Called with the store's policy
/// lock held (changes are saved in order), never its state lock.
pub trait PolicySink: Send + Sync {
    /// Saves every policy, (tenant, requested bytes) by tenant id; an error undoes the change.
    fn save(&self, policies: &[(String, u64)]) -> Result<(), String>;
}

/// What one tenant uses, and its counters.
#[derive(Clone, Debug, Default)]
pub(super) struct Usage {
    pub(super) charged: u64,
    /// Value records (any state) holding memory.
    pub(super) values: u64,
    /// Writes refused for the quota.
    pub(super) rejects: u64,
    /// Bytes of the tenant's values evicted to admit its own writes.
    pub(super) evicted_bytes: u64,
}

/// Per-tenant metric values (`mooncake_tenant_*`).
#[derive(Clone, Debug, Default)]
pub struct TenantMetrics {
    /// Every known tenant's quota, by tenant id.
    pub quotas: Vec<TenantQuota>,
    /// `mooncake_tenant_quota_reject_total{tenant_id, reason="quota_exceeded"}`.
    pub rejects: Vec<(String, u64)>,
    /// `mooncake_tenant_evict_bytes_total{tenant_id}`.
    pub evicted_bytes: Vec<(String, u64)>,
    /// `mooncake_tenant_quota_allocatable_capacity_bytes`.
    pub capacity: u64,
    /// `mooncake_tenant_quota_requested_bytes_sum`.
    pub requested_sum: u64,
    /// `mooncake_tenant_quota_effective_bytes_sum` (tenants with a policy).
    pub effective_sum: u64,
}

/// The tenants of a multi-tenant store: usage by tenant, policies.
#[derive(Debug, Default)]
pub(super) struct Tenants {
    usage: HashMap<Box<str>, Usage>,
    policies: BTreeMap<String, u64>,
}

impl Tenants {
    /// `bytes` more held by the tenant of `stored_key`; `values` value records more.
    pub(super) fn charge(&mut self, stored_key: &str, bytes: u64, values: u64) {
        let (t, _) = split_key(stored_key);
        if let Some(u) = self.usage.get_mut(t) {
            u.charged += bytes;
            u.values += values;
        } else {
            self.usage.insert(t.into(), Usage { charged: bytes, values, ..Usage::default() });
        }
    }

    /// `bytes` fewer held by the tenant of `stored_key`; `values` records fewer.
    pub(super) fn uncharge(&mut self, stored_key: &str, bytes: u64, values: u64) {
        let (t, _) = split_key(stored_key);
        if let Some(u) = self.usage.get_mut(t) {
            debug_assert!(u.charged >= bytes && u.values >= values, "tenant {t} uncharged below zero");
            u.charged = u.charged.saturating_sub(bytes);
            u.values = u.values.saturating_sub(values);
            if u.values == 0 && u.charged == 0 && u.rejects == 0 && u.evicted_bytes == 0 {
                self.usage.remove(t);
            }
        }
    }

    /// Bytes charged to `tenant`.
    pub(super) fn charged(&self, tenant: &str) -> u64 {
        self.usage.get(tenant).map_or(0, |u| u.charged)
    }

    pub(super) fn usage_mut(&mut self, tenant: &str) -> &mut Usage {
        if !self.usage.contains_key(tenant) {
            self.usage.insert(tenant.into(), Usage::default());
        }
        self.usage.get_mut(tenant).expect("inserted")
    }

    /// (tenant, charged, records) of every tenant holding records, by tenant (tests).
    #[cfg(test)]
    pub(super) fn usage_table(&self) -> Vec<(String, (u64, u64))> {
        let mut out: Vec<_> = self
            .usage
            .iter()
            .filter(|(_, u)| u.values > 0)
            .map(|(t, u)| (t.to_string(), (u.charged, u.values)))
            .collect();
        out.sort_unstable();
        out
    }

    /// Sets `tenant`'s policy.
    pub(super) fn set_policy(&mut self, tenant: &str, bytes: u64) {
        self.policies.insert(tenant.to_string(), bytes);
    }

    /// Every policy, by tenant id (what a policy store saves).
    pub(super) fn policy_list(&self) -> Vec<(String, u64)> {
        self.policies.iter().map(|(t, &b)| (t.clone(), b)).collect()
    }

    /// `tenant`'s policy, if it has one.
    pub(super) fn policy(&self, tenant: &str) -> Option<u64> {
        self.policies.get(tenant).copied()
    }

    /// A replicated policy (HA standby): set, or removed with `None`, unchecked (the leader
    /// checked it).
    pub(super) fn restore_policy(&mut self, tenant: &str, bytes: Option<u64>) {
        match bytes {
            Some(b) => self.policies.insert(tenant.to_string(), b),
            None => self.policies.remove(tenant),
        };
    }

    /// Every policy dropped (HA step down or reload: they come back with the state).
    pub(super) fn clear_policies(&mut self) {
        self.policies.clear();
    }

    /// Removes `tenant`'s policy: `NoPolicy` without one, `NotEmpty` while it holds
    /// values.
    pub(super) fn delete_policy(&mut self, tenant: &str) -> Result<(), TenantError> {
        if !self.policies.contains_key(tenant) {
            return Err(TenantError::NoPolicy);
        }
        if self.usage.get(tenant).is_some_and(|u| u.values > 0) {
            return Err(TenantError::NotEmpty);
        }
        self.policies.remove(tenant);
        Ok(())
    }

    /// (Σ requested, Σ effective) of the policies under capacity `cap`.
    fn sums(&self, cap: u64) -> (u64, u64) {
        let requested = self.policies.values().fold(0u64, |a, &r| a.saturating_add(r));
        let effective = self.policies.values().fold(0u64, |a, &r| a.saturating_add(scaled(r, requested, cap)));
        (requested, effective)
    }

    /// `tenant`'s effective quota under capacity `cap`.
    pub(super) fn effective(&self, tenant: &str, cap: u64) -> u64 {
        match self.policies.get(tenant) {
            Some(&r) => scaled(r, self.sums(cap).0, cap),
            None => 0,
        }
    }

    /// `tenant`'s quota, if it has a policy or holds values.
    pub(super) fn view(&self, tenant: &str, cap: u64) -> Option<TenantQuota> {
        let policy = self.policies.get(tenant).copied();
        let usage = self.usage.get(tenant).filter(|u| u.values > 0);
        if policy.is_none() && usage.is_none() {
            return None;
        }
        let charged = usage.map_or(0, |u| u.charged);
        let effective = self.effective(tenant, cap);
        Some(TenantQuota {
            tenant_id: tenant.to_string(),
            requested_quota_bytes: policy.unwrap_or(0),
            effective_quota_bytes: effective,
            charged_bytes: charged,
            admission_closed: charged >= effective,
            over_quota: charged > effective,
            has_explicit_policy: policy.is_some(),
        })
    }

    /// Every tenant with a policy or values, by tenant id.
    pub(super) fn views(&self, cap: u64) -> Vec<TenantQuota> {
        let mut names: Vec<&str> = self.policies.keys().map(String::as_str).collect();
        names.extend(self.usage.iter().filter(|(_, u)| u.values > 0).map(|(t, _)| &**t));
        names.sort_unstable();
        names.dedup();
        names.into_iter().filter_map(|t| self.view(t, cap)).collect()
    }

    /// The metric values under capacity `cap`.
    pub(super) fn metrics(&self, cap: u64) -> TenantMetrics {
        let (requested_sum, effective_sum) = self.sums(cap);
        let mut rejects: Vec<(String, u64)> =
            self.usage.iter().filter(|(_, u)| u.rejects > 0).map(|(t, u)| (t.to_string(), u.rejects)).collect();
        rejects.sort_unstable();
        let mut evicted_bytes: Vec<(String, u64)> = self
            .usage
            .iter()
            .filter(|(_, u)| u.evicted_bytes > 0)
            .map(|(t, u)| (t.to_string(), u.evicted_bytes))
            .collect();
        evicted_bytes.sort_unstable();
        TenantMetrics { quotas: self.views(cap), rejects, evicted_bytes, capacity: cap, requested_sum, effective_sum }
    }
}

/// `r`, or `r × cap / sum` when the policies ask for more than the capacity.
fn scaled(r: u64, sum: u64, cap: u64) -> u64 {
    if sum <= cap {
        r
    } else {
        (u128::from(r) * u128::from(cap) / u128::from(sum)) as u64
    }
}

impl Inner {
    /// Inserts a value record, charging its tenant (length × replicas).
    pub(super) fn insert_value(&mut self, vid: ValueId, v: Box<Value>) {
        if let Some(t) = self.tenants.as_mut() {
            t.charge(&v.key, v.len * v.replicas.len() as u64, 1);
        }
        self.values.insert(vid, v);
    }

    /// Removes a value record, uncharging its tenant for the replicas it still has.
    pub(super) fn take_value(&mut self, vid: ValueId) -> Option<Box<Value>> {
        let v = self.values.remove(&vid)?;
        if let Some(t) = self.tenants.as_mut() {
            t.uncharge(&v.key, v.len * v.replicas.len() as u64, 1);
        }
        Some(v)
    }

    /// May a write of `bytes` (length × replicas) of the store key `key` start? Always in
    /// single-tenant mode. A tenant without a policy may not write at all (upstream's strict
    /// admission; no state is kept for it, so unknown tenants cost nothing). Over its quota,
    /// the tenant's own eviction candidates go first (in eviction order, just enough of
    /// them); when they cannot make room the write is refused and counted.
    pub(super) fn admit(&mut self, now: u64, key: &str, bytes: u64) -> Result<(), PutError> {
        let Some(t) = self.tenants.as_ref() else {
            return Ok(());
        };
        let tenant = split_key(key).0;
        if t.policy(tenant).is_none() {
            log::debug!("write for tenant {tenant:?} refused: no quota policy (TENANT_NOT_REGISTERED)");
            return Err(PutError::TenantNotRegistered);
        }
        let cap = self.totals().1;
        let eff = t.effective(tenant, cap);
        let charged = t.charged(tenant);
        // A quota of the whole capacity limits nothing that space does not: allocation (and
        // its eviction) decides, and a refusal is INSUFFICIENT_STORAGE, not the quota's.
        if eff >= cap || charged.saturating_add(bytes) <= eff {
            return Ok(());
        }
        if bytes <= eff {
            let need = charged + bytes - eff;
            let (mut cands, _) = self.candidates(now, None, Some(tenant));
            cands.sort_unstable_by_key(|c| (c.soft_pinned, c.lease, c.seq));
            let (mut k, mut freed) = (0, 0u64);
            for c in &cands {
                if freed >= need {
                    break;
                }
                freed += self.values.get(&c.vid).map_or(0, |v| v.len * v.replicas.len() as u64);
                k += 1;
            }
            if freed >= need {
                self.eviction_pass(now, &mut cands, k);
                let t = self.tenants.as_mut().expect("multi-tenant");
                let after = t.charged(tenant);
                t.usage_mut(tenant).evicted_bytes += charged.saturating_sub(after);
                if after.saturating_add(bytes) <= eff {
                    return Ok(());
                }
            }
        }
        let t = self.tenants.as_mut().expect("multi-tenant");
        t.usage_mut(tenant).rejects += 1;
        log::debug!("write of {bytes} bytes for tenant {tenant:?} refused: quota {eff}, charged {charged}");
        Err(PutError::QuotaExceeded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_tenants_never_collide() {
        assert_eq!(scoped_key("default", "k"), "k");
        assert_eq!(scoped_key("", "k"), "k");
        let a = scoped_key("a", "k");
        assert_ne!(a, "k");
        assert_ne!(a, scoped_key("b", "k"));
        assert_eq!(split_key(&a), ("a", "k"));
        assert_eq!(split_key("k"), ("default", "k"));
        assert!(is_default_key("k") && !is_default_key(&a));
        // A tenant that looks like a prefix of another: still distinct.
        assert_ne!(scoped_key("ab", "c"), scoped_key("a", "bc"));
    }

    #[test]
    fn quotas_scale_down_when_they_ask_for_more_than_the_capacity() {
        let mut t = Tenants::default();
        t.set_policy("a", 600);
        t.set_policy("b", 200);
        assert_eq!((t.effective("a", 1000), t.effective("b", 1000), t.effective("c", 1000)), (600, 200, 0));
        // 800 asked of 400: halved; a tenant without a policy has no quota at all.
        assert_eq!((t.effective("a", 400), t.effective("b", 400), t.effective("c", 400)), (300, 100, 0));
        t.charge(&scoped_key("a", "x"), 350, 1);
        let q = t.view("a", 400).unwrap();
        assert!(q.admission_closed && q.over_quota && q.has_explicit_policy);
        assert_eq!(t.view("c", 400), None);
        assert_eq!(t.delete_policy("a"), Err(TenantError::NotEmpty));
        assert_eq!(t.delete_policy("c"), Err(TenantError::NoPolicy));
        t.uncharge(&scoped_key("a", "x"), 350, 1);
        assert_eq!(t.delete_policy("a"), Ok(()));
        assert_eq!(t.views(400).len(), 1);
    }
}
