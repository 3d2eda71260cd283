//! The queue of response bytes waiting to be written.
//!
//! Rendered heads and small bodies are appended to one buffer (so pipelined small responses
//! go out in few writes); large owned bodies, segment-memory values and streams are kept as
//! segments of their own and handed out without copying.

use std::collections::VecDeque;
use std::io::IoSlice;

use super::types::{BodyStream, ValueBytes};

/// Owned bodies up to this size are copied behind their head; larger ones are queued as is.
const COPY_BODY_MAX: usize = 16 * 1024;
/// Capacity of a new head buffer (a head plus a small body fits without growing).
const HEAD_CAPACITY: usize = 512;
/// A written head buffer up to this capacity is kept for the next response.
const SPARE_MAX: usize = 4096;
/// Room reserved in front of a stream piece for its chunk-size line (16 hex digits + CRLF).
const CHUNK_PREFIX: usize = 18;

enum Seg {
    /// Owned bytes.
    Buf { data: Vec<u8>, pos: usize, appendable: bool },
    /// A value in segment memory.
    Value { value: Box<dyn ValueBytes>, pos: usize },
    /// A streamed body; `buf[pos..]` is the framed piece being written.
    Stream { stream: Box<dyn BodyStream>, chunked: bool, buf: Vec<u8>, pos: usize, finished: bool },
}

impl Seg {
    fn remaining(&self) -> &[u8] {
        match self {
            Seg::Buf { data, pos, .. } => &data[*pos..],
            Seg::Value { value, pos, .. } => value.bytes().get(*pos..).unwrap_or_default(),
            Seg::Stream { buf, pos, .. } => &buf[*pos..],
        }
    }
}

/// Pending output of a connection.
#[derive(Default)]
pub(crate) struct Output {
    segs: VecDeque<Seg>,
    /// Bytes ready to be written (streams count only their current piece).
    pending: usize,
    /// An empty buffer kept from a written response, reused for the next one.
    spare: Vec<u8>,
}

impl Output {
    /// True when nothing at all is queued.
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Bytes queued and ready (a measure for backpressure).
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// True while a streamed body is still being produced (its last piece not pulled yet).
    pub fn has_open_stream(&self) -> bool {
        self.segs.iter().any(|s| matches!(s, Seg::Stream { finished: false, .. }))
    }

    /// Drops everything queued (silent close). Unsent responses are not reported.
    pub fn clear(&mut self) {
        self.segs.clear();
        self.pending = 0;
        self.spare = Vec::new();
    }

    /// Drops the (written) front segment, keeping a small head buffer for reuse.
    fn pop_front(&mut self) {
        if let Some(Seg::Buf { mut data, appendable: true, .. }) = self.segs.pop_front() {
            if data.capacity() <= SPARE_MAX && self.spare.capacity() == 0 {
                data.clear();
                self.spare = data;
            }
        }
    }

    /// The appendable buffer at the back of the queue, created if needed.
    fn tail(&mut self) -> &mut Vec<u8> {
        if !matches!(self.segs.back(), Some(Seg::Buf { appendable: true, .. })) {
            let mut data = std::mem::take(&mut self.spare);
            if data.capacity() == 0 {
                data.reserve(HEAD_CAPACITY);
            }
            self.segs.push_back(Seg::Buf { data, pos: 0, appendable: true });
        }
        match self.segs.back_mut() {
            Some(Seg::Buf { data, .. }) => data,
            _ => unreachable!("just pushed"),
        }
    }

    /// Appends bytes produced by `f` (a rendered head, `100 Continue`) to the tail buffer.
    pub fn push_with(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let data = self.tail();
        let before = data.len();
        f(data);
        let added = data.len() - before;
        self.pending += added;
    }

    /// Queues an owned body.
    pub fn push_bytes(&mut self, body: Vec<u8>) {
        if body.len() <= COPY_BODY_MAX {
            self.push_with(|d| d.extend_from_slice(&body));
        } else {
            self.pending += body.len();
            self.segs.push_back(Seg::Buf { data: body, pos: 0, appendable: false });
        }
    }

