//! SPEC §11: command line, config file, start-up segment, node names, admin listener.

mod common;

use std::time::{Duration, Instant};

use common::*;

const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the binary with `args` plus `--port 0 --rpc-port off --runtime rt` where those flags are
/// not already present (never duplicating a flag).
fn run_with_defaults(rt: &str, args: &[&str]) -> CliOutput {
    let mut full: Vec<&str> = args.to_vec();
    let has = |name: &str| args.iter().any(|a| *a == name || a.starts_with(&format!("{name}=")));
    if !has("--port") {
        full.extend(["--port", "0"]);
    }
    if !has("--rpc-port") && !has("--rpc_port") {
        full.extend(["--rpc-port", "off"]);
    }
    if !has("--runtime") {
        full.extend(["--runtime", rt]);
    }
    run_cli(&full, CLI_TIMEOUT)
}

#[track_caller]
fn assert_exit(out: &CliOutput, code: i32, what: &str) {
    assert!(out.status.is_some(), "{what}: still running after {CLI_TIMEOUT:?} (stdout {:?})", out.stdout);
    assert_eq!(out.code(), Some(code), "{what}: stdout {:?} stderr {:?}", out.stdout, out.stderr);
}

#[test]
fn help_and_version() {
    let out = run_cli(&["--help"], CLI_TIMEOUT);
    assert_exit(&out, 0, "--help");
    assert!(out.stdout.contains("--port"), "usage on stdout: {:?}", out.stdout);
    let out = run_cli(&["--version"], CLI_TIMEOUT);
    assert_exit(&out, 0, "--version");
    assert_eq!(out.stdout.trim_end(), format!("mc-master {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn unknown_flags_and_bad_values_exit_2() {
    let bad_json = TempFile::new("mc-e2e-bad-config", b"{\"protocol\": ");
    let bad_proto = TempFile::new("mc-e2e-bad-proto", br#"{"protocol":"udp"}"#);
    let bad_host = TempFile::new("mc-e2e-bad-host", br#"{"local_hostname":5}"#);
    let bad_size = TempFile::new("mc-e2e-bad-size", br#"{"global_segment_size":"lots"}"#);
    let page = page_size();
    let half_page = (page / 2).to_string();
    for_each_runtime(|rt| {
        let cases: Vec<Vec<&str>> = vec![
            vec!["--bogus"],
            vec!["--bogus=1"],
            vec!["-x"],
            vec!["--port", "abc"],
            vec!["--port", "70000"],
            vec!["--port", "-1"],
            vec!["--admin-port", "x"],
            vec!["--admin-port", "65536"],
            vec!["--rpc-port", "nope"],
            vec!["--threads", "0"],
            vec!["--threads", "x"],
            vec!["--runtime", "tokio"],
            vec!["--protocol", "udp"],
            vec!["--max-body-size", "12xb"],
            vec!["--max-body-size", "-5"],
            vec!["--max-batch-keys", "x"],
            vec!["--max-registration-size", "1q"],
            vec!["--global-segment-size", "lots"],
            vec!["--mount-alignment", "1000"],
            vec!["--mount-alignment", &half_page],
            vec!["--eviction-ratio", "1.5"],
            vec!["--eviction-ratio", "abc"],
            vec!["--eviction-high-watermark-ratio", "-0.1"],
            vec!["--eviction_high_watermark_ratio", "2"],
            vec!["--default-kv-lease-ttl", "abc"],
            vec!["--default-kv-lease-ttl", "10parsecs"],
            vec!["--client-ttl", "x"],
            vec!["--client-active-ttl", "-1"],
            vec!["--client-suspicion-ttl", "soon"],
            vec!["--service-version", ""],
            vec!["--service-version", "2.0 .0"],
            vec!["--allocation-strategy", "cxl"],
            vec!["--allow-evict-soft-pinned-objects", "maybe"],
            vec!["--default-kv-soft-pin-ttl", "forever"],
            vec!["--idle-timeout", "5x"],
            vec!["--header-read-timeout", "soon"],
            vec!["--config", "/nonexistent/mc-e2e/config.json"],
            vec!["--config", bad_json.path_str()],
            vec!["--config", bad_proto.path_str()],
            vec!["--config", bad_host.path_str()],
            vec!["--config", bad_size.path_str()],
        ];
        for case in &cases {
            let out = run_with_defaults(rt, case);
            assert_exit(&out, 2, &format!("{case:?}"));
            assert!(!out.stderr.trim().is_empty(), "{case:?}: message on stderr");
            assert!(!out.stdout.contains("listening on"), "{case:?} must not start listening");
        }
    });
}

#[test]
fn admin_port_equal_to_port_exits_2_and_bind_failure_exits_1() {
    for_each_runtime(|rt| {
        let p = free_port().to_string();
        let out = run_with_defaults(rt, &["--port", &p, "--admin-port", &p]);
        assert_exit(&out, 2, "--admin-port equal to --port");

        // A port that is taken: exit 1.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = held.local_addr().unwrap().port().to_string();
        let out = run_with_defaults(rt, &["--port", &taken]);
        assert_exit(&out, 1, "main port in use");
        let out = run_with_defaults(rt, &["--admin-port", &taken]);
        assert_exit(&out, 1, "admin port in use");
        drop(held);
    });
}

#[test]
fn config_file_values_and_explicit_overrides() {
    let cfg = TempFile::new(
        "mc-e2e-config",
        br#"{"local_hostname":"10.1.2.3","protocol":"RDMA","global_segment_size":"32MiB","metadata_server":"P2PHANDSHAKE","device_name":""}"#,
    );
    let cfg_int = TempFile::new("mc-e2e-config-int", br#"{"global_segment_size":16777216}"#);
    for_each_runtime(|_| {
        // `protocol: RDMA` is a segment label here: without the data plane it needs no device.
        let s = Server::start(&["--config", cfg.path_str(), "--te-port", "off"]);
        let node = format!("10.1.2.3:{}", s.port());
        let segs = s.segments();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0]["segment_name"], node.as_str());
        assert_eq!(segs[0]["te_endpoint"], node.as_str());
        assert_eq!(segs[0]["size_bytes"], 33554432);
        assert_eq!(segs[0]["protocol"], "rdma");
        s.get("/get_all_segments").assert_plain(200, &format!("{node}\n"));
        s.put("k", "v");
        let q = s.query_key("k").json();
        assert_eq!(q["data"][0]["transport_endpoint_"], node.as_str());
        assert_eq!(q["data"][0]["protocol_"], "rdma");
        // Mounts default to the configured protocol.
        let id = s.mount(1)[0].clone();
        let segs = s.segments();
        let seg = segs.iter().find(|x| x["segment_id"] == id.as_str()).unwrap();
        assert_eq!(seg["protocol"], "rdma");
        drop(s);

        // Explicit flags override the config file.
        let s = Server::start(&[
            "--config",
            cfg.path_str(),
            "--te-port",
            "off",
            "--protocol",
            "tcp",
            "--local-hostname",
            "127.0.0.9",
            "--global-segment-size",
            "16MiB",
        ]);
        let segs = s.segments();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0]["segment_name"], format!("127.0.0.9:{}", s.port()).as_str());
        assert_eq!(segs[0]["size_bytes"], 16777216);
        assert_eq!(segs[0]["protocol"], "tcp");
        drop(s);

        // Integer global_segment_size; defaults otherwise.
        let s = Server::start(&["--config", cfg_int.path_str()]);
        let segs = s.segments();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0]["size_bytes"], 16777216);
        assert_eq!(segs[0]["protocol"], "tcp");
        assert_eq!(segs[0]["segment_name"], s.default_node_name().as_str());
    });
}

