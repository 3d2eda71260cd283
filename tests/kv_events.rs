//! KV events end to end (`--enable-kv-events`): a real ZMQ subscriber (pyzmq and msgpack in a
//! virtual environment, tests/kv_events/subscriber.py) decodes upstream's framing and event
//! maps for a scripted sequence of puts, replaces, removes and remove_all, in order, with
//! consecutive sequence numbers and event ids; and loses none of 100k puts sent as fast as
//! this machine allows. Runs per runtime; skips where pyzmq cannot be installed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::upstream::pyzmq_or_skip;
use common::{for_each_runtime, Conn, Server};
use serde_json::Value;

struct Sub {
    child: Child,
    lines: Receiver<String>,
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sub {
    fn start(py: &std::path::Path, endpoint: &str, summary: bool) -> Sub {
        let mut cmd = Command::new(py);
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kv_events/subscriber.py")).arg(endpoint);
        if summary {
            cmd.arg("--summary");
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start the subscriber");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let s = Sub { child, lines };
        assert_eq!(s.lines.recv_timeout(Duration::from_secs(20)).expect("subscriber ready"), "ready");
        s
    }

    fn next(&self, within: Duration) -> Option<Value> {
        self.lines.recv_timeout(within).ok().map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}")))
    }
}

fn start_server(rt: &str, extra: &[&str]) -> (Server, String) {
    let mut args =
        vec!["--enable-kv-events", "--kv-events-bind-endpoint", "tcp://127.0.0.1:0", "--kv-events-backend-id", "be-7"];
    args.extend_from_slice(extra);
    let s = Server::start_rt(rt, &args);
    let line = s.lines_until(|l| l.starts_with("kv events listening on ")).expect("kv events line");
    let endpoint = line.trim_start_matches("kv events listening on ").to_string();
    (s, endpoint)
}

/// Puts `warm` until the subscriber sees it (a PUB socket drops what is sent before the
/// subscription arrives), removes it, and returns once that `removed` arrived.
fn join(s: &Server, sub: &Sub) {
    let deadline = Instant::now() + Duration::from_secs(20);
    'outer: while Instant::now() < deadline {
        s.put("warm", "w");
        while let Some(ev) = sub.next(Duration::from_millis(200)) {
            if ev["key"] == "warm" {
                break 'outer;
            }
        }
    }
    s.remove("warm");
    while let Some(ev) = sub.next(Duration::from_secs(5)) {
        if ev["key"] == "warm" && ev["event_type"] == "removed" {
            return;
        }
    }
    panic!("the subscriber never saw the warm-up key");
}

