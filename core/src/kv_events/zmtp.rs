//! The ZeroMQ PUB side of one subscriber connection (ZMTP 3.0/3.1, NULL security), sans-IO:
//! the caller feeds received bytes, offers messages, and writes out what
//! [`PubSession::poll_transmit`] returns. Enough of ZMTP for libzmq's (pyzmq's) SUB and XSUB
//! sockets, which is what upstream's publisher serves (routing.md §1.3).
//!
//! ```text
//!   Greeting ──64 bytes each way (version 3.x, mechanism NULL)──► Handshake
//!   Handshake ──peer READY (Socket-Type SUB or XSUB), our READY sent──► Ready
//!   Ready: SUBSCRIBE / CANCEL (3.1 commands, or 3.0 messages 0x01 / 0x00 + prefix) change
//!          the prefixes; PING is answered with PONG; messages whose first frame starts
//!          with a subscribed prefix are queued, others dropped (as a PUB socket filters)
//!   anything malformed ──► Closed
//! ```
//!
//! A subscriber that does not read makes its queue grow: past `hwm` messages, further ones
//! are dropped (and counted), as libzmq's send high-water mark does.

use std::collections::VecDeque;

/// The greeting mc-master sends: signature, version 3.1, mechanism `NULL`, as-server 0.
fn greeting() -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3;
    g[11] = 1;
    g[12..16].copy_from_slice(b"NULL");
    g
}

/// Frame flags.
const MORE: u8 = 0x01;
const LONG: u8 = 0x02;
const COMMAND: u8 = 0x04;

/// The largest frame a subscriber may send (subscriptions are short).
const MAX_IN_FRAME: u64 = 64 * 1024;

/// Where the handshake is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the peer's 64-byte greeting.
    Greeting,
    /// Waiting for the peer's READY.
    Handshake,
    /// Subscriptions and messages flow.
    Ready,
    /// The peer broke the protocol (or is not a subscriber): close the connection.
    Closed,
}

/// One subscriber connection.
#[derive(Debug)]
pub struct PubSession {
    phase: Phase,
    input: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// Encoded messages waiting behind `out` (shared by every subscriber they went to).
    queue: VecDeque<bytes::Bytes>,
    hwm: usize,
    prefixes: Vec<Vec<u8>>,
    /// Messages dropped for the high-water mark.
    pub dropped: u64,
    /// Why the session closed, once it did.
    pub why: Option<String>,
}

/// Encodes one frame.
fn frame(out: &mut Vec<u8>, flags: u8, body: &[u8]) {
    if body.len() > 255 {
        out.push(flags | LONG);
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    } else {
        out.push(flags);
        out.push(body.len() as u8);
    }
    out.extend_from_slice(body);
}

/// The body of a READY command announcing `socket_type`.
fn ready(socket_type: &str) -> Vec<u8> {
    let mut b = vec![5];
    b.extend_from_slice(b"READY");
    b.push(11);
    b.extend_from_slice(b"Socket-Type");
    b.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
    b.extend_from_slice(socket_type.as_bytes());
    b
}

/// Encodes a multipart message (one frame per part).
pub fn encode_message(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 9).sum());
    for (i, p) in parts.iter().enumerate() {
        frame(&mut out, if i + 1 < parts.len() { MORE } else { 0 }, p);
    }
    out
}

/// The `Socket-Type` property of a READY body, if well formed.
fn socket_type(body: &[u8]) -> Option<&[u8]> {
    let mut rest = body.strip_prefix(b"\x05READY")?;
    while !rest.is_empty() {
        let n = *rest.first()? as usize;
        let name = rest.get(1..1 + n)?;
        let len = u32::from_be_bytes(rest.get(1 + n..5 + n)?.try_into().ok()?) as usize;
        let value = rest.get(5 + n..5 + n + len)?;
        if name.eq_ignore_ascii_case(b"Socket-Type") {
            return Some(value);
        }
        rest = &rest[5 + n + len..];
    }
    None
}

impl PubSession {
    /// A new connection; our greeting is queued at once. At most `hwm` messages wait.
    pub fn new(hwm: usize) -> Self {
        Self {
            phase: Phase::Greeting,
            input: Vec::new(),
            out: greeting().to_vec(),
            out_pos: 0,
            queue: VecDeque::new(),
            hwm: hwm.max(1),
            prefixes: Vec::new(),
            dropped: 0,
            why: None,
        }
    }

    /// Where the handshake is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Subscribed to at least one prefix.
    pub fn subscribed(&self) -> bool {
        !self.prefixes.is_empty()
    }

    fn close(&mut self, why: &str) {
        self.phase = Phase::Closed;
        self.why.get_or_insert_with(|| why.to_string());
    }

