//! SPEC §2: HTTP protocol behaviour (versions, connections, parsing, framing, limits, routing,
//! HEAD/OPTIONS, 404/405, response headers, timeouts).

mod common;

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const NOT_FOUND: &str = r#"{"error":"not found"}"#;
const NOT_ALLOWED: &str = r#"{"error":"method not allowed"}"#;
const BAD_REQUEST: &str = r#"{"error":"bad request"}"#;

/// Sends raw bytes on a fresh connection and reads one response.
fn raw(s: &Server, bytes: &[u8]) -> (Response, Conn) {
    let mut c = s.conn();
    c.send(bytes);
    let r = c.read_response();
    (r, c)
}

#[track_caller]
fn assert_keep_alive(r: &Response) {
    assert!(!r.closes(), "HTTP/1.1 response must not close: {:?}", r.headers);
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let mut c = s.conn();
        for _ in 0..3 {
            c.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            let r = c.read_response();
            r.assert_plain(200, "OK");
            assert_eq!(r.version, "HTTP/1.1");
            assert_keep_alive(&r);
        }
        // Connection: close on the request closes after the response.
        c.send(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
        let r = c.read_response();
        r.assert_plain(200, "OK");
        assert!(r.closes(), "{:?}", r.headers);
        c.expect_closed();
    });
}

#[test]
fn http10_closes_unless_keep_alive() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let (r, mut c) = raw(&s, b"GET /health HTTP/1.0\r\n\r\n");
        assert_eq!(r.version, "HTTP/1.1", "status line is always HTTP/1.1");
        r.assert_plain(200, "OK");
        assert!(r.closes(), "{:?}", r.headers);
        c.expect_closed();

        let mut c = s.conn();
        for _ in 0..2 {
            c.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
            let r = c.read_response();
            assert_eq!(r.version, "HTTP/1.1");
            r.assert_plain(200, "OK");
            assert!(has_token(r.header("connection"), "keep-alive"), "{:?}", r.headers);
        }
        c.send(b"GET /health HTTP/1.0\r\n\r\n");
        let r = c.read_response();
        assert!(r.closes());
        c.expect_closed();
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let mut c = s.conn();
        let mut batch = Vec::new();
        batch.extend_from_slice(b"GET /health HTTP/1.1\r\n\r\n");
        batch.extend_from_slice(b"GET /api/exist/pk HTTP/1.1\r\n\r\n");
        batch.extend_from_slice(b"PUT /api/put/pk HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        batch.extend_from_slice(b"GET /nope HTTP/1.1\r\n\r\n");
        batch.extend_from_slice(b"GET /api/get/pk HTTP/1.1\r\n\r\n");
        batch.extend_from_slice(b"HEAD /health HTTP/1.1\r\n\r\n");
        batch.extend_from_slice(b"GET /api/exist/pk HTTP/1.1\r\n\r\n");
        c.send(&batch);
        let rs = c.read_responses(5);
        rs[0].assert_plain(200, "OK");
        rs[1].assert_json(200, r#"{"exists":false}"#);
        rs[2].assert_json(200, r#"{"status":"success"}"#);
        rs[3].assert_json(404, NOT_FOUND);
        rs[4].assert(200, CT_OCTET, "hello");
        let h = c.read_head_response();
        assert_eq!(h.status, 200);
        assert_eq!(h.content_length(), Some(2));
        c.read_response().assert_json(200, r#"{"exists":true}"#);
    });
}

#[test]
fn requests_after_a_closing_response_are_discarded() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let mut c = s.conn();
        c.send(
            b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n\
              PUT /api/put/discarded HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
        );
        let r = c.read_response();
        r.assert_plain(200, "OK");
        assert!(r.closes());
        c.expect_closed();
        assert!(!s.exists("discarded"), "a discarded request was executed");
    });
}

#[test]
fn request_split_into_single_bytes() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        let mut c = s.conn();
        let pause = Duration::from_millis(2);
        c.send_bytewise(b"GET /health HTTP/1.1\r\nX-A: b\r\n\r\n", pause);
        c.read_response().assert_plain(200, "OK");
        c.send_bytewise(b"PUT /api/put/bytewise HTTP/1.1\r\nContent-Length: 6\r\n\r\nab\r\ncd", pause);
        c.read_response().assert_json(200, r#"{"status":"success"}"#);
        c.send_bytewise(
            b"PUT /api/put/chunky HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n",
            pause,
        );
        c.read_response().assert_json(200, r#"{"status":"success"}"#);
        assert_eq!(s.get_value("bytewise").body, b"ab\r\ncd");
        assert_eq!(s.get_value("chunky").body, b"abcde");
    });
}

