//! Shared harness of the fuzz targets (see docs/robustness.md).
//!
//! Every target drives the public API of `mc-core` the way an adapter does, on a
//! [`FakePlatform`] (heap memory, deterministic ids) and a fixed clock, so that a run is a
//! pure function of its input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mc_core::api::{ApiRequest, Listener};
use mc_core::http::{Connection, Handler, HeadDecision, HttpError, Method, RequestHead, Response};
use mc_core::platform::FakePlatform;
use mc_core::{Config, Master, Now, Service};

/// Wall clock of every run (the `Date` header is therefore constant).
pub const WALL: u64 = 1_700_000_000;
/// Size of the start-up segment of every fuzzed master.
pub const SEGMENT: u64 = 1 << 20;
/// Name of the fake `/dev/shm` object that `/api/mount_shm` can map.
pub const SHM_NAME: &str = "seg";
/// Size of that object.
pub const SHM_SIZE: usize = 1 << 20;

/// One monotonic origin for the whole process, so runs do not depend on when they start.
pub fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// `base() + offset`, with the fixed wall clock.
pub fn at(offset: Duration) -> Now {
    Now::new(base() + offset, WALL + offset.as_secs())
}

/// The configuration of fuzzed masters: small alignment and body limit, default timeouts.
pub fn config() -> Config {
    Config {
        node_name: "127.0.0.1:8080".into(),
        mount_alignment: 4096,
        max_body_size: 1 << 20,
        max_batch_keys: 64,
        ..Config::default()
    }
}

/// A master on a fake platform with a 1 MiB start-up segment and one fake shm object.
/// Anonymous mounts above 4 MiB fail (507), so inputs cannot exhaust the fuzzer's memory.
pub fn master(config: Config) -> Arc<Master> {
    let mut platform = FakePlatform::new(7);
    platform.max_anonymous = 4 << 20;
    platform.add_shm(SHM_NAME, SHM_SIZE);
    let master = Master::new(config, Arc::new(platform), at(Duration::ZERO));
    master.mount_startup_segment(at(Duration::ZERO), SEGMENT).expect("start-up segment");
    master
}

/// Final statuses an HTTP exchange may produce (SPEC §2, §4–§6, §10). 500 is reserved for an
/// OS refusal of a shm mapping, which the fake platform never produces; 503 needs a second
/// connection (an unmount during a streamed write) or `--max-connections`.
pub const ALLOWED_STATUSES: &[u16] = &[200, 204, 400, 404, 405, 408, 409, 413, 417, 431, 505, 507];

/// A [`Handler`] that forwards to a [`Service`] and records every final status sent.
pub struct Recorder {
    /// The real handler.
    pub svc: Service,
    /// Final statuses, in the order the responses were produced (= output order).
    pub statuses: Vec<u16>,
    /// The method of the request each final response answers (`HEAD` responses have no body).
    pub methods: Vec<Method>,
}

impl Recorder {
    /// A recorder over a new service of `master`'s main listener.
    pub fn new(master: &Arc<Master>) -> Self {
        Self {
            svc: Service::new(master.clone(), Listener::Main, master.register_worker()),
            statuses: Vec::new(),
            methods: Vec::new(),
        }
    }
}

impl Handler for Recorder {
    type Request = ApiRequest;

    fn route(&mut self, head: &RequestHead) -> ApiRequest {
        self.svc.route(head)
    }
    fn on_head(&mut self, now: Now, head: &RequestHead, req: &mut ApiRequest) -> HeadDecision {
        self.svc.on_head(now, head, req)
    }
    fn on_body(&mut self, now: Now, req: &mut ApiRequest, chunk: &[u8]) -> Option<Response> {
        self.svc.on_body(now, req, chunk)
    }
    fn on_request(&mut self, now: Now, head: &RequestHead, req: &mut ApiRequest, body: &[u8]) -> Response {
        self.svc.on_request(now, head, req, body)
    }
    fn on_error(&mut self, req: Option<&ApiRequest>, error: HttpError) -> Response {
        self.svc.on_error(req, error)
    }
    fn on_response_sent(&mut self, req: Option<&ApiRequest>, method: Method, status: u16, duration: Duration) {
        self.statuses.push(status);
        self.methods.push(method);
        self.svc.on_response_sent(req, method, status, duration);
    }
    fn shutting_down(&self) -> bool {
        self.svc.shutting_down()
    }
}

/// Writes everything the connection has to send into `out` (an always-ready socket).
pub fn drain(conn: &mut Connection<ApiRequest>, h: &mut Recorder, now: Now, out: &mut Vec<u8>) {
    // Bounded: a streamed body ends, and every call consumes what it was given.
    while let Some(bytes) = conn.poll_transmit() {
        assert!(!bytes.is_empty(), "poll_transmit returned an empty slice");
        out.extend_from_slice(bytes);
        let n = bytes.len();
        conn.consume(now, n, h);
    }
}

