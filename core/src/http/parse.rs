//! Request head parsing (SPEC §2.1, §2.2).
//!
//! The codec first finds the end of a head with [`HeadScanner`] (incrementally, so every
//! byte is looked at a bounded number of times whatever the input split), then parses the
//! complete head once with [`parse_head`]. The request line is validated by our own code
//! before `httparse` sees it: `httparse` rejects every version but 1.0/1.1 with the same
//! error, and SPEC needs to tell a malformed version (400) from an unsupported one (505).

use super::types::{Method, RequestHead, Version};

/// Why a request head was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// Malformed → `400 {"error":"bad request"}`.
    BadRequest,
    /// Well-formed version other than 1.0/1.1 → `505`.
    VersionNotSupported,
}

/// A parsed head plus the facts the codec needs that are not part of [`RequestHead`].
#[derive(Debug)]
pub(crate) struct ParsedHead {
    /// The head as handed to the handler.
    pub head: RequestHead,
    /// `Connection: close` was present.
    pub conn_close: bool,
    /// `Connection: keep-alive` was present.
    pub conn_keep_alive: bool,
    /// An `Expect` value other than `100-continue` was present (→ 417).
    pub expect_unsupported: bool,
}

impl ParsedHead {
    /// Whether the client asked for a persistent connection (SPEC §2.1).
    pub fn keep_alive(&self) -> bool {
        match self.head.version {
            Version::Http11 => !self.conn_close,
            Version::Http10 => self.conn_keep_alive && !self.conn_close,
        }
    }
}

/// `tchar` of RFC 9110.
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

fn is_ctl(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Finds the end of a request head incrementally.
///
/// The buffer handed to [`HeadScanner::scan`] must start at the request line (leading empty
/// lines already removed) and must only grow between calls until [`HeadScanner::reset`].
#[derive(Debug, Default)]
pub(crate) struct HeadScanner {
    /// Offset from which scanning resumes.
    scanned: usize,
    /// Offset of the first LF (end of the request line), once seen.
    first_lf: Option<usize>,
    /// The request line was already validated (set by the codec).
    pub line_checked: bool,
}

impl HeadScanner {
    /// Forgets everything (a new head starts).
    pub fn reset(&mut self) {
        *self = HeadScanner::default();
    }

    /// Looks for the end of the head within the first `limit` bytes of `buf`. Returns the
    /// head's length (including the final empty line) when found.
    pub fn scan(&mut self, buf: &[u8], limit: usize) -> Option<usize> {
        let end = buf.len().min(limit);
        let mut i = self.scanned;
        while i < end {
            let Some(off) = buf[i..end].iter().position(|&b| b == b'\n') else {
                self.scanned = end;
                return None;
            };
            let lf = i + off;
            if self.first_lf.is_none() {
                self.first_lf = Some(lf);
            }
            // Need up to two bytes of look-ahead, within the limit.
            match buf.get(lf + 1).filter(|_| lf + 1 < end) {
                None => {
                    self.scanned = lf;
                    return None;
                }
                Some(b'\n') => return Some(lf + 2),
                Some(b'\r') => match buf.get(lf + 2).filter(|_| lf + 2 < end) {
                    None => {
                        self.scanned = lf;
                        return None;
                    }
                    Some(b'\n') => return Some(lf + 3),
                    Some(_) => i = lf + 1,
                },
                Some(_) => i = lf + 1,
            }
        }
        self.scanned = end.max(self.scanned);
        None
    }

    /// The request line (without line ending), if its LF lies within the scanned limit.
    pub fn request_line<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        self.first_lf.map(|lf| strip_cr(&buf[..lf]))
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Validates a request line (without its line ending). Returns method, target and version.
pub(crate) fn check_request_line(line: &[u8]) -> Result<(Method, &[u8], Version), HeadError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::BadRequest);
    };
    // Version first: `PRI * HTTP/2.0` must give 505, not 400 for its `*` target.
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', d1, b'.', d2] if d1.is_ascii_digit() && d2.is_ascii_digit() => {
            return Err(HeadError::VersionNotSupported)
        }
        _ => return Err(HeadError::BadRequest),
    };
    if !is_token(method) || target.is_empty() || target.iter().any(|&b| is_ctl(b) || b == b'#') {
        return Err(HeadError::BadRequest);
    }
    let method = std::str::from_utf8(method).map(Method::from_token).map_err(|_| HeadError::BadRequest)?;
    Ok((method, target, version))
}

