//! Proof of the data plane with upstream's unchanged client (wheel
//! `mooncake-transfer-engine-non-cuda`, `tests/dataplane_upstream/client.py`), in both
//! metadata modes (mc-master's own `/metadata`, and P2PHANDSHAKE), on every runtime:
//!
//! - a value PUT through mc-master's REST API is read by the client through mc-master's TE
//!   target;
//! - values of 57 B and 3 MiB put by a client without memory of its own land in mc-master's
//!   memory (written through the TE target) and `GET /api/get` returns them byte for byte;
//! - values a client put into its own memory are returned by `GET /api/get` of a master that
//!   has none, read through mc-master's TE initiator from the client's transfer engine;
//! - a value PUT through that master's REST API is written into the client's memory by the
//!   initiator (acknowledged before the 200) and the client reads it back;
//! - a drain job (`POST /api/v1/drain_jobs`) moves the values out of the client's memory into
//!   mc-master's, read through the initiator; afterwards the client reads them from there,
//!   byte for byte, and its segment is DRAINED.
//!
//! Skips (prints why, passes) when the wheel cannot be had, or with `MC_SKIP_UPSTREAM=1`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use common::upstream::{python_or_skip, Kill};

fn pattern(n: usize, mul: usize, add: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * mul + add) & 0xff) as u8).collect()
}

/// A running mc-master and the addresses it printed.
struct Master {
    _child: Kill,
    http: String,
    rpc: String,
    te: String,
}

fn start(rt: &str, extra: &[&str]) -> Master {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mc-master"))
        .args(["--port", "0", "--rpc-port", "0", "--threads", "2", "--runtime", rt])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start mc-master");
    let lines: Vec<String> =
        BufReader::new(child.stdout.take().unwrap()).lines().take(3).map(|l| l.expect("stdout")).collect();
    let field = |prefix: &str| {
        lines.iter().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in {lines:?}"))
    };
    Master {
        http: field("listening on http://").to_string(),
        rpc: field("rpc listening on ").to_string(),
        te: field("te listening on ").to_string(),
        _child: Kill(child),
    }
}

