//! The HTTP application: router, endpoint handlers and metrics pages (SPEC §3–§6, §9) over
//! the process-wide [`Master`].
//!
//! Each worker creates one [`Service`] per listener kind it serves; a `Service` is the
//! [`Handler`] its connections call, and [`HttpAcceptor`] makes the sessions (an
//! [`http::Connection`] with its `Service`) that adapters drive. Request counters live in a
//! per-worker [`WorkerStats`] (written by one thread, summed at scrape time).
//!
//! ```text
//!   RequestHead ──► route (once: router::route_of, path key decoded) ──► ApiRequest
//!        │             └─ 404 / 405 / OPTIONS 204 / bad key: answered from the head
//!        ├─ on_head:    PUT /api/put/{key} → begin_write ──────┐ (stream into segment memory)
//!        └─ on_request: admin::* (§4) | rest::* (§5, §6) ──────┴─► Result<Response, ApiError>
//!                                                                  │
//!                                  error::ApiError::into_response ◄┘ (the one status mapping)
//! ```
//!
//! Layout: `router` (routing table, `Allow` lists), `params` (query strings, path keys, key
//! rules, UUIDs), `json` (strict JSON input, output encoders), `error` (the status mapping),
//! `admin` (§4 endpoints), `rest` (§5–§6 endpoints), `metadata` (the TE metadata server),
//! `metrics` (`/metrics`, `/metrics/summary`, byte formats).

mod admin;
mod cluster;
mod dashboard;
mod error;
mod ha;
mod json;
mod metadata;
mod metrics;
#[cfg(test)]
mod model_tests;
mod params;
mod reply;
mod rest;
mod router;
#[cfg(test)]
mod tests;
mod v1;

use std::borrow::Cow;
use std::io::IoSlice;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::{self, Body, Handler, HeadDecision, HttpError, Method, RequestHead, Response};
use crate::master::Master;
use crate::route::Route;
use crate::session::{Acceptor, ListenerAtShutdown, Session};
use crate::store::WriteHandle;
use crate::time::Now;
use crate::transfer::{Transfer, TransferOp, TransferOutcome};

pub use crate::stats::WorkerStats;
use error::ApiError;
use reply::text_reply;
pub use reply::{CT_JSON, CT_OCTET, CT_TEXT};
pub use router::Listener;

/// Per-request state of a streamed body (`PUT /api/put/{key}`).
pub enum StreamState {
    /// Content-Length framing: the write is in progress in segment memory.
    Write(WriteHandle),
    /// Chunked framing: bytes collected, stored when complete.
    Collect(Vec<u8>),
}

/// The `{key}` path parameter, decoded once at routing.
enum PathKey {
    /// The route has none.
    None,
    /// Valid as written: these bytes of the raw path.
    InPath(Range<usize>),
    /// Valid after percent-decoding.
    Decoded(String),
    /// Invalid (answered from the head).
    Invalid(ApiError),
}

/// One request as routing decided it ([`Handler::Request`] of [`Service`]): the endpoint,
/// its decoded path key, and the state of a streamed body.
pub struct ApiRequest {
    route: Route,
    /// Answered without running an endpoint (404, 405, OPTIONS).
    answer: Option<Response>,
    key: PathKey,
    stream: Option<StreamState>,
}

impl ApiRequest {
    /// The request's route (the `route` label of its response).
    pub fn route(&self) -> Route {
        self.route
    }

    /// The decoded path key (empty when the route has none or it is invalid).
    fn key<'a>(&'a self, head: &'a RequestHead) -> Result<&'a str, ApiError> {
        match &self.key {
            PathKey::InPath(r) => Ok(&head.path[r.clone()]),
            PathKey::Decoded(k) => Ok(k),
            PathKey::Invalid(e) => Err(e.clone()),
            PathKey::None => Ok(""),
        }
    }
}

