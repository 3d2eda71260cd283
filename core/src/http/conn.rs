//! The per-connection state machine. (Implementation: see the module docs of `crate::http`.)
//!
//! Input is processed strictly in order: a request head is parsed once it is complete,
//! checked (framing, 413, 417), handed to [`Handler::on_head`], then its body (if any) is
//! decoded and buffered, streamed or discarded, and the response is queued on the
//! [`Output`]. Only then does the next pipelined request start. Processing of new heads
//! pauses while more than [`OUT_HIGH`] bytes of output are pending (backpressure), and
//! while a streamed response body is still being produced: such a body (a key listing) is
//! rendered lazily from the current state as it is written, so a pipelined request behind
//! it (a PUT) must not run before it is complete, or the earlier response would show the
//! later request's effect. Input that arrives meanwhile stays buffered, and
//! [`Connection::wants_read`] turns false past the input or output limits.
//!
//! The connection closes (is [`Connection::is_closed`]) when a response that closes has
//! been written completely (`read_done` and an empty output queue), or at once when it is
//! closed silently (idle timeout, stalled output, idle at shutdown).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::chunked::{ChunkDecoder, Event};
use super::output::Output;
use super::parse::{check_request_line, parse_head, HeadError, HeadScanner};
use super::render::{render_head, status_has_no_body, ConnHeader, DateCache, Framing, HeadParts};
use super::types::*;
use crate::time::Now;

/// Stop processing pipelined requests while more than this many response bytes are pending.
pub(crate) const OUT_HIGH: usize = 256 * 1024;
/// Stop reading while this many unprocessed input bytes are buffered.
pub(crate) const IN_HIGH: usize = 1024 * 1024;
/// Close the connection if a caller ignores [`Connection::wants_read`] beyond this.
const IN_HARD: usize = 16 * 1024 * 1024;
/// Initial capacity cap of a buffered body (it grows as bytes arrive).
const BODY_PREALLOC: u64 = 64 * 1024;
/// While a streamed body is in progress, its handler state is polled this often (with an
/// empty chunk) so that a write aborted from elsewhere (its segment was unmounted, SPEC §6.3)
/// is answered within 100 ms even when the client sends nothing more.
pub(crate) const STREAM_POLL: Duration = Duration::from_millis(50);

/// Limits and timeouts of the codec (SPEC §2.4, §2.5).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request head, in bytes (65536).
    pub max_head: usize,
    /// Largest decoded request body (`--max-body-size`).
    pub max_body: u64,
    /// `--header-read-timeout`.
    pub header_read_timeout: Duration,
    /// `--idle-timeout`.
    pub idle_timeout: Duration,
}

/// What the codec knows about the request a response answers.
#[derive(Clone, Copy, Debug)]
struct ReqInfo {
    method: Method,
    version: Version,
    /// The client asked for a persistent connection.
    keep_alive: bool,
    /// When the head completed (None: it never did).
    head_done: Option<Instant>,
}

impl ReqInfo {
    /// A request rejected before its head was complete or parsed: its method is `other`.
    fn before_head() -> Self {
        Self { method: Method::Other, version: Version::Http11, keep_alive: false, head_done: None }
    }
}

/// Where the body of the current request goes.
enum Sink {
    /// Collected for [`Handler::on_request`].
    Buffer(Vec<u8>),
    /// Fed to [`Handler::on_body`].
    Stream,
    /// Read and discarded; this response is sent afterwards.
    Discard(Response),
}

/// Framing of the current request body.
enum BodyFraming {
    /// `Content-Length`: bytes still expected.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(ChunkDecoder),
}

/// A request whose body is being received.
struct BodyState<R> {
    head: RequestHead,
    info: ReqInfo,
    framing: BodyFraming,
    /// Decoded body bytes so far.
    received: u64,
    sink: Sink,
    /// What the handler's routing decided.
    req: R,
}

/// How receiving a body ended (or not).
enum BodyOutcome {
    NeedMore,
    Complete,
    TooLarge,
    BadChunk,
    Early(Response),
}