fn client(py: &Path, master: &Master, meta: &str, mode: &str) -> Child {
    Command::new(py)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dataplane_upstream/client.py"))
        .args([master.rpc.as_str(), meta, mode])
        // The client advertises loopback (not its first interface) to mc-master.
        .env("MC_TCP_BIND_ADDRESS", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the client")
}

/// The client's stdout lines.
fn lines_of(child: &mut Child) -> Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line starting with `prefix`, within 90 s.
fn line_of(lines: &Receiver<String>, prefix: &str) -> String {
    loop {
        match lines.recv_timeout(Duration::from_secs(90)) {
            Ok(l) => {
                if let Some(rest) = l.strip_prefix(prefix) {
                    return rest.to_string();
                }
            }
            Err(_) => panic!("the client printed no {prefix:?} line"),
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    let mut c = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("sha256sum");
    c.stdin.take().unwrap().write_all(data).expect("write");
    let out = c.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut c = common::Conn::connect(addr.parse().expect("address"));
    c.send(&common::build_request(method, path, &[], body));
    let r = c.read_response_for(method);
    (r.status, r.body)
}

fn endpoint_of(http: &str, key: &str) -> String {
    let (st, body) = request(http, "GET", &format!("/query_key?key={key}"), b"");
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    v["data"][0]["transport_endpoint_"].as_str().expect("endpoint").to_string()
}

#[test]
fn unchanged_upstream_client_and_rest_read_each_others_values() {
    let Some(py) = python_or_skip("data-plane upstream test") else { return };
    for rt in common::runtimes() {
        for mode in ["http", "p2p"] {
            println!("=== runtime {rt}, metadata {mode}");
            rest_values_to_the_client_and_back(&py, &rt, mode);
            client_memory_to_rest(&py, &rt, mode);
        }
        println!("=== runtime {rt}, drain of a client's segment");
        drain_a_clients_segment_into_mc_master(&py, &rt);
        println!("=== runtime {rt}, transfer_engine_bench");
        bench_initiator_against_the_target(&py, &rt);
    }
}

/// Upstream's `transfer_engine_bench --protocol=tcp` as initiator against mc-master's TE
/// target: its raw reads and writes anywhere in the segment are rejected by default (the
/// bench fails), and served with `--te-open-access` (upstream's rule).
fn bench_initiator_against_the_target(py: &Path, rt: &str) {
    let bench = py.parent().unwrap().join("transfer_engine_bench");
    let run = |m: &Master, op: &str| {
        let out = Command::new(&bench)
            .args(["--mode=initiator", "--protocol=tcp", "--threads=1", "--batch_size=16", "--duration=1"])
            .args(["--block_size=65536", "--buffer_size=16777216", "--report_unit=GB"])
            .arg(format!("--operation={op}"))
            // Every address explicit: the bench's defaults name hosts that are not this one.
            .arg(format!("--metadata_server=http://{}/metadata", m.http))
            .arg(format!("--segment_id={}", m.http))
            .arg("--local_server_name=127.0.0.1:8592")
            .envs([("MC_TCP_BIND_ADDRESS", "127.0.0.1"), ("MC_MIN_RPC_PORT", "8591"), ("MC_MAX_RPC_PORT", "8599")])
            .env("GLOG_minloglevel", "0")
            .stdin(Stdio::null())
            .output()
            .expect("run transfer_engine_bench");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let open = start(rt, &["--global-segment-size", "64MiB", "--te-open-access"]);
    for op in ["write", "read"] {
        let (ok, text) = run(&open, op);
        let done = text.lines().find(|l| l.contains("Test completed")).unwrap_or_default().to_string();
        assert!(
            ok && done.contains("throughput"),
            "{rt} {op}: {}",
            text.lines().rev().take(5).collect::<Vec<_>>().join("\n")
        );
        println!("transfer_engine_bench {op} against mc-master ({rt}): {}", done.split("] ").last().unwrap_or(&done));
    }
    drop(open);
    let strict = start(rt, &["--global-segment-size", "64MiB"]);
    let (ok, text) = run(&strict, "write");
    assert!(!ok && text.contains("rejected by server"), "{rt}: raw writes must be rejected by default");
}

fn metadata(m: &Master, mode: &str) -> String {
    match mode {
        "http" => format!("http://{}/metadata", m.http),
        _ => "P2PHANDSHAKE".to_string(),
    }
}

fn rest_values_to_the_client_and_back(py: &Path, rt: &str, mode: &str) {
    let m = start(rt, &["--global-segment-size", "64MiB"]);
    assert!(m.te.starts_with("127.0.0.1:"), "{}", m.te);
    let put = br#"{"key":"mc-key","value":"value-stored-by-mc-master"}"#;
    assert_eq!(request(&m.http, "PUT", "/api/put", put).0, 200);
    let mut c = Kill(client(py, &m, &metadata(&m, mode), "a"));
    let result = line_of(&lines_of(&mut c.0), "RESULT ");
    let r: serde_json::Value = serde_json::from_str(&result).expect("json");
    let want = serde_json::json!({
        "setup": 0, "get_rest_value": "value-stored-by-mc-master",
        "put_57": 0, "get_57": true, "put_3MiB": 0, "get_3MiB": true
    });
    assert_eq!(r, want, "{rt}/{mode}");
    // Both values are in mc-master's memory, and the REST API serves them.
    let node = &m.http;
    assert_eq!(&endpoint_of(&m.http, "k57"), node);
    assert_eq!(&endpoint_of(&m.http, "big"), node);
    let small: Vec<u8> = [&b"written-by-upstream-client:"[..], &b"0123456789".repeat(3)].concat();
    assert_eq!(small.len(), 57);
    assert_eq!(request(&m.http, "GET", "/api/get/k57", b""), (200, small));
    let (st, big) = request(&m.http, "GET", "/api/get/big", b"");
    assert_eq!(st, 200);
    assert!(big == pattern(3 << 20, 31, 0), "3 MiB value differs ({} bytes)", big.len());
}

fn client_memory_to_rest(py: &Path, rt: &str, mode: &str) {
    let m = start(rt, &[]);
    let mut c = Kill(client(py, &m, &metadata(&m, mode), "b"));
    let lines = lines_of(&mut c.0);
    let ready = line_of(&lines, "READY ");
    assert_eq!(ready, r#"{"setup": 0, "put_own": 0, "put_small": 0}"#, "{rt}/{mode}");
    let owner = endpoint_of(&m.http, "own");
    assert_ne!(owner, m.http, "the value is in the client's memory");
    assert_eq!(request(&m.http, "GET", "/api/get/small", b""), (200, b"tiny-value-in-client-memory".to_vec()));
    let (st, own) = request(&m.http, "GET", "/api/get/own", b"");
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&own[..own.len().min(200)]));
    assert!(own == pattern(1 << 20, 7, 3), "1 MiB value differs ({} bytes)", own.len());
    assert_eq!(request(&m.http, "GET", "/api/exist/own", b"").1, br#"{"exists":true}"#);
    // The other way: a REST put on a master with no memory of its own lands in the client's.
    let value = pattern(3 << 20, 13, 5);
    let (st, body) = request(&m.http, "PUT", "/api/put/from-rest", &value);
    assert_eq!((st, body.as_slice()), (200, &br#"{"status":"success"}"#[..]), "{rt}/{mode}");
    assert_eq!(endpoint_of(&m.http, "from-rest"), owner, "placed in the client's memory");
    let mut stdin = c.0.stdin.take().unwrap();
    stdin.write_all(b"get from-rest\n").unwrap();
    let got = line_of(&lines, "GOT from-rest ");
    assert_eq!(got, format!("{} {}", value.len(), sha256_hex(&value)), "{rt}/{mode}");
    let (st, back) = request(&m.http, "GET", "/api/get/from-rest", b"");
    assert!(st == 200 && back == value, "REST reads it back from the client ({st}, {} bytes)", back.len());
    let _ = stdin.write_all(b"done\n");
    drop(stdin);
    let _ = c.0.wait();
}

fn json_of(http: &str, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let (st, b) = request(http, method, path, body);
    (st, serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&b))))
}

fn drain_a_clients_segment_into_mc_master(py: &Path, rt: &str) {
    // No memory of its own yet: the client's puts land in the client's memory.
    let m = start(rt, &[]);
    let mut c = Kill(client(py, &m, &metadata(&m, "http"), "b"));
    let lines = lines_of(&mut c.0);
    assert_eq!(line_of(&lines, "READY "), r#"{"setup": 0, "put_own": 0, "put_small": 0}"#, "{rt}");
    let owner = endpoint_of(&m.http, "own");
    assert_ne!(owner, m.http, "the value starts in the client's memory");
    assert_eq!(request(&m.http, "POST", "/api/mount", br#"{"size":16777216}"#).0, 200);
    let (_, segs) = request(&m.http, "GET", "/get_all_segments", b"");
    let client_seg =
        String::from_utf8(segs).unwrap().lines().find(|l| *l != m.http).expect("the client's segment").to_string();
    // Draining into a segment that is not there, or into itself, is refused.
    let body =
        |src: &str, dst: &str| format!(r#"{{"segments":["{src}"],"target_segments":["{dst}"],"max_concurrency":2}}"#);
    let (st, v) = json_of(&m.http, "POST", "/api/v1/drain_jobs", body(&client_seg, "nope:1").as_bytes());
    assert_eq!((st, v["error_code"].as_i64()), (404, Some(-101)), "{v}");
    let (st, v) = json_of(&m.http, "POST", "/api/v1/drain_jobs", body(&client_seg, &client_seg).as_bytes());
    assert_eq!((st, v["error_code"].as_i64()), (400, Some(-600)), "{v}");
    let (st, v) = json_of(&m.http, "POST", "/api/v1/drain_jobs", b"{");
    assert_eq!((st, v["error_code"].as_i64()), (400, Some(-600)), "{v}");
    // The drain: the client's values move into mc-master's memory.
    let (st, v) = json_of(&m.http, "POST", "/api/v1/drain_jobs", body(&client_seg, &m.http).as_bytes());
    assert_eq!((st, &v["status"]), (200, &serde_json::json!("CREATED")), "{v}");
    let job = v["job_id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let (st, q) = json_of(&m.http, "GET", &format!("/api/v1/drain_jobs/query?job_id={job}"), b"");
        assert_eq!(st, 200, "{q}");
        if q["status_name"] != "RUNNING" && q["status_name"] != "CREATED" {
            break q;
        }
        assert!(std::time::Instant::now() < deadline, "the drain never ended: {q}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(done["status_name"], "SUCCEEDED", "{rt}: {done}");
    assert_eq!(done["succeeded_units"], 2, "{done}");
    assert_eq!(done["failed_units"], 0, "{done}");
    let small = b"tiny-value-in-client-memory";
    assert_eq!(done["migrated_bytes"].as_u64(), Some((1 << 20) + small.len() as u64), "{done}");
    assert_eq!(endpoint_of(&m.http, "own"), m.http, "moved into mc-master's memory");
    assert_eq!(endpoint_of(&m.http, "small"), m.http);
    let (st, own) = request(&m.http, "GET", "/api/get/own", b"");
    assert!(st == 200 && own == pattern(1 << 20, 7, 3), "{rt}: the moved value differs ({st}, {} bytes)", own.len());
    // The client reads them from their new place (mc-master's TE target), byte for byte.
    let mut stdin = c.0.stdin.take().unwrap();
    stdin.write_all(b"get own\n").unwrap();
    assert_eq!(line_of(&lines, "GOT own "), format!("{} {}", 1 << 20, sha256_hex(&pattern(1 << 20, 7, 3))));
    stdin.write_all(b"get small\n").unwrap();
    assert_eq!(line_of(&lines, "GOT small "), format!("{} {}", small.len(), sha256_hex(small)));
    // The source is DRAINED: in the status endpoint, the segment detail and the metrics; a
    // drained segment is no target, and a finished job cannot be canceled.
    let (_, st) = json_of(&m.http, "GET", &format!("/api/v1/segments/status?segment={client_seg}"), b"");
    assert_eq!((st["status"].as_u64(), st["status_name"].as_str()), (Some(3), Some("DRAINED")), "{st}");
    let (_, detail) = json_of(&m.http, "GET", "/get_segments_detail", b"");
    let seg = detail["segments"].as_array().unwrap().iter().find(|s| s["segment_name"] == client_seg.as_str()).unwrap();
    assert_eq!((seg["status"].as_str(), seg["drain_status"].as_str()), (Some("MOUNTED"), Some("DRAINED")), "{seg}");
    let (_, metrics) = request(&m.http, "GET", "/metrics", b"");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.lines().any(|l| l == "master_drained_segments 1"), "{rt}");
    assert!(metrics.lines().any(|l| l == "master_drain_units_succeeded_total 2"), "{rt}");
    let (st, v) = json_of(&m.http, "POST", "/api/v1/drain_jobs", body(&m.http, &client_seg).as_bytes());
    assert_eq!((st, v["error_code"].as_i64()), (409, Some(-1010)), "{v}");
    let (st, v) = json_of(&m.http, "POST", &format!("/api/v1/drain_jobs/cancel?job_id={job}"), b"");
    assert_eq!((st, v["error_code"].as_i64()), (409, Some(-1010)), "{v}");
    let (st, v) = json_of(&m.http, "GET", "/api/v1/drain_jobs/query?job_id=1-2", b"");
    assert_eq!((st, v["error_code"].as_i64()), (404, Some(-1402)), "{v}");
    let (st, _) = json_of(&m.http, "GET", "/api/v1/drain_jobs/query?job_id=x", b"");
    assert_eq!(st, 400);
    let _ = stdin.write_all(b"done\n");
    drop(stdin);
    let _ = c.0.wait();
}