#[test]
fn a_real_subscriber_decodes_every_event_of_a_scripted_sequence_in_order() {
    let Some(py) = pyzmq_or_skip("KV events test") else { return };
    for_each_runtime(|rt| {
        let (s, endpoint) = start_server(rt, &["--global-segment-size", "16MiB"]);
        let sub = Sub::start(&py, &endpoint, false);
        join(&s, &sub);
        s.put("a", "1");
        s.put("b", "2");
        s.put("a", "3");
        assert_eq!(s.remove("a").status, 200);
        assert_eq!(s.delete("/api/remove_all").status, 200);
        s.put("0x2a", "x");
        s.put("__end__", "e");
        let mut got = Vec::new();
        loop {
            let ev = sub.next(Duration::from_secs(10)).expect("an event");
            if ev.get("done").is_some() {
                assert_eq!(ev["seq_gaps"], 0, "{ev}");
                assert_eq!(ev["id_gaps"], 0, "{ev}");
                assert_eq!(ev["bad"], 0, "{ev}");
                break;
            }
            got.push(ev);
        }
        let seen: Vec<(String, String)> =
            got.iter().map(|e| (e["event_type"].as_str().unwrap().into(), e["key"].as_str().unwrap().into())).collect();
        let want: Vec<(String, String)> = [
            ("stored", "a"),
            ("stored", "b"),
            ("stored", "a"),
            ("removed", "a"),
            ("removed", "b"),
            ("stored", "0x2a"),
            ("stored", "__end__"),
        ]
        .iter()
        .map(|(t, k)| (t.to_string(), k.to_string()))
        .collect();
        assert_eq!(seen, want, "{rt}");
        for e in &got {
            assert_eq!(e["backend_id"], "be-7");
            assert_eq!(e["tenant_id"], "default");
            assert_eq!(e["medium"], "cpu");
            assert_eq!(e["timestamp_is_batch"], true);
            let stored = e["event_type"] == "stored";
            assert_eq!(e["type"], if stored { "BlockStored" } else { "BlockRemoved" });
            assert_eq!(e["keys"], if stored { 20 } else { 17 }, "{e}");
        }
        let hashed = got.iter().find(|e| e["key"] == "0x2a").unwrap();
        assert_eq!(hashed["seq_hashes"], serde_json::json!([42]));
        assert_eq!(hashed["block_hashes"], serde_json::json!([42]));
        assert_eq!(got[0]["seq_hashes"], serde_json::json!([]), "`a` is no u64 hash");
        // Event ids and batch sequence numbers only grow.
        for w in got.windows(2) {
            assert_eq!(w[1]["event_id"].as_u64().unwrap(), w[0]["event_id"].as_u64().unwrap() + 1);
            assert!(w[1]["seq"].as_u64() >= w[0]["seq"].as_u64());
        }
        let st = s.get("/kv_events/status").json();
        assert_eq!(st["enabled"], true);
        assert_eq!(st["dropped_events"], 0);
        assert!(st["published_events"].as_u64().unwrap() >= 9, "{st}");
        assert!(st["skipped_unparsed_keys"].as_u64().unwrap() >= 6, "{st}");
    });
}

/// 100k puts over 8 pipelined connections, as fast as they go: every stored event arrives,
/// no sequence gap, nothing dropped. Prints the rate reached (a figure, not a check).
#[test]
fn no_event_is_lost_under_a_put_flood() {
    let Some(py) = pyzmq_or_skip("KV events flood test") else { return };
    let rt = common::runtimes()[0].clone();
    let (s, endpoint) = start_server(&rt, &["--global-segment-size", "256MiB", "--threads", "2"]);
    let sub = Sub::start(&py, &endpoint, true);
    // Warm up: the subscription must have arrived.
    let warm = Sub::start(&py, &endpoint, false);
    join(&s, &warm);
    drop(warm);
    const CONNS: usize = 8;
    const PER_CONN: usize = 12_500;
    let addr = s.addr;
    let t0 = Instant::now();
    let workers: Vec<_> = (0..CONNS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut conn = Conn::connect(addr);
                let mut sent = 0;
                while sent < PER_CONN {
                    let n = 64.min(PER_CONN - sent);
                    let mut buf = Vec::new();
                    for i in sent..sent + n {
                        write!(buf, "PUT /api/put/f{c}-{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n01234567")
                            .unwrap();
                    }
                    conn.send(&buf);
                    for _ in 0..n {
                        assert_eq!(conn.read_response().status, 200);
                    }
                    sent += n;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let took = t0.elapsed();
    s.put("__end__", "e");
    let summary = loop {
        let v = sub.next(Duration::from_secs(60)).expect("the subscriber's summary");
        if v.get("done").is_some() || v.get("timeout").is_some() {
            break v;
        }
    };
    let total = (CONNS * PER_CONN) as u64;
    println!("{rt}: {total} puts in {took:?} ({:.0} puts/s); subscriber: {summary}", total as f64 / took.as_secs_f64());
    assert_eq!(summary["done"], true, "{summary}");
    // The flood's stored events, the warm-up's (stored, removed) and the end key.
    assert!(summary["stored"].as_u64().unwrap() > total, "{summary}");
    assert_eq!(summary["seq_gaps"], 0, "{summary}");
    assert_eq!(summary["id_gaps"], 0, "{summary}");
    assert_eq!(s.get("/kv_events/status").json()["dropped_events"], 0);
}
