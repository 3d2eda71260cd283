//! Tests of the API layer.
//!
//! `pure` tests exercise functions that need neither the store nor the codec. `handler`
//! tests drive [`Service`] through the [`Handler`] trait on a [`FakePlatform`]-backed
//! [`Master`]; they need the store implementation.

use std::borrow::Cow;
use std::time::Duration;

use crate::http::Method;
use crate::route::Route;

use super::error::{ApiError, Shape};
use super::json::{self, Json, UInt};
use super::metrics::{self, latency_quantile, size_human, summary_bytes};
use super::params::{self, percent_decode, query_param, validate_key, KeyError};
use super::router::{self, allow, allowed, route_of};
use super::Listener;
use crate::stats::{Ctr, Snapshot, Totals, WorkerStats, NDUR};

fn body_str(r: &crate::http::Response) -> String {
    match &r.body {
        crate::http::Body::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        crate::http::Body::Empty => String::new(),
        other => panic!("unexpected body {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Query strings and path parameters (SPEC §1.4).

#[test]
fn percent_decoding() {
    assert_eq!(&*percent_decode("a%2Fb", false), b"a/b");
    assert_eq!(&*percent_decode("a%2fb", false), b"a/b");
    assert_eq!(&*percent_decode("%20x%25", false), b" x%");
    assert_eq!(&*percent_decode("a+b", false), b"a+b");
    assert_eq!(&*percent_decode("a+b", true), b"a b");
    assert_eq!(&*percent_decode("%2B", true), b"+");
    assert_eq!(&*percent_decode("%zz%4", false), b"%zz%4");
    assert_eq!(&*percent_decode("%", false), b"%");
    assert_eq!(&*percent_decode("%%41", false), b"%A");
    assert_eq!(&*percent_decode("%e9", false), &[0xe9u8][..]);
    assert!(matches!(percent_decode("plain", true), Cow::Borrowed(_)));
}

#[test]
fn query_parameters() {
    let q = Some("a=1&key=first&key=second");
    assert_eq!(query_param(q, "key").as_deref(), Some(&b"first"[..]));
    assert_eq!(query_param(q, "a").as_deref(), Some(&b"1"[..]));
    assert_eq!(query_param(q, "missing"), None);
    assert_eq!(query_param(None, "key"), None);
    // Empty == missing; the first occurrence wins even when empty.
    assert_eq!(query_param(Some("key=&key=x"), "key"), None);
    assert_eq!(query_param(Some("key"), "key"), None);
    // Names are decoded too, and match case-sensitively.
    assert_eq!(query_param(Some("k%65y=v"), "key").as_deref(), Some(&b"v"[..]));
    assert_eq!(query_param(Some("KEY=v"), "key"), None);
    // `+` is a space, the value splits at the first `=` only, empty names are ignored.
    assert_eq!(query_param(Some("key=a+b%2Bc=d"), "key").as_deref(), Some(&b"a b+c=d"[..]));
    assert_eq!(query_param(Some("=x&&key=v"), "key").as_deref(), Some(&b"v"[..]));
    assert_eq!(query_param(Some("key=%zz"), "key").as_deref(), Some(&b"%zz"[..]));
}

#[test]
fn key_rules_in_order() {
    assert_eq!(validate_key(b""), Err(KeyError::Empty));
    assert_eq!(validate_key(b"\xff"), Err(KeyError::NotUtf8));
    // Rule 2 before rule 3, rule 3 before rule 4.
    let mut long_bad = vec![b'a'; 5000];
    long_bad[10] = 0xff;
    assert_eq!(validate_key(&long_bad), Err(KeyError::NotUtf8));
    let mut long_ctl = vec![b'a'; 5000];
    long_ctl[10] = 0x01;
    assert_eq!(validate_key(&long_ctl), Err(KeyError::TooLong));
    assert_eq!(validate_key(&[b'a'; 4096]).map(str::len), Ok(4096));
    assert_eq!(validate_key(&[b'a'; 4097]), Err(KeyError::TooLong));
    for bad in ["a\u{0}", "\n", "x\u{1f}", "\u{7f}", "a\u{80}b", "\u{9f}"] {
        assert_eq!(validate_key(bad.as_bytes()), Err(KeyError::Control), "{bad:?}");
    }
    for ok in ["my_object", "a b", "é", "\u{a0}", "日本", "a/b", "%", "\u{100}"] {
        assert_eq!(validate_key(ok.as_bytes()), Ok(ok));
    }
    assert_eq!(KeyError::TooLong.message(), "Invalid key: must be at most 4096 bytes");
    assert_eq!(KeyError::Empty.message(), "Invalid key: must not be empty");
    assert_eq!(KeyError::NotUtf8.message(), "Invalid key: must be valid UTF-8");
    assert_eq!(KeyError::Control.message(), "Invalid key: must not contain control characters");
}

#[test]
fn path_keys_decode_percent_only() {
    assert_eq!(super::path_key("a%2Fb").as_deref(), Ok("a/b"));
    assert_eq!(super::path_key("a+b").as_deref(), Ok("a+b"));
    assert_eq!(super::path_key("a%20b").as_deref(), Ok("a b"));
    assert_eq!(super::path_key(""), Err(ApiError::invalid("Invalid key: must not be empty")));
    assert_eq!(super::path_key("%ff"), Err(ApiError::invalid("Invalid key: must be valid UTF-8")));
    assert_eq!(super::path_key("%0a"), Err(ApiError::invalid("Invalid key: must not contain control characters")));
    assert_eq!(super::path_key("%C3%A9").as_deref(), Ok("é"));
}

#[test]
fn uuids() {
    let id = params::parse_uuid("3f2b8c1e-9d4a-4e7b-8a61-52c0d9e7f114").unwrap();
    assert_eq!(params::parse_uuid("3F2B8C1E-9D4A-4E7B-8A61-52C0D9E7F114"), Some(id));
    let mut out = Vec::new();
    params::push_uuid(&mut out, id);
    assert_eq!(out, b"3f2b8c1e-9d4a-4e7b-8a61-52c0d9e7f114");
    assert_eq!(params::parse_uuid("00000000-0000-0000-0000-000000000000"), Some(uuid::Uuid::nil()));
    // Any version digit is accepted.
    assert!(params::parse_uuid("3f2b8c1e-9d4a-1e7b-8a61-52c0d9e7f114").is_some());
    for bad in [
        "abc",
        "",
        "3f2b8c1e9d4a4e7b8a6152c0d9e7f114",
        "{3f2b8c1e-9d4a-4e7b-8a61-52c0d9e7f114}",
        "urn:uuid:3f2b8c1e-9d4a-4e7b-8a61-52c0d9e7f114",
        "3f2b8c1e-9d4a-4e7b-8a61-52c0d9e7f11g",
        "3f2b8c1e-9d4a-4e7b-8a6152-c0d9e7f114",
        " 3f2b8c1e-9d4a-4e7b-8a61-52c0d9e7f114",
    ] {
        assert_eq!(params::parse_uuid(bad), None, "{bad}");
    }
}

#[test]
fn limit_parameter() {
    assert_eq!(params::parse_limit(b"1"), Some(1));
    assert_eq!(params::parse_limit(b"007"), Some(7));
    assert_eq!(params::parse_limit(b"4294967296"), Some(1 << 32));
    for bad in [&b"0"[..], b"4294967297", b"-1", b"+1", b"1.0", b"1e3", b"abc", b"", b" 1", b"99999999999999999999999"]
    {
        assert_eq!(params::parse_limit(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

fn head_with(method: Method, path: &str, query: Option<&str>, headers: &[(&str, &str)]) -> crate::http::RequestHead {
    crate::http::RequestHead {
        method,
        path: path.to_string(),
        query: query.map(str::to_string),
        version: crate::http::Version::Http11,
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect(),
        content_length: None,
        chunked: false,
        expect_continue: false,
    }
}

#[test]
fn accept_header() {
    let json = |v: &str| params::accepts_json(&head_with(Method::Get, "/health", None, &[("accept", v)]));
    assert!(json("application/json"));
    assert!(json("Application/JSON"));
    assert!(json("text/plain, application/json;q=0.5"));
    assert!(json("application/json; charset=utf-8"));
    assert!(json(" application/json ; q=1"));
    assert!(!json("application/json;q=0"));
    assert!(!json("application/json; q=0.000"));
    assert!(json("application/json;q=0.001"));
    assert!(!json("*/*"));
    assert!(!json("text/plain"));
    assert!(!json("application/jsonx"));
    assert!(!json("application/*"));
    assert!(!params::accepts_json(&head_with(Method::Get, "/health", None, &[])));
    // Any Accept field counts.
    assert!(params::accepts_json(&head_with(
        Method::Get,
        "/health",
        None,
        &[("accept", "text/plain"), ("accept", "application/json")]
    )));
}

// ---------------------------------------------------------------------------------------------
// JSON input and output.

#[test]
fn json_malformed_inputs() {
    for bad in [
        &b""[..],
        b"   ",
        b"{",
        b"{}x",
        b"[1,]",
        b"{\"a\":1,}",
        b"{'a':1}",
        b"{\"a\" 1}",
        b"nul",
        b"01",
        b"1.",
        b".5",
        b"-",
        b"1e",
        b"+1",
        b"\"\xff\"",
        b"\xef\xbb\xbf{}",
        b"\"a\nb\"",
        b"\"\\ud800\"",
        b"\"\\udc00\"",
        b"\"\\ud800\\u0041\"",
        b"\"\\x\"",
        b"\"\\u12\"",
        b"{\"a\":1,\"a\":2}",
        b"{\"a\":1,\"\\u0061\":2}",
        b"{\"x\":[{\"b\":1,\"b\":null}]}",
        b"NaN",
        b"[1 2]",
    ] {
        assert!(json::parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    // Deep nesting is refused rather than overflowing the stack.
    let deep = "[".repeat(100_000);
    assert!(json::parse(deep.as_bytes()).is_err());
    let ok_depth = format!("{}{}", "[".repeat(100), "]".repeat(100));
    assert!(json::parse(ok_depth.as_bytes()).is_ok());
}

#[test]
fn json_duplicates_many_members() {
    let mut s = String::from("{");
    for i in 0..100 {
        s.push_str(&format!("\"k{i}\":{i},"));
    }
    s.push_str("\"k50\":1}");
    assert!(json::parse(s.as_bytes()).is_err());
    let ok = s.replace("\"k50\":1}", "\"k100\":1}");
    assert!(json::parse(ok.as_bytes()).is_ok());
}

#[test]
fn json_values() {
    let v =
        json::parse(br#" { "a" : [1, -2.5e3, true, false, null, "x\u00e9\n\"\\\/"], "b": {}, "n": null } "#).unwrap();
    let Json::Array(a) = v.member("a").unwrap() else { panic!() };
    assert_eq!(a[0], Json::Number("1"));
    assert_eq!(a[1], Json::Number("-2.5e3"));
    assert_eq!(a[2], Json::Bool(true));
    assert_eq!(a[4], Json::Null);
    assert_eq!(a[5].as_str(), Some("xé\n\"\\/"));
    assert!(v.member("b").is_some());
    // null members are absent; missing members too.
    assert!(v.member("n").is_none());
    assert!(v.member("zz").is_none());
    // Surrogate pairs and raw non-ASCII.
    assert_eq!(json::parse(br#""\ud83d\ude00""#).unwrap().as_str(), Some("😀"));
    assert_eq!(json::parse("\"日本\"".as_bytes()).unwrap().as_str(), Some("日本"));
    // Strings without escapes borrow from the body.
    assert!(matches!(json::parse(br#""plain""#).unwrap(), Json::Str(Cow::Borrowed("plain"))));
    // A non-object top level is valid JSON.
    assert!(json::parse(b"[]").is_ok());
    assert!(json::parse(b"42").is_ok());
}

#[test]
fn json_string_scanning_at_every_offset() {
    for pos in 0..24 {
        let pad = "a".repeat(pos);
        let escaped = format!("\"{pad}\\n{pad}é\"");
        assert_eq!(json::parse(escaped.as_bytes()).unwrap().as_str(), Some(format!("{pad}\n{pad}é").as_str()));
        let plain = format!("\"{pad}\"");
        assert_eq!(json::parse(plain.as_bytes()).unwrap().as_str(), Some(pad.as_str()));
        for raw_ctl in ["\u{0}", "\u{1f}", "\n"] {
            let bad = format!("\"{pad}{raw_ctl}{pad}\"");
            assert!(json::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let unterminated = format!("\"{pad}");
        assert!(json::parse(unterminated.as_bytes()).is_err());
    }
}

#[test]
fn json_integers() {
    let int = |s: &str| json::parse(s.as_bytes()).unwrap().as_uint();
    assert_eq!(int("16"), UInt::Value(16));
    assert_eq!(int("0"), UInt::Value(0));
    assert_eq!(int("-0"), UInt::Value(0));
    assert_eq!(int("18446744073709551615"), UInt::Value(u64::MAX));
    assert_eq!(int("4611686018427387904"), UInt::Value(1 << 62));
    for not in [
        "16.0",
        "1.6e1",
        "1e2",
        "-1",
        "18446744073709551616",
        "1e30",
        "\"16\"",
        "true",
        "null",
        "[16]",
        "-9223372036854775809",
    ] {
        assert_eq!(int(not), UInt::Invalid, "{not}");
    }
}

#[test]
fn json_output() {
    let mut out = Vec::new();
    json::push_str(&mut out, "a\"b\\c\nd\u{1}é\u{7f}/日");
    assert_eq!(String::from_utf8(out).unwrap(), "\"a\\\"b\\\\c\\nd\\u0001é\u{7f}/日\"");
    let f = |v: f64| {
        let mut o = Vec::new();
        json::push_f64(&mut o, v);
        String::from_utf8(o).unwrap()
    };
    assert_eq!(f(0.0), "0.0");
    assert_eq!(f(6.25), "6.25");
    assert_eq!(f(100.0), "100.0");
    assert_eq!(f(1e-7), "0.0000001");
    let mut n = Vec::new();
    json::push_u64(&mut n, 0);
    n.push(b' ');
    json::push_u64(&mut n, u64::MAX);
    assert_eq!(n, b"0 18446744073709551615");
    assert_eq!(json::error_body("not found"), br#"{"error":"not found"}"#);
}

// ---------------------------------------------------------------------------------------------
// Sizes (SPEC §1.4).

#[test]
fn human_sizes() {
    for (n, s) in [
        (17179869184u64, "16 GiB"),
        (1610612736, "1.5 GiB"),
        (536870912, "512 MiB"),
        (1536, "1.5 KiB"),
        (11, "11 B"),
        (0, "0 B"),
        (1073741823, "1024 MiB"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1025, "1 KiB"),
        (1034, "1.01 KiB"),
        (16777216, "16 MiB"),
        (u64::MAX, "16 EiB"),
    ] {
        assert_eq!(size_human(n), s, "{n}");
    }
}

#[test]
fn summary_byte_format() {
    for (n, s) in [
        (0u64, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KB"),
        (1536, "1.50 KB"),
        (1048576, "1.00 MB"),
        (100663296, "96.00 MB"),
        (1 << 30, "1.00 GB"),
        (1 << 40, "1.00 TB"),
        (1 << 50, "1024.00 TB"),
    ] {
        assert_eq!(summary_bytes(n), s, "{n}");
    }
}

// ---------------------------------------------------------------------------------------------
// Routing (SPEC §2.3).

#[test]
fn routing_table() {
    fn main(p: &str) -> (Route, &str) {
        route_of(p, Listener::Main)
    }
    for r in Route::ALL {
        // The HA routes exist only on a highly available master (api/ha.rs route_of).
        let ha_only = matches!(r, Route::Role | Route::HaStatus | Route::Leader);
        if r == Route::Other || r.as_str().contains('{') || ha_only {
            continue;
        }
        assert_eq!(main(r.as_str()), (r, ""));
    }
    assert_eq!(main("/api/get/k"), (Route::Get, "k"));
    assert_eq!(main("/api/get/"), (Route::Get, ""));
    assert_eq!(main("/api/get/a%2Fb"), (Route::Get, "a%2Fb"));
    assert_eq!(main("/api/exist/k"), (Route::Exist, "k"));
    assert_eq!(main("/api/remove/k"), (Route::Remove, "k"));
    assert_eq!(main("/api/put/k"), (Route::PutRaw, "k"));
    assert_eq!(main("/api/put/"), (Route::PutRaw, ""));
    assert_eq!(main("/api/put"), (Route::PutJson, ""));
    assert_eq!(main("/api/remove_all"), (Route::RemoveAll, ""));
    for unknown in [
        "/api/get/a/b",
        "/api/get",
        "/metrics%2Fsummary",
        "/health/",
        "/Health",
        "/api/../health",
        "/",
        "",
        "/api",
        "/api/",
        "/api/remove_all/x",
        "/role",
        "/api/v1/remove_all/x",
        "*",
    ] {
        assert_eq!(main(unknown).0, Route::Other, "{unknown}");
    }
    // The admin listener serves only §4.
    assert_eq!(route_of("/health", Listener::Admin).0, Route::Health);
    assert_eq!(route_of("/get_segments_detail", Listener::Admin).0, Route::GetSegmentsDetail);
    for api in ["/api/mount", "/api/put", "/api/get/k", "/api/remove_all", "/api/put/k"] {
        assert_eq!(route_of(api, Listener::Admin).0, Route::Other, "{api}");
    }
}

#[test]
fn allow_lists() {
    assert_eq!(allow(Route::Health), "GET, HEAD, OPTIONS");
    assert_eq!(allow(Route::Get), "GET, HEAD, OPTIONS");
    assert_eq!(allow(Route::BatchQueryKeys), "GET, HEAD, POST, OPTIONS");
    assert_eq!(allow(Route::Mount), "POST, OPTIONS");
    assert_eq!(allow(Route::PutJson), "PUT, OPTIONS");
    assert_eq!(allow(Route::PutRaw), "PUT, OPTIONS");
    assert_eq!(allow(Route::Remove), "DELETE, OPTIONS");
    assert_eq!(allow(Route::RemoveAll), "DELETE, OPTIONS");
    assert_eq!(router::ALLOW_ALL, "GET, HEAD, POST, PUT, DELETE, OPTIONS");
    // `allowed` agrees with the lists, for every route and method.
    for r in Route::ALL.into_iter().filter(|&r| r != Route::Other) {
        for m in Method::ALL {
            let listed = allow(r).split(", ").any(|x| x == m.as_str());
            assert_eq!(allowed(r, m), listed, "{r:?} {m:?}");
        }
    }
    assert!(!allowed(Route::Health, Method::Other));
}

// ---------------------------------------------------------------------------------------------
// Error mapping (SPEC §1.4, §10).

#[test]
fn error_shapes() {
    let r = ApiError::invalid("Missing key query parameter").into_response(Route::QueryKey);
    assert_eq!((r.status, r.content_type), (400, Some(crate::api::CT_JSON)));
    assert_eq!(body_str(&r), r#"{"success":false,"error_code":-600,"error_message":"Missing key query parameter"}"#);
    let r = ApiError::ObjectNotFound.into_response(Route::QueryKey);
    assert_eq!(body_str(&r), r#"{"success":false,"error_code":-704,"error_message":"OBJECT_NOT_FOUND"}"#);
    let r = ApiError::ReplicaNotReady.into_response(Route::QueryKey);
    assert_eq!(
        (r.status, body_str(&r)),
        (404, r#"{"success":false,"error_code":-703,"error_message":"REPLICA_IS_NOT_READY"}"#.into())
    );
    let r = ApiError::invalid("No keys provided. Use ?keys=key1,key2,...").into_response(Route::BatchQueryKeys);
    assert_eq!(body_str(&r), r#"{"success":false,"error":"No keys provided. Use ?keys=key1,key2,..."}"#);
    let r = ApiError::ObjectNotFound.into_response(Route::Get);
    assert_eq!((r.status, body_str(&r)), (404, r#"{"error":"Key not found"}"#.into()));
    let r = ApiError::invalid("Invalid limit parameter").into_response(Route::GetAllKeys);
    assert_eq!(
        (r.status, r.content_type, body_str(&r)),
        (400, Some(crate::api::CT_TEXT), "Invalid limit parameter".into())
    );
    let r = ApiError::SegmentNotFound.into_response(Route::QuerySegment);
    assert_eq!((r.status, body_str(&r)), (404, "segment not found".into()));
    // Protocol-level errors are E3 on every route.
    let r = ApiError::NotFound.into_response(Route::Other);
    assert_eq!((r.status, body_str(&r)), (404, r#"{"error":"not found"}"#.into()));
    let r = ApiError::MethodNotAllowed.into_response(Route::QueryKey);
    assert_eq!((r.status, body_str(&r)), (405, r#"{"error":"method not allowed"}"#.into()));
    assert_eq!(r.headers, vec![("Allow", "GET, HEAD, OPTIONS".to_string())]);
    let r = ApiError::UnmountFailed(vec!["E21A9F70-3c6d-4b1e-a4f8-0d7c5b2e9a63".into(), "x".into()])
        .into_response(Route::Unmount);
    assert_eq!(
        (r.status, body_str(&r)),
        (404, r#"{"error":"Unmount failed for one or more segments","failed_segment_ids":["E21A9F70-3c6d-4b1e-a4f8-0d7c5b2e9a63","x"]}"#.into())
    );
    let r = ApiError::WriteAborted.into_response(Route::PutRaw);
    assert_eq!(
        (r.status, r.close, body_str(&r)),
        (503, true, r#"{"error":"Write aborted: segment unmounted"}"#.into())
    );
    for (e, status, msg) in [
        (ApiError::HasLease, 409, "Key has an active lease"),
        (ApiError::BeingWritten, 409, "Key is being written"),
        (ApiError::InsufficientStorage, 507, "Insufficient storage"),
        (ApiError::MountNoMemory, 507, "Allocate and mount failed: insufficient memory"),
        (ApiError::ShmNotFound("mooncake_segment".into()), 404, "Shared memory object not found: mooncake_segment"),
        (ApiError::MountFailed("Permission denied".into()), 500, "Mount failed: Permission denied"),
    ] {
        assert_eq!(e.status(), status);
        assert_eq!(e.message(Shape::Rest), msg);
    }
}

// ---------------------------------------------------------------------------------------------
// Counters, /metrics and /metrics/summary (SPEC §4.2, §9).

#[test]
fn worker_stats_sum() {
    let a = std::sync::Arc::new(WorkerStats::new());
    let b = std::sync::Arc::new(WorkerStats::new());
    a.record_response(Route::Health, Method::Get, 200, Duration::from_micros(100));
    b.record_response(Route::Health, Method::Get, 200, Duration::from_micros(101));
    b.record_response(Route::Other, Method::Other, 404, Duration::ZERO);
    a.record_response(Route::Get, Method::Get, 100, Duration::ZERO); // never counted
    a.record_response(Route::Get, Method::Get, 418, Duration::from_secs(11)); // overflow slot
    a.bump(Ctr::PutStart, 2);
    b.bump(Ctr::PutStart, 1);
    a.observe_value(4096);
    a.observe_value(4097);
    a.observe_value(1 << 40);
    let t = Totals::sum(&[a, b]);
    assert_eq!(
        t.requests,
        vec![
            (Route::Health, Method::Get, 200, 2),
            (Route::Get, Method::Get, 418, 1),
            (Route::Other, Method::Other, 404, 1)
        ]
    );
    let h = &t.durations[Route::Health.index()];
    assert_eq!((h[0], h[1]), (1, 1));
    assert_eq!(t.duration_sum_ns[Route::Health.index()], 201_000);
    assert_eq!(t.durations[Route::Get.index()][NDUR - 1], 1);
    assert_eq!(t.ctr(Ctr::PutStart), 3);
    assert_eq!(t.values[0], 1);
    assert_eq!(t.values[1], 1);
    assert_eq!(t.values[7], 1);
    assert_eq!(t.value_sum, 4096 + 4097 + (1 << 40));
    let s = Snapshot::of(&t, std::time::Instant::now());
    assert_eq!((s.http_total, s.http_4xx, s.http_5xx), (4, 2, 0));
    assert_eq!(s.latency.iter().sum::<u64>(), 4);
}

fn synthetic_gauges() -> crate::store::Gauges {
    crate::store::Gauges {
        key_count: 3,
        allocated_bytes: 1048576,
        total_capacity_bytes: 100663296,
        active_clients: 1,
        suspected_clients: 1,
        segments_draining: 0,
        segments_drained: 0,
        nodes: vec![
            crate::store::NodeGauge { name: "127.0.0.1:8080".into(), allocated: 11, capacity: 16777216 },
            crate::store::NodeGauge { name: "we\"ird\\no\nde".into(), allocated: 0, capacity: 1 },
        ],
        segments_total: 3,
        segments_mounted: 2,
        segments_unmounting: 1,
        nodes_mounted: 1,
        oldest_heartbeat_ns: None,
    }
}

#[test]
fn metrics_text() {
    let w = std::sync::Arc::new(WorkerStats::new());
    w.record_response(Route::PutJson, Method::Put, 200, Duration::from_micros(300));
    w.record_response(Route::PutJson, Method::Put, 200, Duration::from_secs(2));
    w.bump(Ctr::PutStart, 1);
    w.bump(Ctr::PutEnd, 1);
    w.observe_value(11);
    let totals = Totals::sum(&[w]);
    let gauges = synthetic_gauges();
    let store = crate::store::StoreCounters {
        put_revokes: 4,
        attempted_evictions: 3,
        successful_evictions: 3,
        evicted_keys: 6,
        evicted_bytes: 6291456,
        expired_clients: 1,
        suspected_clients: 3,
        recovered_clients: 2,
    };
    let mut out = Vec::new();
    metrics::render_metrics(
        &mut out,
        &metrics::Scrape {
            gauges: &gauges,
            store: &store,
            totals: &totals,
            connections_open: 2,
            process: crate::platform::ProcessSample { resident_bytes: 1 << 20, cpu_seconds: 0.5 },
            client_ttl: Duration::from_secs(10),
            suspicion_ttl: Duration::from_secs(20),
            drain: (4096, 1, 0),
            oldest_heartbeat_age: Duration::from_millis(2500),
        },
    );
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (family, kind) in include_str!("../../../tests/data/metric_families.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(' ').expect("`name type`"))
    {
        let type_line = format!("# TYPE {family} {kind}");
        assert_eq!(lines.iter().filter(|l| **l == type_line).count(), 1, "{family}");
        assert_eq!(lines.iter().filter(|l| l.starts_with(&format!("# HELP {family} "))).count(), 1, "{family}");
    }
    for expected in [
        "master_key_count 3",
        "master_allocated_bytes 1048576",
        "segment_allocated_bytes{segment=\"127.0.0.1:8080\"} 11",
        "segment_total_capacity_bytes{segment=\"we\\\"ird\\\\no\\nde\"} 1",
        "master_put_start_requests_total 1",
        "master_put_revoke_requests_total 4",
        "master_evicted_size_bytes 6291456",
        "master_value_size_bytes_bucket{le=\"4096.000000\"} 1",
        "master_value_size_bytes_bucket{le=\"67108864.000000\"} 1",
        "master_value_size_bytes_bucket{le=\"+Inf\"} 1",
        "master_value_size_bytes_sum 11",
        "master_value_size_bytes_count 1",
        "http_requests_total{route=\"/api/put\",method=\"PUT\",code=\"200\"} 2",
        "http_request_duration_seconds_bucket{route=\"/api/put\",le=\"0.0001\"} 0",
        "http_request_duration_seconds_bucket{route=\"/api/put\",le=\"0.0005\"} 1",
        "http_request_duration_seconds_bucket{route=\"/api/put\",le=\"1\"} 1",
        "http_request_duration_seconds_bucket{route=\"/api/put\",le=\"2.5\"} 2",
        "http_request_duration_seconds_bucket{route=\"/api/put\",le=\"+Inf\"} 2",
        "http_request_duration_seconds_sum{route=\"/api/put\"} 2.0003",
        "http_request_duration_seconds_count{route=\"/api/put\"} 2",
        "http_connections_open 2",
        "process_resident_memory_bytes 1048576",
        "process_cpu_seconds_total 0.5",
        "master_client_ttl_seconds 10",
        "master_client_oldest_heartbeat_age_seconds 2.5",
        "master_expired_clients_total 1",
        "master_client_suspicion_ttl_seconds 20",
        "master_suspected_clients 1",
        "master_suspected_clients_total 3",
        "master_recovered_clients_total 2",
    ] {
        assert!(lines.contains(&expected), "missing {expected}\n{text}");
    }
    // Routes without observations have no duration series; every line is well-formed.
    assert!(!text.contains("route=\"/health\""));
    assert!(text.ends_with('\n'));
    assert!(lines
        .iter()
        .all(|l| l.starts_with('#') || l.rsplit_once(' ').is_some_and(|(_, v)| v.parse::<f64>().is_ok())));
}

#[test]
fn summary_quantiles() {
    let mut b = [0u64; NDUR];
    assert_eq!(latency_quantile(&b, 1, 2), "n/a");
    b[1] = 1; // 0.25 ms
    assert_eq!(latency_quantile(&b, 1, 2), "0.25 ms");
    assert_eq!(latency_quantile(&b, 99, 100), "0.25 ms");
    b[0] = 1; // two observations: p50 = first bucket with cum >= 1
    assert_eq!(latency_quantile(&b, 1, 2), "0.10 ms");
    assert_eq!(latency_quantile(&b, 99, 100), "0.25 ms");
    let mut c = [0u64; NDUR];
    c[3] = 99; // 1 ms
    c[NDUR - 1] = 1;
    assert_eq!(latency_quantile(&c, 99, 100), "1.00 ms");
    c[NDUR - 1] = 2;
    assert_eq!(latency_quantile(&c, 99, 100), ">10000.00 ms");
    c[15] = 1000;
    c[3] = 0;
    c[NDUR - 1] = 0;
    assert_eq!(latency_quantile(&c, 1, 2), "10000.00 ms");
}

#[test]
fn summary_text() {
    let t0 = std::time::Instant::now();
    let base = Snapshot::of(&Totals::default(), t0);
    let w = std::sync::Arc::new(WorkerStats::new());
    for _ in 0..50 {
        w.record_response(Route::Health, Method::Get, 200, Duration::from_micros(200));
    }
    w.record_response(Route::Get, Method::Get, 404, Duration::from_millis(2));
    w.record_response(Route::PutRaw, Method::Put, 507, Duration::from_millis(2));
    w.bump(Ctr::PutStart, 15);
    w.bump(Ctr::PutEnd, 15);
    w.bump(Ctr::GetReq, 11);
    w.bump(Ctr::GetFail, 1);
    w.bump(Ctr::RemoveReq, 2);
    w.bump(Ctr::RemoveFail, 1);
    w.bump(Ctr::MountReq, 1);
    let cur = Snapshot::of(&Totals::sum(&[w]), t0 + Duration::from_millis(4200));
    let store = crate::store::StoreCounters {
        put_revokes: 0,
        attempted_evictions: 3,
        successful_evictions: 2,
        evicted_keys: 6,
        evicted_bytes: 1536,
        expired_clients: 0,
        suspected_clients: 0,
        recovered_clients: 0,
    };
    let text = metrics::render_summary(&synthetic_gauges(), &store, &cur, &base, 4.2);
    let expected = "Mem Storage: 1.00 MB / 96.00 MB (1.0%)\n\
        Keys: 3\n\
        Segments: 3 (mounted: 2, unmounting: 1), nodes: 1\n\
        Clients: 1\n\
        HTTP Requests (per sec, last 4.20 s): total=12.38, 4xx=0.24, 5xx=0.24\n\
        HTTP Latency (last 4.20 s): p50=0.25 ms, p99=2.50 ms\n\
        Store Ops (Success/Total per sec): Put=3.57/3.57, Get=2.38/2.62, Exist=0.00/0.00, Remove=0.24/0.48, RemoveAll=0.00/0.00, Mount=0.24/0.24, Unmount=0.00/0.00\n\
        Eviction: Success/Attempts=2/3, keys=6, size=1.50 KB\n";
    assert_eq!(text, expected);

    // Zero window: every rate is 0.00; zero capacity: no percentage.
    let mut g = synthetic_gauges();
    g.total_capacity_bytes = 0;
    g.allocated_bytes = 0;
    let text = metrics::render_summary(&g, &store, &cur, &base, 0.0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8);
    assert_eq!(lines[0], "Mem Storage: 0 B / 0 B");
    assert_eq!(lines[4], "HTTP Requests (per sec, last 0.00 s): total=0.00, 4xx=0.00, 5xx=0.00");
    // No observation in the window.
    let text = metrics::render_summary(&g, &store, &base, &base, 1.0);
    assert!(text.contains("HTTP Latency (last 1.00 s): p50=n/a, p99=n/a\n"));
}

// ---------------------------------------------------------------------------------------------
// Handler-level tests: these need the store (and build a Master with FakePlatform).

mod handler {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::config::Config;
    use crate::http::{Body, Handler, HeadDecision, Method, RequestHead, Response, Version};
    use crate::platform::FakePlatform;
    use crate::time::Now;

    use super::super::{Listener, Service};
    use super::body_str;
    use crate::master::Master;

    struct Rig {
        master: Arc<Master>,
        svc: Service,
        admin: Service,
        now: Now,
    }

    fn rig_with(config: Config) -> Rig {
        let platform = Arc::new(FakePlatform::new(7));
        platform.add_shm("seg", 8 << 20);
        let now = Now::new(Instant::now(), 1_700_000_000);
        let master = Master::new(config, platform, now);
        let stats = master.register_worker();
        let svc = Service::new(master.clone(), Listener::Main, stats.clone());
        let admin = Service::new(master.clone(), Listener::Admin, stats);
        Rig { master, svc, admin, now }
    }

    fn rig() -> Rig {
        rig_with(Config::default())
    }

    pub(super) fn head(method: Method, target: &str) -> RequestHead {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (target.to_string(), None),
        };
        RequestHead {
            method,
            path,
            query,
            version: Version::Http11,
            headers: Vec::new(),
            content_length: None,
            chunked: false,
            expect_continue: false,
        }
    }

    impl Rig {
        /// A buffered request as the codec would run it: on_head, then on_request.
        fn req(&mut self, method: Method, target: &str, body: &str) -> Response {
            let mut h = head(method, target);
            h.content_length = Some(body.len() as u64);
            self.run(&h, body.as_bytes())
        }

        fn run(&mut self, h: &RequestHead, body: &[u8]) -> Response {
            let mut req = self.svc.route(h);
            let resp = match self.svc.on_head(self.now, h, &mut req) {
                HeadDecision::Buffer => self.svc.on_request(self.now, h, &mut req, body),
                HeadDecision::Respond(r) | HeadDecision::RespondNow(r) => r,
                HeadDecision::Stream => {
                    if let Some(r) = self.svc.on_body(self.now, &mut req, body) {
                        r
                    } else {
                        self.svc.on_request(self.now, h, &mut req, &[])
                    }
                }
            };
            self.svc.on_response_sent(Some(&req), h.method, resp.status, Duration::from_micros(50));
            resp
        }

        fn metrics(&mut self) -> String {
            body_str(&self.req(Method::Get, "/metrics", ""))
        }

        fn metric(&mut self, name: &str) -> u64 {
            let text = self.metrics();
            let line = text
                .lines()
                .find(|l| l.split_once(' ').is_some_and(|(n, _)| n == name))
                .unwrap_or_else(|| panic!("{name} missing"));
            line.rsplit_once(' ').unwrap().1.parse().unwrap()
        }

        fn mount(&mut self, size: u64) -> String {
            let r = self.req(Method::Post, "/api/mount", &format!("{{\"size\":{size}}}"));
            assert_eq!(r.status, 200, "{}", body_str(&r));
            let body = body_str(&r);
            body.split('"').nth(7).unwrap().to_string()
        }
    }

    fn check(r: &Response, status: u16, body: &str) {
        assert_eq!((r.status, body_str(r).as_str()), (status, body));
    }

    #[test]
    fn health_plain_json_and_shutdown() {
        let mut t = rig();
        check(&t.req(Method::Get, "/health", ""), 200, "OK");
        let mut h = head(Method::Get, "/health");
        h.headers.push(("accept".into(), b"application/json".to_vec()));
        let r = t.run(&h, b"");
        assert_eq!(r.content_type, Some(crate::api::CT_JSON));
        assert!(body_str(&r).starts_with(r#"{"status":"ok","role":"leader""#));
        t.master.begin_shutdown();
        assert!(t.svc.shutting_down());
        check(&t.req(Method::Get, "/health", ""), 503, "UNAVAILABLE");
        let r = t.run(&h, b"");
        assert_eq!(r.status, 503);
        assert!(body_str(&r).starts_with(r#"{"status":"unavailable""#));
    }

    #[test]
    fn not_found_method_not_allowed_options() {
        let mut t = rig();
        check(&t.req(Method::Get, "/nope", ""), 404, r#"{"error":"not found"}"#);
        check(&t.req(Method::Options, "/nope", ""), 404, r#"{"error":"not found"}"#);
        let r = t.req(Method::Post, "/health", "");
        check(&r, 405, r#"{"error":"method not allowed"}"#);
        assert_eq!(r.headers, vec![("Allow", "GET, HEAD, OPTIONS".to_string())]);
        let r = t.req(Method::Head, "/api/put/k", "");
        assert_eq!((r.status, r.headers[0].1.as_str()), (405, "PUT, OPTIONS"));
        let r = t.req(Method::Options, "/api/get/", "");
        assert_eq!((r.status, r.content_type, r.headers[0].1.as_str()), (204, None, "GET, HEAD, OPTIONS"));
        let r = t.req(Method::Options, "*", "");
        assert_eq!((r.status, r.headers[0].1.as_str()), (204, "GET, HEAD, POST, PUT, DELETE, OPTIONS"));
        check(&t.req(Method::Other, "/metrics", ""), 405, r#"{"error":"method not allowed"}"#);
        // Admin listener: /api/* is 404.
        let h = head(Method::Get, "/api/exist/k");
        let mut req = t.admin.route(&h);
        let r = t.admin.on_request(t.now, &h, &mut req, b"");
        check(&r, 404, r#"{"error":"not found"}"#);
    }

    #[test]
    fn put_get_exist_remove() {
        let mut t = rig();
        t.mount(16 << 20);
        check(
            &t.req(Method::Put, "/api/put", r#"{"key":"my_object","value":"hello world"}"#),
            200,
            r#"{"status":"success"}"#,
        );
        let r = t.req(Method::Get, "/api/get/my_object", "");
        assert_eq!((r.status, r.content_type), (200, Some(crate::api::CT_OCTET)));
        match &r.body {
            Body::Value(v) => assert_eq!(v.bytes(), b"hello world"),
            other => panic!("{other:?}"),
        }
        drop(r);
        check(&t.req(Method::Get, "/api/exist/my_object", ""), 200, r#"{"exists":true}"#);
        check(&t.req(Method::Get, "/api/exist/other", ""), 200, r#"{"exists":false}"#);
        check(&t.req(Method::Get, "/api/get/other", ""), 404, r#"{"error":"Key not found"}"#);
        // Leased by the GET above.
        check(&t.req(Method::Delete, "/api/remove/my_object", ""), 409, r#"{"error":"Key has an active lease"}"#);
        t.now.mono += Duration::from_secs(11);
        check(&t.req(Method::Delete, "/api/remove/my_object", ""), 200, r#"{"status":"success"}"#);
        check(&t.req(Method::Delete, "/api/remove/my_object", ""), 404, r#"{"error":"Key not found"}"#);
        check(&t.req(Method::Delete, "/api/remove_all", ""), 200, r#"{"status":"success removed 0 keys"}"#);
        assert_eq!(t.metric("master_get_replica_list_requests_total"), 2);
        assert_eq!(t.metric("master_get_replica_list_failures_total"), 1);
        assert_eq!(t.metric("master_exist_key_requests_total"), 2);
        assert_eq!(t.metric("master_remove_requests_total"), 3);
        assert_eq!(t.metric("master_remove_failures_total"), 2);
        assert_eq!(t.metric("master_put_start_requests_total"), 1);
        assert_eq!(t.metric("master_put_end_requests_total"), 1);
        assert_eq!(t.metric("master_value_size_bytes_sum"), 11);
        assert_eq!(t.metric("master_mount_segment_requests_total"), 1);
    }

    #[test]
    fn head_has_no_side_effects() {
        let mut t = rig();
        t.mount(16 << 20);
        t.req(Method::Put, "/api/put", r#"{"key":"k","value":"v"}"#);
        let r = t.req(Method::Head, "/api/get/k", "");
        assert_eq!(r.status, 200);
        drop(r);
        t.req(Method::Head, "/api/exist/k", "");
        // No lease was granted: the remove succeeds at once.
        check(&t.req(Method::Delete, "/api/remove/k", ""), 200, r#"{"status":"success"}"#);
        assert_eq!(t.metric("master_get_replica_list_requests_total"), 0);
        assert_eq!(t.metric("master_exist_key_requests_total"), 0);
        assert!(t.metrics().contains("http_requests_total{route=\"/api/get/{key}\",method=\"HEAD\",code=\"200\"} 1"));
    }

    #[test]
    fn key_validation_and_messages() {
        let mut t = rig();
        check(&t.req(Method::Get, "/api/get/", ""), 400, r#"{"error":"Invalid key: must not be empty"}"#);
        check(&t.req(Method::Get, "/api/get/%ff", ""), 400, r#"{"error":"Invalid key: must be valid UTF-8"}"#);
        check(
            &t.req(Method::Get, "/api/exist/a%0Ab", ""),
            400,
            r#"{"error":"Invalid key: must not contain control characters"}"#,
        );
        let long = "a".repeat(4097);
        check(
            &t.req(Method::Delete, &format!("/api/remove/{long}"), ""),
            400,
            r#"{"error":"Invalid key: must be at most 4096 bytes"}"#,
        );
        check(
            &t.req(Method::Get, "/query_key", ""),
            400,
            r#"{"success":false,"error_code":-600,"error_message":"Missing key query parameter"}"#,
        );
        check(
            &t.req(Method::Get, "/query_key?key=", ""),
            400,
            r#"{"success":false,"error_code":-600,"error_message":"Missing key query parameter"}"#,
        );
        check(
            &t.req(Method::Get, "/query_key?key=nope", ""),
            404,
            r#"{"success":false,"error_code":-704,"error_message":"OBJECT_NOT_FOUND"}"#,
        );
        // 400s move no master_* counter.
        assert_eq!(t.metric("master_get_replica_list_requests_total"), 0);
        assert_eq!(t.metric("master_remove_requests_total"), 0);
    }

    #[test]
    fn put_json_validation_order() {
        let mut t = rig();
        for (body, msg) in [
            ("", "Malformed JSON body"),
            ("{\"key\":\"a\",\"key\":\"b\",\"value\":\"v\"}", "Malformed JSON body"),
            ("[1]", "Request body must be a JSON object"),
            ("{\"key\":\"\",\"value\":\"v\"}", "Missing key or value"),
            ("{\"key\":\"k\",\"value\":null}", "Missing key or value"),
            ("{\"value\":\"v\"}", "Missing key or value"),
            ("{\"key\":5,\"value\":\"v\"}", "Invalid key: must be a string"),
            ("{\"key\":\"k\",\"value\":5}", "Invalid value: must be a string"),
            ("{\"key\":\"a\\u0000\",\"value\":\"v\"}", "Invalid key: must not contain control characters"),
            ("{\"key\":\"k\",\"value\":\"\"}", "Invalid value: must not be empty"),
        ] {
            let r = t.req(Method::Put, "/api/put", body);
            check(&r, 400, &format!("{{\"error\":\"{msg}\"}}"));
        }
        // No segment: 507.
        check(
            &t.req(Method::Put, "/api/put", r#"{"key":"k","value":"v"}"#),
            507,
            r#"{"error":"Insufficient storage"}"#,
        );
        assert_eq!(t.metric("master_put_start_requests_total"), 1);
        assert_eq!(t.metric("master_put_start_failures_total"), 1);
    }

    #[test]
    fn raw_put_streams_into_segment() {
        let mut t = rig();
        // No segment: early 507 at the head.
        let mut h = head(Method::Put, "/api/put/raw");
        h.content_length = Some(5);
        let mut req = t.svc.route(&h);
        match t.svc.on_head(t.now, &h, &mut req) {
            HeadDecision::RespondNow(r) => check(&r, 507, r#"{"error":"Insufficient storage"}"#),
            _ => panic!("expected an early 507"),
        }
        t.mount(16 << 20);
        let mut req = t.svc.route(&h);
        let HeadDecision::Stream = t.svc.on_head(t.now, &h, &mut req) else { panic!("expected a stream") };
        assert!(matches!(req.stream, Some(super::super::StreamState::Write(_))));
        assert!(t.svc.on_body(t.now, &mut req, b"he").is_none());
        assert!(t.svc.on_body(t.now, &mut req, b"llo").is_none());
        check(&t.svc.on_request(t.now, &h, &mut req, &[]), 200, r#"{"status":"success"}"#);
        match t.req(Method::Get, "/api/get/raw", "").body {
            Body::Value(v) => assert_eq!(v.bytes(), b"hello"),
            other => panic!("{other:?}"),
        }
        // Empty body, invalid key.
        check(&t.req(Method::Put, "/api/put/e", ""), 400, r#"{"error":"Invalid value: must not be empty"}"#);
        check(&t.req(Method::Put, "/api/put/", "x"), 400, r#"{"error":"Invalid key: must not be empty"}"#);
        // Chunked: collected, stored at the end.
        let mut h = head(Method::Put, "/api/put/chunked%20key");
        h.chunked = true;
        let mut req = t.svc.route(&h);
        let HeadDecision::Stream = t.svc.on_head(t.now, &h, &mut req) else { panic!() };
        assert!(t.svc.on_body(t.now, &mut req, b"abc").is_none());
        check(&t.svc.on_request(t.now, &h, &mut req, &[]), 200, r#"{"status":"success"}"#);
        check(&t.req(Method::Get, "/api/exist/chunked%20key", ""), 200, r#"{"exists":true}"#);
    }

    #[test]
    fn mount_and_unmount_validation() {
        let mut t = rig();
        for (body, msg) in [
            ("{}", "Invalid size: must be an integer in [1, 4611686018427387904]"),
            ("{\"size\":16.0}", "Invalid size: must be an integer in [1, 4611686018427387904]"),
            ("{\"size\":0}", "Invalid size: must be an integer in [1, 4611686018427387904]"),
            ("{\"size\":4611686018427387905}", "Invalid size: must be an integer in [1, 4611686018427387904]"),
            ("{\"size\":1,\"protocol\":\"TCP\"}", "Invalid protocol: must be tcp or rdma"),
            ("{\"size\":1,\"location\":1}", "Invalid location: must be a string"),
        ] {
            check(&t.req(Method::Post, "/api/mount", body), 400, &format!("{{\"error\":\"{msg}\"}}"));
        }
        for (body, msg) in [
            ("{\"size\":1}", "Invalid name: must be a non-empty string"),
            ("{\"name\":\"/\",\"size\":1}", "Invalid name: must be a non-empty string"),
            ("{\"name\":\"a/b\",\"size\":1}", "Invalid name: must not contain '/'"),
            ("{\"name\":\"..\",\"size\":1}", "Invalid name: must not be '.' or '..'"),
            ("{\"name\":\"a\\u0000\",\"size\":1}", "Invalid name: must not contain NUL"),
            ("{\"name\":\"seg\",\"size\":1,\"offset\":100}", "Invalid offset: must be a non-negative multiple of 4096"),
            (
                "{\"name\":\"seg\",\"size\":16777216}",
                "Invalid size: offset + size exceeds the object size of 8388608 bytes",
            ),
        ] {
            check(&t.req(Method::Post, "/api/mount_shm", body), 400, &format!("{{\"error\":\"{msg}\"}}"));
        }
        check(
            &t.req(Method::Post, "/api/mount_shm", r#"{"name":"/missing","size":1}"#),
            404,
            r#"{"error":"Shared memory object not found: missing"}"#,
        );
        check(
            &t.req(Method::Post, "/api/mount", r#"{"size":1125899906842624}"#),
            507,
            r#"{"error":"Allocate and mount failed: insufficient memory"}"#,
        );
        for (body, msg) in [
            ("{}", "Missing segment_ids"),
            ("{\"segment_ids\":\"\"}", "Missing segment_ids"),
            ("{\"segment_ids\":[]}", "Missing segment_ids"),
            ("{\"segment_ids\":5}", "Invalid segment_ids: must be a string or an array of strings"),
            ("{\"segment_ids\":[\"abc\",5]}", "Invalid segment_ids: must be a string or an array of strings"),
            ("{\"segment_ids\":[\"abc\"]}", "Invalid segment_ids: not a UUID: abc"),
            (
                "{\"segment_ids\":\"00000000-0000-0000-0000-000000000000\",\"grace_period_seconds\":86401}",
                "Invalid grace_period_seconds: must be an integer in [0, 86400]",
            ),
        ] {
            check(&t.req(Method::Post, "/api/unmount", body), 400, &format!("{{\"error\":\"{msg}\"}}"));
        }
        let id = t.mount(1);
        let upper = id.to_uppercase();
        let body = format!(r#"{{"segment_ids":["{upper}","{id}","00000000-0000-0000-0000-000000000000"]}}"#);
        check(
            &t.req(Method::Post, "/api/unmount", &body),
            404,
            r#"{"error":"Unmount failed for one or more segments","failed_segment_ids":["00000000-0000-0000-0000-000000000000"]}"#,
        );
        assert_eq!(t.metric("master_unmount_segment_requests_total"), 2);
        assert_eq!(t.metric("master_unmount_segment_failures_total"), 1);
        // Already unmounted and removed: now failed.
        let body = format!(r#"{{"segment_ids":"{id}"}}"#);
        assert_eq!(t.req(Method::Post, "/api/unmount_shm", &body).status, 404);
    }

    #[test]
    fn admin_listings() {
        let mut t = rig();
        check(&t.req(Method::Get, "/get_segments_detail", ""), 200, r#"{"total_segments":0,"segments":[]}"#);
        check(&t.req(Method::Get, "/get_all_segments", ""), 200, "");
        check(&t.req(Method::Get, "/query_segment", ""), 400, "Missing segment query parameter");
        check(&t.req(Method::Get, "/query_segment?segment=127.0.0.1%3A8080", ""), 404, "segment not found");
        t.mount(16 << 20);
        check(&t.req(Method::Get, "/get_all_segments", ""), 200, "127.0.0.1:8080\n");
        check(
            &t.req(Method::Get, "/query_segment?segment=127.0.0.1%3A8080", ""),
            200,
            "127.0.0.1:8080\nUsed(bytes): 0\nCapacity(bytes): 16777216\n",
        );
        let detail = body_str(&t.req(Method::Get, "/get_segments_detail", ""));
        assert!(
            detail.starts_with(r#"{"total_segments":1,"segments":[{"segment_name":"127.0.0.1:8080","segment_id":""#),
            "{detail}"
        );
        assert!(detail.contains(r#""size_bytes":16777216,"size_human":"16 MiB","te_endpoint":"127.0.0.1:8080","protocol":"tcp","status":"MOUNTED","allocator_used_bytes":0,"allocator_capacity_bytes":16777216,"allocator_usage_percent":0.0}]}"#), "{detail}");
        for k in ["a1", "a2", "a3", "b1"] {
            t.req(Method::Put, &format!("/api/put/{k}"), "v");
        }
        let keys = |t: &mut Rig, target: &str| {
            let r = t.req(Method::Get, target, "");
            assert_eq!((r.status, r.content_type), (200, Some(crate::api::CT_TEXT)));
            let Body::Stream(mut s) = r.body else { panic!("not streamed") };
            let mut out = Vec::new();
            while s.next_chunk(&mut out) {}
            String::from_utf8(out).unwrap()
        };
        assert_eq!(keys(&mut t, "/get_all_keys"), "a1\na2\na3\nb1\n");
        assert_eq!(keys(&mut t, "/get_all_keys?prefix=a&limit=2"), "a1\na2\n");
        assert_eq!(keys(&mut t, "/get_all_keys?prefix=a&limit=2&after=a2"), "a3\n");
        assert_eq!(keys(&mut t, "/get_all_keys?after=a25"), "a3\nb1\n");
        check(&t.req(Method::Get, "/get_all_keys?limit=0", ""), 400, "Invalid limit parameter");
        let q = body_str(&t.req(Method::Get, "/query_key?key=a1", ""));
        assert!(
            q.starts_with(r#"{"success":true,"data":[{"transport_endpoint_":"127.0.0.1:8080","buffer_address_":"#),
            "{q}"
        );
        assert!(q.ends_with(r#","size_":1,"protocol_":"tcp"}]}"#), "{q}");
        let b = body_str(&t.req(Method::Get, "/batch_query_keys?keys=a1,missing,a1", ""));
        assert!(b.starts_with(r#"{"success":true,"data":{"a1":{"ok":true,"values":[{"transport_endpoint_":"127.0.0.1:8080","buffer_descriptor":{"#), "{b}");
        assert!(b.ends_with(r#"},"missing":{"ok":false,"error":"OBJECT_NOT_FOUND"}}}"#), "{b}");
        check(
            &t.req(Method::Get, "/batch_query_keys?keys=a,,b", ""),
            400,
            r#"{"success":false,"error":"Invalid key: must not be empty"}"#,
        );
        check(
            &t.req(Method::Post, "/batch_query_keys", r#"{"keys":[]}"#),
            400,
            r#"{"success":false,"error":"No keys provided. Use ?keys=key1,key2,..."}"#,
        );
        check(
            &t.req(Method::Post, "/batch_query_keys", r#"{"keys":"a"}"#),
            400,
            r#"{"success":false,"error":"Invalid keys: must be an array of strings"}"#,
        );
        check(
            &t.req(Method::Post, "/batch_query_keys", "{"),
            400,
            r#"{"success":false,"error":"Malformed JSON body"}"#,
        );
        let b = body_str(&t.req(Method::Post, "/batch_query_keys", r#"{"keys":["x,y"]}"#));
        assert_eq!(b, r#"{"success":true,"data":{"x,y":{"ok":false,"error":"OBJECT_NOT_FOUND"}}}"#);
    }

    #[test]
    fn startup_mount_is_counted_but_not_a_request_rate() {
        let mut t = rig();
        t.master.mount_startup_segment(t.now, 16 << 20).unwrap();
        assert_eq!(t.metric("master_mount_segment_requests_total"), 1);
        t.now.mono += Duration::from_secs(1);
        let text = body_str(&t.req(Method::Get, "/metrics/summary", ""));
        assert!(text.contains(", Mount=0.00/0.00, "), "{text}");
        assert!(text.starts_with("Mem Storage: 0 B / 16.00 MB (0.0%)\n"), "{text}");
        t.mount(1);
        let text = body_str(&t.req(Method::Get, "/metrics/summary", ""));
        assert!(text.contains(", Mount=1.00/1.00, "), "{text}");
    }

    #[test]
    fn batch_key_limit() {
        let mut t = rig_with(Config { max_batch_keys: 2, ..Config::default() });
        check(
            &t.req(Method::Get, "/batch_query_keys?keys=a,a,", ""),
            400,
            r#"{"success":false,"error":"Too many keys: 3 exceeds the limit of 2"}"#,
        );
        check(
            &t.req(Method::Get, "/batch_query_keys", ""),
            400,
            r#"{"success":false,"error":"No keys provided. Use ?keys=key1,key2,..."}"#,
        );
    }

    #[test]
    fn summary_and_snapshots() {
        let mut t = rig();
        let start = t.now.mono;
        t.req(Method::Get, "/health", "");
        t.now.mono = start + Duration::from_millis(4200);
        let text = body_str(&t.req(Method::Get, "/metrics/summary", ""));
        assert_eq!(text.lines().count(), 8);
        assert!(text.contains("HTTP Requests (per sec, last 4.20 s): total=0.24, 4xx=0.00, 5xx=0.00\n"), "{text}");
        assert!(text.contains("Clients: 1\n"));
        // A snapshot is due 10 s after start.
        assert_eq!(t.master.poll_timeout().map(|d| d <= start + Duration::from_secs(10)), Some(true));
        t.now.mono = start + Duration::from_millis(12_500);
        t.master.handle_timeout(t.now);
        let text = body_str(&t.req(Method::Get, "/metrics/summary", ""));
        assert!(text.contains("HTTP Requests (per sec, last 2.50 s): total=0.00"), "{text}");
        assert!(t.master.poll_timeout().unwrap() > start + Duration::from_secs(10));
    }

    #[test]
    fn summary_window_never_reaches_the_interval() {
        // A summary served after a multiple of 10 s but before any timer fired (the request
        // and the deadline are handled in the same event-loop turn) uses that snapshot.
        let mut t = rig();
        let start = t.now.mono;
        t.req(Method::Get, "/health", "");
        t.now.mono = start + Duration::from_millis(10_250);
        let text = body_str(&t.req(Method::Get, "/metrics/summary", ""));
        assert!(text.contains("HTTP Requests (per sec, last 0.25 s): total=0.00"), "{text}");
        assert!(text.contains("HTTP Latency (last 0.25 s): p50=n/a, p99=n/a\n"), "{text}");
        // The timer that fires afterwards finds nothing left to do.
        t.master.handle_timeout(t.now);
        t.now.mono = start + Duration::from_millis(10_500);
        let text = body_str(&t.req(Method::Get, "/metrics/summary", ""));
        assert!(text.contains("HTTP Requests (per sec, last 0.50 s): total=2.00"), "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Wire-level tests: raw bytes through the codec's Connection into Service. These need both the
// store and the codec.

mod wire {
    use std::sync::Arc;
    use std::time::Instant;

    use crate::config::Config;
    use crate::http::Connection;
    use crate::platform::FakePlatform;
    use crate::time::Now;

    use super::super::{Listener, Service};
    use crate::master::Master;

    struct Wire {
        master: Arc<Master>,
        svc: Service,
        conn: Connection<super::super::ApiRequest>,
        now: Now,
    }

    impl Wire {
        fn new() -> Self {
            let now = Now::new(Instant::now(), 1_700_000_000);
            let master = Master::new(Config::default(), Arc::new(FakePlatform::new(1)), now);
            master.mount_startup_segment(now, 16 << 20).unwrap();
            let svc = Service::new(master.clone(), Listener::Main, master.register_worker());
            let conn = svc.new_connection(now);
            Self { master, svc, conn, now }
        }

        /// Feeds `input`, returns everything written back.
        fn send(&mut self, input: &[u8]) -> String {
            self.conn.handle_input(self.now, input, &mut self.svc);
            let mut out = Vec::new();
            while let Some(b) = self.conn.poll_transmit() {
                out.extend_from_slice(b);
                let n = b.len();
                self.conn.consume(self.now, n, &mut self.svc);
            }
            String::from_utf8_lossy(&out).into_owned()
        }
    }

    fn has_header(resp: &str, line: &str) -> bool {
        resp.lines().any(|l| l.eq_ignore_ascii_case(line))
    }

    /// A key listing is rendered lazily as it is written; a pipelined PUT behind it waits
    /// until the listing is complete, so the listing never shows the later request's key
    /// (found by the `http_split` fuzzer: whole input and byte-at-a-time input differed).
    #[test]
    fn pipelined_write_after_a_listing_is_not_listed() {
        for split in [false, true] {
            let mut w = Wire::new();
            w.send(b"PUT /api/put/a0 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx");
            let input: &[u8] = b"GET /get_all_keys HTTP/1.1\r\n\r\n\
                PUT /api/put/a1 HTTP/1.1\r\nContent-Length: 1\r\n\r\ny\
                GET /get_all_keys HTTP/1.1\r\n\r\n";
            let r = if split {
                input.iter().map(|b| w.send(std::slice::from_ref(b))).collect::<String>()
            } else {
                w.send(input)
            };
            let bodies: Vec<&str> = r.split("HTTP/1.1 ").skip(1).collect();
            assert_eq!(bodies.len(), 3, "{r}");
            assert!(bodies[0].ends_with("\r\n\r\n3\r\na0\n\r\n0\r\n\r\n"), "first listing: {r}");
            assert!(bodies[1].starts_with("200 "), "{r}");
            assert!(bodies[2].ends_with("\r\n\r\n6\r\na0\na1\n\r\n0\r\n\r\n"), "second listing: {r}");
            assert!(w.master.store().exists("a1"));
        }
    }

    #[test]
    fn put_then_get_and_head() {
        let mut w = Wire::new();
        let r = w.send(b"PUT /api/put/k%20x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhe");
        assert_eq!(r, "", "answered before the body was complete: {r}");
        let r = w.send(b"llo");
        assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
        assert!(r.ends_with("\r\n\r\n{\"status\":\"success\"}"), "{r}");
        let r = w.send(b"GET /api/get/k%20x HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 ") && r.ends_with("\r\n\r\nhello"), "{r}");
        assert!(has_header(&r, "content-type: application/octet-stream"), "{r}");
        let r = w.send(b"HEAD /api/get/k%20x HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 ") && r.ends_with("\r\n\r\n"), "{r}");
        assert!(has_header(&r, "content-length: 5"), "{r}");
        let r = w.send(b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.contains("\nhttp_requests_total{route=\"/api/put/{key}\",method=\"PUT\",code=\"200\"} 1\n"), "{r}");
        assert!(r.contains("\nhttp_requests_total{route=\"/api/get/{key}\",method=\"HEAD\",code=\"200\"} 1\n"), "{r}");
        assert!(r.contains("\nmaster_get_replica_list_requests_total 1\n"), "{r}");
        assert!(r.contains("\nmaster_mount_segment_requests_total 1\n"), "{r}");
        assert!(r.contains("\nhttp_connections_open 1\n"), "{r}");
        assert!(r.contains("\nmaster_value_size_bytes_count 1\n"), "{r}");
        assert!(!r.contains("route=\"/metrics\""), "a scrape counts itself: {r}");
        drop(w.conn);
        assert_eq!(w.master.connections_open.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn get_all_keys_is_chunked() {
        let mut w = Wire::new();
        for k in ["b", "a", "c"] {
            let body = format!("{{\"key\":\"{k}\",\"value\":\"vv\"}}");
            let req = format!("PUT /api/put HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            assert!(w.send(req.as_bytes()).starts_with("HTTP/1.1 200 "));
        }
        let r = w.send(b"GET /get_all_keys HTTP/1.1\r\n\r\n");
        assert!(has_header(&r, "transfer-encoding: chunked"), "{r}");
        let body = r.split_once("\r\n\r\n").unwrap().1;
        let mut text = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let n = usize::from_str_radix(size, 16).unwrap();
            if n == 0 {
                break;
            }
            text.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        assert_eq!(text, "a\nb\nc\n");
        let r = w.send(b"HEAD /get_all_keys HTTP/1.1\r\n\r\n");
        assert!(has_header(&r, "transfer-encoding: chunked") && r.ends_with("\r\n\r\n"), "{r}");
    }

    #[test]
    fn head_decided_errors() {
        let mut w = Wire::new();
        let r = w.send(b"PUT /api/put/%ff HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400 ") && !r.contains("100 Continue"), "{r}");
        assert!(r.ends_with("{\"error\":\"Invalid key: must be valid UTF-8\"}"), "{r}");
        let mut w = Wire::new();
        let r = w.send(b"DELETE /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 405 ") && has_header(&r, "allow: GET, HEAD, OPTIONS"), "{r}");
        let r = w.send(b"OPTIONS * HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 204 ") && has_header(&r, "allow: GET, HEAD, POST, PUT, DELETE, OPTIONS"),
            "{r}"
        );
        let r = w.send(b"PUT /api/put/big HTTP/1.1\r\nContent-Length: 50000000\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 507 ") && has_header(&r, "connection: close"), "{r}");
    }
}

/// `--max-connections` (docs/robustness.md): refusal beyond the limit, lives in the core.
mod connection_limit {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    use crate::config::Config;
    use crate::http::Connection;
    use crate::platform::FakePlatform;
    use crate::time::Now;

    use super::super::{Listener, Service};
    use crate::master::Master;

    fn drain(conn: &mut Connection<super::super::ApiRequest>, svc: &mut Service, now: Now) -> String {
        let mut out = Vec::new();
        while let Some(b) = conn.poll_transmit() {
            out.extend_from_slice(b);
            let n = b.len();
            conn.consume(now, n, svc);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn connections_beyond_the_limit_get_503_and_close() {
        let now = Now::new(Instant::now(), 1_700_000_000);
        let config = Config { max_connections: 2, ..Config::default() };
        let master = Master::new(config, Arc::new(FakePlatform::new(1)), now);
        let mut svc = Service::new(master.clone(), Listener::Main, master.register_worker());
        let mut a = svc.new_connection(now);
        let b = svc.new_connection(now);
        assert!(drain(&mut a, &mut svc, now).is_empty());
        assert_eq!(master.connections_open.load(Ordering::Relaxed), 2);

        let mut c = svc.new_connection(now);
        assert_eq!(master.connections_open.load(Ordering::Relaxed), 2, "a refused connection is not counted");
        // Input is ignored: the refusal is sent before any request.
        c.handle_input(now, b"GET /health HTTP/1.1\r\n\r\n", &mut svc);
        let r = drain(&mut c, &mut svc, now);
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        assert!(r.lines().any(|l| l.eq_ignore_ascii_case("connection: close")), "{r}");
        assert!(r.ends_with("\r\n\r\n{\"error\":\"too many connections\"}"), "{r}");
        assert!(c.is_closed());
        drop(c);
        assert_eq!(master.connections_open.load(Ordering::Relaxed), 2);

        // Closing one makes room again.
        drop(b);
        let mut d = svc.new_connection(now);
        d.handle_input(now, b"GET /health HTTP/1.1\r\n\r\n", &mut svc);
        let r = drain(&mut d, &mut svc, now);
        assert!(r.starts_with("HTTP/1.1 200 ") && r.ends_with("OK"), "{r}");
        let r = String::from_utf8(super::metrics::metrics_text(&master, now)).unwrap();
        assert!(r.contains("\nhttp_requests_total{route=\"other\",method=\"other\",code=\"503\"} 1\n"), "{r}");
        assert!(r.contains("\nhttp_connections_open 2\n"), "{r}");
        drop((a, d));
        assert_eq!(master.connections_open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn zero_means_unlimited() {
        let now = Now::new(Instant::now(), 1_700_000_000);
        let master = Master::new(Config::default(), Arc::new(FakePlatform::new(1)), now);
        let svc = Service::new(master.clone(), Listener::Main, master.register_worker());
        let conns: Vec<_> = (0..100).map(|_| svc.new_connection(now)).collect();
        assert_eq!(master.connections_open.load(Ordering::Relaxed), 100);
        drop(conns);
        assert_eq!(master.connections_open.load(Ordering::Relaxed), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster mode: REST reads of values held by other nodes go through the data plane.
mod cluster_reads {
    use std::io::IoSlice;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use uuid::Uuid;

    use crate::config::Config;
    use crate::master::Master;
    use crate::platform::FakePlatform;
    use crate::session::{Acceptor, Session};
    use crate::store::{RemoteSegment, WriteConfig};
    use crate::time::Now;
    use crate::transfer::{TransferOp, TransferOutcome};
    use crate::{HttpAcceptor, Listener};

    const BASE: u64 = 0x7f00_0000_0000;
    const CLIENT: Uuid = Uuid::from_u128(0xc1);

    struct Rig {
        conn: Box<dyn Session>,
        now: Now,
        _master: Arc<Master>,
    }

    /// A cluster-mode master with value `k` (`len` bytes) on a client's segment `te-n1`.
    fn rig(len: u64) -> Rig {
        let now = Now::new(Instant::now(), 1_700_000_000);
        let config = Config { cluster: true, client_ttl: Duration::from_secs(3600), ..Config::default() };
        let master = Master::new(config, Arc::new(FakePlatform::new(5)), now);
        let seg = RemoteSegment {
            id: Uuid::from_u128(0x51),
            name: "n1".into(),
            base: BASE,
            size: 1 << 24,
            te_endpoint: "te-n1".into(),
            protocol: "tcp".into(),
        };
        master.store().client_mount(now.mono, CLIENT, &seg).unwrap();
        let one = WriteConfig { replicas: 1, preferred: Vec::new(), ..Default::default() };
        master.store().client_put_start(now.mono, CLIENT, "k", len, &one, false).unwrap();
        master.store().client_put_end(now.mono, CLIENT, "k", None).unwrap();
        let mut acceptor = HttpAcceptor::new(master.clone(), Listener::Main, master.register_worker());
        Rig { conn: acceptor.accept(now), now, _master: master }
    }

    impl Rig {
        fn out(&mut self) -> String {
            let mut all = Vec::new();
            loop {
                let mut bufs = [IoSlice::new(&[]); 8];
                let n = self.conn.poll_transmit(&mut bufs);
                if n == 0 {
                    break;
                }
                let bytes: Vec<u8> = bufs[..n].iter().flat_map(|b| b.iter().copied()).collect();
                self.conn.consume(self.now, bytes.len());
                all.extend(bytes);
            }
            String::from_utf8_lossy(&all).into_owned()
        }
    }

    #[test]
    fn a_value_on_another_node_is_read_through_the_data_plane_in_order() {
        let mut t = rig(5);
        t.conn.handle_input(t.now, b"GET /api/get/k HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n");
        assert_eq!(t.out(), "", "nothing before the bytes arrived, not even the pipelined /health");
        let tr = t.conn.poll_transfer().expect("a transfer");
        assert_eq!(tr.endpoint, "te-n1");
        assert_eq!(tr.op, TransferOp::Read { addr: BASE, len: 5 });
        assert!(tr.deadline > t.now.mono);
        assert!(t.conn.poll_transfer().is_none());
        assert_eq!(t.conn.poll_timeout(), Some(tr.deadline), "the deadline is the session's");
        t.conn.handle_transfer(t.now, tr.id, TransferOutcome::Read(b"hello".to_vec()));
        let out = t.out();
        let first = out.find("\r\n\r\nhello").expect("the value");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Content-Length: 5\r\n") || out.contains("content-length: 5\r\n"), "{out}");
        assert!(out[first..].contains("HTTP/1.1 200 OK"), "then /health: {out}");
        assert!(!t.conn.is_closed());
    }

    #[test]
    fn an_unreachable_node_is_named_in_a_502_and_a_silent_one_in_a_504() {
        let mut t = rig(5);
        t.conn.handle_input(t.now, b"GET /api/get/k HTTP/1.1\r\n\r\n");
        let tr = t.conn.poll_transfer().unwrap();
        t.conn.handle_transfer(t.now, tr.id, TransferOutcome::Failed("te-n1: connection refused".into()));
        let out = t.out();
        assert!(out.starts_with("HTTP/1.1 502 "), "{out}");
        assert!(out.ends_with(r#"{"error":"Cannot read the value from te-n1: connection refused"}"#), "{out}");
        // A short read is not served either.
        t.conn.handle_input(t.now, b"GET /api/get/k HTTP/1.1\r\n\r\n");
        let tr = t.conn.poll_transfer().unwrap();
        t.conn.handle_transfer(t.now, tr.id, TransferOutcome::Read(b"hel".to_vec()));
        assert!(t.out().starts_with("HTTP/1.1 502 "));
        // No answer before the deadline: 504, and the late outcome is dropped.
        t.conn.handle_input(t.now, b"GET /api/get/k HTTP/1.1\r\n\r\n");
        let tr = t.conn.poll_transfer().unwrap();
        let late = Now::new(tr.deadline, t.now.wall_unix_secs + 5);
        t.conn.handle_timeout(late);
        t.now = late;
        let out = t.out();
        assert!(out.starts_with("HTTP/1.1 504 "), "{out}");
        assert!(out.ends_with(r#"{"error":"Timed out reading the value from te-n1"}"#), "{out}");
        t.conn.handle_transfer(t.now, tr.id, TransferOutcome::Read(b"hello".to_vec()));
        assert_eq!(t.out(), "");
    }

    #[test]
    fn exist_sees_the_value_and_eof_waits_for_the_answer() {
        let mut t = rig(5);
        t.conn.handle_input(t.now, b"GET /api/exist/k HTTP/1.1\r\n\r\n");
        assert!(t.out().ends_with(r#"{"exists":true}"#));
        t.conn.handle_input(t.now, b"GET /api/get/k HTTP/1.1\r\n\r\n");
        t.conn.handle_eof(t.now);
        assert!(!t.conn.is_closed(), "the owed response is still sent");
        let tr = t.conn.poll_transfer().unwrap();
        t.conn.handle_transfer(t.now, tr.id, TransferOutcome::Read(b"hello".to_vec()));
        assert!(t.out().ends_with("hello"));
        assert!(t.conn.is_closed());
    }
}

// Cluster mode: a REST put with no room in this process goes to another node's segment.
mod cluster_writes {
    use std::io::IoSlice;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use uuid::Uuid;

    use crate::config::Config;
    use crate::master::Master;
    use crate::platform::FakePlatform;
    use crate::session::{Acceptor, Session};
    use crate::store::RemoteSegment;
    use crate::time::Now;
    use crate::transfer::{TransferOp, TransferOutcome};
    use crate::{HttpAcceptor, Listener};

    const BASE: u64 = 0x7e00_0000_0000;

    fn rig() -> (Arc<Master>, Box<dyn Session>, Now) {
        let now = Now::new(Instant::now(), 1_700_000_000);
        let config = Config { cluster: true, client_ttl: Duration::from_secs(3600), ..Config::default() };
        let master = Master::new(config, Arc::new(FakePlatform::new(9)), now);
        let seg = RemoteSegment {
            id: Uuid::from_u128(0x52),
            name: "n2".into(),
            base: BASE,
            size: 1 << 20,
            te_endpoint: "te-n2".into(),
            protocol: "tcp".into(),
        };
        master.store().client_mount(now.mono, Uuid::from_u128(0xc2), &seg).unwrap();
        let mut acceptor = HttpAcceptor::new(master.clone(), Listener::Main, master.register_worker());
        let conn = acceptor.accept(now);
        (master, conn, now)
    }

    fn out(conn: &mut Box<dyn Session>, now: Now) -> String {
        let mut all = Vec::new();
        loop {
            let mut bufs = [IoSlice::new(&[]); 8];
            let n = conn.poll_transmit(&mut bufs);
            if n == 0 {
                break;
            }
            let bytes: Vec<u8> = bufs[..n].iter().flat_map(|b| b.iter().copied()).collect();
            conn.consume(now, bytes.len());
            all.extend(bytes);
        }
        String::from_utf8_lossy(&all).into_owned()
    }

    #[test]
    fn a_put_without_local_room_is_written_to_another_node_and_acknowledged() {
        let (master, mut conn, now) = rig();
        let body = r#"{"key":"k","value":"remote bytes"}"#;
        let req = format!("PUT /api/put HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        conn.handle_input(now, req.as_bytes());
        assert_eq!(out(&mut conn, now), "", "no answer before the remote write is acknowledged");
        let t = conn.poll_transfer().expect("a write");
        assert_eq!(t.endpoint, "te-n2");
        let TransferOp::Write { addr, data } = &t.op else { panic!("{t:?}") };
        assert!(*addr >= BASE && *addr < BASE + (1 << 20));
        assert_eq!(&data[..], b"remote bytes");
        assert!(!master.store().exists("k"), "invisible until acknowledged");
        conn.handle_transfer(now, t.id, TransferOutcome::Written);
        assert!(out(&mut conn, now).ends_with(r#"{"status":"success"}"#));
        assert!(master.store().exists("k"));
        let r = master.store().remote_replica(now.mono, "k", false).unwrap();
        assert_eq!((r.endpoint.as_str(), r.address, r.len), ("te-n2", *addr, 12));
    }

    #[test]
    fn a_failed_remote_write_frees_its_space_and_names_the_node() {
        let (master, mut conn, now) = rig();
        let req = b"PUT /api/put/raw HTTP/1.1\r\nContent-Length: 600000\r\n\r\n";
        conn.handle_input(now, req);
        conn.handle_input(now, &vec![b'x'; 600_000]);
        let t = conn.poll_transfer().expect("a write");
        conn.handle_transfer(now, t.id, TransferOutcome::Failed("te-n2: connection reset".into()));
        let o = out(&mut conn, now);
        assert!(o.starts_with("HTTP/1.1 502 "), "{o}");
        assert!(o.ends_with(r#"{"error":"Cannot write the value to te-n2: connection reset"}"#), "{o}");
        assert!(!master.store().exists("raw"));
        // The 600 kB allocation is free again: a second one fits the 1 MiB segment.
        conn.handle_input(now, req);
        conn.handle_input(now, &vec![b'y'; 600_000]);
        let t = conn.poll_transfer().expect("room again");
        conn.handle_transfer(now, t.id, TransferOutcome::Written);
        assert!(out(&mut conn, now).ends_with(r#"{"status":"success"}"#));
        // Larger than any segment anywhere: the early 507, before the body.
        conn.handle_input(now, b"PUT /api/put/huge HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n");
        assert!(conn.poll_transfer().is_none());
        assert!(out(&mut conn, now).starts_with("HTTP/1.1 507 "));
    }
}

// ---------------------------------------------------------------------------------------------
// The dashboard: `/cluster_summary`, `/ui`, a browser's `/` (docs/api.md §4.10).

mod dashboard {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use crate::config::Config;
    use crate::http::{Handler, HeadDecision, Method, RequestHead, Response};
    use crate::platform::FakePlatform;
    use crate::time::Now;

    use super::super::{Listener, Service};
    use super::body_str;
    use crate::master::Master;

    struct Rig {
        master: Arc<Master>,
        svc: Service,
        admin: Service,
        start: Instant,
        now: Now,
    }

    fn rig() -> Rig {
        let now = Now::new(Instant::now(), 1_700_000_000);
        let master = Master::new(Config::default(), Arc::new(FakePlatform::new(3)), now);
        let stats = master.register_worker();
        let svc = Service::new(master.clone(), Listener::Main, stats.clone());
        let admin = Service::new(master.clone(), Listener::Admin, stats);
        Rig { master, svc, admin, start: now.mono, now }
    }

    fn head(method: Method, target: &str, headers: &[(&str, &str)]) -> RequestHead {
        let mut h = super::handler::head(method, target);
        h.headers = headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect();
        h
    }

    fn run(svc: &mut Service, now: Now, h: &RequestHead, body: &str, took: Duration) -> Response {
        let mut req = svc.route(h);
        let resp = match svc.on_head(now, h, &mut req) {
            HeadDecision::Buffer => svc.on_request(now, h, &mut req, body.as_bytes()),
            HeadDecision::Respond(r) | HeadDecision::RespondNow(r) => r,
            HeadDecision::Stream => {
                svc.on_body(now, &mut req, body.as_bytes()).unwrap_or_else(|| svc.on_request(now, h, &mut req, &[]))
            }
        };
        svc.on_response_sent(Some(&req), h.method, resp.status, took);
        resp
    }

    impl Rig {
        fn req(&mut self, method: Method, target: &str, body: &str, took: Duration) -> Response {
            let mut h = head(method, target, &[]);
            h.content_length = Some(body.len() as u64);
            run(&mut self.svc, self.now, &h, body, took)
        }

        fn at(&mut self, ms: u64) {
            self.now.mono = self.start + Duration::from_millis(ms);
            self.master.handle_timeout(self.now);
        }

        fn summary(&mut self) -> Value {
            let r = run(&mut self.admin, self.now, &head(Method::Get, "/cluster_summary", &[]), "", Duration::ZERO);
            assert_eq!(r.status, 200);
            assert_eq!(r.content_type, Some(super::super::reply::CT_JSON));
            serde_json::from_str(&body_str(&r)).expect("JSON")
        }
    }

    #[test]
    fn the_traffic_history_has_one_window_per_two_seconds_with_rates_and_quantiles() {
        let mut t = rig();
        let us = Duration::from_micros;
        t.req(Method::Post, "/api/mount", "{\"size\":1048576}", us(50));
        t.at(2000);
        // Window 2..4 s: four puts (three fast, one slow), two 404s.
        for (i, took) in [us(50), us(50), us(50), Duration::from_millis(30)].into_iter().enumerate() {
            let r = t.req(Method::Put, "/api/put", &format!("{{\"key\":\"k{i}\",\"value\":\"v\"}}"), took);
            assert_eq!(r.status, 200);
        }
        for _ in 0..2 {
            assert_eq!(t.req(Method::Get, "/api/get/missing", "", us(50)).status, 404);
        }
        t.at(4000);
        let s = t.summary();
        let samples = s["traffic"]["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 2, "{s}");
        let w = &samples[1];
        assert_eq!(w["uptime_seconds"], 4.0);
        assert_eq!(w["window_seconds"], 2.0);
        assert_eq!(w["requests_per_second"], 3.0, "six responses in 2 s");
        assert_eq!(w["errors_4xx_per_second"], 1.0);
        assert_eq!(w["puts_per_second"], 2.0);
        assert_eq!(w["gets_per_second"], 1.0);
        assert_eq!(w["p50_ms"], 0.1, "the 100 us bucket");
        assert_eq!(w["p99_ms"], 50.0, "the slow put's bucket");
        assert_eq!(samples[0]["p50_ms"], 0.1, "the mount");
        assert_eq!(s["traffic"]["totals"]["puts"], 4);
        assert_eq!(s["totals"]["keys"], 4);
        // A quiet window has no quantiles; the history keeps five minutes.
        t.at(6000);
        t.at(8000);
        let s = t.summary();
        assert_eq!(s["traffic"]["samples"][2]["p99_ms"], 0.1, "the summary request at 4 s");
        assert_eq!(s["traffic"]["samples"][3]["p99_ms"], Value::Null);
        assert_eq!(s["traffic"]["samples"][3]["requests_per_second"], 0.0);
        for k in 4..200 {
            t.at(k * 2000);
        }
        let s = t.summary();
        let samples = s["traffic"]["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 150);
        assert_eq!(samples[149]["uptime_seconds"], 398.0);
        assert_eq!(s["process"]["uptime_seconds"], 398.0);
    }

    #[test]
    fn nodes_segments_and_a_grace_period_left() {
        let mut t = rig();
        t.master.set_process_info(crate::ProcessInfo { version: "9.9.9".into(), runtime: "test".into(), workers: 3 });
        let body = |r: &Response| body_str(r);
        let a = body(&t.req(Method::Post, "/api/mount", "{\"size\":1048576}", Duration::ZERO));
        let id = a.split('"').nth(7).unwrap().to_string();
        t.req(Method::Post, "/api/mount", "{\"size\":2097152}", Duration::ZERO);
        t.req(Method::Put, "/api/put", "{\"key\":\"k\",\"value\":\"hello\"}", Duration::ZERO);
        let r = t.req(
            Method::Post,
            "/api/unmount",
            &format!("{{\"segment_ids\":[\"{id}\"],\"grace_period_seconds\":30}}"),
            Duration::ZERO,
        );
        assert_eq!(r.status, 200, "{}", body(&r));
        t.at(12_000);
        let s = t.summary();
        assert_eq!(s["process"]["version"], "9.9.9");
        assert_eq!(s["process"]["runtime"], "test");
        assert_eq!(s["process"]["workers"], 3);
        assert_eq!(s["process"]["mode"], "master");
        assert_eq!(s["totals"]["nodes"], 1);
        assert_eq!(s["totals"]["segments"], 2);
        assert_eq!(s["totals"]["segments_unmounting"], 1);
        let node = &s["nodes"][0];
        let segs = node["segments"].as_array().unwrap();
        let sizes: u64 = segs.iter().map(|x| x["size_bytes"].as_u64().unwrap()).sum();
        assert_eq!(node["capacity_bytes"], sizes, "a draining segment still counts");
        let draining = segs.iter().find(|x| x["segment_id"] == id.as_str()).unwrap();
        assert_eq!(draining["status"], "GRACEFULLY_UNMOUNTING");
        assert_eq!(draining["grace_remaining_seconds"], 18.0);
        let other = segs.iter().find(|x| x["segment_id"] != id.as_str()).unwrap();
        assert_eq!(other["status"], "MOUNTED");
        assert_eq!(other["grace_remaining_seconds"], Value::Null);
        let used: u64 = segs.iter().map(|x| x["used_bytes"].as_u64().unwrap()).sum();
        assert_eq!(used, s["totals"]["used_bytes"].as_u64().unwrap());
        // Past the deadline the segment is gone from the summary, as from /get_segments_detail.
        t.at(31_000);
        let s = t.summary();
        assert_eq!(s["totals"]["segments"], 1, "{s}");
    }

    #[test]
    fn the_page_and_a_browser_root() {
        let mut t = rig();
        for svc in [&mut t.svc, &mut t.admin] {
            let r = run(svc, t.now, &head(Method::Get, "/ui", &[]), "", Duration::ZERO);
            assert_eq!(r.status, 200);
            assert_eq!(r.content_type, Some("text/html; charset=utf-8"));
            assert!(body_str(&r).contains("mc-master"));
            let browser = head(Method::Get, "/", &[("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")]);
            let r = run(svc, t.now, &browser, "", Duration::ZERO);
            assert_eq!(r.status, 303);
            assert!(r.headers.iter().any(|(n, v)| *n == "Location" && v == "/ui"));
            // Not a browser, or not a read: an unknown path as before (SPEC §2.3).
            for h in [
                head(Method::Get, "/", &[]),
                head(Method::Get, "/", &[("Accept", "text/html;q=0")]),
                head(Method::Post, "/", &[("Accept", "text/html")]),
            ] {
                assert_eq!(run(svc, t.now, &h, "", Duration::ZERO).status, 404);
            }
        }
        let r = t.req(Method::Post, "/cluster_summary", "", Duration::ZERO);
        assert_eq!(r.status, 405);
    }
}
