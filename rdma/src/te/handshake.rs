//! The handshake-port frame codec (data-plane.md §2.5).
//!
//! ```text
//!   | length: u64 LE | type: u8 | JSON (compact, ending in "\n") |
//!     length = 1 + len(JSON); 1 ..= 1 MiB
//!   old protocol: the first body byte is > 3 → the whole body is JSON, type Connection
//! ```
//!
//! [`HandshakeDecoder`] is incremental: push bytes as they arrive, pull frames.

use std::fmt;

use serde::Serialize;

use super::desc::to_json;

/// The largest accepted `length` (`MC_HANDSHAKE_MAX_LENGTH` upstream).
pub const MAX_FRAME_LEN: u64 = 1 << 20;
/// Length of the frame's length prefix.
pub const LEN_PREFIX: usize = 8;

/// A handshake frame's type; the reply has the request's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// 0: the RDMA QP exchange (§3.3); also every old-protocol frame.
    Connection,
    /// 1: "send me your segment descriptor".
    Metadata,
    /// 2: a notification `{name, notify_msg}`.
    Notify,
    /// 3: a liveness probe.
    Probe,
}

impl FrameType {
    /// The type of a type byte 0..=3.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(FrameType::Connection),
            1 => Some(FrameType::Metadata),
            2 => Some(FrameType::Notify),
            3 => Some(FrameType::Probe),
            _ => None,
        }
    }

    /// The type byte.
    pub fn byte(self) -> u8 {
        match self {
            FrameType::Connection => 0,
            FrameType::Metadata => 1,
            FrameType::Notify => 2,
            FrameType::Probe => 3,
        }
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The type ([`FrameType::Connection`] for an old-protocol frame).
    pub kind: FrameType,
    /// An old-protocol frame (no type byte); its reply is sent the same way.
    pub legacy: bool,
    /// The JSON body as received (usually with its trailing `"\n"`).
    pub json: Vec<u8>,
}

impl Frame {
    /// A frame of `kind` carrying `value` as compact JSON followed by `"\n"`.
    pub fn json<T: Serialize>(kind: FrameType, value: &T) -> Self {
        let mut json = to_json(value);
        json.push(b'\n');
        Self { kind, legacy: false, json }
    }

    /// The frame's bytes: length, type byte (none when `legacy`), JSON.
    pub fn encode(&self) -> Vec<u8> {
        let type_len = usize::from(!self.legacy);
        let len = (self.json.len() + type_len) as u64;
        let mut out = Vec::with_capacity(LEN_PREFIX + type_len + self.json.len());
        out.extend_from_slice(&len.to_le_bytes());
        if !self.legacy {
            out.push(self.kind.byte());
        }
        out.extend_from_slice(&self.json);
        out
    }
}

