//! High availability on a real etcd (docs/ha.md), every runtime: masters elect one leader,
//! which publishes its RPC address as upstream's `master_view`; a standby answers its admin
//! endpoints and 503 (naming the leader) on the service ones; a SIGKILLed leader is replaced
//! within a few lease TTLs and every acknowledged key stays readable with its bytes, for an
//! unchanged upstream client and for an mc-master store node, both following the leader
//! through `etcd://`; a paused leader does not come back as a second writer; etcd restarted
//! under load loses no acknowledged key; a master that joins late catches up. Skips without
//! `/usr/bin/etcd` or the upstream wheel (fails in CI).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::etcd::{etcd_or_skip, Etcd};
use common::{build_request, for_each_runtime, free_port, pct, wait_until, Conn, Response, Server};
use serde_json::Value;

fn role(s: &Server) -> String {
    s.get("/role").text()
}

/// `n` HA masters on `endpoint` with a 2 s lease: their RPC ports and the servers.
fn start_masters_n(rt: &str, endpoint: &str, n: usize) -> (Vec<u16>, Vec<Server>) {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let masters = ports.iter().map(|&p| start_master(rt, endpoint, p)).collect();
    (ports, masters)
}

fn start_master(rt: &str, endpoint: &str, rpc_port: u16) -> Server {
    start_master_with(rt, endpoint, rpc_port, &[])
}

fn start_master_with(rt: &str, endpoint: &str, rpc_port: u16, extra: &[&str]) -> Server {
    let p = rpc_port.to_string();
    let mut args = vec![
        "--host",
        "127.0.0.1",
        "--rpc-port",
        &p,
        "--enable-ha",
        "--etcd-endpoints",
        endpoint,
        "--ha-lease-ttl",
        "2",
    ];
    args.extend_from_slice(extra);
    Server::start_rt(rt, &args)
}

/// Two HA masters on `endpoint` with a 2 s lease: their RPC ports and the servers.
fn start_masters(rt: &str, endpoint: &str) -> ([u16; 2], Vec<Server>) {
    let (ports, masters) = start_masters_n(rt, endpoint, 2);
    ([ports[0], ports[1]], masters)
}

/// The one leader among `masters` (waits up to 15 s for exactly one).
fn one_leader(masters: &[&Server]) -> usize {
    assert!(
        wait_until(Duration::from_secs(15), || masters.iter().filter(|m| role(m) == "leader").count() == 1),
        "no single leader: roles {:?}",
        masters.iter().map(|m| role(m)).collect::<Vec<_>>()
    );
    masters.iter().position(|m| role(m) == "leader").unwrap()
}

/// An mc-master store node that follows the leader of the default cluster through etcd.
fn node_via_etcd(rt: &str, etcd: &Etcd) -> Server {
    let master = format!("etcd://{}", etcd.endpoint());
    let n = Server::start_rt(rt, &["--master", &master, "--global-segment-size", "64MiB", "--threads", "2"]);
    assert!(
        wait_until(Duration::from_secs(15), || n.get("/health").status == 200),
        "the node never registered: {} / {}",
        n.get("/health").text(),
        n.stderr_tail()
    );
    n
}

/// Distinct bytes for key number `i`.
fn value(i: usize, len: usize) -> Vec<u8> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One request with a bounded wait (None: no answer in `timeout`, or the connection failed).
fn try_request(addr: SocketAddr, method: &str, target: &str, body: &[u8], timeout: Duration) -> Option<Response> {
    let mut c = Conn::try_connect(addr, timeout).ok()?;
    c.try_send(&build_request(method, target, &[("Content-Type", "application/octet-stream")], body)).ok()?;
    c.try_read_response(method == "HEAD", timeout).ok()
}