/// The result of one connection's life.
pub struct Exchange {
    /// Every byte written to the client.
    pub output: Vec<u8>,
    /// Final statuses, in order.
    pub statuses: Vec<u16>,
    /// Methods of the requests answered, in order.
    pub methods: Vec<Method>,
}

/// Runs one connection over `master`: feeds `pieces` in order at time 0 (draining output after
/// each), then, if `timeouts`, lets the header-read and idle deadlines pass, then half-closes.
/// Checks the codec's driving contract along the way.
pub fn exchange(master: &Arc<Master>, pieces: &[&[u8]], timeouts: bool) -> Exchange {
    let mut h = Recorder::new(master);
    let now = at(Duration::ZERO);
    let mut conn = h.svc.new_connection(now);
    let mut out = Vec::new();
    drain(&mut conn, &mut h, now, &mut out);
    for piece in pieces {
        conn.handle_input(now, piece, &mut h);
        drain(&mut conn, &mut h, now, &mut out);
    }
    if timeouts {
        // Time only moves forward; each deadline is honoured at its instant.
        let mut steps = 0;
        while let Some(deadline) = conn.poll_timeout() {
            steps += 1;
            // A stalled streamed body is polled every 50 ms until its 10 s timeout.
            assert!(steps < 10_000, "poll_timeout keeps returning deadlines");
            let off = deadline.saturating_duration_since(base());
            let t = at(off);
            master.handle_timeout(t);
            conn.handle_timeout(t, &mut h);
            drain(&mut conn, &mut h, t, &mut out);
            if conn.is_closed() {
                break;
            }
            assert!(conn.poll_timeout() != Some(deadline), "a due deadline did not move");
        }
    }
    let end = at(Duration::from_secs(3600));
    conn.handle_eof(end, &mut h);
    drain(&mut conn, &mut h, end, &mut out);
    assert!(conn.is_closed(), "a connection with no input left and no output pending must be closed after EOF");
    assert!(conn.poll_transmit().is_none());
    drop(conn);
    assert_eq!(master.connections_open.load(Ordering::Relaxed), 0, "connection gauge leaked");
    Exchange { output: out, statuses: h.statuses, methods: h.methods }
}

/// Checks an exchange: only [`ALLOWED_STATUSES`], and the output is exactly the sequence of
/// responses reported to the handler, each well framed (SPEC §2.6): status line, `Server`,
/// `Date`, `Content-Length` matching the body or a well-formed chunked body (none for HEAD,
/// 204), interim `100 Continue` responses allowed in between; after a `Connection: close`
/// response nothing follows.
pub fn check_exchange(x: &Exchange) {
    for s in &x.statuses {
        assert!(ALLOWED_STATUSES.contains(s), "unexpected status {s}");
    }
    let out = &x.output[..];
    let show = || String::from_utf8_lossy(out).into_owned();
    let mut pos = 0;
    let mut i = 0;
    while pos < out.len() {
        if out[pos..].starts_with(b"HTTP/1.1 100 Continue\r\n") {
            // Interim response: `Server` and `Date`, no framing headers, no body.
            let len = out[pos..].windows(4).position(|w| w == b"\r\n\r\n").expect("interim head ends") + 4;
            let head = std::str::from_utf8(&out[pos..pos + len]).expect("interim head is UTF-8");
            assert!(head.contains("\r\nServer: mc-master\r\n") && head.contains("\r\nDate: "), "{head:?}");
            assert!(!head.to_ascii_lowercase().contains("content-"), "{head:?}");
            pos += len;
            continue;
        }
        assert!(i < x.statuses.len(), "more responses written than produced: {}", show());
        let head_len = out[pos..].windows(4).position(|w| w == b"\r\n\r\n").expect("response head ends") + 4;
        let head = std::str::from_utf8(&out[pos..pos + head_len]).expect("response head is UTF-8");
        let mut lines = head.trim_end().split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let want = format!("HTTP/1.1 {} ", x.statuses[i]);
        assert!(status_line.starts_with(&want), "status line {status_line:?}, expected {want:?}");
        let headers: Vec<(String, &str)> = lines
            .map(|l| l.split_once(": ").unwrap_or_else(|| panic!("header line {l:?}")))
            .map(|(n, v)| (n.to_ascii_lowercase(), v))
            .collect();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(get("server"), Some("mc-master"));
        assert!(get("date").is_some_and(|d| d.ends_with(" GMT")), "Date missing");
        pos += head_len;
        let status = x.statuses[i];
        let no_body = x.methods[i] == Method::Head || status == 204;
        let closes = get("connection") == Some("close");
        if status == 204 {
            assert!(get("content-length").is_none() && get("content-type").is_none(), "{head}");
        } else if let Some(len) = get("content-length") {
            assert!(get("transfer-encoding").is_none(), "both framings: {head}");
            let len: usize = len.parse().expect("numeric Content-Length");
            if !no_body {
                assert!(pos + len <= out.len(), "body shorter than its Content-Length: {}", show());
                pos += len;
            }
        } else if get("transfer-encoding") == Some("chunked") {
            if !no_body {
                loop {
                    let line = out[pos..].windows(2).position(|w| w == b"\r\n").expect("chunk size line");
                    let size =
                        std::str::from_utf8(&out[pos..pos + line]).ok().and_then(|t| usize::from_str_radix(t, 16).ok());
                    let size = size.expect("hex chunk size");
                    pos += line + 2;
                    assert_eq!(&out[pos + size..pos + size + 2], b"\r\n", "chunk not followed by CRLF");
                    pos += size + 2;
                    if size == 0 {
                        break;
                    }
                }
            }
        } else {
            // Close-delimited (a streamed body to an HTTP/1.0 client): runs to the end.
            assert!(closes, "a body without framing must close: {head}");
            if !no_body {
                pos = out.len();
            }
        }
        i += 1;
        if closes {
            assert_eq!(pos, out.len(), "bytes after a closing response: {}", show());
        }
    }
    assert_eq!(i, x.statuses.len(), "responses produced but not written: {}", show());
}

