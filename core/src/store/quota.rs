//! The store's API of tenant quotas (`/api/v1/tenant_quotas`, tenant metrics, tenant
//! `remove_all`). The accounting itself lives in `tenant.rs`; this file only takes the lock
//! and asks it, so `tenant.rs` needs nothing of the `Store` (no import cycle).

use std::time::Instant;

use super::tenant::{split_key, TenantError, TenantMetrics, TenantQuota};
use super::Store;

impl Store {
    /// Is multi-tenant mode on (`--enable-multi-tenants`)?
    pub fn multi_tenant(&self) -> bool {
        self.read().tenants.is_some()
    }

    /// Sets `tenant`'s requested quota (PUT `/api/v1/tenant_quotas`); returns its quota.
    pub fn set_tenant_quota(&self, tenant: &str, bytes: u64) -> Result<TenantQuota, TenantError> {
        self.with_write(|inner| {
            let cap = inner.totals().1;
            let t = inner.tenants.as_mut().ok_or(TenantError::Disabled)?;
            t.set_policy(tenant, bytes);
            let q = t.view(tenant, cap).expect("a policy was just set");
            inner.ha_policy(tenant);
            Ok(q)
        })
    }

    /// Removes `tenant`'s policy (DELETE `/api/v1/tenant_quotas`); returns what is left of
    /// its quota, if anything.
    pub fn delete_tenant_quota(&self, tenant: &str) -> Result<Option<TenantQuota>, TenantError> {
        self.with_write(|inner| {
            let cap = inner.totals().1;
            let t = inner.tenants.as_mut().ok_or(TenantError::Disabled)?;
            t.delete_policy(tenant)?;
            let q = t.view(tenant, cap);
            inner.ha_policy(tenant);
            Ok(q)
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