/// Waits until every key of `keys` reads back from `node` with exactly its bytes.
fn assert_all_readable(node: &Server, keys: &[(String, Vec<u8>)], timeout: Duration, what: &str) {
    let mut left: Vec<&(String, Vec<u8>)> = keys.iter().collect();
    let ok = wait_until(timeout, || {
        left.retain(|(k, v)| {
            let r = node.get_value(k);
            r.status != 200 || r.body != *v
        });
        left.is_empty()
    });
    if !ok {
        let (k, _) = left[0];
        let r = node.get_value(k);
        panic!(
            "{what}: {} of {} acknowledged keys not readable with their bytes, e.g. {k:?}: {} {}\n{}",
            left.len(),
            keys.len(),
            r.status,
            String::from_utf8_lossy(&r.body[..r.body.len().min(200)]),
            node.stderr_tail()
        );
    }
}

/// The unchanged upstream client (tests/ha_upstream/client.py) in its failover mode.
struct UpstreamClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl UpstreamClient {
    fn failover(py: &Path, etcd: &Etcd, keys: usize) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ha_upstream/client.py");
        let mut child = Command::new(py)
            .arg(script)
            .args(["--master", &format!("etcd://{}", etcd.endpoint()), "--segment-mib", "32"])
            .args(["--value-size", "4096", "failover", &keys.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the upstream client");
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, stdin, lines, seen: Vec::new() }
    }

    /// The first line `pick` accepts, within `timeout`.
    fn line(&mut self, timeout: Duration, pick: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pick(&l) {
                        return l;
                    }
                }
                Err(_) => panic!("the upstream client said no such line in {timeout:?}; it said {:?}", self.seen),
            }
        }
    }

    fn killed_now(&mut self) {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "KILLED {t:.6}").and_then(|_| stdin.flush()).expect("tell the client");
    }
}

impl Drop for UpstreamClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_masters_elect_one_leader_and_the_standby_takes_over_after_kill_9() {
    for_each_runtime(|rt| {
        let Some(etcd) = etcd_or_skip("two_masters_elect_one_leader_and_the_standby_takes_over_after_kill_9") else {
            return;
        };
        let (ports, mut masters) = start_masters(rt, &etcd.endpoint());
        assert!(
            wait_until(Duration::from_secs(15), || masters.iter().filter(|m| role(m) == "leader").count() == 1),
            "no single leader: roles {:?}",
            masters.iter().map(role).collect::<Vec<_>>()
        );
        let leader = masters.iter().position(|m| role(m) == "leader").unwrap();
        let standby = 1 - leader;
        let leader_addr = format!("127.0.0.1:{}", ports[leader]);
        assert_eq!(role(&masters[standby]), "standby");
        assert_eq!(etcd.master_view("mooncake_cluster").as_deref(), Some(leader_addr.as_str()));
        assert_eq!(masters[leader].get("/ha_status").text(), "serving");
        // The standby learns the view from its watch, a moment after the leader serves.
        wait_until(Duration::from_secs(5), || masters[standby].get("/leader").json()["present"] == true);
        assert_eq!(masters[standby].get("/ha_status").text(), "standby");
        let view = masters[standby].get("/leader").json();
        assert_eq!(view["present"], true, "{view}");
        assert_eq!(view["leader_address"], leader_addr.as_str(), "{view}");

        // The standby's service plane is off, naming the leader; its health probe answers.
        let r = masters[standby].get("/api/get/k");
        assert_eq!(r.status, 503, "{}", r.text());
        let body = r.json();
        assert_eq!(body["error_code"], -1011, "{body}");
        assert_eq!(body["leader_address"], leader_addr.as_str(), "{body}");
        assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
        assert_eq!(masters[standby].get("/health").status, 200);
        // The leader serves.
        assert_eq!(masters[leader].get("/api/get/k").status, 404);

        // kill -9: the standby is elected once the lease runs out and publishes itself.
        masters[leader].signal(9);
        masters[leader].wait_exit(Duration::from_secs(5));
        let survivor = &masters[standby];
        let new_addr = format!("127.0.0.1:{}", ports[standby]);
        assert!(
            wait_until(Duration::from_secs(15), || role(survivor) == "leader"),
            "the standby did not take over: {}",
            survivor.stderr_tail()
        );
        assert_eq!(etcd.master_view("mooncake_cluster").as_deref(), Some(new_addr.as_str()));
        assert_eq!(survivor.get("/api/get/k").status, 404);
        masters.clear();
    });
}

