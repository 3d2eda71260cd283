//! Values exchanged between the codec and the handler.

use std::time::Duration;

use crate::time::Now;

/// Request method (SPEC §2.3). Anything but the six known tokens is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
    /// Any other token (also: lower-case `get`).
    Other,
}

impl Method {
    /// All methods, in metrics index order.
    pub const ALL: [Method; 7] =
        [Method::Get, Method::Head, Method::Post, Method::Put, Method::Delete, Method::Options, Method::Other];

    /// Parses a method token (case-sensitive).
    pub fn from_token(tok: &str) -> Method {
        match tok {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }

    /// The label used in metrics (`other` for unknown methods).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other => "other",
        }
    }

    /// Index into [`Method::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Protocol version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

/// Route templates, used for dispatch and as the `route` label of the `http_*` metrics (SPEC §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `/metrics`
    Metrics,
    /// `/metrics/summary`
    MetricsSummary,
    /// `/health`
    Health,
    /// `/query_key`
    QueryKey,
    /// `/batch_query_keys`
    BatchQueryKeys,
    /// `/get_all_keys`
    GetAllKeys,
    /// `/get_all_segments`
    GetAllSegments,
    /// `/query_segment`
    QuerySegment,
    /// `/get_segments_detail`
    GetSegmentsDetail,
    /// `/api/mount_shm`
    MountShm,
    /// `/api/unmount_shm`
    UnmountShm,
    /// `/api/mount`
    Mount,
    /// `/api/unmount`
    Unmount,
    /// `/api/put`
    PutJson,
    /// `/api/put/{key}`
    PutRaw,
    /// `/api/get/{key}`
    Get,
    /// `/api/exist/{key}`
    Exist,
    /// `/api/remove/{key}`
    Remove,
    /// `/api/remove_all`
    RemoveAll,
    /// `/metadata` (the transfer engine's HTTP metadata server, upstream-behavior §7)
    Metadata,
    /// Unknown path, `OPTIONS *`, or a request rejected before routing (400, 408, 431, 505).
    Other,
}

impl Route {
    /// All routes, in metrics index order.
    pub const ALL: [Route; 21] = [
        Route::Metrics,
        Route::MetricsSummary,
        Route::Health,
        Route::QueryKey,
        Route::BatchQueryKeys,
        Route::GetAllKeys,
        Route::GetAllSegments,
        Route::QuerySegment,
        Route::GetSegmentsDetail,
        Route::MountShm,
        Route::UnmountShm,
        Route::Mount,
        Route::Unmount,
        Route::PutJson,
        Route::PutRaw,
        Route::Get,
        Route::Exist,
        Route::Remove,
        Route::RemoveAll,
        Route::Metadata,
        Route::Other,
    ];

    /// The route template, as printed in the `route` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Metrics => "/metrics",
            Route::MetricsSummary => "/metrics/summary",
            Route::Health => "/health",
            Route::QueryKey => "/query_key",
            Route::BatchQueryKeys => "/batch_query_keys",
            Route::GetAllKeys => "/get_all_keys",
            Route::GetAllSegments => "/get_all_segments",
            Route::QuerySegment => "/query_segment",
            Route::GetSegmentsDetail => "/get_segments_detail",
            Route::MountShm => "/api/mount_shm",
            Route::UnmountShm => "/api/unmount_shm",
            Route::Mount => "/api/mount",
            Route::Unmount => "/api/unmount",
            Route::PutJson => "/api/put",
            Route::PutRaw => "/api/put/{key}",
            Route::Get => "/api/get/{key}",
            Route::Exist => "/api/exist/{key}",
            Route::Remove => "/api/remove/{key}",
            Route::RemoveAll => "/api/remove_all",
            Route::Metadata => "/metadata",
            Route::Other => "other",
        }
    }

    /// Index into [`Route::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A parsed request head (request line + header fields).
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// Raw (not percent-decoded) path. For the absolute form, the path part; `*` for `OPTIONS *`.
    pub path: String,
    /// Raw query (after the first `?`), if any.
    pub query: Option<String>,
    /// Version of the request.
    pub version: Version,
    /// Header fields in arrival order; names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Declared body length (`Content-Length`), if any.
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

impl RequestHead {
    /// First value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// True when the request has a body (non-zero Content-Length or chunked).
    pub fn has_body(&self) -> bool {
        self.chunked || self.content_length.is_some_and(|n| n > 0)
    }
}

/// A body produced piece by piece (used by `/get_all_keys`, which is streamed).
pub trait BodyStream: Send {
    /// Appends the next piece of the body to `out`. Returns `false` when the body is complete
    /// (possibly after appending a last piece). Pieces should be a few tens of KiB.
    fn next_chunk(&mut self, out: &mut Vec<u8>) -> bool;
}

/// Bytes that live in segment memory, borrowed for the duration of a response.
///
/// Holding it counts as a read in flight on the value (SPEC §8.1): the memory cannot be
/// released until it is dropped.
pub trait ValueBytes: Send {
    /// The value's bytes.
    fn bytes(&self) -> &[u8];
}