/// Splits a request target into path and query (SPEC §2.2 target forms).
fn split_target(method: Method, target: &[u8]) -> Result<(String, Option<String>), HeadError> {
    let target = std::str::from_utf8(target).map_err(|_| HeadError::BadRequest)?;
    let rest = if target.starts_with('/') {
        target
    } else if target == "*" {
        return if method == Method::Options { Ok(("*".to_owned(), None)) } else { Err(HeadError::BadRequest) };
    } else {
        absolute_path_part(target)?
    };
    Ok(match rest.split_once('?') {
        Some((p, q)) => (if p.is_empty() { "/".to_owned() } else { p.to_owned() }, Some(q.to_owned())),
        None => (if rest.is_empty() { "/".to_owned() } else { rest.to_owned() }, None),
    })
}

/// For an absolute-form target (`http://authority/path?query`), the part after the authority.
fn absolute_path_part(target: &str) -> Result<&str, HeadError> {
    let (scheme, rest) = target.split_once("://").ok_or(HeadError::BadRequest)?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return Err(HeadError::BadRequest);
    }
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..auth_end];
    if authority.is_empty() || authority.contains('@') {
        return Err(HeadError::BadRequest);
    }
    Ok(&rest[auth_end..])
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

/// Elements of a comma-separated header list, trimmed (empty elements included).
fn list_items(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim_ows)
}

/// Parses a complete head (request line through the final empty line; no leading empty lines).
pub(crate) fn parse_head(bytes: &[u8]) -> Result<ParsedHead, HeadError> {
    let lf = bytes.iter().position(|&b| b == b'\n').ok_or(HeadError::BadRequest)?;
    let (method, target, version) = check_request_line(strip_cr(&bytes[..lf]))?;

    // Syntax of the header section (names are tokens, no space before ':', no folding,
    // no control bytes in values, CR only before LF) is checked by httparse.
    let lines = bytes.iter().filter(|&&b| b == b'\n').count();
    // Header slots on the stack for the usual head; the heap only for a long one.
    let mut stack = [httparse::EMPTY_HEADER; 32];
    let mut heap = Vec::new();
    let slots: &mut [httparse::Header<'_>] = if lines <= stack.len() {
        &mut stack[..]
    } else {
        heap.resize(lines, httparse::EMPTY_HEADER);
        &mut heap[..]
    };
    let mut req = httparse::Request::new(slots);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) if n == bytes.len() => {}
        _ => return Err(HeadError::BadRequest),
    }

    let (path, query) = split_target(method, target)?;

    let mut headers = Vec::with_capacity(req.headers.len());
    let mut content_length: Option<u64> = None;
    let mut te_items: Vec<Vec<u8>> = Vec::new();
    let mut te_seen = false;
    let (mut conn_close, mut conn_keep_alive) = (false, false);
    let (mut expect_continue, mut expect_unsupported) = (false, false);
    for hdr in req.headers.iter() {
        let name = hdr.name.to_ascii_lowercase();
        let value = trim_ows(hdr.value);
        match name.as_str() {
            "content-length" => {
                for item in list_items(value) {
                    if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                        return Err(HeadError::BadRequest);
                    }
                    // Saturate: a huge number is still numeric and gets 413.
                    let n =
                        item.iter().fold(0u64, |acc, &d| acc.saturating_mul(10).saturating_add(u64::from(d - b'0')));
                    match content_length {
                        Some(prev) if prev != n => return Err(HeadError::BadRequest),
                        _ => content_length = Some(n),
                    }
                }
            }
            "transfer-encoding" => {
                te_seen = true;
                te_items.extend(list_items(value).map(|i| i.to_ascii_lowercase()));
            }
            "connection" => {
                for item in list_items(value) {
                    if item.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if item.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            }
            "expect" => {
                if value.eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    expect_unsupported = true;
                }
            }
            _ => {}
        }
        headers.push((name, value.to_vec()));
    }

    let mut chunked = false;
    if te_seen {
        if version == Version::Http10 || content_length.is_some() || te_items.len() != 1 || te_items[0] != b"chunked" {
            return Err(HeadError::BadRequest);
        }
        chunked = true;
    }

    Ok(ParsedHead {
        head: RequestHead { method, path, query, version, headers, content_length, chunked, expect_continue },
        conn_close,
        conn_keep_alive,
        expect_unsupported,
    })
}
