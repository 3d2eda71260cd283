//! End-to-end test harness for `mc-master`.
//!
//! - [`Server`]: spawns the real binary on an ephemeral port of 127.0.0.1 and kills it on drop.
//! - [`Conn`] / [`Response`]: a minimal raw HTTP/1.1 client over `std::net::TcpStream` with read
//!   deadlines everywhere, pipelining, and Content-Length / chunked / close-delimited framing.
//! - [`Metrics`]: a Prometheus text parser (series → value).
//!
//! Every test runs its body once per runtime listed by [`runtimes`] through [`for_each_runtime`].

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub mod etcd;
pub mod rpc;
pub mod upstream;

/// Content type `P` of SPEC §1.4.
pub const CT_PLAIN: &str = "text/plain; version=0.0.4";
/// Content type `J` of SPEC §1.4.
pub const CT_JSON: &str = "application/json; charset=utf-8";
/// Content type `O` of SPEC §1.4.
pub const CT_OCTET: &str = "application/octet-stream";

/// Upper bound for reading one response (or waiting for a close).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for the binary to print its listening line(s).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

pub const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Runtimes
// ---------------------------------------------------------------------------------------------

/// Runtimes to test: `MC_TEST_RUNTIMES` (comma separated, e.g. `mio,glommio`); by default
/// `mio`, plus `glommio` when this machine can run it (io_uring, see `mc_glommio::probe`).
pub fn runtimes() -> Vec<String> {
    let spec = std::env::var("MC_TEST_RUNTIMES").unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for rt in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !out.iter().any(|r| r == rt) {
            out.push(rt.to_string());
        }
    }
    if out.is_empty() {
        out.push("mio".to_string());
        if glommio_available() {
            out.push("glommio".to_string());
        }
    }
    out
}

/// Whether the glommio runtime can start here (probed once per test binary).
fn glommio_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| match mc_glommio::probe() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("not testing the glommio runtime: {e}");
            false
        }
    })
}

thread_local! {
    static CURRENT_RUNTIME: RefCell<String> = RefCell::new("mio".to_string());
}

/// The runtime [`Server::start`] uses on this thread (set by [`for_each_runtime`]).
pub fn current_runtime() -> String {
    CURRENT_RUNTIME.with(|r| r.borrow().clone())
}

/// Runs `body` once per runtime of [`runtimes`]; [`Server::start`] inside picks that runtime.
pub fn for_each_runtime(mut body: impl FnMut(&str)) {
    for rt in runtimes() {
        eprintln!("=== runtime: {rt}");
        CURRENT_RUNTIME.with(|r| *r.borrow_mut() = rt.clone());
        body(&rt);
    }
}

// ---------------------------------------------------------------------------------------------
// Misc helpers
// ---------------------------------------------------------------------------------------------

/// Path of the binary under test: `MC_TEST_BIN` if set (to run the suite against another
/// build), else the package's `mc-master`.
pub fn bin() -> String {
    std::env::var("MC_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_mc-master").to_string())
}

