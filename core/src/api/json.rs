//! JSON input (SPEC §1.4 "JSON input") and the small output encoders used by every body.
//!
//! The parser is strict RFC 8259 over UTF-8 input and keeps what the contract needs that a
//! generic value type loses: a duplicated member name anywhere makes the body malformed,
//! numbers keep their source text (so `16` is an integer and `16.0`, `1.6e1` are not), and
//! strings without escapes borrow from the body (a 100 MiB `value` is not copied).

use std::borrow::Cow;
use std::collections::HashSet;

/// Deepest nesting accepted; deeper documents are treated as malformed (as serde_json does).
const MAX_DEPTH: usize = 128;

/// A parsed JSON value borrowing from the request body.
#[derive(Debug, PartialEq)]
pub(crate) enum Json<'a> {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, as written.
    Number(&'a str),
    /// A string.
    Str(Cow<'a, str>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object, members in document order (names are distinct).
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

/// The body is not one valid JSON value (or has a duplicated member name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

/// A JSON number read as an unsigned integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UInt {
    /// An integer in `[0, u64::MAX]`.
    Value(u64),
    /// Not an integer (fraction, exponent, not a number), negative, or above `u64::MAX`.
    Invalid,
}

impl<'a> Json<'a> {
    /// Member `name` of an object; a `null` member counts as absent (SPEC §1.4).
    pub(crate) fn member(&self, name: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(m) => m.iter().find(|(k, _)| k == name).map(|(_, v)| v).filter(|v| !matches!(v, Json::Null)),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// This value as a non-negative integer written without fraction and exponent.
    pub(crate) fn as_uint(&self) -> UInt {
        let Json::Number(raw) = self else {
            return UInt::Invalid;
        };
        let digits = match raw.strip_prefix('-') {
            // `-0` is the integer 0; any other negative integer is out of range.
            Some(d) => return if d == "0" { UInt::Value(0) } else { UInt::Invalid },
            None => raw,
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return UInt::Invalid;
        }
        digits.parse::<u64>().map_or(UInt::Invalid, UInt::Value)
    }
}

/// Parses a request body (SPEC §1.4): empty, non-UTF-8, invalid JSON, trailing garbage or a
/// duplicated member name → [`Malformed`].
pub(crate) fn parse(body: &[u8]) -> Result<Json<'_>, Malformed> {
    let text = std::str::from_utf8(body).map_err(|_| Malformed)?;
    let mut p = Parser { s: text, b: text.as_bytes(), i: 0 };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.b.len() {
        return Err(Malformed);
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn lit(&mut self, word: &str, v: Json<'a>) -> Result<Json<'a>, Malformed> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(Malformed)
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json<'a>, Malformed> {
        self.ws();
        match self.peek().ok_or(Malformed)? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(Json::Str),
            b't' => self.lit("true", Json::Bool(true)),
            b'f' => self.lit("false", Json::Bool(false)),
            b'n' => self.lit("null", Json::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Malformed),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<Json<'a>, Malformed> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Malformed),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(Malformed);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(Malformed);
            }
        }
        Ok(Json::Number(&self.s[start..self.i]))
    }

    fn hex4(&mut self) -> Result<u32, Malformed> {
        let h = self.b.get(self.i..self.i + 4).ok_or(Malformed)?;
        let mut v = 0u32;
        for &c in h {
            v = v << 4 | (c as char).to_digit(16).ok_or(Malformed)?;
        }
        self.i += 4;
        Ok(v)
    }

    /// A string starting at the opening quote.
    fn string(&mut self) -> Result<Cow<'a, str>, Malformed> {
        self.i += 1;
        let start = self.i;
        // Fast path: most strings have no escape and are borrowed.
        self.i = scan_plain(self.b, self.i);
        match self.peek().ok_or(Malformed)? {
            b'"' => {
                let s = &self.s[start..self.i];
                self.i += 1;
                return Ok(Cow::Borrowed(s));
            }
            b'\\' => {}
            _ => return Err(Malformed),
        }
        let mut out = String::with_capacity(self.i - start + 16);
        out.push_str(&self.s[start..self.i]);
        loop {
            let run = self.i;
            self.i = scan_plain(self.b, self.i);
            out.push_str(&self.s[run..self.i]);
            match self.peek().ok_or(Malformed)? {
                b'"' => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                b'\\' => {
                    self.i += 1;
                    let e = self.peek().ok_or(Malformed)?;
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = match hi {
                                0xd800..=0xdbff => {
                                    if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                        return Err(Malformed);
                                    }
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    if !(0xdc00..=0xdfff).contains(&lo) {
                                        return Err(Malformed);
                                    }
                                    0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                                }
                                0xdc00..=0xdfff => return Err(Malformed),
                                _ => hi,
                            };
                            out.push(char::from_u32(cp).ok_or(Malformed)?);
                        }
                        _ => return Err(Malformed),
                    }
                }
                _ => return Err(Malformed),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json<'a>, Malformed> {
        if depth > MAX_DEPTH {
            return Err(Malformed);
        }
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.ws();
            match self.peek().ok_or(Malformed)? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(Malformed),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json<'a>, Malformed> {
        if depth > MAX_DEPTH {
            return Err(Malformed);
        }
        self.i += 1;
        let mut members: Vec<(Cow<'a, str>, Json<'a>)> = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(Malformed);
            }
            let name = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(Malformed);
            }
            self.i += 1;
            let v = self.value(depth)?;
            members.push((name, v));
            self.ws();
            match self.peek().ok_or(Malformed)? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    break;
                }
                _ => return Err(Malformed),
            }
        }
        if has_duplicate(&members) {
            return Err(Malformed);
        }
        Ok(Json::Object(members))
    }
}

