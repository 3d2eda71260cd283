//! The application's endpoints: the `route` label of the `http_*` metrics (SPEC §9) and the
//! key of dispatch. The HTTP codec never sees them; `api::router` maps paths to them.

/// Route templates, used for dispatch and as the `route` label of the `http_*` metrics (SPEC §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `/metrics`
    Metrics,
    /// `/metrics/summary`
    MetricsSummary,
    /// `/health`
    Health,
    /// `/query_key`
    QueryKey,
    /// `/batch_query_keys`
    BatchQueryKeys,
    /// `/get_all_keys`
    GetAllKeys,
    /// `/get_all_segments`
    GetAllSegments,
    /// `/query_segment`
    QuerySegment,
    /// `/get_segments_detail`
    GetSegmentsDetail,
    /// `/api/mount_shm`
    MountShm,
    /// `/api/unmount_shm`
    UnmountShm,
    /// `/api/mount`
    Mount,
    /// `/api/unmount`
    Unmount,
    /// `/api/put`
    PutJson,
    /// `/api/put/{key}`
    PutRaw,
    /// `/api/get/{key}`
    Get,
    /// `/api/exist/{key}`
    Exist,
    /// `/api/remove/{key}`
    Remove,
    /// `/api/remove_all`
    RemoveAll,
    /// `/metadata` (the transfer engine's HTTP metadata server, upstream-behavior §7)
    Metadata,
    /// `/cluster_summary` (the dashboard's data, docs/api.md)
    ClusterSummary,
    /// `/ui` (the dashboard page)
    Ui,
    /// `/role` (a highly available master only, docs/ha.md)
    Role,
    /// `/ha_status` (a highly available master only)
    HaStatus,
    /// `/leader` (a highly available master only)
    Leader,
    /// `/api/v1/segments/status` (upstream's admin API, api/v1.rs)
    SegmentsStatus,
    /// `/api/v1/tenant_quotas`
    TenantQuotas,
    /// `/api/v1/remove_all`
    RemoveAllV1,
    /// `/kv_events/status`
    KvEventsStatus,
    /// `/api/v1/drain_jobs`
    DrainJobs,
    /// `/api/v1/drain_jobs/query`
    DrainJobsQuery,
    /// `/api/v1/drain_jobs/cancel`
    DrainJobsCancel,
    /// Unknown path, `OPTIONS *`, or a request rejected before routing (400, 408, 431, 505).
    Other,
}

impl Route {
    /// All routes, in metrics index order.
    pub const ALL: [Route; 33] = [
        Route::Metrics,
        Route::MetricsSummary,
        Route::Health,
        Route::QueryKey,
        Route::BatchQueryKeys,
        Route::GetAllKeys,
        Route::GetAllSegments,
        Route::QuerySegment,
        Route::GetSegmentsDetail,
        Route::MountShm,
        Route::UnmountShm,
        Route::Mount,
        Route::Unmount,
        Route::PutJson,
        Route::PutRaw,
        Route::Get,
        Route::Exist,
        Route::Remove,
        Route::RemoveAll,
        Route::Metadata,
        Route::ClusterSummary,
        Route::Ui,
        Route::Role,
        Route::HaStatus,
        Route::Leader,
        Route::SegmentsStatus,
        Route::TenantQuotas,
        Route::RemoveAllV1,
        Route::KvEventsStatus,
        Route::DrainJobs,
        Route::DrainJobsQuery,
        Route::DrainJobsCancel,
        Route::Other,
    ];

    /// The route template, as printed in the `route` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Metrics => "/metrics",
            Route::MetricsSummary => "/metrics/summary",
            Route::Health => "/health",
            Route::QueryKey => "/query_key",
            Route::BatchQueryKeys => "/batch_query_keys",
            Route::GetAllKeys => "/get_all_keys",
            Route::GetAllSegments => "/get_all_segments",
            Route::QuerySegment => "/query_segment",
            Route::GetSegmentsDetail => "/get_segments_detail",
            Route::MountShm => "/api/mount_shm",
            Route::UnmountShm => "/api/unmount_shm",
            Route::Mount => "/api/mount",
            Route::Unmount => "/api/unmount",
            Route::PutJson => "/api/put",
            Route::PutRaw => "/api/put/{key}",
            Route::Get => "/api/get/{key}",
            Route::Exist => "/api/exist/{key}",
            Route::Remove => "/api/remove/{key}",
            Route::RemoveAll => "/api/remove_all",
            Route::Metadata => "/metadata",
            Route::ClusterSummary => "/cluster_summary",
            Route::Ui => "/ui",
            Route::Role => "/role",
            Route::HaStatus => "/ha_status",
            Route::Leader => "/leader",
            Route::SegmentsStatus => "/api/v1/segments/status",
            Route::TenantQuotas => "/api/v1/tenant_quotas",
            Route::RemoveAllV1 => "/api/v1/remove_all",
            Route::KvEventsStatus => "/kv_events/status",
            Route::DrainJobs => "/api/v1/drain_jobs",
            Route::DrainJobsQuery => "/api/v1/drain_jobs/query",
            Route::DrainJobsCancel => "/api/v1/drain_jobs/cancel",
            Route::Other => "other",
        }
    }

    /// Index into [`Route::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}