#[test]
fn half_close_still_gets_every_complete_response() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let mut c = s.conn();
        c.send(b"GET /health HTTP/1.1\r\n\r\nGET /api/exist/x HTTP/1.1\r\n\r\n");
        c.half_close();
        c.read_response().assert_plain(200, "OK");
        c.read_response().assert_json(200, r#"{"exists":false}"#);
        c.expect_closed();

        // An incomplete request at end of input is dropped without a response.
        let mut c = s.conn();
        c.send(b"GET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nX-Partial: 1\r\n");
        c.half_close();
        c.read_response().assert_plain(200, "OK");
        c.expect_closed();

        // Incomplete body at end of input: dropped too.
        let mut c = s.conn();
        c.send(b"POST /api/mount HTTP/1.1\r\nContent-Length: 20\r\n\r\n{\"size\"");
        c.half_close();
        c.expect_closed();
        assert_eq!(s.detail()["total_segments"], 0);
    });
}

#[test]
fn malformed_requests_get_400_and_close() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let cases: &[&[u8]] = &[
            b"GET\r\n\r\n",
            b"GET /health\r\n\r\n",
            b"GET /health HTTP/1.1 extra\r\n\r\n",
            b"GET /he alth HTTP/1.1\r\n\r\n",
            b"G(T /health HTTP/1.1\r\n\r\n",
            b"GET /health HTTP/1.x\r\n\r\n",
            b"GET /health HTTP/11\r\n\r\n",
            b"GET /health http/1.1\r\n\r\n",
            b"GET /health HTTP/1.1.1\r\n\r\n",
            b"GET /hea#lth HTTP/1.1\r\n\r\n",
            b"GET /health#frag HTTP/1.1\r\n\r\n",
            b"GET /he\x01alth HTTP/1.1\r\n\r\n",
            b"GET /he\x7falth HTTP/1.1\r\n\r\n",
            b"GET health HTTP/1.1\r\n\r\n",
            b"GET * HTTP/1.1\r\n\r\n",
            b"CONNECT 127.0.0.1:80 HTTP/1.1\r\n\r\n",
            b"GET /health HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET /health HTTP/1.1\r\nBad(Name: x\r\n\r\n",
            b"GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET /health HTTP/1.1\r\nX-A: a\r\n  folded\r\n\r\n",
            b"GET /health HTTP/1.1\r\nX-A: a\r\n\tfolded\r\n\r\n",
            b"POST /api/mount HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /api/mount HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST /api/mount HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            b"POST /api/mount HTTP/1.1\r\nContent-Length: 12a\r\n\r\n",
            b"POST /api/mount HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST /api/mount HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST /api/mount HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        for case in cases {
            let mut c = s.conn();
            c.send(case);
            let r = match c.try_read_response(false, READ_TIMEOUT) {
                Ok(r) => r,
                Err(e) => panic!("{:?}: no response: {e:?}", String::from_utf8_lossy(case)),
            };
            assert_eq!(
                (r.status, r.text().as_str()),
                (400, BAD_REQUEST),
                "request {:?}",
                String::from_utf8_lossy(case)
            );
            assert_eq!(r.content_type(), Some(CT_JSON));
            assert!(r.closes(), "400 must carry Connection: close for {:?}", String::from_utf8_lossy(case));
            c.expect_closed();
        }
        assert_eq!(s.detail()["total_segments"], 0, "no malformed mount took effect");
    });
}