/// A name unique across processes and calls: `<prefix>-<pid>-<nanos>-<seq>`.
pub fn unique(prefix: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{nanos}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// The OS page size (`PAGE` of SPEC §3).
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    assert!(p > 0, "sysconf(_SC_PAGESIZE) failed");
    p as u64
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Percent-encodes every byte except the RFC 3986 unreserved characters.
pub fn pct(s: &str) -> String {
    pct_bytes(s.as_bytes())
}

pub fn pct_bytes(b: &[u8]) -> String {
    let mut out = String::new();
    for &c in b {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Canonical lower-case RFC 4122 version-4 UUID (`8-4-4-4-12`).
pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 36 {
        return false;
    }
    for (i, &c) in b.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        };
        if !ok {
            return false;
        }
    }
    b[14] == b'4' && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// Checks that a JSON text has no whitespace outside strings (SPEC §1.4 "compact").
pub fn is_compact_json(text: &str) -> bool {
    let mut in_str = false;
    let mut esc = false;
    for c in text.chars() {
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c.is_whitespace() {
            return false;
        }
    }
    !in_str
}

/// Parses an IMF-fixdate (`Tue, 14 Jul 2026 09:41:07 GMT`) into Unix seconds; checks the weekday.
pub fn parse_imf_fixdate(s: &str) -> Option<i64> {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]; // 1970-01-01 was a Thursday
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let b = s.as_bytes();
    if b.len() != 29 || &s[3..5] != ", " || b[7] != b' ' || b[11] != b' ' || b[16] != b' ' {
        return None;
    }
    if b[19] != b':' || b[22] != b':' || &s[25..] != " GMT" {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = &s[r];
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let day = num(5..7)?;
    let month = MONTHS.iter().position(|m| *m == &s[8..11])? as i64 + 1;
    let year = num(12..16)?;
    let (hh, mm, ss) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // days_from_civil (Howard Hinnant)
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    if DAYS[days.rem_euclid(7) as usize] != &s[0..3] {
        return None;
    }
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
pub fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// A running `mc-master` child process; SIGKILLed and reaped on drop.
pub struct Server {
    child: Child,
    exited: Option<ExitStatus>,
    /// Main listener address.
    pub addr: SocketAddr,
    /// Admin listener address, when `--admin-port` was given.
    pub admin: Option<SocketAddr>,
    pub runtime: String,
    lines: Receiver<String>,
    stderr_path: PathBuf,
}

fn has_flag(args: &[&str], names: &[&str]) -> bool {
    args.iter().any(|a| names.iter().any(|n| *a == *n || a.starts_with(&format!("{n}="))))
}

impl Server {
    /// Starts the binary with `--port 0 --rpc-port off --runtime <current runtime>` plus `args`
    /// (a flag already present in `args` is not added again).
    pub fn start(args: &[&str]) -> Server {
        Self::start_rt(&current_runtime(), args)
    }

    pub fn start_rt(rt: &str, args: &[&str]) -> Server {
        let mut full: Vec<String> = Vec::new();
        if !has_flag(args, &["--port"]) {
            full.extend(["--port".into(), "0".into()]);
        }
        if !has_flag(args, &["--rpc-port", "--rpc_port"]) {
            full.extend(["--rpc-port".into(), "off".into()]);
        }
        if !has_flag(args, &["--runtime"]) {
            full.extend(["--runtime".into(), rt.to_string()]);
        }
        full.extend(args.iter().map(|s| s.to_string()));
        let wants_admin = has_flag(args, &["--admin-port", "--metrics_port"]);

        let stderr_path = std::env::temp_dir().join(format!("{}.log", unique("mc-e2e-stderr")));
        let stderr_file = File::create(&stderr_path).expect("create stderr log file");
        let mut child = Command::new(bin())
            .args(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr_file)
            .spawn()
            .expect("spawn mc-master");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            // Drains stdout for the whole life of the child so it never blocks or gets EPIPE.
            let mut r = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let _ = tx.send(line);
                    }
                }
            }
        });
        let mut server = Server {
            child,
            exited: None,
            addr: "127.0.0.1:1".parse().unwrap(),
            admin: None,
            runtime: rt.to_string(),
            lines: rx,
            stderr_path,
        };
        let first = server.next_line(&full);
        server.addr = parse_listen_line(&first, "listening on http://")
            .unwrap_or_else(|| panic!("unexpected first stdout line {first:?} (args {full:?})"));
        if wants_admin {
            let second = server.next_line(&full);
            server.admin = Some(
                parse_listen_line(&second, "admin listening on http://")
                    .unwrap_or_else(|| panic!("unexpected second stdout line {second:?} (args {full:?})")),
            );
        }
        server
    }

    /// The next stdout line that satisfies `pick` (earlier ones are dropped), within 5 s.
    pub fn lines_until(&self, pick: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if pick(&line) {
                return Some(line);
            }
        }
    }

    fn next_line(&mut self, args: &[String]) -> String {
        match self.lines.recv_timeout(STARTUP_TIMEOUT) {
            Ok(l) => l.trim_end_matches(['\r', '\n']).to_string(),
            Err(e) => {
                let status = wait_timeout(&mut self.child, Duration::from_millis(500));
                if let Some(st) = status {
                    self.exited = Some(st);
                }
                panic!(
                    "mc-master did not print its listening line ({}) args={args:?} exit={status:?}\nstderr:\n{}",
                    match e {
                        RecvTimeoutError::Timeout => "timeout",
                        RecvTimeoutError::Disconnected => "stdout closed",
                    },
                    self.stderr_tail()
                )
            }
        }
    }

    /// The last 4 KiB of the child's stderr.
    pub fn stderr_tail(&self) -> String {
        let data = std::fs::read(&self.stderr_path).unwrap_or_default();
        let start = data.len().saturating_sub(4096);
        String::from_utf8_lossy(&data[start..]).into_owned()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The default node name `<local-hostname>:<port>` with the default local hostname.
    pub fn default_node_name(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// Sends `sig` to the child.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = wait_timeout(&mut self.child, timeout);
        }
        self.exited
    }

    /// A new connection to the main listener.
    pub fn conn(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// A new connection to the admin listener.
    pub fn admin_conn(&self) -> Conn {
        Conn::connect(self.admin.expect("server started without --admin-port"))
    }

    /// One request on a fresh connection.
    pub fn request(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut c = self.conn();
        c.send(&build_request(method, target, headers, body));
        c.read_response_for(method)
    }

    pub fn get(&self, target: &str) -> Response {
        self.request("GET", target, &[], b"")
    }

    pub fn head(&self, target: &str) -> Response {
        self.request("HEAD", target, &[], b"")
    }

    /// A request with a JSON body (`Content-Type: application/json`).
    pub fn json(&self, method: &str, target: &str, body: &str) -> Response {
        self.request(method, target, &[("Content-Type", "application/json")], body.as_bytes())
    }

    pub fn post(&self, target: &str, body: &str) -> Response {
        self.json("POST", target, body)
    }

    pub fn delete(&self, target: &str) -> Response {
        self.request("DELETE", target, &[], b"")
    }

    /// `GET /metrics`, parsed.
    pub fn metrics(&self) -> Metrics {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "/metrics: {}", r.text());
        parse_metrics(&r.text())
    }

    /// `GET /get_segments_detail`, parsed.
    pub fn detail(&self) -> Value {
        let r = self.get("/get_segments_detail");
        assert_eq!(r.status, 200, "/get_segments_detail: {}", r.text());
        r.json()
    }

    /// The `segments` array of `/get_segments_detail`.
    pub fn segments(&self) -> Vec<Value> {
        self.detail()["segments"].as_array().expect("segments array").clone()
    }

    /// `GET /get_all_keys` lines.
    pub fn all_keys(&self) -> Vec<String> {
        let r = self.get("/get_all_keys");
        assert_eq!(r.status, 200, "/get_all_keys: {}", r.text());
        r.text().lines().map(str::to_string).collect()
    }

    /// `POST /api/mount {"size":size}`; asserts 200 and returns the segment ids.
    pub fn mount(&self, size: u64) -> Vec<String> {
        let r = self.post("/api/mount", &format!("{{\"size\":{size}}}"));
        assert_eq!(r.status, 200, "mount {size}: {}", r.text());
        let v = r.json();
        let ids: Vec<String> = v["segment_ids"]
            .as_array()
            .expect("segment_ids")
            .iter()
            .map(|x| x.as_str().expect("id string").to_string())
            .collect();
        assert!(ids.iter().all(|i| is_uuid_v4(i)), "ids {ids:?}");
        ids
    }

    /// `PUT /api/put` with a JSON string value; asserts 200.
    pub fn put(&self, key: &str, value: &str) {
        let body = serde_json::json!({"key": key, "value": value}).to_string();
        let r = self.json("PUT", "/api/put", &body);
        assert_eq!(r.status, 200, "put {key:?}: {}", r.text());
        assert_eq!(r.text(), r#"{"status":"success"}"#);
    }

    /// `PUT /api/put/{key}` with a raw body (key percent-encoded here).
    pub fn put_raw(&self, key: &str, value: &[u8]) -> Response {
        self.request("PUT", &format!("/api/put/{}", pct(key)), &[("Content-Type", "application/octet-stream")], value)
    }

    /// `GET /api/get/{key}` (key percent-encoded here).
    pub fn get_value(&self, key: &str) -> Response {
        self.get(&format!("/api/get/{}", pct(key)))
    }

    /// `GET /api/exist/{key}` → the boolean.
    pub fn exists(&self, key: &str) -> bool {
        let r = self.get(&format!("/api/exist/{}", pct(key)));
        assert_eq!(r.status, 200, "exist {key:?}: {}", r.text());
        match r.text().as_str() {
            r#"{"exists":true}"# => true,
            r#"{"exists":false}"# => false,
            other => panic!("unexpected exist body {other:?}"),
        }
    }

    /// `DELETE /api/remove/{key}`.
    pub fn remove(&self, key: &str) -> Response {
        self.delete(&format!("/api/remove/{}", pct(key)))
    }

    /// `GET /query_key?key=..`.
    pub fn query_key(&self, key: &str) -> Response {
        self.get(&format!("/query_key?key={}", pct(key)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("--- mc-master ({}) stderr tail ---\n{}", self.runtime, self.stderr_tail());
        }
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

fn parse_listen_line(line: &str, prefix: &str) -> Option<SocketAddr> {
    line.strip_prefix(prefix)?.trim().parse().ok()
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Result of running the binary to completion.
pub struct CliOutput {
    /// `None` when it was still running at the timeout (then it was killed).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// Runs the binary with exactly `args` (nothing added) and waits up to `timeout` for its exit.
pub fn run_cli(args: &[&str], timeout: Duration) -> CliOutput {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mc-master");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let to = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let te = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = wait_timeout(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    CliOutput {
        status,
        stdout: String::from_utf8_lossy(&to.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&te.join().unwrap_or_default()).into_owned(),
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind ephemeral");
    l.local_addr().unwrap().port()
}

/// A temporary file removed on drop.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    pub fn new(prefix: &str, contents: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(unique(prefix));
        std::fs::write(&path, contents).expect("write temp file");
        TempFile { path }
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP client
// ---------------------------------------------------------------------------------------------

/// Builds `METHOD target HTTP/1.1` with `headers`; adds `Content-Length` when the body is not
/// empty or the method is POST/PUT (unless a framing header is given).
pub fn build_request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    let mut framed = false;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding") {
            framed = true;
        }
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !framed && (!body.is_empty() || method == "POST" || method == "PUT") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// How the body of a response was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body by definition (HEAD, 1xx, 204, 304).
    None,
    ContentLength,
    Chunked,
    Close,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
    /// Sizes of the chunks of a chunked body (excluding the final 0).
    pub chunk_sizes: Vec<usize>,
}

impl Response {
    /// First header value with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).count()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").map(|v| v.trim().parse().expect("numeric Content-Length"))
    }

    /// Whether the response announces `Connection: close`.
    pub fn closes(&self) -> bool {
        has_token(self.header("connection"), "close")
    }

    /// Asserts status, content type and exact body.
    #[track_caller]
    pub fn assert(&self, status: u16, content_type: &str, body: &str) {
        assert_eq!(
            (self.status, self.text().as_str()),
            (status, body),
            "unexpected response (headers {:?})",
            self.headers
        );
        assert_eq!(self.content_type(), Some(content_type), "content type of {status} {body}");
        if self.framing == Framing::ContentLength {
            assert_eq!(self.content_length(), Some(self.body.len() as u64));
        }
    }

    /// Asserts a JSON response with an exact body (content type J).
    #[track_caller]
    pub fn assert_json(&self, status: u16, body: &str) {
        self.assert(status, CT_JSON, body);
    }

    /// Asserts a shape E3 error `{"error":"<msg>"}` with content type J.
    #[track_caller]
    pub fn assert_error(&self, status: u16, msg: &str) {
        let body = serde_json::json!({ "error": msg }).to_string();
        self.assert(status, CT_JSON, &body);
    }

    /// Asserts a plain-text response (content type P) with an exact body.
    #[track_caller]
    pub fn assert_plain(&self, status: u16, body: &str) {
        self.assert(status, CT_PLAIN, body);
    }
}

/// Why reading a response failed.
#[derive(Debug)]
pub enum ReadError {
    Timeout {
        buffered: Vec<u8>,
    },
    /// The peer closed (EOF or reset) before a full response.
    Closed {
        buffered: Vec<u8>,
    },
    Invalid(String),
    Io(io::Error),
}

/// One client connection.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        Self::try_connect(addr, Duration::from_secs(5)).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    /// Connects within `timeout`, returning the error instead of panicking.
    pub fn try_connect(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(READ_TIMEOUT)).ok();
        stream.set_write_timeout(Some(READ_TIMEOUT)).ok();
        Ok(Conn { stream, buf: Vec::new(), eof: false })
    }

    /// Writes all bytes (panics on error).
    pub fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).unwrap_or_else(|e| panic!("write {} bytes: {e}", data.len()));
    }

    /// Writes all bytes, returning the error instead of panicking.
    pub fn try_send(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)
    }

    /// Writes one byte at a time with `pause` between bytes.
    pub fn send_bytewise(&mut self, data: &[u8], pause: Duration) {
        for b in data {
            self.send(std::slice::from_ref(b));
            thread::sleep(pause);
        }
    }

    /// Sends FIN (half-close).
    pub fn half_close(&mut self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown(Write)");
    }

    /// Reads more bytes into the buffer; Ok(0) on EOF/reset.
    fn fill(&mut self, deadline: Instant) -> Result<usize, ReadError> {
        if self.eof {
            return Ok(0);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ReadError::Timeout { buffered: self.buf.clone() });
        }
        let remaining = (deadline - now).max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(remaining)).ok();
        let mut tmp = [0u8; 65536];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(ReadError::Timeout { buffered: self.buf.clone() })
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted) => {
                    self.eof = true;
                    return Ok(0);
                }
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// Ensures `n` buffered bytes; Err(Closed) if EOF first.
    fn need(&mut self, n: usize, deadline: Instant) -> Result<(), ReadError> {
        while self.buf.len() < n {
            if self.fill(deadline)? == 0 {
                return Err(ReadError::Closed { buffered: self.buf.clone() });
            }
        }
        Ok(())
    }

    /// Reads a CRLF-terminated line starting at `pos`; returns (line without CRLF, next pos).
    fn line_at(&mut self, pos: usize, deadline: Instant) -> Result<(String, usize), ReadError> {
        loop {
            if let Some(i) = find(&self.buf[pos..], b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[pos..pos + i]).into_owned();
                return Ok((line, pos + i + 2));
            }
            if self.buf.len() - pos > 1 << 20 {
                return Err(ReadError::Invalid("line longer than 1 MiB".into()));
            }
            if self.fill(deadline)? == 0 {
                return Err(ReadError::Closed { buffered: self.buf.clone() });
            }
        }
    }

    /// Reads one response; `head_request` says whether it answers a HEAD (no body).
    pub fn try_read_response(&mut self, head_request: bool, timeout: Duration) -> Result<Response, ReadError> {
        let deadline = Instant::now() + timeout;
        // Head.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > 1 << 20 {
                return Err(ReadError::Invalid("response head longer than 1 MiB".into()));
            }
            if self.fill(deadline)? == 0 {
                return Err(ReadError::Closed { buffered: self.buf.clone() });
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end - 4]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let (version, rest) =
            status_line.split_once(' ').ok_or_else(|| ReadError::Invalid(format!("status line {status_line:?}")))?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status: u16 = code.parse().map_err(|_| ReadError::Invalid(format!("status line {status_line:?}")))?;
        let mut headers = Vec::new();
        for l in lines {
            let (k, v) = l.split_once(':').ok_or_else(|| ReadError::Invalid(format!("header line {l:?}")))?;
            headers.push((k.to_string(), v.trim().to_string()));
        }
        let mut resp = Response {
            version: version.to_string(),
            status,
            reason: reason.to_string(),
            headers,
            body: Vec::new(),
            framing: Framing::None,
            chunk_sizes: Vec::new(),
        };
        let mut pos = head_end;
        let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
        if !no_body {
            let te = resp.header("transfer-encoding").map(str::to_string);
            let cl = resp.header("content-length").map(str::to_string);
            if let Some(te) = te {
                if !te.trim().eq_ignore_ascii_case("chunked") {
                    return Err(ReadError::Invalid(format!("transfer-encoding {te:?}")));
                }
                resp.framing = Framing::Chunked;
                loop {
                    let (line, next) = self.line_at(pos, deadline)?;
                    pos = next;
                    let size_txt = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size_txt, 16)
                        .map_err(|_| ReadError::Invalid(format!("chunk size line {line:?}")))?;
                    if size == 0 {
                        // Trailer fields until an empty line.
                        loop {
                            let (t, next) = self.line_at(pos, deadline)?;
                            pos = next;
                            if t.is_empty() {
                                break;
                            }
                        }
                        break;
                    }
                    self.need(pos + size + 2, deadline)?;
                    resp.body.extend_from_slice(&self.buf[pos..pos + size]);
                    if &self.buf[pos + size..pos + size + 2] != b"\r\n" {
                        return Err(ReadError::Invalid("chunk not followed by CRLF".into()));
                    }
                    resp.chunk_sizes.push(size);
                    pos += size + 2;
                }
            } else if let Some(cl) = cl {
                let n: usize = cl.trim().parse().map_err(|_| ReadError::Invalid(format!("content-length {cl:?}")))?;
                resp.framing = Framing::ContentLength;
                self.need(pos + n, deadline)?;
                resp.body = self.buf[pos..pos + n].to_vec();
                pos += n;
            } else {
                resp.framing = Framing::Close;
                while self.fill(deadline)? > 0 {}
                resp.body = self.buf[pos..].to_vec();
                pos = self.buf.len();
            }
        }
        self.buf.drain(..pos);
        Ok(resp)
    }

    /// Reads one response to a non-HEAD request (panics on failure).
    #[track_caller]
    pub fn read_response(&mut self) -> Response {
        self.read_response_ext(false)
    }

    /// Reads one response to a HEAD request.
    #[track_caller]
    pub fn read_head_response(&mut self) -> Response {
        self.read_response_ext(true)
    }

    /// Reads one response to a request with this method.
    #[track_caller]
    pub fn read_response_for(&mut self, method: &str) -> Response {
        self.read_response_ext(method == "HEAD")
    }

    #[track_caller]
    fn read_response_ext(&mut self, head: bool) -> Response {
        match self.try_read_response(head, READ_TIMEOUT) {
            Ok(r) => r,
            Err(e) => panic!("reading response: {}", describe(&e)),
        }
    }

    /// Reads `n` pipelined responses to non-HEAD requests.
    #[track_caller]
    pub fn read_responses(&mut self, n: usize) -> Vec<Response> {
        (0..n).map(|_| self.read_response()).collect()
    }

    /// Waits up to `timeout` for the peer to close; returns Err with the extra bytes if any
    /// arrive, or Err on timeout.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let deadline = start + timeout;
        loop {
            match self.fill(deadline) {
                Ok(0) => {
                    return if self.buf.is_empty() {
                        Ok(start.elapsed())
                    } else {
                        Err(format!("unexpected bytes before close: {:?}", String::from_utf8_lossy(&self.buf)))
                    }
                }
                Ok(_) => {}
                Err(ReadError::Timeout { buffered }) => {
                    return Err(format!(
                        "connection still open after {timeout:?} (buffered {:?})",
                        String::from_utf8_lossy(&buffered)
                    ))
                }
                Err(e) => return Err(describe(&e)),
            }
        }
    }

    /// Asserts the peer closes the connection (within [`READ_TIMEOUT`]) with no further bytes.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        if let Err(e) = self.wait_closed(READ_TIMEOUT) {
            panic!("expected the server to close the connection: {e}");
        }
    }

    /// Asserts nothing arrives and the connection stays open for `d`.
    #[track_caller]
    pub fn expect_silent(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        match self.fill(deadline) {
            Err(ReadError::Timeout { buffered }) if buffered.is_empty() => {}
            Ok(0) => panic!("connection closed unexpectedly"),
            Ok(_) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&self.buf)),
            Err(e) => panic!("{}", describe(&e)),
        }
    }

    /// Whether bytes (or EOF) are ready to read right now, without consuming them.
    pub fn readable_now(&mut self) -> bool {
        if !self.buf.is_empty() || self.eof {
            return true;
        }
        self.stream.set_nonblocking(true).ok();
        let mut b = [0u8; 1];
        let r = self.stream.peek(&mut b);
        self.stream.set_nonblocking(false).ok();
        match r {
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        }
    }
}

