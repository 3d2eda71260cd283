//! A tiny blocking HTTP/1.1 client for upstream's HTTP metadata server
//! (`GET/PUT/DELETE http://host:port/metadata?key=<escaped key>`, data-plane.md §2.1).
//!
//! One request per connection (`Connection: close`), std sockets, connect and total timeouts
//! (upstream: 1.5 s and 3 s). Enough for small JSON documents: responses with a
//! `Content-Length`, chunked, or delimited by the close.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Upstream's connect timeout for metadata requests.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Upstream's total timeout for metadata requests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response accepted.
const MAX_RESPONSE: usize = 16 << 20;

/// An `http://host[:port]/path` base URL, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// `host:port` (port 80 when absent).
    pub authority: String,
    /// The path and any query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses `http://host[:port][/path]`; `https` and other schemes are refused.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let has_port = match authority.rfind(':') {
            Some(i) => !authority[i..].contains(']'),
            None => false,
        };
        let authority = if has_port { authority.to_owned() } else { format!("{authority}:80") };
        Ok(Self { authority, path: path.to_owned() })
    }

    /// The URL of metadata key `key`: the path with `key=<escaped>` appended to its query.
    pub fn with_key(&self, key: &str) -> Self {
        let sep = if self.path.contains('?') { '&' } else { '?' };
        Self { authority: self.authority.clone(), path: format!("{}{sep}key={}", self.path, escape(key)) }
    }
}

/// `curl_easy_escape`: every byte but `A-Z a-z 0-9 - . _ ~` as `%XX` (upper case).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A response: status code and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

/// Sends `method url` with `body` (PUT: as `application/json`) and reads the response, giving
/// up at `deadline` or after [`REQUEST_TIMEOUT`], whichever is first.
pub fn request(method: &str, url: &Url, body: Option<&[u8]>, deadline: Instant) -> Result<Response, String> {
    let deadline = deadline.min(Instant::now() + REQUEST_TIMEOUT);
    let left = |d: Instant| {
        d.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or_else(|| "timed out".to_owned())
    };
    let addrs: Vec<_> = url.authority.to_socket_addrs().map_err(|e| format!("{}: {e}", url.authority))?.collect();
    let mut last = format!("{}: no address", url.authority);
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, left(deadline)?.min(CONNECT_TIMEOUT)) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let _ = stream.set_nodelay(true);
    let mut head = format!("{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", url.path, url.authority);
    if let Some(b) = body {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.unwrap_or_default());
    stream.set_write_timeout(Some(left(deadline)?)).map_err(|e| e.to_string())?;
    stream.write_all(&out).map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        stream.set_read_timeout(Some(left(deadline)?)).map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_RESPONSE {
                    return Err("response too large".into());
                }
                if let Some(r) = parse_response(&buf, false)? {
                    return Ok(r);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err("timed out".into())
            }
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    parse_response(&buf, true)?.ok_or_else(|| "connection closed before a whole response".into())
}

/// A whole response at the start of `buf`, `None` while incomplete; `eof`: nothing follows.
fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { return Ok(None) };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8".to_owned())?;
    let rest = &buf[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 response: {status_line:?}"));
    }
    let status: u16 =
        parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| format!("bad Content-Length {value:?}"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    if chunked {
        return dechunk(rest).map(|b| b.map(|body| Response { status, body }));
    }
    match length {
        Some(n) if rest.len() >= n => Ok(Some(Response { status, body: rest[..n].to_vec() })),
        Some(_) => Ok(None),
        None if eof || status == 204 || status == 304 => Ok(Some(Response { status, body: rest.to_vec() })),
        None => Ok(None),
    }
}

/// The body of a chunked encoding, `None` while incomplete.
fn dechunk(mut buf: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
        let size = std::str::from_utf8(&buf[..eol]).map_err(|_| "bad chunk size".to_owned())?;
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {size:?}"))?;
        buf = &buf[eol + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if buf.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_like_curl() {
        assert_eq!(escape("mooncake/ram/127.0.0.1:8591"), "mooncake%2Fram%2F127.0.0.1%3A8591");
        assert_eq!(escape("a-b_c.d~e f"), "a-b_c.d~e%20f");
    }

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:8090/metadata").unwrap();
        assert_eq!(u, Url { authority: "127.0.0.1:8090".into(), path: "/metadata".into() });
        assert_eq!(u.with_key("mooncake/ram/x").path, "/metadata?key=mooncake%2Fram%2Fx");
        let q = Url::parse("http://h/m?x=1").unwrap();
        assert_eq!(q.authority, "h:80");
        assert_eq!(q.with_key("k").path, "/m?x=1&key=k");
        assert_eq!(Url::parse("http://[::1]").unwrap().authority, "[::1]:80");
        assert_eq!(Url::parse("http://[::1]:9/").unwrap().authority, "[::1]:9");
        assert!(Url::parse("https://h/").is_err());
        assert!(Url::parse("http:///x").is_err());
    }

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", false).unwrap().unwrap();
        assert_eq!(r, Response { status: 200, body: b"abc".to_vec() });
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab", false).unwrap(), None);
        assert_eq!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\nx", false).unwrap(), None);
        assert_eq!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\nx", true).unwrap().unwrap().body, b"x");
        let c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(c, false).unwrap().unwrap().body, b"abcde");
        assert_eq!(parse_response(&c[..c.len() - 8], false).unwrap(), None);
        assert!(parse_response(b"SSH-2.0\r\n\r\n", false).is_err());
    }
}
