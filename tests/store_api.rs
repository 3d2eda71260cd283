//! SPEC §3, §5, §6.2-§6.7, §7, §8: Store REST API, segment and object lifecycles.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SUCCESS: &str = r#"{"status":"success"}"#;
const NIL: &str = "00000000-0000-0000-0000-000000000000";

fn e1(code: i32, msg: &str) -> String {
    format!(r#"{{"success":false,"error_code":{code},"error_message":"{msg}"}}"#)
}

fn failed(ids: &[&str]) -> String {
    serde_json::json!({
        "error": "Unmount failed for one or more segments",
        "failed_segment_ids": ids,
    })
    .to_string()
}

fn segment<'a>(segs: &'a [Value], id: &str) -> Option<&'a Value> {
    segs.iter().find(|x| x["segment_id"] == id)
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.strip_prefix("0x").expect("0x prefix"), 16).expect("hex address")
}

/// Starts a `PUT /api/put/{key}` with `Content-Length: total` and sends `partial` body bytes;
/// returns once the server has allocated it (`master_put_start_requests_total` moved) and, for a
/// key without a previous value, `/query_key` reports -703.
fn start_write(s: &Server, key: &str, total: usize, partial: &[u8], fresh_key: bool) -> Conn {
    let starts = s.metrics().val("master_put_start_requests_total");
    let mut c = s.conn();
    c.send(format!("PUT /api/put/{} HTTP/1.1\r\nContent-Length: {total}\r\n\r\n", pct(key)).as_bytes());
    c.send(partial);
    assert!(
        wait_until(Duration::from_secs(3), || { s.metrics().val("master_put_start_requests_total") > starts }),
        "write of {key:?} was never allocated"
    );
    if fresh_key {
        s.query_key(key).assert_json(404, &e1(-703, "REPLICA_IS_NOT_READY"));
    }
    c
}

// ---------------------------------------------------------------------------------------------
// Mount / unmount
// ---------------------------------------------------------------------------------------------

