//! The transfer-engine data port and the handshake on the HTTP port, over real sockets, on
//! every runtime: TE TCP v1 and v2 reads of a REST-put value byte for byte, every reject of
//! docs/data-plane.md ("What the target serves"), garbage, peers that stall or vanish
//! mid-request, and the P2PHANDSHAKE frames; after all of it the server still serves and the
//! value is intact.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::{for_each_runtime, Server};

const OK: [u8; 8] = [0, 0, 0, 0, 0x56, 0x54, 0x43, 0x4d];
const REJECTED: [u8; 8] = [1, 0, 0, 0, 0x56, 0x54, 0x43, 0x4d];

fn header(size: u64, addr: u64, opcode: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&size.to_le_bytes());
    h.extend_from_slice(&addr.to_le_bytes());
    h.push(opcode);
    h.extend_from_slice(&[0xa5; 7]); // padding is garbage on the wire: ignored
    h
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Everything the peer sends until it closes (or 5 s pass).
fn until_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).expect("read");
    b
}

struct Node {
    srv: Server,
    te: String,
    addr: u64,
    value: Vec<u8>,
}

fn node() -> Node {
    let srv = Server::start(&["--global-segment-size", "16MiB"]);
    let te = srv
        .lines_until(|l| l.starts_with("te listening on "))
        .and_then(|l| l.strip_prefix("te listening on ").map(str::to_string))
        .expect("te listening line");
    let value: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(srv.request("PUT", "/api/put/k", &[], &value).status, 200);
    let q: serde_json::Value = serde_json::from_slice(&srv.get("/query_key?key=k").body).unwrap();
    let addr = q["data"][0]["buffer_address_"].as_u64().expect("address");
    Node { srv, te, addr, value }
}

#[test]
fn te_reads_of_a_rest_value_v1_v2_pipelined() {
    for_each_runtime(|_| {
        let n = node();
        let len = n.value.len() as u64;
        let mut s = connect(&n.te);
        // v2 READ, then a sub-range, then a v1 READ, all pipelined in one send.
        let mut req = header(len, n.addr, 0x80);
        req.extend(header(10, n.addr + 5, 0x80));
        req.extend(header(len, n.addr, 0x00));
        s.write_all(&req).unwrap();
        assert_eq!(read_exact(&mut s, 8), OK);
        assert_eq!(read_exact(&mut s, len as usize), n.value);
        assert_eq!(read_exact(&mut s, 8), OK);
        assert_eq!(read_exact(&mut s, 10), n.value[5..15]);
        assert_eq!(read_exact(&mut s, len as usize), n.value, "v1: bytes, no status");
        // The connection stays usable.
        s.write_all(&header(1, n.addr + len - 1, 0x80)).unwrap();
        assert_eq!(read_exact(&mut s, 9)[..8], OK);
    });
}

