//! The struct_pack subset of the master RPC protocol (`reference/rpc/rpc-spec.md` §3).
//!
//! A wire type is described by a [`Ty`] (a static tree: the Mooncake types are `const`s in
//! `types.rs`); a value is a dynamic [`Value`]. From a `Ty` come its type literal, its hash and
//! its encoder/decoder, so no byte string is written by hand:
//!
//! ```text
//!   buffer = hash:u32 LE | [meta:u8] | [literal ‖ 0x00] | payload
//!   hash   = MD5(literal)[0..4] big-endian, bit 0 cleared; bit 0 set ⇔ a meta byte follows
//!   meta   = bit 2: the literal follows; bits 3–4: width code of every container length
//! ```
//!
//! The width code (LEN_SIZE) is chosen from the largest element count of any container in the
//! whole value (§3.1): `< 2^8` → 1 byte, `< 2^16` → 2, `< 2^32` → 4, else 8. Decoding accepts
//! every style (Debug with literal, Release bare hash, any width) and ignores trailing bytes,
//! like yalantinglibs' receiver.

use super::md5::md5_hash32;

/// A wire type (the subset of struct_pack the Mooncake master RPCs use).
#[derive(Clone, Copy, Debug)]
pub enum Ty {
    /// `int8_t` (`05`).
    I8,
    /// `uint8_t` and `enum class : uint8_t` (`06`).
    U8,
    /// `uint16_t` (`08`).
    U16,
    /// `int32_t` and int-based `enum class` (`01`).
    I32,
    /// `uint32_t` (`02`).
    U32,
    /// `int64_t`, `long` (`03`).
    I64,
    /// `uint64_t`, `size_t`, `uintptr_t` (`04`).
    U64,
    /// `bool` (`0b`).
    Bool,
    /// `std::string` (`80 0c`): a length and raw bytes.
    Str,
    /// `void` / `std::monostate` (`fa`): no bytes.
    Void,
    /// `std::vector<T>` (`84 T`).
    Vec(&'static Ty),
    /// `std::optional<T>` (`85 T`).
    Opt(&'static Ty),
    /// `std::unordered_map<K, V>` (`82 K V`).
    Map(&'static Ty, &'static Ty),
    /// `std::variant<T…>` (`86 T… ff`): a u8 index and the alternative.
    Variant(&'static [Ty]),
    /// `tl::expected<T, E>` (`87 T E`): a has-value byte and T or E.
    Expected(&'static Ty, &'static Ty),
    /// A reflected struct, `std::tuple` or `std::pair` (`fd fields… ff`).
    Struct(&'static [Ty]),
    /// A trivially serializable struct (`fd fields… sa sb ff`, `sa` = 129 + pack alignment,
    /// `sb` = 129 + alignment); only `std::pair<u64, u64>` here.
    Trivial(&'static [Ty], u8, u8),
}

/// A dynamic value of some [`Ty`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Any signed integer or int-based enum.
    Int(i64),
    /// Any unsigned integer or u8-based enum.
    UInt(u64),
    /// `bool`.
    Bool(bool),
    /// A string's raw bytes (no encoding check, as struct_pack).
    Str(Vec<u8>),
    /// A vector.
    List(Vec<Value>),
    /// An unordered map, in wire order.
    Map(Vec<(Value, Value)>),
    /// An optional.
    Opt(Option<Box<Value>>),
    /// A variant: alternative index and value.
    Variant(u8, Box<Value>),
    /// An `expected` holding a value.
    Ok(Box<Value>),
    /// An `expected` holding an error.
    Err(Box<Value>),
    /// A struct, tuple or pair: the fields in order.
    Struct(Vec<Value>),
    /// `void` / monostate.
    Void,
}

impl Value {
    /// A string value.
    pub fn str(s: &str) -> Value {
        Value::Str(s.as_bytes().to_vec())
    }
    /// `expected` with a value.
    pub fn ok(v: Value) -> Value {
        Value::Ok(Box::new(v))
    }
    /// `expected<void, E>` success.
    pub fn ok_void() -> Value {
        Value::Ok(Box::new(Value::Void))
    }
    /// `expected<T, ErrorCode>` failure.
    pub fn err(code: i32) -> Value {
        Value::Err(Box::new(Value::Int(code.into())))
    }
    /// An optional value.
    pub fn opt(v: Option<Value>) -> Value {
        Value::Opt(v.map(Box::new))
    }
    /// The integer of an unsigned value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::UInt(v) => Some(v),
            _ => None,
        }
    }
    /// The integer of a signed value.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(v) => Some(v),
            _ => None,
        }
    }
    /// The boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }
    /// The bytes of a string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(v) => Some(v),
            _ => None,
        }
    }
    /// The elements of a vector.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) => Some(v),
            _ => None,
        }
    }
    /// The fields of a struct or tuple.
    pub fn as_fields(&self) -> Option<&[Value]> {
        match self {
            Value::Struct(v) => Some(v),
            _ => None,
        }
    }
    /// The content of an optional.
    pub fn as_opt(&self) -> Option<Option<&Value>> {
        match self {
            Value::Opt(v) => Some(v.as_deref()),
            _ => None,
        }
    }
}

