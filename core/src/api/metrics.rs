//! `/metrics` (Prometheus text 0.0.4, SPEC §9), `/metrics/summary` (SPEC §4.2) and the
//! human-readable byte formats of SPEC §1.4. Pure functions over summed counters.

use std::fmt::Write as _;
use std::io::Write as _;

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::master::{lock, Master};
use crate::node::{Histogram, NodeState, NODE_RPCS};
use crate::platform::ProcessSample;
use crate::route::Route;
use crate::stats::{Ctr, Snapshot, Totals, DURATION_BOUNDS_NS, DURATION_LABELS, NDUR, VALUE_BOUNDS};
use crate::store::{Gauges, NodeGauge, StoreCounters, TenantMetrics, TenantQuota};
use crate::time::Now;

use super::json::push_u64;

/// The `/metrics` body.
pub(crate) fn metrics_text(m: &Master, now: Now) -> Vec<u8> {
    let gauges = m.store.gauges();
    let oldest_heartbeat_age = gauges.oldest_heartbeat_ns.map_or(Duration::ZERO, |ns| m.store.since(now.mono, ns));
    let store = m.store.counters();
    let totals = m.totals();
    let mut out = Vec::new();
    render_metrics(
        &mut out,
        &Scrape {
            gauges: &gauges,
            store: &store,
            totals: &totals,
            connections_open: m.connections_open.load(Ordering::Relaxed).max(0) as u64,
            process: m.platform.process_sample(),
            client_ttl: m.config.client_ttl,
            suspicion_ttl: m.config.client_suspicion_ttl,
            drain: m.store.drain_counters(),
            oldest_heartbeat_age,
        },
    );
    if let Some(t) = m.store.tenant_metrics() {
        render_tenants(&mut out, &t);
    }
    if let Some(node) = m.node() {
        render_node(&mut out, node);
    }
    out
}

/// One sample `name{tenant_id="t"[,extra]} v`.
fn tenant_sample(out: &mut Vec<u8>, name: &str, tenant: &str, extra: &str, v: u64) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"{tenant_id=\"");
    push_label_value(out, tenant);
    out.push(b'"');
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(b"} ");
    push_u64(out, v);
    out.push(b'\n');
}

/// The tenant-quota families of a multi-tenant master (upstream-behavior §2), after the
/// master's own.
fn render_tenants(out: &mut Vec<u8>, t: &TenantMetrics) {
    type Pick = fn(&TenantQuota) -> u64;
    let gauges: [(&str, &str, Pick); 6] = [
        ("requested_bytes", "Requested quota of the tenant's policy (0 without one)", |q| q.requested_quota_bytes),
        ("effective_bytes", "Quota the tenant may use now", |q| q.effective_quota_bytes),
        ("charged_bytes", "Bytes of the tenant's values in memory (length x replicas)", |q| q.charged_bytes),
        ("admission_closed", "1 when no write of the tenant is admitted (charged >= effective)", |q| {
            u64::from(q.admission_closed)
        }),
        ("over_quota", "1 when the tenant uses more than its effective quota", |q| u64::from(q.over_quota)),
        ("explicit_policy", "1 when the tenant has a quota policy", |q| u64::from(q.has_explicit_policy)),
    ];
    for (suffix, help, pick) in gauges {
        let name = format!("mooncake_tenant_quota_{suffix}");
        family(out, &name, "gauge", help);
        for q in &t.quotas {
            tenant_sample(out, &name, &q.tenant_id, "", pick(q));
        }
    }
    scalar(
        out,
        "mooncake_tenant_quota_allocatable_capacity_bytes",
        "gauge",
        "Capacity the tenants' quotas share (memory of the mounted segments)",
        t.capacity,
    );
    scalar(out, "mooncake_tenant_quota_requested_bytes_sum", "gauge", "Sum of the policies' quotas", t.requested_sum);
    scalar(
        out,
        "mooncake_tenant_quota_effective_bytes_sum",
        "gauge",
        "Sum of the policies' effective quotas",
        t.effective_sum,
    );
    family(out, "mooncake_tenant_quota_reject_total", "counter", "Writes refused for the tenant's quota");
    for (tenant, n) in &t.rejects {
        tenant_sample(out, "mooncake_tenant_quota_reject_total", tenant, ",reason=\"quota_exceeded\"", *n);
    }
    family(
        out,
        "mooncake_tenant_evict_bytes_total",
        "counter",
        "Bytes of the tenant's values evicted to admit its own writes",
    );
    for (tenant, n) in &t.evicted_bytes {
        tenant_sample(out, "mooncake_tenant_evict_bytes_total", tenant, "", *n);
    }
}

