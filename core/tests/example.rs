//! Runs `examples/blocking.rs` (included as a module) on a real socket: a mount, a put and a
//! get over one keep-alive connection, then the idle timeout closing it.

#[path = "../examples/blocking.rs"]
mod blocking;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use mc_core::Config;

/// Sends one request and reads its response (Content-Length framing); returns (status, body).
fn request(sock: &mut TcpStream, method: &str, target: &str, body: &str) -> (u16, String) {
    let head = format!("{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    sock.write_all(head.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) {
            let text = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize =
                text.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + len {
                let status = text[9..12].parse().unwrap();
                return (status, String::from_utf8_lossy(&got[end..end + len]).into_owned());
            }
        }
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "closed mid-response: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn the_blocking_example_serves_a_real_client() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let idle = Duration::from_millis(300);
    let master = blocking::master(Config { node_name: addr.to_string(), idle_timeout: idle, ..Config::default() });
    std::thread::spawn(move || blocking::serve(&master, &listener));

    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(request(&mut sock, "GET", "/health", "").0, 200);
    let (st, body) = request(&mut sock, "POST", "/api/mount", r#"{"size":16777216,"protocol":"tcp"}"#);
    assert_eq!(st, 200, "{body}");
    let (st, body) = request(&mut sock, "PUT", "/api/put", r#"{"key":"k","value":"hello"}"#);
    assert_eq!(st, 200, "{body}");
    assert_eq!(request(&mut sock, "GET", "/api/get/k", ""), (200, "hello".to_string()));
    assert_eq!(request(&mut sock, "GET", "/api/exist/nope", ""), (200, r#"{"exists":false}"#.to_string()));

    // The idle timeout (a deadline from poll_timeout, fired by handle_timeout) closes it.
    let t0 = Instant::now();
    let mut rest = Vec::new();
    sock.read_to_end(&mut rest).unwrap();
    let waited = t0.elapsed();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(waited >= idle - Duration::from_millis(50) && waited < Duration::from_secs(5), "{waited:?}");

    // The next connection is served.
    let mut again = TcpStream::connect(addr).unwrap();
    again.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(request(&mut again, "GET", "/api/get/k", ""), (200, "hello".to_string()));
}