/// Why a buffer does not decode as the expected type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the value needs.
    #[error("buffer too short")]
    Truncated,
    /// The hash bits differ from the expected type's (`invalid_buffer`).
    #[error("type hash {got:#010x} != {want:#010x}")]
    BadHash {
        /// Hash bits received.
        got: u32,
        /// Hash bits of the expected type.
        want: u32,
    },
    /// A type literal was sent and differs from ours (`hash_conflict`).
    #[error("type literal mismatch")]
    BadLiteral,
    /// The meta byte announces compatible fields, which no Mooncake type has.
    #[error("unsupported meta byte {0:#04x}")]
    BadMeta(u8),
    /// A bool, optional or expected flag byte other than 0 or 1.
    #[error("bad flag byte {0}")]
    BadFlag(u8),
    /// A variant index out of range.
    #[error("bad variant index {0}")]
    BadVariant(u8),
    /// A container length larger than the rest of the buffer.
    #[error("container length {0} exceeds the buffer")]
    BadLength(u64),
}

/// A value does not have the shape of the type it is encoded as (a bug of the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("value does not match its wire type")]
pub struct Mismatch;

/// How a buffer was (or is to be) written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Debug style: hash|1, meta with ADD_TYPE_INFO, literal and NUL (what the wheel sends).
    pub type_info: bool,
    /// Width code of container lengths (0..=3 → 1/2/4/8 bytes).
    pub len_code: u8,
}

/// What the header of a decoded buffer said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufInfo {
    /// The meta byte, when bit 0 of the hash was set.
    pub meta: Option<u8>,
    /// The width code used for container lengths.
    pub len_code: u8,
    /// Bytes consumed (header and value); the rest was ignored.
    pub consumed: usize,
}

impl BufInfo {
    /// The style to re-encode this buffer identically.
    pub fn style(&self) -> Style {
        Style { type_info: self.meta.is_some_and(|m| m & META_TYPE_INFO != 0), len_code: self.len_code }
    }
}

const META_TYPE_INFO: u8 = 0x04;

impl Ty {
    /// Appends the type literal (`get_type_literal`).
    pub fn write_literal(&self, out: &mut Vec<u8>) {
        match self {
            Ty::I32 => out.push(0x01),
            Ty::U32 => out.push(0x02),
            Ty::I64 => out.push(0x03),
            Ty::U64 => out.push(0x04),
            Ty::I8 => out.push(0x05),
            Ty::U8 => out.push(0x06),
            Ty::U16 => out.push(0x08),
            Ty::Bool => out.push(0x0b),
            Ty::Str => out.extend_from_slice(&[0x80, 0x0c]),
            Ty::Void => out.push(0xfa),
            Ty::Vec(e) => {
                out.push(0x84);
                e.write_literal(out);
            }
            Ty::Opt(e) => {
                out.push(0x85);
                e.write_literal(out);
            }
            Ty::Map(k, v) => {
                out.push(0x82);
                k.write_literal(out);
                v.write_literal(out);
            }
            Ty::Variant(alts) => {
                out.push(0x86);
                alts.iter().for_each(|a| a.write_literal(out));
                out.push(0xff);
            }
            Ty::Expected(t, e) => {
                out.push(0x87);
                t.write_literal(out);
                e.write_literal(out);
            }
            Ty::Struct(fields) => {
                out.push(0xfd);
                fields.iter().for_each(|f| f.write_literal(out));
                out.push(0xff);
            }
            Ty::Trivial(fields, pack, align) => {
                out.push(0xfd);
                fields.iter().for_each(|f| f.write_literal(out));
                out.push(129 + pack);
                out.push(129 + align);
                out.push(0xff);
            }
        }
    }