    /// Bytes received from the subscriber.
    pub fn handle_input(&mut self, data: &[u8]) {
        if self.phase == Phase::Closed {
            return;
        }
        self.input.extend_from_slice(data);
        let mut pos = 0;
        loop {
            let rest = &self.input[pos..];
            if self.phase == Phase::Greeting {
                if rest.len() < 64 {
                    break;
                }
                if rest[0] != 0xff || rest[9] & 1 != 1 || rest[10] < 3 {
                    self.close("not a ZMTP 3 peer");
                    break;
                }
                if &rest[12..16] != b"NULL" || rest[16..32].iter().any(|&b| b != 0) {
                    self.close("security mechanism other than NULL");
                    break;
                }
                pos += 64;
                self.phase = Phase::Handshake;
                continue;
            }
            // A frame: flags, size (1 or 8 bytes), body.
            let Some(&flags) = rest.first() else { break };
            let (hdr, size) = if flags & LONG != 0 {
                match rest.get(1..9) {
                    Some(b) => (9, u64::from_be_bytes(b.try_into().expect("8 bytes"))),
                    None => break,
                }
            } else {
                match rest.get(1) {
                    Some(&b) => (2, u64::from(b)),
                    None => break,
                }
            };
            if size > MAX_IN_FRAME {
                self.close("frame too large");
                break;
            }
            let Some(body) = rest.get(hdr..hdr + size as usize) else { break };
            let body = body.to_vec();
            pos += hdr + size as usize;
            self.frame_in(flags, &body);
            if self.phase == Phase::Closed {
                break;
            }
        }
        self.input.drain(..pos);
    }

    fn frame_in(&mut self, flags: u8, body: &[u8]) {
        let command = flags & COMMAND != 0;
        match self.phase {
            Phase::Handshake => {
                if !command {
                    return self.close("a message before READY");
                }
                match socket_type(body) {
                    Some(t) if t.eq_ignore_ascii_case(b"SUB") || t.eq_ignore_ascii_case(b"XSUB") => {
                        let mut out = Vec::new();
                        frame(&mut out, COMMAND, &ready("PUB"));
                        self.out.extend_from_slice(&out);
                        self.phase = Phase::Ready;
                    }
                    Some(_) => self.close("the peer is not a SUB or XSUB socket"),
                    None => self.close("expected READY"),
                }
            }
            Phase::Ready if command => {
                let n = body.first().copied().unwrap_or(0) as usize;
                let (name, data) = (body.get(1..1 + n).unwrap_or_default(), body.get(1 + n..).unwrap_or_default());
                match name {
                    b"SUBSCRIBE" => self.subscribe(data),
                    b"CANCEL" => self.cancel(data),
                    b"PING" => {
                        // PONG carries the PING's context (after its 2-byte TTL).
                        let mut b = vec![4];
                        b.extend_from_slice(b"PONG");
                        b.extend_from_slice(data.get(2..).unwrap_or_default());
                        let mut out = Vec::new();
                        frame(&mut out, COMMAND, &b);
                        self.out.extend_from_slice(&out);
                    }
                    _ => {}
                }
            }
            Phase::Ready => match body.split_first() {
                // ZMTP 3.0 subscriptions are messages: 1 = subscribe, 0 = cancel.
                Some((1, prefix)) => self.subscribe(prefix),
                Some((0, prefix)) => self.cancel(prefix),
                _ => {}
            },
            Phase::Greeting | Phase::Closed => {}
        }
    }

    fn subscribe(&mut self, prefix: &[u8]) {
        self.prefixes.push(prefix.to_vec());
    }

    fn cancel(&mut self, prefix: &[u8]) {
        if let Some(i) = self.prefixes.iter().position(|p| p == prefix) {
            self.prefixes.remove(i);
        }
    }

    /// Offers a message (`topic` is its first frame; `encoded` the whole message from
    /// [`encode_message`], shared, not copied, per subscriber): queued when the subscriber
    /// wants the topic, else dropped as a PUB socket drops unsubscribed topics. Returns
    /// whether it was queued.
    pub fn offer(&mut self, topic: &[u8], encoded: &bytes::Bytes) -> bool {
        if self.phase != Phase::Ready || !self.prefixes.iter().any(|p| topic.starts_with(p)) {
            return false;
        }
        if self.queue.len() >= self.hwm {
            self.dropped += 1;
            return false;
        }
        self.queue.push_back(encoded.clone());
        true
    }

