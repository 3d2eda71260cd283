//! Model-based property test at the HTTP API level: random sequences of requests (JSON and raw
//! puts, plain and chunked, GET, HEAD, exist, remove, remove_all, query_key, batch queries,
//! listings) are sent as bytes through one [`Connection`] driven with the real [`Service`],
//! and every response is compared with a plain map of keys to values.
//!
//! Leases are off and the segment is large, so the model is exact (no eviction, no 409).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::config::Config;
use crate::http::Connection;
use crate::platform::FakePlatform;
use crate::time::Now;

use super::{Listener, Service};
use crate::master::Master;

/// Keys that exercise percent-encoding, `+`, `/`, multi-byte UTF-8 and commas.
const KEYS: &[&str] = &["a", "ab", "b c", "x/y", "k+1", "%", "日本", "a,b"];

#[derive(Clone, Debug)]
enum Op {
    PutJson { key: usize, value: String },
    PutRaw { key: usize, value: Vec<u8>, chunked: bool },
    Get { key: usize, head: bool },
    Exist { key: usize },
    Remove { key: usize },
    RemoveAll,
    QueryKey { key: usize },
    Batch { keys: Vec<usize> },
    List { prefix: usize, limit: Option<u8> },
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    prop_oneof![
        4 => (key.clone(), "[a-z\u{e9}\u{65e5} ]{1,24}").prop_map(|(key, value)| Op::PutJson { key, value }),
        4 => (key.clone(), proptest::collection::vec(any::<u8>(), 1..300), any::<bool>())
            .prop_map(|(key, value, chunked)| Op::PutRaw { key, value, chunked }),
        4 => (key.clone(), any::<bool>()).prop_map(|(key, head)| Op::Get { key, head }),
        2 => key.clone().prop_map(|key| Op::Exist { key }),
        3 => key.clone().prop_map(|key| Op::Remove { key }),
        1 => Just(Op::RemoveAll),
        2 => key.clone().prop_map(|key| Op::QueryKey { key }),
        2 => proptest::collection::vec(key.clone(), 1..5).prop_map(|keys| Op::Batch { keys }),
        2 => (0..3usize, proptest::option::of(1u8..4)).prop_map(|(prefix, limit)| Op::List { prefix, limit }),
    ]
}

/// Percent-encodes everything but unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Parses exactly one response (no body when `head`).
fn parse(out: &[u8], head: bool) -> Resp {
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    let text = std::str::from_utf8(&out[..end]).unwrap();
    let mut lines = text.trim_end().split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.map(|l| l.split_once(": ").unwrap()).map(|(n, v)| (n.to_ascii_lowercase(), v.to_string())).collect();
    let mut r = Resp { status, headers, body: Vec::new() };
    let rest = &out[end..];
    if head {
        assert!(rest.is_empty(), "HEAD response with a body");
    } else if let Some(len) = r.header("content-length") {
        assert_eq!(rest.len(), len.parse::<usize>().unwrap(), "Content-Length");
        r.body = rest.to_vec();
    } else {
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        let mut pos = 0;
        loop {
            let line = rest[pos..].windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[pos..pos + line]).unwrap(), 16).unwrap();
            pos += line + 2;
            r.body.extend_from_slice(&rest[pos..pos + n]);
            pos += n + 2;
            if n == 0 {
                break;
            }
        }
        assert_eq!(pos, rest.len());
    }
    r
}

struct Rig {
    master: Arc<Master>,
    svc: Service,
    conn: Connection<super::ApiRequest>,
    now: Now,
}

impl Rig {
    fn new() -> Self {
        let now = Now::new(Instant::now(), 1_700_000_000);
        let config = Config { lease_ttl: Duration::ZERO, ..Config::default() };
        let master = Master::new(config, Arc::new(FakePlatform::new(3)), now);
        master.mount_startup_segment(now, 16 << 20).unwrap();
        let svc = Service::new(master.clone(), Listener::Main, master.register_worker());
        let conn = svc.new_connection(now);
        Self { master, svc, conn, now }
    }

    fn send(&mut self, req: &[u8], head: bool) -> Resp {
        self.conn.handle_input(self.now, req, &mut self.svc);
        let mut out = Vec::new();
        while let Some(b) = self.conn.poll_transmit() {
            out.extend_from_slice(b);
            let n = b.len();
            self.conn.consume(self.now, n, &mut self.svc);
        }
        assert!(!self.conn.is_closed(), "connection closed after {:?}", String::from_utf8_lossy(req));
        parse(&out, head)
    }

