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
    /// Not known yet: the handler answers later with [`crate::http::Connection::resolve`]
    /// and this token (only from [`Handler::on_request`]; the rest of the response is
    /// ignored). Later pipelined requests wait for it.
    Pending(u64),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => write!(f, "Empty"),
            Body::Bytes(b) => write!(f, "Bytes({:?})", String::from_utf8_lossy(b)),
            Body::Value(v) => write!(f, "Value({} bytes)", v.bytes().len()),
            Body::Stream(_) => write!(f, "Stream"),
            Body::Pending(t) => write!(f, "Pending({t})"),
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
}

impl Response {
    /// A response with an owned body of `content_type`.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type: Some(content_type),
            headers: Vec::new(),
            body: Body::Bytes(body.into()),
            close: false,
        }
    }
    /// A response with `body` (any kind) of `content_type`.
    pub fn with_body(status: u16, content_type: &'static str, body: Body) -> Self {
        Self { status, content_type: Some(content_type), headers: Vec::new(), body, close: false }
    }
    /// A response without body and without content type (204).
    pub fn no_content(status: u16) -> Self {
        Self { status, content_type: None, headers: Vec::new(), body: Body::Empty, close: false }
    }
    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// An error the codec detects itself. The handler turns it into a response
/// ([`Handler::on_error`]); the codec closes the connection after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// A malformed request line, head or chunked framing (400).
    BadRequest,
    /// The head (or the body) did not arrive within the header-read timeout (408).
    RequestTimeout,
    /// The declared or received body exceeds the body limit (413).
    PayloadTooLarge,
    /// An `Expect` other than `100-continue` (417).
    ExpectationFailed,
    /// The head exceeds the head limit (431).
    HeaderFieldsTooLarge,
    /// A version other than HTTP/1.0 and HTTP/1.1 (505).
    VersionNotSupported,
}

impl HttpError {
    /// The status code of this error.
    pub fn status(self) -> u16 {
        match self {
            HttpError::BadRequest => 400,
            HttpError::RequestTimeout => 408,
            HttpError::PayloadTooLarge => 413,
            HttpError::ExpectationFailed => 417,
            HttpError::HeaderFieldsTooLarge => 431,
            HttpError::VersionNotSupported => 505,
        }
    }

    /// The reason text of this error (lower case, as SPEC §2 writes it).
    pub fn message(self) -> &'static str {
        match self {
            HttpError::BadRequest => "bad request",
            HttpError::RequestTimeout => "request timeout",
            HttpError::PayloadTooLarge => "payload too large",
            HttpError::ExpectationFailed => "expectation failed",
            HttpError::HeaderFieldsTooLarge => "request header fields too large",
            HttpError::VersionNotSupported => "http version not supported",
        }
    }
}

/// What the handler wants done once a request head is complete.
pub enum HeadDecision {
    /// Read the body (if any) into a buffer, then call [`Handler::on_request`] with it.
    Buffer,
    /// Feed the body to [`Handler::on_body`] as it arrives, then call
    /// [`Handler::on_request`] with an empty body.
    Stream,
    /// The response is decided from the head alone. Without `Expect: 100-continue` the codec
    /// still reads and discards the body, then answers and keeps the connection open. With
    /// `Expect: 100-continue` it answers instead of `100 Continue` and closes (SPEC §2.2).
    Respond(Response),
    /// Answer at once without reading the body, then close (early `507`, SPEC §6.3).
    RespondNow(Response),
}

/// The application side of a connection: it routes each request once and answers it.
///
/// Per request the codec calls [`Handler::route`] once, when the head is complete, and holds
/// the [`Handler::Request`] it returns until the response is queued: every later call about
/// that request gets it back. It is dropped (and must clean up after itself, e.g. abort a
/// write) when the request ends or the connection goes away.
pub trait Handler {
    /// What routing decided about one request (its endpoint, decoded path parameters, the
    /// state of a streamed body).
    type Request;

    /// Routes a complete head. Called once per request, before the codec's own checks
    /// (413 on `Content-Length`, 417), so their responses carry the request's route.
    fn route(&mut self, head: &RequestHead) -> Self::Request;

    /// Decides what to do with the body (after the codec's own checks passed).
    fn on_head(&mut self, now: Now, head: &RequestHead, req: &mut Self::Request) -> HeadDecision;

    /// Body bytes of a streamed request. The codec also calls it with an empty `chunk`
    /// every 50 ms while the body is in progress, so that state changed from elsewhere (a
    /// write aborted by an unmount) is noticed without more input. Returning a response
    /// ends the request early (e.g. `503 Write aborted: segment unmounted`); the connection
    /// is then closed.
    fn on_body(&mut self, now: Now, req: &mut Self::Request, chunk: &[u8]) -> Option<Response>;

    /// A request is complete (`body` is empty when there was none, or it was streamed).
    /// For HEAD the handler answers as for GET but without side effects; the codec drops
    /// the body.
    fn on_request(&mut self, now: Now, head: &RequestHead, req: &mut Self::Request, body: &[u8]) -> Response;

    /// The response to an error the codec found; `req` is `None` when the head never parsed.
    fn on_error(&mut self, req: Option<&Self::Request>, error: HttpError) -> Response;

    /// A final response was produced and handed to the connection's output (metrics).
    /// `duration` is measured from the complete request head to that moment (zero for
    /// responses to requests whose head never completed, whose `req` is `None`).
    fn on_response_sent(&mut self, req: Option<&Self::Request>, method: Method, status: u16, duration: Duration);

    /// The service is shutting down: responses carry `Connection: close` (SPEC §2.7).
    fn shutting_down(&self) -> bool;
}
