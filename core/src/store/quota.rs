//! The store's API of tenant quotas (`/api/v1/tenant_quotas`, tenant metrics, tenant
//! `remove_all`). The accounting itself lives in `tenant.rs`; this file only takes the lock
//! and asks it, so `tenant.rs` needs nothing of the `Store` (no import cycle).

use std::sync::Arc;
use std::time::Instant;

use super::state::Inner;
use super::tenant::{split_key, valid_tenant, PolicySink, TenantError, TenantMetrics, TenantQuota};
use super::Store;

impl Store {
    /// Is multi-tenant mode on (`--enable-multi-tenants`)?
    pub fn multi_tenant(&self) -> bool {
        self.read().tenants.is_some()
    }

    /// Sets `tenant`'s requested quota (PUT `/api/v1/tenant_quotas`); returns its quota. With
    /// a policy store the change is saved before it is answered, and undone if it cannot be.
    pub fn set_tenant_quota(&self, tenant: &str, bytes: u64) -> Result<TenantQuota, TenantError> {
        self.change_policy(tenant, |inner, cap| {
            let t = inner.tenants.as_mut().ok_or(TenantError::Disabled)?;
            t.set_policy(tenant, bytes);
            Ok(t.view(tenant, cap).expect("a policy was just set"))
        })
    }

    /// Removes `tenant`'s policy (DELETE `/api/v1/tenant_quotas`); returns what is left of
    /// its quota, if anything.
    pub fn delete_tenant_quota(&self, tenant: &str) -> Result<Option<TenantQuota>, TenantError> {
        self.change_policy(tenant, |inner, cap| {
            let t = inner.tenants.as_mut().ok_or(TenantError::Disabled)?;
            t.delete_policy(tenant)?;
            Ok(t.view(tenant, cap))
        })
    }

    /// Runs `f` (a change of `tenant`'s policy) under the lock, marks it for HA, and saves
    /// the policies to the policy store if there is one, undoing the change when that fails.
    /// The policy store's lock, held throughout, keeps saves in the order of the changes.
    fn change_policy<R>(
        &self,
        tenant: &str,
        f: impl FnOnce(&mut Inner, u64) -> Result<R, TenantError>,
    ) -> Result<R, TenantError> {
        let sink = self.policy_sink.lock().unwrap_or_else(|e| e.into_inner());
        let (r, before, list) = self.with_write(|inner| {
            let cap = inner.totals().1;
            let before = inner.tenants.as_ref().and_then(|t| t.policy(tenant));
            let r = f(inner, cap)?;
            inner.ha_policy(tenant);
            let list = sink.as_ref().map(|_| inner.tenants.as_ref().map(|t| t.policy_list()).unwrap_or_default());
            Ok::<_, TenantError>((r, before, list))
        })?;
        if let (Some(s), Some(list)) = (sink.as_ref(), list) {
            if let Err(why) = s.save(&list) {
                log::error!("tenant {tenant:?}: cannot save the quota policies ({why}); the change is undone");
                self.with_write(|inner| {
                    if let Some(t) = inner.tenants.as_mut() {
                        t.restore_policy(tenant, before);
                    }
                    inner.ha_policy(tenant);
                });
                return Err(TenantError::SaveFailed(why));
            }
        }
        Ok(r)
    }

    /// Where policy changes are saved from now on (`--tenant-quota-connector-uri`).
    pub fn set_policy_sink(&self, sink: Arc<dyn PolicySink>) {
        *self.policy_sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    /// Policies read from a policy store at start (they replace any there are); each tenant
    /// id and quota is checked as a PUT would check it, and nothing is loaded if one fails.
    pub fn load_tenant_policies(&self, policies: &[(String, u64)]) -> Result<(), TenantError> {
        for (tenant, bytes) in policies {
            if !valid_tenant(tenant) {
                return Err(TenantError::InvalidPolicy(tenant.clone(), "not a valid tenant id"));
            }
            if !(1..=i64::MAX as u64).contains(bytes) {
                return Err(TenantError::InvalidPolicy(tenant.clone(), "quota must be in [1, 2^63 - 1] bytes"));
            }
        }
        self.with_write(|inner| {
            let t = inner.tenants.as_mut().ok_or(TenantError::Disabled)?;
            t.clear_policies();
            for (tenant, bytes) in policies {
                t.set_policy(tenant, *bytes);
            }
            Ok(())
        })
    }

    /// One tenant's quota: `NotRegistered` when it has neither a policy nor values.
    pub fn tenant_quota(&self, tenant: &str) -> Result<TenantQuota, TenantError> {
        let inner = self.read();
        let cap = inner.totals().1;
        let t = inner.tenants.as_ref().ok_or(TenantError::Disabled)?;
        t.view(tenant, cap).ok_or(TenantError::NoPolicy)
    }

    /// Every tenant with a policy or values, by tenant id.
    pub fn tenant_quotas(&self) -> Result<Vec<TenantQuota>, TenantError> {
        let inner = self.read();
        let cap = inner.totals().1;
        Ok(inner.tenants.as_ref().ok_or(TenantError::Disabled)?.views(cap))
    }

    /// The `mooncake_tenant_*` metric values; None in single-tenant mode.
    pub fn tenant_metrics(&self) -> Option<TenantMetrics> {
        let inner = self.read();
        let cap = inner.totals().1;
        Some(inner.tenants.as_ref()?.metrics(cap))
    }

    /// Removes every removable object of `tenant` (`force` ignores leases), step by step
    /// as [`Store::remove_all`]; returns how many.
    pub fn remove_tenant(&self, now: Instant, tenant: &str, force: bool) -> u64 {
        if tenant.is_empty() {
            return self.remove_stepwise(now, force, &|_| true);
        }
        self.remove_stepwise(now, force, &|k| split_key(k).0 == tenant)
    }
}