/// A response owed to the request of a connection, until a data-plane transfer ends.
#[derive(Clone, Debug)]
struct Awaiting {
    token: u64,
    endpoint: String,
    deadline: Instant,
    owed: Owed,
}

/// What the transfer of an [`Awaiting`] is for.
#[derive(Clone, Debug)]
enum Owed {
    /// A GET of a value on another node; `count`: count a failure (not for HEAD).
    Read { len: u64, count: bool },
    /// A put placed on another node ([`crate::store::Store::begin_remote_put`] `put`).
    Write { put: u64, len: u64 },
    /// Store-node mode: a request of `route` carried out on the cluster.
    Cluster { route: Route, local: Box<cluster::Local> },
}

/// The handler of one worker for one listener kind (each connection has its own copy, with
/// its own transfers).
#[derive(Clone)]
pub struct Service {
    master: Arc<Master>,
    listener: Listener,
    stats: Arc<WorkerStats>,
    /// Transfers asked for and not yet handed to the data plane.
    transfers: Vec<Transfer>,
    /// The read a pending response waits for (one at a time: later requests wait).
    awaiting: Option<Awaiting>,
    next_token: u64,
}

impl Service {
    /// A handler for one worker thread and one listener. Handlers made by the same worker
    /// should share `stats` (see [`Master::register_worker`]).
    pub fn new(master: Arc<Master>, listener: Listener, stats: Arc<WorkerStats>) -> Self {
        Self { master, listener, stats, transfers: Vec::new(), awaiting: None, next_token: 0 }
    }

    /// Answers later, once the data plane carried out `op` on `endpoint`.
    fn transfer(&mut self, now: Now, endpoint: String, op: TransferOp, owed: Owed) -> Response {
        self.next_token += 1;
        let token = self.next_token;
        let deadline = now.mono + self.master.config.transfer_timeout;
        self.transfers.push(Transfer { id: token, endpoint: endpoint.clone(), op, deadline });
        self.awaiting = Some(Awaiting { token, endpoint, deadline, owed });
        Response::with_body(200, CT_OCTET, Body::Pending(token))
    }

    /// Answers later: reads `[address, address + len)` of `endpoint` through the data plane.
    fn read_remote(&mut self, now: Now, r: crate::store::RemoteReplica, count: bool) -> Response {
        let op = TransferOp::Read { addr: r.address, len: r.len };
        self.transfer(now, r.endpoint, op, Owed::Read { len: r.len, count })
    }

    /// Answers later: writes `value` to the remote allocation `put` through the data plane.
    fn write_remote(&mut self, now: Now, put: crate::store::RemotePut, value: &[u8]) -> Response {
        let op = TransferOp::Write { addr: put.address, data: bytes::Bytes::copy_from_slice(value) };
        self.transfer(now, put.endpoint, op, Owed::Write { put: put.id, len: value.len() as u64 })
    }

