//! The operator's dashboard (docs/api.md §4.10, docs/operations.md): the page at `/ui`, the
//! `/` of a browser sent there, and `/cluster_summary`, the one JSON document the page
//! refreshes from (nodes and segments, totals, the process, and the traffic history the
//! master keeps in 2 s windows). The page is embedded: nothing is fetched from elsewhere.

use crate::http::{Method, RequestHead, Response};
use crate::master::{lock, HistoryPoint, Master, HISTORY_INTERVAL};
use crate::stats::{Ctr, DURATION_BOUNDS_NS, NDUR};
use crate::store::{SegmentInfo, SegmentStatus};
use crate::time::Now;

use super::json::{push_f64, push_str, push_u64};
use super::params;
use super::reply::json_reply;

/// The page, HTML with its style and script inline.
const PAGE: &str = include_str!("ui.html");
/// Content type of the page.
const CT_HTML: &str = "text/html; charset=utf-8";
/// What a browser's `GET /` gets besides the redirect, for clients that do not follow it.
const ROOT_BODY: &str = "<!doctype html><title>mc-master</title><p><a href=\"/ui\">mc-master dashboard</a></p>\n";

/// `GET /ui`.
pub(super) fn page() -> Response {
    Response::new(200, CT_HTML, PAGE.as_bytes()).with_header("Cache-Control", "no-cache").with_header(
        "Content-Security-Policy",
        "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
    )
}

/// `GET /` (or HEAD) from a client that accepts `text/html`: 303 to `/ui`. Anything else
/// is an unknown path (SPEC §2.3) and gets None.
pub(super) fn root_redirect(head: &RequestHead) -> Option<Response> {
    let browser =
        head.path == "/" && matches!(head.method, Method::Get | Method::Head) && params::accepts(head, b"text/html");
    browser.then(|| Response::new(303, CT_HTML, ROOT_BODY.as_bytes()).with_header("Location", "/ui"))
}

/// `GET /cluster_summary`.
pub(super) fn cluster_summary(m: &Master, now: Now) -> Response {
    m.snapshot_if_due(now);
    let gauges = m.store.gauges();
    let segments = m.store.segments();
    let store = m.store.counters();
    let info = m.process_info();
    let process = m.platform.process_sample();
    let mut out = Vec::with_capacity(1024 + segments.len() * 300);

    out.extend_from_slice(b"{\"process\":{\"version\":");
    push_str(&mut out, &info.version);
    match m.node() {
        Some(n) => {
            out.extend_from_slice(b",\"mode\":\"node\",\"master_address\":");
            push_str(&mut out, n.master());
        }
        None => out.extend_from_slice(b",\"mode\":\"master\",\"master_address\":null"),
    }
    out.extend_from_slice(b",\"runtime\":");
    push_str(&mut out, &info.runtime);
    out.extend_from_slice(b",\"workers\":");
    push_u64(&mut out, info.workers as u64);
    out.extend_from_slice(b",\"uptime_seconds\":");
    push_f64(&mut out, now.mono.saturating_duration_since(m.start).as_secs_f64());
    out.extend_from_slice(b",\"resident_memory_bytes\":");
    push_u64(&mut out, process.resident_bytes);
    out.extend_from_slice(b",\"cpu_seconds\":");
    push_f64(&mut out, process.cpu_seconds);

    let groups = group_by_node(&segments);
    out.extend_from_slice(b"},\"totals\":{\"nodes\":");
    push_u64(&mut out, groups.len() as u64);
    out.extend_from_slice(b",\"segments\":");
    push_u64(&mut out, gauges.segments_total);
    out.extend_from_slice(b",\"segments_mounted\":");
    push_u64(&mut out, gauges.segments_mounted);
    out.extend_from_slice(b",\"segments_unmounting\":");
    push_u64(&mut out, gauges.segments_unmounting);
    out.extend_from_slice(b",\"capacity_bytes\":");
    push_u64(&mut out, gauges.total_capacity_bytes);
    out.extend_from_slice(b",\"used_bytes\":");
    push_u64(&mut out, gauges.allocated_bytes);
    out.extend_from_slice(b",\"keys\":");
    push_u64(&mut out, gauges.key_count);
    out.extend_from_slice(b",\"clients\":");
    push_u64(&mut out, gauges.active_clients);

    out.extend_from_slice(b"},\"nodes\":[");
    for (i, group) in groups.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_node(&mut out, m, now, group);
    }

    out.extend_from_slice(b"],\"traffic\":{\"interval_seconds\":");
    push_f64(&mut out, HISTORY_INTERVAL.as_secs_f64());
    out.extend_from_slice(b",\"samples\":[");
    {
        let history = lock(&m.history);
        for (i, (a, b)) in history.iter().zip(history.iter().skip(1)).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_window(&mut out, m, a, b);
        }
    }
    let cur = crate::stats::Snapshot::of(&m.totals(), now.mono);
    out.extend_from_slice(b"],\"totals\":{\"requests\":");
    push_u64(&mut out, cur.http_total);
    out.extend_from_slice(b",\"errors_4xx\":");
    push_u64(&mut out, cur.http_4xx);
    out.extend_from_slice(b",\"errors_5xx\":");
    push_u64(&mut out, cur.http_5xx);
    out.extend_from_slice(b",\"puts\":");
    push_u64(&mut out, cur.ctr(Ctr::PutEnd));
    out.extend_from_slice(b",\"gets\":");
    push_u64(&mut out, cur.ctr(Ctr::GetReq));
    out.extend_from_slice(b",\"evicted_keys\":");
    push_u64(&mut out, store.evicted_keys);
    out.extend_from_slice(b",\"evicted_bytes\":");
    push_u64(&mut out, store.evicted_bytes);
    out.extend_from_slice(b"}}}");
    json_reply(200, out)
}

