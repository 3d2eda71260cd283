//! Regression tests of the SPEC conformance audit: behaviours the rest of the e2e suite does
//! not pin down, and the deviations the audit fixed.

mod common;

use std::net::TcpListener;

use common::*;

/// SPEC §2.6: every response — the interim `100 Continue` included — carries `Server` and an
/// IMF-fixdate `Date`; a `100` carries neither `Content-Length` nor `Content-Type` (nor any
/// other framing header). Checked for a streamed raw put, a buffered JSON put and a chunked
/// raw put on one persistent connection.
#[test]
fn interim_100_continue_carries_server_and_date() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let json = br#"{"key":"audit-b","value":"hello"}"#;
        let cases: Vec<(String, &[u8])> = vec![
            ("PUT /api/put/audit-a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n".into(), b"hello"),
            (format!("PUT /api/put HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", json.len()), json),
            (
                "PUT /api/put/audit-c HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
        ];
        let mut c = s.conn();
        for (head, body) in &cases {
            c.send(head.as_bytes());
            let interim = c.read_response();
            assert_eq!((interim.version.as_str(), interim.status), ("HTTP/1.1", 100), "{head:?}: {interim:?}");
            assert_eq!(interim.header("server"), Some("mc-master"), "{head:?}: {interim:?}");
            let date = interim.header("date").unwrap_or_default();
            assert!(parse_imf_fixdate(date).is_some(), "{head:?}: Date {date:?}");
            for name in ["content-length", "content-type", "transfer-encoding", "connection"] {
                assert!(interim.header(name).is_none(), "{head:?}: {name} on 100: {interim:?}");
            }
            assert!(interim.body.is_empty());
            c.send(body);
            let r = c.read_response();
            r.assert_json(200, r#"{"status":"success"}"#);
            assert!(!r.closes(), "{head:?}");
        }
        for key in ["audit-a", "audit-b", "audit-c"] {
            s.get_value(key).assert(200, CT_OCTET, "hello");
        }
    });
}

/// SPEC §2.2 interpretation: an HTTP/1.0 client does not understand 1xx responses, so its
/// `Expect: 100-continue` is ignored (RFC 9110 §10.1.1): no interim response, the body is
/// read and the final response follows.
#[test]
fn http10_expect_continue_gets_no_interim_response() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let mut c = s.conn();
        c.send(b"PUT /api/put/audit-10 HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello");
        let r = c.read_response();
        r.assert_json(200, r#"{"status":"success"}"#);
        assert!(r.closes());
        s.get_value("audit-10").assert(200, CT_OCTET, "hello");
    });
}

/// SPEC §11: with an IPv6 `--host`, the listening lines print the address in brackets
/// (`listening on http://[::1]:PORT`, `admin listening on http://[::1]:PORT`). Skipped where
/// the machine has no IPv6 loopback.
#[test]
fn ipv6_host_is_printed_in_brackets() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback: skipped");
        return;
    }
    for_each_runtime(|_| {
        // `Server::start` parses both lines as socket addresses, which requires the brackets.
        let s = Server::start(&["--host", "::1", "--admin-port", "0", "--global-segment-size", "16MiB"]);
        assert_eq!(s.addr.ip().to_string(), "::1");
        let admin = s.admin.expect("admin listener");
        assert_eq!(admin.ip(), s.addr.ip());
        s.get("/health").assert_plain(200, "OK");
        // The default node name uses --local-hostname (default 127.0.0.1), not --host.
        let segs = s.segments();
        assert_eq!(segs[0]["segment_name"], format!("127.0.0.1:{}", s.port()));
    });
}

/// SPEC §11 size values: a fractional number with a 1024-based suffix (`1.5m`) and the
/// start-up segment keeps exactly that size (SPEC §1.4 `size_human`).
#[test]
fn fractional_size_suffix_for_the_startup_segment() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "1.5m"]);
        let segs = s.segments();
        assert_eq!(segs.len(), 1, "{segs:?}");
        assert_eq!(segs[0]["size_bytes"], 1_572_864);
        assert_eq!(segs[0]["size_human"], "1.5 MiB");
        assert_eq!(segs[0]["allocator_usage_percent"].as_f64(), Some(0.0));
    });
}

/// SPEC §11 exit status 1 "when a listener cannot be bound": a port that another running
/// `mc-master` holds (its listeners use SO_REUSEPORT, so a second process of the same user
/// could otherwise join the group and share the port), the admin port included; and an RPC
/// port equal to this process's own HTTP port.
#[test]
fn port_held_by_another_server_exits_1() {
    for_each_runtime(|rt| {
        let s = Server::start(&["--admin-port", "0"]);
        let main = s.port().to_string();
        let admin = s.admin.expect("admin listener").port().to_string();
        let timeout = std::time::Duration::from_secs(10);
        for args in [
            vec!["--port", main.as_str(), "--rpc-port", "off"],
            vec!["--port", admin.as_str(), "--rpc-port", "off"],
            vec!["--port", "0", "--admin-port", main.as_str(), "--rpc-port", "off"],
        ] {
            let mut full = args.clone();
            full.extend(["--runtime", rt]);
            let out = run_cli(&full, timeout);
            assert_eq!(out.code(), Some(1), "{full:?}: stdout {:?} stderr {:?}", out.stdout, out.stderr);
            assert!(out.stdout.is_empty(), "{full:?}: {:?}", out.stdout);
        }
        // The first server is unaffected.
        s.get("/health").assert_plain(200, "OK");

        let p = free_port().to_string();
        let out = run_cli(&["--port", &p, "--rpc-port", &p, "--runtime", rt], timeout);
        assert_eq!(out.code(), Some(1), "--rpc-port equal to --port: {:?}", out.stderr);
    });
}
