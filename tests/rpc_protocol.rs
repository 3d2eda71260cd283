//! The master RPC listener and the metadata server, end to end through the `mc-master` binary
//! and real sockets: the `rpc listening on` line, pipelining, framing errors, remote nodes in
//! the admin endpoints and metrics, client TTL expiry, and `/metadata`; once per runtime of
//! `common::runtimes`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::rpc::{config, s, segment, uuid, Rpc};
use mc_core::rpc::{Value, REQ_HDR};

struct Server {
    child: Child,
    http: String,
    rpc: Option<String>,
    lines: mpsc::Receiver<String>,
    /// Log lines (stderr), when started with [`start_logged`].
    log: Option<mpsc::Receiver<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts mc-master without a data plane (`--te-port off`): these tests mount segments of
/// made-up remote nodes (10.0.0.9, ...) that must never be dialled; the data plane has its
/// own tests (tests/dataplane.rs, tests/dataplane_upstream.rs).
fn start(args: &[&str]) -> Server {
    start_with(args, false)
}

/// [`start`] with the log (`RUST_LOG=info`, stderr) collected in `Server::log`.
fn start_logged(args: &[&str]) -> Server {
    start_with(args, true)
}

/// The lines `r` yields, on a thread.
fn line_channel(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    lines
}

fn start_with(args: &[&str], logged: bool) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mc-master"))
        .args(["--port", "0", "--threads", "2", "--runtime", &common::current_runtime(), "--te-port", "off"])
        .args(args)
        .env("RUST_LOG", if logged { "info" } else { "warn" })
        .stdout(Stdio::piped())
        .stderr(if logged { Stdio::piped() } else { Stdio::null() })
        .spawn()
        .expect("start mc-master");
    let lines = line_channel(child.stdout.take().unwrap());
    let log = child.stderr.take().map(line_channel);
    let first = lines.recv_timeout(Duration::from_secs(20)).expect("first stdout line");
    let http = first.strip_prefix("listening on http://").expect("listening line").to_string();
    let mut s = Server { child, http, rpc: None, lines, log };
    if !args.windows(2).any(|w| w == ["--rpc-port", "off"]) {
        let mut l = s.lines.recv_timeout(Duration::from_secs(5)).expect("second stdout line");
        if l.starts_with("admin listening on") {
            l = s.lines.recv_timeout(Duration::from_secs(5)).expect("third stdout line");
        }
        s.rpc = Some(l.strip_prefix("rpc listening on ").expect("rpc line").to_string());
    }
    s
}

