//! A real cluster over loopback (docs/cluster.md): one mc-master as master and store nodes
//! (`--master`), each its own process with its own ports, started and stopped here; once
//! per runtime of `common::runtimes`. Values put on one node are read on the others byte for
//! byte (64 B to 64 MiB); a SIGKILLed node expires after `--client-ttl` and its values leave
//! every view while the rest stay readable; with `replica_num` 2 nothing acknowledged is
//! lost; nodes survive a master restart, and leave cleanly on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::{for_each_runtime, free_port, wait_until, Server, TempFile};

/// A master: RPC on `rpc` (0 = any), no data plane of its own (values live on the nodes).
fn master(extra: &[&str], rpc: u16) -> (Server, String) {
    let rpc = rpc.to_string();
    let mut args = vec!["--rpc-port", &rpc, "--te-port", "off"];
    args.extend_from_slice(extra);
    let m = Server::start(&args);
    let line = m.lines_until(|l| l.starts_with("rpc listening on ")).expect("rpc line");
    let addr = line.trim_start_matches("rpc listening on ").to_string();
    (m, addr)
}

/// A store node of `rpc` with `size` of memory, registered (its /health is 200).
fn node(rpc: &str, size: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--master", rpc, "--global-segment-size", size, "--threads", "2"];
    args.extend_from_slice(extra);
    let n = Server::start(&args);
    assert!(
        wait_until(Duration::from_secs(10), || n.get("/health").status == 200),
        "node never registered: {} / {}",
        n.get("/health").text(),
        n.stderr_tail()
    );
    n
}

fn value(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect()
}

/// The node names holding `key`, per the master.
fn holders(m: &Server, key: &str) -> Vec<String> {
    let q = m.query_key(key);
    if q.status != 200 {
        return Vec::new();
    }
    let v = q.json();
    v["data"].as_array().unwrap().iter().map(|r| r["transport_endpoint_"].as_str().unwrap().to_string()).collect()
}

fn segment_names(m: &Server) -> Vec<String> {
    m.get("/get_all_segments").text().lines().map(str::to_string).collect()
}

#[test]
fn a_value_put_on_one_node_is_read_on_the_others_byte_for_byte() {
    for_each_runtime(|_| {
        let (m, rpc) = master(&[], 0);
        let nodes: Vec<Server> = (0..3).map(|_| node(&rpc, "160MiB", &[])).collect();
        let names: Vec<String> = nodes.iter().map(Server::default_node_name).collect();
        let mut segs = segment_names(&m);
        segs.sort();
        let mut want = names.clone();
        want.sort();
        assert_eq!(segs, want, "every node mounted its memory");
        let mut placed = Vec::new();
        for (i, len) in [64usize, 4096, 1 << 20, 16 << 20, 64 << 20].into_iter().enumerate() {
            let key = format!("v{len}");
            let v = value(len, i as u8);
            let r = nodes[0].put_raw(&key, &v);
            assert_eq!(r.status, 200, "put {len}: {}", r.text());
            for n in &nodes[1..] {
                let g = n.get_value(&key);
                assert_eq!(g.status, 200, "get {len}: {}", g.text());
                assert!(g.body == v, "{len} bytes differ on {}", n.default_node_name());
            }
            assert!(nodes[2].exists(&key));
            placed.extend(holders(&m, &key));
        }
        // Values went to more than the writer (the master spreads them).
        placed.sort();
        placed.dedup();
        assert!(placed.len() >= 2, "placed on {placed:?}");
        // A JSON put, an overwrite, exist and remove through different nodes.
        nodes[1].put("json", "from node 1");
        assert_eq!(nodes[2].get_value("json").text(), "from node 1");
        nodes[2].put("json", "replaced");
        assert_eq!(nodes[0].get_value("json").text(), "replaced");
        assert!(!nodes[0].exists("missing"));
        nodes[0].get_value("missing").assert_error(404, "Key not found");
        // A get grants a lease (10 s): wait it out with a short-lived key instead.
        let r = nodes[1].delete("/api/remove_all");
        assert_eq!(r.status, 200, "{}", r.text());
        // Node metrics count the round trips and the bytes.
        let metrics = nodes[0].get("/metrics").text();
        assert!(metrics.contains("node_master_up{master=\""), "{metrics}");
        assert!(metrics
            .lines()
            .any(|l| l.starts_with("node_master_rpc_total{method=\"UpsertStart\"} ") && !l.ends_with(" 0")));
        assert!(metrics.contains("node_transfer_bytes_total{path=\"remote\",direction=\"write\"}"));
    });
}