/// The index of the first byte at or after `i` that ends a plain string run: `"`, `\\` or a
/// control byte (`b.len()` if none). Checks eight bytes at a time.
#[inline]
fn scan_plain(b: &[u8], mut i: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    for chunk in b.get(i..).unwrap_or_default().chunks_exact(8) {
        let w = u64::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7]]);
        let quote = w ^ (LO * u64::from(b'"'));
        let backslash = w ^ (LO * u64::from(b'\\'));
        // Per byte: zero after the xor, or below 0x20 (exact as a yes/no answer).
        let hit = (quote.wrapping_sub(LO) & !quote)
            | (backslash.wrapping_sub(LO) & !backslash)
            | (w.wrapping_sub(LO * 0x20) & !w);
        if hit & HI != 0 {
            break;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

/// True when two members share a name (compared after unescaping).
fn has_duplicate(members: &[(Cow<'_, str>, Json<'_>)]) -> bool {
    if members.len() <= 16 {
        members.iter().enumerate().any(|(i, (a, _))| members[..i].iter().any(|(b, _)| a == b))
    } else {
        let mut seen = HashSet::with_capacity(members.len());
        !members.iter().all(|(k, _)| seen.insert(&**k))
    }
}

// ---------------------------------------------------------------------------------------------
// Output.

/// Appends `s` as a JSON string literal: compact, non-ASCII unescaped (SPEC §1.4).
pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[run..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
        } else {
            out.extend_from_slice(esc);
        }
        run = i + 1;
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
}

/// Appends an unsigned integer in decimal.
#[inline]
pub(crate) fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends a finite double in plain JSON notation (no exponent), always with a fraction
/// part (`0.0`, `6.25`, `100.0`).
pub(crate) fn push_f64(out: &mut Vec<u8>, v: f64) {
    use std::io::Write;
    let v = if v.is_finite() { v } else { 0.0 };
    let start = out.len();
    let _ = write!(out, "{v}");
    if !out[start..].contains(&b'.') {
        out.extend_from_slice(b".0");
    }
}

/// `{"error":"<message>"}` (shape E3).
pub(crate) fn error_body(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    out.extend_from_slice(b"{\"error\":");
    push_str(&mut out, message);
    out.push(b'}');
    out
}