#[test]
fn lenient_but_valid_forms_are_accepted() {
    for_each_runtime(|_| {
        let s = Server::start(&["--global-segment-size", "16MiB"]);
        // Bare LF line endings.
        let (r, _c) = raw(&s, b"GET /health HTTP/1.1\nX-A: 1\n\n");
        r.assert_plain(200, "OK");
        // Absolute form: path and query are used.
        let (r, _c) = raw(&s, b"GET http://127.0.0.1:1/query_key?key= HTTP/1.1\r\n\r\n");
        r.assert_json(400, r#"{"success":false,"error_code":-600,"error_message":"Missing key query parameter"}"#);
        let (r, _c) = raw(&s, b"GET http://example.com:8080/health HTTP/1.1\r\n\r\n");
        r.assert_plain(200, "OK");
        // No Host header is required (HTTP/1.1).
        let (r, _c) = raw(&s, b"GET /health HTTP/1.1\r\n\r\n");
        r.assert_plain(200, "OK");
        // Several identical Content-Length values are not "differing".
        let (r, _c) = raw(&s, b"PUT /api/put/dupcl HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc");
        r.assert_json(200, r#"{"status":"success"}"#);
        // Transfer-Encoding value is case-insensitive.
        let (r, _c) =
            raw(&s, b"PUT /api/put/techunk HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n");
        r.assert_json(200, r#"{"status":"success"}"#);
        assert_eq!(s.get_value("techunk").body, b"hi");
        // A body on a GET is read and discarded; the connection stays usable.
        let mut c = s.conn();
        c.send(b"GET /health HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcdeGET /health HTTP/1.1\r\n\r\n");
        c.read_response().assert_plain(200, "OK");
        c.read_response().assert_plain(200, "OK");
        // Method names are case-sensitive: `get` is not `GET` (known path → 405).
        let (r, _c) = raw(&s, b"get /health HTTP/1.1\r\n\r\n");
        r.assert_json(405, NOT_ALLOWED);
        assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    });
}

#[test]
fn request_head_limit_431_boundary() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let build = |total: usize| -> Vec<u8> {
            let prefix = b"GET /health HTTP/1.1\r\nX-Pad: ";
            let suffix = b"\r\n\r\n";
            let pad = total - prefix.len() - suffix.len();
            let mut v = prefix.to_vec();
            v.resize(v.len() + pad, b'a');
            v.extend_from_slice(suffix);
            assert_eq!(v.len(), total);
            v
        };
        // Exactly 65536 bytes: accepted, connection stays open.
        let mut c = s.conn();
        c.send(&build(65536));
        let r = c.read_response();
        r.assert_plain(200, "OK");
        assert_keep_alive(&r);
        c.send(b"GET /health HTTP/1.1\r\n\r\n");
        c.read_response().assert_plain(200, "OK");

        // 65537 bytes: 431, closed.
        let mut c = s.conn();
        c.send(&build(65537));
        let r = c.read_response();
        r.assert_json(431, r#"{"error":"request header fields too large"}"#);
        assert!(r.closes());
        c.expect_closed();

        // An over-long request line.
        let mut c = s.conn();
        let mut req = b"GET /health?x=".to_vec();
        req.resize(req.len() + 70000, b'b');
        req.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        c.send(&req);
        let r = c.read_response();
        r.assert_json(431, r#"{"error":"request header fields too large"}"#);
        c.expect_closed();
    });
}

#[test]
fn payload_too_large_with_content_length() {
    for_each_runtime(|_| {
        let s = Server::start(&["--max-body-size", "1024", "--global-segment-size", "16MiB"]);
        // At the limit: accepted.
        let r = s.put_raw("at-limit", &[b'x'; 1024]);
        r.assert_json(200, r#"{"status":"success"}"#);
        // Above the limit: answered at once from the head, body never sent, connection closed.
        for head in [
            "PUT /api/put/too-big HTTP/1.1\r\nContent-Length: 1025\r\n\r\n",
            "POST /api/mount HTTP/1.1\r\nContent-Length: 5000\r\n\r\n",
            "GET /health HTTP/1.1\r\nContent-Length: 2000\r\n\r\n",
            "PUT /api/put HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
        ] {
            let mut c = s.conn();
            c.send(head.as_bytes());
            let r = c.read_response();
            r.assert_json(413, r#"{"error":"payload too large"}"#);
            assert!(r.closes(), "{head:?}");
            c.expect_closed();
        }
        assert!(!s.exists("too-big"));
    });
}

#[test]
fn payload_too_large_with_chunked_body() {
    for_each_runtime(|_| {
        let s = Server::start(&["--max-body-size", "1024", "--global-segment-size", "16MiB"]);
        // Within the limit (decoded bytes count, not framing bytes).
        let mut req = b"PUT /api/put/chunked-ok HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(b"200\r\n");
        req.resize(req.len() + 512, b'a');
        req.extend_from_slice(b"\r\n200;ext=1\r\n");
        req.resize(req.len() + 512, b'b');
        req.extend_from_slice(b"\r\n0\r\nTrailer: x\r\n\r\n");
        let (r, _c) = raw(&s, &req);
        r.assert_json(200, r#"{"status":"success"}"#);
        assert_eq!(s.get_value("chunked-ok").body.len(), 1024);

        // Exceeding the limit: 413 as soon as it is exceeded, without the terminating chunk.
        let mut c = s.conn();
        let mut req = b"PUT /api/put/chunked-big HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(b"258\r\n"); // 600
        req.resize(req.len() + 600, b'a');
        req.extend_from_slice(b"\r\n258\r\n");
        req.resize(req.len() + 600, b'b');
        req.extend_from_slice(b"\r\n");
        c.send(&req);
        let r = c.read_response();
        r.assert_json(413, r#"{"error":"payload too large"}"#);
        assert!(r.closes());
        c.expect_closed();
        assert!(!s.exists("chunked-big"));
    });
}

#[test]
fn expect_header_handling() {
    for_each_runtime(|_| {
        let s = Server::start(&["--max-body-size", "1024", "--global-segment-size", "16MiB"]);
        // 100-continue: interim response, then the body, then the final response.
        let mut c = s.conn();
        c.send(b"PUT /api/put/cont HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
        let interim = c.read_response();
        assert_eq!(interim.status, 100, "{interim:?}");
        assert_eq!(interim.version, "HTTP/1.1");
        assert!(interim.header("content-length").is_none());
        assert!(interim.header("content-type").is_none());
        c.send(b"hello");
        c.read_response().assert_json(200, r#"{"status":"success"}"#);
        // Same connection still usable.
        c.send(b"GET /api/get/cont HTTP/1.1\r\n\r\n");
        c.read_response().assert(200, CT_OCTET, "hello");

        // Final responses decided from the head replace 100 Continue and close the connection.
        let cases: &[(&str, u16, &str)] = &[
            ("POST /nope HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", 404, NOT_FOUND),
            ("POST /health HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", 405, NOT_ALLOWED),
            (
                "PUT /api/put/k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
                413,
                r#"{"error":"payload too large"}"#,
            ),
            (
                "PUT /api/put/%01 HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
                400,
                r#"{"error":"Invalid key: must not contain control characters"}"#,
            ),
        ];
        for (head, status, body) in cases {
            let mut c = s.conn();
            c.send(head.as_bytes());
            let r = c.read_response();
            r.assert_json(*status, body);
            assert!(r.closes(), "{head:?}");
            c.expect_closed();
        }

        // Expect: 100-continue without a body: just the final response.
        let mut c = s.conn();
        c.send(b"GET /health HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
        c.read_response().assert_plain(200, "OK");

        // Any other expectation: 417.
        let mut c = s.conn();
        c.send(b"PUT /api/put/exp HTTP/1.1\r\nExpect: something-else\r\nContent-Length: 3\r\n\r\nabc");
        c.read_response().assert_json(417, r#"{"error":"expectation failed"}"#);
        let (r, _c) = raw(&s, b"GET /health HTTP/1.1\r\nExpect: foo\r\n\r\n");
        r.assert_json(417, r#"{"error":"expectation failed"}"#);
        assert!(!s.exists("exp"));
    });
}

#[test]
fn unsupported_versions_get_505() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let cases: &[&[u8]] = &[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /health HTTP/2.0\r\n\r\n",
            b"GET /health HTTP/1.2\r\n\r\n",
            b"GET /health HTTP/0.9\r\n\r\n",
            b"GET /health HTTP/3.0\r\n\r\n",
        ];
        for case in cases {
            let mut c = s.conn();
            c.send(case);
            let r = c.read_response();
            assert_eq!(r.version, "HTTP/1.1");
            r.assert_json(505, r#"{"error":"http version not supported"}"#);
            assert!(r.closes(), "{:?}", String::from_utf8_lossy(case));
            c.expect_closed();
        }
    });
}

#[test]
fn head_requests_have_get_headers_and_no_body() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let mut c = s.conn();
        // Pipelined so that a stray body would corrupt the following response.
        c.send(
            b"HEAD /health HTTP/1.1\r\n\r\n\
              HEAD /get_all_keys HTTP/1.1\r\n\r\n\
              HEAD /get_segments_detail HTTP/1.1\r\n\r\n\
              HEAD /api/put HTTP/1.1\r\n\r\n\
              HEAD /nope HTTP/1.1\r\n\r\n\
              GET /health HTTP/1.1\r\n\r\n",
        );
        let h = c.read_head_response();
        assert_eq!(h.status, 200);
        assert_eq!(h.content_length(), Some(2));
        assert_eq!(h.content_type(), Some(CT_PLAIN));
        let h = c.read_head_response();
        assert_eq!(h.status, 200);
        assert!(has_token(h.header("transfer-encoding"), "chunked"), "{:?}", h.headers);
        assert_eq!(h.content_type(), Some(CT_PLAIN));
        let h = c.read_head_response();
        assert_eq!(h.status, 200);
        assert_eq!(h.content_length(), Some(r#"{"total_segments":0,"segments":[]}"#.len() as u64));
        assert_eq!(h.content_type(), Some(CT_JSON));
        let h = c.read_head_response();
        assert_eq!(h.status, 405);
        assert_eq!(h.header("allow"), Some("PUT, OPTIONS"));
        let h = c.read_head_response();
        assert_eq!(h.status, 404);
        c.read_response().assert_plain(200, "OK");
    });
}

#[test]
fn options_requests() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let cases: &[(&str, &str)] = &[
            ("/metrics", "GET, HEAD, OPTIONS"),
            ("/metrics/summary", "GET, HEAD, OPTIONS"),
            ("/health", "GET, HEAD, OPTIONS"),
            ("/query_key", "GET, HEAD, OPTIONS"),
            ("/batch_query_keys", "GET, HEAD, POST, OPTIONS"),
            ("/get_all_keys", "GET, HEAD, OPTIONS"),
            ("/get_all_segments", "GET, HEAD, OPTIONS"),
            ("/query_segment", "GET, HEAD, OPTIONS"),
            ("/get_segments_detail", "GET, HEAD, OPTIONS"),
            ("/api/mount_shm", "POST, OPTIONS"),
            ("/api/unmount_shm", "POST, OPTIONS"),
            ("/api/mount", "POST, OPTIONS"),
            ("/api/unmount", "POST, OPTIONS"),
            ("/api/put", "PUT, OPTIONS"),
            ("/api/put/some-key", "PUT, OPTIONS"),
            ("/api/get/some-key", "GET, HEAD, OPTIONS"),
            ("/api/exist/some-key", "GET, HEAD, OPTIONS"),
            ("/api/remove/some-key", "DELETE, OPTIONS"),
            ("/api/remove_all", "DELETE, OPTIONS"),
            // Path parameters are not validated.
            ("/api/get/%01", "GET, HEAD, OPTIONS"),
            ("/health?x=1", "GET, HEAD, OPTIONS"),
            ("*", "GET, HEAD, POST, PUT, DELETE, OPTIONS"),
        ];
        let mut c = s.conn();
        for (path, allow) in cases {
            c.send(format!("OPTIONS {path} HTTP/1.1\r\n\r\n").as_bytes());
            let r = c.read_response();
            assert_eq!(r.status, 204, "OPTIONS {path}: {r:?}");
            assert_eq!(r.header("allow"), Some(*allow), "OPTIONS {path}");
            assert!(r.header("content-length").is_none(), "OPTIONS {path}");
            assert!(r.header("content-type").is_none(), "OPTIONS {path}");
            assert_keep_alive(&r);
        }
        // Unknown path → 404 (with a JSON body).
        c.send(b"OPTIONS /nope HTTP/1.1\r\n\r\n");
        c.read_response().assert_json(404, NOT_FOUND);
        // The connection survived every OPTIONS (no stray body).
        c.send(b"GET /health HTTP/1.1\r\n\r\n");
        c.read_response().assert_plain(200, "OK");
    });
}

#[test]
fn method_not_allowed_lists_allow_per_route() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let cases: &[(&str, &str, &str)] = &[
            ("POST", "/metrics", "GET, HEAD, OPTIONS"),
            ("PUT", "/metrics/summary", "GET, HEAD, OPTIONS"),
            ("DELETE", "/health", "GET, HEAD, OPTIONS"),
            ("PATCH", "/health", "GET, HEAD, OPTIONS"),
            ("POST", "/query_key", "GET, HEAD, OPTIONS"),
            ("DELETE", "/batch_query_keys", "GET, HEAD, POST, OPTIONS"),
            ("PUT", "/batch_query_keys", "GET, HEAD, POST, OPTIONS"),
            ("POST", "/get_all_keys", "GET, HEAD, OPTIONS"),
            ("POST", "/get_all_segments", "GET, HEAD, OPTIONS"),
            ("POST", "/query_segment", "GET, HEAD, OPTIONS"),
            ("POST", "/get_segments_detail", "GET, HEAD, OPTIONS"),
            ("GET", "/api/mount_shm", "POST, OPTIONS"),
            ("PUT", "/api/unmount_shm", "POST, OPTIONS"),
            ("GET", "/api/mount", "POST, OPTIONS"),
            ("DELETE", "/api/unmount", "POST, OPTIONS"),
            ("GET", "/api/put", "PUT, OPTIONS"),
            ("POST", "/api/put", "PUT, OPTIONS"),
            ("GET", "/api/put/k", "PUT, OPTIONS"),
            ("POST", "/api/get/k", "GET, HEAD, OPTIONS"),
            ("DELETE", "/api/exist/k", "GET, HEAD, OPTIONS"),
            ("GET", "/api/remove/k", "DELETE, OPTIONS"),
            ("POST", "/api/remove_all", "DELETE, OPTIONS"),
            ("GET", "/api/remove_all", "DELETE, OPTIONS"),
        ];
        let mut c = s.conn();
        for (method, path, allow) in cases {
            // With a small body: read and discarded, connection kept open.
            c.send(format!("{method} {path} HTTP/1.1\r\nContent-Length: 2\r\n\r\n{{}}").as_bytes());
            let r = c.read_response();
            assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
            r.assert_json(405, NOT_ALLOWED);
            assert_eq!(r.header("allow"), Some(*allow), "{method} {path}");
            assert_eq!(r.header_count("allow"), 1);
            assert_keep_alive(&r);
        }
        c.send(b"GET /health HTTP/1.1\r\n\r\n");
        c.read_response().assert_plain(200, "OK");
    });
}

#[test]
fn unknown_paths_are_404() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let paths = [
            "/",
            "/health/",
            "/Health",
            "/HEALTH",
            "/api/../health",
            "/./health",
            "//health",
            "/metrics%2Fsummary",
            "/metrics/summary/",
            "/api/get/a/b",
            "/api/get",
            "/api/put/a/b",
            "/api",
            "/api/",
            "/role",
            "/ha_status",
            "/api/v1/segments",
            "/api/unmount_local_disk",
        ];
        let mut c = s.conn();
        for p in paths {
            for method in ["GET", "POST", "FOO"] {
                c.send(format!("{method} {p} HTTP/1.1\r\nContent-Length: 1\r\n\r\nx").as_bytes());
                let r = c.read_response();
                assert_eq!(r.status, 404, "{method} {p}: {}", r.text());
                r.assert_json(404, NOT_FOUND);
                assert_keep_alive(&r);
            }
        }
    });
}