    fn req(&mut self, method: &str, target: &str, body: &[u8]) -> Resp {
        let mut r = format!("{method} {target} HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        r.extend_from_slice(body);
        self.send(&r, method == "HEAD")
    }
}

fn apply(rig: &mut Rig, model: &mut BTreeMap<String, Vec<u8>>, op: &Op) {
    match op {
        Op::PutJson { key, value } => {
            let body = serde_json::json!({ "key": KEYS[*key], "value": value }).to_string();
            let r = rig.req("PUT", "/api/put", body.as_bytes());
            assert_eq!((r.status, r.body.as_slice()), (200, &br#"{"status":"success"}"#[..]));
            model.insert(KEYS[*key].to_string(), value.as_bytes().to_vec());
        }
        Op::PutRaw { key, value, chunked } => {
            let target = format!("/api/put/{}", enc(KEYS[*key]));
            let r = if *chunked {
                let mut req = format!("PUT {target} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
                for piece in value.chunks(100) {
                    req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    req.extend_from_slice(piece);
                    req.extend_from_slice(b"\r\n");
                }
                req.extend_from_slice(b"0\r\n\r\n");
                rig.send(&req, false)
            } else {
                rig.req("PUT", &target, value)
            };
            assert_eq!(r.status, 200);
            model.insert(KEYS[*key].to_string(), value.clone());
        }
        Op::Get { key, head } => {
            let r = rig.req(if *head { "HEAD" } else { "GET" }, &format!("/api/get/{}", enc(KEYS[*key])), b"");
            match model.get(KEYS[*key]) {
                Some(v) => {
                    assert_eq!(r.status, 200);
                    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
                    assert_eq!(r.header("content-length"), Some(v.len().to_string().as_str()));
                    if !*head {
                        assert_eq!(&r.body, v);
                    }
                }
                None => {
                    assert_eq!(r.status, 404);
                    if !*head {
                        assert_eq!(r.body, br#"{"error":"Key not found"}"#);
                    }
                }
            }
        }
        Op::Exist { key } => {
            let r = rig.req("GET", &format!("/api/exist/{}", enc(KEYS[*key])), b"");
            assert_eq!(r.status, 200);
            assert_eq!(r.json(), serde_json::json!({ "exists": model.contains_key(KEYS[*key]) }));
        }
        Op::Remove { key } => {
            let r = rig.req("DELETE", &format!("/api/remove/{}", enc(KEYS[*key])), b"");
            if model.remove(KEYS[*key]).is_some() {
                assert_eq!(r.status, 200);
            } else {
                assert_eq!((r.status, r.body.as_slice()), (404, &br#"{"error":"Key not found"}"#[..]));
            }
        }
        Op::RemoveAll => {
            let r = rig.req("DELETE", "/api/remove_all", b"");
            assert_eq!(r.json(), serde_json::json!({ "status": format!("success removed {} keys", model.len()) }));
            model.clear();
        }
        Op::QueryKey { key } => {
            let r = rig.req("GET", &format!("/query_key?key={}", enc(KEYS[*key])), b"");
            match model.get(KEYS[*key]) {
                Some(v) => {
                    assert_eq!(r.status, 200);
                    let j = r.json();
                    assert_eq!(j["data"][0]["size_"], serde_json::json!(v.len()));
                    assert_eq!(j["data"].as_array().map(Vec::len), Some(1));
                }
                None => {
                    assert_eq!(r.status, 404);
                    assert_eq!(r.json()["error_code"], serde_json::json!(-704));
                }
            }
        }
        Op::Batch { keys } => {
            let names: Vec<&str> = keys.iter().map(|&k| KEYS[k]).collect();
            let r = rig.req("POST", "/batch_query_keys", serde_json::json!({ "keys": names }).to_string().as_bytes());
            assert_eq!(r.status, 200);
            let data = r.json()["data"].clone();
            let mut distinct: Vec<&str> = Vec::new();
            for n in &names {
                if !distinct.contains(n) {
                    distinct.push(n);
                }
            }
            let obj = data.as_object().expect("data object");
            assert_eq!(obj.keys().map(String::as_str).collect::<Vec<_>>(), distinct, "request order, no repeats");
            for n in distinct {
                assert_eq!(obj[n]["ok"], serde_json::json!(model.contains_key(n)), "{n}");
            }
        }
        Op::List { prefix, limit } => {
            let prefix = ["", "a", "k"][*prefix];
            let mut target = format!("/get_all_keys?prefix={}", enc(prefix));
            if let Some(l) = limit {
                target.push_str(&format!("&limit={l}"));
            }
            let r = rig.req("GET", &target, b"");
            assert_eq!(r.status, 200);
            let want: String = model
                .keys()
                .filter(|k| k.starts_with(prefix))
                .take(limit.map_or(usize::MAX, usize::from))
                .map(|k| format!("{k}\n"))
                .collect();
            assert_eq!(String::from_utf8(r.body).unwrap(), want);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn http_api_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut rig = Rig::new();
        let mut model = BTreeMap::new();
        for op in &ops {
            apply(&mut rig, &mut model, op);
        }
        let g = rig.master.store().gauges();
        prop_assert_eq!(g.key_count, model.len() as u64);
        prop_assert_eq!(g.allocated_bytes, model.values().map(|v| v.len() as u64).sum::<u64>());
    }
}
