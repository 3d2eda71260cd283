//! A small etcd v3 client over etcd's JSON gateway (HTTP/1.1, `POST /v3/...`), enough for
//! the election, the replicated state and its watch (docs/ha.md). Keys and values are
//! base64 in the gateway's JSON; 64-bit integers come back as strings.

use std::io::{BufReader, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

/// One key-value pair as etcd returns it.
#[derive(Clone, Debug)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
}

/// One watch event (`value` None: a delete).
#[derive(Debug)]
pub struct Event {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub create_revision: i64,
    pub mod_revision: i64,
}

/// A message of a watch stream.
#[derive(Debug)]
pub enum WatchMsg {
    /// Events, in revision order.
    Events(Vec<Event>),
    /// The watch was cancelled (compacted history or an error): reload.
    Cancelled(String),
}

/// An etcd client for a list of endpoints; a request that fails on one endpoint is retried
/// on the next.
pub struct Etcd {
    endpoints: Vec<String>,
    agent: ureq::Agent,
    watch_agent: ureq::Agent,
    good: AtomicUsize,
}

/// `ureq` errors as text.
fn why(e: ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, r) => format!("etcd answered {code}: {}", r.into_string().unwrap_or_default()),
        ureq::Error::Transport(t) => format!("etcd unreachable: {t}"),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    v.as_str().and_then(|s| B64.decode(s).ok()).unwrap_or_default()
}

fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

/// The end of the range of every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn kv(v: &Value) -> Kv {
    Kv {
        key: bytes(&v["key"]),
        value: bytes(&v["value"]),
        create_revision: int(&v["create_revision"]),
        mod_revision: int(&v["mod_revision"]),
    }
}

/// One operation of a transaction.
pub enum TxnOp {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

impl Etcd {
    /// A client of `endpoints` (`host:port`, `http://host:port`).
    pub fn new(endpoints: &[String], timeout: Duration) -> Self {
        let endpoints = endpoints
            .iter()
            .map(|e| {
                let e = e.trim().trim_end_matches('/');
                if e.starts_with("http://") {
                    e.to_string()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        // Keep a connection per concurrent txn (batches in flight times txns per batch).
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout)
            .timeout(timeout)
            .max_idle_connections_per_host(64)
            .build();
        let watch_agent = ureq::AgentBuilder::new().timeout_connect(timeout).build();
        Self { endpoints, agent, watch_agent, good: AtomicUsize::new(0) }
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let n = self.endpoints.len();
        let start = self.good.load(Ordering::Relaxed);
        let mut last = String::from("no etcd endpoint");
        for i in 0..n {
            let idx = (start + i) % n;
            let url = format!("{}{path}", self.endpoints[idx]);
            match self.agent.post(&url).send_json(body.clone()) {
                Ok(r) => {
                    self.good.store(idx, Ordering::Relaxed);
                    return r.into_json::<Value>().map_err(|e| format!("etcd reply of {path}: {e}"));
                }
                // An answer (not a transport failure) is final: another endpoint of the same
                // cluster would answer the same.
                Err(e @ ureq::Error::Status(..)) => return Err(why(e)),
                Err(e) => last = why(e),
            }
        }
        Err(last)
    }

    /// A lease of `ttl` seconds: its id.
    pub fn grant(&self, ttl: u64) -> Result<i64, String> {
        let r = self.post("/v3/lease/grant", &json!({"TTL": ttl.to_string()}))?;
        let id = int(&r["ID"]);
        if id == 0 {
            return Err(format!("lease grant answered {r}"));
        }
        Ok(id)
    }

    /// Renews lease `id`: its remaining TTL in seconds (0: it expired).
    pub fn keepalive(&self, id: i64) -> Result<i64, String> {
        let r = self.post("/v3/lease/keepalive", &json!({"ID": id.to_string()}))?;
        Ok(int(&r["result"]["TTL"]))
    }

    /// Revokes lease `id` (its keys go with it).
    pub fn revoke(&self, id: i64) -> Result<(), String> {
        self.post("/v3/lease/revoke", &json!({"ID": id.to_string()})).map(|_| ())
    }

    /// Creates `key` = `value` under `lease` if it does not exist: `Ok(Some(revision))` when
    /// created, `Ok(None)` when it existed.
    pub fn create(&self, key: &[u8], value: &[u8], lease: i64) -> Result<Option<i64>, String> {
        let body = json!({
            "compare": [{"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": b64(key), "value": b64(value), "lease": lease.to_string()}}],
        });
        let r = self.post("/v3/kv/txn", &body)?;
        Ok(r["succeeded"].as_bool().unwrap_or(false).then(|| int(&r["header"]["revision"])))
    }

    /// Applies `ops` if `fence` (the view key) still has `create_revision`: `Ok(true)` when
    /// committed, `Ok(false)` when the fence failed (another master leads).
    pub fn fenced_txn(&self, fence: &[u8], create_revision: i64, ops: &[TxnOp]) -> Result<bool, String> {
        let success: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                TxnOp::Put { key, value } => json!({"request_put": {"key": b64(key), "value": b64(value)}}),
                TxnOp::Delete { key } => json!({"request_delete_range": {"key": b64(key)}}),
            })
            .collect();
        let body = json!({
            "compare": [{"key": b64(fence), "target": "CREATE", "result": "EQUAL",
                         "create_revision": create_revision.to_string()}],
            "success": success,
        });
        let r = self.post("/v3/kv/txn", &body)?;
        Ok(r["succeeded"].as_bool().unwrap_or(false))
    }