#[test]
fn te_rejects_everything_outside_live_values_and_survives_bad_peers() {
    for_each_runtime(|_| {
        let n = node();
        let len = n.value.len() as u64;
        let rejects = [
            header(len + 1, n.addr, 0x80),       // past the value's end
            header(0, n.addr, 0x80),             // size 0
            header(16, u64::MAX - 8, 0x80),      // overflowing range
            header(1 << 40, n.addr, 0x80),       // huge
            header(8, 0x10, 0x80),               // no segment there
            header(len, n.addr, 0x81),           // a write into a complete value
            header(8, n.addr + (8 << 20), 0x80), // inside the segment, no value
        ];
        for r in rejects {
            let mut s = connect(&n.te);
            s.write_all(&r).unwrap();
            assert_eq!(until_close(&mut s), REJECTED, "v2 reject then close for {r:02x?}");
        }
        // v1 rejects are a plain close.
        let mut s = connect(&n.te);
        s.write_all(&header(len + 1, n.addr, 0x00)).unwrap();
        assert!(until_close(&mut s).is_empty());
        // Garbage, a stalled peer and peers that vanish mid-request.
        let mut g = connect(&n.te);
        g.write_all(&[0xffu8; 100]).unwrap();
        let _ = until_close(&mut g);
        let mut slow = connect(&n.te);
        slow.write_all(&header(len, n.addr, 0x80)[..10]).unwrap();
        for _ in 0..20 {
            let mut v = connect(&n.te);
            v.write_all(&header(len, n.addr, 0x80)).unwrap();
            drop(v); // gone before the response
            let mut w = connect(&n.te);
            w.write_all(&header(len, n.addr, 0x81)[..20]).unwrap();
            let _ = w.shutdown(Shutdown::Both);
        }
        // Still serving, the value intact, the stalled peer finishes its request.
        let mut s = connect(&n.te);
        s.write_all(&header(len, n.addr, 0x80)).unwrap();
        assert_eq!(read_exact(&mut s, 8), OK);
        assert_eq!(read_exact(&mut s, len as usize), n.value);
        slow.write_all(&header(len, n.addr, 0x80)[10..]).unwrap();
        assert_eq!(read_exact(&mut slow, 8), OK);
        assert_eq!(read_exact(&mut slow, len as usize), n.value);
        assert_eq!(n.srv.get("/api/get/k").body, n.value);
        assert_eq!(n.srv.get("/health").status, 200);
    });
}

/// A handshake frame: u64 LE length (1 + JSON), the type, the JSON.
fn frame(kind: u8, json: &str) -> Vec<u8> {
    let mut f = ((json.len() + 1) as u64).to_le_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(json.as_bytes());
    f
}

#[test]
fn the_http_port_answers_the_te_handshake() {
    for_each_runtime(|_| {
        let n = node();
        let node_name = n.srv.addr.to_string();
        let ask = |kind: u8, json: &str| {
            let mut s = connect(&node_name);
            s.write_all(&frame(kind, json)).unwrap();
            let reply = until_close(&mut s);
            assert!(reply.len() > 9, "{reply:?}");
            assert_eq!(u64::from_le_bytes(reply[..8].try_into().unwrap()) as usize, reply.len() - 8);
            assert_eq!(reply[8], kind, "the reply has the request's type");
            String::from_utf8(reply[9..].to_vec()).unwrap()
        };
        assert_eq!(ask(3, "{}\n"), "{\"status\":\"success\"}\n");
        let desc: serde_json::Value = serde_json::from_str(&ask(1, "{\"name\":\"probe\"}\n")).unwrap();
        assert_eq!(desc["name"], node_name.as_str());
        assert_eq!(desc["protocol"], "tcp");
        assert_eq!(desc["tcp_proto_version"], 2);
        assert_eq!(format!("127.0.0.1:{}", desc["tcp_data_port"]), n.te);
        let buf = &desc["buffers"][0];
        assert!(buf["addr"].as_u64().unwrap() <= n.addr && buf["length"] == 16 << 20, "{desc}");
        // The same descriptor is published in /metadata.
        let meta = n.srv.get(&format!("/metadata?key=mooncake/ram/{node_name}"));
        assert_eq!(meta.status, 200);
        let published: serde_json::Value = serde_json::from_slice(&meta.body).unwrap();
        assert_eq!(published["buffers"], desc["buffers"]);
        // HTTP on the same port is unaffected.
        assert_eq!(n.srv.get("/health").status, 200);
    });
}

/// With the handshake sniffed on the HTTP port, a connection refused at `--max-connections`
/// still gets its 503 at once, before it sends anything.
#[test]
fn a_refused_connection_is_answered_before_it_speaks() {
    for_each_runtime(|_| {
        let srv = Server::start(&["--max-connections", "1"]);
        let mut first = connect(&srv.addr.to_string());
        first.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        let _ = read_exact(&mut first, 12);
        let mut second = connect(&srv.addr.to_string());
        let reply = until_close(&mut second);
        assert!(reply.starts_with(b"HTTP/1.1 503 "), "{:?}", String::from_utf8_lossy(&reply));
    });
}