/// A histogram of `h` as `name` with `labels` (`k="v"` pairs, already escaped, or empty).
fn node_histogram(out: &mut Vec<u8>, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cum = 0;
    for (b, n) in h.buckets.iter().enumerate() {
        cum += n.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cum}", DURATION_LABELS[b]);
    }
    let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = write!(out, "{name}_sum{braces} ");
    push_seconds(out, h.sum_ns.load(Ordering::Relaxed));
    let _ = writeln!(out, "\n{name}_count{braces} {cum}");
}

/// The series of a store node (docs/cluster.md), after the process's own.
fn render_node(out: &mut Vec<u8>, n: &NodeState) {
    family(out, "node_master_up", "gauge", "1 while this node is registered with its master");
    out.extend_from_slice(b"node_master_up{master=\"");
    push_label_value(out, n.master());
    out.extend_from_slice(if n.health().is_ok() { b"\"} 1\n" } else { b"\"} 0\n" });
    let m = n.membership();
    scalar(out, "node_master_connects_total", "counter", "Connections to the master established", m.connects);
    scalar(
        out,
        "node_master_disconnects_total",
        "counter",
        "Connections to the master lost or given up",
        m.disconnects,
    );
    scalar(out, "node_master_remounts_total", "counter", "ReMountSegment calls after NEED_REMOUNT", m.remounts);
    for (name, help, errors) in [
        ("node_master_rpc_total", "RPC calls made to the master, by method", false),
        ("node_master_rpc_errors_total", "RPC calls without a successful reply, by method", true),
    ] {
        family(out, name, "counter", help);
        for (i, r) in NODE_RPCS.iter().enumerate() {
            let c = &n.rpc[i];
            let v = if errors { &c.errors } else { &c.calls }.load(Ordering::Relaxed);
            let method = crate::rpc::info(*r).def.name;
            let _ = writeln!(out, "{name}{{method=\"{method}\"}} {v}");
        }
    }
    family(out, "node_master_rpc_duration_seconds", "histogram", "Round trip of RPC calls to the master");
    node_histogram(out, "node_master_rpc_duration_seconds", "", &n.rpc_latency);
    family(out, "node_transfer_bytes_total", "counter", "Value bytes moved for REST requests");
    for (i, (path, dir)) in
        [("local", "read"), ("local", "write"), ("remote", "read"), ("remote", "write")].iter().enumerate()
    {
        let v = n.bytes[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "node_transfer_bytes_total{{path=\"{path}\",direction=\"{dir}\"}} {v}");
    }
    let failures = n.move_failures.load(Ordering::Relaxed);
    scalar(out, "node_transfer_failures_total", "counter", "Moves of value bytes that failed", failures);
    family(out, "node_transfer_duration_seconds", "histogram", "Duration of moves of value bytes");
    node_histogram(out, "node_transfer_duration_seconds", "path=\"local\"", &n.move_latency[0]);
    node_histogram(out, "node_transfer_duration_seconds", "path=\"remote\"", &n.move_latency[1]);
}

/// The `/metrics/summary` body at `now`.
pub(crate) fn summary_text(m: &Master, now: Now) -> String {
    m.snapshot_if_due(now);
    let base = lock(&m.snapshot).clone();
    let gauges = m.store.gauges();
    let store = m.store.counters();
    let cur = Snapshot::of(&m.totals(), now.mono);
    let window = now.mono.saturating_duration_since(base.at).as_secs_f64();
    render_summary(&gauges, &store, &cur, &base, window)
}

/// Everything one `/metrics` scrape prints.
pub(crate) struct Scrape<'a> {
    /// Store gauges.
    pub(crate) gauges: &'a Gauges,
    /// Store-kept counters.
    pub(crate) store: &'a StoreCounters,
    /// Summed worker counters.
    pub(crate) totals: &'a Totals,
    /// `http_connections_open`.
    pub(crate) connections_open: u64,
    /// `process_*`.
    pub(crate) process: ProcessSample,
    /// `master_client_ttl_seconds`.
    pub(crate) client_ttl: Duration,
    /// `master_client_suspicion_ttl_seconds`.
    pub(crate) suspicion_ttl: Duration,
    /// (`master_drain_migrated_bytes_total`, `..._units_succeeded_total`, `..._failed_total`).
    pub(crate) drain: (u64, u64, u64),
    /// `master_client_oldest_heartbeat_age_seconds`.
    pub(crate) oldest_heartbeat_age: Duration,
}

