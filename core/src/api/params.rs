//! Request inputs that are not JSON: query strings, path parameters, keys, UUIDs, `limit`,
//! `Accept` (SPEC §1.4, §4.5, §4.9).

use std::borrow::Cow;

use uuid::Uuid;

use crate::http::RequestHead;

/// Largest key, in bytes (SPEC §1.4 rule 3).
pub(crate) const MAX_KEY_LEN: usize = 4096;

/// Value of an ASCII hex digit.
#[inline]
fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `raw` (SPEC §1.4): `%XX` (either case) becomes byte `0xXX`, a `%` not
/// followed by two hex digits is kept literally; with `plus`, `+` becomes a space first
/// (query strings only). Borrows when there is nothing to decode.
pub(crate) fn percent_decode(raw: &str, plus: bool) -> Cow<'_, [u8]> {
    let bytes = raw.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || (plus && b == b'+')) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(if plus && b == b'+' { b' ' } else { b });
        i += 1;
    }
    Cow::Owned(out)
}

/// The decoded value of the first occurrence of parameter `name` in `query` (SPEC §1.4);
/// `None` when it is missing or empty.
pub(crate) fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, [u8]>> {
    for piece in query?.split('&') {
        let (raw_name, raw_value) = match piece.find('=') {
            Some(i) => (&piece[..i], &piece[i + 1..]),
            None => (piece, ""),
        };
        if raw_name.is_empty() || *percent_decode(raw_name, true) != *name.as_bytes() {
            continue;
        }
        return if raw_value.is_empty() { None } else { Some(percent_decode(raw_value, true)) };
    }
    None
}

/// Why a key is invalid (SPEC §1.4, in checking order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// Rule 1.
    Empty,
    /// Rule 2.
    NotUtf8,
    /// Rule 3.
    TooLong,
    /// Rule 4.
    Control,
}

impl KeyError {
    /// The message text of the rule.
    pub(crate) fn message(self) -> &'static str {
        match self {
            KeyError::Empty => "Invalid key: must not be empty",
            KeyError::NotUtf8 => "Invalid key: must be valid UTF-8",
            KeyError::TooLong => "Invalid key: must be at most 4096 bytes",
            KeyError::Control => "Invalid key: must not contain control characters",
        }
    }
}

/// Checks the key rules of SPEC §1.4 in order; returns the key as text.
pub(crate) fn validate_key(bytes: &[u8]) -> Result<&str, KeyError> {
    if bytes.is_empty() {
        return Err(KeyError::Empty);
    }
    let s = std::str::from_utf8(bytes).map_err(|_| KeyError::NotUtf8)?;
    if bytes.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong);
    }
    if has_control(bytes) {
        return Err(KeyError::Control);
    }
    Ok(s)
}

/// True when valid UTF-8 `bytes` contain U+0000–U+001F or U+007F–U+009F.
#[inline]
fn has_control(bytes: &[u8]) -> bool {
    let mut prev = 0u8;
    for &b in bytes {
        // U+0080..U+009F are encoded as C2 80..C2 9F.
        if b < 0x20 || b == 0x7f || (prev == 0xc2 && (0x80..=0x9f).contains(&b)) {
            return true;
        }
        prev = b;
    }
    false
}

/// Parses a UUID in the canonical `8-4-4-4-12` layout, hex of either case, any version
/// (SPEC §1.4). Every other form is rejected.
pub(crate) fn parse_uuid(s: &str) -> Option<Uuid> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut v: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
        } else {
            v = v << 4 | u128::from(hex_val(c)?);
        }
    }
    Some(Uuid::from_u128(v))
}

/// Writes `id` in canonical lower-case form.
pub(crate) fn push_uuid(out: &mut Vec<u8>, id: Uuid) {
    let mut buf = Uuid::encode_buffer();
    out.extend_from_slice(id.hyphenated().encode_lower(&mut buf).as_bytes());
}

/// Parses the `limit` of `/get_all_keys`: a decimal integer in `[1, 2^32]` (SPEC §4.5).
pub(crate) fn parse_limit(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || raw.len() > 20 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = raw.iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))?;
    (1..=1u64 << 32).contains(&n).then_some(n)
}

/// Trims ASCII spaces and tabs.
fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// True when a `q` value is zero (`0`, `0.`, `0.0`, `0.00`, `0.000`).
fn q_is_zero(v: &[u8]) -> bool {
    match v {
        [b'0'] => true,
        [b'0', b'.', rest @ ..] => rest.len() <= 3 && rest.iter().all(|&d| d == b'0'),
        _ => false,
    }
}

/// True when an `Accept` header lists `application/json` (case-insensitive, parameters
/// ignored) without `q=0` (SPEC §4.9).
pub(crate) fn accepts_json(head: &RequestHead) -> bool {
    accepts(head, b"application/json")
}

/// True when an `Accept` header lists `media` (case-insensitive, parameters ignored)
/// without `q=0`.
pub(crate) fn accepts(head: &RequestHead, media_type: &[u8]) -> bool {
    head.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("accept")).any(|(_, v)| {
        v.split(|&b| b == b',').any(|range| {
            let mut parts = range.split(|&b| b == b';');
            let media = trim(parts.next().unwrap_or_default());
            if !media.eq_ignore_ascii_case(media_type) {
                return false;
            }
            !parts.any(|p| {
                let p = trim(p);
                match p.iter().position(|&b| b == b'=') {
                    Some(i) => trim(&p[..i]).eq_ignore_ascii_case(b"q") && q_is_zero(trim(&p[i + 1..])),
                    None => false,
                }
            })
        })
    })
}
