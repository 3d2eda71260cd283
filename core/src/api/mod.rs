//! Router, endpoint handlers, metrics and the process-wide [`Master`] (SPEC §3–§6, §9).
//!
//! [`Master`] is created once per process and shared (`Arc`) by every worker thread.
//! Each worker creates one [`Service`] per listener kind it serves; a `Service` is the
//! [`Handler`] its connections call. Request counters live in a
//! per-worker [`WorkerStats`] (written by one thread, summed at scrape time).
//!
//! ```text
//!   RequestHead ──► router::route_of (exact raw path) ──► 404 / 405 / OPTIONS 204
//!        │                                                    │
//!        ├─ on_head:    PUT /api/put/{key} → begin_write ─────┤ (stream into segment memory)
//!        └─ on_request: admin::* (§4) | rest::* (§5, §6) ─────┴─► Result<Response, ApiError>
//!                                                                  │
//!                                  error::ApiError::into_response ◄┘ (the one status mapping)
//! ```
//!
//! Layout: `router` (routing table, `Allow` lists), `params` (query strings, path keys, key
//! rules, UUIDs), `json` (strict JSON input, output encoders), `error` (the status mapping),
//! `admin` (§4 endpoints), `rest` (§5–§6 endpoints), `stats` (per-worker counters),
//! `metrics` (`/metrics`, `/metrics/summary`, byte formats).

mod admin;
mod error;
mod json;
mod metadata;
mod metrics;
#[cfg(test)]
mod model_tests;
mod params;
mod rest;
mod router;
mod stats;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::http::{Connection, Handler, HeadDecision, Limits, Method, RequestHead, Response, Route};
use crate::platform::Platform;
use crate::store::{MountError, MountKind, Store, WriteHandle};
use crate::time::Now;

use error::ApiError;
pub(crate) use stats::Ctr;
pub use stats::WorkerStats;
use stats::{Snapshot, Totals};

/// Largest request head (SPEC §2.4).
const MAX_HEAD: usize = 64 * 1024;
/// Interval of the `/metrics/summary` snapshots (SPEC §4.2).
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(10);

/// Which listener a connection arrived on (SPEC §1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The main listener: every endpoint.
    Main,
    /// `--admin-port`: only the §4 endpoints; `/api/*` is 404.
    Admin,
}

/// Per-request state of a streamed body (`PUT /api/put/{key}`).
pub enum StreamState {
    /// Content-Length framing: the write is in progress in segment memory.
    Write(WriteHandle),
    /// Chunked framing: bytes collected, stored when complete.
    Collect(Vec<u8>),
}

/// The process-wide state: configuration, store, platform, per-worker stats, shutdown flag.
pub struct Master {
    config: Config,
    platform: Arc<dyn Platform>,
    store: Arc<Store>,
    limits: Limits,
    /// Every registered worker's counters, plus `own` (summed at scrape time).
    workers: Mutex<Vec<Arc<WorkerStats>>>,
    /// Counters moved outside any worker (the start-up mount).
    own: Arc<WorkerStats>,
    shutting_down: AtomicBool,
    /// Open client connections on all listeners.
    pub connections_open: Arc<AtomicI64>,
    /// Monotonic start time (origin of the summary snapshots).
    start: Instant,
    /// The latest `/metrics/summary` snapshot.
    snapshot: Mutex<Snapshot>,
    /// Offset from `start`, in nanoseconds, of the next snapshot.
    next_snapshot_ns: AtomicU64,
}