#[test]
fn a_killed_node_expires_and_its_values_leave_every_view() {
    for_each_runtime(|_| {
        let (m, rpc) = master(&["--client-ttl", "2"], 0);
        let nodes: Vec<Server> = (0..3).map(|_| node(&rpc, "64MiB", &[])).collect();
        let keys: Vec<String> = (0..24).map(|i| format!("k{i}")).collect();
        for k in &keys {
            let r = nodes[0].put_raw(k, k.as_bytes());
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let victim = nodes[2].default_node_name();
        let on_victim: Vec<&String> = keys.iter().filter(|k| holders(&m, k) == [victim.clone()]).collect();
        assert!(!on_victim.is_empty(), "some keys live on the victim");
        nodes[2].signal(libc::SIGKILL);
        assert!(
            wait_until(Duration::from_secs(10), || !segment_names(&m).contains(&victim)),
            "the victim never expired"
        );
        for k in &keys {
            let lost = on_victim.contains(&k);
            for n in &nodes[..2] {
                let g = n.get_value(k);
                if lost {
                    assert_eq!(g.status, 404, "{k} on the dead node: {}", g.text());
                    assert!(!n.exists(k));
                } else {
                    assert_eq!(g.status, 200, "{k}: {}", g.text());
                    assert_eq!(g.body, k.as_bytes());
                }
            }
            if lost {
                assert_eq!(m.query_key(k).status, 404);
            }
        }
        // The survivors still take new values.
        let r = nodes[1].put_raw("after", b"still here");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(nodes[0].get_value("after").body, b"still here");
    });
}

#[test]
fn with_two_replicas_killing_a_node_loses_nothing_acknowledged() {
    for_each_runtime(|_| {
        let (m, rpc) = master(&["--client-ttl", "2"], 0);
        let nodes: Vec<Server> = (0..3).map(|_| node(&rpc, "64MiB", &[])).collect();
        let keys: Vec<String> = (0..16).map(|i| format!("r{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            // Query parameter and JSON member both ask for copies.
            let r = if i.is_multiple_of(2) {
                nodes[0].request("PUT", &format!("/api/put/{k}?replica_num=2"), &[], &value(100_000, i as u8))
            } else {
                let body = serde_json::json!({"key": k, "value": format!("{i}"), "replica_num": 2}).to_string();
                nodes[0].json("PUT", "/api/put", &body)
            };
            assert_eq!(r.status, 200, "{}", r.text());
            let h = holders(&m, k);
            assert_eq!(h.len(), 2, "{k}: {h:?}");
            assert_ne!(h[0], h[1]);
        }
        let want = |i: usize| if i.is_multiple_of(2) { value(100_000, i as u8) } else { format!("{i}").into_bytes() };
        let victim = nodes[1].default_node_name();
        nodes[1].signal(libc::SIGKILL);
        // Before the master notices (reads fall back to the other copy) and after.
        for phase in ["before expiry", "after expiry"] {
            if phase == "after expiry" {
                assert!(wait_until(Duration::from_secs(10), || !segment_names(&m).contains(&victim)));
            }
            for (i, k) in keys.iter().enumerate() {
                for n in [&nodes[0], &nodes[2]] {
                    let g = n.get_value(k);
                    assert_eq!(g.status, 200, "{k} {phase}: {}", g.text());
                    assert!(g.body == want(i), "{k} {phase}: wrong bytes");
                }
            }
        }
        let r = nodes[0].request("PUT", "/api/put/x?replica_num=0", &[], b"v");
        r.assert_error(400, "Invalid replica_num: must be an integer in [1, 64]");
    });
}

#[test]
fn nodes_survive_a_master_restart_and_say_why_meanwhile() {
    for_each_runtime(|_| {
        let port = free_port();
        let (m, rpc) = master(&[], port);
        let n = node(&rpc, "32MiB", &[]);
        n.put("before", "1");
        drop(m);
        assert!(wait_until(Duration::from_secs(5), || n.get("/health").status == 503));
        let h = n.request("GET", "/health", &[("Accept", "application/json")], b"");
        assert_eq!(h.status, 503);
        let reason = h.json()["reason"].as_str().unwrap().to_string();
        assert!(reason.contains(&rpc), "{reason}");
        let r = n.json("PUT", "/api/put", r#"{"key":"during","value":"x"}"#);
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.json()["error"].as_str().unwrap().starts_with("Master unreachable: "), "{}", r.text());
        // Back on the same port: the node reconnects, remounts, and serves again.
        let (m, _) = master(&[], port);
        let t = Instant::now();
        assert!(wait_until(Duration::from_secs(10), || n.get("/health").status == 200), "{}", n.stderr_tail());
        assert!(t.elapsed() < Duration::from_secs(8));
        assert!(wait_until(Duration::from_secs(5), || segment_names(&m).contains(&n.default_node_name())));
        n.put("after", "2");
        assert_eq!(n.get_value("after").text(), "2");
        let metrics = n.get("/metrics").text();
        assert!(metrics
            .lines()
            .any(|l| l.starts_with("node_master_connects_total ") && l != "node_master_connects_total 1"));
    });
}

#[test]
fn sigterm_unmounts_from_the_master_then_exits() {
    for_each_runtime(|_| {
        let (m, rpc) = master(&["--client-ttl", "60"], 0);
        let mut n = node(&rpc, "32MiB", &[]);
        let name = n.default_node_name();
        assert!(segment_names(&m).contains(&name));
        n.signal(libc::SIGTERM);
        let status = n.wait_exit(Duration::from_secs(8)).expect("the node exits");
        assert!(status.success(), "{status:?}");
        // Gone at once, not after the 60 s client TTL.
        assert!(!segment_names(&m).contains(&name));
    });
}

#[test]
fn with_drain_on_shutdown_a_sigtermed_node_moves_its_values_to_the_others_first() {
    for_each_runtime(|_| {
        // The master moves the bytes through its own data plane (its --te-port is on).
        let m = Server::start(&["--rpc-port", "0", "--client-ttl", "60"]);
        let line = m.lines_until(|l| l.starts_with("rpc listening on ")).expect("rpc line");
        let rpc = line.trim_start_matches("rpc listening on ").to_string();
        let http = format!("127.0.0.1:{}", m.port());
        let keep = node(&rpc, "64MiB", &[]);
        let mut leaving =
            node(&rpc, "64MiB", &["--drain-on-shutdown", "--master-http", &http, "--drain-timeout", "20"]);
        let gone = leaving.default_node_name();
        // Values written through the leaving node, until a few of them live on it.
        let mut on_leaving = Vec::new();
        for i in 0..40 {
            let key = format!("d{i}");
            let v = value(4096 + i * 1000, i as u8);
            assert_eq!(leaving.put_raw(&key, &v).status, 200);
            if holders(&m, &key).contains(&gone) {
                on_leaving.push((key, v));
            }
        }
        assert!(on_leaving.len() >= 3, "placed on the leaving node: {}", on_leaving.len());
        leaving.signal(libc::SIGTERM);
        let status = leaving.wait_exit(Duration::from_secs(25)).expect("the node exits");
        assert!(status.success(), "{status:?}");
        let log = leaving.stderr_tail();
        assert!(log.contains("drain before shutdown: job "), "{log}");
        assert!(log.contains(&format!("moved {} replicas", on_leaving.len())), "{log}");
        // It left the master, and every value it held is on the other node, byte for byte.
        assert!(!segment_names(&m).contains(&gone));
        for (key, v) in &on_leaving {
            assert_eq!(holders(&m, key), vec![keep.default_node_name()], "{key}");
            let g = keep.get_value(key);
            assert_eq!(g.status, 200, "{key}: {}", g.text());
            assert!(g.body == *v, "{key} differs after the drain");
        }
        let metrics = m.get("/metrics").text();
        assert!(
            metrics.lines().any(|l| l == format!("master_drain_units_succeeded_total {}", on_leaving.len())),
            "{metrics}"
        );
    });
}

#[test]
fn a_drain_on_shutdown_the_master_cannot_do_still_leaves_in_time() {
    for_each_runtime(|_| {
        // The only node: no other node can take its values; the job fails and the node leaves.
        let (m, rpc) = master(&["--client-ttl", "60"], 0);
        let http = format!("127.0.0.1:{}", m.port());
        let mut n = node(&rpc, "32MiB", &["--drain-on-shutdown", "--master-http", &http, "--drain-timeout", "5"]);
        n.put("k", "v");
        n.signal(libc::SIGTERM);
        let status = n.wait_exit(Duration::from_secs(15)).expect("the node exits");
        assert!(status.success(), "{status:?}");
        let log = n.stderr_tail();
        assert!(log.contains("drain before shutdown") && log.contains("leaving"), "{log}");
        assert!(!log.contains("moved 1 replicas"), "{log}");
        assert!(!segment_names(&m).contains(&n.default_node_name()));
        // A master HTTP address that does not answer: the node gives up at its deadline.
        let mut n = node(
            &rpc,
            "32MiB",
            &["--drain-on-shutdown", "--master-http", &format!("127.0.0.1:{}", free_port()), "--drain-timeout", "2"],
        );
        let t = Instant::now();
        n.signal(libc::SIGTERM);
        assert!(n.wait_exit(Duration::from_secs(12)).expect("the node exits").success());
        assert!(t.elapsed() >= Duration::from_secs(2), "it tried until its deadline");
        assert!(n.stderr_tail().contains("no answer from the master"), "{}", n.stderr_tail());
    });
}

#[test]
fn upstreams_config_file_runs_a_node_and_mounts_and_unmounts_go_to_the_master() {
    for_each_runtime(|_| {
        let (m, rpc) = master(&[], 0);
        let cfg = TempFile::new(
            "mc-e2e-node-config",
            format!(
                r#"{{"local_hostname":"127.0.0.1","metadata_server":"P2PHANDSHAKE","global_segment_size":"48mb",
                    "local_buffer_size":"16mb","protocol":"tcp","device_name":"","master_server_address":"{rpc}"}}"#
            )
            .as_bytes(),
        );
        let n = Server::start(&["--config", cfg.path_str()]);
        assert!(wait_until(Duration::from_secs(10), || n.get("/health").status == 200));
        let segs = m.segments();
        let total: u64 = segs.iter().map(|s| s["size_bytes"].as_u64().unwrap()).sum();
        assert_eq!(total, 48 << 20, "{segs:?}");
        // /api/mount maps memory here and registers it with the master; unmount undoes both.
        let ids = n.mount(1);
        assert!(wait_until(Duration::from_secs(2), || m.segments().len() == 2));
        let body = serde_json::json!({ "segment_ids": ids }).to_string();
        let r = n.post("/api/unmount", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(m.segments().len(), 1);
        let r = n.post("/api/unmount", &body);
        assert_eq!(r.status, 404, "{}", r.text());
        // `--master off` ignores the file's master: a single process again.
        let solo = Server::start(&["--config", cfg.path_str(), "--master", "off"]);
        assert_eq!(solo.get("/health").status, 200);
        solo.put("k", "v");
        assert_eq!(m.query_key("k").status, 404);
    });
}

#[test]
fn a_node_refuses_settings_it_cannot_serve_with_a_clear_error() {
    let cases: [(&[&str], i32, &str); 6] = [
        (&["--port", "0", "--master", "127.0.0.1:1", "--te-port", "off"], 2, "--te-port cannot be off"),
        (&["--port", "0", "--master", "127.0.0.1:1", "--metadata-server", "etcd://127.0.0.1:2379"], 2, "not supported"),
        (&["--port", "0", "--master", "127.0.0.1:1", "--protocol", "rdma"], 1, "--protocol rdma"),
        (&["--port", "0", "--master", "127.0.0.1:1", "--drain-on-shutdown"], 2, "needs --master-http"),
        (&["--port", "0", "--drain-on-shutdown", "--master-http", "127.0.0.1:1"], 2, "is for a store node"),
        (
            &["--port", "0", "--master", "127.0.0.1:1", "--drain-on-shutdown", "--master-http", "x"],
            2,
            "expected HOST:PORT",
        ),
    ];
    for (args, code, msg) in cases {
        let out = common::run_cli(args, Duration::from_secs(10));
        assert_eq!(out.code(), Some(code), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(msg), "{args:?}: {}", out.stderr);
    }
}