    /// The keys in `[key, end)` (or `key` alone) at `revision` (0: now), up to `limit` (0:
    /// all): the pairs, whether more follow, and the revision read.
    pub fn range(
        &self,
        key: &[u8],
        end: Option<&[u8]>,
        revision: i64,
        limit: i64,
    ) -> Result<(Vec<Kv>, bool, i64), String> {
        let mut body = json!({"key": b64(key)});
        if let Some(end) = end {
            body["range_end"] = json!(b64(end));
        }
        if revision > 0 {
            body["revision"] = json!(revision.to_string());
        }
        if limit > 0 {
            body["limit"] = json!(limit.to_string());
        }
        let r = self.post("/v3/kv/range", &body)?;
        let kvs = r["kvs"].as_array().map(|a| a.iter().map(kv).collect()).unwrap_or_default();
        Ok((kvs, r["more"].as_bool().unwrap_or(false), int(&r["header"]["revision"])))
    }

    /// Compacts the history up to `revision`.
    pub fn compact(&self, revision: i64) -> Result<(), String> {
        self.post("/v3/kv/compaction", &json!({"revision": revision.to_string()})).map(|_| ())
    }

    /// Watches every key under `prefix` from `start_revision`; `f` gets each message and
    /// returns false to stop. Returns when the stream ends (an error says why).
    pub fn watch(&self, prefix: &[u8], start_revision: i64, mut f: impl FnMut(WatchMsg) -> bool) -> Result<(), String> {
        let body = json!({"create_request": {
            "key": b64(prefix), "range_end": b64(&prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
        }});
        let n = self.endpoints.len();
        let start = self.good.load(Ordering::Relaxed);
        let mut last = String::from("no etcd endpoint");
        for i in 0..n {
            let url = format!("{}/v3/watch", self.endpoints[(start + i) % n]);
            let resp = match self.watch_agent.post(&url).send_json(body.clone()) {
                Ok(r) => r,
                Err(e) => {
                    last = why(e);
                    continue;
                }
            };
            return read_stream(resp.into_reader(), &mut f);
        }
        Err(last)
    }
}

/// Reads the gateway's stream of JSON messages (one object per message, possibly several per
/// line or split across reads) and hands each to `f`.
fn read_stream(r: impl Read, f: &mut impl FnMut(WatchMsg) -> bool) -> Result<(), String> {
    let reader = BufReader::new(r);
    let mut de = serde_json::Deserializer::from_reader(reader).into_iter::<Value>();
    loop {
        let msg = match de.next() {
            None => return Err("watch stream ended".into()),
            Some(Err(e)) => return Err(format!("watch stream: {e}")),
            Some(Ok(m)) => m,
        };
        if let Some(e) = msg.get("error") {
            let _ = f(WatchMsg::Cancelled(format!("watch error: {e}")));
            return Err(format!("watch error: {e}"));
        }
        let res = &msg["result"];
        if res["canceled"].as_bool().unwrap_or(false) || int(&res["compact_revision"]) > 0 {
            let why = format!(
                "watch cancelled (compact revision {}, {})",
                int(&res["compact_revision"]),
                res["cancel_reason"].as_str().unwrap_or("")
            );
            let _ = f(WatchMsg::Cancelled(why.clone()));
            return Err(why);
        }
        let events: Vec<Event> = res["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let k = kv(&e["kv"]);
                        let delete = e["type"].as_str() == Some("DELETE");
                        Event {
                            key: k.key,
                            value: (!delete).then_some(k.value),
                            create_revision: k.create_revision,
                            mod_revision: k.mod_revision,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !f(WatchMsg::Events(events)) {
            return Ok(());
        }
    }
}
