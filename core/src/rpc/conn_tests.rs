//! The RPC connection and service: framing edge cases of the real master (rpc-spec §2.5) and
//! the upstream semantics a client observes, driven through `RpcConnection` with bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::platform::FakePlatform;
use crate::{Config, Master, Now};

struct H {
    master: Arc<Master>,
    conn: RpcConnection,
    t0: Instant,
    now: Now,
}

impl H {
    fn new() -> Self {
        let t0 = Instant::now();
        let now = Now::new(t0, 1_700_000_000);
        let master = Master::new(Config::default(), Arc::new(FakePlatform::new(3)), now);
        let svc = RpcService::new(master.clone(), master.register_worker());
        let conn = svc.new_connection(now);
        Self { master, conn, t0, now }
    }

    fn advance(&mut self, d: Duration) {
        self.now = Now::new(self.now.mono + d, self.now.wall_unix_secs);
        let _ = self.t0;
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.conn.handle_input(self.now, bytes);
    }

    /// Every complete reply written so far: (err_code, seq, body).
    fn replies(&mut self) -> Vec<(u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(b) = self.conn.poll_transmit() {
            out.extend_from_slice(b);
            let n = b.len();
            self.conn.consume(self.now, n);
        }
        let mut frames = Vec::new();
        let mut p = 0;
        while p < out.len() {
            let h = ResponseHeader::parse(&out[p..]);
            assert_eq!((h.magic, h.version, h.msg_type, h.attach_length), (MAGIC, 0, 0, 0));
            let body = out[p + RESP_HDR..p + RESP_HDR + h.length as usize].to_vec();
            frames.push((h.err_code, h.seq, body));
            p += RESP_HDR + h.length as usize;
        }
        frames
    }

    /// Calls `name` with `args` (one value per argument) and decodes the successful reply.
    fn call(&mut self, name: &str, args: Vec<Value>) -> Value {
        let f = frame(7, name, args, true);
        self.feed(&f);
        let mut r = self.replies();
        assert_eq!(r.len(), 1);
        let (code, seq, body) = r.pop().unwrap();
        assert_eq!((code, seq), (0, 7), "{name}");
        let def = RPCS.iter().find(|d| d.name == name).unwrap();
        let (v, info) = decode(&def.ret, &body).unwrap();
        assert_eq!(info.consumed, body.len());
        assert_eq!(info.meta, Some(0x04 | (def.ret.len_code_for(&v).unwrap() << 3)), "Debug-style replies");
        v
    }
}

/// A request frame of `name` with `args`.
fn frame(seq: u32, name: &str, args: Vec<Value>, type_info: bool) -> Vec<u8> {
    let def = RPCS.iter().find(|d| d.name == name).unwrap();
    let body = match def.request_type() {
        None => Vec::new(),
        Some(t) => {
            let v = if def.args.len() == 1 { args.into_iter().next().unwrap() } else { Value::Struct(args) };
            encode(&t, &v, Style { type_info, len_code: 0 }).unwrap()
        }
    };
    raw_frame(seq, def.id, &body, &[])
}

fn raw_frame(seq: u32, fid: u32, body: &[u8], attachment: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    RequestHeader { attach_length: attachment.len() as u32, ..RequestHeader::new(seq, fid, body.len() as u32) }
        .write(&mut out);
    out.extend_from_slice(body);
    out.extend_from_slice(attachment);
    out
}

fn uuid(a: u64, b: u64) -> Value {
    Value::Struct(vec![Value::UInt(a), Value::UInt(b)])
}

fn s(x: &str) -> Value {
    Value::str(x)
}

fn segment(id: u64, base: u64, size: u64) -> Value {
    Value::Struct(vec![
        uuid(id, id),
        s("127.0.0.1:13001"),
        Value::UInt(base),
        Value::UInt(size),
        s("127.0.0.1:13001"),
        s("tcp"),
        s(""),
    ])
}

fn config(replicas: u64) -> Value {
    super::client::replicate_config(replicas)
}

