//! The TE TCP data-port frames (data-plane.md §1.2, §1.3): the 24-byte request header and
//! the 8-byte status frame.
//!
//! ```text
//!   request header, client → server (24 bytes)
//!   0        8        16  17          24
//!   | size   | addr   |op | padding   |      size, addr: u64 LE; op: bit 7 = v2, low 7 bits
//!                                            1 = WRITE, anything else = READ; padding: ignored
//!                                            on decode (garbage on the wire), zeros on encode
//!   status frame, server → client (8 bytes, v2 only)
//!   | 0x4D435456_0000_0000 | code |           u64 LE; "MCTV" magic in the high 32 bits
//! ```

use std::fmt;

/// Length of a request header on the wire.
pub const HEADER_LEN: usize = 24;
/// Length of a status frame on the wire.
pub const STATUS_LEN: usize = 8;
/// The high 32 bits of every status frame ("MCTV").
pub const STATUS_MAGIC: u64 = 0x4D43_5456_0000_0000;
/// Bit 7 of the opcode: v2 (acknowledged) framing.
pub const OPCODE_V2: u8 = 0x80;
/// The low 7 bits of a WRITE opcode.
pub const OPCODE_WRITE: u8 = 0x01;
/// The low 7 bits of a READ opcode as sent (any value other than 1 is read as READ).
pub const OPCODE_READ: u8 = 0x00;

/// The direction of a request, seen from the initiator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// The initiator reads `size` bytes of target memory.
    Read,
    /// The initiator writes `size` bytes into target memory.
    Write,
}

/// The framing of one request (chosen per request, by the opcode's bit 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// No status frame: WRITE gets no reply, READ gets the bytes alone.
    V1,
    /// A status frame: after a WRITE's payload is in memory, before a READ's bytes.
    V2,
}

impl Op {
    /// The operation an opcode byte asks for: low 7 bits `1` is WRITE, anything else READ
    /// (§1.2: `0x85` and `0x07` are served as reads).
    pub fn from_opcode(opcode: u8) -> Self {
        if opcode & !OPCODE_V2 == OPCODE_WRITE {
            Op::Write
        } else {
            Op::Read
        }
    }
}

impl Framing {
    /// The framing an opcode byte asks for (bit 7).
    pub fn from_opcode(opcode: u8) -> Self {
        if opcode & OPCODE_V2 != 0 {
            Framing::V2
        } else {
            Framing::V1
        }
    }

    /// The framing a peer's descriptor asks for: v2 when `tcp_proto_version >= 2`
    /// (data-plane.md §2.3).
    pub fn from_proto_version(version: u32) -> Self {
        if version >= 2 {
            Framing::V2
        } else {
            Framing::V1
        }
    }
}

/// A request header (`struct SessionHeader { u64 size; u64 addr; u8 opcode; }` plus its
/// 7 padding bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Payload length in bytes (first on the wire).
    pub size: u64,
    /// Absolute address in the target's advertised address space.
    pub addr: u64,
    /// READ or WRITE.
    pub op: Op,
    /// v1 or v2.
    pub framing: Framing,
}

impl Header {
    /// Decodes a header; the padding is ignored.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Self {
        let (size, addr) = (le_u64(bytes, 0), le_u64(bytes, 8));
        let opcode = bytes[16];
        Self { size, addr, op: Op::from_opcode(opcode), framing: Framing::from_opcode(opcode) }
    }

    /// Decodes the header at the start of `bytes`; `None` while fewer than
    /// [`HEADER_LEN`] bytes are there.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let head: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Self::decode(head))
    }

    /// The opcode byte this header is sent with (`0x00`, `0x01`, `0x80` or `0x81`).
    pub fn opcode(&self) -> u8 {
        let op = match self.op {
            Op::Read => OPCODE_READ,
            Op::Write => OPCODE_WRITE,
        };
        match self.framing {
            Framing::V1 => op,
            Framing::V2 => op | OPCODE_V2,
        }
    }

    /// Encodes the header, padding as zeros.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(&self.size.to_le_bytes());
        out[8..16].copy_from_slice(&self.addr.to_le_bytes());
        out[16] = self.opcode();
        out
    }
}