/// The handler of one worker for one listener kind.
pub struct Service {
    master: Arc<Master>,
    listener: Listener,
    stats: Arc<WorkerStats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Master {
    /// Builds the master at `now`. Does not mount anything.
    pub fn new(config: Config, platform: Arc<dyn Platform>, now: Now) -> Arc<Self> {
        let store = Arc::new(Store::new(&config, platform.clone(), now.mono));
        let limits = Limits {
            max_head: MAX_HEAD,
            max_body: config.max_body_size,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
        };
        let own = Arc::new(WorkerStats::new());
        Arc::new(Self {
            config,
            platform,
            store,
            limits,
            workers: Mutex::new(vec![own.clone()]),
            own,
            shutting_down: AtomicBool::new(false),
            connections_open: Arc::new(AtomicI64::new(0)),
            start: now.mono,
            snapshot: Mutex::new(Snapshot::of(&Totals::default(), now.mono)),
            next_snapshot_ns: AtomicU64::new(SNAPSHOT_INTERVAL.as_nanos() as u64),
        })
    }

    /// Mounts the start-up segment of `size` bytes (`--global-segment-size`, SPEC §11).
    pub fn mount_startup_segment(&self, now: Now, size: u64) -> Result<(), MountError> {
        let out = self.store.mount_anonymous(now.mono, MountKind::Startup, size, self.config.protocol, "")?;
        self.own.bump(Ctr::MountReq, out.segment_ids.len() as u64);
        // The start-up mount is part of "start": fold it into the initial summary snapshot so
        // the first window's Mount rate counts only requests.
        let mut snap = lock(&self.snapshot);
        if snap.at == self.start {
            *snap = Snapshot::of(&self.totals(), self.start);
        }
        Ok(())
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Codec limits derived from the configuration.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A handler for one worker thread and one listener. Handlers made by the same worker
    /// should share `stats` (see [`Master::register_worker`]).
    pub fn service(self: &Arc<Self>, listener: Listener, stats: Arc<WorkerStats>) -> Service {
        Service { master: self.clone(), listener, stats }
    }

    /// Registers a new worker's counters (summed at scrape time).
    pub fn register_worker(&self) -> Arc<WorkerStats> {
        let stats = Arc::new(WorkerStats::new());
        lock(&self.workers).push(stats.clone());
        stats
    }

    /// Enters the shutting-down state (SPEC §2.7). Idempotent.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// True after [`Master::begin_shutdown`].
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Next process-wide deadline (store deadlines, summary snapshots).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let snap = self.start + Duration::from_nanos(self.next_snapshot_ns.load(Ordering::Acquire));
        Some(self.store.poll_timeout().map_or(snap, |d| d.min(snap)))
    }

    /// Runs process-wide transitions due at `now`. Any worker may call it; calls are idempotent.
    pub fn handle_timeout(&self, now: Now) {
        self.store.handle_timeout(now.mono);
        self.snapshot_if_due(now);
    }

    /// Takes the `/metrics/summary` snapshot of the latest multiple of the interval if it is
    /// due at `now` (SPEC §4.2). Called by timers and before a summary is rendered, so a
    /// summary served just after a multiple of 10 s (before the timer fired) never reports
    /// a window of 10 s or more.
    fn snapshot_if_due(&self, now: Now) {
        let elapsed = now.mono.saturating_duration_since(self.start);
        if (elapsed.as_nanos() as u64) < self.next_snapshot_ns.load(Ordering::Acquire) {
            return;
        }
        let mut snap = lock(&self.snapshot);
        let next = self.next_snapshot_ns.load(Ordering::Acquire);
        if (elapsed.as_nanos() as u64) < next {
            return; // another worker took it meanwhile
        }
        // The snapshot is dated at the latest multiple of the interval.
        let interval = SNAPSHOT_INTERVAL.as_nanos() as u64;
        let k = elapsed.as_nanos() as u64 / interval;
        *snap = Snapshot::of(&self.totals(), self.start + Duration::from_nanos(k * interval));
        self.next_snapshot_ns.store((k + 1) * interval, Ordering::Release);
    }

    /// The sum of every worker's counters.
    fn totals(&self) -> Totals {
        Totals::sum(&lock(&self.workers))
    }

    /// The `/metrics` body.
    fn metrics_text(&self) -> Vec<u8> {
        let gauges = self.store.gauges();
        let store = self.store.counters();
        let totals = self.totals();
        let mut out = Vec::new();
        metrics::render_metrics(
            &mut out,
            &metrics::Scrape {
                gauges: &gauges,
                store: &store,
                totals: &totals,
                connections_open: self.connections_open.load(Ordering::Relaxed).max(0) as u64,
                process: self.platform.process_sample(),
            },
        );
        out
    }

    /// The `/metrics/summary` body at `now`.
    fn summary_text(&self, now: Now) -> String {
        self.snapshot_if_due(now);
        let base = lock(&self.snapshot).clone();
        let gauges = self.store.gauges();
        let store = self.store.counters();
        let cur = Snapshot::of(&self.totals(), now.mono);
        let window = now.mono.saturating_duration_since(base.at).as_secs_f64();
        metrics::render_summary(&gauges, &store, &cur, &base, window)
    }
}

/// What the routing step decided.
enum Routed<'p> {
    /// Run the endpoint of `route` with the raw `{key}` segment.
    Endpoint(Route, &'p str),
    /// Answer without running an endpoint (404, 405, OPTIONS).
    Answer(Response),
}

impl Service {
    /// A new connection accepted at `now` (counted in `http_connections_open`).
    ///
    /// With `max_connections` set and that many connections already open, the connection
    /// is refused: it answers `503 {"error":"too many connections"}` with `Connection: close`
    /// at once, reads nothing, and is not counted.
    pub fn new_connection(&self, now: Now) -> Connection<StreamState> {
        let gauge = &self.master.connections_open;
        let prev = gauge.fetch_add(1, Ordering::AcqRel);
        let max = self.master.config.max_connections;
        if max > 0 && u64::try_from(prev).unwrap_or(0) >= max {
            gauge.fetch_sub(1, Ordering::AcqRel);
            let resp = Response::error(Route::Other, 503, "too many connections");
            self.stats.record_response(Route::Other, Method::Other, 503, Duration::ZERO);
            return Connection::rejected(now, self.master.limits, resp);
        }
        Connection::with_counted_gauge(now, self.master.limits, Some(gauge.clone()))
    }