/// A response the handler will give later ([`Body::Pending`]).
struct Pending<R> {
    token: u64,
    info: ReqInfo,
    req: R,
}

enum ReadState<R> {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Receiving a request body.
    Body(Box<BodyState<R>>),
}

/// One HTTP/1.x server connection, whose handler routes requests to values of type `R`
/// ([`Handler::Request`]). See the module docs for the driving contract.
pub struct Connection<R> {
    limits: Limits,
    gauge: Option<Arc<AtomicI64>>,
    /// Received bytes not yet processed are `inbuf[in_pos..]`.
    inbuf: Vec<u8>,
    in_pos: usize,
    scanner: HeadScanner,
    read: ReadState<R>,
    out: Output,
    dates: DateCache,
    /// The peer half-closed.
    eof: bool,
    /// No further request is processed; close once the output is written.
    read_done: bool,
    /// Closed silently: nothing more will be sent.
    closed: bool,
    /// Shutting down: responses close, an idle connection closes.
    shutdown: bool,
    /// First byte of the head being received (None when no head is in progress).
    head_start: Option<Instant>,
    /// Last body byte (or head completion) of the body being received.
    body_last: Instant,
    /// Last time a streamed body's handler state was polled for an abort (see [`STREAM_POLL`]).
    stream_polled: Instant,
    /// Last write progress (or when output became pending).
    write_progress: Instant,
    /// Since when the connection has been idle (None while not idle).
    idle_since: Option<Instant>,
    /// After EOF: no further request follows the one being answered (its response closes).
    last_after_eof: bool,
    /// The response the handler owes ([`Body::Pending`]).
    pending: Option<Pending<R>>,
}

impl<R> Connection<R> {
    /// A new connection accepted at `now`. `gauge` (if any) is incremented now and
    /// decremented when the connection is dropped (`http_connections_open`).
    pub fn new(now: Now, limits: Limits, gauge: Option<Arc<AtomicI64>>) -> Self {
        if let Some(g) = &gauge {
            g.fetch_add(1, Ordering::Relaxed);
        }
        Self::with_counted_gauge(now, limits, gauge)
    }

    /// Like [`Connection::new`], for a `gauge` the caller has already incremented for it
    /// (it is still decremented on drop).
    pub(crate) fn with_counted_gauge(now: Now, limits: Limits, gauge: Option<Arc<AtomicI64>>) -> Self {
        Self {
            limits,
            gauge,
            inbuf: Vec::new(),
            in_pos: 0,
            scanner: HeadScanner::default(),
            read: ReadState::Head,
            out: Output::default(),
            dates: DateCache::default(),
            eof: false,
            read_done: false,
            closed: false,
            shutdown: false,
            head_start: None,
            body_last: now.mono,
            stream_polled: now.mono,
            write_progress: now.mono,
            idle_since: Some(now.mono),
            last_after_eof: false,
            pending: None,
        }
    }

    /// A connection refused before any byte is read: `resp` is queued at once with
    /// `Connection: close`, input is ignored, and the connection is closed once `resp` has
    /// been written (`--max-connections`). It is in no gauge, and `resp` is not reported to a
    /// handler: the caller counts it.
    pub fn rejected(now: Now, limits: Limits, resp: Response) -> Self {
        let mut conn = Self::with_counted_gauge(now, limits, None);
        conn.push_response(now, &ReqInfo::before_head(), resp, true);
        conn
    }

    /// Bytes received from the peer. Complete requests are handed to `h` in order; their
    /// responses are queued for [`Connection::poll_transmit`]. Poll output afterwards.
    pub fn handle_input<H: Handler<Request = R>>(&mut self, now: Now, data: &[u8], h: &mut H) {
        if self.closed || self.read_done || self.eof || data.is_empty() {
            return;
        }
        self.compact();
        if self.unprocessed_len() == 0 {
            // Fast path: process straight from `data`, keep only the unprocessed rest.
            let n = self.process(now, data, h);
            if !self.closed && !self.read_done {
                self.inbuf.extend_from_slice(&data[n..]);
            }
        } else {
            self.inbuf.extend_from_slice(data);
        }
        self.after(now, h);
        if self.unprocessed_len() > IN_HARD {
            self.close_silently();
        }
    }