/// A status frame's code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status {
    /// The low 32 bits: [`Status::OK`], [`Status::REJECTED`] or (from a newer peer) another
    /// code, which an initiator treats as a failure.
    pub code: u32,
}

/// A status frame whose high 32 bits are not [`STATUS_MAGIC`]: the peer speaks a legacy
/// protocol and the connection is to be dropped (§1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadMagic(pub u64);

impl fmt::Display for BadMagic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status frame with a wrong magic: {:#018x}", self.0)
    }
}

impl std::error::Error for BadMagic {}

impl Status {
    /// The request succeeded.
    pub const OK: Status = Status { code: 0 };
    /// The address range was rejected; the server closes the connection after it.
    pub const REJECTED: Status = Status { code: 1 };

    /// True for [`Status::OK`].
    pub fn is_ok(&self) -> bool {
        self.code == 0
    }

    /// Decodes a status frame, checking the magic.
    pub fn decode(bytes: &[u8; STATUS_LEN]) -> Result<Self, BadMagic> {
        let raw = u64::from_le_bytes(*bytes);
        if raw & 0xFFFF_FFFF_0000_0000 != STATUS_MAGIC {
            return Err(BadMagic(raw));
        }
        Ok(Self { code: raw as u32 })
    }

    /// Encodes the status frame.
    pub fn encode(&self) -> [u8; STATUS_LEN] {
        (STATUS_MAGIC | u64::from(self.code)).to_le_bytes()
    }
}

