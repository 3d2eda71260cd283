//! Upstream's `/api/v1/*` admin endpoints and `/kv_events/status` (upstream-behavior §1.4.7,
//! §1.4.9, §1.4.10), with upstream's bodies: `{"success":true,...}` on success and
//! `{"success":false,"error_code":N,"error_message":"..."}` on errors, statuses by upstream's
//! code map (§1.3, [`ApiError::Upstream`]). Served on the main and the admin listener.
//!
//! Tenants (`store/tenant.rs`): with `--enable-multi-tenants`, `/api/v1/tenant_quotas` lists,
//! sets and deletes per-tenant quotas and `/api/v1/remove_all?tenant_id=T` empties tenant `T`
//! (every tenant when `T` is empty). Without it every object belongs to the default tenant,
//! `/api/v1/tenant_quotas` answers as upstream's master does then (409,
//! `UNAVAILABLE_IN_CURRENT_MODE`) after validating its input, and `remove_all` of a tenant
//! other than `default` removes nothing.
//! `/kv_events/status` shows the KV event publisher's counters (`--enable-kv-events`).

use std::borrow::Cow;

use crate::http::{Method, RequestHead, Response};
use crate::stats::Ctr;
use crate::store::DEFAULT_TENANT;
use crate::store::{parse_job_id, valid_tenant, DrainError, DrainRequest, SegmentStatus, TenantError, TenantQuota};
use crate::time::Now;

use super::error::ApiError;
use super::json::{self, push_str, push_u64, UInt};
use super::params::{percent_decode, query_param};
use super::reply::json_reply;
use super::Service;

/// The error of a tenant quota call, as upstream answers it.
fn tenant_error(e: TenantError) -> ApiError {
    let text = match &e {
        TenantError::Disabled => {
            Cow::Borrowed("UNAVAILABLE_IN_CURRENT_MODE: tenant quotas need --enable-multi-tenants")
        }
        TenantError::NoPolicy => Cow::Borrowed("OBJECT_NOT_FOUND"),
        TenantError::NotEmpty => Cow::Borrowed("TENANT_NOT_EMPTY"),
        TenantError::SaveFailed(_) | TenantError::InvalidPolicy(..) => Cow::Owned(e.to_string()),
    };
    ApiError::Upstream(e.code(), text)
}

/// A tenant's quota as JSON (upstream-behavior §1.4.9).
fn push_quota(out: &mut Vec<u8>, q: &TenantQuota) {
    out.extend_from_slice(b"{\"tenant_id\":");
    push_str(out, &q.tenant_id);
    for (k, n) in [
        ("requested_quota_bytes", q.requested_quota_bytes),
        ("effective_quota_bytes", q.effective_quota_bytes),
        ("charged_bytes", q.charged_bytes),
    ] {
        out.extend_from_slice(format!(",\"{k}\":").as_bytes());
        push_u64(out, n);
    }
    for (k, b) in [
        ("admission_closed", q.admission_closed),
        ("over_quota", q.over_quota),
        ("has_explicit_policy", q.has_explicit_policy),
    ] {
        out.extend_from_slice(format!(",\"{k}\":{b}").as_bytes());
    }
    out.push(b'}');
}

/// The error of a drain call, as upstream answers it.
fn drain_error(e: DrainError) -> ApiError {
    match e {
        DrainError::InvalidParams(m) => ApiError::InvalidParams(Cow::Borrowed(m)),
        DrainError::SegmentNotFound(name) => ApiError::Upstream(-101, Cow::Owned(format!("SEGMENT_NOT_FOUND: {name}"))),
        DrainError::Unavailable(m) => {
            ApiError::Upstream(-1010, Cow::Owned(format!("UNAVAILABLE_IN_CURRENT_STATUS: {m}")))
        }
        DrainError::JobNotFound => ApiError::Upstream(-1402, Cow::Borrowed("JOB_NOT_FOUND")),
    }
}

/// A list of names: absent → empty; anything but an array of strings is an error.
fn names(doc: &json::Json<'_>, member: &str) -> Result<Vec<String>, ApiError> {
    match doc.member(member) {
        None => Ok(Vec::new()),
        Some(json::Json::Array(items)) => {
            items.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<_>>>().ok_or_else(|| {
                ApiError::InvalidParams(Cow::Owned(format!("Invalid JSON body: {member} must be an array of strings")))
            })
        }
        Some(_) => {
            Err(ApiError::InvalidParams(Cow::Owned(format!("Invalid JSON body: {member} must be an array of strings"))))
        }
    }
}

fn job_id_of(head: &RequestHead) -> Result<(u64, u64), ApiError> {
    query_param(head.query.as_deref(), "job_id")
        .and_then(|v| std::str::from_utf8(&v).ok().and_then(parse_job_id))
        .ok_or(ApiError::invalid("Missing or invalid job_id"))
}

fn push_names(out: &mut Vec<u8>, names: &[String]) {
    out.push(b'[');
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, n);
    }
    out.push(b']');
}

