//! (e) The master RPC codec (`mc_core::rpc`, rpc-spec §2–§3) on arbitrary bytes: the
//! 20-byte request header, and struct_pack bodies of every RPC's request and result type.
//! No panic; every buffer that decodes re-encodes, in the style it was sent in, to the same
//! bytes (a `meta` byte of 0 aside, which the encoder leaves out) and decodes again to the
//! same value; the canonical (Release, narrowest lengths) and Debug encodings decode to it
//! too. A length field cannot make the decoder allocate more than the input holds: no value
//! has more container elements than its buffer has bytes, and no single allocation is larger
//! than a small multiple of the input.
//!
//! The input is read three ways, so that seeds and mutations reach every decoder:
//! - as a frame: `RequestHeader::parse` of the first 20 bytes (must write back the same
//!   bytes), then, when the body is there, the body decoded as the request type of the
//!   function id, as the service does;
//! - as a body: decoded as every request and result type (the type hash picks one);
//! - typed: byte 0 picks a type, bit 0 of byte 1 the hash's meta flag, and the rest follows
//!   that type's hash (so mutations need not find a 32-bit hash).
#![no_main]

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mc_core::rpc::{
    decode_with, encode_with, lookup, method_name, wire, RequestHeader, Style, Ty, Value, REQ_HDR, RPCS,
};

use mc_fuzz::LARGEST;

/// A type the master decodes or encodes, with its literal and hash.
struct Case {
    ty: Ty,
    literal: Vec<u8>,
    hash: u32,
}

impl Case {
    fn new(ty: Ty) -> Self {
        Case { ty, literal: ty.literal(), hash: ty.hash() }
    }
}

/// Every request type (as the service resolves it) and result type of the RPC table, and the
/// two error-body types.
fn cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| {
        let mut v = Vec::new();
        for def in RPCS {
            let info = lookup(def.id).expect("every RPC of the table is looked up by its id");
            assert!(std::ptr::eq(info.def, def), "function id {:#010x} resolves to another RPC", def.id);
            if let Some(ty) = info.req {
                assert_eq!((info.req_literal.as_slice(), info.req_hash), (&ty.literal()[..], ty.hash()));
                v.push(Case { ty, literal: info.req_literal.clone(), hash: info.req_hash });
            }
            assert_eq!((info.ret_literal.as_slice(), info.ret_hash), (&def.ret.literal()[..], def.ret.hash()));
            v.push(Case { ty: def.ret, literal: info.ret_literal.clone(), hash: info.ret_hash });
        }
        v.push(Case::new(wire::ERROR_BODY));
        v.push(Case::new(wire::ERROR_BODY_255));
        v
    })
}

/// Decodes `data` as `c`; when that succeeds, checks the round trips.
fn check(c: &Case, data: &[u8]) {
    let Ok((v, info)) = decode_with(&c.ty, &c.literal, c.hash, data) else { return };
    assert!(info.consumed <= data.len(), "consumed {} of {} bytes", info.consumed, data.len());
    assert!(info.len_code <= 3);
    // Lengths that fit the width they were sent in never need a wider one.
    let need = c.ty.len_code_for(&v).expect("a decoded value has its type's shape");
    assert!(need <= info.len_code, "decoded with width code {} a value that needs {need}", info.len_code);

    // Same style: the same bytes.
    let style = info.style();
    let again = encode_with(&c.ty, &c.literal, c.hash, &v, style).expect("a decoded value encodes");
    let sent = &data[..info.consumed];
    if info.meta == Some(0) {
        // `hash|1, meta 0` (no literal, 1-byte lengths) is written as the bare hash.
        assert_eq!(&again[..4], &c.hash.to_le_bytes());
        assert_eq!(&again[4..], &sent[5..], "payload re-encoded differently");
    } else {
        assert_eq!(again, sent, "re-encoded differently (style {style:?})");
    }
    let (v2, info2) = decode_with(&c.ty, &c.literal, c.hash, &again).expect("a re-encoded buffer decodes");
    assert_eq!(v2, v);
    assert_eq!((info2.consumed, info2.len_code), (again.len(), info.len_code));

    // Other styles decode to the same value and use the width struct_pack would choose.
    for style in [Style { type_info: false, len_code: 0 }, Style { type_info: true, len_code: 0 }] {
        let b = encode_with(&c.ty, &c.literal, c.hash, &v, style).expect("a decoded value encodes");
        let (v3, info3) = decode_with(&c.ty, &c.literal, c.hash, &b).expect("an encoded buffer decodes");
        assert_eq!(v3, v, "{style:?}");
        assert_eq!((info3.consumed, info3.len_code), (b.len(), need), "{style:?}");
    }
    // A decoded value is not larger than its buffer (counting containers' elements).
    assert!(elements(&v) <= info.consumed, "{} elements from {} bytes", elements(&v), info.consumed);
}

/// Elements of every container in `v` (strings count their bytes; struct fields are not
/// elements). Each takes at least one byte of its own on the wire.
fn elements(v: &Value) -> usize {
    match v {
        Value::Str(s) => s.len(),
        Value::List(xs) => xs.len() + xs.iter().map(elements).sum::<usize>(),
        Value::Struct(xs) => xs.iter().map(elements).sum(),
        Value::Map(ps) => ps.len() + ps.iter().map(|(a, b)| elements(a) + elements(b)).sum::<usize>(),
        Value::Opt(Some(x)) | Value::Variant(_, x) | Value::Ok(x) | Value::Err(x) => elements(x),
        Value::Int(_) | Value::UInt(_) | Value::Bool(_) | Value::Opt(None) | Value::Void => 0,
    }
}

/// The input as a request frame.
fn frame(data: &[u8]) {
    if data.len() < REQ_HDR {
        return;
    }
    let h = RequestHeader::parse(data);
    let mut back = Vec::new();
    h.write(&mut back);
    assert_eq!(back, &data[..REQ_HDR], "{h:?}");
    assert_eq!(h.payload_len(), u64::from(h.length) + u64::from(h.attach_length));
    let rpc = lookup(h.function_id);
    if let Some(info) = rpc {
        assert_eq!(info.def.id, h.function_id);
        assert_eq!(method_name(h.function_id), Some(info.def.name), "a table RPC the client does not know");
    }
    let body = &data[REQ_HDR..];
    if let (Some(info), Some(ty)) = (rpc, rpc.and_then(|i| i.req)) {
        if let Some(body) = body.get(..h.length as usize) {
            check(&Case { ty, literal: info.req_literal.clone(), hash: info.req_hash }, body);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let cases = cases();
    LARGEST.store(0, Ordering::Relaxed);
    frame(data);
    for c in cases {
        check(c, data);
    }
    if let [pick, flag, rest @ ..] = data {
        let c = &cases[usize::from(*pick) % cases.len()];
        let mut buf = (c.hash | u32::from(flag & 1)).to_le_bytes().to_vec();
        buf.extend_from_slice(rest);
        check(c, &buf);
    }
    // A vector or map sized by a length field that the rest of the input cannot back would
    // exceed this (the largest element is a map entry).
    let largest = LARGEST.load(Ordering::Relaxed);
    let limit = 4096 + 2 * std::mem::size_of::<(Value, Value)>() * data.len();
    assert!(largest <= limit, "an allocation of {largest} bytes for {} input bytes", data.len());
});