fn meta(key: &str) -> Value {
    Value::Struct(vec![s(key), Value::opt(None)])
}

fn err(code: i32) -> Value {
    Value::err(code)
}

const CLIENT: (u64, u64) = (0xaaaa, 0xbbbb);

fn client() -> Value {
    uuid(CLIENT.0, CLIENT.1)
}

#[test]
fn service_ready_reply_is_the_real_masters() {
    let mut h = H::new();
    h.feed(&raw_frame(0, function_id("ServiceReady"), &[], &[]));
    let r = h.replies();
    let body: Vec<u8> =
        vec![0x35, 0xcc, 0xb3, 0x1c, 0x04, 0x87, 0x80, 0x0c, 0x01, 0x00, 0x01, 0x05, b'2', b'.', b'0', b'.', b'0'];
    assert_eq!(r, vec![(0, 0, body)]);
}

#[test]
fn pipelined_requests_are_answered_in_order_with_their_seq() {
    let mut h = H::new();
    let mut all = Vec::new();
    for seq in [0x30, 0x10, 0x20, 0xffff_ffff] {
        all.extend(frame(seq, "ServiceReady", vec![], true));
    }
    h.feed(&all);
    let seqs: Vec<u32> = h.replies().iter().map(|r| r.1).collect();
    assert_eq!(seqs, [0x30, 0x10, 0x20, 0xffff_ffff]);
    // The same bytes one at a time.
    let mut h = H::new();
    for b in &all {
        h.feed(std::slice::from_ref(b));
    }
    assert_eq!(h.replies().len(), 4);
    assert_eq!(h.conn.answered(), 4);
}

#[test]
fn unknown_and_unserved_functions_answer_not_registered() {
    let mut h = H::new();
    let expected: Vec<u8> = {
        let mut b = vec![0x77, 0xfa, 0xcf, 0x9d, 0x04, 0x80, 0x0c, 0x00, 0x1f];
        b.extend_from_slice(b"the rpc function not registered");
        b
    };
    h.feed(&raw_frame(1, 0xdead_beef, &[], &[]));
    h.feed(&raw_frame(2, function_id("CalcCacheStats"), &[], &[]));
    h.feed(&frame(3, "BatchQueryIp", vec![Value::List(vec![])], true));
    h.feed(&frame(4, "PollRemoveAll", vec![client()], true));
    h.feed(&raw_frame(5, function_id("CopyStart"), &[1, 2, 3], &[]));
    let r = h.replies();
    assert_eq!(r.len(), 5);
    for (i, (code, seq, body)) in r.into_iter().enumerate() {
        assert_eq!((code, seq), (ERRC_NOT_REGISTERED, i as u32 + 1));
        assert_eq!(body, expected);
    }
    // The connection stays usable.
    assert_eq!(h.call("ServiceReady", vec![]), Value::ok(s(SERVICE_VERSION)));
}

#[test]
fn bad_arguments_answer_invalid_rpc_arg() {
    let mut h = H::new();
    let ping = function_id("Ping");
    let exist_body = {
        let def = RPCS.iter().find(|d| d.name == "ExistKey").unwrap();
        encode(
            &def.request_type().unwrap(),
            &Value::Struct(vec![s("k"), s("default")]),
            Style { type_info: true, len_code: 0 },
        )
        .unwrap()
    };
    let good = frame(0, "Ping", vec![client()], true);
    let good_body = &good[REQ_HDR..];
    let mut altered = good_body.to_vec();
    altered[6] ^= 0x01; // inside the literal
    h.feed(&raw_frame(1, ping, &exist_body, &[])); // wrong hash
    h.feed(&raw_frame(2, ping, &altered, &[])); // right hash, altered literal
    h.feed(&raw_frame(3, ping, &[], &[])); // empty body
    h.feed(&raw_frame(4, ping, &good_body[..good_body.len() - 1], &[])); // truncated
    let r = h.replies();
    let mut msg = vec![0x77, 0xfa, 0xcf, 0x9d, 0x04, 0x80, 0x0c, 0x00, 0x0f];
    msg.extend_from_slice(b"invalid rpc arg");
    assert_eq!(r.len(), 4);
    for (code, _, body) in r {
        assert_eq!(code, ERRC_INVALID_ARG);
        assert_eq!(body, msg);
    }
}