/// A response body.
pub enum Body {
    /// No body (`Content-Length: 0`, or nothing at all for 204/100).
    Empty,
    /// Bytes owned by the response.
    Bytes(Vec<u8>),
    /// A value read from segment memory (`GET /api/get/{key}`), sent without copying.
    Value(Box<dyn ValueBytes>),
    /// A streamed body: `Transfer-Encoding: chunked` to HTTP/1.1 clients, close-delimited to
    /// HTTP/1.0 clients (SPEC §2.6).
    Stream(Box<dyn BodyStream>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => write!(f, "Empty"),
            Body::Bytes(b) => write!(f, "Bytes({:?})", String::from_utf8_lossy(b)),
            Body::Value(v) => write!(f, "Value({} bytes)", v.bytes().len()),
            Body::Stream(_) => write!(f, "Stream"),
        }
    }
}

/// A final response, as decided by the handler (or by the codec for protocol errors).
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, when there is a body.
    pub content_type: Option<&'static str>,
    /// Extra headers (e.g. `Allow`). `Server`, `Date`, framing and `Connection` are added by the codec.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Body,
    /// Close the connection after this response.
    pub close: bool,
    /// Route label for metrics.
    pub route: Route,
}

/// Content type P (SPEC §1.4).
pub const CT_TEXT: &str = "text/plain; version=0.0.4";
/// Content type J (SPEC §1.4).
pub const CT_JSON: &str = "application/json; charset=utf-8";
/// Content type O (SPEC §1.4).
pub const CT_OCTET: &str = "application/octet-stream";

impl Response {
    /// A response with an owned body.
    pub fn new(route: Route, status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type: Some(content_type),
            headers: Vec::new(),
            body: Body::Bytes(body.into()),
            close: false,
            route,
        }
    }
    /// A JSON response (content type J).
    pub fn json(route: Route, status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::new(route, status, CT_JSON, body)
    }
    /// A plain-text response (content type P).
    pub fn text(route: Route, status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::new(route, status, CT_TEXT, body)
    }
    /// A protocol-level error in shape E3: `{"error":"<message>"}`.
    pub fn error(route: Route, status: u16, message: &str) -> Self {
        let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
        Self::json(route, status, body)
    }
    /// A response without body and without content type (204).
    pub fn no_content(route: Route, status: u16) -> Self {
        Self { status, content_type: None, headers: Vec::new(), body: Body::Empty, close: false, route }
    }
    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// What the handler wants done once a request head is complete.
pub enum HeadDecision<S> {
    /// Read the body (if any) into a buffer, then call [`Handler::on_request`] with it.
    Buffer,
    /// Feed the body to [`Handler::on_body`] as it arrives, with this per-request state,
    /// then call [`Handler::on_stream_end`].
    Stream(S),
    /// The response is decided from the head alone. Without `Expect: 100-continue` the codec
    /// still reads and discards the body, then answers and keeps the connection open. With
    /// `Expect: 100-continue` it answers instead of `100 Continue` and closes (SPEC §2.2).
    Respond(Response),
    /// Answer at once without reading the body, then close (early `507`, SPEC §6.3).
    RespondNow(Response),
}

/// The application side of a connection: router and endpoint handlers.
///
/// One handler value serves all connections of a worker thread. Per-request state that
/// must survive between calls lives in [`Handler::Stream`], held by the connection; it is
/// dropped (and must clean up after itself, e.g. abort a write) if the connection goes away.
pub trait Handler {
    /// Per-request state for streamed bodies.
    type Stream;

    /// The route a head maps to (used to label responses that the codec produces itself
    /// after the head was parsed: 408 during a body, 413, 417).
    fn route(&self, head: &RequestHead) -> Route;

    /// Called once per request when the head is complete (after the codec's own checks:
    /// framing, 413 on `Content-Length`, 417).
    fn on_head(&mut self, now: Now, head: &RequestHead) -> HeadDecision<Self::Stream>;

    /// Body bytes of a streamed request. The codec also calls it with an empty `chunk`
    /// every 50 ms while the body is in progress, so that state changed from elsewhere (a
    /// write aborted by an unmount) is noticed without more input. Returning a response ends the request early
    /// (e.g. `503 Write aborted: segment unmounted`); the connection is then closed.
    fn on_body(&mut self, now: Now, head: &RequestHead, stream: &mut Self::Stream, chunk: &[u8]) -> Option<Response>;

    /// The body of a streamed request is complete.
    fn on_stream_end(&mut self, now: Now, head: &RequestHead, stream: Self::Stream) -> Response;

    /// A buffered request is complete (`body` is empty when there was none).
    /// For HEAD the handler answers as for GET but without side effects; the codec drops the body.
    fn on_request(&mut self, now: Now, head: &RequestHead, body: &[u8]) -> Response;

    /// A final response was produced and handed to the connection's output (metrics).
    /// `duration` is measured from the complete request head to that moment (zero for
    /// responses to requests whose head never completed).
    fn on_response_sent(&mut self, route: Route, method: Method, status: u16, duration: Duration);

    /// The service is shutting down: responses carry `Connection: close` (SPEC §2.7).
    fn shutting_down(&self) -> bool;
}