fn le_u64(bytes: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
    }

    fn head(s: &str) -> [u8; HEADER_LEN] {
        hex(s).try_into().unwrap()
    }

    #[test]
    fn golden_v2_write_header() {
        // te-tcp-frames.txt conn 1 req#0 (also data-plane.md §1.2).
        let bytes = head("64 00 00 00 00 00 00 00 00 00 00 c0 ee 7f 00 00 81 00 00 00 00 00 00 00");
        let h = Header::decode(&bytes);
        assert_eq!(h, Header { size: 100, addr: 0x7fee_c000_0000, op: Op::Write, framing: Framing::V2 });
        assert_eq!(h.encode(), bytes);
    }

    #[test]
    fn golden_headers_of_the_transcript() {
        let cases = [
            (
                "64 00 00 00 00 00 00 00 00 00 00 c0 ee 7f 00 00 80 00 00 00 00 00 00 00",
                100,
                0x7fee_c000_0000,
                Op::Read,
                Framing::V2,
            ),
            (
                "00 20 03 00 00 00 00 00 00 10 00 c0 ee 7f 00 00 81 00 00 00 00 00 00 00",
                204_800,
                0x7fee_c000_1000,
                Op::Write,
                Framing::V2,
            ),
            (
                "64 00 00 00 00 00 00 00 ce ff ff ff ee 7f 00 00 81 00 00 00 00 00 00 00",
                100,
                0x7fee_ffff_ffce,
                Op::Write,
                Framing::V2,
            ),
            (
                "00 10 00 00 00 00 00 00 00 10 10 c0 ee 7f 00 00 81 00 00 00 00 00 00 00",
                4096,
                0x7fee_c010_1000,
                Op::Write,
                Framing::V2,
            ),
        ];
        for (bytes, size, addr, op, framing) in cases {
            let bytes = head(bytes);
            let h = Header::decode(&bytes);
            assert_eq!(h, Header { size, addr, op, framing });
            assert_eq!(h.encode(), bytes);
        }
    }

    #[test]
    fn v1_headers_with_garbage_padding() {
        // te-tcp-frames.txt conns 5, 6, 8: one-shot v1 requests with uninitialised padding.
        let w = head("64 00 00 00 00 00 00 00 00 00 00 c0 ee 7f 00 00 01 65 79 3a 20 73 74 72");
        let r = head("64 00 00 00 00 00 00 00 00 00 00 c0 ee 7f 00 00 00 65 79 3a 20 73 74 72");
        let o = head("64 00 00 00 00 00 00 00 ce ff ff ff ee 7f 00 00 01 f0 93 01 90 02 64 3e");
        assert_eq!(
            Header::decode(&w),
            Header { size: 100, addr: 0x7fee_c000_0000, op: Op::Write, framing: Framing::V1 }
        );
        assert_eq!(
            Header::decode(&r),
            Header { size: 100, addr: 0x7fee_c000_0000, op: Op::Read, framing: Framing::V1 }
        );
        assert_eq!(Header::decode(&o).addr, 0x7fee_ffff_ffce);
        // Encoding writes zeros.
        assert_eq!(&Header::decode(&w).encode()[17..], &[0u8; 7]);
        assert_eq!(&Header::decode(&w).encode()[..17], &w[..17]);
    }

    #[test]
    fn unknown_opcodes_are_reads() {
        assert_eq!((Op::from_opcode(0x85), Framing::from_opcode(0x85)), (Op::Read, Framing::V2));
        assert_eq!((Op::from_opcode(0x07), Framing::from_opcode(0x07)), (Op::Read, Framing::V1));
        assert_eq!(Op::from_opcode(0x81), Op::Write);
        assert_eq!(Op::from_opcode(0x01), Op::Write);
        assert_eq!(Op::from_opcode(0x7f), Op::Read);
    }

    #[test]
    fn parse_needs_24_bytes() {
        let bytes = head("64 00 00 00 00 00 00 00 00 00 00 c0 ee 7f 00 00 81 00 00 00 00 00 00 00");
        assert_eq!(Header::parse(&bytes[..23]), None);
        assert_eq!(Header::parse(&bytes), Some(Header::decode(&bytes)));
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"payload");
        assert_eq!(Header::parse(&longer), Some(Header::decode(&bytes)));
    }

    #[test]
    fn golden_status_frames() {
        let ok: [u8; 8] = hex("00 00 00 00 56 54 43 4d").try_into().unwrap();
        let rejected: [u8; 8] = hex("01 00 00 00 56 54 43 4d").try_into().unwrap();
        assert_eq!(Status::OK.encode(), ok);
        assert_eq!(Status::REJECTED.encode(), rejected);
        assert_eq!(Status::decode(&ok), Ok(Status::OK));
        assert_eq!(Status::decode(&rejected), Ok(Status::REJECTED));
        assert!(Status::decode(&ok).unwrap().is_ok());
        assert!(!Status::REJECTED.is_ok());
    }

    #[test]
    fn status_with_a_wrong_magic_is_detected() {
        assert_eq!(Status::decode(&[0; 8]), Err(BadMagic(0)));
        let legacy = 0x4D43_5457_0000_0000u64.to_le_bytes();
        assert!(Status::decode(&legacy).is_err());
        assert!(Status::decode(b"ABCDEFGH").is_err());
    }

    #[test]
    fn proto_version_picks_framing() {
        assert_eq!(Framing::from_proto_version(0), Framing::V1);
        assert_eq!(Framing::from_proto_version(1), Framing::V1);
        assert_eq!(Framing::from_proto_version(2), Framing::V2);
        assert_eq!(Framing::from_proto_version(3), Framing::V2);
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![Just(Op::Read), Just(Op::Write)]
    }

    fn framing() -> impl Strategy<Value = Framing> {
        prop_oneof![Just(Framing::V1), Just(Framing::V2)]
    }

    proptest! {
        #[test]
        fn header_round_trip(size: u64, addr: u64, op in op(), framing in framing()) {
            let h = Header { size, addr, op, framing };
            prop_assert_eq!(Header::decode(&h.encode()), h);
        }

        #[test]
        fn decode_ignores_padding(bytes: [u8; 24]) {
            let h = Header::decode(&bytes);
            let mut zeroed = bytes;
            zeroed[17..].fill(0);
            prop_assert_eq!(Header::decode(&zeroed), h);
            // Re-encoding is canonical: opcode reduced to 0x00/0x01/0x80/0x81.
            prop_assert_eq!(Header::decode(&h.encode()), h);
        }

        #[test]
        fn status_round_trip(code: u32) {
            prop_assert_eq!(Status::decode(&Status { code }.encode()), Ok(Status { code }));
        }

        #[test]
        fn status_decode_never_panics(raw: u64) {
            let r = Status::decode(&raw.to_le_bytes());
            prop_assert_eq!(r.is_ok(), raw >> 32 == 0x4D43_5456);
        }
    }
}
