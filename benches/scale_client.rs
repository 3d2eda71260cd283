//! The client of `bash benches/scale.sh` (docs/benchmarks.md, "Scale"): creates millions of
//! keys in a master and measures what the master does with them, over upstream's master RPC
//! protocol (the core's sans-IO [`RpcClient`] over blocking std sockets, so the same client
//! drives mc-master and upstream's `mooncake_master`) and over mc-master's HTTP API.
//!
//! Run as `scale_client session`: it reads one command per line on stdin and answers each
//! with one JSON object on stdout (`{"error": "..."}` when it failed), so that one process
//! stays the same RPC client (client id, mounted segments, a heartbeat thread) for a whole
//! run. `benches/scale/scale.py` drives it; by hand: `cargo bench --bench scale_client --
//! session` (the `--bench` flag cargo appends is ignored).
//!
//! ```text
//! connect RPC_ADDR                      ServiceReady; the version
//! mount COUNT SIZE NAME                 MountSegment × COUNT of SIZE bytes of fake address
//!                                       space (the master never touches it), ReMountSegment
//!                                       when Ping asks for it, then a Ping every second
//! load-rpc FIRST COUNT VLEN BATCH DEPTH BatchPutStart + BatchPutEnd of keys FIRST.., BATCH
//!                                       keys per call, DEPTH BatchPutStarts in flight
//! load-http HTTP FIRST COUNT VLEN CONNS DEPTH
//!                                       PUT /api/put/{key} (raw body), CONNS connections,
//!                                       DEPTH pipelined requests each
//! lookups rpc|http A KEYS_A B KEYS_B SAMPLES ROUNDS
//!                                       sequential GetReplicaList (RPC address) or GET
//!                                       /query_key (HTTP address) of random keys < KEYS,
//!                                       alternately on master A and master B
//! get-all-keys HTTP PID MS              GET /get_all_keys streamed and counted, the VmRSS of
//!                                       PID sampled every MS ms meanwhile
//! evict rpc|http HTTP FIRST COUNT VLEN KEYS
//!                                       writes COUNT keys from FIRST (the write that crosses
//!                                       the high watermark), polls HTTP/metrics until the
//!                                       eviction counters settle; probe meanwhile
//! remove-all rpc|http HTTP KEYS         RemoveAll(force) or DELETE /api/remove_all; probe
//! metrics HTTP                          the numeric samples of GET /metrics
//! quit
//! ```
//!
//! Keys are `key-` and the key number zero-padded to 64 characters. The probe of `evict`
//! and `remove-all` sends `GET /query_key` of a random key (< KEYS) to HTTP every
//! millisecond on its own connection, from 300 ms before the operation until after it; its
//! latencies show how long the master stalls lookups while it works.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mc_core::rpc::client::{self, RpcClient};
use mc_core::rpc::{Rpc, Value};
use serde_json::{json, Value as Json};
use uuid::Uuid;

type Res<T> = Result<T, String>;

const TENANT: &str = "default";
/// `ReplicaType::ALL` as upstream's client sends it in PutEnd (rpc-spec §4: MEMORY 0 … ALL 4).
const REPLICA_TYPE_ALL: i64 = 4;

fn key(i: u64) -> String {
    format!("key-{i:060}")
}

fn io<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// xorshift64*: random key numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn own_cpu_s() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Latency percentiles of samples in nanoseconds, as microseconds.
fn lat_stats(mut ns: Vec<u64>) -> Json {
    ns.sort_unstable();
    let pct = |p: f64| {
        if ns.is_empty() {
            return Json::Null;
        }
        let i = ((ns.len() as f64 * p).ceil() as usize).clamp(1, ns.len()) - 1;
        json!(ns[i] as f64 / 1000.0)
    };
    let mean = if ns.is_empty() { 0.0 } else { ns.iter().sum::<u64>() as f64 / ns.len() as f64 / 1000.0 };
    json!({
        "samples": ns.len(),
        "p50_us": pct(0.50),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "max_us": ns.last().map(|&m| m as f64 / 1000.0),
        "mean_us": mean,
        "over_1ms": ns.iter().filter(|&&n| n > 1_000_000).count(),
    })
}