    /// The type literal.
    pub fn literal(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_literal(&mut out);
        out
    }

    /// The hash bits (`MD5(literal)[0..4]` big-endian, bit 0 cleared).
    pub fn hash(&self) -> u32 {
        md5_hash32(&self.literal(), b"") & !1
    }

    /// True when the type contains a string, vector or map anywhere.
    pub fn has_container(&self) -> bool {
        match self {
            Ty::Str | Ty::Vec(_) | Ty::Map(..) => true,
            Ty::Opt(e) => e.has_container(),
            Ty::Variant(alts) => alts.iter().any(Ty::has_container),
            Ty::Expected(t, e) => t.has_container() || e.has_container(),
            Ty::Struct(f) | Ty::Trivial(f, ..) => f.iter().any(Ty::has_container),
            _ => false,
        }
    }

    /// The largest element count of any container in `v` (-1 when there is none).
    fn max_len(&self, v: &Value) -> Result<i64, Mismatch> {
        Ok(match (self, v) {
            (Ty::Str, Value::Str(s)) => s.len() as i64,
            (Ty::Vec(e), Value::List(items)) => {
                let mut m = items.len() as i64;
                for it in items {
                    m = m.max(e.max_len(it)?);
                }
                m
            }
            (Ty::Map(k, t), Value::Map(pairs)) => {
                let mut m = pairs.len() as i64;
                for (a, b) in pairs {
                    m = m.max(k.max_len(a)?).max(t.max_len(b)?);
                }
                m
            }
            (Ty::Opt(e), Value::Opt(Some(x))) => e.max_len(x)?,
            (Ty::Variant(alts), Value::Variant(i, x)) => alts.get(*i as usize).ok_or(Mismatch)?.max_len(x)?,
            (Ty::Expected(t, _), Value::Ok(x)) => t.max_len(x)?,
            (Ty::Expected(_, e), Value::Err(x)) => e.max_len(x)?,
            (Ty::Struct(f) | Ty::Trivial(f, ..), Value::Struct(xs)) => {
                if f.len() != xs.len() {
                    return Err(Mismatch);
                }
                let mut m = -1;
                for (t, x) in f.iter().zip(xs) {
                    m = m.max(t.max_len(x)?);
                }
                m
            }
            _ => -1,
        })
    }

    /// The width code struct_pack chooses for `v` (`get_serialize_runtime_info`).
    pub fn len_code_for(&self, v: &Value) -> Result<u8, Mismatch> {
        if !self.has_container() {
            return Ok(0);
        }
        let m = self.max_len(v)?;
        Ok(if m < 1 << 8 {
            0
        } else if m < 1 << 16 {
            1
        } else if m < 1 << 32 {
            2
        } else {
            3
        })
    }

