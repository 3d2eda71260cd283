//! Store-node mode (`mc-master --master HOST:PORT`) in a cluster with upstream Mooncake's
//! unchanged programs (wheel `mooncake-transfer-engine-non-cuda`): the proof that an
//! mc-master node is a store node like upstream's, on upstream's master and beside upstream's
//! store service, with the bytes moving over the transfer-engine TCP data plane.
//!
//! 1. Two mc-master nodes on upstream's `mooncake_master` (its HTTP metadata server): both
//!    register; values of 64 B, 1 MiB and 16 MiB put on one are read byte for byte on the
//!    other (the master places each on either node, so either the put or the get crosses to
//!    the other node); exist, remove (then 404), and `replica_num=2` (query parameter and
//!    JSON member) giving one copy on each node, readable on both.
//! 2. Upstream's store REST service (`python -m mooncake.mooncake_store_service`,
//!    `tests/cluster_upstream/store_service.py`) beside an mc-master node, on upstream's
//!    master and on an mc-master master: each reads the other's values byte for byte. The
//!    segment sizes (node 16 MiB, upstream 64 MiB) force the placement of the large values
//!    so that all four paths run whatever the master's strategy: the node reads from and
//!    writes into upstream's memory (20 MiB values only fit there), upstream writes into and
//!    reads from the node's memory (5 MiB values once upstream's is nearly full). Small
//!    values of a few bytes to a few KiB go wherever the master puts them. Upstream's put of
//!    an existing key keeps the first value, seen from both sides.
//!
//! Every test runs once per runtime of `common::runtimes` (the mc-master processes use it).
//! Skips (prints why, passes) when the wheel cannot be had, or with `MC_SKIP_UPSTREAM=1`.
//! Every process here is started in a process group of its own and SIGKILLed as a group at
//! the end, failing or not; every address given to upstream is 127.0.0.1.

mod common;

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use common::upstream::python_or_skip;
use common::{build_request, free_port, pct, Conn, Response, Server, TempFile, MIB};
use serde_json::json;

/// How long upstream's store service may take to answer (its setup retries every second).
const SERVICE_START: Duration = Duration::from_secs(60);
/// How long a node may take to register with its master (`/health` 200).
const NODE_READY: Duration = Duration::from_secs(20);

