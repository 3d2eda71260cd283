//! Rendering of response heads (SPEC §2.6): status line, `Server`, `Date`, framing,
//! `Content-Type`, extra headers and `Connection`.

/// How the body of a response is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body and no `Content-Length` (204, 1xx, 304).
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Close-delimited (HTTP/1.0 streams): no framing header.
    Close,
}

/// The `Connection` header of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnHeader {
    /// No `Connection` header.
    None,
    /// `Connection: close`.
    Close,
    /// `Connection: keep-alive` (HTTP/1.0 persistent connections).
    KeepAlive,
}

/// The standard reason phrase of a status code.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Entity",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// True for statuses that never carry a body or framing headers.
pub(crate) fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// Caches the rendered IMF-fixdate of the current second.
#[derive(Debug)]
pub(crate) struct DateCache {
    secs: u64,
    text: [u8; 29],
}

impl Default for DateCache {
    fn default() -> Self {
        Self { secs: 0, text: imf_fixdate(0) }
    }
}

impl DateCache {
    /// The `Date` value for `secs` seconds since the Unix epoch.
    pub fn get(&mut self, secs: u64) -> &[u8; 29] {
        if secs != self.secs {
            self.secs = secs;
            self.text = imf_fixdate(secs);
        }
        &self.text
    }
}

/// Renders `secs` since the Unix epoch as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) fn imf_fixdate(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    // Keep the year within four digits.
    let secs = secs.min(253_402_300_799); // 9999-12-31T23:59:59Z
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let mut out = [0u8; 29];
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    out[3..5].copy_from_slice(b", ");
    put2(&mut out[5..7], d as u64);
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[(m - 1) as usize]);
    out[11] = b' ';
    put2(&mut out[12..14], (y / 100) as u64);
    put2(&mut out[14..16], (y % 100) as u64);
    out[16] = b' ';
    put2(&mut out[17..19], sod / 3600);
    out[19] = b':';
    put2(&mut out[20..22], sod / 60 % 60);
    out[22] = b':';
    put2(&mut out[23..25], sod % 60);
    out[25..].copy_from_slice(b" GMT");
    out
}

fn put2(out: &mut [u8], v: u64) {
    out[0] = b'0' + (v / 10 % 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Everything needed to render one response head.
pub(crate) struct HeadParts<'a> {
    /// Status code.
    pub status: u16,
    /// Rendered `Date` value.
    pub date: &'a [u8],
    /// `Content-Type`, if any.
    pub content_type: Option<&'a str>,
    /// Body framing.
    pub framing: Framing,
    /// Extra headers from the handler.
    pub extra: &'a [(&'static str, String)],
    /// The `Connection` header.
    pub connection: ConnHeader,
}

/// Headers the codec owns; handler-supplied copies are ignored.
fn reserved(name: &str) -> bool {
    ["server", "date", "content-length", "transfer-encoding", "connection", "content-type"]
        .iter()
        .any(|r| name.eq_ignore_ascii_case(r))
}

/// Appends `n` in decimal.
fn push_dec(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends the rendered head to `out` (no `fmt` machinery: this runs once per response).
pub(crate) fn render_head(out: &mut Vec<u8>, p: &HeadParts<'_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_dec(out, u64::from(p.status));
    out.push(b' ');
    out.extend_from_slice(reason(p.status).as_bytes());
    out.extend_from_slice(b"\r\nServer: mc-master\r\nDate: ");
    out.extend_from_slice(p.date);
    out.extend_from_slice(b"\r\n");
    if let Some(ct) = p.content_type {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(ct.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match p.framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_dec(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
    for (name, value) in p.extra {
        let bad = |s: &[u8]| s.iter().any(|&b| b == b'\r' || b == b'\n');
        if reserved(name) || bad(name.as_bytes()) || bad(value.as_bytes()) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match p.connection {
        ConnHeader::Close => out.extend_from_slice(b"Connection: close\r\n"),
        ConnHeader::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        ConnHeader::None => {}
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixdate() {
        assert_eq!(&imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&imf_fixdate(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&imf_fixdate(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        // The example in SPEC §2.6.
        assert_eq!(&imf_fixdate(1_784_022_067), b"Tue, 14 Jul 2026 09:41:07 GMT");
        assert_eq!(&imf_fixdate(u64::MAX), b"Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 200, 65_536, u64::MAX] {
            let mut out = Vec::new();
            push_dec(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn date_cache() {
        let mut c = DateCache::default();
        assert_eq!(c.get(0), &imf_fixdate(0));
        assert_eq!(c.get(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(c.get(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