    fn enc(&self, v: &Value, out: &mut Vec<u8>, lw: usize) -> Result<(), Mismatch> {
        fn int(out: &mut Vec<u8>, v: &Value, width: usize, signed: bool) -> Result<(), Mismatch> {
            let bytes = match (v, signed) {
                (&Value::Int(i), true) => i.to_le_bytes(),
                (&Value::UInt(u), false) => u.to_le_bytes(),
                _ => return Err(Mismatch),
            };
            out.extend_from_slice(&bytes[..width]);
            Ok(())
        }
        fn len(out: &mut Vec<u8>, n: usize, lw: usize) {
            out.extend_from_slice(&(n as u64).to_le_bytes()[..lw]);
        }
        match (self, v) {
            (Ty::I8, _) => int(out, v, 1, true)?,
            (Ty::I32, _) => int(out, v, 4, true)?,
            (Ty::I64, _) => int(out, v, 8, true)?,
            (Ty::U8, _) => int(out, v, 1, false)?,
            (Ty::U16, _) => int(out, v, 2, false)?,
            (Ty::U32, _) => int(out, v, 4, false)?,
            (Ty::U64, _) => int(out, v, 8, false)?,
            (Ty::Bool, Value::Bool(b)) => out.push(u8::from(*b)),
            (Ty::Str, Value::Str(s)) => {
                len(out, s.len(), lw);
                out.extend_from_slice(s);
            }
            (Ty::Void, Value::Void) => {}
            (Ty::Vec(e), Value::List(items)) => {
                len(out, items.len(), lw);
                for it in items {
                    e.enc(it, out, lw)?;
                }
            }
            (Ty::Map(k, t), Value::Map(pairs)) => {
                len(out, pairs.len(), lw);
                for (a, b) in pairs {
                    k.enc(a, out, lw)?;
                    t.enc(b, out, lw)?;
                }
            }
            (Ty::Opt(e), Value::Opt(o)) => match o {
                Some(x) => {
                    out.push(1);
                    e.enc(x, out, lw)?;
                }
                None => out.push(0),
            },
            (Ty::Variant(alts), Value::Variant(i, x)) => {
                out.push(*i);
                alts.get(*i as usize).ok_or(Mismatch)?.enc(x, out, lw)?;
            }
            (Ty::Expected(t, _), Value::Ok(x)) => {
                out.push(1);
                t.enc(x, out, lw)?;
            }
            (Ty::Expected(_, e), Value::Err(x)) => {
                out.push(0);
                e.enc(x, out, lw)?;
            }
            (Ty::Struct(f) | Ty::Trivial(f, ..), Value::Struct(xs)) if f.len() == xs.len() => {
                for (t, x) in f.iter().zip(xs) {
                    t.enc(x, out, lw)?;
                }
            }
            _ => return Err(Mismatch),
        }
        Ok(())
    }

    fn dec(&self, r: &mut Reader<'_>, lw: usize) -> Result<Value, DecodeError> {
        fn flag(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
            match r.u8()? {
                0 => Ok(false),
                1 => Ok(true),
                b => Err(DecodeError::BadFlag(b)),
            }
        }
        Ok(match self {
            Ty::I8 => Value::Int(r.u8()? as i8 as i64),
            Ty::I32 => Value::Int(r.uint(4)? as u32 as i32 as i64),
            Ty::I64 => Value::Int(r.uint(8)? as i64),
            Ty::U8 => Value::UInt(r.uint(1)?),
            Ty::U16 => Value::UInt(r.uint(2)?),
            Ty::U32 => Value::UInt(r.uint(4)?),
            Ty::U64 => Value::UInt(r.uint(8)?),
            Ty::Bool => Value::Bool(flag(r)?),
            Ty::Str => {
                let n = r.len(lw)?;
                Value::Str(r.take(n)?.to_vec())
            }
            Ty::Void => Value::Void,
            Ty::Vec(e) => {
                // Every element type here takes at least one byte, so n ≤ the bytes left.
                let n = r.len(lw)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(e.dec(r, lw)?);
                }
                Value::List(items)
            }
            Ty::Map(k, t) => {
                let n = r.len(lw)?;
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    let a = k.dec(r, lw)?;
                    pairs.push((a, t.dec(r, lw)?));
                }
                Value::Map(pairs)
            }
            Ty::Opt(e) => Value::Opt(if flag(r)? { Some(Box::new(e.dec(r, lw)?)) } else { None }),
            Ty::Variant(alts) => {
                let i = r.u8()?;
                let alt = alts.get(i as usize).ok_or(DecodeError::BadVariant(i))?;
                Value::Variant(i, Box::new(alt.dec(r, lw)?))
            }
            Ty::Expected(t, e) => {
                if flag(r)? {
                    Value::Ok(Box::new(t.dec(r, lw)?))
                } else {
                    Value::Err(Box::new(e.dec(r, lw)?))
                }
            }
            Ty::Struct(f) | Ty::Trivial(f, ..) => {
                let mut xs = Vec::with_capacity(f.len());
                for t in f.iter() {
                    xs.push(t.dec(r, lw)?);
                }
                Value::Struct(xs)
            }
        })
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or(DecodeError::Truncated)?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn uint(&mut self, width: usize) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b[..width].copy_from_slice(self.take(width)?);
        Ok(u64::from_le_bytes(b))
    }
    /// A container length, bounded by the bytes left (each element takes ≥ 1 byte).
    fn len(&mut self, lw: usize) -> Result<usize, DecodeError> {
        let n = self.uint(lw)?;
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(DecodeError::BadLength(n));
        }
        Ok(n as usize)
    }
}