    /// Routing, 404, 405 and OPTIONS (SPEC §2.3).
    fn route_request<'p>(&self, head: &'p RequestHead) -> Routed<'p> {
        if head.path == "*" {
            return Routed::Answer(match head.method {
                Method::Options => Response::no_content(Route::Other, 204).with_header("Allow", router::ALLOW_ALL),
                _ => ApiError::NotFound.into_response(Route::Other),
            });
        }
        let (route, key) = router::route_of(&head.path, self.listener);
        if route == Route::Other {
            return Routed::Answer(ApiError::NotFound.into_response(route));
        }
        if head.method == Method::Options {
            return Routed::Answer(Response::no_content(route, 204).with_header("Allow", router::allow(route)));
        }
        if !router::allowed(route, head.method) {
            return Routed::Answer(ApiError::MethodNotAllowed.into_response(route));
        }
        Routed::Endpoint(route, key)
    }

    /// Runs a complete buffered request.
    fn dispatch(&mut self, now: Now, head: &RequestHead, body: &[u8]) -> Response {
        let (route, key) = match self.route_request(head) {
            Routed::Endpoint(r, k) => (r, k),
            Routed::Answer(resp) => return resp,
        };
        let result = match route {
            Route::Metrics => Ok(Response::text(route, 200, self.master.metrics_text())),
            Route::MetricsSummary => Ok(Response::text(route, 200, self.master.summary_text(now))),
            Route::Health => Ok(self.health(head)),
            Route::QueryKey => self.query_key(head),
            Route::BatchQueryKeys if head.method == Method::Post => self.batch_query_post(body),
            Route::BatchQueryKeys => self.batch_query_get(head),
            Route::GetAllKeys => self.get_all_keys(head),
            Route::GetAllSegments => Ok(self.get_all_segments()),
            Route::QuerySegment => self.query_segment(head),
            Route::GetSegmentsDetail => Ok(self.get_segments_detail()),
            Route::MountShm => self.mount_shm(now, body),
            Route::UnmountShm => self.unmount(now, body, crate::store::UnmountFamily::Shm),
            Route::Mount => self.mount(now, body),
            Route::Unmount => self.unmount(now, body, crate::store::UnmountFamily::Anonymous),
            Route::PutJson => self.put_json(now, body),
            Route::PutRaw => path_key(key).and_then(|k| self.store_value(now, &k, body)),
            Route::Get => self.get(now, head, key),
            Route::Exist => self.exist(head, key),
            Route::Remove => self.remove(now, key),
            Route::RemoveAll => Ok(self.remove_all(now)),
            Route::Metadata => Ok(self.metadata(head, body)),
            Route::Other => Err(ApiError::NotFound),
        };
        result.unwrap_or_else(|e| e.into_response(route))
    }
}