/// A frame that cannot be decoded; the connection is to be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// `length == 0`.
    Empty,
    /// `length` above [`MAX_FRAME_LEN`].
    TooLong(u64),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Empty => f.write_str("handshake frame of length 0"),
            HandshakeError::TooLong(n) => write!(f, "handshake frame of length {n} (at most {MAX_FRAME_LEN})"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Incremental frame decoder. After an error it keeps returning that error.
#[derive(Debug, Default)]
pub struct HandshakeDecoder {
    buf: Vec<u8>,
    error: Option<HandshakeError>,
}

impl HandshakeDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes. Input after a bad length prefix is dropped, so a decoder in
    /// error holds at most 8 bytes; otherwise it holds at most one frame plus what was pushed
    /// beyond it.
    pub fn push(&mut self, data: &[u8]) {
        if self.error.is_none() {
            self.buf.extend_from_slice(data);
            self.check_prefix();
        }
    }

    /// Bytes pushed but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` while it is incomplete.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, HandshakeError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let Some(len) = self.prefix() else { return Ok(None) };
        // check_prefix() bounded len to MAX_FRAME_LEN, so it fits a usize.
        let end = LEN_PREFIX + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let body = &self.buf[LEN_PREFIX..end];
        let frame = match body.first().copied().and_then(FrameType::from_byte) {
            Some(kind) => Frame { kind, legacy: false, json: body[1..].to_vec() },
            None => Frame { kind: FrameType::Connection, legacy: true, json: body.to_vec() },
        };
        self.buf.drain(..end);
        self.check_prefix();
        Ok(Some(frame))
    }

    fn prefix(&self) -> Option<u64> {
        let b: [u8; LEN_PREFIX] = self.buf.get(..LEN_PREFIX)?.try_into().ok()?;
        Some(u64::from_le_bytes(b))
    }

    fn check_prefix(&mut self) {
        let error = match self.prefix() {
            Some(0) => HandshakeError::Empty,
            Some(n) if n > MAX_FRAME_LEN => HandshakeError::TooLong(n),
            _ => return,
        };
        self.error = Some(error);
        self.buf.truncate(LEN_PREFIX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::te::desc::{HandShakeDesc, NotifyDesc};
    use proptest::prelude::*;

    fn frame_bytes(len: u64, kind: Option<u8>, json: &str) -> Vec<u8> {
        let mut out = len.to_le_bytes().to_vec();
        out.extend(kind);
        out.extend_from_slice(json.as_bytes());
        out
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, HandshakeError> {
        let mut d = HandshakeDecoder::new();
        d.push(bytes);
        let mut out = Vec::new();
        while let Some(f) = d.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn golden_requests_of_the_transcript() {
        // te-handshake-frames.txt conns 1-4 (raw python client) and the §2.5 golden bytes.
        let cases = [
            (23, 1, "{\"name\": \"raw-probe\"}\n", FrameType::Metadata),
            (4, 3, "{}\n", FrameType::Probe),
            (40, 2, "{\"name\": \"raw\", \"notify_msg\": \"hello\"}\n", FrameType::Notify),
            (
                82,
                0,
                "{\"local_nic_path\": \"x@y\", \"peer_nic_path\": \"127.0.0.1:8598@z\", \"qp_num\": [1, 2]}\n",
                FrameType::Connection,
            ),
        ];
        for (len, kind, json, want) in cases {
            let bytes = frame_bytes(len, Some(kind), json);
            assert_eq!(&bytes[..9], &[len as u8, 0, 0, 0, 0, 0, 0, 0, kind]);
            let frames = decode_all(&bytes).unwrap();
            assert_eq!(frames, vec![Frame { kind: want, legacy: false, json: json.as_bytes().to_vec() }]);
            assert_eq!(frames[0].encode(), bytes);
        }
    }

    #[test]
    fn golden_replies_encode_byte_for_byte() {
        let probe = Frame::json(FrameType::Probe, &serde_json::json!({"status": "success"}));
        assert_eq!(probe.encode(), frame_bytes(22, Some(3), "{\"status\":\"success\"}\n"));
        let notify = Frame::json(FrameType::Notify, &NotifyDesc { name: String::new(), notify_msg: "success".into() });
        assert_eq!(notify.encode(), frame_bytes(36, Some(2), "{\"name\":\"\",\"notify_msg\":\"success\"}\n"));
        let conn = Frame::json(FrameType::Connection, &HandShakeDesc::default());
        assert_eq!(
            conn.encode(),
            frame_bytes(
                111,
                Some(0),
                "{\"local_gid\":\"\",\"local_lid\":0,\"local_nic_path\":\"\",\"payload\":\"\",\"peer_nic_path\":\"\",\"qp_num\":[],\"reply_msg\":\"\"}\n"
            )
        );
        // te-handshake-frames.txt conn 1 reply: length 258 = 02 01 00 00 00 00 00 00.
        let json = "{\"buffers\":[{\"addr\":140524574998528,\"length\":268435456,\"name\":\"127.0.0.1:8598\"}],\"name\":\"127.0.0.1:8598\",\"protocol\":\"tcp\",\"rdma_server_name\":\"\",\"tcp_data_host\":\"127.0.0.1\",\"tcp_data_port\":8594,\"tcp_proto_version\":2,\"timestamp\":\"2026-11-27 03:01:52.297568\"}\n";
        let meta = Frame { kind: FrameType::Metadata, legacy: false, json: json.as_bytes().to_vec() }.encode();
        assert_eq!(&meta[..9], &[0x02, 0x01, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn old_protocol_body_is_all_json() {
        let bytes = frame_bytes(3, None, "{}\n");
        let frames = decode_all(&bytes).unwrap();
        assert_eq!(frames, vec![Frame { kind: FrameType::Connection, legacy: true, json: b"{}\n".to_vec() }]);
        assert_eq!(frames[0].encode(), bytes);
        // First byte 4 is already "old protocol".
        let frames = decode_all(&frame_bytes(2, Some(4), "x")).unwrap();
        assert_eq!(frames[0].json, vec![4, b'x']);
        assert!(frames[0].legacy);
    }

    #[test]
    fn type_only_frame_has_empty_json() {
        assert_eq!(decode_all(&frame_bytes(1, Some(3), "")).unwrap()[0].json, Vec::<u8>::new());
    }

    #[test]
    fn length_limits() {
        assert_eq!(decode_all(&frame_bytes(0, Some(1), "{}\n")), Err(HandshakeError::Empty));
        assert_eq!(
            decode_all(&frame_bytes(MAX_FRAME_LEN + 1, Some(1), "")),
            Err(HandshakeError::TooLong(MAX_FRAME_LEN + 1))
        );
        assert_eq!(decode_all(&u64::MAX.to_le_bytes()), Err(HandshakeError::TooLong(u64::MAX)));
        // Exactly 1 MiB is accepted.
        let mut bytes = frame_bytes(MAX_FRAME_LEN, Some(1), "");
        bytes.resize(LEN_PREFIX + MAX_FRAME_LEN as usize, b' ');
        assert_eq!(decode_all(&bytes).unwrap().len(), 1);
    }

    #[test]
    fn error_is_sticky_and_drops_input() {
        let mut d = HandshakeDecoder::new();
        d.push(&0u64.to_le_bytes());
        assert_eq!(d.next_frame(), Err(HandshakeError::Empty));
        d.push(&[0; 1000]);
        assert_eq!(d.buffered(), LEN_PREFIX);
        assert_eq!(d.next_frame(), Err(HandshakeError::Empty));
    }

    #[test]
    fn error_is_reported_before_the_body_arrives() {
        let mut d = HandshakeDecoder::new();
        d.push(&(MAX_FRAME_LEN + 1).to_le_bytes());
        assert_eq!(d.next_frame(), Err(HandshakeError::TooLong(MAX_FRAME_LEN + 1)));
    }

    #[test]
    fn incomplete_frames_wait() {
        let bytes = frame_bytes(4, Some(3), "{}\n");
        let mut d = HandshakeDecoder::new();
        for &b in &bytes[..bytes.len() - 1] {
            d.push(&[b]);
            assert_eq!(d.next_frame(), Ok(None));
        }
        d.push(&bytes[bytes.len() - 1..]);
        assert_eq!(d.next_frame().unwrap().unwrap().kind, FrameType::Probe);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn back_to_back_frames() {
        let mut bytes = frame_bytes(4, Some(3), "{}\n");
        bytes.extend(frame_bytes(3, None, "{}\n"));
        bytes.extend(frame_bytes(0, None, ""));
        let mut d = HandshakeDecoder::new();
        d.push(&bytes);
        assert_eq!(d.next_frame().unwrap().unwrap().kind, FrameType::Probe);
        assert!(d.next_frame().unwrap().unwrap().legacy);
        assert_eq!(d.next_frame(), Err(HandshakeError::Empty));
    }

    fn kind() -> impl Strategy<Value = FrameType> {
        prop_oneof![
            Just(FrameType::Connection),
            Just(FrameType::Metadata),
            Just(FrameType::Notify),
            Just(FrameType::Probe)
        ]
    }

    proptest! {
        #[test]
        fn frame_round_trip_with_any_split(kind in kind(), json in proptest::collection::vec(any::<u8>(), 0..200), cut in any::<prop::sample::Index>()) {
            let frame = Frame { kind, legacy: false, json };
            let bytes = frame.encode();
            let cut = cut.index(bytes.len() + 1);
            let mut d = HandshakeDecoder::new();
            d.push(&bytes[..cut]);
            let early = d.next_frame().unwrap();
            d.push(&bytes[cut..]);
            let got = match early { Some(f) => f, None => d.next_frame().unwrap().unwrap() };
            prop_assert_eq!(got, frame);
        }

        #[test]
        fn legacy_round_trip(first in 4u8.., rest in proptest::collection::vec(any::<u8>(), 0..50)) {
            let mut json = vec![first];
            json.extend(rest);
            let frame = Frame { kind: FrameType::Connection, legacy: true, json };
            prop_assert_eq!(decode_all(&frame.encode()).unwrap(), vec![frame]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4)) {
            let whole = decode_all(&bytes);
            let mut d = HandshakeDecoder::new();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut prev = 0;
            let mut frames = Vec::new();
            let mut err = None;
            for p in points.into_iter().chain([bytes.len()]) {
                d.push(&bytes[prev..p]);
                prev = p;
                loop {
                    match d.next_frame() {
                        Ok(Some(f)) => frames.push(f),
                        Ok(None) => break,
                        Err(e) => { err = Some(e); break }
                    }
                }
                if err.is_some() { break }
            }
            match whole {
                Ok(w) => { prop_assert_eq!(err, None); prop_assert_eq!(w, frames); }
                Err(e) => { prop_assert_eq!(err, Some(e)); }
            }
        }
    }
}