// ---------------------------------------------------------------------------------------
// RPC
// ---------------------------------------------------------------------------------------

/// One RPC connection. Sequential calls read replies on the calling thread; pipelined loads
/// (`load_rpc`) move the reading to a thread of their own.
struct Conn {
    sock: TcpStream,
    cl: RpcClient,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl Conn {
    fn connect(addr: &str) -> Res<Conn> {
        let sock = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        sock.set_nodelay(true).map_err(io("nodelay"))?;
        Ok(Conn { sock, cl: RpcClient::new(), out: Vec::new(), buf: vec![0; 1 << 16] })
    }

    fn send(&mut self, rpc: Rpc, args: Vec<Value>) -> Res<u32> {
        self.out.clear();
        let seq = self.cl.call(rpc, args, &mut self.out);
        self.sock.write_all(&self.out).map_err(io("rpc write"))?;
        Ok(seq)
    }

    fn next_reply(&mut self) -> Res<client::Reply> {
        loop {
            if let Some(r) = self.cl.poll_reply().map_err(|e| e.to_string())? {
                return Ok(r);
            }
            let n = self.sock.read(&mut self.buf).map_err(io("rpc read"))?;
            if n == 0 {
                return Err("the master closed the RPC connection".into());
            }
            self.cl.handle_input(&self.buf[..n]);
        }
    }

    fn call(&mut self, rpc: Rpc, args: Vec<Value>) -> Res<Value> {
        let seq = self.send(rpc, args)?;
        let (got, _, r) = self.next_reply()?;
        if got != seq {
            return Err(format!("reply of seq {got}, expected {seq}"));
        }
        r.map_err(|e| format!("{rpc:?}: {e}"))
    }
}

/// The result of an `expected<T>` reply, or its error code as text.
fn expect_ok(v: &Value) -> Res<&Value> {
    match client::expected(v).map_err(|e| e.to_string())? {
        Ok(inner) => Ok(inner),
        Err(code) => Err(format!("error code {code}")),
    }
}

struct Session {
    rpc_addr: Option<String>,
    conn: Option<Conn>,
    client: Uuid,
    segments: Vec<Value>,
    heartbeat: Option<(Arc<AtomicBool>, JoinHandle<Json>)>,
    rng: Rng,
}

impl Session {
    fn conn(&mut self) -> Res<&mut Conn> {
        self.conn.as_mut().ok_or_else(|| "not connected (connect RPC_ADDR first)".to_string())
    }

    fn connect(&mut self, addr: &str) -> Res<Json> {
        let mut c = Conn::connect(addr)?;
        let v = c.call(Rpc::ServiceReady, vec![])?;
        let version = expect_ok(&v)?.as_bytes().map(|b| String::from_utf8_lossy(b).into_owned());
        self.conn = Some(c);
        self.rpc_addr = Some(addr.to_string());
        Ok(json!({"version": version, "client_id": self.client.to_string()}))
    }

    fn ping(c: &mut Conn, client: Uuid) -> Res<i64> {
        let v = c.call(Rpc::Ping, vec![client::uuid(client)])?;
        let f = expect_ok(&v)?.as_fields().ok_or("Ping reply is not a struct")?;
        f.get(1).and_then(Value::as_i64).ok_or_else(|| "Ping reply without a status".into())
    }

    fn mount(&mut self, count: u64, size: u64, name: &str) -> Res<Json> {
        let client = self.client;
        // Segments at distinct, aligned fake addresses.
        let stride = size.div_ceil(1 << 30).max(1) << 30;
        let mut segs = Vec::new();
        for i in 0..count {
            let base = 0x7f00_0000_0000u64 + i * stride;
            let seg = client::segment(Uuid::new_v4(), name, base, size, name, "tcp");
            let v = self.conn()?.call(Rpc::MountSegment, vec![seg.clone(), client::uuid(client)])?;
            expect_ok(&v).map_err(|e| format!("MountSegment: {e}"))?;
            segs.push(seg);
        }
        self.segments.extend(segs);
        let mut status = Self::ping(self.conn()?, client)?;
        let mut remounted = false;
        if status == client::NEED_REMOUNT {
            let all = Value::List(self.segments.clone());
            let v = self.conn()?.call(Rpc::ReMountSegment, vec![all, client::uuid(client)])?;
            expect_ok(&v).map_err(|e| format!("ReMountSegment: {e}"))?;
            remounted = true;
            status = Self::ping(self.conn()?, client)?;
        }
        if self.heartbeat.is_none() {
            self.start_heartbeat()?;
        }
        Ok(
            json!({"segments": self.segments.len(), "segment_size": size, "remounted": remounted, "ping_status": status}),
        )
    }