    /// The answer to the pending response `token`, from its transfer's outcome (`None`: its
    /// deadline passed); `None` when it is not the one owed.
    fn remote_answer(&mut self, now: Now, token: u64, outcome: Option<TransferOutcome>) -> Option<Response> {
        use crate::stats::Ctr;
        let a = self.awaiting.take_if(|a| a.token == token)?;
        let failure = |why: Option<String>| match why {
            Some(why) => ApiError::NodeUnreachable(why),
            None => ApiError::NodeTimeout(a.endpoint.clone()),
        };
        match a.owed {
            Owed::Read { len, count } => {
                let e = match outcome {
                    Some(TransferOutcome::Read(bytes)) if bytes.len() as u64 == len => {
                        return Some(Response::new(200, CT_OCTET, bytes));
                    }
                    Some(TransferOutcome::Read(b)) => {
                        failure(Some(format!("{}: {} bytes instead of {len}", a.endpoint, b.len())))
                    }
                    Some(TransferOutcome::Failed(why)) => failure(Some(why)),
                    Some(TransferOutcome::Written | TransferOutcome::Cluster(_)) => {
                        failure(Some(format!("{}: not a read", a.endpoint)))
                    }
                    None => failure(None),
                };
                if count {
                    self.stats.bump(Ctr::GetFail, 1);
                }
                Some(e.into_response(Route::Get))
            }
            Owed::Write { put, len } => {
                let written = matches!(outcome, Some(TransferOutcome::Written));
                let done = self.master.store.finish_remote_put(now.mono, put, written);
                let e = match (outcome, done) {
                    (Some(TransferOutcome::Written), Ok(())) => {
                        self.stats.bump(Ctr::PutEnd, 1);
                        self.stats.observe_value(len);
                        return Some(rest::success());
                    }
                    (Some(TransferOutcome::Written), Err(_)) => ApiError::WriteAborted,
                    (Some(TransferOutcome::Failed(why)), _) => ApiError::NodeWriteFailed(why),
                    (Some(TransferOutcome::Read(_) | TransferOutcome::Cluster(_)), _) => {
                        ApiError::NodeWriteFailed(format!("{}: not a write", a.endpoint))
                    }
                    (None, _) => ApiError::NodeWriteTimeout(a.endpoint),
                };
                self.stats.bump(Ctr::PutStartFail, 1);
                Some(e.into_response(Route::PutJson))
            }
            Owed::Cluster { route, local } => {
                let reply = match outcome {
                    Some(TransferOutcome::Cluster(r)) => Ok(r),
                    Some(other) => {
                        Err(ApiError::MasterUnreachable(format!("{}: unexpected outcome {other:?}", a.endpoint)))
                    }
                    None => Err(ApiError::MasterTimeout(a.endpoint)),
                };
                Some(self.cluster_answer(now, route, *local, reply))
            }
        }
    }

    /// A new connection accepted at `now` (counted in `http_connections_open`).
    ///
    /// With `max_connections` set and that many connections already open, the connection
    /// is refused: it answers `503 {"error":"too many connections"}` with `Connection: close`
    /// at once, reads nothing, and is not counted.
    pub fn new_connection(&self, now: Now) -> http::Connection<ApiRequest> {
        let gauge = &self.master.connections_open;
        let prev = gauge.fetch_add(1, Ordering::AcqRel);
        let max = self.master.config.max_connections;
        if max > 0 && u64::try_from(prev).unwrap_or(0) >= max {
            gauge.fetch_sub(1, Ordering::AcqRel);
            let resp = ApiError::TooManyConnections.into_response(Route::Other);
            self.stats.record_response(Route::Other, Method::Other, 503, Duration::ZERO);
            return http::Connection::rejected(now, self.master.limits, resp);
        }
        http::Connection::with_counted_gauge(now, self.master.limits, Some(gauge.clone()))
    }

    /// Routing, 404, 405 and OPTIONS (SPEC §2.3), and the path key, decoded once.
    fn route_head(&self, head: &RequestHead) -> ApiRequest {
        let answer = |route, answer| ApiRequest { route, answer: Some(answer), key: PathKey::None, stream: None };
        if head.path == "*" {
            return answer(
                Route::Other,
                match head.method {
                    Method::Options => Response::no_content(204).with_header("Allow", router::ALLOW_ALL),
                    _ => ApiError::NotFound.into_response(Route::Other),
                },
            );
        }
        let (mut route, raw) = router::route_of(&head.path, self.listener);
        if route == Route::Other && self.master.ha().is_some() {
            route = ha::route_of(&head.path).unwrap_or(Route::Other);
        }
        if route == Route::Other {
            if let Some(to_ui) = dashboard::root_redirect(head) {
                return answer(route, to_ui);
            }
            return answer(route, ApiError::NotFound.into_response(route));
        }
        if head.method == Method::Options {
            return answer(route, Response::no_content(204).with_header("Allow", router::allow(route)));
        }
        if !router::allowed(route, head.method) {
            return answer(route, ApiError::MethodNotAllowed.into_response(route));
        }
        let key = match route {
            Route::Get | Route::Exist | Route::Remove | Route::PutRaw => {
                // `raw` is a slice of `head.path`.
                let start = raw.as_ptr() as usize - head.path.as_ptr() as usize;
                match path_key(raw) {
                    Ok(Cow::Borrowed(_)) => PathKey::InPath(start..start + raw.len()),
                    Ok(Cow::Owned(k)) => PathKey::Decoded(k),
                    Err(e) => PathKey::Invalid(e),
                }
            }
            _ => PathKey::None,
        };
        ApiRequest { route, answer: None, key, stream: None }
    }