#[test]
fn every_response_has_server_and_date_headers() {
    for_each_runtime(|_| {
        let s = Server::start(&[]);
        let mut responses = vec![
            s.get("/health"),
            s.get("/nope"),
            s.request("POST", "/health", &[], b""),
            s.request("OPTIONS", "/health", &[], b""),
            s.request("OPTIONS", "*", &[], b""),
            s.head("/health"),
            s.get("/query_key"),
            s.get("/metrics"),
            s.get("/get_all_keys"),
            s.post("/api/mount", "{"),
            s.put_raw("k", b"v"), // 507: no segment
        ];
        for bytes in [
            &b"GET /health HTTP/9.9\r\n\r\n"[..],
            &b"GARBAGE\r\n\r\n"[..],
            &b"PUT /api/put HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n"[..],
        ] {
            let (r, _c) = raw(&s, bytes);
            responses.push(r);
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        for r in &responses {
            assert_eq!(r.header("server"), Some("mc-master"), "{} {:?}", r.status, r.headers);
            assert_eq!(r.header_count("server"), 1);
            let date = r.header("date").unwrap_or_else(|| panic!("no Date on {} {:?}", r.status, r.headers));
            let t = parse_imf_fixdate(date).unwrap_or_else(|| panic!("Date {date:?} is not an IMF-fixdate"));
            assert!((t - now).abs() <= 30, "Date {date:?} far from now");
            if r.status != 204 && !r.body.is_empty() {
                assert!(r.content_type().is_some(), "{:?}", r.headers);
            }
            // Framing is Content-Length, chunked or close-delimited (only /get_all_keys).
            assert!(
                r.header("content-length").is_some() || r.header("transfer-encoding").is_some() || r.status == 204,
                "{} {:?}",
                r.status,
                r.headers
            );
        }
    });
}

#[test]
fn header_read_timeout_408() {
    for_each_runtime(|_| {
        let s = Server::start(&["--header-read-timeout", "300ms", "--global-segment-size", "16MiB"]);

        // Incomplete head: 408 after ~300 ms, then close.
        let mut c = s.conn();
        let t0 = Instant::now();
        c.send(b"GET /health HTTP/1.1\r\n");
        let r = c.read_response();
        let el = t0.elapsed();
        r.assert_json(408, r#"{"error":"request timeout"}"#);
        assert!(r.closes());
        assert!(el >= Duration::from_millis(280), "408 too early: {el:?}");
        assert!(el <= Duration::from_secs(3), "408 too late: {el:?}");
        c.expect_closed();

        // Trickling header lines does not extend the deadline (head must complete in time).
        let mut c = s.conn();
        c.send(b"GET /health HTTP/1.1\r\n");
        let mut got_response = false;
        for _ in 0..12 {
            thread::sleep(Duration::from_millis(100));
            if c.readable_now() {
                got_response = true;
                break;
            }
            if c.try_send(b"X-Trickle: 1\r\n").is_err() {
                got_response = true;
                break;
            }
        }
        assert!(got_response, "trickled head was not timed out within 1.2 s");
        c.read_response().assert_json(408, r#"{"error":"request timeout"}"#);

        // The clock starts at the first byte: a silent connection is not 408'd.
        let mut c = s.conn();
        thread::sleep(Duration::from_millis(600));
        c.send(b"GET /health HTTP/1.1\r\n\r\n");
        c.read_response().assert_plain(200, "OK");

        // A gap in the body: 408, and the write is aborted.
        let mut c = s.conn();
        c.send(b"PUT /api/put/slow HTTP/1.1\r\nContent-Length: 10\r\n\r\nhello");
        let t0 = Instant::now();
        let r = c.read_response();
        let el = t0.elapsed();
        r.assert_json(408, r#"{"error":"request timeout"}"#);
        assert!(el >= Duration::from_millis(250), "408 too early: {el:?}");
        assert!(el <= Duration::from_secs(3), "408 too late: {el:?}");
        c.expect_closed();
        assert!(!s.exists("slow"));
        assert!(wait_until(Duration::from_secs(2), || { s.metrics().val("master_allocated_bytes") == 0.0 }));
        let m = s.metrics();
        assert_eq!(m.val("master_put_revoke_requests_total"), 1.0);
        assert_eq!(m.val("master_key_count"), 0.0);
        assert_eq!(
            m.sum_matching("http_requests_total", &[("code", "408")]),
            3.0,
            "every 408 is counted in http_requests_total"
        );
    });
}

#[test]
fn idle_timeout_closes_silently() {
    for_each_runtime(|_| {
        let s = Server::start(&["--idle-timeout", "300ms"]);
        // After a response.
        let mut c = s.conn();
        c.send(b"GET /health HTTP/1.1\r\n\r\n");
        c.read_response().assert_plain(200, "OK");
        let t0 = Instant::now();
        c.wait_closed(Duration::from_secs(5)).unwrap_or_else(|e| panic!("idle connection: {e}"));
        let el = t0.elapsed();
        assert!(el >= Duration::from_millis(250), "closed too early: {el:?}");
        assert!(el <= Duration::from_secs(3), "closed too late: {el:?}");

        // A connection that never sent anything.
        let mut c = s.conn();
        let t0 = Instant::now();
        c.wait_closed(Duration::from_secs(5)).unwrap_or_else(|e| panic!("never-used connection: {e}"));
        let el = t0.elapsed();
        assert!(el >= Duration::from_millis(250), "closed too early: {el:?}");

        // Activity keeps it open.
        let mut c = s.conn();
        for _ in 0..5 {
            thread::sleep(Duration::from_millis(100));
            c.send(b"GET /health HTTP/1.1\r\n\r\n");
            c.read_response().assert_plain(200, "OK");
        }
    });
}