#[test]
fn every_request_style_is_accepted() {
    let mut h = H::new();
    let release = frame(1, "Ping", vec![client()], false);
    let def = RPCS.iter().find(|d| d.name == "Ping").unwrap();
    let wide = encode(&def.request_type().unwrap(), &client(), Style { type_info: true, len_code: 1 }).unwrap();
    let mut trailing = frame(3, "Ping", vec![client()], true)[REQ_HDR..].to_vec();
    trailing.extend_from_slice(&[0xee, 0xee]);
    h.feed(&release);
    h.feed(&raw_frame(2, def.id, &wide, &[]));
    h.feed(&raw_frame(3, def.id, &trailing, &[]));
    h.feed(&raw_frame(4, def.id, &frame(0, "Ping", vec![client()], true)[REQ_HDR..], &[1, 2, 3, 4, 5]));
    let mut seven = frame(5, "Ping", vec![client()], true);
    seven[3] = 7; // msg_type
    h.feed(&seven);
    let r = h.replies();
    assert_eq!(r.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(), [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5)]);
}

#[test]
fn bad_magic_version_or_serialize_type_close_without_a_reply() {
    for (off, byte) in [(0, 0x16u8), (1, 1), (2, 1)] {
        let mut h = H::new();
        let mut bad = frame(9, "ServiceReady", vec![], true);
        bad[off] = byte;
        let mut input = frame(8, "ServiceReady", vec![], true);
        input.extend_from_slice(&bad);
        input.extend(frame(10, "ServiceReady", vec![], true));
        h.feed(&input);
        let r = h.replies();
        assert_eq!(r.iter().map(|x| x.1).collect::<Vec<_>>(), [8], "only the request before the bad frame");
        assert!(h.conn.is_closed());
        assert!(!h.conn.wants_read());
        h.feed(&frame(11, "ServiceReady", vec![], true));
        assert!(h.replies().is_empty());
    }
    // An oversized frame closes too.
    let mut h = H::new();
    let mut huge = frame(1, "ServiceReady", vec![], true);
    huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    h.feed(&huge);
    assert!(h.conn.is_closed());
}

#[test]
fn eof_answers_complete_requests_and_drops_a_partial_one() {
    let mut h = H::new();
    let mut input = frame(1, "ServiceReady", vec![], true);
    input.extend_from_slice(&frame(2, "Ping", vec![client()], true)[..25]);
    h.feed(&input);
    h.conn.handle_eof(h.now);
    assert_eq!(h.replies().len(), 1);
    assert!(h.conn.is_closed());
    assert_eq!(h.conn.poll_timeout(), None);
    // Shutdown: replies already queued are written, then the connection closes.
    let mut h = H::new();
    h.feed(&frame(1, "ServiceReady", vec![], true));
    h.conn.handle_shutdown(h.now);
    assert!(!h.conn.is_closed());
    assert_eq!(h.replies().len(), 1);
    assert!(h.conn.is_closed());
}