fn describe(e: &ReadError) -> String {
    match e {
        ReadError::Timeout { buffered } => {
            format!("timed out; buffered {:?}", String::from_utf8_lossy(&buffered[..buffered.len().min(2000)]))
        }
        ReadError::Closed { buffered } => {
            format!("connection closed; buffered {:?}", String::from_utf8_lossy(&buffered[..buffered.len().min(2000)]))
        }
        ReadError::Invalid(s) => format!("invalid response: {s}"),
        ReadError::Io(e) => format!("io error: {e}"),
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Prometheus text parser
// ---------------------------------------------------------------------------------------------

/// Label pairs as printed.
pub type Labels = Vec<(String, String)>;
/// One sample line: (metric name, labels in printed order, value as printed).
pub type Sample = (String, Labels, String);

/// Parsed `/metrics` body.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub text: String,
    /// Canonical series (labels sorted by name) → value.
    pub samples: BTreeMap<String, f64>,
    /// Canonical series → value as printed.
    pub raw: BTreeMap<String, String>,
    /// Samples in order of appearance: (metric name, labels as printed order, value text).
    pub lines: Vec<Sample>,
    /// Family → `# TYPE` values (one entry per TYPE line).
    pub types: BTreeMap<String, Vec<String>>,
    /// Family → number of `# HELP` lines.
    pub helps: BTreeMap<String, usize>,
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn canonical(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let mut l: Vec<&(String, String)> = labels.iter().collect();
    l.sort();
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Parses one series selector/sample head: `name{a="b",...}` → (name, labels, rest of line).
fn parse_series(s: &str) -> Result<(String, Labels, &str), String> {
    let name_end = s.find(['{', ' ']).unwrap_or(s.len());
    let name = s[..name_end].to_string();
    if name.is_empty() {
        return Err(format!("empty metric name in {s:?}"));
    }
    let mut labels = Vec::new();
    let mut rest = &s[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let mut consumed = None;
        loop {
            // skip to label name
            let mut key = String::new();
            let mut closed = false;
            while let Some(&(i, c)) = chars.peek() {
                if c == '}' {
                    chars.next();
                    consumed = Some(i + 1);
                    closed = true;
                    break;
                }
                if c == '=' {
                    chars.next();
                    break;
                }
                if c != ',' {
                    key.push(c);
                }
                chars.next();
            }
            if closed {
                break;
            }
            match chars.next() {
                Some((_, '"')) => {}
                _ => return Err(format!("bad label syntax in {s:?}")),
            }
            let mut val = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => val.push('\n'),
                        Some((_, c)) => val.push(c),
                        None => return Err(format!("bad escape in {s:?}")),
                    },
                    Some((_, '"')) => break,
                    Some((_, c)) => val.push(c),
                    None => return Err(format!("unterminated label value in {s:?}")),
                }
            }
            labels.push((key.trim().to_string(), val));
        }
        let used = consumed.ok_or_else(|| format!("unterminated labels in {s:?}"))?;
        rest = &r[used..];
    }
    Ok((name, labels, rest))
}

