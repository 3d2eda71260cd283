//! Router, endpoint handlers, metrics and the process-wide [`Master`] (SPEC §3–§6, §9).
//!
//! [`Master`] is created once per process and shared (`Arc`) by every worker thread.
//! Each worker creates one [`Service`] per listener kind it serves; a `Service` is the
//! [`Handler`](crate::http::Handler) its connections call. Request counters live in a
//! per-worker [`WorkerStats`] (written by one thread, summed at scrape time).

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::http::{Connection, Limits};
use crate::platform::Platform;
use crate::store::{MountError, Store, WriteHandle};
use crate::time::Now;

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

/// Per-worker counters (SPEC §9), summed at scrape time.
pub struct WorkerStats {
    _todo: (),
}

/// The process-wide state: configuration, store, platform, per-worker stats, shutdown flag.
pub struct Master {
    _todo: (),
    /// Open client connections on all listeners.
    pub connections_open: Arc<AtomicI64>,
}

/// The handler of one worker for one listener kind.
pub struct Service {
    _todo: (),
}

impl Master {
    /// Builds the master at `now`. Does not mount anything.
    pub fn new(config: Config, platform: Arc<dyn Platform>, now: Now) -> Arc<Self> {
        let _ = (config, platform, now);
        todo!()
    }
    /// Mounts the start-up segment of `size` bytes (`--global-segment-size`, SPEC §11).
    pub fn mount_startup_segment(&self, now: Now, size: u64) -> Result<(), MountError> {
        let _ = (now, size);
        todo!()
    }
    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        todo!()
    }
    /// The configuration.
    pub fn config(&self) -> &Config {
        todo!()
    }
    /// Codec limits derived from the configuration.
    pub fn limits(&self) -> Limits {
        todo!()
    }
    /// A handler for one worker thread and one listener. Handlers made by the same worker
    /// should share `stats` (see [`Master::register_worker`]).
    pub fn service(self: &Arc<Self>, listener: Listener, stats: Arc<WorkerStats>) -> Service {
        let _ = (listener, stats);
        todo!()
    }
    /// Registers a new worker's counters (summed at scrape time).
    pub fn register_worker(&self) -> Arc<WorkerStats> {
        todo!()
    }
    /// Enters the shutting-down state (SPEC §2.7). Idempotent.
    pub fn begin_shutdown(&self) {
        todo!()
    }
    /// True after [`Master::begin_shutdown`].
    pub fn is_shutting_down(&self) -> bool {
        todo!()
    }
    /// Next process-wide deadline (store deadlines, summary snapshots).
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
    /// Runs process-wide transitions due at `now`. Any worker may call it; calls are idempotent.
    pub fn handle_timeout(&self, now: Now) {
        let _ = now;
        todo!()
    }
}

impl Service {
    /// A new connection accepted at `now` (counted in `http_connections_open`).
    pub fn new_connection(&self, now: Now) -> Connection<StreamState> {
        let _ = now;
        todo!()
    }
}

// Placeholder until the handlers land.
impl crate::http::Handler for Service {
    type Stream = StreamState;
    fn route(&self, _: &crate::http::RequestHead) -> crate::http::Route {
        todo!()
    }
    fn on_head(&mut self, _: Now, _: &crate::http::RequestHead) -> crate::http::HeadDecision<StreamState> {
        todo!()
    }
    fn on_body(
        &mut self,
        _: Now,
        _: &crate::http::RequestHead,
        _: &mut StreamState,
        _: &[u8],
    ) -> Option<crate::http::Response> {
        todo!()
    }
    fn on_stream_end(&mut self, _: Now, _: &crate::http::RequestHead, _: StreamState) -> crate::http::Response {
        todo!()
    }
    fn on_request(&mut self, _: Now, _: &crate::http::RequestHead, _: &[u8]) -> crate::http::Response {
        todo!()
    }
    fn on_response_sent(&mut self, _: crate::http::Route, _: crate::http::Method, _: u16, _: std::time::Duration) {
        todo!()
    }
    fn shutting_down(&self) -> bool {
        todo!()
    }
}
