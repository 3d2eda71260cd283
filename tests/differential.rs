//! Differential test: one scripted sequence of master RPCs and admin HTTP requests, played
//! against upstream's `mooncake_master` (from the wheel, as tests/rpc_upstream.rs installs it)
//! and against mc-master, comparing what a client observes at each step: RPC results (success
//! or error code, and the shape of the value), HTTP statuses, error codes and JSON shapes.
//!
//! Every difference must be listed in [`DELIBERATE`] with its reason (the documented
//! deliberate differences, docs/upstream-compatibility.md); a listed step that no longer
//! differs fails too, so the list stays true. Runs once, against the first runtime of
//! `common::runtimes`; skips (prints why, passes) where the wheel cannot be had.

mod common;

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::rpc::{config, s, segment, uuid, Rpc};
use common::upstream::python_or_skip;
use common::{build_request, free_port, pct, Conn, Server};
use mc_core::rpc::client::object_meta;
use mc_core::rpc::Value;

/// Steps whose observations differ on purpose: (step, why).
const DELIBERATE: &[(&str, &str)] = &[
    (
        "http GET /health",
        "SPEC §4.3: text/plain `OK` (JSON only with Accept: application/json); upstream always JSON",
    ),
    (
        "http GET /query_key without key",
        "SPEC §4.4: a missing key is 400 INVALID_PARAMS; upstream looks up the empty key (404 -704)",
    ),
    (
        "http GET /batch_query_keys k1,nope",
        "SPEC §4.5's item shape (`values` of {buffer_descriptor, transport_endpoint_}, no disk/nof members); upstream's flat descriptors with null disk_values, local_disk_values, nof_values",
    ),
    (
        "http GET /query_segment",
        "SPEC §4.8: usage and capacity of the node; upstream answers 500 `Failed to query segment` for a client's segment",
    ),
    ("http GET /query_segment unknown", "SPEC §4.8: 404 `segment not found`; upstream 500"),
    (
        "http POST /api/v1/remove_all",
        "/query_key grants no lease (SPEC §4.4, read-only): k1 is removable here; upstream's /query_key leased it",
    ),
    ("http POST /api/v1/remove_all force", "the same lease: nothing is left here for the forced remove"),
    ("http GET /no_such_path", "SPEC §2.3: 404 {\"error\":\"not found\"} (JSON); upstream plain text"),
    (
        "rpc PutStart of a key with a newline",
        "keys follow the REST key rules (no control characters, so every key can be listed by /get_all_keys): INVALID_PARAMS; upstream accepts any bytes",
    ),
    ("rpc PutRevoke of a key with a newline", "the same key rule (upstream revokes the write it accepted)"),
];

/// Kills (and reaps) the child on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One master under test: where its RPC and admin HTTP listen.
struct Target {
    rpc: String,
    http: SocketAddr,
}