#[test]
fn tenant_quota_policies_survive_a_failover() {
    for_each_runtime(|rt| {
        let Some(etcd) = etcd_or_skip("tenant_quota_policies_survive_a_failover") else { return };
        let mt = ["--enable-multi-tenants"];
        let mut masters: Vec<Server> =
            (0..2).map(|_| start_master_with(rt, &etcd.endpoint(), free_port(), &mt)).collect();
        let leader = one_leader(&masters.iter().collect::<Vec<_>>());
        let quota = |m: &Server, t: &str| m.get(&format!("/api/v1/tenant_quotas?tenant_id={t}"));
        for (t, n) in [("a", 1u64 << 30), ("b", 1 << 20), ("c", 5000)] {
            let r = masters[leader].request(
                "PUT",
                &format!("/api/v1/tenant_quotas?tenant_id={t}"),
                &[],
                format!(r#"{{"requested_quota_bytes":{n}}}"#).as_bytes(),
            );
            assert_eq!(r.status, 200, "{}", r.text());
        }
        assert_eq!(masters[leader].request("DELETE", "/api/v1/tenant_quotas?tenant_id=b", &[], b"").status, 200);
        // The PUT's answer came once the policy was durable: the standby has it on taking over.
        masters[leader].signal(9);
        masters[leader].wait_exit(Duration::from_secs(5));
        let survivor = masters.remove(1 - leader);
        masters.clear();
        assert!(
            wait_until(Duration::from_secs(15), || role(&survivor) == "leader"),
            "the standby did not take over: {}",
            survivor.stderr_tail()
        );
        let a = quota(&survivor, "a");
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.json()["data"]["requested_quota_bytes"], 1u64 << 30, "{}", a.text());
        assert_eq!(quota(&survivor, "c").json()["data"]["requested_quota_bytes"], 5000);
        assert_eq!(quota(&survivor, "b").status, 404, "a deleted policy stays deleted");
        let all = survivor.get("/api/v1/tenant_quotas").json();
        assert_eq!(all["data"].as_array().map(Vec::len), Some(2), "{all}");
    });
}

#[test]
fn a_sigstopped_leader_resumed_after_its_lease_expired_does_not_serve() {
    for_each_runtime(|rt| {
        let Some(etcd) = etcd_or_skip("a_sigstopped_leader_resumed_after_its_lease_expired_does_not_serve") else {
            return;
        };
        let (ports, masters) = start_masters(rt, &etcd.endpoint());
        assert!(wait_until(Duration::from_secs(15), || masters.iter().filter(|m| role(m) == "leader").count() == 1));
        let leader = masters.iter().position(|m| role(m) == "leader").unwrap();
        let standby = 1 - leader;
        masters[leader].signal(libc::SIGSTOP);
        assert!(
            wait_until(Duration::from_secs(15), || role(&masters[standby]) == "leader"),
            "the standby did not take over from a paused leader"
        );
        masters[leader].signal(libc::SIGCONT);
        // At once on resuming, the old leader refuses service requests (its lease deadline
        // passed while it was stopped) and then follows the new view.
        let r = masters[leader].put_raw("after-resume", b"v");
        assert_eq!(r.status, 503, "{}", r.text());
        assert_ne!(role(&masters[leader]), "leader");
        let new_addr = format!("127.0.0.1:{}", ports[standby]);
        assert!(wait_until(Duration::from_secs(10), || {
            masters[leader].get("/leader").json()["leader_address"] == new_addr.as_str()
        }));
        assert_eq!(etcd.master_view("mooncake_cluster").as_deref(), Some(new_addr.as_str()));
        assert_eq!(role(&masters[standby]), "leader");
    });
}

/// Puts fresh keys through a node's REST API every 20 ms on a thread, recording the
/// acknowledged ones (200) with when they were acknowledged.
type Acked = Arc<Mutex<Vec<(Instant, String, Vec<u8>)>>>;