    /// A Ping every second on a connection of its own, as upstream's client does.
    fn start_heartbeat(&mut self) -> Res<()> {
        let addr = self.rpc_addr.clone().ok_or("not connected")?;
        let mut c = Conn::connect(&addr)?;
        let (client, stop) = (self.client, Arc::new(AtomicBool::new(false)));
        let flag = stop.clone();
        let h = std::thread::spawn(move || {
            let (mut pings, mut failures, mut worst_ns, mut last_error) = (0u64, 0u64, 0u64, None);
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                match Self::ping(&mut c, client) {
                    Ok(_) => pings += 1,
                    Err(e) => {
                        failures += 1;
                        last_error = Some(e);
                    }
                }
                worst_ns = worst_ns.max(t.elapsed().as_nanos() as u64);
                for _ in 0..10 {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            json!({"pings": pings, "failures": failures, "worst_ping_ms": worst_ns as f64 / 1e6, "last_error": last_error})
        });
        self.heartbeat = Some((stop, h));
        Ok(())
    }

    fn stop_heartbeat(&mut self) -> Json {
        match self.heartbeat.take() {
            Some((stop, h)) => {
                stop.store(true, Ordering::Relaxed);
                h.join().unwrap_or(Json::Null)
            }
            None => Json::Null,
        }
    }

    /// Pipelined BatchPutStart/BatchPutEnd on a fresh connection: a BatchPutEnd is sent as
    /// soon as its BatchPutStart is answered; at most `depth` BatchPutStarts in flight.
    fn load_rpc(&mut self, first: u64, count: u64, vlen: u64, batch: u64, depth: u64) -> Res<Json> {
        let addr = self.rpc_addr.clone().ok_or("not connected")?;
        let mut c = Conn::connect(&addr)?;
        let reader_sock = c.sock.try_clone().map_err(io("clone socket"))?;
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(64);
        let reader = std::thread::spawn(move || {
            let mut s = reader_sock;
            let mut buf = vec![0u8; 1 << 18];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let client = self.client;
        let cpu0 = own_cpu_s();
        let t0 = Instant::now();
        let mut next = first;
        let end = first + count;
        // seq of a BatchPutStart → its keys.
        let mut starts: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        let mut ends = 0u64;
        let (mut ok, mut start_err, mut end_err) = (0u64, 0u64, 0u64);
        let mut first_error: Option<String> = None;
        let mut calls = 0u64;
        let result = (|| -> Res<()> {
            loop {
                while (starts.len() as u64) < depth && next < end {
                    let n = batch.min(end - next);
                    let keys: Vec<String> = (next..next + n).map(key).collect();
                    next += n;
                    let args = vec![
                        client::uuid(client),
                        Value::List(keys.iter().map(|k| Value::str(k)).collect()),
                        Value::List(vec![Value::UInt(vlen); n as usize]),
                        client::replicate_config(1),
                        Value::str(TENANT),
                    ];
                    let seq = c.send(Rpc::BatchPutStart, args)?;
                    calls += 1;
                    starts.insert(seq, keys);
                }
                if starts.is_empty() && ends == 0 {
                    return Ok(());
                }
                let reply = loop {
                    if let Some(r) = c.cl.poll_reply().map_err(|e| e.to_string())? {
                        break r;
                    }
                    let chunk = rx.recv().map_err(|_| "the master closed the RPC connection".to_string())?;
                    c.cl.handle_input(&chunk);
                };
                let (seq, rpc, r) = reply;
                let v = r.map_err(|e| format!("{rpc:?}: {e}"))?;
                let list = v.as_list().ok_or_else(|| format!("{rpc:?} reply is not a list"))?;
                match rpc {
                    Rpc::BatchPutStart => {
                        let keys = starts.remove(&seq).ok_or("reply of an unknown BatchPutStart")?;
                        let mut metas = Vec::with_capacity(keys.len());
                        for (k, item) in keys.iter().zip(list) {
                            match expect_ok(item) {
                                Ok(_) => metas.push(client::object_meta(k)),
                                Err(e) => {
                                    start_err += 1;
                                    first_error.get_or_insert_with(|| format!("BatchPutStart {k}: {e}"));
                                }
                            }
                        }
                        if !metas.is_empty() {
                            let args = vec![
                                client::uuid(client),
                                Value::List(metas),
                                Value::Int(REPLICA_TYPE_ALL),
                                Value::str(TENANT),
                            ];
                            c.send(Rpc::BatchPutEnd, args)?;
                            calls += 1;
                            ends += 1;
                        }
                    }
                    Rpc::BatchPutEnd => {
                        ends -= 1;
                        for item in list {
                            match expect_ok(item) {
                                Ok(_) => ok += 1,
                                Err(e) => {
                                    end_err += 1;
                                    first_error.get_or_insert_with(|| format!("BatchPutEnd: {e}"));
                                }
                            }
                        }
                    }
                    other => return Err(format!("unexpected reply of {other:?}")),
                }
            }
        })();
        let secs = t0.elapsed().as_secs_f64();
        let cpu = own_cpu_s() - cpu0;
        let _ = c.sock.shutdown(std::net::Shutdown::Both);
        let _ = reader.join();
        result?;
        Ok(json!({
            "keys": ok, "start_errors": start_err, "end_errors": end_err, "first_error": first_error,
            "calls": calls, "secs": secs, "keys_per_s": ok as f64 / secs, "client_cpu_s": cpu,
        }))
    }

    fn remove_all_rpc(&mut self) -> Res<i64> {
        let v = self.conn()?.call(Rpc::RemoveAll, vec![Value::Bool(true), Value::str(TENANT)])?;
        v.as_i64().ok_or_else(|| "RemoveAll reply is not a number".into())
    }
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

struct Http {
    sock: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Http {
    fn connect(addr: &str) -> Res<Http> {
        let sock = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        sock.set_nodelay(true).map_err(io("nodelay"))?;
        Ok(Http { sock, buf: vec![0; 1 << 20], start: 0, end: 0 })
    }

    fn fill(&mut self) -> Res<()> {
        if self.start > 0 && self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let n = self.sock.read(&mut self.buf[self.end..]).map_err(io("http read"))?;
        if n == 0 {
            return Err("the server closed the HTTP connection".into());
        }
        self.end += n;
        Ok(())
    }

    /// The head of the next response: (status, content-length or None when chunked).
    fn head(&mut self) -> Res<(u16, Option<usize>)> {
        loop {
            if let Some(p) = find(&self.buf[self.start..self.end], b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[self.start..self.start + p]).into_owned();
                self.start += p + 4;
                let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or("bad status line")?;
                let mut len = Some(0);
                for line in head.split("\r\n").skip(1) {
                    let Some((k, v)) = line.split_once(':') else { continue };
                    if k.eq_ignore_ascii_case("content-length") {
                        len = Some(v.trim().parse().map_err(|_| "bad content-length")?);
                    } else if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
                    {
                        len = None;
                    }
                }
                return Ok((status, len));
            }
            self.fill()?;
        }
    }

    /// Reads a body, handing its bytes to `sink` piece by piece (chunked or not).
    fn body(&mut self, len: Option<usize>, sink: &mut dyn FnMut(&[u8])) -> Res<()> {
        match len {
            Some(mut left) => {
                while left > 0 {
                    if self.start == self.end {
                        self.fill()?;
                    }
                    let n = left.min(self.end - self.start);
                    sink(&self.buf[self.start..self.start + n]);
                    self.start += n;
                    left -= n;
                }
                Ok(())
            }
            None => loop {
                let line = loop {
                    if let Some(p) = find(&self.buf[self.start..self.end], b"\r\n") {
                        let l = String::from_utf8_lossy(&self.buf[self.start..self.start + p]).into_owned();
                        self.start += p + 2;
                        break l;
                    }
                    self.fill()?;
                };
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| format!("bad chunk size line {line:?}"))?;
                if size == 0 {
                    // Trailers (none expected) end with an empty line.
                    loop {
                        if let Some(p) = find(&self.buf[self.start..self.end], b"\r\n") {
                            self.start += p + 2;
                            if p == 0 {
                                return Ok(());
                            }
                        } else {
                            self.fill()?;
                        }
                    }
                }
                self.body(Some(size), sink)?;
                while self.end - self.start < 2 {
                    self.fill()?;
                }
                self.start += 2;
            },
        }
    }

    fn response(&mut self) -> Res<(u16, Vec<u8>)> {
        let (status, len) = self.head()?;
        let mut body = Vec::new();
        self.body(len, &mut |b| body.extend_from_slice(b))?;
        Ok((status, body))
    }

    fn get(&mut self, path: &str) -> Res<(u16, Vec<u8>)> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.sock.write_all(req.as_bytes()).map_err(io("http write"))?;
        self.response()
    }
}

fn put_request(out: &mut Vec<u8>, k: &str, value: &[u8]) {
    out.extend_from_slice(b"PUT /api/put/");
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ");
    out.extend_from_slice(value.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(value);
}

/// Keys written, keys refused, the first refusal.
type LoadCount = (u64, u64, Option<String>);

/// PUT /api/put/{key} of keys first.., `conns` connections of `depth` pipelined requests.
fn load_http(addr: &str, first: u64, count: u64, vlen: u64, conns: u64, depth: u64) -> Res<Json> {
    let conns = conns.clamp(1, 64);
    let cpu0 = own_cpu_s();
    let t0 = Instant::now();
    let per = count.div_ceil(conns);
    let threads: Vec<JoinHandle<Res<LoadCount>>> = (0..conns)
        .map(|i| {
            let addr = addr.to_string();
            let from = first + i * per;
            let to = (from + per).min(first + count);
            std::thread::spawn(move || {
                let mut h = Http::connect(&addr)?;
                let value: Vec<u8> = (0..vlen).map(|j| b'a' + (j % 26) as u8).collect();
                let (mut ok, mut bad, mut first_bad) = (0u64, 0u64, None);
                let mut req = Vec::new();
                let mut k = from;
                while k < to {
                    let n = depth.max(1).min(to - k);
                    req.clear();
                    for j in k..k + n {
                        put_request(&mut req, &key(j), &value);
                    }
                    h.sock.write_all(&req).map_err(io("http write"))?;
                    for _ in 0..n {
                        let (status, body) = h.response()?;
                        if status == 200 {
                            ok += 1;
                        } else {
                            bad += 1;
                            first_bad.get_or_insert_with(|| format!("{status} {}", String::from_utf8_lossy(&body)));
                        }
                    }
                    k += n;
                }
                Ok((ok, bad, first_bad))
            })
        })
        .collect();
    let (mut ok, mut bad, mut first_bad) = (0, 0, None);
    for t in threads {
        let (o, b, f) = t.join().map_err(|_| "load thread panicked")??;
        ok += o;
        bad += b;
        if first_bad.is_none() {
            first_bad = f;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(json!({"keys": ok, "errors": bad, "first_error": first_bad, "secs": secs,
        "keys_per_s": ok as f64 / secs, "client_cpu_s": own_cpu_s() - cpu0}))
}

/// One lookup target: a keep-alive connection (RPC or HTTP) to one master and its key count.
enum Target {
    Rpc(Conn, u64),
    Http(Http, u64),
}

impl Target {
    fn open(kind: &str, addr: &str, keys: u64) -> Res<Target> {
        match kind {
            "rpc" => Ok(Target::Rpc(Conn::connect(addr)?, keys)),
            "http" => Ok(Target::Http(Http::connect(addr)?, keys)),
            _ => Err("lookups rpc|http".into()),
        }
    }

    /// One lookup of a random key: (latency ns, found).
    fn lookup(&mut self, rng: &mut Rng) -> Res<(u64, bool)> {
        match self {
            Target::Rpc(c, keys) => {
                let k = key(rng.below(*keys));
                let t = Instant::now();
                let v = c.call(Rpc::GetReplicaList, vec![Value::str(&k), Value::str(TENANT)])?;
                Ok((t.elapsed().as_nanos() as u64, expect_ok(&v).is_ok()))
            }
            Target::Http(h, keys) => {
                let path = format!("/query_key?key={}", key(rng.below(*keys)));
                let t = Instant::now();
                let (status, _) = h.get(&path)?;
                Ok((t.elapsed().as_nanos() as u64, status == 200))
            }
        }
    }
}

/// Sequential lookups of random keys on two masters (A, B), in `rounds` rounds of `samples`
/// per master, the order alternating each round, so that drift of the machine's load weighs
/// on both alike; each round starts with 100 lookups that are not counted.
fn lookups(kind: &str, a: (&str, u64), b: (&str, u64), samples: u64, rounds: u64, rng: &mut Rng) -> Res<Json> {
    let mut t = [Target::open(kind, a.0, a.1)?, Target::open(kind, b.0, b.1)?];
    let mut lat = [Vec::new(), Vec::new()];
    let mut misses = [0u64; 2];
    for r in 0..rounds.max(1) {
        for j in 0..2 {
            let i = if r % 2 == 0 { j } else { 1 - j };
            for n in 0..100 + samples {
                let (ns, found) = t[i].lookup(rng)?;
                if n >= 100 {
                    lat[i].push(ns);
                    misses[i] += u64::from(!found);
                }
            }
        }
    }
    let [la, lb] = lat;
    let (mut sa, mut sb) = (lat_stats(la), lat_stats(lb));
    sa["misses"] = json!(misses[0]);
    sb["misses"] = json!(misses[1]);
    Ok(json!({"a": sa, "b": sb}))
}

fn status_kib(pid: u32) -> (Option<u64>, Option<u64>) {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return (None, None) };
    let field = |name: &str| {
        s.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Samples VmRSS of `pid` every `ms` until stopped: (samples, max VmRSS KiB).
fn rss_sampler(pid: u32, ms: u64) -> (Arc<AtomicBool>, JoinHandle<(u64, u64)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let h = std::thread::spawn(move || {
        let (mut n, mut peak) = (0u64, 0u64);
        while !flag.load(Ordering::Relaxed) {
            if let (Some(rss), _) = status_kib(pid) {
                peak = peak.max(rss);
                n += 1;
            }
            std::thread::sleep(Duration::from_millis(ms.max(1)));
        }
        (n, peak)
    });
    (stop, h)
}

fn get_all_keys(addr: &str, pid: u32, ms: u64) -> Res<Json> {
    let (rss0, hwm0) = status_kib(pid);
    let (stop, sampler) = rss_sampler(pid, ms);
    let mut h = Http::connect(addr)?;
    let t0 = Instant::now();
    h.sock.write_all(b"GET /get_all_keys HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").map_err(io("http write"))?;
    let (status, len) = h.head()?;
    let ttfb = t0.elapsed().as_secs_f64();
    let (mut bytes, mut lines) = (0u64, 0u64);
    h.body(len, &mut |b| {
        bytes += b.len() as u64;
        lines += b.iter().filter(|&&c| c == b'\n').count() as u64;
    })?;
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (samples, peak) = sampler.join().map_err(|_| "sampler panicked")?;
    let (rss1, hwm1) = status_kib(pid);
    Ok(json!({
        "status": status, "chunked": len.is_none(), "keys": lines, "bytes": bytes, "ttfb_s": ttfb, "secs": secs,
        "rss_before_kib": rss0, "rss_peak_kib": peak.max(rss1.unwrap_or(0)), "rss_after_kib": rss1,
        "hwm_before_kib": hwm0, "hwm_after_kib": hwm1, "rss_samples": samples,
    }))
}

fn metrics(addr: &str) -> Res<BTreeMap<String, f64>> {
    let mut h = Http::connect(addr)?;
    let (status, body) = h.get("/metrics")?;
    if status != 200 {
        return Err(format!("/metrics answered {status}"));
    }
    let mut out = BTreeMap::new();
    for line in String::from_utf8_lossy(&body).lines() {
        if line.starts_with('#') || line.contains('{') {
            continue;
        }
        let mut it = line.split_whitespace();
        if let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let Ok(x) = v.parse::<f64>() {
                out.insert(k.to_string(), x);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// the probe
// ---------------------------------------------------------------------------------------

/// `GET /query_key` of a random key every millisecond from its own thread and connection.
struct Probe {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Res<Vec<(u64, u64)>>>,
    epoch: Instant,
}

impl Probe {
    fn start(addr: &str, keys: u64) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let addr = addr.to_string();
        let epoch = Instant::now();
        let handle = std::thread::spawn(move || {
            let mut h = Http::connect(&addr)?;
            let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
            let mut out = Vec::with_capacity(1 << 16);
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                let path = format!("/query_key?key={}", key(rng.below(keys)));
                let t = Instant::now();
                h.get(&path)?;
                let done = Instant::now();
                out.push(((t - epoch).as_nanos() as u64, (done - t).as_nanos() as u64));
                next = t + Duration::from_millis(1);
            }
            Ok(out)
        });
        Probe { stop, handle, epoch }
    }

    fn at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Stops; latency stats of the requests that overlap [a, b) and of those before a.
    fn finish(self, a: Instant, b: Instant) -> Res<Json> {
        let (a, b) = (self.at(a), self.at(b));
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.handle.join().map_err(|_| "probe panicked")??;
        let before: Vec<u64> = samples.iter().filter(|(t, d)| t + d <= a).map(|&(_, d)| d).collect();
        let during: Vec<u64> = samples.iter().filter(|(t, d)| *t < b && t + d >= a).map(|&(_, d)| d).collect();
        // The longest time in the window with no probe answer (a stall shows here even when
        // one request covers it all).
        let mut ends: Vec<u64> = samples.iter().map(|(t, d)| t + d).filter(|&e| e >= a && e <= b).collect();
        ends.sort_unstable();
        let mut gap = 0u64;
        let mut last = a;
        for e in ends.iter().copied().chain(std::iter::once(b)) {
            gap = gap.max(e.saturating_sub(last));
            last = e;
        }
        Ok(json!({"before": lat_stats(before), "during": lat_stats(during), "longest_gap_ms": gap as f64 / 1e6}))
    }
}

// ---------------------------------------------------------------------------------------
// evict, remove-all
// ---------------------------------------------------------------------------------------

const EVICTION_COUNTERS: [&str; 4] = [
    "master_evicted_key_count",
    "master_evicted_size_bytes",
    "master_successful_evictions_total",
    "master_attempted_evictions_total",
];

fn evict(s: &mut Session, how: &str, http: &str, first: u64, count: u64, vlen: u64, keys: u64) -> Res<Json> {
    let m0 = metrics(http)?;
    let probe = Probe::start(http, keys);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let written = match how {
        "rpc" => s.load_rpc(first, count, vlen, 1000, 1)?,
        "http" => load_http(http, first, count, vlen, 1, 1000)?,
        _ => return Err("evict rpc|http".into()),
    };
    let t_written = Instant::now();
    // Poll the counters until they have moved (upstream evicts from a background thread;
    // at most 2 min) and then not moved for 1 s (at most 10 min in all).
    let evicted = |m: &BTreeMap<String, f64>| m.get(EVICTION_COUNTERS[0]).copied().unwrap_or(0.0);
    let base = evicted(&m0);
    let (mut last_val, mut t_last_change, mut t_first) = (base, None, None);
    let mut polls = 0u64;
    let m1 = loop {
        let m = metrics(http)?;
        polls += 1;
        let now = Instant::now();
        let v = evicted(&m);
        if v != last_val {
            last_val = v;
            t_last_change = Some(now);
            t_first.get_or_insert(now);
        }
        let quiet = match t_last_change {
            Some(t) => now - t > Duration::from_secs(1),
            None => now - t_written > Duration::from_secs(120),
        };
        if quiet || now - t0 > Duration::from_secs(600) {
            break m;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let t_end = t_last_change.unwrap_or(t_written).max(t_written);
    let probe = probe.finish(t0, t_end + Duration::from_millis(5))?;
    let delta: BTreeMap<&str, f64> = EVICTION_COUNTERS
        .iter()
        .map(|&k| (k, m1.get(k).copied().unwrap_or(0.0) - m0.get(k).copied().unwrap_or(0.0)))
        .collect();
    let secs = |t: Option<Instant>| t.map(|t| (t - t0).as_secs_f64());
    Ok(json!({
        "write": written,
        "write_s": (t_written - t0).as_secs_f64(),
        "first_eviction_seen_s": secs(t_first),
        "last_eviction_seen_s": secs(t_last_change),
        "counters_delta": delta,
        "key_count_after": m1.get("master_key_count"),
        "metrics_polls": polls,
        "probe": probe,
    }))
}

fn remove_all(s: &mut Session, how: &str, http: &str, keys: u64) -> Res<Json> {
    let probe = Probe::start(http, keys);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let removed = match how {
        "rpc" => json!(s.remove_all_rpc()?),
        "http" => {
            let mut h = Http::connect(http)?;
            h.sock
                .write_all(b"DELETE /api/remove_all HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
                .map_err(io("http write"))?;
            let (status, body) = h.response()?;
            json!(format!("{status} {}", String::from_utf8_lossy(&body)))
        }
        _ => return Err("remove-all rpc|http".into()),
    };
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_millis(100));
    let probe = probe.finish(t0, t1)?;
    Ok(json!({"removed": removed, "secs": (t1 - t0).as_secs_f64(), "probe": probe}))
}

// ---------------------------------------------------------------------------------------
// the command loop
// ---------------------------------------------------------------------------------------

fn num(args: &[&str], i: usize) -> Res<u64> {
    let a = args.get(i).ok_or_else(|| format!("argument {i} missing"))?;
    a.parse().map_err(|_| format!("not a number: {a}"))
}

fn arg<'a>(args: &[&'a str], i: usize) -> Res<&'a str> {
    args.get(i).copied().ok_or_else(|| format!("argument {i} missing"))
}

fn command(s: &mut Session, line: &str) -> Res<Option<Json>> {
    let a: Vec<&str> = line.split_whitespace().collect();
    let Some(&cmd) = a.first() else { return Ok(None) };
    let r = match cmd {
        "connect" => s.connect(arg(&a, 1)?)?,
        "mount" => s.mount(num(&a, 1)?, num(&a, 2)?, arg(&a, 3)?)?,
        "load-rpc" => s.load_rpc(num(&a, 1)?, num(&a, 2)?, num(&a, 3)?, num(&a, 4)?, num(&a, 5)?)?,
        "load-http" => load_http(arg(&a, 1)?, num(&a, 2)?, num(&a, 3)?, num(&a, 4)?, num(&a, 5)?, num(&a, 6)?)?,
        "lookups" => {
            let (x, y) = ((arg(&a, 2)?, num(&a, 3)?), (arg(&a, 4)?, num(&a, 5)?));
            lookups(arg(&a, 1)?, x, y, num(&a, 6)?, num(&a, 7)?, &mut s.rng)?
        }
        "get-all-keys" => get_all_keys(arg(&a, 1)?, num(&a, 2)? as u32, num(&a, 3)?)?,
        "evict" => evict(s, arg(&a, 1)?, arg(&a, 2)?, num(&a, 3)?, num(&a, 4)?, num(&a, 5)?, num(&a, 6)?)?,
        "remove-all" => remove_all(s, arg(&a, 1)?, arg(&a, 2)?, num(&a, 3)?)?,
        "metrics" => json!(metrics(arg(&a, 1)?)?),
        "quit" => {
            let hb = s.stop_heartbeat();
            println!("{}", json!({"heartbeat": hb}));
            std::process::exit(0);
        }
        _ => return Err(format!("unknown command {cmd}")),
    };
    Ok(Some(r))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) != Some("session") {
        eprintln!("usage: scale_client session   (commands on stdin; see benches/scale_client.rs)");
        std::process::exit(2);
    }
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let mut s = Session {
        rpc_addr: None,
        conn: None,
        client: Uuid::new_v4(),
        segments: Vec::new(),
        heartbeat: None,
        rng: Rng::new(seed),
    };
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let out = match command(&mut s, &line) {
            Ok(None) => continue,
            Ok(Some(v)) => v,
            Err(e) => json!({"error": e}),
        };
        println!("{out}");
        let _ = std::io::stdout().flush();
    }
    s.stop_heartbeat();
}