fn wait_port(child: &mut Child, port: u16) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "mooncake_master exited");
        assert!(Instant::now() < deadline, "mooncake_master does not listen on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The shape of an RPC result: successes and error codes exactly, strings and numbers by
/// kind (their values are addresses, ids and times), lists with their length.
fn vshape(v: &Value) -> String {
    match v {
        Value::Ok(x) => format!("ok({})", vshape(x)),
        Value::Err(x) => match **x {
            Value::Int(code) => format!("err({code})"),
            ref other => format!("err({})", vshape(other)),
        },
        Value::Int(_) | Value::UInt(_) => "n".into(),
        Value::Bool(b) => b.to_string(),
        Value::Str(_) => "s".into(),
        Value::List(items) => format!("[{}: {}]", items.len(), items.iter().map(vshape).collect::<Vec<_>>().join(", ")),
        Value::Map(m) => format!("map{}", m.len()),
        Value::Opt(None) => "none".into(),
        Value::Opt(Some(x)) => format!("some({})", vshape(x)),
        Value::Variant(i, x) => format!("v{i}({})", vshape(x)),
        Value::Struct(f) => format!("{{{}}}", f.iter().map(vshape).collect::<Vec<_>>().join(", ")),
        Value::Void => "void".into(),
    }
}

/// The shape of a JSON body: object keys sorted with their shapes; `success`, `error_code`,
/// `exists`, `enabled` and `removed_count` by value; other scalars by kind.
fn jshape(v: &serde_json::Value, key: &str) -> String {
    use serde_json::Value as J;
    let by_value = matches!(
        key,
        "success"
            | "error_code"
            | "exists"
            | "enabled"
            | "removed_count"
            | "status_name"
            | "tenant_id"
            | "requested_quota_bytes"
            | "effective_quota_bytes"
            | "charged_bytes"
            | "admission_closed"
            | "over_quota"
            | "has_explicit_policy"
    );
    match v {
        J::Object(m) => {
            let mut keys: Vec<_> = m.iter().map(|(k, v)| format!("{k}:{}", jshape(v, k))).collect();
            keys.sort();
            format!("{{{}}}", keys.join(","))
        }
        J::Array(a) => format!("[{}: {}]", a.len(), a.first().map_or(String::new(), |x| jshape(x, ""))),
        _ if by_value => v.to_string(),
        J::Null => "null".into(),
        J::Bool(_) => "bool".into(),
        J::Number(_) => "num".into(),
        J::String(_) => "str".into(),
    }
}

fn http(t: &Target, method: &str, target: &str, body: &[u8]) -> String {
    let mut c = Conn::connect(t.http);
    c.send(&build_request(method, target, &[("Host", "127.0.0.1")], body));
    let r = c.read_response_for(method);
    let shape = match serde_json::from_slice::<serde_json::Value>(&r.body) {
        Ok(v) if r.body.first().is_some_and(|b| *b == b'{' || *b == b'[') => jshape(&v, ""),
        _ => format!("text({} lines)", r.text().lines().count()),
    };
    format!("{} {shape}", r.status)
}

/// Plays the script against `t`: (step, observation) in order.
fn script(t: &Target) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rpc = Rpc::connect(&t.rpc);
    let mut reader = Rpc::connect(&t.rpc);
    let client = uuid(0xd1ff, 1);
    let other = uuid(0xd1ff, 2);
    let name = "127.0.0.1:17999";
    let seg = segment(0x5e6, name, name, 0x7f10_0000_0000, 64 << 20);
    let step = |out: &mut Vec<(String, String)>, what: &str, obs: String| out.push((what.to_string(), obs));
    macro_rules! call {
        ($r:expr, $what:expr, $name:expr, $args:expr) => {{
            let v = $r.try_call($name, $args);
            let obs = match &v {
                Ok(v) => vshape(v),
                Err(code) => format!("frame err {code}"),
            };
            step(&mut out, $what, obs);
            v.unwrap_or(Value::Void)
        }};
    }
    let ready = call!(rpc, "rpc ServiceReady", "ServiceReady", vec![]);
    step(&mut out, "rpc ServiceReady value", format!("{ready:?}"));
    let cfg = call!(rpc, "rpc GetStorageConfig", "GetStorageConfig", vec![]);
    step(&mut out, "rpc GetStorageConfig value", format!("{cfg:?}"));
    call!(rpc, "rpc Ping of an unknown client", "Ping", vec![client.clone()]);
    call!(rpc, "rpc MountSegment", "MountSegment", vec![seg.clone(), client.clone()]);
    call!(rpc, "rpc MountSegment again (same segment)", "MountSegment", vec![seg.clone(), client.clone()]);
    call!(rpc, "rpc Ping after the mount", "Ping", vec![client.clone()]);
    call!(rpc, "rpc ReMountSegment", "ReMountSegment", vec![Value::List(vec![seg.clone()]), client.clone()]);
    call!(rpc, "rpc Ping after the remount", "Ping", vec![client.clone()]);
    let put = |key: &str, len: u64| vec![client.clone(), s(key), Value::UInt(len), config(), s("default")];
    let end = |c: &Value, key: &str| vec![c.clone(), object_meta(key), Value::Int(0), s("default")];
    call!(rpc, "rpc PutStart k1", "PutStart", put("k1", 1000));
    call!(rpc, "rpc PutStart k1 again (in progress)", "PutStart", put("k1", 1000));
    call!(rpc, "rpc GetReplicaList k1 (in progress)", "GetReplicaList", vec![s("k1"), s("default")]);
    call!(rpc, "rpc ExistKey k1 (in progress)", "ExistKey", vec![s("k1"), s("default")]);
    call!(rpc, "rpc PutEnd k1 by another client", "PutEnd", end(&other, "k1"));
    call!(rpc, "rpc PutEnd k1", "PutEnd", end(&client, "k1"));
    call!(rpc, "rpc PutStart k1 (exists)", "PutStart", put("k1", 1000));
    call!(reader, "rpc ExistKey k1 (after PutEnd)", "ExistKey", vec![s("k1"), s("default")]);
    call!(reader, "rpc ExistKey nope", "ExistKey", vec![s("nope"), s("default")]);
    call!(
        reader,
        "rpc BatchExistKey [k1, nope]",
        "BatchExistKey",
        vec![Value::List(vec![s("k1"), s("nope")]), s("default")]
    );
    call!(reader, "rpc GetReplicaList k1", "GetReplicaList", vec![s("k1"), s("default")]);
    call!(reader, "rpc GetReplicaList nope", "GetReplicaList", vec![s("nope"), s("default")]);
    call!(
        reader,
        "rpc BatchGetReplicaList [k1, nope]",
        "BatchGetReplicaList",
        vec![Value::List(vec![s("k1"), s("nope")]), s("default")]
    );
    call!(rpc, "rpc Remove nope", "Remove", vec![s("nope"), Value::Bool(false), s("default")]);
    call!(rpc, "rpc Remove k1 (leased)", "Remove", vec![s("k1"), Value::Bool(false), s("default")]);
    call!(rpc, "rpc PutStart k2", "PutStart", put("k2", 4096));
    call!(rpc, "rpc PutRevoke k2", "PutRevoke", vec![client.clone(), s("k2"), Value::Int(0), s("default")]);
    call!(rpc, "rpc GetReplicaList k2 (revoked)", "GetReplicaList", vec![s("k2"), s("default")]);
    call!(rpc, "rpc PutStart of an empty key", "PutStart", put("", 10));
    call!(rpc, "rpc PutStart of zero bytes", "PutStart", put("k3", 0));
    call!(rpc, "rpc PutStart of a key with a newline", "PutStart", put("a\nb", 10));
    call!(
        rpc,
        "rpc PutRevoke of a key with a newline",
        "PutRevoke",
        vec![client.clone(), s("a\nb"), Value::Int(0), s("default")]
    );
    call!(rpc, "rpc UpsertStart k1 (complete)", "UpsertStart", put("k1", 2000));
    call!(rpc, "rpc UpsertEnd k1", "UpsertEnd", end(&client, "k1"));
    call!(rpc, "rpc QuerySegmentStatusById", "QuerySegmentStatusById", vec![uuid(0x5e6, 0x5e6)]);
    call!(rpc, "rpc QuerySegmentStatusById unknown", "QuerySegmentStatusById", vec![uuid(9, 9)]);
    call!(rpc, "rpc QuerySegmentStatus by name", "QuerySegmentStatus", vec![s(name)]);
    call!(rpc, "rpc PutStart k4", "PutStart", put("k4", 100));
    call!(rpc, "rpc PutEnd k4", "PutEnd", end(&client, "k4"));

    // The admin HTTP endpoints, with k1 (leased) and k4 stored on the client's segment.
    for (what, method, target) in [
        ("http GET /health", "GET", "/health".to_string()),
        ("http GET /query_key k1", "GET", "/query_key?key=k1".to_string()),
        ("http GET /query_key nope", "GET", "/query_key?key=nope".to_string()),
        ("http GET /query_key without key", "GET", "/query_key".to_string()),
        ("http GET /batch_query_keys k1,nope", "GET", "/batch_query_keys?keys=k1,nope".to_string()),
        ("http GET /batch_query_keys without keys", "GET", "/batch_query_keys".to_string()),
        ("http GET /get_all_keys", "GET", "/get_all_keys".to_string()),
        ("http GET /get_all_segments", "GET", "/get_all_segments".to_string()),
        ("http GET /get_segments_detail", "GET", "/get_segments_detail".to_string()),
        ("http GET /query_segment", "GET", format!("/query_segment?segment={}", pct(name))),
        ("http GET /query_segment unknown", "GET", "/query_segment?segment=nope".to_string()),
        ("http GET /api/v1/segments/status", "GET", format!("/api/v1/segments/status?segment={}", pct(name))),
        ("http GET /api/v1/segments/status unknown", "GET", "/api/v1/segments/status?segment=nope".to_string()),
        ("http GET /api/v1/segments/status without name", "GET", "/api/v1/segments/status".to_string()),
        ("http GET /api/v1/tenant_quotas", "GET", "/api/v1/tenant_quotas".to_string()),
        ("http PUT /api/v1/tenant_quotas without tenant", "PUT", "/api/v1/tenant_quotas".to_string()),
        ("http DELETE /api/v1/tenant_quotas without tenant", "DELETE", "/api/v1/tenant_quotas".to_string()),
        ("http GET /kv_events/status", "GET", "/kv_events/status".to_string()),
        ("http POST /api/v1/remove_all", "POST", "/api/v1/remove_all".to_string()),
        ("http POST /api/v1/remove_all force", "POST", "/api/v1/remove_all?force=true".to_string()),
        ("http GET /get_all_keys after remove_all", "GET", "/get_all_keys".to_string()),
        ("http GET /no_such_path", "GET", "/no_such_path".to_string()),
    ] {
        let body: &[u8] = if method == "PUT" { br#"{"requested_quota_bytes":1}"# } else { b"" };
        step(&mut out, what, http(t, method, &target, body));
    }

    call!(rpc, "rpc RemoveAll (nothing left)", "RemoveAll", vec![Value::Bool(true), s("default")]);
    call!(rpc, "rpc UnmountSegment", "UnmountSegment", vec![uuid(0x5e6, 0x5e6), client.clone()]);
    call!(rpc, "rpc UnmountSegment again", "UnmountSegment", vec![uuid(0x5e6, 0x5e6), client.clone()]);
    call!(rpc, "rpc PutStart with no segment", "PutStart", put("k5", 100));
    out
}

/// Upstream's `mooncake_master` with `extra` flags, and its target; None (skipped) without
/// the wheel.
fn upstream_master(what: &str, extra: &[&str]) -> Option<(Proc, Target)> {
    let py = python_or_skip(what)?;
    let bin = py.parent().expect("venv bin").join("mooncake_master");
    let (rpc_port, admin_port) = (free_port(), free_port());
    let log = std::env::temp_dir().join(format!("{}.log", common::unique("mc-differential-upstream")));
    let out = File::create(&log).unwrap();
    let mut up = Command::new(bin)
        .arg(format!("--rpc_port={rpc_port}"))
        .arg("--rpc_address=127.0.0.1")
        .arg(format!("--metrics_port={admin_port}"))
        .arg("--metrics_host=127.0.0.1")
        .args(["--rpc_thread_num=2", "--logtostderr=true"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start mooncake_master");
    wait_port(&mut up, rpc_port);
    wait_port(&mut up, admin_port);
    let target = Target { rpc: format!("127.0.0.1:{rpc_port}"), http: ([127, 0, 0, 1], admin_port).into() };
    Some((Proc(up), target))
}

/// mc-master with `extra` flags (first runtime of `common::runtimes`), and its target.
fn mc_master(extra: &[&str]) -> (Server, Target) {
    let rt = common::runtimes()[0].clone();
    let mut args = vec!["--rpc-port", "0", "--te-port", "off"];
    args.extend_from_slice(extra);
    let mc = Server::start_rt(&rt, &args);
    let rpc = mc
        .lines_until(|l| l.starts_with("rpc listening on "))
        .expect("rpc line")
        .trim_start_matches("rpc listening on ")
        .to_string();
    let http = mc.addr;
    (mc, Target { rpc, http })
}

/// Compares two plays of one script step by step against the `deliberate` differences.
fn compare(a: &[(String, String)], b: &[(String, String)], deliberate: &[(&str, &str)]) {
    assert_eq!(a.len(), b.len());
    let mut unexpected = Vec::new();
    let mut stale = Vec::new();
    for ((step, up), (_, mine)) in a.iter().zip(b) {
        let listed = deliberate.iter().find(|(s, _)| s == step);
        let same = up == mine;
        println!("{} {step}\n    upstream:  {up}\n    mc-master: {mine}", if same { "same" } else { "DIFF" });
        match (same, listed) {
            (false, None) => unexpected.push(format!("{step}\n  upstream:  {up}\n  mc-master: {mine}")),
            (true, Some(_)) => stale.push(step.clone()),
            _ => {}
        }
    }
    assert!(unexpected.is_empty(), "differences not listed as deliberate:\n{}", unexpected.join("\n"));
    assert!(stale.is_empty(), "listed as deliberate but the same now: {stale:?}");
}

#[test]
fn the_same_script_against_upstream_master_and_mc_master() {
    let Some((_up, upstream)) = upstream_master("differential test", &[]) else { return };
    let (_mc, ours) = mc_master(&[]);
    compare(&script(&upstream), &script(&ours), DELIBERATE);
}

/// Steps of [`tenant_script`] whose observations differ on purpose: (step, why).
const DELIBERATE_TENANTS: &[(&str, &str)] = &[
    (
        "rpc ExistKey k2 in ta (after the refused write)",
        "a write larger than its tenant's whole quota is refused without evicting anything (it could never fit); upstream evicts the tenant's values (k2 here) and refuses it anyway",
    ),
    ("http GET quota ta (after the refused write)", "the same: nothing was evicted, so k1 and k2 are still charged"),
    (
        "rpc ExistKey k1 in ta (after k4)",
        "the same, later: k4 fits only after evicting the tenant's oldest value (k1) here, while upstream had room left by the eviction for k3",
    ),
    ("http GET every quota", "the same: ta holds k2 and k4 here, k1 and k4 upstream (charged 9000 vs 8000)"),
];

/// Multi-tenant mode: quotas set, read and deleted over HTTP, keys of two tenants written
/// over the RPC, a write past its tenant's quota, tenant-scoped removes.
fn tenant_script(t: &Target) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rpc = Rpc::connect(&t.rpc);
    let client = uuid(0x7e4a, 1);
    let name = "127.0.0.1:17998";
    let seg = segment(0x7e4, name, name, 0x7f20_0000_0000, 64 << 20);
    let step = |out: &mut Vec<(String, String)>, what: &str, obs: String| out.push((what.to_string(), obs));
    macro_rules! call {
        ($what:expr, $name:expr, $args:expr) => {{
            let v = rpc.try_call($name, $args);
            let obs = match &v {
                Ok(v) => vshape(v),
                Err(code) => format!("frame err {code}"),
            };
            step(&mut out, $what, obs);
            v.unwrap_or(Value::Void)
        }};
    }
    macro_rules! http {
        ($what:expr, $method:expr, $target:expr, $body:expr) => {{
            let obs = http(t, $method, $target, $body);
            step(&mut out, $what, obs);
        }};
    }
    let put = |tenant: &str, key: &str, len: u64| vec![client.clone(), s(key), Value::UInt(len), config(), s(tenant)];
    let end = |tenant: &str, key: &str| vec![client.clone(), object_meta(key), Value::Int(0), s(tenant)];
    call!("rpc ServiceReady", "ServiceReady", vec![]);
    call!("rpc MountSegment", "MountSegment", vec![seg.clone(), client.clone()]);
    http!("http GET /api/v1/tenant_quotas (none)", "GET", "/api/v1/tenant_quotas", b"");
    http!("http PUT quota ta", "PUT", "/api/v1/tenant_quotas?tenant_id=ta", br#"{"requested_quota_bytes":10000}"#);
    http!("http PUT quota of 0", "PUT", "/api/v1/tenant_quotas?tenant_id=ta", br#"{"requested_quota_bytes":0}"#);
    http!("http PUT quota, bad JSON", "PUT", "/api/v1/tenant_quotas?tenant_id=ta", b"{");
    http!("http GET quota ta", "GET", "/api/v1/tenant_quotas?tenant_id=ta", b"");
    http!("http GET quota of an unknown tenant", "GET", "/api/v1/tenant_quotas?tenant_id=nobody", b"");
    call!("rpc PutStart k1 in ta", "PutStart", put("ta", "k1", 4000));
    call!("rpc PutEnd k1 in ta", "PutEnd", end("ta", "k1"));
    call!("rpc PutStart k1 in tb (not registered)", "PutStart", put("tb", "k1", 3000));
    http!("http PUT quota tb", "PUT", "/api/v1/tenant_quotas?tenant_id=tb", br#"{"requested_quota_bytes":1048576}"#);
    call!("rpc PutStart k1 in tb (another key space)", "PutStart", put("tb", "k1", 3000));
    call!("rpc PutEnd k1 in tb", "PutEnd", end("tb", "k1"));
    call!("rpc ExistKey k1 in ta", "ExistKey", vec![s("k1"), s("ta")]);
    call!("rpc ExistKey k1 in tc", "ExistKey", vec![s("k1"), s("tc")]);
    call!("rpc ExistKey k1 in the default tenant", "ExistKey", vec![s("k1"), s("default")]);
    call!("rpc GetReplicaList k1 in tb", "GetReplicaList", vec![s("k1"), s("tb")]);
    call!("rpc PutStart k2 in ta (fits)", "PutStart", put("ta", "k2", 5000));
    call!("rpc PutEnd k2 in ta", "PutEnd", end("ta", "k2"));
    http!("http GET quota ta (charged)", "GET", "/api/v1/tenant_quotas?tenant_id=ta", b"");
    call!("rpc PutStart k3 in ta (past the quota)", "PutStart", put("ta", "k3", 20000));
    call!("rpc ExistKey k1 in ta (after the refused write)", "ExistKey", vec![s("k1"), s("ta")]);
    call!("rpc ExistKey k2 in ta (after the refused write)", "ExistKey", vec![s("k2"), s("ta")]);
    http!("http GET quota ta (after the refused write)", "GET", "/api/v1/tenant_quotas?tenant_id=ta", b"");
    call!("rpc PutStart k4 in ta (fits after evicting k1)", "PutStart", put("ta", "k4", 4000));
    call!("rpc PutEnd k4 in ta", "PutEnd", end("ta", "k4"));
    call!("rpc ExistKey k1 in ta (after k4)", "ExistKey", vec![s("k1"), s("ta")]);
    call!("rpc PutStart k1 in the default tenant", "PutStart", put("default", "k1", 100));
    call!("rpc PutEnd k1 in the default tenant", "PutEnd", end("default", "k1"));
    call!("rpc PutStart k1 with an empty tenant", "PutStart", put("", "k9", 100));
    http!("http GET quota default", "GET", "/api/v1/tenant_quotas?tenant_id=default", b"");
    http!("http GET every quota", "GET", "/api/v1/tenant_quotas", b"");
    http!("http DELETE quota ta (holds values)", "DELETE", "/api/v1/tenant_quotas?tenant_id=ta", b"");
    http!("http POST remove_all of ta", "POST", "/api/v1/remove_all?tenant_id=ta&force=true", b"");
    call!("rpc ExistKey k1 in ta (removed)", "ExistKey", vec![s("k1"), s("ta")]);
    call!("rpc ExistKey k1 in tb (kept)", "ExistKey", vec![s("k1"), s("tb")]);
    http!("http DELETE quota ta", "DELETE", "/api/v1/tenant_quotas?tenant_id=ta", b"");
    http!("http DELETE quota ta again", "DELETE", "/api/v1/tenant_quotas?tenant_id=ta", b"");
    call!("rpc RemoveAll in tb", "RemoveAll", vec![Value::Bool(true), s("tb")]);
    call!("rpc ExistKey k1 in tb (removed)", "ExistKey", vec![s("k1"), s("tb")]);
    call!("rpc UnmountSegment", "UnmountSegment", vec![uuid(0x7e4, 0x7e4), client.clone()]);
    out
}

#[test]
fn the_same_tenant_script_against_upstream_master_and_mc_master() {
    // Both keep their policies in upstream's policy file (its default connector), started with
    // the same flags; upstream needs the file to exist.
    let file = |who: &str| {
        let p = std::env::temp_dir().join(format!("{}.yaml", common::unique(&format!("mc-differential-quotas-{who}"))));
        std::fs::write(&p, "version: 1\ntenants: []\n").unwrap();
        p
    };
    let (theirs, mine) = (file("upstream"), file("mc"));
    let uri = |p: &std::path::Path| format!("--tenant_quota_connector_uri={}", p.display());
    let (uri_up, uri_mc) = (uri(&theirs), uri(&mine));
    let Some((_up, upstream)) =
        upstream_master("differential test (tenants)", &["--enable_multi_tenants=true", &uri_up])
    else {
        return;
    };
    let (_mc, ours) = mc_master(&["--enable_multi_tenants=true", &uri_mc]);
    let (a, b) = (tenant_script(&upstream), tenant_script(&ours));
    let (fa, fb) = (std::fs::read_to_string(&theirs).unwrap(), std::fs::read_to_string(&mine).unwrap());
    let _ = (std::fs::remove_file(&theirs), std::fs::remove_file(&mine));
    compare(&a, &b, DELIBERATE_TENANTS);
    assert_eq!(fa, fb, "the policy files differ");
}
