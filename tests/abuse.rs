//! Abuse tests: misbehaving clients against the real binary over loopback (docs/robustness.md).
//!
//! Each test starts its own `mc-master --port 0 --rpc-port off` with short timeouts, abuses it
//! (slow headers, thousands of idle connections, a connection limit, pipelined reads that are
//! never consumed, huge chunked bodies, request floods, half-closed connections) and checks
//! that the server answers as the SPEC says, that `/health` on another connection keeps
//! answering within a bound, and that the server's memory (VmRSS from /proc) stays bounded and
//! returns near its baseline. The figures are printed (`cargo test --test abuse -- --nocapture`).
//!
//! Self-contained on purpose: its helpers live here, not in tests/common.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `/health` on another connection must answer within this, whatever the abuse (generous: the
/// tests run two at a time on a 2-core machine; typical figures are a few milliseconds).
const HEALTH_BOUND: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Helpers

/// A running `mc-master`, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let threads: &[&str] = if extra.contains(&"--threads") { &[] } else { &["--threads", "2"] };
        let mut child = Command::new(env!("CARGO_BIN_EXE_mc-master"))
            .args(["--port", "0", "--rpc-port", "off"])
            .args(["--runtime", &std::env::var("MC_ABUSE_RUNTIME").unwrap_or_else(|_| "mio".into())])
            .args(threads)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mc-master");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("first stdout line");
        let url = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("first line: {line:?}"));
        let addr = url.parse().expect("listen address");
        Server { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size of the server process, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_nodelay(true).ok();
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        s
    }

    /// One request on a fresh connection (`Connection: close`); the whole response.
    fn request(&self, method: &str, target: &str, body: &[u8]) -> Response {
        let mut s = self.connect();
        let head = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).expect("read response");
        Response::parse(&buf).unwrap_or_else(|| panic!("bad response {:?}", String::from_utf8_lossy(&buf))).0
    }

    /// The value of an unlabelled sample of `/metrics`.
    fn metric(&self, name: &str) -> f64 {
        let r = self.request("GET", "/metrics", b"");
        let text = String::from_utf8_lossy(&r.body).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Waits until `/metrics` reports at most `n` open connections (the scrape's own included).
    fn wait_connections_at_most(&self, n: f64, within: Duration) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let open = self.metric("http_connections_open");
            if open <= n || Instant::now() > deadline {
                return open;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the RSS to settle (two equal samples 200 ms apart, at most `within`).
    fn settled_rss_kib(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        let mut last = self.rss_kib();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.rss_kib();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// Parses one response from the front of `buf` (Content-Length or chunked framing; a body
    /// without either runs to the end). Returns it and the bytes consumed, or None if incomplete.
    fn parse(buf: &[u8]) -> Option<(Response, usize)> {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = std::str::from_utf8(&buf[..end]).ok()?;
        let mut lines = head.split("\r\n");
        let status = lines.next()?.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        let (body, used) = if status == 204 || status == 100 {
            (Vec::new(), end)
        } else if let Some(len) = header("content-length") {
            let len: usize = len.parse().ok()?;
            (buf.get(end..end + len)?.to_vec(), end + len)
        } else if header("transfer-encoding") == Some("chunked") {
            let mut body = Vec::new();
            let mut pos = end;
            loop {
                let line_end = pos + buf[pos..].windows(2).position(|w| w == b"\r\n")?;
                let size = usize::from_str_radix(std::str::from_utf8(&buf[pos..line_end]).ok()?, 16).ok()?;
                pos = line_end + 2;
                if size == 0 {
                    pos += 2;
                    break;
                }
                body.extend_from_slice(buf.get(pos..pos + size)?);
                pos += size + 2;
            }
            (body, pos)
        } else {
            (buf[end..].to_vec(), buf.len())
        };
        Some((Response { status, headers, body }, used))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses every complete response in `buf`.
fn parse_all(buf: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some((r, used)) = Response::parse(&buf[pos..]) {
        out.push(r);
        pos += used;
    }
    out
}

/// Probes `GET /health` on fresh connections every 100 ms until stopped.
struct HealthProbe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Result<Duration, String>>>,
}

impl HealthProbe {
    fn start(addr: SocketAddr) -> HealthProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut times = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                let probe = || -> Result<(), String> {
                    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
                    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
                    s.write_all(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
                        .map_err(|e| format!("write: {e}"))?;
                    let mut buf = Vec::new();
                    s.read_to_end(&mut buf).map_err(|e| format!("read after {:?}: {e}", t.elapsed()))?;
                    let r = Response::parse(&buf).ok_or_else(|| format!("bad response {buf:?}"))?.0;
                    match (r.status, r.text().as_str()) {
                        (200, "OK") => Ok(()),
                        other => Err(format!("answered {other:?}")),
                    }
                };
                times.push(probe().map(|()| t.elapsed()));
                std::thread::sleep(Duration::from_millis(100));
            }
            times
        });
        HealthProbe { stop, thread }
    }

    /// Stops the probe; asserts every answer came within [`HEALTH_BOUND`]. Returns (count, max).
    fn finish(self) -> (usize, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let results = self.thread.join().expect("health probe panicked");
        let times: Vec<Duration> = results
            .iter()
            .map(|r| r.clone().unwrap_or_else(|e| panic!("/health failed during the abuse: {e}; all: {results:?}")))
            .collect();
        let max = times.iter().copied().max().unwrap_or_default();
        assert!(!times.is_empty(), "health never probed");
        assert!(max < HEALTH_BOUND, "/health took {max:?} during the abuse; all: {times:?}");
        (times.len(), max)
    }
}

fn report(test: &str, baseline: u64, peak: u64, settled: u64, health: (usize, Duration), extra: &str) {
    eprintln!(
        "abuse[{test}]: rss baseline {baseline} KiB, peak {peak} KiB, settled {settled} KiB; \
         /health {} probes, max {:.1} ms{extra}",
        health.0,
        health.1.as_secs_f64() * 1e3
    );
}

// ---------------------------------------------------------------------------------------------
// Tests

/// A client sending one header byte every 100 ms gets `408` and `Connection: close` once the
/// header-read timeout (1 s) has passed since its first byte, and the connection is closed.
#[test]
fn slow_header_gets_408_and_close() {
    let srv = Server::start(&["--header-read-timeout", "1s"]);
    let baseline = srv.rss_kib();
    let probe = HealthProbe::start(srv.addr);

    let mut slow = srv.connect();
    let mut reader = slow.try_clone().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let done_r = done.clone();
    let start = Instant::now();
    let read = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf); // until the server closes
        done_r.store(true, Ordering::Relaxed);
        (buf, start.elapsed())
    });
    let request = format!("GET /health HTTP/1.1\r\nX-Slow: {}\r\n\r\n", "a".repeat(100));
    let mut sent = 0;
    for b in request.bytes() {
        if done.load(Ordering::Relaxed) || slow.write_all(&[b]).is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let (buf, elapsed) = read.join().unwrap();
    let health = probe.finish();
    let r = Response::parse(&buf).unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&buf))).0;
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(r.text(), r#"{"error":"request timeout"}"#);
    assert!(r.closes(), "{r:?}");
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4), "408 after {elapsed:?}");
    assert!(sent < request.len(), "the whole request was sent before the timeout");
    let peak = srv.rss_kib();
    let settled = srv.settled_rss_kib(Duration::from_secs(2));
    report("slow-header", baseline, peak, settled, health, &format!("; 408 after {elapsed:?}, {sent} bytes sent"));
}

