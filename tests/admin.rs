//! SPEC §4, §6.1, §9: admin endpoints and metrics.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The families of SPEC §9 (`name type` per line), shared with the unit test `metrics_text`.
fn families() -> Vec<(&'static str, &'static str)> {
    let list: Vec<_> = include_str!("data/metric_families.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(' ').expect("`name type`"))
        .collect();
    assert!(!list.is_empty(), "tests/data/metric_families.txt lists no family");
    list
}

const VALUE_SIZE_LE: &[&str] = &[
    "4096.000000",
    "65536.000000",
    "262144.000000",
    "1048576.000000",
    "4194304.000000",
    "16777216.000000",
    "67108864.000000",
    "+Inf",
];

const DURATION_LE: &[&str] = &[
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10", "+Inf",
];

const SEGMENT_FIELDS: &[&str] = &[
    "segment_name",
    "segment_id",
    "client_id",
    "base_address",
    "size_bytes",
    "size_human",
    "te_endpoint",
    "protocol",
    "status",
    "allocator_used_bytes",
    "allocator_capacity_bytes",
    "allocator_usage_percent",
];

fn is_integer_text(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

/// Value-size histogram buckets as (le, value) in printed order.
fn buckets(m: &Metrics, family: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    m.lines
        .iter()
        .filter(|(n, l, _)| {
            *n == format!("{family}_bucket") && extra.iter().all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, l, v)| {
            let le = l.iter().find(|(k, _)| k == "le").map(|(_, v)| v.clone()).expect("bucket without le");
            (le, v.clone())
        })
        .collect()
}

#[test]
fn metrics_families_and_initial_values() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let r = s.get("/metrics");
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type(), Some(CT_PLAIN));
        let m = parse_metrics(&r.text());
        for (fam, ty) in &families() {
            assert_eq!(
                m.types.get(*fam).map(Vec::as_slice),
                Some(&[ty.to_string()][..]),
                "exactly one `# TYPE {fam} {ty}` line"
            );
            assert_eq!(m.helps.get(*fam), Some(&1), "exactly one `# HELP {fam}` line");
        }
        // Every sample belongs to a declared family.
        for (name, _, _) in &m.lines {
            let fam = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suf| name.strip_suffix(suf).filter(|f| m.types.get(*f).is_some_and(|t| t[0] == "histogram")))
                .unwrap_or(name);
            assert!(m.types.contains_key(fam), "sample {name} without # TYPE");
        }
        // Gauges and counters at start.
        for (name, want) in [
            ("master_key_count", 0.0),
            ("master_allocated_bytes", 0.0),
            ("master_total_capacity_bytes", 0.0),
            ("master_active_clients", 1.0),
        ] {
            assert_eq!(m.val(name), want, "{name}");
        }
        for (fam, ty) in &families() {
            if *ty == "counter" && fam.starts_with("master_") {
                assert_eq!(m.val(fam), 0.0, "{fam} starts at 0");
                assert_eq!(m.raw_value(fam), Some("0"), "{fam} printed as an integer");
            }
        }
        // Labelled families with no series yet: only HELP and TYPE.
        for fam in [
            "segment_allocated_bytes",
            "segment_total_capacity_bytes",
            "http_requests_total",
            "http_request_duration_seconds",
        ] {
            assert!(m.family_lines(fam).is_empty(), "{fam} must have no series yet:\n{}", m.text);
        }
        // master_value_size_bytes is present from start with all bounds.
        let b = buckets(&m, "master_value_size_bytes", &[]);
        let les: Vec<&str> = b.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(les, VALUE_SIZE_LE);
        assert!(b.iter().all(|(_, v)| v == "0"), "{b:?}");
        assert_eq!(m.raw_value("master_value_size_bytes_sum"), Some("0"));
        assert_eq!(m.raw_value("master_value_size_bytes_count"), Some("0"));
        assert!(m.val("http_connections_open") >= 1.0);
        assert!(m.val("process_resident_memory_bytes") > 0.0);
        assert!(m.val("process_cpu_seconds_total") >= 0.0);

        // The first scrape is counted by the second one, never by itself.
        let m2 = s.metrics();
        assert_eq!(m2.val(r#"http_requests_total{route="/metrics",method="GET",code="200"}"#), 1.0);
        let b = buckets(&m2, "http_request_duration_seconds", &[("route", "/metrics")]);
        let les: Vec<&str> = b.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(les, DURATION_LE);
        assert_eq!(b.last().unwrap().1, "1");
        assert_eq!(m2.val(r#"http_request_duration_seconds_count{route="/metrics"}"#), 1.0);
        assert!(m2.val(r#"http_request_duration_seconds_sum{route="/metrics"}"#) >= 0.0);
        let mut prev = 0.0;
        for (_, v) in &b {
            let v: f64 = v.parse().unwrap();
            assert!(v >= prev, "buckets are cumulative: {b:?}");
            prev = v;
        }
    });
}

#[test]
fn metrics_track_operations() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let node = s.default_node_name();
        let seg_alloc = format!(r#"segment_allocated_bytes{{segment="{node}"}}"#);
        let seg_cap = format!(r#"segment_total_capacity_bytes{{segment="{node}"}}"#);
        let mut scrapes = 0.0;
        let mut scrape = || {
            let m = s.metrics();
            scrapes += 1.0;
            (m, scrapes - 1.0)
        };

        let (m, _) = scrape();
        assert_eq!(m.val(&seg_cap), 16777216.0);
        assert_eq!(m.val(&seg_alloc), 0.0);
        assert_eq!(m.val("master_total_capacity_bytes"), 16777216.0);
        assert_eq!(m.val("master_mount_segment_requests_total"), 1.0);

        s.put("my_object", "hello world");
        s.json("PUT", "/api/put", r#"{"key":"","value":"v"}"#).assert_error(400, "Missing key or value");
        let (m, _) = scrape();
        assert_eq!(m.val("master_key_count"), 1.0);
        assert_eq!(m.val("master_allocated_bytes"), 11.0);
        assert_eq!(m.val(&seg_alloc), 11.0);
        assert_eq!(m.raw_value(&seg_alloc), Some("11"));
        assert_eq!(m.val("master_put_start_requests_total"), 1.0);
        assert_eq!(m.val("master_put_end_requests_total"), 1.0);
        assert_eq!(m.val("master_put_start_failures_total"), 0.0);
        let b = buckets(&m, "master_value_size_bytes", &[]);
        assert!(b.iter().all(|(_, v)| v == "1"), "{b:?}");
        assert_eq!(m.raw_value("master_value_size_bytes_sum"), Some("11"));
        assert_eq!(m.raw_value("master_value_size_bytes_count"), Some("1"));
        assert_eq!(m.val(r#"http_requests_total{route="/api/put",method="PUT",code="200"}"#), 1.0);
        assert_eq!(m.val(r#"http_requests_total{route="/api/put",method="PUT",code="400"}"#), 1.0);
        assert_eq!(m.val(r#"http_request_duration_seconds_count{route="/api/put"}"#), 2.0);
        assert_eq!(m.val(r#"http_request_duration_seconds_bucket{route="/api/put",le="+Inf"}"#), 2.0);

        // Reads: GET counts, HEAD / query_key / batch / invalid keys do not.
        assert_eq!(s.get_value("my_object").status, 200);
        assert_eq!(s.get_value("missing").status, 404);
        assert_eq!(s.get("/api/get/%01").status, 400);
        assert_eq!(s.head("/api/get/my_object").status, 200);
        assert_eq!(s.query_key("my_object").status, 200);
        assert_eq!(s.get("/batch_query_keys?keys=my_object").status, 200);
        assert!(s.exists("my_object"));
        assert!(!s.exists("missing"));
        assert_eq!(s.get("/api/exist/%01").status, 400);
        s.remove("missing").assert_error(404, "Key not found");
        s.remove("my_object").assert_error(409, "Key has an active lease");
        assert_eq!(s.delete("/api/remove/%01").status, 400);
        s.delete("/api/remove_all").assert_json(200, r#"{"status":"success removed 0 keys"}"#);
        let id = s.mount(16777216)[0].clone();
        let nil = "00000000-0000-0000-0000-000000000000";
        let r = s.post("/api/unmount", &format!(r#"{{"segment_ids":["{id}","{nil}","{}"]}}"#, id.to_uppercase()));
        r.assert_json(
            404,
            &format!(r#"{{"error":"Unmount failed for one or more segments","failed_segment_ids":["{nil}"]}}"#),
        );
        // Requests for unknown paths and unknown methods.
        assert_eq!(s.get("/nope").status, 404);
        assert_eq!(s.request("PATCH", "/health", &[], b"").status, 405);
        assert_eq!(s.request("OPTIONS", "/health", &[], b"").status, 204);

        let (m, prior_scrapes) = scrape();
        for (name, want) in [
            ("master_get_replica_list_requests_total", 2.0),
            ("master_get_replica_list_failures_total", 1.0),
            ("master_exist_key_requests_total", 2.0),
            ("master_exist_key_failures_total", 0.0),
            ("master_remove_requests_total", 2.0),
            ("master_remove_failures_total", 2.0),
            ("master_remove_all_requests_total", 1.0),
            ("master_remove_all_failures_total", 0.0),
            ("master_mount_segment_requests_total", 2.0),
            ("master_mount_segment_failures_total", 0.0),
            ("master_unmount_segment_requests_total", 2.0),
            ("master_unmount_segment_failures_total", 1.0),
            ("master_put_start_requests_total", 1.0),
            ("master_put_end_requests_total", 1.0),
            ("master_put_end_failures_total", 0.0),
            ("master_put_revoke_requests_total", 0.0),
            ("master_put_revoke_failures_total", 0.0),
            ("master_key_count", 1.0),
            ("master_active_clients", 1.0),
            ("master_total_capacity_bytes", 16777216.0),
        ] {
            assert_eq!(m.val(name), want, "{name}\n{}", m.text);
        }
        for (series, want) in [
            (r#"{route="/api/get/{key}",method="GET",code="200"}"#, 1.0),
            (r#"{route="/api/get/{key}",method="GET",code="404"}"#, 1.0),
            (r#"{route="/api/get/{key}",method="GET",code="400"}"#, 1.0),
            (r#"{route="/api/get/{key}",method="HEAD",code="200"}"#, 1.0),
            (r#"{route="/api/exist/{key}",method="GET",code="200"}"#, 2.0),
            (r#"{route="/api/exist/{key}",method="GET",code="400"}"#, 1.0),
            (r#"{route="/api/remove/{key}",method="DELETE",code="404"}"#, 1.0),
            (r#"{route="/api/remove/{key}",method="DELETE",code="409"}"#, 1.0),
            (r#"{route="/api/remove/{key}",method="DELETE",code="400"}"#, 1.0),
            (r#"{route="/api/remove_all",method="DELETE",code="200"}"#, 1.0),
            (r#"{route="/query_key",method="GET",code="200"}"#, 1.0),
            (r#"{route="/batch_query_keys",method="GET",code="200"}"#, 1.0),
            (r#"{route="/api/mount",method="POST",code="200"}"#, 1.0),
            (r#"{route="/api/unmount",method="POST",code="404"}"#, 1.0),
            (r#"{route="other",method="GET",code="404"}"#, 1.0),
            (r#"{route="/health",method="other",code="405"}"#, 1.0),
            (r#"{route="/health",method="OPTIONS",code="204"}"#, 1.0),
            (r#"{route="/metrics",method="GET",code="200"}"#, prior_scrapes),
        ] {
            assert_eq!(m.val(&format!("http_requests_total{series}")), want, "http_requests_total{series}");
        }
        // Integer-valued samples carry no decimal point or exponent.
        for (name, _, v) in &m.lines {
            if (name.starts_with("master_") || name.starts_with("segment_"))
                || name == "http_requests_total"
                || name == "http_connections_open"
                || name.ends_with("_bucket")
                || name.ends_with("_count")
            {
                assert!(is_integer_text(v), "{name} printed as {v:?}");
            }
        }
    });
}

#[test]
fn process_metrics_follow_the_process() {
    for_each_runtime(|_| {
        let s = Server::start(&["--threads", "2", "--global-segment-size", "64MiB"]);
        let first = s.metrics();
        let cpu0 = first.val("process_cpu_seconds_total");
        // Work for the server: puts touch segment pages (RSS) and burn CPU.
        let value = vec![b'x'; 64 << 10];
        for i in 0..200 {
            let r = s.request("PUT", &format!("/api/put/proc-{i}"), &[], &value);
            assert_eq!(r.status, 200, "{}", r.text());
        }
        for _ in 0..20 {
            // Scrapes land on either worker: each must see the whole process.
            let m = s.metrics();
            let cpu = m.val("process_cpu_seconds_total");
            assert!(cpu > cpu0, "CPU time must grow with work: {cpu0} then {cpu}");
            let text = m.raw_value("process_cpu_seconds_total").unwrap().to_string();
            let decimals = text.split('.').nth(1).map_or(0, str::len);
            assert!(decimals <= 6, "whole microseconds, got {text}");
            // 200 values of 64 KiB were written into the segment's pages.
            assert!(m.val("process_resident_memory_bytes") >= first.val("process_resident_memory_bytes") + 8e6);
        }
    });
}

#[test]
fn metrics_segment_series_follow_segments_and_escape_labels() {
    for_each_runtime(|_| {
        let s = Server::start(&["--node-name", "n\"o\\d\ne", "--global-segment-size", "16MiB"]);
        let m = s.metrics();
        assert!(
            m.text.contains("segment_total_capacity_bytes{segment=\"n\\\"o\\\\d\\ne\"} 16777216\n"),
            "escaped label value expected:\n{}",
            m.text
        );
        assert!(m.text.contains("segment_allocated_bytes{segment=\"n\\\"o\\\\d\\ne\"} 0\n"));
        // Unmount the only segment: the node's series disappear.
        let id = s.segments()[0]["segment_id"].as_str().unwrap().to_string();
        s.post("/api/unmount", &format!(r#"{{"segment_ids":"{id}"}}"#)).assert_json(200, r#"{"status":"success"}"#);
        let m = s.metrics();
        assert!(m.family_lines("segment_allocated_bytes").is_empty(), "{}", m.text);
        assert!(m.family_lines("segment_total_capacity_bytes").is_empty());
        assert_eq!(m.types["segment_allocated_bytes"], vec!["gauge".to_string()]);
        assert_eq!(m.val("master_total_capacity_bytes"), 0.0);
    });
}

// ---------------------------------------------------------------------------------------------
// /metrics/summary
// ---------------------------------------------------------------------------------------------

/// Parses `<a>/<b>` pairs like `Put=3.57/3.57`.
fn two_decimals(s: &str) -> bool {
    let Some((i, f)) = s.split_once('.') else {
        return false;
    };
    is_integer_text(i) && f.len() == 2 && is_integer_text(f)
}

fn latency_ok(s: &str) -> bool {
    const BOUNDS: &[&str] = &[
        "0.10", "0.25", "0.50", "1.00", "2.50", "5.00", "10.00", "25.00", "50.00", "100.00", "250.00", "500.00",
        "1000.00", "2500.00", "5000.00", "10000.00",
    ];
    s == ">10000.00 ms" || s.strip_suffix(" ms").is_some_and(|v| BOUNDS.contains(&v))
}

/// Checks the shape of lines 5-7 and returns (window, line-5 rates, line-7 pairs).
fn summary_rates(lines: &[&str]) -> (f64, Vec<f64>, Vec<(String, f64, f64)>) {
    let l5 = lines[4].strip_prefix("HTTP Requests (per sec, last ").unwrap_or_else(|| panic!("line 5 {:?}", lines[4]));
    let (w, rest) = l5.split_once(" s): ").expect("line 5 window");
    assert!(two_decimals(w), "window {w:?}");
    let window: f64 = w.parse().unwrap();
    assert!((0.0..=10.5).contains(&window), "window {window}");
    let mut rates = Vec::new();
    for (part, name) in rest.split(", ").zip(["total", "4xx", "5xx"]) {
        let v = part.strip_prefix(&format!("{name}=")).unwrap_or_else(|| panic!("line 5 {:?}", lines[4]));
        assert!(two_decimals(v), "{v:?}");
        rates.push(v.parse().unwrap());
    }
    assert_eq!(rates.len(), 3, "line 5 {:?}", lines[4]);

    let l6 = lines[5]
        .strip_prefix(&format!("HTTP Latency (last {w} s): "))
        .unwrap_or_else(|| panic!("line 6 {:?} (window {w})", lines[5]));
    if l6 != "p50=n/a, p99=n/a" {
        let (p50, p99) = l6.split_once(", ").expect("line 6");
        let p50 = p50.strip_prefix("p50=").expect("p50");
        let p99 = p99.strip_prefix("p99=").expect("p99");
        assert!(latency_ok(p50) && latency_ok(p99), "line 6 {l6:?}");
    }

    let l7 =
        lines[6].strip_prefix("Store Ops (Success/Total per sec): ").unwrap_or_else(|| panic!("line 7 {:?}", lines[6]));
    let mut ops = Vec::new();
    let names = ["Put", "Get", "Exist", "Remove", "RemoveAll", "Mount", "Unmount"];
    let parts: Vec<&str> = l7.split(", ").collect();
    assert_eq!(parts.len(), names.len(), "line 7 {l7:?}");
    for (part, name) in parts.iter().zip(names) {
        let v = part.strip_prefix(&format!("{name}=")).unwrap_or_else(|| panic!("line 7 {l7:?}"));
        let (a, b) = v.split_once('/').expect("a/b");
        assert!(two_decimals(a) && two_decimals(b), "line 7 {l7:?}");
        ops.push((name.to_string(), a.parse().unwrap(), b.parse().unwrap()));
    }
    (window, rates, ops)
}

fn summary(s: &Server) -> String {
    let r = s.get("/metrics/summary");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), Some(CT_PLAIN));
    let t = r.text();
    assert!(t.ends_with('\n'), "{t:?}");
    assert_eq!(t.matches('\n').count(), 8, "exactly eight lines: {t:?}");
    t
}

#[test]
fn metrics_summary_empty_server() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let t = summary(&s);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Mem Storage: 0 B / 0 B");
        assert_eq!(lines[1], "Keys: 0");
        assert_eq!(lines[2], "Segments: 0 (mounted: 0, unmounting: 0), nodes: 0");
        assert_eq!(lines[3], "Clients: 1");
        let (_, rates, ops) = summary_rates(&lines);
        // Nothing was answered before this request (a request does not count itself).
        assert_eq!(rates, vec![0.0, 0.0, 0.0], "{t}");
        assert!(lines[5].ends_with("p50=n/a, p99=n/a"), "{t}");
        assert!(ops.iter().all(|(_, a, b)| *a == 0.0 && *b == 0.0), "{t}");
        assert_eq!(lines[7], "Eviction: Success/Attempts=0/0, keys=0, size=0 B");
    });
}

#[test]
fn metrics_summary_values() {
    for_each_runtime(|_| {
        let started = Instant::now();
        let s = Server::start(&["--global-segment-size", "32MiB"]);
        // Exactly these requests before the first summary: 3 puts, 1 GET hit, 1 GET miss.
        assert_eq!(s.put_raw("a", &[b'a'; 1023]).status, 200);
        assert_eq!(s.put_raw("b", &[b'b'; 513]).status, 200);
        assert_eq!(s.put_raw("c", &vec![b'c'; 1048576 - 1536]).status, 200);
        assert_eq!(s.get_value("a").status, 200);
        assert_eq!(s.get_value("zz").status, 404);
        thread::sleep(Duration::from_millis(200));
        let in_first_window = started.elapsed() < Duration::from_secs(8);
        let t = summary(&s);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Mem Storage: 1.00 MB / 32.00 MB (3.1%)", "{t}");
        assert_eq!(lines[1], "Keys: 3");
        assert_eq!(lines[2], "Segments: 1 (mounted: 1, unmounting: 0), nodes: 1");
        assert_eq!(lines[3], "Clients: 1");
        assert_eq!(lines[7], "Eviction: Success/Attempts=0/0, keys=0, size=0 B");
        let (w, rates, ops) = summary_rates(&lines);
        if in_first_window && w >= 0.15 {
            // The window starts at process start: rate × window recovers the counts.
            let n = |rate: f64| (rate * w).round();
            assert_eq!(n(rates[0]), 5.0, "total {t}");
            assert_eq!(n(rates[1]), 1.0, "4xx {t}");
            assert_eq!(rates[2], 0.0, "5xx {t}");
            let op = |name: &str| ops.iter().find(|o| o.0 == name).unwrap().clone();
            let put = op("Put");
            assert_eq!((n(put.1), n(put.2)), (3.0, 3.0), "{t}");
            let get = op("Get");
            assert_eq!((n(get.1), n(get.2)), (1.0, 2.0), "{t}");
            assert_eq!((op("Exist").2, op("Remove").2, op("Unmount").2), (0.0, 0.0, 0.0));
            assert!(!lines[5].contains("n/a"), "5 observations: {t}");
        }

        // Byte formats.
        s.remove("c").assert_json(200, r#"{"status":"success"}"#);
        assert_eq!(summary(&s).lines().next().unwrap(), "Mem Storage: 1.50 KB / 32.00 MB (0.0%)");
        s.remove("b").assert_json(200, r#"{"status":"success"}"#);
        assert_eq!(summary(&s).lines().next().unwrap(), "Mem Storage: 1023 B / 32.00 MB (0.0%)");

        // A gracefully unmounting segment: counted in capacity and in `unmounting`.
        let id = s.mount(16777216)[0].clone();
        s.post("/api/unmount", &format!(r#"{{"segment_ids":["{id}"],"grace_period_seconds":60}}"#))
            .assert_json(200, r#"{"status":"success"}"#);
        let t = summary(&s);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Mem Storage: 1023 B / 48.00 MB (0.0%)");
        assert_eq!(lines[1], "Keys: 1");
        assert_eq!(lines[2], "Segments: 2 (mounted: 1, unmounting: 1), nodes: 1");
    });
}

// ---------------------------------------------------------------------------------------------
// /health
// ---------------------------------------------------------------------------------------------

#[test]
fn health_plain_and_json() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let json_ok = r#"{"status":"ok","role":"leader","ha_state":"serving","service_ready":true,"leader_address":null,"view_version":null}"#;
        s.get("/health").assert_plain(200, "OK");
        s.get("/health?verbose=1").assert_plain(200, "OK");
        for accept in [
            "application/json",
            "APPLICATION/JSON",
            "application/json; charset=utf-8",
            "text/html, application/json;q=0.9",
            "text/plain;q=0.5, application/json",
        ] {
            s.request("GET", "/health", &[("Accept", accept)], b"").assert_json(200, json_ok);
        }
        for accept in
            ["*/*", "text/plain", "application/json;q=0", "application/json; q=0", "application/jsonx", "text/html"]
        {
            s.request("GET", "/health", &[("Accept", accept)], b"").assert_plain(200, "OK");
        }
        let h = s.request("HEAD", "/health", &[("Accept", "application/json")], b"");
        assert_eq!(h.status, 200);
        assert_eq!(h.content_length(), Some(json_ok.len() as u64));
        assert_eq!(h.content_type(), Some(CT_JSON));
    });
}

// ---------------------------------------------------------------------------------------------
// /query_key
// ---------------------------------------------------------------------------------------------

fn e1(code: i32, msg: &str) -> String {
    format!(r#"{{"success":false,"error_code":{code},"error_message":"{msg}"}}"#)
}

/// Parses `0x...` base addresses.
fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.strip_prefix("0x").expect("0x prefix"), 16).expect("hex address")
}

#[test]
fn query_key_success_and_errors() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let node = s.default_node_name();
        s.put("my_object", "hello world");
        let r = s.query_key("my_object");
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let addr = v["data"][0]["buffer_address_"].as_u64().expect("address");
        r.assert_json(
            200,
            &format!(
                r#"{{"success":true,"data":[{{"transport_endpoint_":"{node}","buffer_address_":{addr},"size_":11,"protocol_":"tcp"}}]}}"#
            ),
        );
        let seg = &s.segments()[0];
        let base = hex(seg["base_address"].as_str().unwrap());
        let size = seg["size_bytes"].as_u64().unwrap();
        assert!(addr >= base && addr + 11 <= base + size, "replica inside segment");

        // Errors.
        let missing = e1(-600, "Missing key query parameter");
        for target in ["/query_key", "/query_key?key=", "/query_key?other=1", "/query_key?key&key=my_object"] {
            s.get(target).assert_json(400, &missing);
        }
        let long = "a".repeat(4097);
        s.get(&format!("/query_key?key={long}")).assert_json(400, &e1(-600, "Invalid key: must be at most 4096 bytes"));
        for (k, msg) in [
            ("%01", "Invalid key: must not contain control characters"),
            ("a%7Fb", "Invalid key: must not contain control characters"),
            ("%C2%85", "Invalid key: must not contain control characters"),
            ("%FF", "Invalid key: must be valid UTF-8"),
        ] {
            s.get(&format!("/query_key?key={k}")).assert_json(400, &e1(-600, msg));
        }
        s.get("/query_key?key=nope").assert_json(404, &e1(-704, "OBJECT_NOT_FOUND"));
        // A 4096-byte key is valid (not found).
        s.get(&format!("/query_key?key={}", "a".repeat(4096))).assert_json(404, &e1(-704, "OBJECT_NOT_FOUND"));

        // Query decoding: `+` is a space, %XX either case, a stray % is literal, first wins.
        s.put("a b+c%", "v1");
        s.put("50%", "v2");
        s.put("50%zz", "v3");
        for target in [
            "/query_key?key=a+b%2Bc%25",
            "/query_key?key=a%20b%2bc%25",
            "/query_key?key=50%",
            "/query_key?key=50%zz",
            "/query_key?key=my_object&key=zzz",
            "/query_key?=x&key=my_object",
            "/query_key?x=1&key=my_object&y",
        ] {
            assert_eq!(s.get(target).status, 200, "{target}");
        }
        s.get("/query_key?key=zzz&key=my_object").assert_json(404, &e1(-704, "OBJECT_NOT_FOUND"));
        s.get("/query_key?Key=my_object").assert_json(400, &missing);

        // Read-only: no lease, no master_* counter.
        let before = s.metrics();
        s.remove("my_object").assert_json(200, r#"{"status":"success"}"#);
        let after = s.metrics();
        assert_eq!(
            after.val("master_get_replica_list_requests_total"),
            before.val("master_get_replica_list_requests_total")
        );
        assert_eq!(after.val("master_get_replica_list_requests_total"), 0.0);
    });
}

#[test]
fn query_key_reports_segment_protocol() {
    for_each_runtime(|_| {
        // Without the data plane the protocol is only a label (with it, `rdma` needs a device).
        let s = Server::start(&["--protocol", "rdma", "--te-port", "off", "--global-segment-size", "16MiB"]);
        s.put("k", "v");
        let v = s.query_key("k").json();
        assert_eq!(v["data"][0]["protocol_"], "rdma");
        assert_eq!(v["data"][0]["size_"], 1);
        let b = s.get("/batch_query_keys?keys=k").json();
        assert_eq!(b["data"]["k"]["values"][0]["buffer_descriptor"]["protocol_"], "rdma");
    });
}

// ---------------------------------------------------------------------------------------------
// /batch_query_keys
// ---------------------------------------------------------------------------------------------

fn e2(msg: &str) -> String {
    serde_json::json!({"success": false, "error": msg}).to_string()
}

fn descriptor(node: &str, addr: u64, size: u64, proto: &str) -> String {
    format!(
        r#"{{"transport_endpoint_":"{node}","buffer_descriptor":{{"transport_endpoint_":"{node}","buffer_address_":{addr},"size_":{size},"protocol_":"{proto}"}}}}"#
    )
}

#[test]
fn batch_query_keys_get() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let node = s.default_node_name();
        s.put("my_object", "hello world");
        let addr = s.query_key("my_object").json()["data"][0]["buffer_address_"].as_u64().unwrap();
        let d = descriptor(&node, addr, 11, "tcp");
        s.get("/batch_query_keys?keys=my_object,missing_key,my_object")
            .assert_json(
                200,
                &format!(
                    r#"{{"success":true,"data":{{"my_object":{{"ok":true,"values":[{d}]}},"missing_key":{{"ok":false,"error":"OBJECT_NOT_FOUND"}}}}}}"#
                ),
            );
        // Order of first appearance, not sorted.
        s.get("/batch_query_keys?keys=zeta,alpha,zeta").assert_json(
            200,
            r#"{"success":true,"data":{"zeta":{"ok":false,"error":"OBJECT_NOT_FOUND"},"alpha":{"ok":false,"error":"OBJECT_NOT_FOUND"}}}"#,
        );
        // The value is decoded, then split on `,`.
        s.get("/batch_query_keys?keys=my_object%2Cx+y").assert_json(
            200,
            &format!(
                r#"{{"success":true,"data":{{"my_object":{{"ok":true,"values":[{d}]}},"x y":{{"ok":false,"error":"OBJECT_NOT_FOUND"}}}}}}"#
            ),
        );
        // Non-ASCII written unescaped.
        s.put("ключ", "значение");
        let r = s.get(&format!("/batch_query_keys?keys={}", pct("ключ")));
        assert_eq!(r.status, 200);
        assert!(find(&r.body, "\"ключ\":{\"ok\":true".as_bytes()).is_some(), "{}", r.text());
        assert!(is_compact_json(&r.text()));
        // A 10000-key batch of duplicates collapses into one member.
        // (10000 x "my_object," would not fit the 64 KiB request head: use a short key.)
        s.put("m", "v");
        let m_addr = s.query_key("m").json()["data"][0]["buffer_address_"].as_u64().unwrap();
        let dm = descriptor(&node, m_addr, 1, "tcp");
        let keys = vec!["m"; 10000].join(",");
        s.get(&format!("/batch_query_keys?keys={keys}"))
            .assert_json(200, &format!(r#"{{"success":true,"data":{{"m":{{"ok":true,"values":[{dm}]}}}}}}"#));

        // Errors.
        let none = e2("No keys provided. Use ?keys=key1,key2,...");
        s.get("/batch_query_keys").assert_json(400, &none);
        s.get("/batch_query_keys?keys=").assert_json(400, &none);
        s.get("/batch_query_keys?key=a").assert_json(400, &none);
        let keys = vec!["a"; 10001].join(",");
        s.get(&format!("/batch_query_keys?keys={keys}"))
            .assert_json(400, &e2("Too many keys: 10001 exceeds the limit of 10000"));
        let empty = e2("Invalid key: must not be empty");
        s.get("/batch_query_keys?keys=a,,b").assert_json(400, &empty);
        s.get("/batch_query_keys?keys=,").assert_json(400, &empty);
        s.get("/batch_query_keys?keys=a,").assert_json(400, &empty);
        s.get("/batch_query_keys?keys=a,%01").assert_json(400, &e2("Invalid key: must not contain control characters"));
        s.get("/batch_query_keys?keys=%FF").assert_json(400, &e2("Invalid key: must be valid UTF-8"));
        s.get(&format!("/batch_query_keys?keys=a,{}", "b".repeat(4097)))
            .assert_json(400, &e2("Invalid key: must be at most 4096 bytes"));

        // Read-only.
        s.remove("my_object").assert_json(200, r#"{"status":"success"}"#);
    });
}

#[test]
fn batch_query_keys_limit_flag() {
    for_each_runtime(|_| {
        let s = Server::start(&["--max-batch-keys", "3"]);
        let ok = s.get("/batch_query_keys?keys=a,b,c");
        assert_eq!(ok.status, 200, "{}", ok.text());
        let too_many = e2("Too many keys: 4 exceeds the limit of 3");
        s.get("/batch_query_keys?keys=a,b,c,d").assert_json(400, &too_many);
        // Duplicates are counted, and the count is checked before the key rules.
        s.get("/batch_query_keys?keys=a,a,a,a").assert_json(400, &too_many);
        s.get("/batch_query_keys?keys=,,,").assert_json(400, &too_many);
        s.post("/batch_query_keys", r#"{"keys":["a","b","c",""]}"#).assert_json(400, &too_many);
    });
}

#[test]
fn batch_query_keys_post() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let node = s.default_node_name();
        s.put("a,b", "comma");
        let addr = s.query_key("a,b").json()["data"][0]["buffer_address_"].as_u64().unwrap();
        let d = descriptor(&node, addr, 5, "tcp");
        s.post("/batch_query_keys", r#"{"keys":["a,b","c","a,b"],"other":1}"#)
            .assert_json(
                200,
                &format!(
                    r#"{{"success":true,"data":{{"a,b":{{"ok":true,"values":[{d}]}},"c":{{"ok":false,"error":"OBJECT_NOT_FOUND"}}}}}}"#
                ),
            );
        // Keys are taken verbatim (no decoding); JSON output escapes `"` and `\`.
        s.request(
            "POST",
            "/batch_query_keys",
            &[("Content-Type", "text/plain")],
            br#"{"keys":["a%2Cb","q\"k\\"]}"#,
        )
        .assert_json(
            200,
            r#"{"success":true,"data":{"a%2Cb":{"ok":false,"error":"OBJECT_NOT_FOUND"},"q\"k\\":{"ok":false,"error":"OBJECT_NOT_FOUND"}}}"#,
        );

        let malformed = e2("Malformed JSON body");
        for body in [
            &b""[..],
            b"{",
            b"{\"keys\":[\"a\"]",
            b"{\"keys\":[\"a\"],\"keys\":[\"b\"]}",
            b"\xff\xfe",
            b"{\"keys\":[\"\xff\"]}",
            b"keys=a",
        ] {
            s.request("POST", "/batch_query_keys", &[], body).assert_json(400, &malformed);
        }
        let not_obj = e2("Request body must be a JSON object");
        for body in ["[]", "[\"a\"]", "1", "\"a\"", "null", "true"] {
            s.post("/batch_query_keys", body).assert_json(400, &not_obj);
        }
        let none = e2("No keys provided. Use ?keys=key1,key2,...");
        for body in ["{}", r#"{"keys":null}"#, r#"{"keys":[]}"#] {
            s.post("/batch_query_keys", body).assert_json(400, &none);
        }
        let bad = e2("Invalid keys: must be an array of strings");
        for body in [
            r#"{"keys":"a"}"#,
            r#"{"keys":1}"#,
            r#"{"keys":{"a":1}}"#,
            r#"{"keys":[1]}"#,
            r#"{"keys":["a",null]}"#,
            r#"{"keys":["a",["b"]]}"#,
        ] {
            s.post("/batch_query_keys", body).assert_json(400, &bad);
        }
        s.post("/batch_query_keys", r#"{"keys":[""]}"#).assert_json(400, &e2("Invalid key: must not be empty"));
        s.post("/batch_query_keys", r#"{"keys":["ok","a\u0001"]}"#)
            .assert_json(400, &e2("Invalid key: must not contain control characters"));
        s.post("/batch_query_keys", &format!(r#"{{"keys":["{}"]}}"#, "x".repeat(4097)))
            .assert_json(400, &e2("Invalid key: must be at most 4096 bytes"));
    });
}

// ---------------------------------------------------------------------------------------------
// /get_all_keys
// ---------------------------------------------------------------------------------------------

#[test]
fn get_all_keys_listing_and_framing() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let r = s.get("/get_all_keys");
        r.assert_plain(200, "");
        assert_eq!(r.framing, Framing::Chunked, "{:?}", r.headers);
        assert!(r.header("content-length").is_none());

        for k in ["b", "é", "ab", "B", "a b", "a", "key-ü", "Z"] {
            s.put(k, "v");
        }
        s.put("b", "replaced"); // no duplicates
        let r = s.get("/get_all_keys");
        assert_eq!(r.framing, Framing::Chunked);
        assert_eq!(r.content_type(), Some(CT_PLAIN));
        assert_eq!(r.text(), "B\nZ\na\na b\nab\nb\nkey-ü\né\n");

        // HTTP/1.0: close-delimited.
        let mut c = s.conn();
        c.send(b"GET /get_all_keys HTTP/1.0\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.framing, Framing::Close, "{:?}", r.headers);
        assert!(r.header("transfer-encoding").is_none());
        assert!(r.header("content-length").is_none());
        assert!(r.closes());
        assert_eq!(r.text(), "B\nZ\na\na b\nab\nb\nkey-ü\né\n");
        assert_eq!(r.content_type(), Some(CT_PLAIN));

        // Keep-alive after a chunked listing (framing was complete).
        let mut c = s.conn();
        c.send(b"GET /get_all_keys HTTP/1.1\r\n\r\nGET /get_all_keys?prefix=a HTTP/1.1\r\n\r\n");
        assert_eq!(c.read_response().text(), "B\nZ\na\na b\nab\nb\nkey-ü\né\n");
        assert_eq!(c.read_response().text(), "a\na b\nab\n");
    });
}

#[test]
fn get_all_keys_paging() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        for k in ["b1", "a3", "a1", "a2"] {
            s.put(k, "v");
        }
        for (q, want) in [
            ("", "a1\na2\na3\nb1\n"),
            ("?prefix=a&limit=2", "a1\na2\n"),
            ("?prefix=a&limit=2&after=a2", "a3\n"),
            ("?prefix=a&limit=2&after=a3", ""),
            ("?after=a2", "a3\nb1\n"),
            ("?after=a", "a1\na2\na3\nb1\n"),
            ("?after=a25", "a3\nb1\n"),
            ("?prefix=b&after=a", "b1\n"),
            ("?prefix=zzz", ""),
            ("?prefix=%61", "a1\na2\na3\n"),
            ("?limit=1", "a1\n"),
            ("?limit=%32", "a1\na2\n"),
            ("?limit=", "a1\na2\na3\nb1\n"),
            ("?limit=4294967296", "a1\na2\na3\nb1\n"),
            ("?prefix=", "a1\na2\na3\nb1\n"),
            ("?limit=3&limit=x", "a1\na2\na3\n"),
        ] {
            let r = s.get(&format!("/get_all_keys{q}"));
            r.assert_plain(200, want);
        }
        for bad in ["0", "-1", "abc", "4294967297", "1.5", "1e3", "%201", "99999999999999999999999"] {
            let r = s.get(&format!("/get_all_keys?limit={bad}"));
            r.assert_plain(400, "Invalid limit parameter");
        }
        // Paging loop as a client does it.
        let mut after = String::new();
        let mut all = Vec::new();
        loop {
            let r = s.get(&format!("/get_all_keys?limit=3&after={}", pct(&after)));
            let page: Vec<String> = r.text().lines().map(str::to_string).collect();
            let n = page.len();
            if let Some(last) = page.last() {
                after = last.clone();
            }
            all.extend(page);
            if n < 3 {
                break;
            }
        }
        assert_eq!(all, ["a1", "a2", "a3", "b1"]);
    });
}

// ---------------------------------------------------------------------------------------------
// /get_all_segments, /query_segment
// ---------------------------------------------------------------------------------------------

#[test]
fn get_all_segments_and_query_segment() {
    for_each_runtime(|_| {
        let bare = Server::start(&[]);
        bare.get("/get_all_segments").assert_plain(200, "");
        bare.get("/query_segment?segment=x").assert_plain(404, "segment not found");

        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let node = s.default_node_name();
        let id2 = s.mount(16777216)[0].clone();
        s.get("/get_all_segments").assert_plain(200, &format!("{node}\n"));
        s.put("k", "hello world");

        let q = format!("/query_segment?segment={}", pct(&node));
        s.get(&q).assert_plain(200, &format!("{node}\nUsed(bytes): 11\nCapacity(bytes): 33554432\n"));
        // Undecoded `:` works as well.
        s.get(&format!("/query_segment?segment={node}"))
            .assert_plain(200, &format!("{node}\nUsed(bytes): 11\nCapacity(bytes): 33554432\n"));
        for t in ["/query_segment", "/query_segment?segment=", "/query_segment?seg=x"] {
            s.get(t).assert_plain(400, "Missing segment query parameter");
        }
        s.get("/query_segment?segment=127.0.0.1").assert_plain(404, "segment not found");

        // A gracefully unmounting segment is excluded.
        s.post("/api/unmount", &format!(r#"{{"segment_ids":"{id2}","grace_period_seconds":60}}"#))
            .assert_json(200, r#"{"status":"success"}"#);
        let used_mounted: u64 = s
            .segments()
            .iter()
            .filter(|x| x["status"] == "MOUNTED")
            .map(|x| x["allocator_used_bytes"].as_u64().unwrap())
            .sum();
        s.get(&q).assert_plain(200, &format!("{node}\nUsed(bytes): {used_mounted}\nCapacity(bytes): 16777216\n"));
        s.get("/get_all_segments").assert_plain(200, &format!("{node}\n"));
        // Unmount the other one too: no MOUNTED segment is left.
        let others: Vec<String> = s
            .segments()
            .iter()
            .filter(|x| x["status"] == "MOUNTED")
            .map(|x| x["segment_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(others.len(), 1);
        s.post("/api/unmount", &format!(r#"{{"segment_ids":["{}"],"grace_period_seconds":60}}"#, others[0]))
            .assert_json(200, r#"{"status":"success"}"#);
        s.get("/get_all_segments").assert_plain(200, "");
        s.get(&q).assert_plain(404, "segment not found");
    });
}

// ---------------------------------------------------------------------------------------------
// /get_segments_detail
// ---------------------------------------------------------------------------------------------

/// Checks one segment object: member order and invariant fields; returns (base, size).
fn check_segment(seg: &Value, node: &str) -> (u64, u64) {
    let keys: Vec<&str> = seg.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, SEGMENT_FIELDS, "member order");
    assert_eq!(seg["segment_name"], node);
    assert_eq!(seg["te_endpoint"], node);
    assert!(is_uuid_v4(seg["segment_id"].as_str().unwrap()), "{seg}");
    assert!(is_uuid_v4(seg["client_id"].as_str().unwrap()), "{seg}");
    let base = seg["base_address"].as_str().unwrap();
    let digits = base.strip_prefix("0x").expect("0x prefix");
    assert!(
        !digits.is_empty()
            && digits.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            && (digits == "0" || !digits.starts_with('0')),
        "base_address {base:?}"
    );
    let size = seg["size_bytes"].as_u64().unwrap();
    assert_eq!(seg["allocator_capacity_bytes"].as_u64(), Some(size));
    let used = seg["allocator_used_bytes"].as_u64().unwrap();
    let pct = seg["allocator_usage_percent"].as_f64().expect("number");
    let want = used as f64 * 100.0 / size as f64;
    assert!((pct - want).abs() <= 1e-9 * want.max(1.0), "{pct} vs {want}");
    (hex(base), size)
}

#[test]
fn get_segments_detail_contents() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        s.get("/get_segments_detail").assert_json(200, r#"{"total_segments":0,"segments":[]}"#);
        let node = s.default_node_name();
        let a = s.mount(16777216)[0].clone();
        let r = s.post("/api/mount", r#"{"size":16777217,"protocol":"rdma","location":"rack-1"}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        let b = r.json()["segment_ids"][0].as_str().unwrap().to_string();
        s.put("k", "hello world");

        let r = s.get("/get_segments_detail");
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type(), Some(CT_JSON));
        assert!(is_compact_json(&r.text()), "{}", r.text());
        let v = r.json();
        let top: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(top, ["total_segments", "segments"]);
        let segs = v["segments"].as_array().unwrap();
        assert_eq!(v["total_segments"], 2);
        assert_eq!(segs.len(), 2);
        let ids: Vec<String> = segs.iter().map(|x| x["segment_id"].as_str().unwrap().to_string()).collect();
        let mut want_ids = vec![a.clone(), b.clone()];
        want_ids.sort();
        assert_eq!(ids, want_ids, "sorted by segment_id within one name");
        let mut ranges = Vec::new();
        for seg in segs {
            ranges.push(check_segment(seg, &node));
            assert_eq!(seg["client_id"], segs[0]["client_id"], "one node, one client id");
            assert_eq!(seg["status"], "MOUNTED");
            let id = seg["segment_id"].as_str().unwrap();
            if id == a {
                assert_eq!(seg["size_bytes"], 16777216);
                assert_eq!(seg["size_human"], "16 MiB");
                assert_eq!(seg["protocol"], "tcp");
            } else {
                assert_eq!(seg["size_bytes"], 33554432);
                assert_eq!(seg["size_human"], "32 MiB");
                assert_eq!(seg["protocol"], "rdma");
            }
        }
        let used: Vec<u64> = segs.iter().map(|x| x["allocator_used_bytes"].as_u64().unwrap()).collect();
        assert_eq!(used.iter().sum::<u64>(), 11);
        assert!(used.contains(&0) && used.contains(&11));
        ranges.sort();
        assert!(ranges[0].0 + ranges[0].1 <= ranges[1].0, "segments overlap");

        // Graceful unmount shows up with its own status; usage still reported.
        s.post("/api/unmount", &format!(r#"{{"segment_ids":["{a}","{b}"],"grace_period_seconds":60}}"#))
            .assert_json(200, r#"{"status":"success"}"#);
        let segs = s.segments();
        assert_eq!(segs.len(), 2);
        for seg in &segs {
            check_segment(seg, &node);
            assert_eq!(seg["status"], "GRACEFULLY_UNMOUNTING");
        }
        assert_eq!(segs.iter().map(|x| x["allocator_used_bytes"].as_u64().unwrap()).sum::<u64>(), 11);
    });
}

#[test]
fn get_segments_detail_size_human() {
    for_each_runtime(|_| {
        let page = page_size().to_string();
        let s = Server::start(&["--mount-alignment", &page]);
        let cases: &[(u64, &str)] = &[
            (65536, "64 KiB"),
            (1310720, "1.25 MiB"),
            (1572864, "1.5 MiB"),
            (3145728, "3 MiB"),
            (16515072, "15.75 MiB"),
        ];
        let mut ids = Vec::new();
        for (size, _) in cases {
            ids.push(s.mount(*size)[0].clone());
        }
        let segs = s.segments();
        for ((size, human), id) in cases.iter().zip(&ids) {
            let seg = segs.iter().find(|x| x["segment_id"] == id.as_str()).expect("segment listed");
            assert_eq!(seg["size_bytes"].as_u64(), Some(*size));
            assert_eq!(seg["size_human"], *human, "size {size}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Upstream's /api/v1/* admin endpoints and /kv_events/status (upstream-behavior §1.4.7-1.4.10)
// ---------------------------------------------------------------------------------------------

#[test]
fn upstream_v1_segment_status_remove_all_tenant_quotas_and_kv_events_status() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB", "--admin-port", "0"]);
        let node = s.default_node_name();
        // Segment status: OK (1) while mounted; 400 without a name; 404 for an unknown one.
        s.get(&format!("/api/v1/segments/status?segment={}", pct(&node))).assert_json(
            200,
            &format!(
                r#"{{"success":true,"segment":"{node}","status":1,"status_name":"OK","error_code":0,"error_message":""}}"#
            ),
        );
        s.get("/api/v1/segments/status").assert_json(
            400,
            r#"{"success":false,"error_code":-600,"error_message":"Missing segment query parameter"}"#,
        );
        s.get("/api/v1/segments/status?segment=nope:1")
            .assert_json(404, r#"{"success":false,"error_code":-101,"error_message":"SEGMENT_NOT_FOUND"}"#);
        // A gracefully unmounting segment: 4.
        let id2 = s.mount(16777216)[0].clone();
        s.post("/api/unmount", &format!(r#"{{"segment_ids":"{id2}","grace_period_seconds":60}}"#))
            .assert_json(200, r#"{"status":"success"}"#);
        assert_eq!(s.get(&format!("/api/v1/segments/status?segment={node}")).json()["status"], 1, "one still OK");

        // remove_all: leased values are kept unless forced (raw `true` or `1` only).
        s.put("a", "1");
        s.put("b", "2");
        assert_eq!(s.get_value("a").status, 200); // leases `a`
        s.request("POST", "/api/v1/remove_all?force=yes", &[], b"")
            .assert_json(200, r#"{"success":true,"removed_count":1}"#);
        s.request("POST", "/api/v1/remove_all?force=1&tenant_id=other", &[], b"")
            .assert_json(200, r#"{"success":true,"removed_count":0}"#);
        s.request("POST", "/api/v1/remove_all?force=true&tenant_id=default", &[], b"")
            .assert_json(200, r#"{"success":true,"removed_count":1}"#);
        assert_eq!(s.get("/api/v1/remove_all").status, 405);
        let m = s.metrics();
        assert_eq!(m.val("master_remove_all_requests_total"), 3.0);

        // Tenant quotas: input validated, then "not in this mode" (a single-tenant master).
        let mode = r#"{"success":false,"error_code":-1011,"error_message":"UNAVAILABLE_IN_CURRENT_MODE: tenant quotas need --enable-multi-tenants"}"#;
        s.get("/api/v1/tenant_quotas").assert_json(409, mode);
        s.json("PUT", "/api/v1/tenant_quotas", r#"{"requested_quota_bytes":1}"#)
            .assert_json(400, r#"{"success":false,"error_code":-600,"error_message":"Missing or invalid tenant_id"}"#);
        s.json("PUT", "/api/v1/tenant_quotas?tenant_id=t1", "{")
            .assert_json(400, r#"{"success":false,"error_code":-600,"error_message":"Invalid JSON body"}"#);
        for bad in [r#"{"requested_quota_bytes":0}"#, r#"{"requested_quota_bytes":9223372036854775808}"#, "{}"] {
            s.json("PUT", "/api/v1/tenant_quotas?tenant_id=t1", bad).assert_json(
                400,
                r#"{"success":false,"error_code":-600,"error_message":"Tenant quota must be in [1, 2^63 - 1] bytes"}"#,
            );
        }
        s.json("PUT", "/api/v1/tenant_quotas?tenant_id=t1", r#"{"requested_quota_bytes":1048576}"#)
            .assert_json(409, mode);
        s.request("DELETE", "/api/v1/tenant_quotas", &[], b"")
            .assert_json(400, r#"{"success":false,"error_code":-600,"error_message":"Missing or invalid tenant_id"}"#);
        s.request("DELETE", "/api/v1/tenant_quotas?tenant_id=t1", &[], b"").assert_json(409, mode);

        // KV events: no publisher.
        let kv = r#"{"enabled":false,"published_batches":0,"published_events":0,"dropped_events":0,"skipped_unparsed_keys":0}"#;
        s.get("/kv_events/status").assert_json(200, kv);
        // Also on the admin listener, as upstream serves them on its admin port.
        let mut c = s.admin_conn();
        c.send(b"GET /kv_events/status HTTP/1.1\r\n\r\n");
        c.read_response().assert_json(200, kv);
        c.send(format!("GET /api/v1/segments/status?segment={node} HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!(c.read_response().status, 200);
    });
}