    /// Queues a value (non-empty) from segment memory.
    pub fn push_value(&mut self, value: Box<dyn ValueBytes>) {
        self.pending += value.bytes().len();
        self.segs.push_back(Seg::Value { value, pos: 0 });
    }

    /// Queues a streamed body.
    pub fn push_stream(&mut self, stream: Box<dyn BodyStream>, chunked: bool) {
        self.segs.push_back(Seg::Stream { stream, chunked, buf: Vec::new(), pos: 0, finished: false });
    }

    /// The next bytes to write, or None. Never returns an empty slice after [`Output::settle`].
    pub fn front(&self) -> Option<&[u8]> {
        self.segs.front().map(Seg::remaining).filter(|s| !s.is_empty())
    }

    /// Fills `bufs` with the next slices to write, in order, and returns how many it filled.
    /// A stream's current piece ends the list: its next piece is pulled once it is written.
    pub fn front_vectored<'a>(&'a self, bufs: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for seg in &self.segs {
            if n == bufs.len() {
                break;
            }
            let r = seg.remaining();
            if !r.is_empty() {
                bufs[n] = IoSlice::new(r);
                n += 1;
            }
            if matches!(seg, Seg::Stream { .. }) {
                break;
            }
        }
        n
    }

    /// `n` bytes were written: a prefix of [`Output::front`], or of the slices of
    /// [`Output::front_vectored`] (segments written completely are dropped on the way).
    pub fn advance(&mut self, mut n: usize) {
        while let Some(seg) = self.segs.front_mut() {
            let take = n.min(seg.remaining().len());
            match seg {
                Seg::Buf { pos, .. } | Seg::Value { pos, .. } | Seg::Stream { pos, .. } => *pos += take,
            }
            self.pending = self.pending.saturating_sub(take);
            n -= take;
            if n == 0 || matches!(seg, Seg::Stream { .. }) {
                return;
            }
            // Written completely, with more bytes to account for in the next segment.
            self.pop_front();
        }
    }

    /// Drops finished segments and pulls the next piece of a stream at the front, until
    /// the front has bytes to write (or the queue is empty). A dropped value ends its read.
    pub fn settle(&mut self) {
        while let Some(seg) = self.segs.front_mut() {
            match seg {
                Seg::Buf { data, pos, .. } => {
                    if *pos < data.len() {
                        return;
                    }
                }
                Seg::Value { value, pos } => {
                    if *pos < value.bytes().len() {
                        return;
                    }
                }
                Seg::Stream { stream, chunked, buf, pos, finished } => {
                    if *pos < buf.len() {
                        return;
                    }
                    if !*finished {
                        let (more, start) = pull(stream.as_mut(), *chunked, buf);
                        *finished = !more;
                        *pos = start;
                        self.pending += buf.len() - start;
                        continue;
                    }
                }
            }
            self.pop_front();
        }
    }
}

/// Pulls the next piece of `stream` into `buf`, framed as a chunk when `chunked`.
/// Returns whether more pieces follow and where the bytes to write start in `buf`.
fn pull(stream: &mut dyn BodyStream, chunked: bool, buf: &mut Vec<u8>) -> (bool, usize) {
    buf.clear();
    if !chunked {
        let more = stream.next_chunk(buf);
        return (more, 0);
    }
    buf.resize(CHUNK_PREFIX, 0);
    let more = stream.next_chunk(buf);
    let n = buf.len() - CHUNK_PREFIX;
    let mut start = CHUNK_PREFIX;
    if n > 0 {
        let line = format!("{n:x}\r\n");
        start = CHUNK_PREFIX - line.len();
        buf[start..CHUNK_PREFIX].copy_from_slice(line.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if !more {
        buf.extend_from_slice(b"0\r\n\r\n");
    }
    (more, start)
}