/// Unmounts every segment with no grace and checks that nothing is left behind (no segment,
/// no key, no used byte). Call after every connection and read is gone.
pub fn wind_down(master: &Arc<Master>, now: Now) {
    let store = master.store();
    let ids: Vec<_> = store.segments().iter().map(|s| s.id).collect();
    store.unmount(now.mono, mc_core::store::UnmountFamily::Anonymous, &ids, Duration::ZERO);
    store.unmount(now.mono, mc_core::store::UnmountFamily::Shm, &ids, Duration::ZERO);
    master.handle_timeout(now);
    assert!(store.segments().is_empty(), "segments left after unmounting everything: {:?}", store.segments());
    let g = store.gauges();
    assert_eq!((g.key_count, g.allocated_bytes, g.total_capacity_bytes), (0, 0, 0), "{g:?}");
}

/// `text` with the digits of every memory address replaced by `#`: the values of
/// `"base_address":"0x…"` (`/get_segments_detail`) and `"buffer_address_":…` (replica
/// descriptors). Segment memory is heap memory here, and two masters' segments need not
/// land at the same address (glibc serves a 1 MiB allocation from `mmap` or from the heap,
/// depending on what was freed before), so outputs of different masters are compared
/// with addresses masked.
pub fn mask_addresses(text: &str) -> String {
    const MARKERS: [&str; 2] = ["\"base_address\":\"0x", "\"buffer_address_\":"];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = MARKERS.iter().filter_map(|m| rest.find(m).map(|i| (i, m.len()))).min();
        let Some((i, n)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i + n]);
        rest = &rest[i + n..];
        let digits = rest.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(rest.len());
        if digits > 0 {
            out.push('#');
        }
        rest = &rest[digits..];
    }
}

/// The largest single allocation (bytes) since it was last reset (stored 0): every fuzz
/// target runs on [`Counting`], so a target can check that no buffer is sized by a length
/// field of its input.
pub static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, recording the largest allocation in [`LARGEST`].
pub struct Counting;

// SAFETY: forwards to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LARGEST.fetch_max(new, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A split-fuzzing input: its first byte `k` (mod 16), then `k` little-endian u16 cut points,
/// then the bytes to feed. Returns the bytes and the cut offsets (each taken modulo
/// `len + 1`, with `extra` added), sorted and de-duplicated; `None` when the input is too
/// short for its cut points.
pub fn split_spec(data: &[u8], extra: &[usize]) -> Option<(Vec<u8>, Vec<usize>)> {
    let (&k, rest) = data.split_first()?;
    let k = usize::from(k % 16);
    if rest.len() < 2 * k {
        return None;
    }
    let (offsets, input) = rest.split_at(2 * k);
    let len = input.len();
    let mut cuts: Vec<usize> = offsets
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (len + 1))
        .chain(extra.iter().map(|&e| e.min(len)))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    Some((input.to_vec(), cuts))
}

/// `input` cut at the sorted offsets `cuts` into consecutive pieces (together: `input`).
pub fn pieces<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut prev = 0;
    for &c in cuts.iter().chain([input.len()].iter()) {
        out.push(&input[prev..c]);
        prev = c;
    }
    out
}
