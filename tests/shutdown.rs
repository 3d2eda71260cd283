//! SPEC §2.7, §4.9: graceful shutdown on SIGTERM / SIGINT.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// An idle keep-alive connection (one request answered) and a connection with a request in
/// progress (`GET /health` whose head is complete and whose 5-byte body is partly received).
fn idle_and_busy(s: &Server) -> (Conn, Conn) {
    let mut idle = s.conn();
    idle.send(b"GET /health HTTP/1.1\r\n\r\n");
    idle.read_response().assert_plain(200, "OK");
    let mut busy = s.conn();
    busy.send(b"GET /health HTTP/1.1\r\nContent-Length: 5\r\n\r\nab");
    thread::sleep(Duration::from_millis(150));
    (idle, busy)
}

/// Waits until the idle connection is closed, which marks the shutting-down state.
#[track_caller]
fn wait_shutting_down(idle: &mut Conn) {
    idle.wait_closed(Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("idle connection not closed at once on shutdown: {e}"));
}

#[test]
fn sigterm_drains_connections_and_exits_0() {
    for_each_runtime(|_| {
        let mut s = Server::start(&[]);
        let (mut idle, mut busy) = idle_and_busy(&s);
        let t0 = Instant::now();
        s.signal(libc::SIGTERM);
        wait_shutting_down(&mut idle);

        // Listeners stay open; /health is 503; every response closes its connection.
        let r = s.get("/health");
        r.assert_plain(503, "UNAVAILABLE");
        assert!(r.closes(), "{:?}", r.headers);
        let r = s.request("GET", "/health", &[("Accept", "application/json")], b"");
        r.assert_json(
            503,
            r#"{"status":"unavailable","role":"leader","ha_state":"stopping","service_ready":false,"leader_address":null,"view_version":null}"#,
        );
        assert!(r.closes());
        let mut c = s.conn();
        c.send(b"GET /api/exist/x HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n");
        let r = c.read_response();
        r.assert_json(200, r#"{"exists":false}"#);
        assert!(r.closes(), "{:?}", r.headers);
        c.expect_closed();
        let r = s.get("/get_segments_detail");
        r.assert_json(200, r#"{"total_segments":0,"segments":[]}"#);
        assert!(r.closes());

        // The request in progress is answered (503 for /health) and closed.
        busy.send(b"cde");
        let r = busy.read_response();
        r.assert_plain(503, "UNAVAILABLE");
        assert!(r.closes());
        busy.expect_closed();

        // No connection left: exit 0, well before the 5 s deadline.
        let st = s.wait_exit(Duration::from_secs(7)).expect("process did not exit");
        assert_eq!(st.code(), Some(0), "{st:?}");
        let el = t0.elapsed();
        assert!(el < Duration::from_secs(4), "exit took {el:?} after the last connection closed");
    });
}

#[test]
fn shutdown_exits_within_5_seconds_despite_open_connection() {
    for_each_runtime(|_| {
        let mut s = Server::start(&[]);
        let (mut idle, mut busy) = idle_and_busy(&s);
        let t0 = Instant::now();
        s.signal(libc::SIGINT);
        wait_shutting_down(&mut idle);
        let st = s.wait_exit(Duration::from_secs(8)).expect("process did not exit");
        let el = t0.elapsed();
        assert_eq!(st.code(), Some(0), "{st:?}");
        assert!(el <= Duration::from_millis(6500), "exit after {el:?}");
        assert!(el >= Duration::from_millis(4500), "exited after {el:?} while a request was still in progress");
        busy.expect_closed();
    });
}

#[test]
fn second_signal_exits_at_once() {
    for_each_runtime(|_| {
        for (first, second) in [(libc::SIGTERM, libc::SIGTERM), (libc::SIGTERM, libc::SIGINT)] {
            let mut s = Server::start(&[]);
            let (mut idle, _busy) = idle_and_busy(&s);
            s.signal(first);
            wait_shutting_down(&mut idle);
            let t1 = Instant::now();
            s.signal(second);
            let st = s.wait_exit(Duration::from_secs(4)).expect("process did not exit");
            assert_eq!(st.code(), Some(0), "{st:?}");
            let el = t1.elapsed();
            assert!(el < Duration::from_millis(1500), "second signal: exit after {el:?}");
        }
    });
}

#[test]
fn exits_promptly_without_connections() {
    for_each_runtime(|_| {
        for sig in [libc::SIGTERM, libc::SIGINT] {
            let mut s = Server::start(&["--global-segment-size", "16MiB"]);
            s.get("/health").assert_plain(200, "OK");
            let t0 = Instant::now();
            s.signal(sig);
            let st = s.wait_exit(Duration::from_secs(7)).expect("process did not exit");
            assert_eq!(st.code(), Some(0), "signal {sig}: {st:?}");
            let el = t0.elapsed();
            assert!(el < Duration::from_secs(2), "signal {sig}: exit after {el:?}");
        }
    });
}