    /// Runs a complete request routed to an endpoint.
    fn dispatch(&mut self, now: Now, head: &RequestHead, req: &mut ApiRequest, body: &[u8]) -> Response {
        let route = req.route;
        if self.node_mode() {
            if let Some(result) = self.dispatch_cluster(now, head, req, body) {
                return result.unwrap_or_else(|e| e.into_response(route));
            }
        }
        let result = match route {
            Route::Metrics => Ok(text_reply(200, metrics::metrics_text(&self.master, now))),
            Route::MetricsSummary => Ok(text_reply(200, metrics::summary_text(&self.master, now))),
            Route::Health => Ok(self.health(now, head)),
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
            Route::PutRaw => match req.stream.take() {
                Some(StreamState::Write(w)) => self.complete_write(now, w),
                Some(StreamState::Collect(buf)) => req.key(head).and_then(|k| self.store_value(now, k, &buf)),
                None => req.key(head).and_then(|k| self.store_value(now, k, body)),
            },
            Route::Get => req.key(head).and_then(|k| self.get(now, head, k)),
            Route::Exist => req.key(head).and_then(|k| self.exist(head, k)),
            Route::Remove => req.key(head).and_then(|k| self.remove(now, k)),
            Route::RemoveAll => Ok(self.remove_all(now)),
            Route::Metadata => Ok(self.metadata(head, body)),
            Route::ClusterSummary => Ok(dashboard::cluster_summary(&self.master, now)),
            Route::Ui => Ok(dashboard::page()),
            Route::Role => Ok(self.role(now.mono)),
            Route::HaStatus => Ok(self.ha_status()),
            Route::Leader => Ok(self.leader()),
            Route::SegmentsStatus => self.v1_segment_status(head),
            Route::TenantQuotas => self.v1_tenant_quotas(head, body),
            Route::RemoveAllV1 => Ok(self.v1_remove_all(now, head)),
            Route::KvEventsStatus => Ok(self.kv_events_status()),
            Route::DrainJobs => self.v1_drain_create(now, body),
            Route::DrainJobsQuery => self.v1_drain_query(head),
            Route::DrainJobsCancel => self.v1_drain_cancel(now, head),
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
    type Request = ApiRequest;

    fn route(&mut self, head: &RequestHead) -> ApiRequest {
        self.route_head(head)
    }

    fn on_head(&mut self, now: Now, head: &RequestHead, req: &mut ApiRequest) -> HeadDecision {
        if let Some(resp) = req.answer.take() {
            // OPTIONS is answered after its body (if any) was read.
            if resp.status == 204 {
                req.answer = Some(resp);
                return HeadDecision::Buffer;
            }
            return HeadDecision::Respond(resp);
        }
        // A standby (or a leader whose lease may have run out) serves only the admin plane.
        if !ha::served_on_standby(req.route) && !self.master.serves(now.mono) {
            return HeadDecision::Respond(self.not_serving());
        }
        // An invalid path key is decided from the head (SPEC §2.2).
        if let PathKey::Invalid(e) = &req.key {
            return HeadDecision::Respond(e.clone().into_response(req.route));
        }
        match req.route {
            Route::PutRaw => self.put_raw_head(now, head, req),
            _ => HeadDecision::Buffer,
        }
    }

    fn on_body(&mut self, _now: Now, req: &mut ApiRequest, chunk: &[u8]) -> Option<Response> {
        match req.stream.as_mut()? {
            StreamState::Write(w) => w.write(chunk).err().map(|_| ApiError::WriteAborted.into_response(Route::PutRaw)),
            StreamState::Collect(buf) => {
                buf.extend_from_slice(chunk);
                None
            }
        }
    }

    fn on_request(&mut self, now: Now, head: &RequestHead, req: &mut ApiRequest, body: &[u8]) -> Response {
        match req.answer.take() {
            Some(resp) => resp,
            None => self.dispatch(now, head, req, body),
        }
    }

    fn on_error(&mut self, req: Option<&ApiRequest>, error: HttpError) -> Response {
        ApiError::Http(error).into_response(req.map_or(Route::Other, |r| r.route))
    }

    fn on_response_sent(&mut self, req: Option<&ApiRequest>, method: Method, status: u16, duration: Duration) {
        self.stats.record_response(req.map_or(Route::Other, |r| r.route), method, status, duration);
    }

    fn shutting_down(&self) -> bool {
        self.master.is_shutting_down()
    }
}

/// One HTTP connection with its handler: the [`Session`] adapters drive.
pub struct HttpSession {
    conn: http::Connection<ApiRequest>,
    svc: Service,
}

impl HttpSession {
    /// Answers the pending response `token` (an outcome, or `None` for its deadline).
    fn answer(&mut self, now: Now, token: u64, outcome: Option<TransferOutcome>) {
        if let Some(resp) = self.svc.remote_answer(now, token, outcome) {
            self.conn.resolve(now, token, resp, &mut self.svc);
        }
    }
}

impl Session for HttpSession {
    fn handle_input(&mut self, now: Now, data: &[u8]) {
        self.conn.handle_input(now, data, &mut self.svc);
    }
    fn handle_eof(&mut self, now: Now) {
        self.conn.handle_eof(now, &mut self.svc);
    }
    fn handle_timeout(&mut self, now: Now) {
        if let Some(a) = self.svc.awaiting.as_ref().filter(|a| a.deadline <= now.mono) {
            let token = a.token;
            self.answer(now, token, None);
        }
        self.conn.handle_timeout(now, &mut self.svc);
    }
    fn handle_shutdown(&mut self, now: Now) {
        self.conn.handle_shutdown(now, &mut self.svc);
    }
    fn poll_transmit<'a>(&'a self, bufs: &mut [IoSlice<'a>]) -> usize {
        self.conn.poll_transmit_vectored(bufs)
    }
    fn consume(&mut self, now: Now, n: usize) {
        self.conn.consume(now, n, &mut self.svc);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        let transfer = self.svc.awaiting.as_ref().map(|a| a.deadline);
        [self.conn.poll_timeout(), transfer].into_iter().flatten().min()
    }
    fn wants_read(&self) -> bool {
        self.conn.wants_read()
    }
    fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }
    fn poll_transfer(&mut self) -> Option<Transfer> {
        (!self.svc.transfers.is_empty()).then(|| self.svc.transfers.remove(0))
    }
    fn handle_transfer(&mut self, now: Now, id: u64, outcome: TransferOutcome) {
        self.answer(now, id, Some(outcome));
    }
}

/// Makes the HTTP sessions of one listener (main or admin) on one worker.
pub struct HttpAcceptor {
    svc: Service,
}

impl HttpAcceptor {
    /// The acceptor of `listener` for the worker whose counters are `stats`.
    pub fn new(master: Arc<Master>, listener: Listener, stats: Arc<WorkerStats>) -> Self {
        Self { svc: Service::new(master, listener, stats) }
    }
}

impl Acceptor for HttpAcceptor {
    fn accept(&mut self, now: Now) -> Box<dyn Session> {
        Box::new(HttpSession { conn: self.svc.new_connection(now), svc: self.svc.clone() })
    }
    fn on_shutdown(&self) -> ListenerAtShutdown {
        ListenerAtShutdown::KeepOpen
    }
}
