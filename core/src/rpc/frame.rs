//! coro_rpc framing (`reference/rpc/rpc-spec.md` §2): the 20-byte request header, the 16-byte
//! response header and the coro_rpc error bodies.

use super::pack::{encode_with, Style, Value};
use super::types::ERROR_BODY;

/// First byte of every frame.
pub const MAGIC: u8 = 0x15;
/// Request header length.
pub const REQ_HDR: usize = 20;
/// Response header length.
pub const RESP_HDR: usize = 16;

/// coro_rpc `errc::invalid_rpc_arguments`: the body does not decode as the argument types.
pub const ERRC_INVALID_ARG: u8 = 4;
/// coro_rpc `errc::rpc_throw_exception`: the handler failed.
pub const ERRC_EXCEPTION: u8 = 10;
/// coro_rpc `errc::function_not_registered`.
pub const ERRC_NOT_REGISTERED: u8 = 11;
/// Message of [`ERRC_INVALID_ARG`] (the real master's text).
pub const MSG_INVALID_ARG: &str = "invalid rpc arg";
/// Message of [`ERRC_NOT_REGISTERED`] (the real master's text).
pub const MSG_NOT_REGISTERED: &str = "the rpc function not registered";

/// A request header (packed, little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// `0x15`.
    pub magic: u8,
    /// `0`.
    pub version: u8,
    /// `0` = struct_pack.
    pub serialize_type: u8,
    /// Ignored by the server.
    pub msg_type: u8,
    /// Per-connection counter, echoed in the reply.
    pub seq: u32,
    /// Which method (§2.6).
    pub function_id: u32,
    /// Body bytes.
    pub length: u32,
    /// Attachment bytes (read and discarded).
    pub attach_length: u32,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

impl RequestHeader {
    /// The header of a struct_pack request of `length` body bytes to `function_id`, as the
    /// upstream client writes it (magic, version 0, no attachment).
    pub fn new(seq: u32, function_id: u32, length: u32) -> Self {
        Self { magic: MAGIC, version: 0, serialize_type: 0, msg_type: 0, seq, function_id, length, attach_length: 0 }
    }

    /// Parses the first [`REQ_HDR`] bytes of `b` (which must hold them).
    pub fn parse(b: &[u8]) -> Self {
        Self {
            magic: b[0],
            version: b[1],
            serialize_type: b[2],
            msg_type: b[3],
            seq: u32_at(b, 4),
            function_id: u32_at(b, 8),
            length: u32_at(b, 12),
            attach_length: u32_at(b, 16),
        }
    }

    /// The real master closes the connection, without a reply, on anything else (§2.1).
    pub fn is_acceptable(&self) -> bool {
        self.magic == MAGIC && self.version == 0 && self.serialize_type == 0
    }

    /// Body plus attachment bytes that follow the header.
    pub fn payload_len(&self) -> u64 {
        u64::from(self.length) + u64::from(self.attach_length)
    }

    /// Appends the header bytes.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.magic, self.version, self.serialize_type, self.msg_type]);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.function_id.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.attach_length.to_le_bytes());
    }
}

/// A response header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHeader {
    /// `0x15`.
    pub magic: u8,
    /// `0`.
    pub version: u8,
    /// 0 = success; else a coro_rpc errc.
    pub err_code: u8,
    /// `0`.
    pub msg_type: u8,
    /// The request's seq.
    pub seq: u32,
    /// Body bytes.
    pub length: u32,
    /// Attachment bytes (always 0 here).
    pub attach_length: u32,
}

impl ResponseHeader {
    /// Parses the first [`RESP_HDR`] bytes of `b` (which must hold them).
    pub fn parse(b: &[u8]) -> Self {
        Self {
            magic: b[0],
            version: b[1],
            err_code: b[2],
            msg_type: b[3],
            seq: u32_at(b, 4),
            length: u32_at(b, 8),
            attach_length: u32_at(b, 12),
        }
    }

    /// Appends the header bytes.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.magic, self.version, self.err_code, self.msg_type]);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.attach_length.to_le_bytes());
    }
}

/// Appends a complete reply frame: header (magic, version 0, msg_type 0, no attachment) and body.
pub fn write_response(out: &mut Vec<u8>, seq: u32, err_code: u8, body: &[u8]) {
    let length = u32::try_from(body.len()).expect("reply bodies are far below 4 GiB");
    ResponseHeader { magic: MAGIC, version: 0, err_code, msg_type: 0, seq, length, attach_length: 0 }.write(out);
    out.extend_from_slice(body);
}

/// The body of a coro_rpc error reply (err_code 1..=254): the message as a struct_pack string,
/// Debug style like the real master (`77 fa cf 9d 04 80 0c 00 <len> <text>`).
pub fn error_body(msg: &str) -> Vec<u8> {
    encode_with(&ERROR_BODY, &[0x80, 0x0c], ERROR_BODY.hash(), &Value::str(msg), Style { type_info: true, len_code: 0 })
        .expect("a string is a string")
}