    /// Bytes to write, if any.
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            // Batch the queued messages into one write buffer.
            while let Some(m) = self.queue.pop_front() {
                self.out.extend_from_slice(&m);
                if self.out.len() >= 256 * 1024 {
                    break;
                }
            }
        }
        (self.out_pos < self.out.len()).then(|| &self.out[self.out_pos..])
    }

    /// `n` bytes of [`PubSession::poll_transmit`] were written.
    pub fn consume(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
    }

    /// Messages and bytes still waiting to be written.
    pub fn backlog(&self) -> usize {
        self.queue.len() + usize::from(self.out_pos < self.out.len())
    }

    /// The connection should be closed.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A libzmq-like SUB peer's greeting (version 3.1) and READY.
    fn sub_hello(version_minor: u8) -> Vec<u8> {
        let mut g = greeting().to_vec();
        g[11] = version_minor;
        frame(&mut g, COMMAND, &ready("SUB"));
        g
    }

    fn drain(s: &mut PubSession) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(b) = s.poll_transmit() {
            let b = b.to_vec();
            s.consume(b.len());
            all.extend_from_slice(&b);
        }
        all
    }

    #[test]
    fn handshake_then_subscribed_messages_only() {
        let mut s = PubSession::new(10);
        let hello = drain(&mut s);
        assert_eq!(hello.len(), 64);
        assert_eq!(&hello[12..16], b"NULL");
        // Byte by byte, as a slow peer.
        for b in sub_hello(1) {
            s.handle_input(&[b]);
        }
        assert_eq!(s.phase(), Phase::Ready);
        let ready_out = drain(&mut s);
        assert_eq!(ready_out[0], COMMAND);
        assert_eq!(socket_type(&ready_out[2..]), Some(&b"PUB"[..]));
        let msg = bytes::Bytes::from(encode_message(&[b"", b"12345678", b"payload"]));
        assert!(!s.offer(b"", &msg), "nothing subscribed yet");
        // A 3.1 SUBSCRIBE command for the empty prefix.
        let mut sub = Vec::new();
        frame(&mut sub, COMMAND, b"\x09SUBSCRIBE");
        s.handle_input(&sub);
        assert!(s.offer(b"", &msg));
        assert_eq!(drain(&mut s), msg);
        // CANCEL stops it.
        let mut cancel = Vec::new();
        frame(&mut cancel, COMMAND, b"\x06CANCEL");
        s.handle_input(&cancel);
        assert!(!s.offer(b"", &msg));
    }

    #[test]
    fn zmtp_30_subscriptions_are_messages_and_prefixes_filter() {
        let mut s = PubSession::new(10);
        s.handle_input(&sub_hello(0));
        let mut sub = Vec::new();
        frame(&mut sub, 0, b"\x01kv");
        s.handle_input(&sub);
        drain(&mut s);
        let m = bytes::Bytes::from(encode_message(&[b"kv-a", b"x"]));
        assert!(s.offer(b"kv-a", &m));
        assert!(!s.offer(b"other", &m));
        assert_eq!(drain(&mut s), m);
    }

    #[test]
    fn the_high_water_mark_drops_and_counts() {
        let mut s = PubSession::new(2);
        s.handle_input(&sub_hello(1));
        let mut sub = Vec::new();
        frame(&mut sub, 0, b"\x01");
        s.handle_input(&sub);
        let m = bytes::Bytes::from(encode_message(&[b"", b"x"]));
        assert!(s.offer(b"", &m) && s.offer(b"", &m));
        assert!(!s.offer(b"", &m));
        assert_eq!(s.dropped, 1);
    }

    #[test]
    fn long_frames_ping_and_protocol_errors() {
        let big = vec![7u8; 300];
        let m = encode_message(&[b"", &big]);
        assert_eq!(m[2], LONG, "the last frame: no MORE");
        assert_eq!(&m[3..11], &300u64.to_be_bytes());
        let mut s = PubSession::new(4);
        s.handle_input(&sub_hello(1));
        drain(&mut s);
        let mut ping = Vec::new();
        frame(&mut ping, COMMAND, b"\x04PING\x00\x0aabc");
        s.handle_input(&ping);
        assert_eq!(drain(&mut s), [COMMAND, 8, 4, b'P', b'O', b'N', b'G', b'a', b'b', b'c']);
        // Not ZMTP.
        let mut bad = PubSession::new(4);
        bad.handle_input(b"GET / HTTP/1.1\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        assert!(bad.is_closed());
        // A PUB peer is not a subscriber.
        let mut pubpeer = PubSession::new(4);
        let mut g = greeting().to_vec();
        frame(&mut g, COMMAND, &ready("PUB"));
        pubpeer.handle_input(&g);
        assert!(pubpeer.is_closed());
        // An oversized frame closes.
        let mut huge = PubSession::new(4);
        huge.handle_input(&sub_hello(1));
        let mut f = vec![LONG];
        f.extend_from_slice(&(1u64 << 40).to_be_bytes());
        huge.handle_input(&f);
        assert!(huge.is_closed());
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let mut x = 0x1234_5678_9abc_def1u64;
        for round in 0..2000 {
            let mut s = PubSession::new(4);
            if round % 2 == 0 {
                s.handle_input(&sub_hello(1));
            }
            let n = (round % 97) + 1;
            let bytes: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            s.handle_input(&bytes);
            let _ = s.poll_transmit();
        }
    }
}