/// Parses the Prometheus text exposition format.
pub fn parse_metrics(text: &str) -> Metrics {
    let mut m = Metrics { text: text.to_string(), ..Default::default() };
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(r) = line.strip_prefix("# TYPE ") {
            let mut it = r.split_whitespace();
            let fam = it.next().unwrap_or_default().to_string();
            let ty = it.next().unwrap_or_default().to_string();
            m.types.entry(fam).or_default().push(ty);
            continue;
        }
        if let Some(r) = line.strip_prefix("# HELP ") {
            let fam = r.split_whitespace().next().unwrap_or_default().to_string();
            *m.helps.entry(fam).or_default() += 1;
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = parse_series(line).unwrap_or_else(|e| panic!("metrics parse error: {e}"));
        let value_txt =
            rest.split_whitespace().next().unwrap_or_else(|| panic!("no value in metrics line {line:?}")).to_string();
        let value: f64 = match value_txt.as_str() {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            t => t.parse().unwrap_or_else(|_| panic!("bad value in metrics line {line:?}")),
        };
        let key = canonical(&name, &labels);
        m.samples.insert(key.clone(), value);
        m.raw.insert(key, value_txt.clone());
        m.lines.push((name, labels, value_txt));
    }
    m
}

impl Metrics {
    fn key(series: &str) -> String {
        let (name, labels, _) = parse_series(series).unwrap_or_else(|e| panic!("bad series selector: {e}"));
        canonical(&name, &labels)
    }

    /// Value of a series, e.g. `http_requests_total{route="/health",method="GET",code="200"}`
    /// (label order does not matter).
    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(&Self::key(series)).copied()
    }

    /// Value of a series; panics (printing the exposition) when absent.
    #[track_caller]
    pub fn val(&self, series: &str) -> f64 {
        self.get(series).unwrap_or_else(|| panic!("series {series} missing from /metrics:\n{}", self.text))
    }

    /// Value as printed.
    pub fn raw_value(&self, series: &str) -> Option<&str> {
        self.raw.get(&Self::key(series)).map(String::as_str)
    }

    /// Sample lines belonging to a family (histogram `_bucket`/`_sum`/`_count` included).
    pub fn family_lines(&self, family: &str) -> Vec<&Sample> {
        self.lines
            .iter()
            .filter(|(n, _, _)| {
                n == family
                    || n.strip_prefix(family).is_some_and(|suffix| matches!(suffix, "_bucket" | "_sum" | "_count"))
            })
            .collect()
    }

    /// Sum of the values of every series of `name` whose labels include all of `labels`.
    pub fn sum_matching(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.lines
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v)))
            .map(|(_, _, v)| v.parse::<f64>().unwrap_or(f64::NAN))
            .sum()
    }
}
