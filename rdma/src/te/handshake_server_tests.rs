use std::sync::{Mutex, OnceLock};

use proptest::prelude::*;

use super::*;

fn at(ms: u64) -> Now {
    static T0: OnceLock<Instant> = OnceLock::new();
    Now::new(*T0.get_or_init(Instant::now) + Duration::from_millis(ms), 1_700_000_000)
}

/// The descriptor of te-handshake-frames.txt conn 1.
fn upstream_desc() -> SegmentDesc {
    SegmentDesc::tcp(
        "127.0.0.1:8598",
        "127.0.0.1",
        8594,
        "2026-11-27 03:01:52.297568".into(),
        &[(140_524_574_998_528, 268_435_456)],
    )
}

fn acceptor() -> HandshakeAcceptor {
    HandshakeAcceptor::new(Arc::new(upstream_desc))
}

fn frame(kind: Option<u8>, json: &str) -> Vec<u8> {
    let len = json.len() as u64 + u64::from(kind.is_some());
    let mut out = len.to_le_bytes().to_vec();
    out.extend(kind);
    out.extend_from_slice(json.as_bytes());
    out
}

/// Feeds `pieces`, then drains the output `step` bytes at a time.
fn exchange(session: &mut dyn Session, pieces: &[&[u8]], step: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        session.handle_input(at(0), p);
    }
    loop {
        let mut bufs = [IoSlice::new(&[])];
        if session.poll_transmit(&mut bufs) == 0 {
            break;
        }
        let n = bufs[0].len().min(step);
        out.extend_from_slice(&bufs[0][..n]);
        session.consume(at(0), n);
    }
    out
}

fn one(input: &[u8]) -> (Vec<u8>, bool) {
    let mut s = acceptor().accept(at(0));
    let out = exchange(&mut *s, &[input], usize::MAX);
    (out, s.is_closed())
}

#[test]
fn golden_exchanges_of_the_transcript() {
    // te-handshake-frames.txt conns 1-4: requests and the upstream target's replies.
    let cases = [
        (
            frame(Some(1), "{\"name\": \"raw-probe\"}\n"),
            frame(Some(1), "{\"buffers\":[{\"addr\":140524574998528,\"length\":268435456,\"name\":\"127.0.0.1:8598\"}],\"name\":\"127.0.0.1:8598\",\"protocol\":\"tcp\",\"rdma_server_name\":\"\",\"tcp_data_host\":\"127.0.0.1\",\"tcp_data_port\":8594,\"tcp_proto_version\":2,\"timestamp\":\"2026-11-27 03:01:52.297568\"}\n"),
        ),
        (frame(Some(3), "{}\n"), frame(Some(3), "{\"status\":\"success\"}\n")),
        (
            frame(Some(2), "{\"name\": \"raw\", \"notify_msg\": \"hello\"}\n"),
            frame(Some(2), "{\"name\":\"\",\"notify_msg\":\"success\"}\n"),
        ),
        (
            frame(Some(0), "{\"local_nic_path\": \"x@y\", \"peer_nic_path\": \"127.0.0.1:8598@z\", \"qp_num\": [1, 2]}\n"),
            frame(Some(0), "{\"local_gid\":\"\",\"local_lid\":0,\"local_nic_path\":\"\",\"payload\":\"\",\"peer_nic_path\":\"\",\"qp_num\":[],\"reply_msg\":\"\"}\n"),
        ),
    ];
    for (req, want) in cases {
        let (out, closed) = one(&req);
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&want));
        assert!(closed);
    }
    // The prefix of the Metadata reply: 02 01 00 00 00 00 00 00 | 01.
    assert_eq!(&one(&frame(Some(1), "{}\n")).0[..9], &[2, 1, 0, 0, 0, 0, 0, 0, 1]);
}

#[test]
fn p2p_metadata_exchange_ignores_the_peer_descriptor() {
    // te-handshake-frames.txt conn 5: an upstream engine sends its own descriptor.
    let req = frame(Some(1), "{\"buffers\":[{\"addr\":140670583566352,\"length\":4194304,\"name\":\"127.0.0.1:8592\"}],\"name\":\"127.0.0.1:8592\",\"protocol\":\"tcp\",\"rdma_server_name\":\"\",\"tcp_data_host\":\"127.0.0.1\",\"tcp_data_port\":8596,\"tcp_proto_version\":2,\"timestamp\":\"2026-11-27 03:01:53.794888\"}\n");
    assert_eq!(req[..8], [0, 1, 0, 0, 0, 0, 0, 0]);
    let (out, closed) = one(&req);
    let mut want = upstream_desc().to_json();
    want.push(b'\n');
    assert_eq!(out, frame(Some(1), std::str::from_utf8(&want).unwrap()));
    assert!(closed);
}

#[test]
fn old_protocol_request_gets_an_old_protocol_reply() {
    let (out, closed) = one(&frame(None, "{\"local_nic_path\":\"a@b\"}\n"));
    let json = "{\"local_gid\":\"\",\"local_lid\":0,\"local_nic_path\":\"\",\"payload\":\"\",\"peer_nic_path\":\"\",\"qp_num\":[],\"reply_msg\":\"\"}\n";
    assert_eq!(out, frame(None, json));
    assert!(closed);
}