/// Width in bytes of a width code.
fn width(len_code: u8) -> usize {
    1 << (len_code & 3)
}

/// Encodes `v` as a struct_pack buffer of type `ty` (literal and hash computed from `ty`).
/// The width code is `style.len_code` or the one `v` needs, whichever is larger.
pub fn encode(ty: &Ty, v: &Value, style: Style) -> Result<Vec<u8>, Mismatch> {
    encode_with(ty, &ty.literal(), ty.hash(), v, style)
}

/// [`encode`] with the literal and hash of `ty` given (cached by the RPC table).
pub fn encode_with(ty: &Ty, literal: &[u8], hash: u32, v: &Value, style: Style) -> Result<Vec<u8>, Mismatch> {
    let code = ty.len_code_for(v)?.max(style.len_code.min(3));
    let mut out = Vec::with_capacity(64 + literal.len());
    if style.type_info {
        out.extend_from_slice(&(hash | 1).to_le_bytes());
        out.push(META_TYPE_INFO | (code << 3));
        out.extend_from_slice(literal);
        out.push(0);
    } else if code != 0 {
        out.extend_from_slice(&(hash | 1).to_le_bytes());
        out.push(code << 3);
    } else {
        out.extend_from_slice(&hash.to_le_bytes());
    }
    ty.enc(v, &mut out, width(code))?;
    Ok(out)
}

/// Decodes a struct_pack buffer of type `ty` with the receiver's checks (§3.1): the hash
/// bits must match, a literal (if sent) must equal ours, trailing bytes are ignored.
pub fn decode(ty: &Ty, data: &[u8]) -> Result<(Value, BufInfo), DecodeError> {
    decode_with(ty, &ty.literal(), ty.hash(), data)
}

/// [`decode`] with the literal and hash of `ty` given (cached by the RPC table).
pub fn decode_with(ty: &Ty, literal: &[u8], hash: u32, data: &[u8]) -> Result<(Value, BufInfo), DecodeError> {
    let mut r = Reader { data, pos: 0 };
    let h = r.uint(4)? as u32;
    if h & !1 != hash {
        return Err(DecodeError::BadHash { got: h & !1, want: hash });
    }
    let mut info = BufInfo { meta: None, len_code: 0, consumed: 0 };
    if h & 1 != 0 {
        let meta = r.u8()?;
        info.meta = Some(meta);
        if meta & 0x03 != 0 || meta & !0x1f != 0 {
            return Err(DecodeError::BadMeta(meta));
        }
        if meta & META_TYPE_INFO != 0 {
            let got = r.take(literal.len() + 1)?;
            if &got[..literal.len()] != literal || got[literal.len()] != 0 {
                return Err(DecodeError::BadLiteral);
            }
        }
        info.len_code = (meta >> 3) & 3;
    }
    let v = ty.dec(&mut r, width(info.len_code))?;
    info.consumed = r.pos;
    Ok((v, info))
}