    /// The peer half-closed (read returned 0). Complete requests are still answered;
    /// an incomplete one is dropped. Poll output afterwards.
    pub fn handle_eof<H: Handler<Request = R>>(&mut self, now: Now, h: &mut H) {
        if self.closed {
            return;
        }
        self.eof = true;
        self.after(now, h);
    }

    /// Time passed; fires header-read (408) and idle timeouts that are due.
    pub fn handle_timeout<H: Handler<Request = R>>(&mut self, now: Now, h: &mut H) {
        if self.is_closed() {
            return;
        }
        let due = |d: Option<Instant>| d.is_some_and(|d| now.mono >= d);
        if due(self.stall_deadline()) || due(self.idle_deadline()) {
            self.close_silently();
            return;
        }
        if due(self.header_deadline()) {
            // A head that never completed: its method is not known (`other`).
            let resp = h.on_error(None, HttpError::RequestTimeout);
            self.queue(now, &ReqInfo::before_head(), None, resp, true, h);
        } else if due(self.body_deadline()) {
            if let ReadState::Body(st) = std::mem::replace(&mut self.read, ReadState::Head) {
                let resp = h.on_error(Some(&st.req), HttpError::RequestTimeout);
                // Dropping the request afterwards aborts a streamed write.
                self.queue(now, &st.info, Some(&st.req), resp, true, h);
            }
        } else if due(self.stream_poll_deadline()) {
            self.stream_polled = now.mono;
            let early = match &mut self.read {
                ReadState::Body(st) if matches!(st.sink, Sink::Stream) => h.on_body(now, &mut st.req, &[]),
                _ => None,
            };
            if let Some(resp) = early {
                if let ReadState::Body(st) = std::mem::replace(&mut self.read, ReadState::Head) {
                    self.queue(now, &st.info, Some(&st.req), resp, true, h);
                }
            }
        }
        self.after(now, h);
    }

    /// The service started shutting down (SPEC §2.7): an idle connection closes at once.
    pub fn handle_shutdown<H: Handler<Request = R>>(&mut self, now: Now, h: &mut H) {
        self.shutdown = true;
        self.after(now, h);
    }