#[test]
fn notifications_reach_the_sink() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let mut acceptor = acceptor().with_notify(Arc::new(move |n| sink.lock().unwrap().push(n)));
    let mut s = acceptor.accept(at(0));
    let out = exchange(&mut *s, &[&frame(Some(2), "{\"name\": \"raw\", \"notify_msg\": \"hello\"}\n")], 7);
    assert_eq!(out, frame(Some(2), "{\"name\":\"\",\"notify_msg\":\"success\"}\n"));
    assert_eq!(*seen.lock().unwrap(), vec![NotifyDesc { name: "raw".into(), notify_msg: "hello".into() }]);
}

#[test]
fn invalid_requests_close_without_a_reply() {
    let bad = [
        0u64.to_le_bytes().to_vec(),             // length 0
        (2u64 << 20).to_le_bytes().to_vec(),     // above 1 MiB
        frame(Some(3), "not json\n"),            // invalid JSON
        frame(Some(1), ""),                      // no JSON at all
        frame(Some(2), "[1]\n"),                 // not a notify document
        frame(Some(0), "{\"qp_num\": \"x\"}\n"), // wrong field type
        frame(None, "garbage"),                  // old protocol, not JSON
    ];
    for req in bad {
        let (out, closed) = one(&req);
        assert!(out.is_empty() && closed, "{req:?}");
    }
}

#[test]
fn request_deadline_eof_and_shutdown() {
    let mut acceptor = acceptor();
    assert_eq!(acceptor.on_shutdown(), ListenerAtShutdown::Close);
    let mut s = acceptor.accept(at(1000));
    assert_eq!(s.poll_timeout(), Some(at(6000).mono));
    assert!(s.wants_read());
    s.handle_input(at(2000), &frame(Some(3), "{}\n")[..5]);
    s.handle_timeout(at(5999));
    assert!(!s.is_closed());
    s.handle_timeout(at(6000));
    assert!(s.is_closed() && !s.wants_read());
    assert_eq!(s.poll_timeout(), None);

    let mut s = acceptor.clone().with_timeout(Duration::from_secs(1)).accept(at(0));
    assert_eq!(s.poll_timeout(), Some(at(1000).mono));
    s.handle_eof(at(0));
    assert!(s.is_closed());

    let mut s = acceptor.accept(at(0));
    s.handle_shutdown(at(0));
    assert!(s.is_closed());

    // Once the request is in, EOF and shutdown let the reply go out.
    let mut s = acceptor.accept(at(0));
    s.handle_input(at(0), &frame(Some(3), "{}\n"));
    s.handle_eof(at(0));
    s.handle_shutdown(at(0));
    assert!(!s.is_closed() && !s.wants_read());
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(exchange(&mut *s, &[], 5), frame(Some(3), "{\"status\":\"success\"}\n"));
    assert!(s.is_closed());
}

#[test]
fn bytes_after_the_request_are_ignored() {
    let mut req = frame(Some(3), "{}\n");
    req.extend(frame(Some(3), "{}\n"));
    req.extend_from_slice(b"trailing garbage");
    let (out, closed) = one(&req);
    assert_eq!(out, frame(Some(3), "{\"status\":\"success\"}\n"));
    assert!(closed);
}

#[test]
fn the_provider_is_asked_on_every_request() {
    let n = Arc::new(Mutex::new(0u32));
    let count = n.clone();
    let mut acceptor = HandshakeAcceptor::new(Arc::new(move || {
        *count.lock().unwrap() += 1;
        SegmentDesc { name: format!("v{}", *count.lock().unwrap()), ..SegmentDesc::default() }
    }));
    for want in ["v1", "v2"] {
        let mut s = acceptor.accept(at(0));
        let out = exchange(&mut *s, &[&frame(Some(1), "{}\n")], usize::MAX);
        assert!(String::from_utf8_lossy(&out).contains(want));
    }
}

proptest! {
    #[test]
    fn any_split_gives_the_same_reply(
        kind in 0u8..5,
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        step in 1usize..40,
        junk in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let json = match kind {
            0 => "{\"qp_num\":[1]}\n",
            1 => "{\"name\":\"n\"}\n",
            2 => "{\"name\":\"a\",\"notify_msg\":\"b\"}\n",
            3 => "{}\n",
            _ => "{}",
        };
        let mut input = frame(Some(kind), json);
        input.extend(junk);
        let (whole, closed) = one(&input);
        prop_assert!(closed);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        points.sort_unstable();
        let mut pieces = Vec::new();
        let mut prev = 0;
        for p in points.into_iter().chain([input.len()]) {
            pieces.push(&input[prev..p]);
            prev = p;
        }
        let mut s = acceptor().accept(at(0));
        prop_assert_eq!(exchange(&mut *s, &pieces, step), whole);
        prop_assert!(s.is_closed());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let (whole, _) = one(&bytes);
        let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
        let mut s = acceptor().accept(at(0));
        prop_assert_eq!(exchange(&mut *s, &pieces, 1), whole);
    }
}