/// One HTTP/1.0 request; returns (status, body).
fn http(addr: &str, method: &str, target: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!("{method} {target} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("response head") + 4;
    let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
    (status, out[split..].to_vec())
}

fn get(addr: &str, target: &str) -> (u16, String) {
    let (st, b) = http(addr, "GET", target, b"");
    (st, String::from_utf8(b).unwrap())
}

/// A blocking RPC client on one connection.
/// Mounts a 16 MiB segment for `client` and writes `key` (`len` bytes) through it.
fn mount_and_put(rpc: &mut Rpc, client: Value, name: &str, key: &str, len: u64) {
    let seg = segment(0x1234, name, "10.0.0.9:17777", 0x7f00_0000_0000, 1 << 24);
    assert_eq!(rpc.call("MountSegment", vec![seg, client.clone()]), Value::ok_void());
    let started = rpc.call("PutStart", vec![client.clone(), s(key), Value::UInt(len), config(), s("default")]);
    assert!(matches!(started, Value::Ok(_)), "{started:?}");
    let meta = Value::Struct(vec![s(key), Value::opt(None)]);
    assert_eq!(rpc.call("PutEnd", vec![client, meta, Value::Int(4), s("default")]), Value::ok_void());
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn rpc_line_pipelining_and_framing_errors() {
    common::for_each_runtime(|_| {
        let srv = start(&["--rpc-port", "0", "--admin-port", "0"]);
        let addr = srv.rpc.clone().unwrap();
        let mut rpc = Rpc::connect(&addr);
        // Three requests in one write: three replies in request order, seq echoed.
        let mut all = Vec::new();
        for seq in [0x30, 0x10, 0x20] {
            rpc.seq = seq;
            all.extend(rpc.frame("ServiceReady", vec![]));
        }
        rpc.sock.write_all(&all).unwrap();
        let seqs: Vec<u32> = (0..3).map(|_| rpc.read_reply().1).collect();
        assert_eq!(seqs, [0x30, 0x10, 0x20]);
        // Unknown function: err_code 11, connection kept.
        let mut f = rpc.frame("ServiceReady", vec![]);
        f[8..12].copy_from_slice(&0x8ecf1981u32.to_le_bytes()); // CalcCacheStats
        rpc.sock.write_all(&f).unwrap();
        assert_eq!(rpc.read_reply().0, 11);
        assert_eq!(rpc.call("ServiceReady", vec![]), Value::ok(s("2.0.0")));
        // Bad magic: closed without a reply; a new connection works.
        let mut bad = rpc.frame("ServiceReady", vec![]);
        bad[0] = 0x16;
        rpc.sock.write_all(&bad).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(rpc.sock.read(&mut buf).unwrap_or(0), 0, "closed without a reply");
        let mut again = Rpc::connect(&addr);
        assert_eq!(again.call("ServiceReady", vec![]), Value::ok(s("2.0.0")));
        assert_eq!(REQ_HDR, 20);
    });
}

#[test]
fn rpc_port_off_prints_no_rpc_line() {
    common::for_each_runtime(|_| {
        let srv = start(&["--rpc-port", "off"]);
        assert!(srv.lines.recv_timeout(Duration::from_millis(500)).is_err(), "no further stdout line");
        assert_eq!(get(&srv.http, "/health").0, 200);
    });
}

#[test]
fn remote_nodes_appear_in_the_admin_endpoints_and_metrics() {
    common::for_each_runtime(|_| {
        let srv = start(&["--rpc-port", "0"]);
        let mut rpc = Rpc::connect(srv.rpc.as_deref().unwrap());
        let client = uuid(0x0102030405060708, 0x090a0b0c0d0e0f10);
        mount_and_put(&mut rpc, client.clone(), "10.0.0.9:8088", "rpc-key", 11);
        let h = &srv.http;
        assert_eq!(get(h, "/get_all_segments"), (200, "10.0.0.9:8088\n".to_string()));
        let (st, q) = get(h, "/query_segment?segment=10.0.0.9%3A8088");
        assert_eq!((st, q.as_str()), (200, "10.0.0.9:8088\nUsed(bytes): 11\nCapacity(bytes): 16777216\n"));
        let (_, detail) = get(h, "/get_segments_detail");
        let d: serde_json::Value = serde_json::from_str(&detail).unwrap();
        let seg = &d["segments"][0];
        assert_eq!(seg["segment_name"], "10.0.0.9:8088");
        assert_eq!(seg["te_endpoint"], "10.0.0.9:17777");
        assert_eq!(seg["client_id"], "01020304-0506-0708-090a-0b0c0d0e0f10");
        assert_eq!(seg["base_address"], "0x7f0000000000");
        assert_eq!(seg["allocator_used_bytes"], 11);
        let (st, qk) = get(h, "/query_key?key=rpc-key");
        assert_eq!(st, 200);
        let qk: serde_json::Value = serde_json::from_str(&qk).unwrap();
        assert_eq!(qk["data"][0]["transport_endpoint_"], "10.0.0.9:17777");
        assert_eq!(qk["data"][0]["buffer_address_"], 0x7f00_0000_0000u64);
        assert_eq!(qk["data"][0]["size_"], 11);
        let (_, bq) = get(h, "/batch_query_keys?keys=rpc-key");
        assert!(bq.contains("\"rpc-key\":{\"ok\":true"), "{bq}");
        assert_eq!(get(h, "/get_all_keys"), (200, "rpc-key\n".to_string()));
        // The bytes live in the client and this process has no data plane: REST cannot
        // serve them.
        assert_eq!(get(h, "/api/get/rpc-key").0, 404);
        let (_, m) = get(h, "/metrics");
        for line in [
            "master_active_clients 2",
            "master_key_count 1",
            "segment_allocated_bytes{segment=\"10.0.0.9:8088\"} 11",
            "segment_total_capacity_bytes{segment=\"10.0.0.9:8088\"} 16777216",
            "master_put_start_requests_total 1",
            "master_put_end_requests_total 1",
            "master_mount_segment_requests_total 1",
            "master_value_size_bytes_sum 11",
        ] {
            assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
        }
        // A REST write never lands in a client's memory: no local segment, no room.
        assert_eq!(http(h, "PUT", "/api/put/rest-key", b"abc").0, 507);
        // Unmount over RPC: gone from every view.
        assert_eq!(rpc.call("UnmountSegment", vec![uuid(0x1234, 0x1234), client]), Value::ok_void());
        assert_eq!(get(h, "/get_all_segments"), (200, String::new()));
        assert_eq!(get(h, "/query_key?key=rpc-key").0, 404);
        let (_, m) = get(h, "/metrics");
        assert!(m.lines().any(|l| l == "master_unmount_segment_requests_total 1"));
    });
}

#[test]
fn an_expired_client_loses_its_segments_objects_and_metadata() {
    common::for_each_runtime(|_| {
        let srv = start(&["--rpc-port", "0", "--client-ttl", "1s"]);
        let h = &srv.http;
        let mut rpc = Rpc::connect(srv.rpc.as_deref().unwrap());
        let client = uuid(7, 7);
        mount_and_put(&mut rpc, client.clone(), "127.0.0.1:9999", "k", 5);
        assert_eq!(http(h, "PUT", "/metadata?key=mooncake%2Fram%2F127.0.0.1%3A9999", b"{\"x\":1}").0, 200);
        assert_eq!(http(h, "PUT", "/metadata?key=mooncake/rpc_meta/127.0.0.1:9999", b"{}").0, 200);
        assert_eq!(http(h, "PUT", "/metadata?key=mooncake/ram/other:1", b"{}").0, 200);
        let active = |n: u32| {
            let (_, m) = get(h, "/metrics");
            m.lines().any(|l| l == format!("master_active_clients {n}"))
        };
        assert!(active(2));
        // Pings keep it alive past the TTL.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(400));
            let pong = rpc.call("Ping", vec![client.clone()]);
            assert_eq!(pong, Value::ok(Value::Struct(vec![Value::Int(0), Value::Int(2)])));
        }
        assert!(active(2));
        // Then silence: expired within the TTL (plus scheduling slack).
        wait_until("expiry", || active(1));
        assert_eq!(get(h, "/get_all_segments"), (200, String::new()));
        assert_eq!(get(h, "/query_key?key=k").0, 404);
        assert_eq!(get(h, "/metadata?key=mooncake/ram/127.0.0.1:9999").0, 404);
        assert_eq!(get(h, "/metadata?key=mooncake%2Frpc_meta%2F127.0.0.1%3A9999").0, 404);
        assert_eq!(get(h, "/metadata?key=mooncake/ram/other:1").0, 200);
        // Its next Ping asks for a remount.
        assert_eq!(rpc.call("Ping", vec![client]), Value::ok(Value::Struct(vec![Value::Int(0), Value::Int(2)])));
    });
}

/// Waits up to 10 s for a log line containing every one of `parts`.
fn wait_log(srv: &Server, parts: &[&str]) -> String {
    let log = srv.log.as_ref().expect("started with start_logged");
    let end = Instant::now() + Duration::from_secs(10);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match log.recv_timeout(left) {
            Ok(l) if parts.iter().all(|p| l.contains(p)) => return l,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no log line with {parts:?}");
}

/// Recoverable liveness (upstream PR #2991): silent past `--client-active-ttl`, a client is
/// Suspected (its replicas answer -703, its segment and keys stay); its next Ping restores
/// it; silent past the suspicion TTL too, it goes Offline and is cleaned up. Each transition
/// is counted in /metrics and named in the log.
#[test]
fn a_suspected_client_is_withheld_restored_by_its_ping_then_offline() {
    common::for_each_runtime(|_| {
        // Upstream's underscore spellings of both flags.
        let srv = start_logged(&["--rpc-port", "0", "--client_active_ttl_sec", "1", "--client_suspicion_ttl_sec", "2"]);
        let h = &srv.http;
        let mut rpc = Rpc::connect(srv.rpc.as_deref().unwrap());
        let client = uuid(7, 7);
        mount_and_put(&mut rpc, client.clone(), "127.0.0.1:9999", "k", 5);
        let mut reader = Rpc::connect(srv.rpc.as_deref().unwrap());
        let mut read = || reader.call("GetReplicaList", vec![s("k"), s("default")]);
        assert!(matches!(read(), Value::Ok(_)));
        let metric = |name: &str, v: u32| {
            let (_, m) = get(h, "/metrics");
            m.lines().any(|l| l == format!("{name} {v}"))
        };
        assert!(metric("master_client_suspicion_ttl_seconds", 2));
        // Silence past the TTL: Suspected, withheld, kept.
        wait_until("suspicion", || metric("master_suspected_clients", 1));
        wait_log(&srv, &["client", "127.0.0.1:9999", "suspected"]);
        assert_eq!(read(), Value::err(-703), "withheld from reads");
        assert!(metric("master_suspected_clients_total", 1));
        assert!(metric("master_active_clients", 2), "its resources are kept");
        assert!(metric("master_expired_clients_total", 0));
        assert_eq!(get(h, "/get_all_segments").1.lines().count(), 1);
        // Its Ping restores it.
        let pong = rpc.call("Ping", vec![client.clone()]);
        assert!(matches!(pong, Value::Ok(_)), "{pong:?}");
        wait_log(&srv, &["client", "127.0.0.1:9999", "recovered"]);
        assert!(matches!(read(), Value::Ok(_)), "readable again");
        assert!(metric("master_recovered_clients_total", 1));
        assert!(metric("master_suspected_clients", 0));
        // Silence past both TTLs: Offline, cleaned up.
        wait_until("offline", || metric("master_expired_clients_total", 1));
        wait_log(&srv, &["client", "127.0.0.1:9999", "offline"]);
        assert!(metric("master_suspected_clients_total", 2));
        assert!(metric("master_active_clients", 1));
        assert_eq!(get(h, "/get_all_segments"), (200, String::new()));
        assert_eq!(read(), Value::err(-704), "gone");
    });
}

/// `--service-version`: what ServiceReady answers; the default is 2.0.0.
#[test]
fn service_version_is_settable() {
    common::for_each_runtime(|_| {
        let srv = start_logged(&["--rpc-port", "0", "--service-version", "0.3.13.post1"]);
        wait_log(&srv, &["ServiceReady answers version", "0.3.13.post1"]);
        let mut rpc = Rpc::connect(srv.rpc.as_deref().unwrap());
        assert_eq!(rpc.call("ServiceReady", vec![]), Value::ok(s("0.3.13.post1")));
        // A client that leaves right after ServiceReady (as a refusing upstream client does)
        // is explained in the log.
        drop(rpc);
        wait_log(&srv, &["right after ServiceReady", "--service-version"]);
    });
}

#[test]
fn metadata_server() {
    common::for_each_runtime(|_| {
        let srv = start(&["--rpc-port", "off", "--admin-port", "0"]);
        let h = &srv.http;
        assert_eq!(get(h, "/metadata?key=a"), (404, "metadata not found".to_string()));
        assert_eq!(
            http(h, "PUT", "/metadata?key=mooncake%2Fram%2Fh%3A1", b"{\"buffers\":[]}"),
            (200, b"metadata updated".to_vec())
        );
        // One key rule for every method: escaped and plain spellings name one entry.
        assert_eq!(get(h, "/metadata?key=mooncake/ram/h:1"), (200, "{\"buffers\":[]}".to_string()));
        assert_eq!(get(h, "/metadata?key=mooncake%2Fram%2Fh%3A1"), (200, "{\"buffers\":[]}".to_string()));
        assert_eq!(http(h, "PUT", "/metadata?key=mooncake/ram/h:1", b"{}").0, 200, "ram keys are replaced");
        assert_eq!(get(h, "/metadata?key=mooncake/ram/h:1").1, "{}");
        assert_eq!(http(h, "PUT", "/metadata?key=mooncake/rpc_meta/h:1", b"A").0, 200);
        assert_eq!(http(h, "PUT", "/metadata?key=mooncake/rpc_meta/h:1", b"A"), (200, b"metadata unchanged".to_vec()));
        assert_eq!(
            http(h, "PUT", "/metadata?key=mooncake/rpc_meta/h:1", b"B"),
            (400, b"Duplicate rpc_meta key not allowed".to_vec())
        );
        assert_eq!(
            http(h, "DELETE", "/metadata?key=mooncake%2Frpc_meta%2Fh%3A1", b""),
            (200, b"metadata deleted".to_vec())
        );
        assert_eq!(http(h, "DELETE", "/metadata?key=mooncake/rpc_meta/h:1", b"").0, 404);
        for m in ["GET", "PUT", "DELETE"] {
            assert_eq!(http(h, m, "/metadata", b""), (400, b"Missing key parameter".to_vec()), "{m}");
            assert_eq!(http(h, m, "/metadata?key=", b"").0, 400, "{m}");
        }
        assert_eq!(http(h, "POST", "/metadata?key=a", b"").0, 405);
        let (_, m) = get(h, "/metrics");
        assert!(m.contains("http_requests_total{route=\"/metadata\",method=\"GET\",code=\"200\"}"), "{m}");
    });
}

/// A `ReplicateConfig` of one replica with upstream's pin fields set.
fn pinned_config(soft_pin_action: u64, soft_ttl_ms: Option<u64>, hard: bool) -> Value {
    let Value::Struct(mut f) = config() else { unreachable!() };
    f[3] = Value::UInt(soft_pin_action);
    f[4] = Value::opt(soft_ttl_ms.map(Value::UInt));
    f[5] = Value::Bool(hard);
    Value::Struct(f)
}

/// Pins through the unchanged wire fields (`soft_pin_action`, `soft_pin_ttl_ms`,
/// `with_hard_pin`): a hard-pinned value is never evicted; with
/// `--allow_evict_soft_pinned_objects=false` neither is a soft-pinned one while its pin lasts;
/// unpinned values make room.
#[test]
fn hard_and_soft_pins_hold_against_eviction() {
    common::for_each_runtime(|_| {
        for (label, cfg) in [("hard", pinned_config(0, None, true)), ("soft", pinned_config(1, Some(600_000), false))] {
            let srv =
                start(&["--rpc-port", "0", "--allow_evict_soft_pinned_objects=false", "--default-kv-lease-ttl", "0"]);
            let h = &srv.http;
            let mut rpc = Rpc::connect(srv.rpc.as_deref().unwrap());
            let client = uuid(9, 9);
            let seg = segment(0x99, "127.0.0.1:9998", "10.0.0.9:17777", 0x7f00_0000_0000, 1 << 20);
            assert_eq!(rpc.call("MountSegment", vec![seg, client.clone()]), Value::ok_void());
            let mut write = |key: &str, len: u64, cfg: &Value| {
                let started =
                    rpc.call("PutStart", vec![client.clone(), s(key), Value::UInt(len), cfg.clone(), s("default")]);
                if !matches!(started, Value::Ok(_)) {
                    return started;
                }
                let meta = Value::Struct(vec![s(key), Value::opt(None)]);
                rpc.call("PutEnd", vec![client.clone(), meta, Value::Int(0), s("default")])
            };
            assert_eq!(write("pinned", 512 << 10, &cfg), Value::ok_void(), "{label}");
            assert_eq!(write("a", 512 << 10, &config()), Value::ok_void());
            // Full: the unpinned value makes room, the pinned one stays.
            assert_eq!(write("b", 512 << 10, &config()), Value::ok_void());
            assert_eq!(get(h, "/query_key?key=a").0, 404, "{label}");
            assert_eq!(get(h, "/query_key?key=pinned").0, 200, "{label}");
            // Nothing else can make room: NO_AVAILABLE_HANDLE, the pinned value kept.
            assert_eq!(write("c", 768 << 10, &config()), Value::err(-200), "{label}");
            assert_eq!(get(h, "/query_key?key=pinned").0, 200, "{label}");
        }
    });
}

/// `--enable-multi-tenants` end to end: the RPC `tenant` scopes keys, REST sets a quota,
/// writes over it evict the tenant's own values, then are refused with -1700; the quota,
/// metrics, tenant remove_all and the policy's deletion rules over real sockets.
#[test]
fn tenant_quota_policies_live_in_upstreams_policy_file_across_a_restart() {
    common::for_each_runtime(|_| {
        let path = std::env::temp_dir().join(format!("{}.yaml", common::unique("mc-tenant-quotas")));
        std::fs::write(&path, "version: 1\n\ntenants:\n  - name: \"pre\"\n    quota: 1GB\n").unwrap();
        let uri = format!("--tenant_quota_connector_uri={}", path.display());
        let args = ["--rpc-port", "0", "--enable_multi_tenants", &uri];
        let srv = start(&args);
        let h = &srv.http;
        let (st, body) = get(h, "/api/v1/tenant_quotas?tenant_id=pre");
        assert!(st == 200 && body.contains(r#""requested_quota_bytes":1073741824"#), "{st} {body}");
        let (st, _) = http(h, "PUT", "/api/v1/tenant_quotas?tenant_id=t1", br#"{"requested_quota_bytes":5000}"#);
        assert_eq!(st, 200);
        assert_eq!(http(h, "DELETE", "/api/v1/tenant_quotas?tenant_id=pre", b"").0, 200);
        // Saved before the answer, in upstream's layout.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "version: 1\n\ntenants:\n  - name: \"t1\"\n    quota: 5000\n");
        drop(srv);
        let srv = start(&args);
        let (st, body) = get(&srv.http, "/api/v1/tenant_quotas");
        assert_eq!(st, 200);
        assert!(body.contains(r#""tenant_id":"t1","requested_quota_bytes":5000"#), "{body}");
        assert!(!body.contains("pre"), "{body}");
        drop(srv);
        // A file that cannot be read is not silently dropped: the start fails, naming why.
        std::fs::write(&path, "version: 2\ntenants: []\n").unwrap();
        let out = common::run_cli(
            &["--port", "0", "--rpc-port", "0", "--enable-multi-tenants", &uri],
            Duration::from_secs(10),
        );
        assert_eq!(out.code(), Some(1), "{}", out.stderr);
        assert!(out.stderr.contains("unsupported tenant quota policy version: 2"), "{}", out.stderr);
        let _ = std::fs::remove_file(&path);
        let etcd =
            ["--port", "0", "--rpc-port", "0", "--enable-multi-tenants", "--tenant-quota-connector-type", "etcd"];
        let out = common::run_cli(&etcd, Duration::from_secs(10));
        assert_eq!(out.code(), Some(2), "{}", out.stderr);
        assert!(out.stderr.contains("needs --enable-ha"), "{}", out.stderr);
    });
}

#[test]
fn tenants_scope_keys_and_quotas_admit_writes() {
    common::for_each_runtime(|_| {
        let srv = start(&["--rpc-port", "0", "--enable-multi-tenants", "--default-kv-lease-ttl", "0"]);
        let h = &srv.http;
        let mut rpc = Rpc::connect(srv.rpc.as_deref().unwrap());
        let client = uuid(7, 7);
        let seg = segment(0x77, "127.0.0.1:9997", "10.0.0.9:17777", 0x7f00_0000_0000, 16 << 20);
        assert_eq!(rpc.call("MountSegment", vec![seg, client.clone()]), Value::ok_void());
        let write = |rpc: &mut Rpc, tenant: &str, key: &str, len: u64| {
            let started = rpc.call("PutStart", vec![client.clone(), s(key), Value::UInt(len), config(), s(tenant)]);
            if !matches!(started, Value::Ok(_)) {
                return started;
            }
            let meta = Value::Struct(vec![s(key), Value::opt(None)]);
            rpc.call("PutEnd", vec![client.clone(), meta, Value::Int(0), s(tenant)])
        };
        let exists = |rpc: &mut Rpc, tenant: &str, key: &str| rpc.call("ExistKey", vec![s(key), s(tenant)]);
        let quota = |t: &str, n: u64| {
            let body = format!(r#"{{"requested_quota_bytes":{n}}}"#);
            let (st, body) = http(h, "PUT", &format!("/api/v1/tenant_quotas?tenant_id={t}"), body.as_bytes());
            assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
        };
        // Only registered tenants write (upstream's strict admission), REST's default one too.
        assert_eq!(write(&mut rpc, "t1", "k", 1000), Value::err(-1701));
        assert_eq!(write(&mut rpc, "", "k", 1000), Value::err(-1701));
        let (st, body) = http(h, "PUT", "/api/put", br#"{"key":"r","value":"v"}"#);
        assert_eq!(st, 403, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("Tenant not registered"));
        assert_eq!(get(h, "/api/v1/tenant_quotas?tenant_id=t1").0, 404, "a refused tenant leaves no trace");
        quota("t1", 4 << 20);
        quota("t2", 4 << 20);
        assert_eq!(write(&mut rpc, "t1", "k", 1000), Value::ok_void());
        assert_eq!(write(&mut rpc, "t2", "k", 10), Value::ok_void(), "the same key in another tenant");
        assert_eq!(exists(&mut rpc, "t1", "k"), Value::ok(Value::Bool(true)));
        assert_eq!(exists(&mut rpc, "", "k"), Value::ok(Value::Bool(false)), "not in the default tenant");
        assert_eq!(get(h, "/get_all_keys").1, "", "REST lists the default tenant only");
        let (st, body) = get(h, "/api/v1/tenant_quotas?tenant_id=t1");
        assert_eq!(st, 200, "{body}");
        assert!(body.contains(r#""charged_bytes":1000,"#) && body.contains(r#""has_explicit_policy":true"#), "{body}");
        // A quota of 1 MiB: filling it exactly is admitted; more evicts t1's own values.
        quota("t1", 1 << 20);
        assert_eq!(write(&mut rpc, "t1", "a", (1 << 20) - 1000), Value::ok_void());
        assert_eq!(write(&mut rpc, "t1", "b", 512 << 10), Value::ok_void());
        assert_eq!(exists(&mut rpc, "t1", "k"), Value::ok(Value::Bool(false)), "evicted for its own tenant");
        assert_eq!(exists(&mut rpc, "t2", "k"), Value::ok(Value::Bool(true)), "never another tenant's");
        // Larger than the quota: refused, nothing lost.
        assert_eq!(write(&mut rpc, "t1", "huge", 2 << 20), Value::err(-1700));
        assert_eq!(exists(&mut rpc, "t1", "b"), Value::ok(Value::Bool(true)));
        let (_, m) = get(h, "/metrics");
        assert!(
            m.contains("mooncake_tenant_quota_reject_total{tenant_id=\"t1\",reason=\"quota_exceeded\"} 1\n"),
            "{m}"
        );
        assert!(m.contains("mooncake_tenant_quota_charged_bytes{tenant_id=\"t1\"} 524288\n"), "{m}");
        assert!(m.contains("mooncake_tenant_evict_bytes_total{tenant_id=\"t1\"} 1048576\n"), "{m}");
        assert!(m.contains("mooncake_tenant_quota_effective_bytes{tenant_id=\"t2\"} 4194304\n"), "{m}");
        // The policy goes only once the tenant is empty; remove_all of t1 leaves t2.
        let (st, body) = http(h, "DELETE", "/api/v1/tenant_quotas?tenant_id=t1", b"");
        assert_eq!((st, String::from_utf8_lossy(&body).contains("-1702")), (409, true));
        let (st, body) = http(h, "POST", "/api/v1/remove_all?force=1&tenant_id=t1", b"");
        assert_eq!((st, String::from_utf8(body).unwrap()), (200, r#"{"success":true,"removed_count":1}"#.to_string()));
        let (st, body) = http(h, "DELETE", "/api/v1/tenant_quotas?tenant_id=t1", b"");
        assert_eq!((st, String::from_utf8(body).unwrap()), (200, r#"{"success":true,"data":null}"#.to_string()));
        assert_eq!(get(h, "/api/v1/tenant_quotas?tenant_id=t1").0, 404);
        // A client's RemoveAll empties its own tenant.
        assert_eq!(rpc.call("RemoveAll", vec![Value::Bool(true), s("t2")]), Value::Int(1));
        assert_eq!(exists(&mut rpc, "t2", "k"), Value::ok(Value::Bool(false)));
    });
}