    /// The next bytes to write, if any. Write (a prefix of) them, then call
    /// [`Connection::consume`] with the number written.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        if self.closed {
            return None;
        }
        self.out.front()
    }

    /// The next bytes to write as up to `bufs.len()` slices (for a vectored write, e.g.
    /// `writev`); returns how many slices were filled (0: nothing to write). Write (a prefix
    /// of) them, then call [`Connection::consume`] with the number of bytes written.
    #[must_use]
    pub fn poll_transmit_vectored<'a>(&'a self, bufs: &mut [std::io::IoSlice<'a>]) -> usize {
        if self.closed {
            return 0;
        }
        self.out.front_vectored(bufs)
    }

    /// `n` bytes returned by [`Connection::poll_transmit`] (or [`Connection::poll_transmit_vectored`])
    /// were written. May process further pipelined requests that were held back; poll output
    /// again afterwards.
    pub fn consume<H: Handler<Request = R>>(&mut self, now: Now, n: usize, h: &mut H) {
        if self.closed {
            return;
        }
        if n > 0 {
            self.out.advance(n);
            self.write_progress = now.mono;
        }
        self.out.settle();
        self.after(now, h);
    }

    /// The next instant at which [`Connection::handle_timeout`] must be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        [
            self.stall_deadline(),
            self.idle_deadline(),
            self.header_deadline(),
            self.body_deadline(),
            self.stream_poll_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// False while enough output is queued that the caller should stop reading (backpressure).
    pub fn wants_read(&self) -> bool {
        !self.closed
            && !self.read_done
            && !self.eof
            && self.out.pending() <= OUT_HIGH
            && self.unprocessed_len() < IN_HIGH
    }

    /// True once the connection is finished: all output that will ever be sent was consumed
    /// and the socket should be closed.
    pub fn is_closed(&self) -> bool {
        self.closed || (self.read_done && self.out.is_empty() && self.pending.is_none())
    }

    /// The token of the response the handler owes ([`Body::Pending`]), if any.
    pub fn pending(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.token)
    }

    /// The handler's answer to the request it answered with [`Body::Pending`]`(token)`:
    /// queued in its place (the requests pipelined behind it then proceed). Ignored when no
    /// such response is owed (the connection closed meanwhile).
    pub fn resolve<H: Handler<Request = R>>(&mut self, now: Now, token: u64, resp: Response, h: &mut H) {
        if self.closed || self.pending.as_ref().is_none_or(|p| p.token != token) {
            return;
        }
        if let Some(p) = self.pending.take() {
            self.queue(now, &p.info, Some(&p.req), resp, false, h);
        }
        self.after(now, h);
    }

    // ---- input processing ------------------------------------------------------------

    /// The next request must wait: too much output is pending, or an earlier response's
    /// streamed body is still being produced from the current state.
    fn held_back(&self) -> bool {
        self.out.pending() > OUT_HIGH || self.out.has_open_stream() || self.pending.is_some()
    }

    fn unprocessed_len(&self) -> usize {
        self.inbuf.len() - self.in_pos
    }

    /// Drops processed bytes from the front of the input buffer when worthwhile.
    fn compact(&mut self) {
        if self.in_pos == self.inbuf.len() {
            self.inbuf.clear();
            self.in_pos = 0;
        } else if self.in_pos >= 64 * 1024 && self.in_pos * 2 >= self.inbuf.len() {
            self.inbuf.drain(..self.in_pos);
            self.in_pos = 0;
        }
    }

    /// Processes buffered input (after new input, EOF, or output progress).
    fn process_buffered<H: Handler<Request = R>>(&mut self, now: Now, h: &mut H) {
        if self.closed || self.read_done || self.unprocessed_len() == 0 {
            return;
        }
        let buf = std::mem::take(&mut self.inbuf);
        let n = self.process(now, &buf[self.in_pos..], h);
        self.inbuf = buf;
        self.in_pos += n;
        if self.closed || self.read_done {
            self.inbuf = Vec::new();
            self.in_pos = 0;
        }
    }

    /// Processes `input` (which starts where the previous call stopped) as far as possible.
    /// Returns the number of bytes consumed; the caller keeps the rest for later.
    fn process<H: Handler<Request = R>>(&mut self, now: Now, input: &[u8], h: &mut H) -> usize {
        let mut pos = 0;
        loop {
            if self.closed || self.read_done {
                return input.len();
            }
            if let ReadState::Body(_) = self.read {
                pos += self.feed_body(now, &input[pos..], h);
                if let ReadState::Body(_) = self.read {
                    return pos;
                }
                continue;
            }
            if self.held_back() {
                // Backpressure, or a streamed body in progress: leave the next request
                // buffered; its clock starts later.
                self.head_start = None;
                return pos;
            }
            // Empty lines before a request line are ignored (RFC 9112 §2.2).
            let before = pos;
            loop {
                match &input[pos..] {
                    [b'\n', ..] => pos += 1,
                    [b'\r', b'\n', ..] => pos += 2,
                    _ => break,
                }
            }
            if pos != before {
                self.scanner.reset();
            }
            let rest = &input[pos..];
            if rest.is_empty() {
                self.head_start = None;
                return pos;
            }
            self.head_start.get_or_insert(now.mono);
            match self.scanner.scan(rest, self.limits.max_head) {
                Some(len) => {
                    pos += len;
                    self.scanner.reset();
                    self.head_start = None;
                    self.last_after_eof = self.eof && !self.may_hold_request(&input[pos..]);
                    self.start_request(now, &rest[..len], h);
                }
                None => {
                    if let Some(line) = self.scanner.request_line(rest) {
                        if !self.scanner.line_checked {
                            if let Err(e) = check_request_line(line) {
                                self.head_error(now, e, h);
                                return input.len();
                            }
                            self.scanner.line_checked = true;
                        }
                    }
                    if rest.len() > self.limits.max_head {
                        let resp = h.on_error(None, HttpError::HeaderFieldsTooLarge);
                        self.queue(now, &ReqInfo::before_head(), None, resp, true, h);
                        return input.len();
                    }
                    return pos;
                }
            }
        }
    }

    /// After EOF: whether `tail` (the input after the current request) will produce another
    /// response. Empty lines and an incomplete head produce none; a complete head, a head
    /// over the limit or a complete bad request line do (the last two get an error).
    fn may_hold_request(&self, tail: &[u8]) -> bool {
        let start = tail.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(tail.len());
        let tail = &tail[start..];
        if tail.is_empty() {
            return false;
        }
        if tail.len() > self.limits.max_head {
            return true;
        }
        let mut scanner = HeadScanner::default();
        scanner.scan(tail, self.limits.max_head).is_some()
            || scanner.request_line(tail).is_some_and(|l| check_request_line(l).is_err())
    }

    /// Answers a malformed head (400) or an unsupported version (505), then closes.
    fn head_error<H: Handler<Request = R>>(&mut self, now: Now, e: HeadError, h: &mut H) {
        let resp = h.on_error(
            None,
            match e {
                HeadError::BadRequest => HttpError::BadRequest,
                HeadError::VersionNotSupported => HttpError::VersionNotSupported,
            },
        );
        self.queue(now, &ReqInfo::before_head(), None, resp, true, h);
    }

    /// A complete head arrived: check it, ask the handler, and answer or start the body.
    fn start_request<H: Handler<Request = R>>(&mut self, now: Now, bytes: &[u8], h: &mut H) {
        let parsed = match parse_head(bytes) {
            Ok(p) => p,
            // A head that does not parse has no trustworthy method: `other`, with a body.
            Err(e) => return self.head_error(now, e, h),
        };
        let keep_alive = parsed.keep_alive();
        let expect_unsupported = parsed.expect_unsupported;
        let head = parsed.head;
        let info = ReqInfo { method: head.method, version: head.version, keep_alive, head_done: Some(now.mono) };

        // Routed once; the request's state travels with it until its response is queued.
        let mut req = h.route(&head);
        if head.content_length.is_some_and(|n| n > self.limits.max_body) {
            let resp = h.on_error(Some(&req), HttpError::PayloadTooLarge);
            return self.queue(now, &info, Some(&req), resp, true, h);
        }
        if expect_unsupported {
            let resp = h.on_error(Some(&req), HttpError::ExpectationFailed);
            return self.queue(now, &info, Some(&req), resp, head.has_body(), h);
        }
        // HTTP/1.0 clients do not understand 1xx: their expectation is ignored (RFC 9110 §10.1.1).
        let expect_continue = head.expect_continue && head.version == Version::Http11 && head.has_body();
        let has_body = head.has_body();
        let sink = match h.on_head(now, &head, &mut req) {
            HeadDecision::RespondNow(resp) => return self.queue(now, &info, Some(&req), resp, true, h),
            HeadDecision::Respond(resp) if !has_body => return self.queue(now, &info, Some(&req), resp, false, h),
            HeadDecision::Respond(resp) if expect_continue => return self.queue(now, &info, Some(&req), resp, true, h),
            HeadDecision::Respond(resp) => Sink::Discard(resp),
            HeadDecision::Buffer | HeadDecision::Stream if !has_body => {
                let resp = h.on_request(now, &head, &mut req, &[]);
                return self.queue_answer(now, info, req, resp, h);
            }
            HeadDecision::Buffer => {
                let cap = head.content_length.unwrap_or(0).min(BODY_PREALLOC) as usize;
                Sink::Buffer(Vec::with_capacity(cap))
            }
            HeadDecision::Stream => Sink::Stream,
        };
        if expect_continue {
            if self.out.is_empty() {
                self.write_progress = now.mono;
            }
            // An interim response carries `Server` and `Date` like every response, and no
            // framing headers (SPEC §2.6).
            let date = *self.dates.get(now.wall_unix_secs);
            let parts = HeadParts {
                status: 100,
                date: &date,
                content_type: None,
                framing: Framing::None,
                extra: &[],
                connection: ConnHeader::None,
            };
            self.out.push_with(|d| render_head(d, &parts));
        }
        let framing = if head.chunked {
            BodyFraming::Chunked(ChunkDecoder::default())
        } else {
            BodyFraming::Length(head.content_length.unwrap_or(0))
        };
        self.body_last = now.mono;
        self.read = ReadState::Body(Box::new(BodyState { head, info, framing, received: 0, sink, req }));
    }

    /// Feeds body bytes to the request being received. Returns the bytes consumed.
    fn feed_body<H: Handler<Request = R>>(&mut self, now: Now, data: &[u8], h: &mut H) -> usize {
        let ReadState::Body(mut st) = std::mem::replace(&mut self.read, ReadState::Head) else {
            return 0;
        };
        let max_body = self.limits.max_body;
        let mut pos = 0;
        let outcome = loop {
            let piece = match &mut st.framing {
                BodyFraming::Length(0) => break BodyOutcome::Complete,
                BodyFraming::Length(_) if pos == data.len() => break BodyOutcome::NeedMore,
                BodyFraming::Length(remaining) => {
                    let take = (*remaining).min((data.len() - pos) as u64) as usize;
                    *remaining -= take as u64;
                    pos += take;
                    &data[pos - take..pos]
                }
                BodyFraming::Chunked(dec) => match dec.next(data, &mut pos) {
                    Event::Size(n) if st.received.saturating_add(n) > max_body => break BodyOutcome::TooLarge,
                    Event::Size(_) => continue,
                    Event::Data(piece) => piece,
                    Event::NeedMore => break BodyOutcome::NeedMore,
                    Event::Done => break BodyOutcome::Complete,
                    Event::Error => break BodyOutcome::BadChunk,
                },
            };
            if let Some(o) = deliver(now, &mut st, piece, max_body, h) {
                break o;
            }
        };
        if pos > 0 {
            self.body_last = now.mono;
        }
        match outcome {
            BodyOutcome::NeedMore => self.read = ReadState::Body(st),
            BodyOutcome::Complete => {
                self.last_after_eof = self.eof && !self.may_hold_request(&data[pos..]);
                let BodyState { head, info, sink, mut req, .. } = *st;
                let resp = match sink {
                    Sink::Buffer(body) => h.on_request(now, &head, &mut req, &body),
                    Sink::Stream => h.on_request(now, &head, &mut req, &[]),
                    Sink::Discard(resp) => resp,
                };
                self.queue_answer(now, info, req, resp, h);
            }
            BodyOutcome::TooLarge | BodyOutcome::BadChunk => {
                let e = match outcome {
                    BodyOutcome::TooLarge => HttpError::PayloadTooLarge,
                    _ => HttpError::BadRequest,
                };
                let resp = h.on_error(Some(&st.req), e);
                // Dropping the request afterwards aborts a streamed write.
                self.queue(now, &st.info, Some(&st.req), resp, true, h);
            }
            BodyOutcome::Early(resp) => self.queue(now, &st.info, Some(&st.req), resp, true, h),
        }
        pos
    }

    // ---- output ----------------------------------------------------------------------

    /// Renders and queues a final response. `force_close`: close after it whatever the
    /// request said (errors, responses sent before the body was read).
    fn queue<H: Handler<Request = R>>(
        &mut self,
        now: Now,
        info: &ReqInfo,
        req: Option<&R>,
        resp: Response,
        force_close: bool,
        h: &mut H,
    ) {
        if h.shutting_down() {
            self.shutdown = true;
        }
        // Counted when produced (SPEC §9): a scrape that follows this response on another
        // connection, possibly on another worker, always sees it.
        let status = resp.status;
        let duration = info.head_done.map_or(Duration::ZERO, |t| now.mono.saturating_duration_since(t));
        self.push_response(now, info, resp, force_close);
        h.on_response_sent(req, info.method, status, duration);
    }

    /// Queues the handler's answer to a complete request, or, for [`Body::Pending`], keeps
    /// the request until [`Connection::resolve`].
    fn queue_answer<H: Handler<Request = R>>(&mut self, now: Now, info: ReqInfo, req: R, resp: Response, h: &mut H) {
        match resp.body {
            Body::Pending(token) => self.pending = Some(Pending { token, info, req }),
            _ => self.queue(now, &info, Some(&req), resp, false, h),
        }
    }

    /// Renders `resp` onto the output queue (the handler-independent part of `queue`).
    fn push_response(&mut self, now: Now, info: &ReqInfo, mut resp: Response, force_close: bool) {
        let no_body = status_has_no_body(resp.status);
        let body = std::mem::replace(&mut resp.body, Body::Empty);
        let (framing, body) = match body {
            _ if no_body => (Framing::None, Body::Empty),
            Body::Empty => (Framing::Length(0), Body::Empty),
            Body::Bytes(b) => (Framing::Length(b.len() as u64), Body::Bytes(b)),
            Body::Value(v) => (Framing::Length(v.bytes().len() as u64), Body::Value(v)),
            Body::Stream(s) if info.version == Version::Http11 => (Framing::Chunked, Body::Stream(s)),
            Body::Stream(s) => (Framing::Close, Body::Stream(s)),
            // Not a final answer: nothing to send (only `queue_answer` takes one).
            Body::Pending(_) => (Framing::Length(0), Body::Empty),
        };
        // After EOF the response to the last complete request closes the connection.
        let last_after_eof = self.eof && self.last_after_eof;
        let close = force_close
            || resp.close
            || !info.keep_alive
            || self.shutdown
            || framing == Framing::Close
            || last_after_eof;
        let connection = match (close, info.version) {
            (true, _) => ConnHeader::Close,
            (false, Version::Http10) => ConnHeader::KeepAlive,
            (false, Version::Http11) => ConnHeader::None,
        };
        // HEAD: the headers of the GET, no body (dropping a Value ends its read). An error
        // answering a head that never parsed has method `other` and always its body.
        let body = if info.method == Method::Head { Body::Empty } else { body };

        if self.out.is_empty() {
            self.write_progress = now.mono;
        }
        let date = *self.dates.get(now.wall_unix_secs);
        let parts = HeadParts {
            status: resp.status,
            date: &date,
            content_type: if no_body { None } else { resp.content_type },
            framing,
            extra: &resp.headers,
            connection,
        };
        self.out.push_with(|d| render_head(d, &parts));
        match body {
            Body::Bytes(b) if !b.is_empty() => self.out.push_bytes(b),
            Body::Value(v) if !v.bytes().is_empty() => self.out.push_value(v),
            Body::Stream(s) => self.out.push_stream(s, framing == Framing::Chunked),
            _ => {}
        }
        if close {
            self.read_done = true;
            self.read = ReadState::Head;
            self.head_start = None;
        }
    }

    // ---- bookkeeping -----------------------------------------------------------------

    /// Common tail of every entry point: release written responses, finish at EOF,
    /// track idleness, close an idle connection at shutdown.
    fn after<H: Handler<Request = R>>(&mut self, now: Now, h: &mut H) {
        if self.closed {
            return;
        }
        // Requests held back by backpressure may be processable now.
        self.process_buffered(now, h);
        self.out.settle();
        if h.shutting_down() {
            self.shutdown = true;
        }
        let blocked = matches!(self.read, ReadState::Head) && self.held_back();
        if self.eof && !self.read_done && !blocked {
            // Everything that could be processed was: what remains is incomplete.
            self.read = ReadState::Head; // drops a streamed request's state: aborts its write
            self.read_done = true;
            self.head_start = None;
            self.inbuf = Vec::new();
            self.in_pos = 0;
        }
        let idle = !self.read_done
            && self.pending.is_none()
            && matches!(self.read, ReadState::Head)
            && self.unprocessed_len() == 0
            && self.out.is_empty();
        if idle && self.shutdown {
            self.close_silently();
        } else if idle {
            self.idle_since.get_or_insert(now.mono);
        } else {
            self.idle_since = None;
        }
    }

    /// Closes without sending anything more; drops queued output and request state.
    fn close_silently(&mut self) {
        self.closed = true;
        self.pending = None;
        self.out.clear();
        self.read = ReadState::Head;
        self.inbuf = Vec::new();
        self.in_pos = 0;
        self.head_start = None;
        self.idle_since = None;
    }

    /// Pending output that makes no progress for the idle timeout: close silently.
    fn stall_deadline(&self) -> Option<Instant> {
        if self.out.is_empty() {
            return None;
        }
        self.write_progress.checked_add(self.limits.idle_timeout)
    }

    /// Nothing buffered, in progress or pending for the idle timeout: close silently.
    fn idle_deadline(&self) -> Option<Instant> {
        self.idle_since?.checked_add(self.limits.idle_timeout)
    }

    /// A request head not complete within the header-read timeout: 408.
    fn header_deadline(&self) -> Option<Instant> {
        if self.read_done || self.closed {
            return None;
        }
        self.head_start?.checked_add(self.limits.header_read_timeout)
    }

    /// Next poll of a streamed body's handler state for an abort ([`STREAM_POLL`]).
    fn stream_poll_deadline(&self) -> Option<Instant> {
        if self.read_done || self.closed {
            return None;
        }
        match &self.read {
            ReadState::Body(st) if matches!(st.sink, Sink::Stream) => {
                self.stream_polled.max(self.body_last).checked_add(STREAM_POLL)
            }
            _ => None,
        }
    }

    /// No body byte for the header-read timeout while a body is expected: 408.
    fn body_deadline(&self) -> Option<Instant> {
        if self.read_done || self.closed || self.out.pending() > OUT_HIGH {
            return None;
        }
        match self.read {
            ReadState::Body(_) => self.body_last.checked_add(self.limits.header_read_timeout),
            ReadState::Head => None,
        }
    }
}

/// Hands one piece of decoded body to the sink. Returns an outcome that ends the body early.
fn deliver<R, H: Handler<Request = R>>(
    now: Now,
    st: &mut BodyState<R>,
    piece: &[u8],
    max_body: u64,
    h: &mut H,
) -> Option<BodyOutcome> {
    if piece.is_empty() {
        return None;
    }
    st.received = st.received.saturating_add(piece.len() as u64);
    if st.received > max_body {
        return Some(BodyOutcome::TooLarge);
    }
    match &mut st.sink {
        Sink::Buffer(buf) => buf.extend_from_slice(piece),
        Sink::Stream => return h.on_body(now, &mut st.req, piece).map(BodyOutcome::Early),
        Sink::Discard(_) => {}
    }
    None
}

impl<R> Drop for Connection<R> {
    fn drop(&mut self) {
        if let Some(g) = &self.gauge {
            g.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
impl<R> Connection<R> {
    /// Unprocessed buffered input (tests).
    pub(crate) fn unprocessed_len_for_test(&self) -> usize {
        self.unprocessed_len()
    }
    /// Pending output bytes (tests).
    pub(crate) fn out_pending_for_test(&self) -> usize {
        self.out.pending()
    }
}