/// Decodes and validates a `{key}` path parameter (SPEC §1.4).
fn path_key(raw: &str) -> Result<Cow<'_, str>, ApiError> {
    match params::percent_decode(raw, false) {
        Cow::Borrowed(b) => Ok(Cow::Borrowed(params::validate_key(b)?)),
        Cow::Owned(v) => {
            params::validate_key(&v)?;
            String::from_utf8(v).map(Cow::Owned).map_err(|_| params::KeyError::NotUtf8.into())
        }
    }
}

impl From<params::KeyError> for ApiError {
    fn from(e: params::KeyError) -> Self {
        ApiError::invalid(e.message())
    }
}

impl Handler for Service {
    type Stream = StreamState;

    fn route(&self, head: &RequestHead) -> Route {
        router::route_of(&head.path, self.listener).0
    }

    fn on_head(&mut self, now: Now, head: &RequestHead) -> HeadDecision<StreamState> {
        let (route, key) = match self.route_request(head) {
            Routed::Endpoint(r, k) => (r, k),
            // OPTIONS is answered after its body (if any) was read.
            Routed::Answer(resp) if resp.status == 204 => return HeadDecision::Buffer,
            Routed::Answer(resp) => return HeadDecision::Respond(resp),
        };
        match route {
            // An invalid path key is decided from the head (SPEC §2.2).
            Route::Get | Route::Exist | Route::Remove => match path_key(key) {
                Ok(_) => HeadDecision::Buffer,
                Err(e) => HeadDecision::Respond(e.into_response(route)),
            },
            Route::PutRaw => self.put_raw_head(now, head, key),
            _ => HeadDecision::Buffer,
        }
    }

    fn on_body(&mut self, _now: Now, _head: &RequestHead, stream: &mut StreamState, chunk: &[u8]) -> Option<Response> {
        match stream {
            StreamState::Write(w) => w.write(chunk).err().map(|_| ApiError::WriteAborted.into_response(Route::PutRaw)),
            StreamState::Collect(buf) => {
                buf.extend_from_slice(chunk);
                None
            }
        }
    }

    fn on_stream_end(&mut self, now: Now, head: &RequestHead, stream: StreamState) -> Response {
        let result = match stream {
            StreamState::Write(w) => self.complete_write(now, w),
            StreamState::Collect(buf) => {
                let (_, key) = router::route_of(&head.path, self.listener);
                path_key(key).and_then(|k| self.store_value(now, &k, &buf))
            }
        };
        result.unwrap_or_else(|e| e.into_response(Route::PutRaw))
    }

    fn on_request(&mut self, now: Now, head: &RequestHead, body: &[u8]) -> Response {
        self.dispatch(now, head, body)
    }

    fn on_response_sent(&mut self, route: Route, method: Method, status: u16, duration: Duration) {
        self.stats.record_response(route, method, status, duration);
    }

    fn shutting_down(&self) -> bool {
        self.master.is_shutting_down()
    }
}