#[test]
fn underscore_aliases_and_value_forms() {
    for_each_runtime(|_| {
        let s = Server::start(&[
            "--default_kv_lease_ttl",
            "300",
            "--eviction_high_watermark_ratio",
            "0.95",
            "--eviction_ratio",
            "0.1",
            "--client_ttl",
            "5",
            "--global-segment-size=16MiB",
            "--max-body-size=1k",
        ]);
        // Lease TTL 300 ms (plain number = ms).
        s.put("k", "v");
        assert_eq!(s.get_value("k").status, 200);
        let got = Instant::now();
        s.remove("k").assert_error(409, "Key has an active lease");
        assert!(wait_until(Duration::from_secs(3), || s.remove("k").status == 200));
        let el = got.elapsed();
        assert!(el >= Duration::from_millis(250), "{el:?}");
        assert!(el < Duration::from_secs(3), "{el:?}");
        // --max-body-size=1k → 1024.
        assert_eq!(s.put_raw("a", &[b'a'; 1024]).status, 200);
        let mut c = s.conn();
        c.send(b"PUT /api/put/b HTTP/1.1\r\nContent-Length: 1025\r\n\r\n");
        c.read_response().assert_error(413, "payload too large");
        drop(s);

        let s = Server::start(&["--max-body-size", "1.5kib", "--idle-timeout", "1"]);
        let mut c = s.conn();
        c.send(b"POST /api/mount HTTP/1.1\r\nContent-Length: 1537\r\n\r\n");
        c.read_response().assert_error(413, "payload too large");
        let mut c = s.conn();
        c.send(b"POST /api/mount HTTP/1.1\r\nContent-Length: 1536\r\n\r\n");
        let mut body = b"{\"size\":1".to_vec();
        body.resize(1536 - 1, b' ');
        body.push(b'}');
        c.send(&body);
        assert_eq!(c.read_response().status, 200);
        // --idle-timeout 1 = 1 s (plain number = seconds): still open after 500 ms.
        c.expect_silent(Duration::from_millis(500));
        c.wait_closed(Duration::from_secs(3)).unwrap_or_else(|e| panic!("idle-timeout 1: {e}"));
        drop(s);

        // --metrics_port alias of --admin-port.
        let s = Server::start(&["--metrics_port=0"]);
        let admin = s.admin.expect("admin listener");
        assert_eq!(admin.ip(), s.addr.ip());
        assert_ne!(admin.port(), s.port());
        let mut c = s.admin_conn();
        c.send(b"GET /health HTTP/1.1\r\n\r\n");
        c.read_response().assert_plain(200, "OK");
    });
}

