//! The per-connection state machine. (Implementation: see the module docs of `crate::http`.)

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::types::*;
use crate::time::Now;

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

/// One HTTP/1.x server connection. See the module docs for the driving contract.
pub struct Connection<S> {
    _todo: std::marker::PhantomData<S>,
    _gauge: Option<Arc<AtomicI64>>,
}

impl<S> Connection<S> {
    /// A new connection accepted at `now`. `gauge` (if any) is incremented now and
    /// decremented when the connection is dropped (`http_connections_open`).
    pub fn new(now: Now, limits: Limits, gauge: Option<Arc<AtomicI64>>) -> Self {
        let _ = (now, limits);
        todo!()
    }

    /// Bytes received from the peer. Complete requests are handed to `h` in order; their
    /// responses are queued for [`Connection::poll_transmit`]. Poll output afterwards.
    pub fn handle_input<H: Handler<Stream = S>>(&mut self, now: Now, data: &[u8], h: &mut H) {
        let _ = (now, data, h);
        todo!()
    }

    /// The peer half-closed (read returned 0). Complete requests are still answered;
    /// an incomplete one is dropped. Poll output afterwards.
    pub fn handle_eof<H: Handler<Stream = S>>(&mut self, now: Now, h: &mut H) {
        let _ = (now, h);
        todo!()
    }

    /// Time passed; fires header-read (408) and idle timeouts that are due.
    pub fn handle_timeout<H: Handler<Stream = S>>(&mut self, now: Now, h: &mut H) {
        let _ = (now, h);
        todo!()
    }

    /// The service started shutting down (SPEC §2.7): an idle connection closes at once.
    pub fn handle_shutdown<H: Handler<Stream = S>>(&mut self, now: Now, h: &mut H) {
        let _ = (now, h);
        todo!()
    }

    /// The next bytes to write, if any. Write (a prefix of) them, then call
    /// [`Connection::consume`] with the number written.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        todo!()
    }

    /// `n` bytes returned by [`Connection::poll_transmit`] were written. May process further
    /// pipelined requests that were held back; poll output again afterwards.
    pub fn consume<H: Handler<Stream = S>>(&mut self, now: Now, n: usize, h: &mut H) {
        let _ = (now, n, h);
        todo!()
    }

    /// The next instant at which [`Connection::handle_timeout`] must be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    /// False while enough output is queued that the caller should stop reading (backpressure).
    pub fn wants_read(&self) -> bool {
        todo!()
    }

    /// True once the connection is finished: all output that will ever be sent was consumed
    /// and the socket should be closed.
    pub fn is_closed(&self) -> bool {
        todo!()
    }
}