fn family(out: &mut Vec<u8>, name: &str, kind: &str, help: &str) {
    out.extend_from_slice(b"# HELP ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(help.as_bytes());
    out.extend_from_slice(b"\n# TYPE ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(kind.as_bytes());
    out.push(b'\n');
}

fn scalar(out: &mut Vec<u8>, name: &str, kind: &str, help: &str, v: u64) {
    family(out, name, kind, help);
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    push_u64(out, v);
    out.push(b'\n');
}

/// Appends a label value with `\`, `"` and line feed escaped (SPEC §9).
pub(crate) fn push_label_value(out: &mut Vec<u8>, v: &str) {
    for &b in v.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

/// Appends a nanosecond amount as seconds, exactly, without a decimal point when integral.
fn push_seconds(out: &mut Vec<u8>, ns: u64) {
    push_u64(out, ns / 1_000_000_000);
    let frac = ns % 1_000_000_000;
    if frac != 0 {
        let digits = format!("{frac:09}");
        out.push(b'.');
        out.extend_from_slice(digits.trim_end_matches('0').as_bytes());
    }
}

/// Appends a float sample: integers without decimal point, others in plain notation.
fn push_float(out: &mut Vec<u8>, v: f64) {
    use std::io::Write;
    let v = if v.is_finite() { v } else { 0.0 };
    let _ = write!(out, "{v}");
}

const COUNTERS: [(&str, &str); 22] = [
    ("master_put_start_requests_total", "Total number of PutStart requests received"),
    ("master_put_start_failures_total", "Total number of failed PutStart requests"),
    ("master_put_end_requests_total", "Total number of PutEnd requests received"),
    ("master_put_end_failures_total", "Total number of failed PutEnd requests"),
    ("master_put_revoke_requests_total", "Total number of PutRevoke requests received"),
    ("master_put_revoke_failures_total", "Total number of failed PutRevoke requests"),
    ("master_get_replica_list_requests_total", "Total number of GetReplicaList requests received"),
    ("master_get_replica_list_failures_total", "Total number of failed GetReplicaList requests"),
    ("master_exist_key_requests_total", "Total number of ExistKey requests received"),
    ("master_exist_key_failures_total", "Total number of failed ExistKey requests"),
    ("master_remove_requests_total", "Total number of Remove requests received"),
    ("master_remove_failures_total", "Total number of failed Remove requests"),
    ("master_remove_all_requests_total", "Total number of Remove all requests received"),
    ("master_remove_all_failures_total", "Total number of failed Remove all requests"),
    ("master_mount_segment_requests_total", "Total number of segments mounted"),
    ("master_mount_segment_failures_total", "Total number of failed MountSegment requests"),
    ("master_unmount_segment_requests_total", "Total number of UnmountSegment requests received"),
    ("master_unmount_segment_failures_total", "Total number of failed UnmountSegment requests"),
    ("master_attempted_evictions_total", "Total number of attempted eviction operations"),
    ("master_successful_evictions_total", "Total number of successful eviction operations"),
    ("master_evicted_key_count", "Total number of keys evicted"),
    ("master_evicted_size_bytes", "Total bytes of evicted objects"),
];

fn node_series(out: &mut Vec<u8>, name: &str, help: &str, g: &Gauges, pick: impl Fn(&NodeGauge) -> u64) {
    family(out, name, "gauge", help);
    for n in &g.nodes {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"{segment=\"");
        push_label_value(out, &n.name);
        out.extend_from_slice(b"\"} ");
        push_u64(out, pick(n));
        out.push(b'\n');
    }
}

/// Renders every family of SPEC §9, in the order of its table.
pub(crate) fn render_metrics(out: &mut Vec<u8>, s: &Scrape<'_>) {
    let g = s.gauges;
    let t = s.totals;
    out.reserve(8192 + 160 * (g.nodes.len() * 2 + t.requests.len()) + 1800 * Route::ALL.len());

    scalar(out, "master_key_count", "gauge", "Keys currently known to the master", g.key_count);
    scalar(
        out,
        "master_allocated_bytes",
        "gauge",
        "Total memory bytes currently allocated across all segments",
        g.allocated_bytes,
    );
    scalar(
        out,
        "master_total_capacity_bytes",
        "gauge",
        "Total memory capacity across all mounted segments",
        g.total_capacity_bytes,
    );
    scalar(out, "master_active_clients", "gauge", "Total number of active clients", g.active_clients);
    node_series(out, "segment_allocated_bytes", "Bytes allocated on the segments of one store node", g, |n| {
        n.allocated
    });
    node_series(out, "segment_total_capacity_bytes", "Capacity of the segments of one store node", g, |n| n.capacity);

    let values: [u64; 22] = [
        t.ctr(Ctr::PutStart),
        t.ctr(Ctr::PutStartFail),
        t.ctr(Ctr::PutEnd),
        0,
        s.store.put_revokes,
        0,
        t.ctr(Ctr::GetReq),
        t.ctr(Ctr::GetFail),
        t.ctr(Ctr::ExistReq),
        0,
        t.ctr(Ctr::RemoveReq),
        t.ctr(Ctr::RemoveFail),
        t.ctr(Ctr::RemoveAllReq),
        0,
        t.ctr(Ctr::MountReq),
        t.ctr(Ctr::MountFail),
        t.ctr(Ctr::UnmountReq),
        t.ctr(Ctr::UnmountFail),
        s.store.attempted_evictions,
        s.store.successful_evictions,
        s.store.evicted_keys,
        s.store.evicted_bytes,
    ];
    for ((name, help), v) in COUNTERS.iter().zip(values) {
        scalar(out, name, "counter", help, v);
    }

    // master_value_size_bytes
    family(out, "master_value_size_bytes", "histogram", "Distribution of object value sizes");
    let mut cum = 0;
    for (b, &n) in t.values.iter().enumerate() {
        cum += n;
        out.extend_from_slice(b"master_value_size_bytes_bucket{le=\"");
        match VALUE_BOUNDS.get(b) {
            Some(&bound) => {
                push_u64(out, bound);
                out.extend_from_slice(b".000000");
            }
            None => out.extend_from_slice(b"+Inf"),
        }
        out.extend_from_slice(b"\"} ");
        push_u64(out, cum);
        out.push(b'\n');
    }
    out.extend_from_slice(b"master_value_size_bytes_sum ");
    push_u64(out, t.value_sum);
    out.extend_from_slice(b"\nmaster_value_size_bytes_count ");
    push_u64(out, cum);
    out.push(b'\n');

    // http_requests_total
    family(out, "http_requests_total", "counter", "HTTP responses sent");
    for &(route, method, code, n) in &t.requests {
        out.extend_from_slice(b"http_requests_total{route=\"");
        out.extend_from_slice(route.as_str().as_bytes());
        out.extend_from_slice(b"\",method=\"");
        out.extend_from_slice(method.as_str().as_bytes());
        out.extend_from_slice(b"\",code=\"");
        push_u64(out, u64::from(code));
        out.extend_from_slice(b"\"} ");
        push_u64(out, n);
        out.push(b'\n');
    }

    // http_request_duration_seconds
    family(
        out,
        "http_request_duration_seconds",
        "histogram",
        "Time from a complete request head to the response handed to the connection",
    );
    for route in Route::ALL {
        let row = &t.durations[route.index()];
        if row.iter().all(|&n| n == 0) {
            continue;
        }
        let mut cum = 0;
        for (b, &n) in row.iter().enumerate() {
            cum += n;
            out.extend_from_slice(b"http_request_duration_seconds_bucket{route=\"");
            out.extend_from_slice(route.as_str().as_bytes());
            out.extend_from_slice(b"\",le=\"");
            out.extend_from_slice(DURATION_LABELS[b].as_bytes());
            out.extend_from_slice(b"\"} ");
            push_u64(out, cum);
            out.push(b'\n');
        }
        out.extend_from_slice(b"http_request_duration_seconds_sum{route=\"");
        out.extend_from_slice(route.as_str().as_bytes());
        out.extend_from_slice(b"\"} ");
        push_seconds(out, t.duration_sum_ns[route.index()]);
        out.extend_from_slice(b"\nhttp_request_duration_seconds_count{route=\"");
        out.extend_from_slice(route.as_str().as_bytes());
        out.extend_from_slice(b"\"} ");
        push_u64(out, cum);
        out.push(b'\n');
    }

    scalar(out, "http_connections_open", "gauge", "Open client connections on all listeners", s.connections_open);
    scalar(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes", s.process.resident_bytes);
    family(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds");
    out.extend_from_slice(b"process_cpu_seconds_total ");
    push_float(out, s.process.cpu_seconds);
    out.push(b'\n');

    // Client liveness (beyond SPEC §9; docs/api.md): what an alert on a client about to
    // expire, or expired, needs.
    float_scalar(
        out,
        "master_client_ttl_seconds",
        "gauge",
        "Heartbeat age at which an RPC client expires",
        s.client_ttl,
    );
    float_scalar(
        out,
        "master_client_oldest_heartbeat_age_seconds",
        "gauge",
        "Age of the oldest heartbeat among alive RPC clients (0 with none)",
        s.oldest_heartbeat_age,
    );
    scalar(
        out,
        "master_expired_clients_total",
        "counter",
        "RPC clients expired for missed heartbeats",
        s.store.expired_clients,
    );
    float_scalar(
        out,
        "master_client_suspicion_ttl_seconds",
        "gauge",
        "How long a suspected RPC client keeps its resources before it goes offline (0: no suspicion phase)",
        s.suspicion_ttl,
    );
    scalar(
        out,
        "master_suspected_clients",
        "gauge",
        "RPC clients suspected now (silent beyond the TTL; replicas withheld, resources kept)",
        s.gauges.suspected_clients,
    );
    scalar(
        out,
        "master_suspected_clients_total",
        "counter",
        "RPC clients that became suspected (Active to Suspected)",
        s.store.suspected_clients,
    );
    scalar(
        out,
        "master_draining_segments",
        "gauge",
        "Segments a running drain job is emptying (out of allocation, readable)",
        s.gauges.segments_draining,
    );
    scalar(out, "master_drained_segments", "gauge", "Segments a drain job emptied", s.gauges.segments_drained);
    scalar(out, "master_drain_migrated_bytes_total", "counter", "Bytes of replicas moved by drain jobs", s.drain.0);
    scalar(out, "master_drain_units_succeeded_total", "counter", "Replicas moved by drain jobs", s.drain.1);
    scalar(out, "master_drain_units_failed_total", "counter", "Replicas drain jobs could not move", s.drain.2);
    scalar(
        out,
        "master_recovered_clients_total",
        "counter",
        "Suspected RPC clients heard from again (Suspected to Active)",
        s.store.recovered_clients,
    );
}

fn float_scalar(out: &mut Vec<u8>, name: &str, kind: &str, help: &str, v: Duration) {
    family(out, name, kind, help);
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    push_float(out, v.as_secs_f64());
    out.push(b'\n');
}

// ---------------------------------------------------------------------------------------------
// Human-readable sizes (SPEC §1.4).

/// `size_human` of `/get_segments_detail`: `16 GiB`, `1.5 KiB`, `11 B`, `1024 MiB`.
pub(crate) fn size_human(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut i = 0;
    while i + 1 < UNITS.len() && n >> (10 * (i + 1)) > 0 {
        i += 1;
    }
    let v = n as f64 / (1u64 << (10 * i)) as f64;
    let mut s = format!("{v:.2}");
    let trimmed = s.trim_end_matches('0').trim_end_matches('.').len();
    s.truncate(trimmed);
    s.push(' ');
    s.push_str(UNITS[i]);
    s
}

/// Byte amounts of `/metrics/summary`: `1023 B`, `1.50 KB`, `1.00 MB` (at most `TB`).
pub(crate) fn summary_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut i = 1;
    while i + 1 < UNITS.len() && n >> (10 * (i + 1)) > 0 {
        i += 1;
    }
    format!("{:.2} {}", n as f64 / (1u64 << (10 * i)) as f64, UNITS[i])
}

// ---------------------------------------------------------------------------------------------
// /metrics/summary (SPEC §4.2).

/// The q-quantile (`num/den`) of non-cumulative duration buckets, as printed: `0.25 ms`,
/// `>10000.00 ms`, or `n/a` without observations.
pub(crate) fn latency_quantile(buckets: &[u64; NDUR], num: u64, den: u64) -> String {
    match quantile_bucket(buckets, num, den) {
        None => "n/a".to_string(),
        Some(b) => match DURATION_BOUNDS_NS.get(b) {
            Some(&ns) => format!("{:.2} ms", ns as f64 / 1e6),
            None => ">10000.00 ms".to_string(),
        },
    }
}

/// The bucket holding the `num/den` quantile of `buckets` (the overflow bucket is
/// `DURATION_BOUNDS_NS.len()`), or None with no observation.
pub(crate) fn quantile_bucket(buckets: &[u64; NDUR], num: u64, den: u64) -> Option<usize> {
    let n: u64 = buckets.iter().sum();
    if n == 0 {
        return None;
    }
    // ceil(q × n) in exact integer arithmetic.
    let target = (u128::from(n) * u128::from(num)).div_ceil(u128::from(den));
    let mut cum = 0u128;
    for (b, &c) in buckets.iter().enumerate() {
        cum += u128::from(c);
        if cum >= target {
            return Some(b);
        }
    }
    Some(NDUR - 1)
}

/// Renders the eight lines of `/metrics/summary`. `now` holds the counters at the request,
/// `base` those of the latest snapshot; `window` is the time between them in seconds.
pub(crate) fn render_summary(
    g: &Gauges,
    store: &StoreCounters,
    now: &Snapshot,
    base: &Snapshot,
    window: f64,
) -> String {
    let mut s = String::with_capacity(640);
    let used = g.allocated_bytes;
    let cap = g.total_capacity_bytes;
    let _ = write!(s, "Mem Storage: {} / {}", summary_bytes(used), summary_bytes(cap));
    if cap > 0 {
        let _ = write!(s, " ({:.1}%)", used as f64 * 100.0 / cap as f64);
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "Keys: {}", g.key_count);
    let drains = if g.segments_draining + g.segments_drained > 0 {
        format!(", draining: {}, drained: {}", g.segments_draining, g.segments_drained)
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "Segments: {} (mounted: {}, unmounting: {}{drains}), nodes: {}",
        g.segments_total, g.segments_mounted, g.segments_unmounting, g.nodes_mounted
    );
    let _ = writeln!(s, "Clients: {}", g.active_clients);

    let rate = |delta: u64| {
        if window > 0.0 {
            delta as f64 / window
        } else {
            0.0
        }
    };
    let _ = writeln!(
        s,
        "HTTP Requests (per sec, last {window:.2} s): total={:.2}, 4xx={:.2}, 5xx={:.2}",
        rate(now.http_total.saturating_sub(base.http_total)),
        rate(now.http_4xx.saturating_sub(base.http_4xx)),
        rate(now.http_5xx.saturating_sub(base.http_5xx)),
    );
    let mut lat = [0u64; NDUR];
    for (d, (a, b)) in lat.iter_mut().zip(now.latency.iter().zip(&base.latency)) {
        *d = a.saturating_sub(*b);
    }
    let (p50, p99) = (latency_quantile(&lat, 1, 2), latency_quantile(&lat, 99, 100));
    let _ = writeln!(s, "HTTP Latency (last {window:.2} s): p50={p50}, p99={p99}");

    let delta = |c: Ctr| now.ctr(c).saturating_sub(base.ctr(c));
    let ok = |req: Ctr, fail: Option<Ctr>| delta(req).saturating_sub(fail.map_or(0, delta));
    let _ = write!(
        s,
        "Store Ops (Success/Total per sec): Put={:.2}/{:.2}",
        rate(delta(Ctr::PutEnd)),
        rate(delta(Ctr::PutStart))
    );
    for (name, req, fail) in [
        ("Get", Ctr::GetReq, Some(Ctr::GetFail)),
        ("Exist", Ctr::ExistReq, None),
        ("Remove", Ctr::RemoveReq, Some(Ctr::RemoveFail)),
        ("RemoveAll", Ctr::RemoveAllReq, None),
        ("Mount", Ctr::MountReq, None),
        ("Unmount", Ctr::UnmountReq, Some(Ctr::UnmountFail)),
    ] {
        let _ = write!(s, ", {name}={:.2}/{:.2}", rate(ok(req, fail)), rate(delta(req)));
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Eviction: Success/Attempts={}/{}, keys={}, size={}",
        store.successful_evictions,
        store.attempted_evictions,
        store.evicted_keys,
        summary_bytes(store.evicted_bytes)
    );
    s
}