#[test]
fn global_segment_size_mounts_a_startup_segment() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "24MiB"]);
        let segs = s.segments();
        assert_eq!(segs.len(), 1);
        let seg = &segs[0];
        assert_eq!(seg["size_bytes"], 25165824, "exactly the given size");
        assert_eq!(seg["status"], "MOUNTED");
        assert_eq!(seg["protocol"], "tcp");
        assert_eq!(seg["segment_name"], s.default_node_name().as_str());
        let m = s.metrics();
        assert_eq!(m.val("master_mount_segment_requests_total"), 1.0);
        assert_eq!(m.val("master_total_capacity_bytes"), 25165824.0);
        drop(s);

        let s = Server::start(&["--global-segment-size", "1.5MiB"]);
        assert_eq!(s.segments()[0]["size_bytes"], 1572864);
        drop(s);

        let s = Server::start(&["--global-segment-size", "0"]);
        assert!(s.segments().is_empty());
        drop(s);

        // Split per §5.5 with A = --mount-alignment.
        let s = Server::start(&["--global-segment-size", "64MiB", "--max-registration-size", "32MiB"]);
        let segs = s.segments();
        assert_eq!(segs.len(), 2);
        assert!(segs.iter().all(|x| x["size_bytes"] == 33554432));
        assert_eq!(s.metrics().val("master_mount_segment_requests_total"), 2.0);
    });
}

#[test]
fn node_name_default_and_overrides() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let node = format!("127.0.0.1:{}", s.port());
        assert_eq!(s.segments()[0]["segment_name"], node.as_str());
        s.get("/get_all_segments").assert_plain(200, &format!("{node}\n"));
        drop(s);

        let s = Server::start(&["--global-segment-size", "16MiB", "--node-name", "my-node:1"]);
        let seg = &s.segments()[0];
        assert_eq!(seg["segment_name"], "my-node:1");
        assert_eq!(seg["te_endpoint"], "my-node:1");
        s.put("k", "v");
        assert_eq!(s.query_key("k").json()["data"][0]["transport_endpoint_"], "my-node:1");
        s.get("/query_segment?segment=my-node%3A1")
            .assert_plain(200, "my-node:1\nUsed(bytes): 1\nCapacity(bytes): 16777216\n");
        drop(s);

        let s = Server::start(&["--global-segment-size", "16MiB", "--local-hostname", "127.0.0.5"]);
        assert_eq!(s.segments()[0]["segment_name"], format!("127.0.0.5:{}", s.port()).as_str());
    });
}