struct Writer {
    stop: Arc<AtomicBool>,
    acked: Acked,
    failed: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(addr: SocketAddr, prefix: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicUsize::new(0));
        let (s, a, f, prefix) = (stop.clone(), acked.clone(), failed.clone(), prefix.to_string());
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            while !s.load(Ordering::Acquire) {
                let (k, v) = (format!("{prefix}-{i}"), value(10_000 + i, 512 + i % 700));
                let target = format!("/api/put/{}", pct(&k));
                match try_request(addr, "PUT", &target, &v, Duration::from_secs(15)) {
                    Some(r) if r.status == 200 => a.lock().unwrap().push((Instant::now(), k, v)),
                    _ => {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self { stop, acked, failed, thread: Some(thread) }
    }

    fn acked_since(&self, t: Instant) -> usize {
        self.acked.lock().unwrap().iter().filter(|(at, _, _)| *at >= t).count()
    }

    /// Stops it: the acknowledged keys and how many puts were not acknowledged.
    fn finish(mut self) -> (Vec<(String, Vec<u8>)>, usize) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().expect("the writer thread");
        }
        let acked = self.acked.lock().unwrap().drain(..).map(|(_, k, v)| (k, v)).collect();
        (acked, self.failed.load(Ordering::Relaxed))
    }
}

/// Writes `n` keys `prefix-i` through `node`, each acknowledged.
fn write_keys(node: &Server, prefix: &str, range: std::ops::Range<usize>) -> Vec<(String, Vec<u8>)> {
    range
        .map(|i| {
            let (k, v) = (format!("{prefix}-{i}"), value(i, 1000 + 97 * i));
            let r = node.put_raw(&k, &v);
            assert_eq!(r.status, 200, "put {k}: {}", r.text());
            (k, v)
        })
        .collect()
}