#[test]
fn mount_success_shapes_and_rounding() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        for (size, allocated) in [(1u64, 16777216u64), (16777216, 16777216), (16777217, 33554432)] {
            let r = s.post("/api/mount", &format!(r#"{{"size":{size}}}"#));
            assert_eq!(r.status, 200, "{}", r.text());
            let id = r.json()["segment_ids"][0].as_str().unwrap().to_string();
            assert!(is_uuid_v4(&id), "{id}");
            r.assert_json(
                200,
                &format!(r#"{{"status":"success","segment_ids":["{id}"],"allocated_size":{allocated}}}"#),
            );
            let segs = s.segments();
            let seg = segment(&segs, &id).expect("listed");
            assert_eq!(seg["size_bytes"].as_u64(), Some(allocated));
            assert_eq!(seg["protocol"], "tcp");
            assert_eq!(seg["status"], "MOUNTED");
        }
        // Explicit protocol / location, unknown members ignored, null = absent.
        for (body, proto) in [
            (r#"{"size":1,"protocol":"rdma","location":"x"}"#, "rdma"),
            (r#"{"size":1,"protocol":"tcp","location":""}"#, "tcp"),
            (r#"{"size":1,"protocol":null,"location":null,"foo":[1,{"a":2}]}"#, "tcp"),
        ] {
            let r = s.request("POST", "/api/mount", &[("Content-Type", "text/plain")], body.as_bytes());
            assert_eq!(r.status, 200, "{body}: {}", r.text());
            let id = r.json()["segment_ids"][0].as_str().unwrap().to_string();
            assert_eq!(segment(&s.segments(), &id).unwrap()["protocol"], proto);
        }
        // Each mount gets fresh ids.
        let segs = s.segments();
        assert_eq!(segs.len(), 6);
        let m = s.metrics();
        assert_eq!(m.val("master_mount_segment_requests_total"), 6.0);
        assert_eq!(m.val("master_total_capacity_bytes"), (16777216 * 5 + 33554432) as f64);
    });
}

#[test]
fn mount_default_protocol_follows_flag() {
    for_each_runtime(|_| {
        let s = Server::start(&["--protocol", "rdma", "--te-port", "off"]); // a label only without the data plane
        let id = s.mount(1)[0].clone();
        assert_eq!(segment(&s.segments(), &id).unwrap()["protocol"], "rdma");
        let r = s.post("/api/mount", r#"{"size":1,"protocol":"tcp"}"#);
        let id = r.json()["segment_ids"][0].as_str().unwrap().to_string();
        assert_eq!(segment(&s.segments(), &id).unwrap()["protocol"], "tcp");
    });
}

#[test]
fn mount_validation_errors() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let size_err = "Invalid size: must be an integer in [1, 4611686018427387904]";
        let cases: &[(&[u8], &str)] = &[
            (b"", "Malformed JSON body"),
            (b"{", "Malformed JSON body"),
            (b"{\"size\":1", "Malformed JSON body"),
            (b"{\"size\":1,\"size\":2}", "Malformed JSON body"),
            (b"\xff", "Malformed JSON body"),
            (b"{\"size\":1,\"location\":\"\xff\"}", "Malformed JSON body"),
            (b"size=1", "Malformed JSON body"),
            (b"[]", "Request body must be a JSON object"),
            (b"[{\"size\":1}]", "Request body must be a JSON object"),
            (b"1", "Request body must be a JSON object"),
            (b"\"x\"", "Request body must be a JSON object"),
            (b"null", "Request body must be a JSON object"),
            (b"{}", size_err),
            (b"{\"size\":null}", size_err),
            (b"{\"size\":0}", size_err),
            (b"{\"size\":-1}", size_err),
            (b"{\"size\":16.0}", size_err),
            (b"{\"size\":1.6e1}", size_err),
            (b"{\"size\":1e3}", size_err),
            (b"{\"size\":\"16\"}", size_err),
            (b"{\"size\":true}", size_err),
            (b"{\"size\":[1]}", size_err),
            (b"{\"size\":4611686018427387905}", size_err),
            (b"{\"size\":18446744073709551616}", size_err),
            (b"{\"size\":0,\"protocol\":\"udp\",\"location\":1}", size_err),
            (b"{\"size\":1,\"protocol\":\"TCP\"}", "Invalid protocol: must be tcp or rdma"),
            (b"{\"size\":1,\"protocol\":\"\"}", "Invalid protocol: must be tcp or rdma"),
            (b"{\"size\":1,\"protocol\":\"efa\"}", "Invalid protocol: must be tcp or rdma"),
            (b"{\"size\":1,\"protocol\":1}", "Invalid protocol: must be tcp or rdma"),
            (b"{\"size\":1,\"protocol\":\"x\",\"location\":1}", "Invalid protocol: must be tcp or rdma"),
            (b"{\"size\":1,\"location\":5}", "Invalid location: must be a string"),
            (b"{\"size\":1,\"location\":[\"a\"]}", "Invalid location: must be a string"),
            (b"{\"size\":1,\"location\":false}", "Invalid location: must be a string"),
        ];
        for (body, msg) in cases {
            let r = s.request("POST", "/api/mount", &[], body);
            assert_eq!(
                r.text(),
                serde_json::json!({ "error": msg }).to_string(),
                "body {:?}",
                String::from_utf8_lossy(body)
            );
            r.assert_error(400, msg);
        }
        // The OS refuses a 1 PiB allocation: 507, nothing mounted.
        s.post("/api/mount", r#"{"size":1125899906842624}"#)
            .assert_error(507, "Allocate and mount failed: insufficient memory");
        s.get("/get_segments_detail").assert_json(200, r#"{"total_segments":0,"segments":[]}"#);
        let m = s.metrics();
        assert_eq!(m.val("master_mount_segment_requests_total"), 0.0);
        assert_eq!(m.val("master_total_capacity_bytes"), 0.0);
    });
}

#[test]
fn mount_shm_validation_errors_without_a_file() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let page = page_size();
        let off_err = format!("Invalid offset: must be a non-negative multiple of {page}");
        let size_err = "Invalid size: must be an integer in [1, 4611686018427387904]";
        let long = "n".repeat(256);
        let ok255 = format!("mc-e2e-none-{}", "n".repeat(255 - 12));
        assert_eq!(ok255.len(), 255);
        let cases: Vec<(String, String)> = vec![
            ("".into(), "Malformed JSON body".into()),
            ("[1]".into(), "Request body must be a JSON object".into()),
            ("{}".into(), "Invalid name: must be a non-empty string".into()),
            (r#"{"name":null,"size":1}"#.into(), "Invalid name: must be a non-empty string".into()),
            (r#"{"name":"","size":1}"#.into(), "Invalid name: must be a non-empty string".into()),
            (r#"{"name":"/","size":1}"#.into(), "Invalid name: must be a non-empty string".into()),
            (r#"{"name":5,"size":1}"#.into(), "Invalid name: must be a non-empty string".into()),
            (r#"{"name":["a"],"size":1}"#.into(), "Invalid name: must be a non-empty string".into()),
            (r#"{"name":"a/b","size":1}"#.into(), "Invalid name: must not contain '/'".into()),
            (r#"{"name":"//a","size":1}"#.into(), "Invalid name: must not contain '/'".into()),
            (r#"{"name":"a/","size":1}"#.into(), "Invalid name: must not contain '/'".into()),
            (r#"{"name":".","size":1}"#.into(), "Invalid name: must not be '.' or '..'".into()),
            (r#"{"name":"..","size":1}"#.into(), "Invalid name: must not be '.' or '..'".into()),
            (r#"{"name":"/..","size":1}"#.into(), "Invalid name: must not be '.' or '..'".into()),
            (r#"{"name":"a\u0000b","size":1}"#.into(), "Invalid name: must not contain NUL".into()),
            (format!(r#"{{"name":"{long}","size":1}}"#), "Invalid name: must be at most 255 bytes".into()),
            (format!(r#"{{"name":"/{long}","size":1}}"#), "Invalid name: must be at most 255 bytes".into()),
            // Name checks come first.
            (r#"{"name":"a/b","size":0,"offset":1}"#.into(), "Invalid name: must not contain '/'".into()),
            (format!(r#"{{"name":"{ok255}"}}"#), size_err.into()),
            (r#"{"name":"x","size":0}"#.into(), size_err.into()),
            (r#"{"name":"x","size":"1"}"#.into(), size_err.into()),
            (r#"{"name":"x","size":1.0}"#.into(), size_err.into()),
            (r#"{"name":"x","size":0,"offset":1}"#.into(), size_err.into()),
            (r#"{"name":"x","size":1,"offset":1}"#.into(), off_err.clone()),
            (r#"{"name":"x","size":1,"offset":-4096}"#.into(), off_err.clone()),
            (format!(r#"{{"name":"x","size":1,"offset":{}}}"#, page / 2), off_err.clone()),
            (format!(r#"{{"name":"x","size":1,"offset":{page}.0}}"#), off_err.clone()),
            (format!(r#"{{"name":"x","size":1,"offset":"{page}"}}"#), off_err.clone()),
            (r#"{"name":"x","size":1,"offset":1,"protocol":"x"}"#.into(), off_err.clone()),
            (r#"{"name":"x","size":1,"protocol":"RDMA"}"#.into(), "Invalid protocol: must be tcp or rdma".into()),
            (
                r#"{"name":"x","size":1,"protocol":"rdma","location":{}}"#.into(),
                "Invalid location: must be a string".into(),
            ),
        ];
        for (body, msg) in &cases {
            s.post("/api/mount_shm", body).assert_error(400, msg);
        }
        assert_eq!(s.detail()["total_segments"], 0);
    });
}

fn unmount_body_errors() -> Vec<(String, String)> {
    let valid = "3f2b8c1e-9d4a-4e7b-8a61-52c0d9e7f114";
    let missing = "Missing segment_ids";
    let ty = "Invalid segment_ids: must be a string or an array of strings";
    let grace = "Invalid grace_period_seconds: must be an integer in [0, 86400]";
    let mut v: Vec<(String, String)> = vec![
        ("".into(), "Malformed JSON body".into()),
        ("{\"segment_ids\":".into(), "Malformed JSON body".into()),
        (r#"{"segment_ids":"a","segment_ids":"b"}"#.into(), "Malformed JSON body".into()),
        ("[]".into(), "Request body must be a JSON object".into()),
        ("\"abc\"".into(), "Request body must be a JSON object".into()),
        ("{}".into(), missing.into()),
        (r#"{"segment_ids":null}"#.into(), missing.into()),
        (r#"{"segment_ids":""}"#.into(), missing.into()),
        (r#"{"segment_ids":[]}"#.into(), missing.into()),
        (r#"{"grace_period_seconds":-1}"#.into(), missing.into()),
        (r#"{"segment_ids":5}"#.into(), ty.into()),
        (r#"{"segment_ids":true}"#.into(), ty.into()),
        (r#"{"segment_ids":{"a":1}}"#.into(), ty.into()),
        (r#"{"segment_ids":[5]}"#.into(), ty.into()),
        (r#"{"segment_ids":[null]}"#.into(), ty.into()),
        (r#"{"segment_ids":[["x"]]}"#.into(), ty.into()),
        (r#"{"segment_ids":"abc"}"#.into(), "Invalid segment_ids: not a UUID: abc".into()),
        (r#"{"segment_ids":["abc"]}"#.into(), "Invalid segment_ids: not a UUID: abc".into()),
        (format!(r#"{{"segment_ids":["{valid}","abc"]}}"#), "Invalid segment_ids: not a UUID: abc".into()),
        (
            r#"{"segment_ids":"3f2b8c1e9d4a4e7b8a6152c0d9e7f114"}"#.into(),
            "Invalid segment_ids: not a UUID: 3f2b8c1e9d4a4e7b8a6152c0d9e7f114".into(),
        ),
        (
            r#"{"segment_ids":"{3f2b8c1e-9d4a-4e7b-8a61-52c0d9e7f114}"}"#.into(),
            "Invalid segment_ids: not a UUID: {3f2b8c1e-9d4a-4e7b-8a61-52c0d9e7f114}".into(),
        ),
        (
            r#"{"segment_ids":"3f2b8c1e-9d4a-4e7b-8a61-52c0d9e7f11g"}"#.into(),
            "Invalid segment_ids: not a UUID: 3f2b8c1e-9d4a-4e7b-8a61-52c0d9e7f11g".into(),
        ),
        (
            r#"{"segment_ids":"3f2b8c1e-9d4a4-e7b-8a61-52c0d9e7f114"}"#.into(),
            "Invalid segment_ids: not a UUID: 3f2b8c1e-9d4a4-e7b-8a61-52c0d9e7f114".into(),
        ),
        (r#"{"segment_ids":"abc","grace_period_seconds":-1}"#.into(), "Invalid segment_ids: not a UUID: abc".into()),
    ];
    for g in ["-1", "86401", "1.5", "1e2", "\"1\"", "true", "[1]", "10.0"] {
        v.push((format!(r#"{{"segment_ids":"{valid}","grace_period_seconds":{g}}}"#), grace.into()));
    }
    v
}

#[test]
fn unmount_validation_errors_change_nothing() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let id = s.mount(1)[0].clone();
        for endpoint in ["/api/unmount", "/api/unmount_shm"] {
            for (body, msg) in unmount_body_errors() {
                let r = s.post(endpoint, &body);
                assert_eq!(
                    (r.status, r.text()),
                    (400, serde_json::json!({ "error": msg }).to_string()),
                    "{endpoint} {body}"
                );
                r.assert_error(400, &msg);
            }
            // Validation happens before any effect.
            s.post(endpoint, &format!(r#"{{"segment_ids":["{id}","not-a-uuid"]}}"#))
                .assert_error(400, "Invalid segment_ids: not a UUID: not-a-uuid");
            s.post(endpoint, &format!(r#"{{"segment_ids":["{id}"],"grace_period_seconds":86401}}"#))
                .assert_error(400, "Invalid grace_period_seconds: must be an integer in [0, 86400]");
            assert_eq!(segment(&s.segments(), &id).unwrap()["status"], "MOUNTED");
        }
        let m = s.metrics();
        assert_eq!(m.val("master_unmount_segment_requests_total"), 0.0);
        assert_eq!(m.val("master_unmount_segment_failures_total"), 0.0);
    });
}

#[test]
fn unmount_processing_and_failures() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let startup = s.segments()[0]["segment_id"].as_str().unwrap().to_string();
        let a = s.mount(1)[0].clone();
        let b = s.mount(1)[0].clone();
        let c = s.mount(1)[0].clone();
        let unknown = "3f2b8c1e-9d4a-4e7b-8a61-52c0d9e7f114";
        let unknown_upper = unknown.to_uppercase();
        let v1 = "ffffffff-ffff-1fff-ffff-ffffffffffff"; // well-formed, other version digit

        // String form.
        s.post("/api/unmount", &format!(r#"{{"segment_ids":"{a}"}}"#)).assert_json(200, SUCCESS);
        assert!(segment(&s.segments(), &a).is_none());
        // Mixed: the valid one is still unmounted; failed ids as written, in order, no repeats.
        s.post(
            "/api/unmount",
            &format!(
                r#"{{"segment_ids":["{unknown_upper}","{b}","{unknown}","{NIL}","{v1}"],"grace_period_seconds":0}}"#
            ),
        )
        .assert_json(404, &failed(&[&unknown_upper, NIL, v1]));
        assert!(segment(&s.segments(), &b).is_none());
        // Already removed → failed.
        s.post("/api/unmount", &format!(r#"{{"segment_ids":["{a}"]}}"#)).assert_json(404, &failed(&[&a]));
        // Upper-case input, repeated (case-insensitively) → processed once.
        s.post("/api/unmount", &format!(r#"{{"segment_ids":["{}","{c}"]}}"#, c.to_uppercase()))
            .assert_json(200, SUCCESS);
        assert!(segment(&s.segments(), &c).is_none());
        // Kinds: /api/unmount_shm refuses /api/mount and start-up segments.
        s.post("/api/unmount_shm", &format!(r#"{{"segment_ids":"{startup}"}}"#)).assert_json(404, &failed(&[&startup]));
        assert_eq!(segment(&s.segments(), &startup).unwrap()["status"], "MOUNTED");
        // The start-up segment is unmountable with /api/unmount.
        s.post("/api/unmount", &format!(r#"{{"segment_ids":["{startup}"]}}"#)).assert_json(200, SUCCESS);
        s.get("/get_segments_detail").assert_json(200, r#"{"total_segments":0,"segments":[]}"#);
        let m = s.metrics();
        // ids processed: a; unknown,b,nil,v1; a; c; startup; startup.
        assert_eq!(m.val("master_unmount_segment_requests_total"), 9.0);
        assert_eq!(m.val("master_unmount_segment_failures_total"), 5.0);
        assert_eq!(m.val("master_total_capacity_bytes"), 0.0);
    });
}

#[test]
fn registration_size_splitting_for_mount() {
    for_each_runtime(|_| {
        let s = Server::start(&["--max-registration-size", "40MiB"]);
        let r = s.post("/api/mount", r#"{"size":104857600}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["allocated_size"], 117440512);
        let ids: Vec<String> =
            v["segment_ids"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
        assert_eq!(ids.len(), 4);
        let segs = s.segments();
        let chunks: Vec<(u64, u64)> = ids
            .iter()
            .map(|id| {
                let seg = segment(&segs, id).expect("chunk listed");
                assert_eq!(seg["status"], "MOUNTED");
                (hex(seg["base_address"].as_str().unwrap()), seg["size_bytes"].as_u64().unwrap())
            })
            .collect();
        let sizes: Vec<u64> = chunks.iter().map(|c| c.1).collect();
        assert_eq!(sizes, [33554432, 33554432, 33554432, 16777216]);
        for w in chunks.windows(2) {
            assert_eq!(w[0].0 + w[0].1, w[1].0, "chunks are consecutive, in address order");
        }
        assert_eq!(s.metrics().val("master_mount_segment_requests_total"), 4.0);

        // A chunk is an independent segment.
        s.post("/api/unmount", &format!(r#"{{"segment_ids":"{}"}}"#, ids[1])).assert_json(200, SUCCESS);
        assert_eq!(s.segments().len(), 3);
    });
}

#[test]
fn registration_size_below_alignment_uses_alignment() {
    for_each_runtime(|_| {
        let s = Server::start(&["--max-registration-size", "1000"]);
        let r = s.post("/api/mount", r#"{"size":41943040}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["allocated_size"], 50331648);
        assert_eq!(v["segment_ids"].as_array().unwrap().len(), 3);
        assert!(s.segments().iter().all(|x| x["size_bytes"] == 16777216));
    });
}

// ---------------------------------------------------------------------------------------------
// Put / get / exist / remove
// ---------------------------------------------------------------------------------------------

#[test]
fn put_json_and_read_back() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        s.put("my_object", "hello world");
        let r = s.get("/api/get/my_object");
        r.assert(200, CT_OCTET, "hello world");
        assert_eq!(r.content_length(), Some(11));
        s.get("/api/exist/my_object").assert_json(200, r#"{"exists":true}"#);

        // JSON escapes decode to UTF-8 bytes.
        s.request(
            "PUT",
            "/api/put",
            &[("Content-Type", "text/plain")],
            br#"{"key":"esc","value":"a\nb\u0000c\u00e9\ud83d\ude00\"\\","extra":{"x":[1]}}"#,
        )
        .assert_json(200, SUCCESS);
        assert_eq!(s.get_value("esc").body, "a\nb\0cé😀\"\\".as_bytes());

        // Path keys are percent-decoded; `+` stays `+`.
        for k in ["a/b", "sp ace", "a+b", "%", "ключ"] {
            s.put(k, &format!("value of {k}"));
        }
        for (path, k) in [
            ("/api/get/a%2Fb", "a/b"),
            ("/api/get/a%2fb", "a/b"),
            ("/api/get/sp%20ace", "sp ace"),
            ("/api/get/a+b", "a+b"),
            ("/api/get/%25", "%"),
            ("/api/get/%D0%BA%D0%BB%D1%8E%D1%87", "ключ"),
        ] {
            let r = s.get(path);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            assert_eq!(r.text(), format!("value of {k}"), "{path}");
        }
        s.get("/api/exist/sp%20ace").assert_json(200, r#"{"exists":true}"#);
        // A 4096-byte key is valid.
        let k4096 = "k".repeat(4096);
        s.put(&k4096, "big key");
        assert_eq!(s.get_value(&k4096).text(), "big key");
        // The Range header is ignored.
        let r = s.request("GET", "/api/get/my_object", &[("Range", "bytes=0-1")], b"");
        r.assert(200, CT_OCTET, "hello world");
        let m = s.metrics();
        assert_eq!(m.val("master_put_end_requests_total"), 8.0);
        assert_eq!(m.val("master_key_count"), 8.0);
    });
}

#[test]
fn put_json_errors_in_order() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let missing = "Missing key or value";
        let key_str = "Invalid key: must be a string";
        let val_str = "Invalid value: must be a string";
        let ctrl = "Invalid key: must not contain control characters";
        let long = format!(r#"{{"key":"{}","value":"v"}}"#, "k".repeat(4097));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "Malformed JSON body"),
            (b"{".to_vec(), "Malformed JSON body"),
            (br#"{"key":"k","value":"v""#.to_vec(), "Malformed JSON body"),
            (br#"{"key":"k","key":"k2","value":"v"}"#.to_vec(), "Malformed JSON body"),
            (b"\xff".to_vec(), "Malformed JSON body"),
            (b"{\"key\":\"\xff\",\"value\":\"v\"}".to_vec(), "Malformed JSON body"),
            (br#"{"key":"k","value":"v"} x"#.to_vec(), "Malformed JSON body"),
            (b"[]".to_vec(), "Request body must be a JSON object"),
            (br#""x""#.to_vec(), "Request body must be a JSON object"),
            (b"1".to_vec(), "Request body must be a JSON object"),
            (b"null".to_vec(), "Request body must be a JSON object"),
            (b"{}".to_vec(), missing),
            (br#"{"key":"k"}"#.to_vec(), missing),
            (br#"{"value":"v"}"#.to_vec(), missing),
            (br#"{"key":null,"value":"v"}"#.to_vec(), missing),
            (br#"{"key":"","value":"v"}"#.to_vec(), missing),
            (br#"{"key":"k","value":null}"#.to_vec(), missing),
            (br#"{"key":"","value":""}"#.to_vec(), missing),
            (br#"{"key":1}"#.to_vec(), missing),
            (br#"{"key":"","value":1}"#.to_vec(), missing),
            (br#"{"key":1,"value":"v"}"#.to_vec(), key_str),
            (br#"{"key":true,"value":"v"}"#.to_vec(), key_str),
            (br#"{"key":["k"],"value":"v"}"#.to_vec(), key_str),
            (br#"{"key":1,"value":2}"#.to_vec(), key_str),
            (br#"{"key":{},"value":""}"#.to_vec(), key_str),
            (br#"{"key":"k","value":1}"#.to_vec(), val_str),
            (br#"{"key":"k","value":{"a":1}}"#.to_vec(), val_str),
            (br#"{"key":"k","value":false}"#.to_vec(), val_str),
            (br#"{"key":"k","value":["v"]}"#.to_vec(), val_str),
            (br#"{"key":"a\u0001","value":"v"}"#.to_vec(), ctrl),
            (br#"{"key":"a\n","value":"v"}"#.to_vec(), ctrl),
            (br#"{"key":"\u007f","value":"v"}"#.to_vec(), ctrl),
            (br#"{"key":"x\u0085","value":"v"}"#.to_vec(), ctrl),
            (br#"{"key":"\u009f","value":"v"}"#.to_vec(), ctrl),
            (br#"{"key":"a\u0001","value":""}"#.to_vec(), ctrl),
            (long.into_bytes(), "Invalid key: must be at most 4096 bytes"),
            (br#"{"key":"k","value":""}"#.to_vec(), "Invalid value: must not be empty"),
        ];
        for (body, msg) in &cases {
            let r = s.request("PUT", "/api/put", &[("Content-Type", "application/json")], body);
            assert_eq!(
                (r.status, r.text()),
                (400, serde_json::json!({ "error": msg }).to_string()),
                "body {:?}",
                String::from_utf8_lossy(body)
            );
            r.assert_error(400, msg);
        }
        let m = s.metrics();
        assert_eq!(m.val("master_put_start_requests_total"), 0.0);
        assert_eq!(m.val("master_key_count"), 0.0);
        s.get("/get_all_keys").assert_plain(200, "");
    });
}

#[test]
fn raw_put_and_errors() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let all: Vec<u8> = (0..=255u8).collect();
        s.request("PUT", "/api/put/raw%2Fkey", &[], &all).assert_json(200, SUCCESS);
        let r = s.get("/api/get/raw%2Fkey");
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type(), Some(CT_OCTET));
        assert_eq!(r.body, all);
        s.request("PUT", "/api/put/a+b", &[], b"plus").assert_json(200, SUCCESS);
        // Content-Type is ignored: a JSON-looking body is stored verbatim.
        s.request("PUT", "/api/put/json", &[("Content-Type", "application/json")], br#"{"key":"x","value":"y"}"#)
            .assert_json(200, SUCCESS);
        assert_eq!(s.get_value("json").text(), r#"{"key":"x","value":"y"}"#);
        assert!(!s.exists("x"));
        assert_eq!(s.all_keys(), ["a+b", "json", "raw/key"]);

        // Errors keep the connection open (the body was read).
        let mut c = s.conn();
        let cases: &[(&str, &[u8], &str)] = &[
            ("/api/put/k", b"", "Invalid value: must not be empty"),
            ("/api/put/%01", b"v", "Invalid key: must not contain control characters"),
            ("/api/put/%01", b"", "Invalid key: must not contain control characters"),
            ("/api/put/%7F", b"v", "Invalid key: must not contain control characters"),
            ("/api/put/%FF", b"v", "Invalid key: must be valid UTF-8"),
            ("/api/put/", b"v", "Invalid key: must not be empty"),
        ];
        for (path, body, msg) in cases {
            c.send(&build_request("PUT", path, &[], body));
            let r = c.read_response();
            r.assert_error(400, msg);
            assert!(!r.closes(), "{path}");
        }
        let long = format!("/api/put/{}", "k".repeat(4097));
        c.send(&build_request("PUT", &long, &[], b"v"));
        c.read_response().assert_error(400, "Invalid key: must be at most 4096 bytes");
        // Chunked empty body.
        c.send(b"PUT /api/put/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        c.read_response().assert_error(400, "Invalid value: must not be empty");
        c.send(b"GET /health HTTP/1.1\r\n\r\n");
        c.read_response().assert_plain(200, "OK");
        assert!(!s.exists("k"));
        assert_eq!(s.metrics().val("master_put_start_requests_total"), 3.0);
    });
}

#[test]
fn get_exist_remove() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        s.get("/api/get/k").assert_error(404, "Key not found");
        s.get("/api/exist/k").assert_json(200, r#"{"exists":false}"#);
        s.delete("/api/remove/k").assert_error(404, "Key not found");
        s.put("k", "value");
        s.get("/api/exist/k").assert_json(200, r#"{"exists":true}"#);
        // HEAD grants no lease.
        let h = s.head("/api/get/k");
        assert_eq!(h.status, 200);
        assert_eq!(h.content_length(), Some(5));
        assert_eq!(h.content_type(), Some(CT_OCTET));
        let h = s.head("/api/get/missing");
        assert_eq!(h.status, 404);
        assert_eq!(h.content_length(), Some(r#"{"error":"Key not found"}"#.len() as u64));
        s.delete("/api/remove/k").assert_json(200, SUCCESS);
        s.get("/api/get/k").assert_error(404, "Key not found");
        s.get("/api/exist/k").assert_json(200, r#"{"exists":false}"#);
        s.delete("/api/remove/k").assert_error(404, "Key not found");
        s.get("/get_all_keys").assert_plain(200, "");
        s.get("/query_key?key=k").assert_json(404, &e1(-704, "OBJECT_NOT_FOUND"));
        let m = s.metrics();
        assert_eq!(m.val("master_key_count"), 0.0);
        assert_eq!(m.val("master_allocated_bytes"), 0.0);

        // Invalid keys.
        for route in ["get", "exist", "remove"] {
            let method = if route == "remove" { "DELETE" } else { "GET" };
            for (k, msg) in [
                ("", "Invalid key: must not be empty"),
                ("%01", "Invalid key: must not contain control characters"),
                ("a%0Ab", "Invalid key: must not contain control characters"),
                ("%C2%80", "Invalid key: must not contain control characters"),
                ("%FF%FE", "Invalid key: must be valid UTF-8"),
            ] {
                s.request(method, &format!("/api/{route}/{k}"), &[], b"").assert_error(400, msg);
            }
            s.request(method, &format!("/api/{route}/{}", "x".repeat(4097)), &[], b"")
                .assert_error(400, "Invalid key: must be at most 4096 bytes");
        }
    });
}

#[test]
fn remove_all_skips_leased_objects() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        s.delete("/api/remove_all").assert_json(200, r#"{"status":"success removed 0 keys"}"#);
        for k in ["a", "b", "c"] {
            s.put(k, "v");
        }
        assert_eq!(s.get_value("b").status, 200); // lease on b (default TTL 10 s)
        s.delete("/api/remove_all").assert_json(200, r#"{"status":"success removed 2 keys"}"#);
        assert_eq!(s.all_keys(), ["b"]);
        s.delete("/api/remove_all").assert_json(200, r#"{"status":"success removed 0 keys"}"#);
        assert!(s.exists("b"));
        assert_eq!(s.metrics().val("master_remove_all_requests_total"), 3.0);
    });
}

#[test]
fn leases_block_remove_until_expiry() {
    for_each_runtime(|_| {
        let s = Server::start(&["--default-kv-lease-ttl", "500ms", "--global-segment-size", "16MiB"]);
        // Nothing but a successful GET grants a lease.
        s.put("k", "value");
        assert_eq!(s.head("/api/get/k").status, 200);
        assert!(s.exists("k"));
        assert_eq!(s.query_key("k").status, 200);
        assert_eq!(s.get("/batch_query_keys?keys=k").status, 200);
        s.post("/batch_query_keys", r#"{"keys":["k"]}"#);
        s.remove("k").assert_json(200, SUCCESS);

        s.put("k", "value");
        let r = s.get_value("k");
        let got = Instant::now();
        assert_eq!(r.status, 200);
        s.remove("k").assert_error(409, "Key has an active lease");
        s.delete("/api/remove_all").assert_json(200, r#"{"status":"success removed 0 keys"}"#);
        assert!(s.exists("k"), "a 409 removes nothing");
        let mut removed_at = None;
        wait_until(Duration::from_secs(3), || {
            let r = s.remove("k");
            if r.status == 200 {
                removed_at = Some(got.elapsed());
                true
            } else {
                r.assert_error(409, "Key has an active lease");
                false
            }
        });
        let el = removed_at.expect("lease never expired");
        assert!(el >= Duration::from_millis(450), "lease expired too early: {el:?}");

        // remove_all after expiry.
        s.put("a", "v");
        assert_eq!(s.get_value("a").status, 200);
        s.delete("/api/remove_all").assert_json(200, r#"{"status":"success removed 0 keys"}"#);
        thread::sleep(Duration::from_millis(700));
        s.delete("/api/remove_all").assert_json(200, r#"{"status":"success removed 1 keys"}"#);
    });
}

#[test]
fn lease_is_extended_by_later_reads() {
    for_each_runtime(|_| {
        let s = Server::start(&["--default-kv-lease-ttl", "1s", "--global-segment-size", "16MiB"]);
        s.put("k", "v");
        assert_eq!(s.get_value("k").status, 200);
        thread::sleep(Duration::from_millis(500));
        assert_eq!(s.get_value("k").status, 200);
        let second = Instant::now();
        // The first lease has expired by now; the second has not.
        thread::sleep(Duration::from_millis(600));
        if second.elapsed() < Duration::from_millis(950) {
            s.remove("k").assert_error(409, "Key has an active lease");
        }
        assert!(wait_until(Duration::from_secs(3), || s.remove("k").status == 200));
        assert!(second.elapsed() >= Duration::from_millis(950));
    });
}

#[test]
fn zero_lease_ttl_disables_leases() {
    for_each_runtime(|_| {
        let s = Server::start(&["--default-kv-lease-ttl", "0", "--global-segment-size", "16MiB"]);
        s.put("k", "v");
        assert_eq!(s.get_value("k").status, 200);
        s.remove("k").assert_json(200, SUCCESS);
    });
}

#[test]
fn replace_is_atomic_and_releases_memory() {
    for_each_runtime(|_| {
        let s = Server::start(&["--default-kv-lease-ttl", "1s", "--global-segment-size", "16MiB"]);
        s.put("k", "aaaa");
        assert_eq!(s.get_value("k").text(), "aaaa"); // lease on the old value
        s.put("k", "bbbbbbbb");
        assert_eq!(s.query_key("k").json()["data"][0]["size_"], 8);
        let m = s.metrics();
        assert_eq!(m.val("master_allocated_bytes"), 12.0, "old value held by its lease");
        assert_eq!(m.val("master_key_count"), 1.0);
        // The new value has no lease.
        s.remove("k").assert_json(200, SUCCESS);
        assert_eq!(s.metrics().val("master_allocated_bytes"), 4.0);
        assert!(wait_until(Duration::from_secs(3), || { s.metrics().val("master_allocated_bytes") == 0.0 }));

        // Replace without a lease releases the old value at once.
        s.put("x", "12345");
        s.put_raw("x", b"123").assert_json(200, SUCCESS);
        assert_eq!(s.metrics().val("master_allocated_bytes"), 3.0);
        assert_eq!(s.get_value("x").body, b"123");
        let m = s.metrics();
        assert_eq!(m.val("master_put_end_requests_total"), 4.0);
        assert_eq!(m.raw_value("master_value_size_bytes_count"), Some("4"));
        assert_eq!(m.raw_value("master_value_size_bytes_sum"), Some("20"));
    });
}

#[test]
fn insufficient_storage() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        s.put_raw("k", b"v").assert_error(507, "Insufficient storage");
        s.json("PUT", "/api/put", r#"{"key":"k","value":"v"}"#).assert_error(507, "Insufficient storage");
        // Raw put with Content-Length: 507 before the body is read, connection closed.
        let mut c = s.conn();
        c.send(b"PUT /api/put/k HTTP/1.1\r\nContent-Length: 100\r\n\r\n");
        let r = c.read_response();
        r.assert_error(507, "Insufficient storage");
        assert!(r.closes());
        c.expect_closed();
        // With 100-continue: 507 instead of 100.
        let mut c = s.conn();
        c.send(b"PUT /api/put/k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n");
        c.read_response().assert_error(507, "Insufficient storage");
        c.expect_closed();
        // Chunked: allocation after the whole body.
        let mut c = s.conn();
        c.send(b"PUT /api/put/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nv\r\n0\r\n\r\n");
        c.read_response().assert_error(507, "Insufficient storage");
        let m = s.metrics();
        assert_eq!(m.val("master_put_start_requests_total"), 5.0);
        assert_eq!(m.val("master_put_start_failures_total"), 5.0);
        assert_eq!(m.val("master_attempted_evictions_total"), 0.0);
        assert!(!s.exists("k"));

        // A value longer than every mounted segment: 507 without eviction.
        let s = Server::start(&["--global-segment-size", "1MiB"]);
        s.put("small", "v");
        let mut c = s.conn();
        c.send(b"PUT /api/put/big HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n");
        c.read_response().assert_error(507, "Insufficient storage");
        c.expect_closed();
        let m = s.metrics();
        assert_eq!(m.val("master_attempted_evictions_total"), 0.0);
        assert!(s.exists("small"));
    });
}

// ---------------------------------------------------------------------------------------------
// Eviction
// ---------------------------------------------------------------------------------------------

#[test]
fn eviction_worked_example() {
    for_each_runtime(|_| {
        let s = Server::start(&["--eviction-high-watermark-ratio", "0.5", "--eviction-ratio", "0.1"]);
        s.mount(16777216);
        for i in 0..14u8 {
            let key = format!("ev-{i:02}");
            let r = s.put_raw(&key, &vec![b'A' + i; 1 << 20]);
            r.assert_json(200, SUCCESS);
            if i == 8 {
                let keys = s.all_keys();
                assert_eq!(keys.first().map(String::as_str), Some("ev-02"), "{keys:?}");
                assert_eq!(keys.len(), 7);
            }
        }
        let want: Vec<String> = (6..14).map(|i| format!("ev-{i:02}")).collect();
        assert_eq!(s.all_keys(), want);
        let m = s.metrics();
        for (name, v) in [
            ("master_key_count", 8.0),
            ("master_allocated_bytes", 8388608.0),
            ("master_successful_evictions_total", 3.0),
            ("master_attempted_evictions_total", 3.0),
            ("master_evicted_key_count", 6.0),
            ("master_evicted_size_bytes", 6291456.0),
        ] {
            assert_eq!(m.val(name), v, "{name}");
        }
        let t = s.get("/metrics/summary").text();
        assert_eq!(t.lines().nth(7), Some("Eviction: Success/Attempts=3/3, keys=6, size=6.00 MB"), "{t}");
        // Survivors are intact; evicted keys are gone everywhere.
        assert_eq!(s.get_value("ev-13").body, vec![b'A' + 13; 1 << 20]);
        s.get_value("ev-00").assert_error(404, "Key not found");
        s.get("/query_key?key=ev-05").assert_json(404, &e1(-704, "OBJECT_NOT_FOUND"));
    });
}

#[test]
fn eviction_on_allocation_failure_skips_leased_values() {
    for_each_runtime(|_| {
        let s = Server::start(&["--eviction-high-watermark-ratio", "1.0", "--eviction-ratio", "0.5"]);
        s.mount(16777216);
        let four = 4usize << 20;
        for i in 0..4u8 {
            s.put_raw(&format!("k{i}"), &vec![b'0' + i; four]).assert_json(200, SUCCESS);
        }
        assert_eq!(s.metrics().val("master_attempted_evictions_total"), 0.0);
        assert_eq!(s.get_value("k0").body.len(), four); // k0 leased: not a candidate
        s.put_raw("k4", &vec![b'4'; four]).assert_json(200, SUCCESS);
        // Candidates k1, k2, k3 → ceil(3 × 0.5) = 2 evicted: k1, k2.
        assert_eq!(s.all_keys(), ["k0", "k3", "k4"]);
        let m = s.metrics();
        assert_eq!(m.val("master_attempted_evictions_total"), 1.0);
        assert_eq!(m.val("master_successful_evictions_total"), 1.0);
        assert_eq!(m.val("master_evicted_key_count"), 2.0);
        assert_eq!(m.val("master_evicted_size_bytes"), 8388608.0);
        assert_eq!(m.val("master_allocated_bytes"), 12582912.0);
    });
}

#[test]
fn no_eviction_with_zero_ratio() {
    for_each_runtime(|_| {
        let s = Server::start(&["--eviction-high-watermark-ratio", "1.0", "--eviction-ratio", "0"]);
        s.mount(16777216);
        let four = 4usize << 20;
        for i in 0..4u8 {
            s.put_raw(&format!("k{i}"), &vec![b'0' + i; four]).assert_json(200, SUCCESS);
        }
        s.json("PUT", "/api/put", r#"{"key":"k4","value":"x"}"#).assert_error(507, "Insufficient storage");
        assert_eq!(s.all_keys(), ["k0", "k1", "k2", "k3"]);
        let m = s.metrics();
        assert_eq!(m.val("master_evicted_key_count"), 0.0);
        assert_eq!(m.val("master_put_start_failures_total"), 1.0);
    });
}

// ---------------------------------------------------------------------------------------------
// Writes in progress
// ---------------------------------------------------------------------------------------------

#[test]
fn write_in_progress_is_invisible_until_complete() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let mut c = start_write(&s, "wip", 10, b"hello", true);
        s.get_value("wip").assert_error(404, "Key not found");
        assert!(!s.exists("wip"));
        s.get("/get_all_keys").assert_plain(200, "");
        s.get("/batch_query_keys?keys=wip")
            .assert_json(200, r#"{"success":true,"data":{"wip":{"ok":false,"error":"REPLICA_IS_NOT_READY"}}}"#);
        s.remove("wip").assert_error(409, "Key is being written");
        s.delete("/api/remove_all").assert_json(200, r#"{"status":"success removed 0 keys"}"#);
        let m = s.metrics();
        assert_eq!(m.val("master_key_count"), 1.0);
        assert_eq!(m.val("master_allocated_bytes"), 10.0);
        assert_eq!(m.val("master_put_start_requests_total"), 1.0);
        assert_eq!(m.val("master_put_end_requests_total"), 0.0);
        c.send(b"world");
        c.read_response().assert_json(200, SUCCESS);
        assert_eq!(s.get_value("wip").body, b"helloworld");

        // A replacing write in progress: readers keep the old value.
        s.put("old", "previous");
        let mut c = start_write(&s, "old", 4, b"ne", false);
        assert_eq!(s.get_value("old").text(), "previous");
        assert_eq!(s.query_key("old").json()["data"][0]["size_"], 8);
        assert!(s.exists("old"));
        c.send(b"wv");
        c.read_response().assert_json(200, SUCCESS);
        assert_eq!(s.get_value("old").text(), "newv");

        // Two concurrent writes of one key: the one completing last wins.
        let mut c1 = start_write(&s, "dup", 3, b"1", true);
        let mut c2 = start_write(&s, "dup", 3, b"2", true);
        c2.send(b"22");
        c2.read_response().assert_json(200, SUCCESS);
        assert_eq!(s.get_value("dup").text(), "222");
        c1.send(b"11");
        c1.read_response().assert_json(200, SUCCESS);
        assert_eq!(s.get_value("dup").text(), "111");
    });
}

#[test]
fn write_aborted_when_client_disconnects() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let c = start_write(&s, "gone", 10, b"hello", true);
        drop(c);
        assert!(wait_until(Duration::from_secs(3), || { s.query_key("gone").text() == e1(-704, "OBJECT_NOT_FOUND") }));
        s.put("keep", "old");
        let c = start_write(&s, "keep", 10, b"new", false);
        drop(c);
        assert!(wait_until(Duration::from_secs(3), || { s.metrics().val("master_put_revoke_requests_total") == 2.0 }));
        assert_eq!(s.get_value("keep").text(), "old");
        let m = s.metrics();
        assert_eq!(m.val("master_key_count"), 1.0);
        assert_eq!(m.val("master_allocated_bytes"), 3.0);
        assert_eq!(m.val("master_put_end_requests_total"), 1.0);
    });
}

#[test]
fn unmount_during_write() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        // Grace 0: the write is aborted with 503 and the connection closed.
        let id = s.mount(16777216)[0].clone();
        let mut c = start_write(&s, "w", 10, b"hello", true);
        s.post("/api/unmount", &format!(r#"{{"segment_ids":"{id}"}}"#)).assert_json(200, SUCCESS);
        let r = c.read_response();
        r.assert_error(503, "Write aborted: segment unmounted");
        assert!(r.closes());
        c.expect_closed();
        assert!(!s.exists("w"));
        assert_eq!(s.metrics().val("master_put_revoke_requests_total"), 1.0);

        // Grace > 0: the write continues and completes on the unmounting segment.
        let id = s.mount(16777216)[0].clone();
        let mut c = start_write(&s, "g", 10, b"hello", true);
        s.post("/api/unmount", &format!(r#"{{"segment_ids":"{id}","grace_period_seconds":60}}"#))
            .assert_json(200, SUCCESS);
        c.send(b"world");
        c.read_response().assert_json(200, SUCCESS);
        assert_eq!(s.get_value("g").text(), "helloworld");
        assert_eq!(segment(&s.segments(), &id).unwrap()["status"], "GRACEFULLY_UNMOUNTING");
    });
}

// ---------------------------------------------------------------------------------------------
// Segment lifecycle
// ---------------------------------------------------------------------------------------------

#[test]
fn graceful_unmount_observed_through_segments_detail() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let node = s.default_node_name();
        let id = s.mount(16777216)[0].clone();
        s.put("gk", "grace value");
        let t_send = Instant::now();
        s.post("/api/unmount", &format!(r#"{{"segment_ids":["{id}"],"grace_period_seconds":1}}"#))
            .assert_json(200, SUCCESS);
        // A later unmount never postpones the deadline.
        s.post("/api/unmount", &format!(r#"{{"segment_ids":"{id}","grace_period_seconds":60}}"#))
            .assert_json(200, SUCCESS);

        let segs = s.segments();
        let seg = segment(&segs, &id).expect("still listed");
        assert_eq!(seg["status"], "GRACEFULLY_UNMOUNTING");
        assert_eq!(seg["allocator_used_bytes"], 11);
        // Readable, not allocatable, not listed as mounted.
        assert_eq!(s.get_value("gk").text(), "grace value");
        assert_eq!(s.query_key("gk").status, 200);
        s.get("/get_all_segments").assert_plain(200, "");
        s.get(&format!("/query_segment?segment={}", pct(&node))).assert_plain(404, "segment not found");
        s.json("PUT", "/api/put", r#"{"key":"new","value":"x"}"#).assert_error(507, "Insufficient storage");
        let m = s.metrics();
        assert_eq!(m.val("master_total_capacity_bytes"), 16777216.0);
        assert_eq!(m.val(&format!(r#"segment_total_capacity_bytes{{segment="{node}"}}"#)), 16777216.0);

        // Poll until the record disappears at the deadline.
        let mut statuses = Vec::new();
        let gone = wait_until(Duration::from_secs(4), || {
            let segs = s.segments();
            match segment(&segs, &id) {
                Some(seg) => {
                    statuses.push(seg["status"].as_str().unwrap().to_string());
                    false
                }
                None => true,
            }
        });
        let el = t_send.elapsed();
        assert!(gone, "segment not removed after its grace period");
        assert!(el >= Duration::from_millis(950), "removed before the deadline: {el:?}");
        assert!(el <= Duration::from_secs(3), "removed too late: {el:?}");
        assert!(statuses.iter().all(|st| st == "GRACEFULLY_UNMOUNTING" || st == "UNMOUNTING"), "{statuses:?}");
        // The object had no other replica: erased everywhere.
        assert!(!s.exists("gk"));
        s.get_value("gk").assert_error(404, "Key not found");
        s.query_key("gk").assert_json(404, &e1(-704, "OBJECT_NOT_FOUND"));
        let m = s.metrics();
        assert_eq!(m.val("master_key_count"), 0.0);
        assert_eq!(m.val("master_total_capacity_bytes"), 0.0);
        assert_eq!(m.val("master_allocated_bytes"), 0.0);
        assert!(m.family_lines("segment_total_capacity_bytes").is_empty());
        // The id is now unknown.
        s.post("/api/unmount", &format!(r#"{{"segment_ids":"{id}"}}"#)).assert_json(404, &failed(&[&id]));
    });
}

#[test]
fn repeated_unmount_moves_the_deadline_earlier() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let id = s.mount(16777216)[0].clone();
        s.put("k", "v");
        s.post("/api/unmount", &format!(r#"{{"segment_ids":"{id}","grace_period_seconds":30}}"#))
            .assert_json(200, SUCCESS);
        assert_eq!(segment(&s.segments(), &id).unwrap()["status"], "GRACEFULLY_UNMOUNTING");
        s.post("/api/unmount", &format!(r#"{{"segment_ids":"{id}","grace_period_seconds":0}}"#))
            .assert_json(200, SUCCESS);
        // No read in flight: removed at once.
        assert!(wait_until(Duration::from_millis(500), || s.segments().is_empty()));
        assert!(!s.exists("k"));
        s.post("/api/unmount", &format!(r#"{{"segment_ids":"{id}"}}"#)).assert_json(404, &failed(&[&id]));
    });
}

#[test]
fn get_in_flight_survives_unmount() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let id = s.mount(33554432)[0].clone();
        let len = 16usize << 20;
        let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        s.put_raw("big", &value).assert_json(200, SUCCESS);
        // Start a GET and do not read it: the server cannot hand all bytes to the connection.
        let mut c = s.conn();
        c.send(b"GET /api/get/big HTTP/1.1\r\n\r\n");
        thread::sleep(Duration::from_millis(200));
        s.post("/api/unmount", &format!(r#"{{"segment_ids":"{id}"}}"#)).assert_json(200, SUCCESS);
        // Replicas are dropped at once.
        assert!(!s.exists("big"));
        assert_eq!(s.metrics().val("master_total_capacity_bytes"), 0.0);
        if let Some(seg) = segment(&s.segments(), &id) {
            assert_eq!(seg["status"], "UNMOUNTING");
            assert_eq!(seg["allocator_used_bytes"], 0);
        }
        // The GET in flight completes with the complete, correct bytes.
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), len);
        assert!(r.body == value, "GET in flight returned different bytes");
        assert!(wait_until(Duration::from_secs(3), || s.segments().is_empty()));
    });
}