#[test]
fn admin_port_serves_admin_endpoints_only() {
    for_each_runtime(|_| {
        let s = Server::start(&["--admin-port", "0", "--global-segment-size", "16MiB"]);
        let admin = s.admin.expect("admin listener");
        assert_eq!(admin.ip().to_string(), "127.0.0.1");
        s.put("k", "v");
        let on_admin = |req: &[u8]| {
            let mut c = s.admin_conn();
            c.send(req);
            c.read_response()
        };
        on_admin(b"GET /health HTTP/1.1\r\n\r\n").assert_plain(200, "OK");
        assert_eq!(on_admin(b"GET /metrics HTTP/1.1\r\n\r\n").status, 200);
        assert_eq!(on_admin(b"GET /metrics/summary HTTP/1.1\r\n\r\n").status, 200);
        assert_eq!(on_admin(b"GET /query_key?key=k HTTP/1.1\r\n\r\n").status, 200);
        assert_eq!(on_admin(b"GET /batch_query_keys?keys=k HTTP/1.1\r\n\r\n").status, 200);
        on_admin(b"GET /get_all_keys HTTP/1.1\r\n\r\n").assert_plain(200, "k\n");
        assert_eq!(on_admin(b"GET /get_all_segments HTTP/1.1\r\n\r\n").status, 200);
        assert_eq!(on_admin(b"GET /get_segments_detail HTTP/1.1\r\n\r\n").status, 200);
        assert_eq!(
            on_admin(format!("GET /query_segment?segment={} HTTP/1.1\r\n\r\n", s.default_node_name()).as_bytes())
                .status,
            200
        );
        let put_body = br#"{"key":"x","value":"yyyy"}"#;
        for req in [
            build_request("GET", "/api/get/k", &[], b""),
            build_request("GET", "/api/exist/k", &[], b""),
            build_request("PUT", "/api/put", &[], put_body),
            build_request("PUT", "/api/put/x", &[], b"x"),
            build_request("POST", "/api/mount", &[], br#"{"size":1}"#),
            build_request("POST", "/api/unmount", &[], br#"{"segment_ids":"x"}"#),
            build_request("DELETE", "/api/remove/k", &[], b""),
            build_request("DELETE", "/api/remove_all", &[], b""),
            build_request("OPTIONS", "/api/mount", &[], b""),
        ] {
            let req = &req[..];
            on_admin(req).assert_error(404, "not found");
        }
        // Nothing happened through the admin listener; the main one serves everything.
        assert!(s.exists("k"));
        assert!(!s.exists("x"));
        assert_eq!(s.segments().len(), 1);
        s.get_value("k").assert(200, CT_OCTET, "v");
        s.get("/health").assert_plain(200, "OK");
    });
}

/// `--no-yield` (mio: no `sched_yield` between busy loop turns) changes scheduling only:
/// the server answers the same, including many pipelined requests on several connections.
#[test]
fn no_yield_serves_the_same() {
    for_each_runtime(|_| {
        let small = ["--threads", "2", "--global-segment-size", "16MiB"];
        for extra in [&["--no-yield"][..], &[][..]] {
            let args: Vec<&str> = small.iter().chain(extra).copied().collect();
            let s = Server::start(&args);
            let r = s.request("PUT", "/api/put/k", &[], b"value");
            assert_eq!(r.status, 200, "{}", r.text());
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let addr = s.addr;
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut c = std::net::TcpStream::connect(addr).unwrap();
                        let req = b"GET /api/get/k HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
                        c.write_all(&req).unwrap();
                        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
                        let mut out = Vec::new();
                        c.read_to_end(&mut out).unwrap();
                        let text = String::from_utf8_lossy(&out);
                        assert_eq!(text.matches("HTTP/1.1 200").count(), 201);
                        assert_eq!(text.matches("\r\n\r\nvalue").count(), 200);
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        }
    });
}

/// `--protocol rdma` with the data plane on needs RDMA verbs (a device, and a build with the
/// `rdma` feature): without them the binary exits 1 naming the cause (docs/rdma.md).
#[test]
fn protocol_rdma_without_a_device_exits_1_naming_the_cause() {
    for_each_runtime(|rt| {
        let out = run_with_defaults(rt, &["--protocol", "rdma"]);
        assert_exit(&out, 1, "--protocol rdma");
        assert!(out.stderr.contains("--protocol rdma: "), "{}", out.stderr);
        assert!(out.stderr.contains("RDMA") || out.stderr.contains("rdma"), "{}", out.stderr);
        assert!(!out.stdout.contains("listening on"), "must not start listening");
    });
}