/// Consecutive runs of segments of one node (the store lists them sorted by node name).
fn group_by_node(segments: &[SegmentInfo]) -> Vec<&[SegmentInfo]> {
    let mut groups = Vec::new();
    let mut rest = segments;
    while let Some(first) = rest.first() {
        let n = rest.iter().take_while(|s| s.name == first.name).count();
        let (group, tail) = rest.split_at(n);
        groups.push(group);
        rest = tail;
    }
    groups
}

fn push_node(out: &mut Vec<u8>, m: &Master, now: Now, group: &[SegmentInfo]) {
    // Capacity counts segments that still take values or hold them (not UNMOUNTING).
    let live = |s: &&SegmentInfo| s.status != SegmentStatus::Unmounting;
    out.extend_from_slice(b"{\"name\":");
    push_str(out, &group[0].name);
    out.extend_from_slice(b",\"capacity_bytes\":");
    push_u64(out, group.iter().filter(live).map(|s| s.size).sum());
    out.extend_from_slice(b",\"used_bytes\":");
    push_u64(out, group.iter().map(|s| s.used).sum());
    out.extend_from_slice(b",\"segments\":[");
    for (i, s) in group.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"segment_id\":\"");
        params::push_uuid(out, s.id);
        out.extend_from_slice(b"\",\"client_id\":\"");
        params::push_uuid(out, s.client_id);
        out.extend_from_slice(b"\",\"status\":\"");
        out.extend_from_slice(s.status.as_str().as_bytes());
        out.extend_from_slice(b"\",\"protocol\":\"");
        out.extend_from_slice(s.protocol.as_str().as_bytes());
        out.extend_from_slice(b"\",\"te_endpoint\":");
        push_str(out, &s.te_endpoint);
        out.extend_from_slice(b",\"size_bytes\":");
        push_u64(out, s.size);
        out.extend_from_slice(b",\"used_bytes\":");
        push_u64(out, s.used);
        out.extend_from_slice(b",\"grace_remaining_seconds\":");
        match s.grace_deadline_ns {
            Some(ns) => push_f64(out, m.store.remaining(now.mono, ns).as_secs_f64()),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// One window of the history: rates between two points and the latency quantiles of the
/// requests answered in it (the upper bound of their duration bucket, in ms; 10 000 ms
/// stands for anything longer).
fn push_window(out: &mut Vec<u8>, m: &Master, a: &HistoryPoint, b: &HistoryPoint) {
    let window = b.snap.at.saturating_duration_since(a.snap.at).as_secs_f64().max(1e-9);
    let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / window;
    let ctr = |c: Ctr| rate(a.snap.ctr(c), b.snap.ctr(c));
    out.extend_from_slice(b"{\"uptime_seconds\":");
    push_f64(out, b.snap.at.saturating_duration_since(m.start).as_secs_f64());
    out.extend_from_slice(b",\"window_seconds\":");
    push_f64(out, window);
    out.extend_from_slice(b",\"requests_per_second\":");
    push_f64(out, rate(a.snap.http_total, b.snap.http_total));
    out.extend_from_slice(b",\"errors_4xx_per_second\":");
    push_f64(out, rate(a.snap.http_4xx, b.snap.http_4xx));
    out.extend_from_slice(b",\"errors_5xx_per_second\":");
    push_f64(out, rate(a.snap.http_5xx, b.snap.http_5xx));
    let mut lat = [0u64; NDUR];
    for (d, (x, y)) in lat.iter_mut().zip(a.snap.latency.iter().zip(&b.snap.latency)) {
        *d = y.saturating_sub(*x);
    }
    for (name, num, den) in [(&b",\"p50_ms\":"[..], 1, 2), (&b",\"p99_ms\":"[..], 99, 100)] {
        out.extend_from_slice(name);
        match super::metrics::quantile_bucket(&lat, num, den) {
            Some(i) => {
                let ns = DURATION_BOUNDS_NS.get(i).or(DURATION_BOUNDS_NS.last()).copied().unwrap_or(0);
                push_f64(out, ns as f64 / 1e6);
            }
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b",\"puts_per_second\":");
    push_f64(out, ctr(Ctr::PutEnd));
    out.extend_from_slice(b",\"gets_per_second\":");
    push_f64(out, ctr(Ctr::GetReq));
    out.extend_from_slice(b",\"exists_per_second\":");
    push_f64(out, ctr(Ctr::ExistReq));
    out.extend_from_slice(b",\"removes_per_second\":");
    push_f64(out, ctr(Ctr::RemoveReq));
    out.extend_from_slice(b",\"evictions_per_second\":");
    push_f64(out, rate(a.evicted_keys, b.evicted_keys));
    out.push(b'}');
}