#[test]
fn three_masters_kill_9_of_the_leader_under_an_upstream_client_and_a_store_node_loses_no_acknowledged_key() {
    let name = "three_masters_kill_9_of_the_leader_under_an_upstream_client_and_a_store_node_loses_no_acknowledged_key";
    for_each_runtime(|rt| {
        let Some(etcd) = etcd_or_skip(name) else { return };
        let Some(py) = common::upstream::python_or_skip(name) else { return };
        let (ports, mut masters) = start_masters_n(rt, &etcd.endpoint(), 3);
        let leader = one_leader(&masters.iter().collect::<Vec<_>>());
        let node = node_via_etcd(rt, &etcd);
        let mut client = UpstreamClient::failover(&py, &etcd, 40);
        let mut acked = write_keys(&node, "node-key", 0..40);
        client.line(Duration::from_secs(120), |l| l == "READY");
        let written: Value = client
            .seen
            .iter()
            .find_map(|l| serde_json::from_str::<Value>(l).ok().filter(|v| v["event"] == "written"))
            .expect("the client's written line");
        assert_eq!(written["failed"], 0, "{written}");
        // Both keep writing while the leader dies.
        let writer = Writer::start(node.addr, "node-live");
        std::thread::sleep(Duration::from_millis(500));

        masters[leader].signal(9);
        client.killed_now();
        masters[leader].wait_exit(Duration::from_secs(5));
        let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
        let new = rest[one_leader(&rest.iter().map(|&i| &masters[i]).collect::<Vec<_>>())];
        let serving_at = Instant::now();
        let new_addr = format!("127.0.0.1:{}", ports[new]);
        assert_eq!(etcd.master_view("mooncake_cluster").as_deref(), Some(new_addr.as_str()));
        let third = &masters[rest.iter().copied().find(|&i| i != new).unwrap()];
        assert!(
            wait_until(Duration::from_secs(10), || third.get("/leader").json()["leader_address"] == new_addr.as_str()),
            "the third master does not follow the new leader: {}",
            third.get("/leader").text()
        );
        assert_eq!(role(third), "standby");

        // The upstream client: its next put succeeded without a restart, and every key it
        // wrote before reads back with its bytes.
        let line = client.line(Duration::from_secs(180), |l| {
            l.contains(r#""event":"failover""#) || l.contains(r#""event":"error""#)
        });
        let r: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(r["event"], "failover", "{r}");
        assert_eq!(r["recovered"], true, "{r}");
        assert_eq!(
            (r["kept"].as_u64(), r["wrong"].as_u64(), r["missing"].as_u64()),
            (Some(40), Some(0), Some(0)),
            "{r}"
        );
        assert_eq!(r["fresh_after_kill_readable"], r["fresh_after_kill_ok"], "{r}");

        // The store node: it found the new leader, remounted, and writes again.
        assert!(
            wait_until(Duration::from_secs(30), || writer.acked_since(serving_at) >= 5),
            "the node's puts do not succeed on the new leader: {}",
            node.stderr_tail()
        );
        let (live, _) = writer.finish();
        acked.extend(live);
        assert_all_readable(&node, &acked, Duration::from_secs(20), "after the failover");
        let r = node.put_raw("after-failover", b"fresh bytes");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(node.get_value("after-failover").body, b"fresh bytes");
    });
}

#[test]
fn etcd_restarted_under_load_loses_no_acknowledged_key_and_writes_resume() {
    for_each_runtime(|rt| {
        let Some(mut etcd) = etcd_or_skip("etcd_restarted_under_load_loses_no_acknowledged_key_and_writes_resume")
        else {
            return;
        };
        let (_, masters) = start_masters(rt, &etcd.endpoint());
        one_leader(&masters.iter().collect::<Vec<_>>());
        let node = node_via_etcd(rt, &etcd);
        let writer = Writer::start(node.addr, "load");
        assert!(
            wait_until(Duration::from_secs(10), || writer.acked_since(Instant::now() - Duration::from_secs(60)) >= 10)
        );
        etcd.restart();
        let back = Instant::now();
        assert!(
            wait_until(Duration::from_secs(30), || writer.acked_since(back) >= 10),
            "puts do not succeed again after etcd came back: {}",
            node.stderr_tail()
        );
        let (acked, failed) = writer.finish();
        println!("{rt}: {} puts acknowledged, {failed} refused across the etcd restart", acked.len());
        one_leader(&masters.iter().collect::<Vec<_>>());
        assert_all_readable(&node, &acked, Duration::from_secs(20), "after the etcd restart");
    });
}

#[test]
fn a_master_that_joins_late_catches_up_and_serves_every_key_after_taking_over() {
    for_each_runtime(|rt| {
        let Some(etcd) = etcd_or_skip("a_master_that_joins_late_catches_up_and_serves_every_key_after_taking_over")
        else {
            return;
        };
        let ports = [free_port(), free_port()];
        let mut first = start_master(rt, &etcd.endpoint(), ports[0]);
        assert!(wait_until(Duration::from_secs(15), || role(&first) == "leader"));
        let node = node_via_etcd(rt, &etcd);
        let mut keys = write_keys(&node, "early", 0..30);
        // A second master joins: it loads what is there and follows the rest by its watch.
        let late = start_master(rt, &etcd.endpoint(), ports[1]);
        assert!(wait_until(Duration::from_secs(15), || role(&late) == "standby"
            && late.get("/leader").json()["present"] == true));
        keys.extend(write_keys(&node, "later", 0..10));
        let r = node.remove("early-0");
        assert_eq!(r.status, 200, "{}", r.text());
        keys.remove(0);

        first.signal(9);
        first.wait_exit(Duration::from_secs(5));
        assert!(
            wait_until(Duration::from_secs(15), || role(&late) == "leader"),
            "the late master did not take over: {}",
            late.stderr_tail()
        );
        assert_all_readable(&node, &keys, Duration::from_secs(20), "on the master that joined late");
        assert_eq!(node.get_value("early-0").status, 404, "a removed key came back");
        assert_eq!(late.get("/ha_status").text(), "serving");
    });
}