/// 2000 idle connections are all closed by the server after `--idle-timeout 2s`, silently;
/// `/health` keeps answering meanwhile and the memory they took is returned.
#[test]
fn idle_connections_are_closed() {
    const N: usize = 2000;
    let srv = Server::start(&["--idle-timeout", "2s"]);
    let baseline = srv.rss_kib();
    let probe = HealthProbe::start(srv.addr);
    let t0 = Instant::now();
    let mut conns: Vec<TcpStream> = (0..N).map(|_| TcpStream::connect(srv.addr).expect("connect")).collect();
    let opened = t0.elapsed();
    // Wait until the server has accepted every connection (the probe's and the scrape's are extra).
    let mut open_now = srv.metric("http_connections_open");
    while open_now < N as f64 && t0.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(20));
        open_now = srv.metric("http_connections_open");
    }
    let peak = srv.rss_kib();

    let mut closed = vec![false; N];
    let deadline = t0 + Duration::from_secs(12);
    let mut buf = [0u8; 64];
    while closed.iter().any(|c| !c) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        for (c, done) in conns.iter_mut().zip(closed.iter_mut()).filter(|(_, d)| !**d) {
            c.set_nonblocking(true).unwrap();
            match c.read(&mut buf) {
                Ok(0) => *done = true,
                Ok(n) => panic!("an idle connection received {n} bytes"),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => *done = true, // reset: closed too
            }
        }
    }
    let all_closed = t0.elapsed();
    let left = closed.iter().filter(|c| !**c).count();
    assert_eq!(left, 0, "{left} idle connections still open after {all_closed:?}");
    assert!(open_now >= N as f64, "only {open_now} connections open at the peak");
    drop(conns);
    let open_after = srv.wait_connections_at_most(2.0, Duration::from_secs(5));
    assert!(open_after <= 2.0, "{open_after} connections still counted");
    let health = probe.finish();
    let settled = srv.settled_rss_kib(Duration::from_secs(3));
    assert!(settled < baseline + 32 * 1024, "RSS did not come back: {baseline} -> {settled} KiB");
    report(
        "idle-2000",
        baseline,
        peak,
        settled,
        health,
        &format!("; {N} opened in {opened:?}, all closed by the server after {all_closed:?}"),
    );
}