/// The wheel's Python for test `name`, or `None` (skipped). The tests of this file run in
/// parallel threads: the first one installs the cached environment, the others wait for it
/// instead of installing into the same folder at the same time.
fn python(name: &str) -> Option<PathBuf> {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(PoisonError::into_inner);
    python_or_skip(name)
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// An upstream process in a process group of its own, stdout and stderr in a log file;
/// the whole group is SIGKILLed and reaped on drop (the log tail is printed when panicking).
struct Group {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Group {
    fn spawn(name: &str, cmd: &mut Command) -> Group {
        let log = std::env::temp_dir().join(format!("{}.log", common::unique(&format!("mc-cluster-{name}"))));
        let out = File::create(&log).expect("create a log file");
        let err = out.try_clone().expect("clone the log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Group { child, name: name.to_string(), log }
    }

    /// Panics (with the log tail) when the process has exited.
    #[track_caller]
    fn assert_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("{} exited ({st}); log tail:\n{}", self.name, self.log_tail());
        }
    }

    fn log_tail(&self) -> String {
        let data = std::fs::read(&self.log).unwrap_or_default();
        let start = data.len().saturating_sub(6000);
        String::from_utf8_lossy(&data[start..]).into_owned()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // The group's id is the child's pid (process_group(0)): this signals only what we started.
        // SAFETY: plain kill(2) on a process group this test created.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- {} log tail ---\n{}", self.name, self.log_tail());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Waits until 127.0.0.1:`port` accepts connections, while `proc` is alive.
#[track_caller]
fn wait_port(proc: &mut Group, port: u16, timeout: Duration) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + timeout;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
        proc.assert_alive();
        assert!(Instant::now() < deadline, "{} does not listen on {addr} after {timeout:?}", proc.name);
        thread::sleep(Duration::from_millis(100));
    }
}

/// The master of a cluster: upstream's `mooncake_master` or an mc-master.
enum MasterProc {
    Upstream(#[allow(dead_code)] Group),
    Mc(#[allow(dead_code)] Server),
}

struct Master {
    _proc: MasterProc,
    /// `HOST:PORT` of its RPC listener (`--master` of the nodes).
    rpc: String,
    /// Its HTTP metadata server.
    metadata: String,
    /// Where `/query_key` and `/get_segments_detail` answer.
    admin: SocketAddr,
    label: &'static str,
}

impl Master {
    /// Upstream's master: RPC, admin and the co-located HTTP metadata server on free ports;
    /// leases of 300 ms so that a remove need not wait 10 s after a read; eviction only when
    /// nearly full (the values of test 2 fill almost 90 % of the cluster on purpose).
    fn upstream(py: &Path) -> Master {
        let bin = py.parent().expect("venv bin").join("mooncake_master");
        let (rpc, admin, meta) = (free_port(), free_port(), free_port());
        let mut g = Group::spawn(
            "mooncake_master",
            Command::new(bin)
                .arg(format!("--rpc_port={rpc}"))
                .arg("--rpc_address=127.0.0.1")
                .arg(format!("--metrics_port={admin}"))
                .arg("--metrics_host=127.0.0.1")
                // It binds 0.0.0.0 whatever it is told (upstream-behavior §7); only 127.0.0.1 is used.
                .arg("--enable_http_metadata_server=true")
                .arg(format!("--http_metadata_server_port={meta}"))
                .args(["--default_kv_lease_ttl=300", "--eviction_high_watermark_ratio=0.99"])
                .args(["--rpc_thread_num=2", "--logtostderr=true"]),
        );
        for port in [rpc, admin, meta] {
            wait_port(&mut g, port, Duration::from_secs(30));
        }
        Master {
            _proc: MasterProc::Upstream(g),
            rpc: format!("127.0.0.1:{rpc}"),
            metadata: format!("http://127.0.0.1:{meta}/metadata"),
            admin: ([127, 0, 0, 1], admin).into(),
            label: "mooncake_master",
        }
    }

    /// An mc-master master (`--port 0 --rpc-port 0 --te-port 0`), its `/metadata` the
    /// cluster's metadata server.
    fn mc() -> Master {
        let s = Server::start(&[
            "--rpc-port",
            "0",
            "--te-port",
            "0",
            "--default-kv-lease-ttl",
            "300",
            "--eviction-high-watermark-ratio",
            "0.99",
        ]);
        let rpc = s
            .lines_until(|l| l.starts_with("rpc listening on "))
            .unwrap_or_else(|| panic!("the master printed no rpc line; stderr:\n{}", s.stderr_tail()));
        let rpc = rpc.trim_start_matches("rpc listening on ").to_string();
        Master {
            metadata: format!("http://{}/metadata", s.addr),
            admin: s.addr,
            rpc,
            _proc: MasterProc::Mc(s),
            label: "mc-master",
        }
    }

    /// The `transport_endpoint_` of every replica of `key` (none: 404, not found).
    fn holders(&self, key: &str) -> Vec<String> {
        let r = request(self.admin, "GET", &format!("/query_key?key={}", pct(key)), &[], b"");
        if r.status == 404 {
            return Vec::new();
        }
        assert_eq!(r.status, 200, "{} /query_key?key={key}: {}", self.label, r.text());
        let v = r.json();
        let data = v["data"].as_array().unwrap_or_else(|| panic!("{} /query_key: {v}", self.label));
        data.iter()
            .map(|d| d["transport_endpoint_"].as_str().unwrap_or_else(|| panic!("replica {d}")).to_string())
            .collect()
    }

    /// The names of the segments the master has mounted.
    fn segment_names(&self) -> Vec<String> {
        let r = request(self.admin, "GET", "/get_segments_detail", &[], b"");
        assert_eq!(r.status, 200, "{} /get_segments_detail: {}", self.label, r.text());
        let v = r.json();
        let segs = v["segments"].as_array().cloned().unwrap_or_default();
        segs.iter().filter_map(|s| s["segment_name"].as_str().map(str::to_string)).collect()
    }
}

/// An mc-master store node of `m` with a `size` global segment, registered (`/health` 200).
fn node(m: &Master, size: &str) -> Server {
    let s = Server::start(&["--master", &m.rpc, "--metadata-server", &m.metadata, "--global-segment-size", size]);
    let te = s.lines_until(|l| l.starts_with("te listening on ")).expect("a te listening line");
    assert!(te.starts_with("te listening on 127.0.0.1:"), "{te}");
    let of = format!("store node of master {}", m.rpc);
    assert!(s.lines_until(|l| l == of).is_some(), "no {of:?} line");
    let deadline = Instant::now() + NODE_READY;
    loop {
        let r = s.get("/health");
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "/health of a node: {}", r.text());
        assert!(Instant::now() < deadline, "node not registered with {} after {NODE_READY:?}: {}", m.label, r.text());
        thread::sleep(Duration::from_millis(50));
    }
    s
}

/// Upstream's store REST service on `m`: `segment` bytes mounted, a `buffer` byte local
/// transfer buffer, REST on 127.0.0.1.
struct StoreService {
    addr: SocketAddr,
    proc: Group,
    _config: TempFile,
}

impl StoreService {
    fn start(py: &Path, m: &Master, segment: u64, buffer: u64) -> StoreService {
        let config = json!({
            "local_hostname": "127.0.0.1",
            "metadata_server": m.metadata,
            "global_segment_size": segment,
            "local_buffer_size": buffer,
            "protocol": "tcp",
            "device_name": "",
            "master_server_address": m.rpc,
        });
        let config = TempFile::new("mc-cluster-store-config", config.to_string().as_bytes());
        let port = free_port();
        let mut proc = Group::spawn(
            "mooncake_store_service",
            Command::new(py)
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster_upstream/store_service.py"))
                .arg(config.path_str())
                .arg(port.to_string())
                // Its transfer engine binds loopback (it would otherwise pick the first interface).
                .env("MC_TCP_BIND_ADDRESS", "127.0.0.1"),
        );
        // The REST listener opens only once setup (mount included) succeeded.
        wait_port(&mut proc, port, SERVICE_START);
        StoreService { addr: ([127, 0, 0, 1], port).into(), proc, _config: config }
    }

    /// `PUT /api/put {"key","value"}` (upstream's JSON put takes a string).
    fn put(&mut self, key: &str, value: &str) {
        let body = json!({"key": key, "value": value}).to_string();
        let r = request(self.addr, "PUT", "/api/put", &[("Content-Type", "application/json")], body.as_bytes());
        self.proc.assert_alive();
        assert_eq!((r.status, r.text().as_str()), (200, r#"{"status": "success"}"#), "upstream put {key}");
    }

    fn get(&mut self, key: &str) -> Response {
        let r = request(self.addr, "GET", &format!("/api/get/{}", pct(key)), &[], b"");
        self.proc.assert_alive();
        r
    }

    fn exists(&mut self, key: &str) -> bool {
        let r = request(self.addr, "GET", &format!("/api/exist/{}", pct(key)), &[], b"");
        match (r.status, r.text().as_str()) {
            (200, r#"{"exists": true}"#) => true,
            (200, r#"{"exists": false}"#) => false,
            other => panic!("upstream exist {key}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP and values
// ---------------------------------------------------------------------------------------------

/// One request on a fresh connection (a `Host` header: upstream's servers are HTTP/1.1 ones).
fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut all = vec![("Host", "127.0.0.1")];
    all.extend_from_slice(headers);
    let mut c = Conn::connect(addr);
    c.send(&build_request(method, target, &all, body));
    c.read_response_for(method)
}

/// `n` pseudo-random bytes (xorshift from `seed`): an offset or length error shows.
fn bytes_value(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `n` pseudo-random ASCII letters and digits (a string for upstream's JSON put).
fn text_value(n: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    bytes_value(n, seed).iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// Asserts a 200 whose body is exactly `want` (without printing megabytes).
#[track_caller]
fn assert_value(r: &Response, want: &[u8], what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", String::from_utf8_lossy(&r.body[..r.body.len().min(300)]));
    if r.body != want {
        let first = r.body.iter().zip(want).position(|(a, b)| a != b);
        panic!("{what}: {} bytes, want {} (first difference at {first:?})", r.body.len(), want.len());
    }
}

/// `DELETE /api/remove/{key}` on a node, retried while the lease of an earlier read lasts
/// (409, the masters here grant 300 ms leases).
fn remove_after_lease(n: &Server, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = n.remove(key);
        if r.status == 409 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        r.assert_json(200, r#"{"status":"success"}"#);
        return;
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// 1. mc-master nodes on upstream's master
// ---------------------------------------------------------------------------------------------

#[test]
fn mc_master_nodes_on_upstream_master() {
    let Some(py) = python("cluster test (mc-master nodes on mooncake_master)") else { return };
    common::for_each_runtime(|rt| {
        let t0 = Instant::now();
        let m = Master::upstream(&py);
        let a = node(&m, "64MiB");
        let b = node(&m, "64MiB");
        let (na, nb) = (a.default_node_name(), b.default_node_name());
        assert_eq!(sorted(m.segment_names()), sorted(vec![na.clone(), nb.clone()]), "segments of the master");

        let mut placed = Vec::new();
        for (i, size) in [64usize, MIB as usize, 16 * MIB as usize].into_iter().enumerate() {
            let key = format!("blob-{size}");
            let value = bytes_value(size, i as u64 + 1);
            a.put_raw(&key, &value).assert_json(200, r#"{"status":"success"}"#);
            let holders = m.holders(&key);
            assert!(holders.len() == 1 && (holders[0] == na || holders[0] == nb), "{key} held by {holders:?}");
            assert_value(&b.get_value(&key), &value, &format!("{rt}: {key} put on A, read on B"));
            assert_value(&a.get_value(&key), &value, &format!("{rt}: {key} read back on A"));
            placed.push(format!("{size} B on {}", if holders[0] == na { "A" } else { "B" }));
        }
        assert!(b.exists("blob-64") && a.exists("blob-64"));
        assert!(!b.exists("never-put") && !a.exists("never-put"));

        // Removed on B (a value put on A), gone everywhere.
        remove_after_lease(&b, "blob-1048576");
        a.get_value("blob-1048576").assert_error(404, "Key not found");
        b.get_value("blob-1048576").assert_error(404, "Key not found");
        assert!(!a.exists("blob-1048576") && !b.exists("blob-1048576"));
        assert!(m.holders("blob-1048576").is_empty());

        // Two copies, one on each node, each node reads the value.
        let two = bytes_value(MIB as usize, 7);
        let r = a.request("PUT", "/api/put/two?replica_num=2", &[("Content-Type", "application/octet-stream")], &two);
        r.assert_json(200, r#"{"status":"success"}"#);
        assert_eq!(sorted(m.holders("two")), sorted(vec![na.clone(), nb.clone()]), "replicas of two");
        assert_value(&a.get_value("two"), &two, &format!("{rt}: two on A"));
        assert_value(&b.get_value("two"), &two, &format!("{rt}: two on B"));
        let text = text_value(3000, 8);
        let body = json!({"key": "two-json", "value": text, "replica_num": 2}).to_string();
        b.json("PUT", "/api/put", &body).assert_json(200, r#"{"status":"success"}"#);
        assert_eq!(sorted(m.holders("two-json")), sorted(vec![na.clone(), nb.clone()]), "replicas of two-json");
        assert_value(&a.get_value("two-json"), text.as_bytes(), &format!("{rt}: two-json on A"));
        assert_value(&b.get_value("two-json"), text.as_bytes(), &format!("{rt}: two-json on B"));
        println!("{rt}: two nodes on mooncake_master in {:?} (placed: {})", t0.elapsed(), placed.join(", "));
    });
}

// ---------------------------------------------------------------------------------------------
// 2. upstream's store service beside an mc-master node
// ---------------------------------------------------------------------------------------------

#[test]
fn upstream_store_service_beside_mc_master_node_on_upstream_master() {
    let Some(py) = python("cluster test (store service beside a node, mooncake_master)") else { return };
    common::for_each_runtime(|rt| service_and_node_read_each_other(&py, rt, Master::upstream(&py)));
}

#[test]
fn upstream_store_service_beside_mc_master_node_on_mc_master() {
    let Some(py) = python("cluster test (store service beside a node, mc-master master)") else { return };
    common::for_each_runtime(|rt| service_and_node_read_each_other(&py, rt, Master::mc()));
}

/// Who puts a value and who reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    UpstreamToNode,
    NodeToUpstream,
}

fn service_and_node_read_each_other(py: &Path, rt: &str, m: Master) {
    let t0 = Instant::now();
    let n = node(&m, "16MiB");
    let mut up = StoreService::start(py, &m, 64 * MIB, 64 * MIB);
    let started = t0.elapsed();
    let name = n.default_node_name();
    let names = m.segment_names();
    assert_eq!(names.len(), 2, "{}: segments {names:?}", m.label);
    assert!(names.contains(&name), "{}: segments {names:?}", m.label);
    let upstream_name = names.iter().find(|s| **s != name).unwrap().clone();

    let mut seed = 100;
    // Moves `len` bytes one `way`; returns where the master put them (true: the node).
    let mut one = |up: &mut StoreService, key: &str, len: usize, way: Way| -> bool {
        seed += 1;
        let value = text_value(len, seed);
        match way {
            Way::UpstreamToNode => up.put(key, &value),
            Way::NodeToUpstream if len > MIB as usize => {
                n.put_raw(key, value.as_bytes()).assert_json(200, r#"{"status":"success"}"#)
            }
            Way::NodeToUpstream => n.put(key, &value),
        }
        let holders = m.holders(key);
        assert!(holders.len() == 1, "{}: {key} held by {holders:?}", m.label);
        let on_node = holders[0] == name;
        assert!(on_node || holders[0] == upstream_name, "{}: {key} held by {holders:?}", m.label);
        let what = format!(
            "{rt}/{}: {key} ({len} B, {way:?}, in {} memory)",
            m.label,
            if on_node { "the node's" } else { "upstream's" }
        );
        match way {
            Way::UpstreamToNode => {
                assert!(n.exists(key), "{what}: exist on the node");
                assert_value(&n.get_value(key), value.as_bytes(), &what);
            }
            Way::NodeToUpstream => {
                assert!(up.exists(key), "{what}: exist on upstream");
                assert_value(&up.get(key), value.as_bytes(), &what);
            }
        }
        on_node
    };

    // 20 MiB only fits upstream's segment: the node reads it from there (upstream wrote it
    // into its own memory), and writes it there (upstream reads its own memory).
    let big = 20 * MIB as usize;
    for (key, way) in [("big-1", Way::UpstreamToNode), ("big-2", Way::NodeToUpstream), ("big-3", Way::UpstreamToNode)] {
        assert!(!one(&mut up, key, big, way), "{rt}/{}: {key} must be in upstream's memory", m.label);
    }
    // Upstream's segment has 4 MiB left: 5 MiB only fits the node's. Upstream writes into the
    // node's memory (read there), and reads what the node put into its own.
    let mid = 5 * MIB as usize;
    for (key, way) in [("mid-1", Way::UpstreamToNode), ("mid-2", Way::NodeToUpstream)] {
        assert!(one(&mut up, key, mid, way), "{rt}/{}: {key} must be in the node's memory", m.label);
    }
    // Small values, wherever the master puts them.
    let mut on_node = 0;
    let sizes = [1usize, 64, 1000, 3000, 4096, 8191];
    for (i, &len) in sizes.iter().enumerate() {
        on_node += one(&mut up, &format!("up-small-{i}"), len, Way::UpstreamToNode) as usize;
        on_node += one(&mut up, &format!("node-small-{i}"), len, Way::NodeToUpstream) as usize;
    }

    // Upstream does not overwrite an existing key (PutStart: OBJECT_ALREADY_EXISTS, still a
    // 200 to its caller): the node's value stays, seen from both sides.
    let first = text_value(2500, 999);
    n.put("kept", &first);
    up.put("kept", "second value, never stored");
    assert_value(&up.get("kept"), first.as_bytes(), &format!("{rt}/{}: kept, on upstream", m.label));
    assert_value(&n.get_value("kept"), first.as_bytes(), &format!("{rt}/{}: kept, on the node", m.label));
    // Missing keys on both sides.
    assert!(!up.exists("never-put") && !n.exists("never-put"));
    let r = up.get("never-put");
    assert_eq!(r.status, 404, "upstream get of a missing key: {}", r.text());
    n.get_value("never-put").assert_error(404, "Key not found");
    up.proc.assert_alive();
    println!(
        "{rt}/{}: upstream store service beside a node in {:?} (started in {started:?}; small values in the node's memory: {on_node} of {})",
        m.label,
        t0.elapsed(),
        2 * sizes.len()
    );
}