#[test]
fn client_life_cycle_as_the_upstream_client_sees_it() {
    let mut h = H::new();
    assert_eq!(h.call("ServiceReady", vec![]), Value::ok(s("2.0.0")));
    let cfg = h.call("GetStorageConfig", vec![]);
    assert_eq!(cfg, Value::ok(Value::Struct(vec![s(""), Value::Bool(true), Value::UInt(0)])));
    assert_eq!(h.call("FetchTasks", vec![client(), Value::UInt(16)]), Value::ok(Value::List(vec![])));
    let base = 0x7f00_0000_0000u64;
    assert_eq!(h.call("MountSegment", vec![segment(1, base, 1 << 24), client()]), Value::ok_void());
    assert_eq!(h.call("MountSegment", vec![segment(2, 0, 1 << 24), client()]), err(-600));
    let ping = |status: i64| Value::ok(Value::Struct(vec![Value::Int(0), Value::Int(status)]));
    assert_eq!(h.call("Ping", vec![client()]), ping(2), "NEED_REMOUNT until ReMountSegment");
    assert_eq!(
        h.call("ReMountSegment", vec![Value::List(vec![segment(1, base, 1 << 24)]), client()]),
        Value::ok_void()
    );
    assert_eq!(h.call("Ping", vec![client()]), ping(1));
    // Put: PROCESSING descriptor in the client's segment, COMPLETE after PutEnd.
    let start = h.call("PutStart", vec![client(), s("k1"), Value::UInt(5), config(1), s("default")]);
    let desc = |status: i64| {
        Value::Struct(vec![
            Value::UInt(1),
            Value::Variant(
                0,
                Box::new(Value::Struct(vec![Value::Struct(vec![
                    Value::UInt(5),
                    Value::UInt(base),
                    s("tcp"),
                    s("127.0.0.1:13001"),
                ])])),
            ),
            Value::Int(status),
        ])
    };
    assert_eq!(start, Value::ok(Value::List(vec![desc(2)])));
    assert_eq!(h.call("ExistKey", vec![s("k1"), s("default")]), Value::ok(Value::Bool(false)));
    let end = h.call("PutEnd", vec![client(), meta("k1"), Value::Int(4), s("default")]);
    assert_eq!(end, Value::ok_void());
    assert_eq!(h.call("PutStart", vec![client(), s("k1"), Value::UInt(5), config(1), s("default")]), err(-705));
    assert_eq!(h.call("ExistKey", vec![s("k1"), s("default")]), Value::ok(Value::Bool(true)));
    let list = h.call("GetReplicaList", vec![s("k1"), s("default")]);
    assert_eq!(list, Value::ok(Value::Struct(vec![Value::List(vec![desc(3)]), Value::UInt(10_000), Value::opt(None)])));
    assert_eq!(h.call("Remove", vec![s("k1"), Value::Bool(false), s("default")]), err(-706));
    assert_eq!(h.call("GetReplicaList", vec![s("nope"), s("default")]), err(-704));
    let batch = h.call("BatchExistKey", vec![Value::List(vec![s("k1"), s("nope")]), s("default")]);
    assert_eq!(batch, Value::List(vec![Value::ok(Value::Bool(true)), Value::ok(Value::Bool(false))]));
    // A newer client's lease-free checks answer the same (ExistKey grants no lease here).
    assert_eq!(h.call("ProbeKey", vec![s("k1"), s("default")]), Value::ok(Value::Bool(true)));
    assert_eq!(h.call("ProbeKey", vec![s("nope"), s("default")]), Value::ok(Value::Bool(false)));
    let probed = h.call("BatchProbeKey", vec![Value::List(vec![s("k1"), s("nope")]), s("default")]);
    assert_eq!(probed, batch);
    // Batch put of two keys, one revoked.
    let keys = Value::List(vec![s("b1"), s("b2")]);
    let lens = Value::List(vec![Value::UInt(3), Value::UInt(3)]);
    let started = h.call("BatchPutStart", vec![client(), keys, lens, config(1), s("default")]);
    assert_eq!(started.as_list().map(|l| l.len()), Some(2));
    let ended = h.call("BatchPutEnd", vec![client(), Value::List(vec![meta("b1")]), Value::Int(4), s("default")]);
    assert_eq!(ended, Value::List(vec![Value::ok_void()]));
    let revoked =
        h.call("BatchPutRevoke", vec![client(), Value::List(vec![s("b2"), s("b9")]), Value::Int(4), s("default")]);
    assert_eq!(revoked, Value::List(vec![Value::ok_void(), err(-704)]));
    // Upsert replaces.
    h.call("UpsertStart", vec![client(), s("b1"), Value::UInt(4), config(1), s("default")]);
    h.call("UpsertEnd", vec![client(), meta("b1"), Value::Int(4), s("default")]);
    let b1 = h.call("GetReplicaList", vec![s("b1"), s("default")]);
    let size = |v: &Value| -> u64 {
        let Value::Ok(x) = v else { panic!() };
        let f = x.as_fields().unwrap();
        let d = &f[0].as_list().unwrap()[0].as_fields().unwrap()[1];
        let Value::Variant(0, m) = d else { panic!() };
        m.as_fields().unwrap()[0].as_fields().unwrap()[0].as_u64().unwrap()
    };
    assert_eq!(size(&b1), 4);
    // Regex forms; RemoveAll returns a plain count.
    h.call("PutStart", vec![client(), s("r-1"), Value::UInt(1), config(1), s("default")]);
    h.call("PutEnd", vec![client(), meta("r-1"), Value::Int(4), s("default")]);
    let by = h.call("GetReplicaListByRegex", vec![s("^r-"), s("default")]);
    assert!(matches!(&by, Value::Ok(m) if matches!(&**m, Value::Map(p) if p.len() == 1)));
    assert_eq!(h.call("RemoveByRegex", vec![s("("), Value::Bool(false), s("default")]), err(-600));
    assert_eq!(h.call("RemoveByRegex", vec![s("^r-"), Value::Bool(true), s("default")]), Value::ok(Value::Int(1)));
    assert_eq!(h.call("RemoveAll", vec![Value::Bool(false), s("default")]), Value::Int(0), "k1, b1 leased");
    assert_eq!(h.call("RemoveAll", vec![Value::Bool(true), s("default")]), Value::Int(2));
    let removed = h.call("BatchRemove", vec![Value::List(vec![s("k1")]), Value::Bool(true), s("default")]);
    assert_eq!(removed, Value::List(vec![err(-704)]));
    // Invalid keys are INVALID_PARAMS, not a transport error.
    assert_eq!(h.call("ExistKey", vec![s(""), s("default")]), err(-600));
    assert_eq!(h.call("ExistKey", vec![s("a\nb"), s("default")]), err(-600));
    // Segment status and graceful unmount.
    let seg1 = uuid(1, 1);
    assert_eq!(h.call("QuerySegmentStatusById", vec![seg1.clone()]), Value::ok(Value::Int(1)));
    assert_eq!(h.call("QuerySegmentStatus", vec![s("127.0.0.1:13001")]), Value::ok(Value::Int(1)));
    let graceful = h.call("GracefulUnmountSegment", vec![seg1.clone(), client(), Value::UInt(1000)]);
    assert_eq!(graceful, Value::ok_void());
    assert_eq!(h.call("QuerySegmentStatusById", vec![seg1.clone()]), Value::ok(Value::Int(4)));
    h.advance(Duration::from_millis(1000));
    // The runtime drives process deadlines; here by hand.
    assert!(h.master.poll_timeout().is_some_and(|d| d <= h.now.mono));
    h.master.handle_timeout(h.now);
    assert_eq!(h.call("QuerySegmentStatusById", vec![seg1.clone()]), err(-101), "gone at the deadline");
    assert_eq!(h.call("UnmountSegment", vec![uuid(9, 9), client()]), Value::ok_void(), "unknown ids succeed");
    assert_eq!(h.call("QuerySegmentStatus", vec![s("nobody")]), err(-101));
}

/// A header announcing a 256 MiB frame does not make the connection reserve 256 MiB before
/// the bytes arrive (found by the `rpc_conn` fuzz target); the frame is still served once
/// it is complete.
#[test]
fn a_huge_announced_frame_reserves_little() {
    let mut h = H::new();
    let hdr = [0x15u8, 0, 0, 0, 0, 0, 0, 0, 0x56, 0xbb, 0x81, 0x7b, 0, 0, 0, 0x10, 0, 0, 0, 0];
    h.feed(&hdr);
    assert!(h.conn.inbuf_capacity_for_test() <= 2 << 20, "{}", h.conn.inbuf_capacity_for_test());
    assert!(h.replies().is_empty());
    assert!(h.conn.wants_read());
}