/// Upstream's `SegmentStatus` numbers and names of `/api/v1/segments/status`.
fn status_number(s: SegmentStatus) -> (u64, &'static str) {
    match s {
        SegmentStatus::Mounted => (1, "OK"),
        SegmentStatus::GracefullyUnmounting => (4, "GRACEFULLY_UNMOUNTING"),
        SegmentStatus::Unmounting => (5, "UNMOUNTING"),
    }
}

/// The raw (undecoded) value of query parameter `name`, as upstream reads `force` and
/// `tenant_id` of `/api/v1/remove_all`.
fn raw_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (*percent_decode(k, true) == *name.as_bytes()).then_some(v)
    })
}

/// A valid `tenant_id` parameter (decoded): UTF-8, 1 to 256 bytes, no control characters.
fn tenant_of(head: &RequestHead) -> Result<String, ApiError> {
    let bad = || ApiError::invalid("Missing or invalid tenant_id");
    let raw = query_param(head.query.as_deref(), "tenant_id").ok_or_else(bad)?;
    let t = std::str::from_utf8(&raw).map_err(|_| bad())?;
    if !valid_tenant(t) {
        return Err(bad());
    }
    Ok(t.to_string())
}

impl Service {
    /// `GET /api/v1/segments/status?segment=NAME`.
    pub(super) fn v1_segment_status(&self, head: &RequestHead) -> Result<Response, ApiError> {
        let name = query_param(head.query.as_deref(), "segment")
            .ok_or(ApiError::invalid("Missing segment query parameter"))?;
        let not_found = ApiError::Upstream(-101, Cow::Borrowed("SEGMENT_NOT_FOUND"));
        let text = std::str::from_utf8(&name).map_err(|_| not_found.clone())?;
        let status = self.master.store.segment_status_by_name(text).ok_or(not_found)?;
        let (n, label) = match (status, self.master.store.segment_drain(text)) {
            (SegmentStatus::Mounted, Some("DRAINING")) => (2, "DRAINING"),
            (SegmentStatus::Mounted, Some(_)) => (3, "DRAINED"),
            (s, _) => status_number(s),
        };
        let mut out = b"{\"success\":true,\"segment\":".to_vec();
        push_str(&mut out, text);
        out.extend_from_slice(b",\"status\":");
        push_u64(&mut out, n);
        out.extend_from_slice(b",\"status_name\":");
        push_str(&mut out, label);
        out.extend_from_slice(b",\"error_code\":0,\"error_message\":\"\"}");
        Ok(json_reply(200, out))
    }

    /// `POST /api/v1/drain_jobs`: `{"segments":[..],"target_segments":[..],"max_concurrency":4}`.
    pub(super) fn v1_drain_create(&self, now: Now, body: &[u8]) -> Result<Response, ApiError> {
        let doc = json::parse(body).map_err(|_| ApiError::invalid("Invalid JSON body: not one JSON object"))?;
        if !matches!(doc, json::Json::Object(_)) {
            return Err(ApiError::invalid("Invalid JSON body: not one JSON object"));
        }
        let max_concurrency = match doc.member("max_concurrency").map(|v| v.as_uint()) {
            None => 4,
            Some(UInt::Value(n)) => n,
            Some(UInt::Invalid) => {
                return Err(ApiError::invalid("Invalid JSON body: max_concurrency must be a non-negative integer"))
            }
        };
        let req = DrainRequest {
            segments: names(&doc, "segments")?,
            targets: names(&doc, "target_segments")?,
            max_concurrency,
        };
        let id = self.master.store.drain_create(&req, now.wall_unix_secs * 1000).map_err(drain_error)?;
        let mut out = b"{\"success\":true,\"job_id\":".to_vec();
        push_str(&mut out, &id);
        out.extend_from_slice(b",\"status\":\"CREATED\",\"error_code\":0,\"error_message\":\"\"}");
        Ok(json_reply(200, out))
    }

    /// `GET /api/v1/drain_jobs/query?job_id=A-B`.
    pub(super) fn v1_drain_query(&self, head: &RequestHead) -> Result<Response, ApiError> {
        let v = self.master.store.drain_view(job_id_of(head)?).map_err(drain_error)?;
        let mut out = b"{\"success\":true,\"job_id\":".to_vec();
        push_str(&mut out, &v.job_id);
        out.extend_from_slice(b",\"type\":0,\"type_name\":\"DRAIN\",\"status\":");
        push_u64(&mut out, v.status as u64);
        out.extend_from_slice(b",\"status_name\":");
        push_str(&mut out, v.status.name());
        for (k, n) in [("created_at_ms_epoch", v.created_ms), ("last_updated_at_ms_epoch", v.updated_ms)] {
            out.extend_from_slice(format!(",\"{k}\":").as_bytes());
            push_u64(&mut out, n);
        }
        out.extend_from_slice(b",\"segments\":");
        push_names(&mut out, &v.segments);
        for (k, n) in [
            ("succeeded_units", v.succeeded_units),
            ("failed_units", v.failed_units),
            ("blocked_units", v.blocked_units),
            ("active_units", v.active_units),
            ("migrated_bytes", v.migrated_bytes),
        ] {
            out.extend_from_slice(format!(",\"{k}\":").as_bytes());
            push_u64(&mut out, n);
        }
        out.extend_from_slice(b",\"message\":");
        push_str(&mut out, &v.message);
        out.extend_from_slice(b",\"error_code\":0,\"error_message\":\"\"}");
        Ok(json_reply(200, out))
    }

