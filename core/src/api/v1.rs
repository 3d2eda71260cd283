//! Upstream's `/api/v1/*` admin endpoints and `/kv_events/status` (upstream-behavior §1.4.7,
//! §1.4.9, §1.4.10), with upstream's bodies: `{"success":true,...}` on success and
//! `{"success":false,"error_code":N,"error_message":"..."}` on errors, statuses by upstream's
//! code map (§1.3, [`ApiError::Upstream`]). Served on the main and the admin listener.
//!
//! Tenants are not provided (docs/upstream-compatibility.md): every object belongs to the
//! default tenant, `/api/v1/tenant_quotas` answers as upstream's master does without
//! `--enable_multi_tenants` (409, `UNAVAILABLE_IN_CURRENT_MODE`) after validating its input,
//! and `/api/v1/remove_all?tenant_id=T` removes nothing for a tenant other than `default`.
//! `/kv_events/status` shows the KV event publisher's counters (`--enable-kv-events`).

use std::borrow::Cow;

use crate::http::{Method, RequestHead, Response};
use crate::stats::Ctr;
use crate::store::SegmentStatus;
use crate::time::Now;

use super::error::ApiError;
use super::json::{self, push_str, push_u64, UInt};
use super::params::{percent_decode, query_param};
use super::reply::json_reply;
use super::Service;

/// Longest `tenant_id` accepted.
const MAX_TENANT: usize = 256;

/// The tenant every object belongs to.
const DEFAULT_TENANT: &str = "default";

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
    if t.len() > MAX_TENANT || t.chars().any(char::is_control) {
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
        let (n, label) = status_number(status);
        let mut out = b"{\"success\":true,\"segment\":".to_vec();
        push_str(&mut out, text);
        out.extend_from_slice(b",\"status\":");
        push_u64(&mut out, n);
        out.extend_from_slice(b",\"status_name\":");
        push_str(&mut out, label);
        out.extend_from_slice(b",\"error_code\":0,\"error_message\":\"\"}");
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

    /// `GET|PUT|DELETE /api/v1/tenant_quotas`: input validated as upstream does, then 409
    /// `UNAVAILABLE_IN_CURRENT_MODE` (a single-tenant master).
    pub(super) fn v1_tenant_quotas(&self, head: &RequestHead, body: &[u8]) -> Result<Response, ApiError> {
        match head.method {
            Method::Put => {
                tenant_of(head)?;
                let doc = json::parse(body).map_err(|_| ApiError::invalid("Invalid JSON body"))?;
                let quota = doc.member("requested_quota_bytes").map(|v| v.as_uint());
                if !matches!(quota, Some(UInt::Value(n)) if (1..=i64::MAX as u64).contains(&n)) {
                    return Err(ApiError::invalid("Tenant quota must be in [1, 2^63 - 1] bytes"));
                }
            }
            Method::Delete => {
                tenant_of(head)?;
            }
            _ => {}
        }
        Err(ApiError::Upstream(
            -1011,
            Cow::Borrowed(
                "UNAVAILABLE_IN_CURRENT_MODE: tenant quotas need multi-tenant mode, which this build does not provide",
            ),
        ))
    }

    /// `POST /api/v1/remove_all?force=&tenant_id=`: `{"success":true,"removed_count":N}`.
    /// `force` is true only for the raw values `true` and `1`; an empty `tenant_id` (or
    /// `default`) means every object, another tenant has none.
    pub(super) fn v1_remove_all(&self, now: Now, head: &RequestHead) -> Response {
        let q = head.query.as_deref();
        let force = matches!(raw_param(q, "force"), Some("true" | "1"));
        let tenant = raw_param(q, "tenant_id").unwrap_or("");
        self.stats.bump(Ctr::RemoveAllReq, 1);
        let n = if tenant.is_empty() || tenant == DEFAULT_TENANT {
            self.master.store.remove_where(now.mono, force, &|_| true)
        } else {
            0
        };
        let mut out = b"{\"success\":true,\"removed_count\":".to_vec();
        push_u64(&mut out, n);
        out.push(b'}');
        json_reply(200, out)
    }
}