/// With `--max-connections 50`, connection 51 gets `503 {"error":"too many connections"}` with
/// `Connection: close` before any request, and is closed; the served ones are unaffected and a
/// closed slot is reusable.
#[test]
fn connection_limit_refuses_with_503() {
    const MAX: usize = 50;
    let srv = Server::start(&["--max-connections", "50", "--idle-timeout", "30s"]);
    let baseline = srv.rss_kib();
    let health_before = {
        let t = Instant::now();
        assert_eq!(srv.request("GET", "/health", b"").status, 200);
        t.elapsed()
    };
    srv.wait_connections_at_most(0.0, Duration::from_secs(5));
    // Fill the limit with live keep-alive connections (each proven accepted by a response).
    let mut held: Vec<TcpStream> = (0..MAX)
        .map(|_| {
            let mut s = srv.connect();
            s.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200 "), "{:?}", String::from_utf8_lossy(&buf[..n]));
            s
        })
        .collect();
    // A burst beyond the limit: each is answered 503 at once and closed.
    let t = Instant::now();
    let mut refused = 0;
    for _ in 0..200 {
        let mut s = srv.connect();
        let _ = s.write_all(b"GET /health HTTP/1.1\r\n\r\n");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let r = Response::parse(&buf).unwrap_or_else(|| panic!("no refusal: {:?}", String::from_utf8_lossy(&buf))).0;
        assert_eq!((r.status, r.text().as_str()), (503, r#"{"error":"too many connections"}"#));
        assert!(r.closes(), "{r:?}");
        refused += 1;
    }
    let burst = t.elapsed();
    let peak = srv.rss_kib();
    // The held connections still work.
    for s in held.iter_mut().take(5) {
        s.write_all(b"GET /api/exist/x HTTP/1.1\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 "), "{:?}", String::from_utf8_lossy(&buf[..n]));
    }
    // Freeing slots lets new connections in again.
    held.truncate(MAX - 10);
    let deadline = Instant::now() + Duration::from_secs(5);
    let health_after = loop {
        let t = Instant::now();
        let r = srv.request("GET", "/health", b"");
        if r.status == 200 {
            break t.elapsed();
        }
        // Refused while the server was still closing the freed slots: counted too.
        refused += usize::from(r.status == 503);
        assert!(Instant::now() < deadline, "slots were not released");
        std::thread::sleep(Duration::from_millis(50));
    };
    let r = srv.request("GET", "/metrics", b"");
    let metrics = r.text();
    assert!(
        metrics.contains(&format!("http_requests_total{{route=\"other\",method=\"other\",code=\"503\"}} {refused}\n")),
        "refusals not counted"
    );
    drop(held);
    srv.wait_connections_at_most(1.0, Duration::from_secs(5));
    let settled = srv.settled_rss_kib(Duration::from_secs(2));
    let health = (2, health_before.max(health_after));
    assert!(health.1 < HEALTH_BOUND);
    report("max-connections", baseline, peak, settled, health, &format!("; {refused} refused with 503 in {burst:?}"));
}

/// A client that pipelines GETs of a 1 MiB value and never reads: the server stops reading
/// (backpressure), so the client's writes block and the server's memory stays bounded.
#[test]
fn unread_pipelined_gets_are_bounded() {
    let srv = Server::start(&["--global-segment-size", "64MiB", "--default-kv-lease-ttl", "0"]);
    let value = vec![b'v'; 1 << 20];
    assert_eq!(srv.request("PUT", "/api/put/big", &value).status, 200);
    assert_eq!(srv.request("GET", "/api/get/big", b"").body.len(), value.len());
    let baseline = srv.settled_rss_kib(Duration::from_secs(1));
    let probe = HealthProbe::start(srv.addr);

    let mut s = srv.connect();
    s.set_nonblocking(true).unwrap();
    let req = b"GET /api/get/big HTTP/1.1\r\n\r\n".repeat(256);
    let mut written = 0usize;
    let mut last_progress = Instant::now();
    let mut peak = baseline;
    let t0 = Instant::now();
    // Write until the writes have been blocked for 1 s (or 8 s in all).
    while last_progress.elapsed() < Duration::from_secs(1) && t0.elapsed() < Duration::from_secs(8) {
        match s.write(&req) {
            Ok(n) => {
                written += n;
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("write failed: {e}"),
        }
        peak = peak.max(srv.rss_kib());
    }
    let blocked = last_progress.elapsed() >= Duration::from_secs(1);
    let requests = written / (req.len() / 256);
    let health = probe.finish();
    assert!(blocked, "the server kept reading: {written} bytes of requests accepted in {:?}", t0.elapsed());
    assert!(written < 64 << 20, "{written} bytes accepted");
    assert!(peak < baseline + 64 * 1024, "RSS grew from {baseline} to {peak} KiB");
    drop(s);
    srv.wait_connections_at_most(1.0, Duration::from_secs(5));
    let settled = srv.settled_rss_kib(Duration::from_secs(3));
    assert!(settled < baseline + 16 * 1024, "RSS did not come back: {baseline} -> {settled} KiB");
    report(
        "unread-1MiB-gets",
        baseline,
        peak,
        settled,
        health,
        &format!("; client blocked after {written} bytes (~{requests} GETs) written"),
    );
}

/// Bodies over `--max-body-size`: a chunked body is answered `413` as soon as it crosses the
/// limit and the connection is closed; a declared `Content-Length` or chunk size above it is
/// answered at once without reading the body.
#[test]
fn huge_bodies_get_413() {
    let srv = Server::start(&["--max-body-size", "1MiB", "--global-segment-size", "16MiB"]);
    let baseline = srv.rss_kib();
    let probe = HealthProbe::start(srv.addr);
    let mut peak = baseline;
    let mut max_sent = 0;

    for target in ["/api/put/big", "/api/mount", "/batch_query_keys", "/health"] {
        let method = match target {
            "/api/put/big" => "PUT",
            "/health" => "GET",
            _ => "POST",
        };
        // Twice the limit of a chunked body that never ends: a 413 can only come from the
        // limit being crossed. (The client stops sending so that the server's linger drains
        // everything and closes with a FIN; a reset could discard the answer unread.)
        let mut s = srv.connect();
        s.write_all(format!("{method} {target} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes()).unwrap();
        let chunk = [b"10000\r\n".as_slice(), &[b'x'; 0x10000], b"\r\n"].concat();
        let mut sent = 0usize;
        while sent < 2 << 20 {
            if s.write_all(&chunk).is_err() {
                break; // the server answered and closed
            }
            sent += 0x10000;
        }
        peak = peak.max(srv.rss_kib());
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        peak = peak.max(srv.rss_kib());
        let r = Response::parse(&buf).unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&buf))).0;
        assert_eq!((r.status, r.text().as_str()), (413, r#"{"error":"payload too large"}"#), "{target}");
        assert!(r.closes());
        max_sent = max_sent.max(sent);
    }
    for head in [
        "PUT /api/put/k HTTP/1.1\r\nContent-Length: 10737418240\r\n\r\n",
        "PUT /api/put/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffff\r\n",
    ] {
        let mut s = srv.connect();
        s.write_all(head.as_bytes()).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        let r = Response::parse(&buf).unwrap().0;
        assert_eq!(r.status, 413, "{head:?}");
        assert!(r.closes());
    }
    let health = probe.finish();
    srv.wait_connections_at_most(1.0, Duration::from_secs(5));
    let settled = srv.settled_rss_kib(Duration::from_secs(2));
    assert_eq!(srv.request("GET", "/api/exist/big", b"").text(), r#"{"exists":false}"#);
    let extra = format!("; 413 for unterminated bodies of {max_sent} bytes (limit 1 MiB)");
    report("huge-bodies", baseline, peak, settled, health, &extra);
}

/// A flood of pipelined requests on one connection is answered completely and in order while
/// the client reads concurrently; several such connections at once do not starve `/health`.
#[test]
fn pipelined_flood_is_answered_in_order() {
    const PER_CONN: usize = 20_000;
    const CONNS: usize = 4;
    let srv = Server::start(&["--global-segment-size", "16MiB"]);
    assert_eq!(srv.request("PUT", "/api/put", br#"{"key":"k","value":"hello"}"#).status, 200);
    let baseline = srv.rss_kib();
    let probe = HealthProbe::start(srv.addr);
    let t0 = Instant::now();
    let floods: Vec<_> = (0..CONNS)
        .map(|i| {
            let mut s = srv.connect();
            let mut reader = s.try_clone().unwrap();
            let read = std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = reader.read_to_end(&mut buf);
                buf
            });
            std::thread::spawn(move || {
                let mut batch = Vec::new();
                for n in 0..PER_CONN {
                    let req: &[u8] = match n % 3 {
                        0 => b"GET /health HTTP/1.1\r\n\r\n",
                        1 => b"GET /api/exist/k HTTP/1.1\r\n\r\n",
                        _ => b"GET /api/get/k HTTP/1.1\r\n\r\n",
                    };
                    batch.extend_from_slice(req);
                    if batch.len() > 16 * 1024 {
                        s.write_all(&batch).unwrap();
                        batch.clear();
                    }
                }
                batch.extend_from_slice(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
                s.write_all(&batch).unwrap();
                (i, read.join().unwrap())
            })
        })
        .collect();
    let mut peak = baseline;
    while !floods.iter().all(|f| f.is_finished()) {
        peak = peak.max(srv.rss_kib());
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = t0.elapsed();
    for f in floods {
        let (i, buf) = f.join().unwrap();
        let responses = parse_all(&buf);
        assert_eq!(responses.len(), PER_CONN + 1, "connection {i}");
        for (n, r) in responses.iter().enumerate().take(PER_CONN) {
            let want: &str = match n % 3 {
                0 => "OK",
                1 => r#"{"exists":true}"#,
                _ => "hello",
            };
            assert_eq!((r.status, r.text().as_str()), (200, want), "connection {i}, response {n}");
        }
        assert!(responses[PER_CONN].closes());
    }
    let health = probe.finish();
    srv.wait_connections_at_most(1.0, Duration::from_secs(5));
    let settled = srv.settled_rss_kib(Duration::from_secs(2));
    assert!(peak < baseline + 64 * 1024, "RSS grew from {baseline} to {peak} KiB");
    let total = CONNS * (PER_CONN + 1);
    report(
        "pipelined-flood",
        baseline,
        peak,
        settled,
        health,
        &format!("; {total} requests on {CONNS} connections in {elapsed:?}"),
    );
}

/// Clients that pipeline without pause (and read their responses) must not starve the other
/// connections of their worker: with one worker thread and two endless floods, `/health` on a
/// new connection is still answered promptly. (Regression: the mio adapter used to drive a
/// connection for as long as it made progress, so `/health` waited for the whole flood.)
#[test]
fn endless_flood_does_not_starve_other_connections() {
    const FLOOD: Duration = Duration::from_secs(4);
    const BOUND: Duration = Duration::from_secs(2);
    let srv = Server::start(&["--threads", "1"]);
    let baseline = srv.rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..2)
        .map(|_| {
            let mut s = srv.connect();
            let mut reader = s.try_clone().unwrap();
            let read = std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                let mut total = 0usize;
                while let Ok(n @ 1..) = reader.read(&mut buf) {
                    total += n;
                }
                total
            });
            let stop = stop.clone();
            std::thread::spawn(move || {
                let batch = b"GET /health HTTP/1.1\r\n\r\n".repeat(1000);
                let mut sent = 0usize;
                while !stop.load(Ordering::Relaxed) && s.write_all(&batch).is_ok() {
                    sent += 1000;
                }
                let _ = s.shutdown(Shutdown::Write);
                (sent, read.join().unwrap())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let probe = HealthProbe::start(srv.addr);
    let mut peak = baseline;
    let t0 = Instant::now();
    while t0.elapsed() < FLOOD {
        peak = peak.max(srv.rss_kib());
        std::thread::sleep(Duration::from_millis(100));
    }
    let health = probe.finish();
    stop.store(true, Ordering::Relaxed);
    let mut requests = 0;
    for f in floods {
        let (sent, received) = f.join().unwrap();
        assert!(received > 0);
        requests += sent;
    }
    assert!(health.0 >= 3, "only {} /health answers during a {FLOOD:?} flood", health.0);
    assert!(health.1 < BOUND, "/health waited {:?} behind the flood", health.1);
    srv.wait_connections_at_most(1.0, Duration::from_secs(5));
    let settled = srv.settled_rss_kib(Duration::from_secs(2));
    report("endless-flood", baseline, peak, settled, health, &format!("; {requests} requests pipelined meanwhile"));
}

/// Half-closed connections: every complete request sent before the FIN is answered (the last
/// response closes), an incomplete one is dropped, and the server closes. 500 at once.
#[test]
fn half_closed_connections_are_answered_then_closed() {
    const N: usize = 500;
    let srv = Server::start(&[]);
    let baseline = srv.rss_kib();
    let probe = HealthProbe::start(srv.addr);
    let t0 = Instant::now();
    let conns: Vec<TcpStream> = (0..N)
        .map(|i| {
            let mut s = srv.connect();
            let mut reqs = b"GET /health HTTP/1.1\r\n\r\nGET /api/exist/a HTTP/1.1\r\n\r\n".to_vec();
            if i % 2 == 1 {
                reqs.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: incompl");
                // dropped
            }
            s.write_all(&reqs).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            s
        })
        .collect();
    let peak = srv.rss_kib();
    for (i, mut s) in conns.into_iter().enumerate() {
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).expect("read to EOF");
        let rs = parse_all(&buf);
        assert_eq!(rs.len(), 2, "connection {i}: {:?}", String::from_utf8_lossy(&buf));
        assert_eq!((rs[0].status, rs[0].text().as_str()), (200, "OK"));
        assert!(!rs[0].closes());
        assert_eq!((rs[1].status, rs[1].text().as_str()), (200, r#"{"exists":false}"#));
    }
    let elapsed = t0.elapsed();
    let health = probe.finish();
    let open = srv.wait_connections_at_most(1.0, Duration::from_secs(5));
    assert!(open <= 1.0, "{open} connections left open");
    let settled = srv.settled_rss_kib(Duration::from_secs(2));
    report("half-closed", baseline, peak, settled, health, &format!("; {N} connections answered in {elapsed:?}"));
}