    /// `POST /api/v1/drain_jobs/cancel?job_id=A-B` (the body is ignored).
    pub(super) fn v1_drain_cancel(&self, now: Now, head: &RequestHead) -> Result<Response, ApiError> {
        let id = job_id_of(head)?;
        self.master.store.drain_cancel(id, now.wall_unix_secs * 1000).map_err(drain_error)?;
        let mut out = b"{\"success\":true,\"job_id\":".to_vec();
        push_str(&mut out, &format!("{}-{}", id.0, id.1));
        out.extend_from_slice(b",\"status\":\"CANCELED\",\"error_code\":0,\"error_message\":\"\"}");
        Ok(json_reply(200, out))
    }

    /// `GET /kv_events/status`: the publisher's counters (all zero and `enabled:false`
    /// without `--enable-kv-events`).
    pub(super) fn kv_events_status(&self) -> Response {
        match self.master.kv_events() {
            Some(stats) => json_reply(200, stats.status_json()),
            None => json_reply(200, crate::kv_events::KvStats::default().status_json()),
        }
    }

    /// `GET|PUT|DELETE /api/v1/tenant_quotas`: input validated as upstream does, then (with
    /// `--enable-multi-tenants`) the quotas listed, set or deleted; without it 409
    /// `UNAVAILABLE_IN_CURRENT_MODE`.
    pub(super) fn v1_tenant_quotas(&self, head: &RequestHead, body: &[u8]) -> Result<Response, ApiError> {
        let store = &self.master.store;
        let mut out = b"{\"success\":true,\"data\":".to_vec();
        match head.method {
            Method::Put => {
                let tenant = tenant_of(head)?;
                let doc = json::parse(body).map_err(|_| ApiError::invalid("Invalid JSON body"))?;
                let quota = doc.member("requested_quota_bytes").map(|v| v.as_uint());
                let Some(UInt::Value(n)) =
                    quota.filter(|q| matches!(q, UInt::Value(n) if (1..=i64::MAX as u64).contains(n)))
                else {
                    return Err(ApiError::invalid("Tenant quota must be in [1, 2^63 - 1] bytes"));
                };
                let q = store.set_tenant_quota(&tenant, n).map_err(tenant_error)?;
                log::info!("tenant {tenant:?}: quota set to {n} bytes (effective {})", q.effective_quota_bytes);
                push_quota(&mut out, &q);
            }
            Method::Delete => {
                let tenant = tenant_of(head)?;
                match store.delete_tenant_quota(&tenant).map_err(tenant_error)? {
                    Some(q) => push_quota(&mut out, &q),
                    None => out.extend_from_slice(b"null"),
                }
                log::info!("tenant {tenant:?}: quota policy deleted");
            }
            _ => match query_param(head.query.as_deref(), "tenant_id").filter(|t| !t.is_empty()) {
                Some(raw) => {
                    let t = std::str::from_utf8(&raw)
                        .ok()
                        .filter(|t| valid_tenant(t))
                        .ok_or(ApiError::invalid("Missing or invalid tenant_id"))?;
                    push_quota(&mut out, &store.tenant_quota(t).map_err(tenant_error)?);
                }
                None => {
                    out.push(b'[');
                    for (i, q) in store.tenant_quotas().map_err(tenant_error)?.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        push_quota(&mut out, q);
                    }
                    out.push(b']');
                }
            },
        }
        out.push(b'}');
        Ok(json_reply(200, out))
    }

    /// `POST /api/v1/remove_all?force=&tenant_id=`: `{"success":true,"removed_count":N}`.
    /// `force` is true only for the raw values `true` and `1`; an empty `tenant_id` means
    /// every object (of every tenant). In single-tenant mode `default` means every object too
    /// and another tenant has none.
    pub(super) fn v1_remove_all(&self, now: Now, head: &RequestHead) -> Response {
        let q = head.query.as_deref();
        let force = matches!(raw_param(q, "force"), Some("true" | "1"));
        let tenant = raw_param(q, "tenant_id").unwrap_or("");
        self.stats.bump(Ctr::RemoveAllReq, 1);
        let store = &self.master.store;
        let n = if store.multi_tenant() {
            store.remove_tenant(now.mono, tenant, force)
        } else if tenant.is_empty() || tenant == DEFAULT_TENANT {
            store.remove_where(now.mono, force, &|_| true)
        } else {
            0
        };
        let mut out = b"{\"success\":true,\"removed_count\":".to_vec();
        push_u64(&mut out, n);
        out.push(b'}');
        json_reply(200, out)
    }
}
