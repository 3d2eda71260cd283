//! The routing table (SPEC §2.3): exact, case-sensitive match on the raw path; `{key}` is one
//! raw path segment.

use crate::http::Method;
use crate::route::Route;

/// Which listener a connection arrived on (SPEC §1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The main listener: every endpoint.
    Main,
    /// `--admin-port`: only the §4 endpoints; `/api/*` is 404.
    Admin,
}

/// `Allow` of every method (`OPTIONS *`).
pub(crate) const ALLOW_ALL: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS";

/// Maps a raw path to its route and the raw (undecoded) `{key}` segment (empty when the
/// route has none). Unknown paths, and every `/api/*` path on the admin listener, give
/// [`Route::Other`].
pub(crate) fn route_of(path: &str, listener: Listener) -> (Route, &str) {
    let route = match path {
        "/metrics" => Route::Metrics,
        "/metrics/summary" => Route::MetricsSummary,
        "/health" => Route::Health,
        "/query_key" => Route::QueryKey,
        "/batch_query_keys" => Route::BatchQueryKeys,
        "/get_all_keys" => Route::GetAllKeys,
        "/get_all_segments" => Route::GetAllSegments,
        "/query_segment" => Route::QuerySegment,
        "/get_segments_detail" => Route::GetSegmentsDetail,
        "/cluster_summary" => Route::ClusterSummary,
        "/ui" => Route::Ui,
        // Upstream serves these on its admin port.
        "/api/v1/segments/status" => Route::SegmentsStatus,
        "/api/v1/tenant_quotas" => Route::TenantQuotas,
        "/api/v1/remove_all" => Route::RemoveAllV1,
        "/kv_events/status" => Route::KvEventsStatus,
        "/api/v1/drain_jobs" => Route::DrainJobs,
        "/api/v1/drain_jobs/query" => Route::DrainJobsQuery,
        "/api/v1/drain_jobs/cancel" => Route::DrainJobsCancel,
        _ if listener == Listener::Admin => Route::Other,
        "/api/mount_shm" => Route::MountShm,
        "/api/unmount_shm" => Route::UnmountShm,
        "/api/mount" => Route::Mount,
        "/api/unmount" => Route::Unmount,
        "/api/put" => Route::PutJson,
        "/api/remove_all" => Route::RemoveAll,
        "/metadata" => Route::Metadata,
        _ => return keyed(path),
    };
    (route, "")
}

/// `/api/{get,exist,remove,put}/<segment>`.
fn keyed(path: &str) -> (Route, &str) {
    let Some(rest) = path.strip_prefix("/api/") else {
        return (Route::Other, "");
    };
    let (route, key) = if let Some(k) = rest.strip_prefix("get/") {
        (Route::Get, k)
    } else if let Some(k) = rest.strip_prefix("exist/") {
        (Route::Exist, k)
    } else if let Some(k) = rest.strip_prefix("remove/") {
        (Route::Remove, k)
    } else if let Some(k) = rest.strip_prefix("put/") {
        (Route::PutRaw, k)
    } else {
        return (Route::Other, "");
    };
    if key.contains('/') {
        (Route::Other, "")
    } else {
        (route, key)
    }
}

/// The `Allow` list of a known route (SPEC §2.3).
pub(crate) fn allow(route: Route) -> &'static str {
    match route {
        Route::Metrics
        | Route::MetricsSummary
        | Route::Health
        | Route::QueryKey
        | Route::GetAllKeys
        | Route::GetAllSegments
        | Route::QuerySegment
        | Route::GetSegmentsDetail
        | Route::Get
        | Route::Exist
        | Route::ClusterSummary
        | Route::Ui
        | Route::Role
        | Route::HaStatus
        | Route::Leader
        | Route::SegmentsStatus
        | Route::KvEventsStatus
        | Route::DrainJobsQuery => "GET, HEAD, OPTIONS",
        Route::DrainJobs | Route::DrainJobsCancel => "POST, OPTIONS",
        Route::TenantQuotas => "GET, HEAD, PUT, DELETE, OPTIONS",
        Route::RemoveAllV1 => "POST, OPTIONS",
        Route::BatchQueryKeys => "GET, HEAD, POST, OPTIONS",
        Route::MountShm | Route::UnmountShm | Route::Mount | Route::Unmount => "POST, OPTIONS",
        Route::PutJson | Route::PutRaw => "PUT, OPTIONS",
        Route::Remove | Route::RemoveAll => "DELETE, OPTIONS",
        Route::Metadata => "GET, HEAD, PUT, DELETE, OPTIONS",
        Route::Other => ALLOW_ALL,
    }
}

/// True when `method` is served on `route` (agrees with [`allow`]).
pub(crate) fn allowed(route: Route, method: Method) -> bool {
    use Route::*;
    match method {
        Method::Options => true,
        Method::Get | Method::Head => matches!(
            route,
            Metrics
                | MetricsSummary
                | Health
                | QueryKey
                | BatchQueryKeys
                | GetAllKeys
                | GetAllSegments
                | QuerySegment
                | GetSegmentsDetail
                | Get
                | Exist
                | Metadata
                | ClusterSummary
                | Ui
                | Role
                | HaStatus
                | Leader
                | SegmentsStatus
                | KvEventsStatus
                | TenantQuotas
                | DrainJobsQuery
        ),
        Method::Post => matches!(
            route,
            BatchQueryKeys | MountShm | UnmountShm | Mount | Unmount | RemoveAllV1 | DrainJobs | DrainJobsCancel
        ),
        Method::Put => matches!(route, PutJson | PutRaw | Metadata | TenantQuotas),
        Method::Delete => matches!(route, Remove | RemoveAll | Metadata | TenantQuotas),
        Method::Other => false,
    }
}
