//! Codec tests: every golden frame decodes and re-encodes byte for byte; constants match the
//! spec's tables; malformed buffers are rejected. (Connection and service tests live in
//! `conn_tests.rs`.)

use std::collections::HashMap;

use super::frame::*;
use super::pack::*;
use super::types::*;

/// One captured frame: direction (true = request), connection, bytes.
struct Captured {
    request: bool,
    conn: u32,
    raw: Vec<u8>,
}

fn parse_hex(s: &str) -> Vec<u8> {
    assert!(s.len() & 1 == 0, "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// Lines `DIR CONN HEX [# comment]`; other lines are comments.
fn load(text: &str) -> Vec<Captured> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next().unwrap_or("").trim();
            let mut parts = l.split_whitespace();
            let dir = parts.next()?;
            let request = match dir {
                "C->M" => true,
                "M->C" => false,
                _ => return None,
            };
            let conn = parts.next()?.parse().expect("connection number");
            Some(Captured { request, conn, raw: parse_hex(parts.next().expect("hex")) })
        })
        .collect()
}

const FILES: [(&str, &str); 3] = [
    ("rpc-frames.txt", include_str!("testdata/rpc-frames.txt")),
    ("rpc-frames-raw.txt", include_str!("testdata/rpc-frames-raw.txt")),
    ("rpc-frames-probe.txt", include_str!("testdata/rpc-frames-probe.txt")),
];

/// Decodes `body` as `ty`, checks that the whole body was used and that the width code is the
/// one struct_pack would choose, and re-encodes it in the same style.
fn round_trip_body(ty: &Ty, body: &[u8]) -> (Value, Vec<u8>) {
    let (v, info) = decode(ty, body).unwrap_or_else(|e| panic!("decode {ty:?}: {e}"));
    assert_eq!(info.consumed, body.len(), "trailing bytes");
    assert_eq!(info.len_code, ty.len_code_for(&v).unwrap(), "LEN_SIZE differs from struct_pack's choice");
    let again = encode(ty, &v, info.style()).expect("value matches its type");
    (v, again)
}

/// Re-encodes one frame; returns the RPC name.
fn round_trip(f: &Captured, pending: &mut HashMap<(u32, u32), &'static RpcInfo>) -> &'static str {
    let mut out = Vec::new();
    if f.request {
        let h = RequestHeader::parse(&f.raw);
        assert!(h.is_acceptable());
        let body = &f.raw[REQ_HDR..REQ_HDR + h.length as usize];
        let attachment = &f.raw[REQ_HDR + h.length as usize..];
        assert_eq!(attachment.len(), h.attach_length as usize);
        let info = lookup(h.function_id).unwrap_or_else(|| panic!("unknown id {:#010x}", h.function_id));
        assert_eq!(method_name(h.function_id), Some(info.def.name));
        let again = match info.req {
            None => {
                assert!(body.is_empty());
                Vec::new()
            }
            Some(ty) => round_trip_body(&ty, body).1,
        };
        RequestHeader { length: again.len() as u32, ..h }.write(&mut out);
        out.extend_from_slice(&again);
        out.extend_from_slice(attachment);
        pending.insert((f.conn, h.seq), info);
        assert_eq!(out, f.raw, "{} request", info.def.name);
        info.def.name
    } else {
        let h = ResponseHeader::parse(&f.raw);
        assert_eq!(f.raw.len(), RESP_HDR + h.length as usize + h.attach_length as usize);
        let body = &f.raw[RESP_HDR..RESP_HDR + h.length as usize];
        let info = pending.remove(&(f.conn, h.seq)).expect("a reply answers a request of its connection");
        let ty = match h.err_code {
            0 => info.def.ret,
            255 => ERROR_BODY_255,
            _ => ERROR_BODY,
        };
        let again = round_trip_body(&ty, body).1;
        ResponseHeader { length: again.len() as u32, ..h }.write(&mut out);
        out.extend_from_slice(&again);
        assert_eq!(out, f.raw, "{} reply", info.def.name);
        info.def.name
    }
}

#[test]
fn every_golden_frame_round_trips() {
    let mut total = 0;
    let mut per_rpc: HashMap<&str, usize> = HashMap::new();
    for (name, text) in FILES {
        let frames = load(text);
        assert!(!frames.is_empty(), "{name}");
        let mut pending = HashMap::new();
        for f in &frames {
            *per_rpc.entry(round_trip(f, &mut pending)).or_default() += 1;
        }
        assert!(pending.is_empty(), "{name}: requests without a reply");
        total += frames.len();
    }
    assert_eq!(total, 48 + 230 + 76, "frames in the golden files");
    // Every RPC of the table appears on the wire at least once (request and reply), but
    // the newer clients' ones, which no golden capture has (conn_tests cover them).
    for def in RPCS.iter().filter(|d| !NEWER_CLIENT_METHODS.contains(&d.name)) {
        assert!(per_rpc.get(def.name).copied().unwrap_or(0) >= 2, "{} not covered", def.name);
    }
}

#[test]
fn golden_replies_of_the_real_master_are_what_this_encoder_writes() {
    // Debug style with the chosen width: `encode` of the decoded value in the default style
    // of this master reproduces every success reply of the real master.
    for (_, text) in FILES {
        let mut pending: HashMap<(u32, u32), &RpcInfo> = HashMap::new();
        for f in load(text) {
            if f.request {
                let h = RequestHeader::parse(&f.raw);
                pending.insert((f.conn, h.seq), lookup(h.function_id).unwrap());
                continue;
            }
            let h = ResponseHeader::parse(&f.raw);
            let info = pending.remove(&(f.conn, h.seq)).unwrap();
            let body = &f.raw[RESP_HDR..];
            if h.err_code != 0 {
                let msg = decode(&ERROR_BODY, body).unwrap().0;
                assert_eq!(error_body(std::str::from_utf8(msg.as_bytes().unwrap()).unwrap()), body);
                continue;
            }
            let (v, _) = decode(&info.def.ret, body).unwrap();
            let mine = encode_with(
                &info.def.ret,
                &info.ret_literal,
                info.ret_hash,
                &v,
                Style { type_info: true, len_code: 0 },
            )
            .unwrap();
            assert_eq!(mine, body, "{}", info.def.name);
        }
    }
}

/// (name, function id, request hash, response hash) from the spec's table (§5.1).
/// Newer clients' methods (not in rpc-spec): their ids are the same hash of the name.
const PROBE_KEY_ID: u32 = function_id("ProbeKey");
const BATCH_PROBE_KEY_ID: u32 = function_id("BatchProbeKey");

const SPEC_TABLE: [(&str, u32, Option<u32>, u32); 40] = [
    ("ServiceReady", 0x7b81bb56, None, 0x1cb3cc34),
    ("GetStorageConfig", 0x8da9b0a6, None, 0x9cb568ea),
    ("GetFsdir", 0x3e585123, None, 0x1cb3cc34),
    ("Ping", 0xd6c2dae5, Some(0x3c6d83e0), 0x742a8f52),
    ("FetchTasks", 0xdf141844, Some(0x759a9b84), 0x59e14526),
    ("MountSegment", 0x3e7ec4bb, Some(0x9ef70dae), 0xaf2868cc),
    ("ReMountSegment", 0x0b053b72, Some(0xc6c66b88), 0xaf2868cc),
    ("UnmountSegment", 0x6f10b465, Some(0xd4c512e0), 0xaf2868cc),
    ("GracefulUnmountSegment", 0xa4ec3175, Some(0x8e092e9c), 0xaf2868cc),
    ("QuerySegmentStatusById", 0x573fd453, Some(0x3c6d83e0), 0x9851e9a8),
    ("QuerySegmentStatus", 0x79b8af8c, Some(0x9dcffa76), 0x9851e9a8),
    ("ExistKey", 0x89385f09, Some(0x7cf91ed8), 0x90e800d2),
    ("BatchExistKey", 0xb89fa6b0, Some(0x00f78d62), 0x2a5f8c5c),
    ("GetReplicaList", 0x1f7ef174, Some(0x7cf91ed8), 0x88c6276c),
    ("BatchGetReplicaList", 0x1b0d20ff, Some(0x00f78d62), 0x20c5453a),
    ("GetReplicaListByRegex", 0xfe6af93c, Some(0x7cf91ed8), 0x7343c040),
    ("PutStart", 0x65ea9ac1, Some(0xe385bd0e), 0xc43927a6),
    ("PutEnd", 0x8e8b2099, Some(0xd1819222), 0xaf2868cc),
    ("PutRevoke", 0xa0767c44, Some(0x1b7a228a), 0xaf2868cc),
    ("BatchPutStart", 0x56be1822, Some(0x5870c0a4), 0xad006d02),
    ("BatchPutEnd", 0x80e020ab, Some(0xf57ea7c8), 0x39fc52ce),
    ("BatchPutRevoke", 0xb82567aa, Some(0x94ee5d44), 0x39fc52ce),
    ("UpsertStart", 0xa1335e41, Some(0xe385bd0e), 0xc43927a6),
    ("UpsertEnd", 0x2e20e258, Some(0xd1819222), 0xaf2868cc),
    ("UpsertRevoke", 0x610b042e, Some(0x1b7a228a), 0xaf2868cc),
    ("BatchUpsertStart", 0xd564b423, Some(0x5870c0a4), 0xad006d02),
    ("BatchUpsertEnd", 0xb1bcd72f, Some(0xdce93710), 0x39fc52ce),
    ("BatchUpsertRevoke", 0x9093ae79, Some(0xd6091496), 0x39fc52ce),
    ("Remove", 0xf1b09774, Some(0x18e89fee), 0xaf2868cc),
    ("RemoveByRegex", 0xfccc1fd3, Some(0x18e89fee), 0xb83381fe),
    ("RemoveAll", 0xd978ceb0, Some(0x48a6c274), 0x86666834),
    ("BatchRemove", 0x5902407d, Some(0x197a9ca0), 0x39fc52ce),
    ("BatchQueryIp", 0x7ce454a9, Some(0xa1eea206), 0xf594fb3c),
    ("BatchReplicaClear", 0x137b01fc, Some(0x472b2fa2), 0xe108bdea),
    ("MountLocalDiskSegment", 0x281fc089, Some(0xbfd50c0e), 0xaf2868cc),
    ("UnmountLocalDiskSegment", 0x59fe76e4, Some(0x3c6d83e0), 0xaf2868cc),
    ("OffloadObjectHeartbeat", 0x2a9b08f8, Some(0xbfd50c0e), 0x724674e6),
    ("PollRemoveAll", 0x05b21025, Some(0x3c6d83e0), 0x90e800d2),
    // Not in rpc-spec (newer clients): ids from the name like every other, the types of
    // ExistKey / BatchExistKey.
    ("ProbeKey", PROBE_KEY_ID, Some(0x7cf91ed8), 0x90e800d2),
    ("BatchProbeKey", BATCH_PROBE_KEY_ID, Some(0x00f78d62), 0x2a5f8c5c),
];

#[test]
fn function_ids_and_type_hashes_match_the_spec() {
    assert_eq!(RPCS.len(), SPEC_TABLE.len());
    for (def, (name, id, req, resp)) in RPCS.iter().zip(SPEC_TABLE) {
        assert_eq!(def.name, name);
        assert_eq!(def.id, id, "{name} id");
        assert_eq!(function_id(name), id);
        assert_eq!(def.request_type().map(|t| t.hash()), req, "{name} request hash");
        assert_eq!(def.ret.hash(), resp, "{name} response hash");
        let info = lookup(id).unwrap();
        assert_eq!(info.req_hash, req.unwrap_or(0));
        assert_eq!(info.ret_hash, resp);
    }
    // Ids the client knows but no master registers, and the rest of the 65 names.
    assert_eq!(function_id("CalcCacheStats"), 0x8ecf1981);
    assert_eq!(function_id("ReportSsdCapacity"), 0x7e109a9c);
    assert_eq!(lookup(0x8ecf1981).map(|i| i.def.name), None);
    assert_eq!(method_name(0x8ecf1981), Some("CalcCacheStats"));
    let mut ids: Vec<u32> = CLIENT_METHODS.iter().map(|m| function_id(m)).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 65, "function ids are distinct");
    for def in RPCS {
        assert!(CLIENT_METHODS.contains(&def.name) || NEWER_CLIENT_METHODS.contains(&def.name), "{}", def.name);
    }
    assert_eq!(method_name(PROBE_KEY_ID), Some("ProbeKey"));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

#[test]
fn literals_match_the_spec() {
    let lit = |name: &str, req: bool| {
        let def = RPCS.iter().find(|d| d.name == name).unwrap();
        hex(&if req { def.request_type().unwrap().literal() } else { def.ret.literal() })
    };
    let c = "fd 04 04 04 06 85 04 0b 84 80 0c 80 0c 84 80 0c 0b 06 80 0c 85 84 80 0c ff";
    let d = "fd 04 86 fd fd 04 04 80 0c 80 0c ff ff fd fd 04 04 80 0c 80 0c ff ff fd 80 0c 04 ff \
             fd fd 04 04 89 89 ff 04 80 0c ff fd 80 0c 04 04 04 01 ff ff 01 ff";
    assert_eq!(hex(&UUID.literal()), "fd 04 04 89 89 ff");
    assert_eq!(hex(&REPLICATE_CONFIG.literal()), c);
    assert_eq!(hex(&REPLICA_DESCRIPTOR.literal()), d);
    assert_eq!(lit("ServiceReady", false), "87 80 0c 01");
    assert_eq!(lit("GetStorageConfig", false), "87 fd 80 0c 0b 04 ff 01");
    assert_eq!(lit("Ping", false), "87 fd 03 01 ff 01");
    assert_eq!(lit("FetchTasks", true), "fd fd 04 04 89 89 ff 04 ff");
    assert_eq!(lit("FetchTasks", false), "87 84 fd fd 04 04 89 89 ff 01 80 0c 03 02 ff 01");
    assert_eq!(
        lit("MountSegment", true),
        "fd fd fd 04 04 89 89 ff 80 0c 04 04 80 0c 80 0c 80 0c ff fd 04 04 89 89 ff ff"
    );
    assert_eq!(lit("GracefulUnmountSegment", true), "fd fd 04 04 89 89 ff fd 04 04 89 89 ff 04 ff");
    assert_eq!(lit("PutStart", true), format!("fd fd 04 04 89 89 ff 80 0c 04 {c} 80 0c ff"));
    assert_eq!(lit("PutStart", false), format!("87 84 {d} 01"));
    assert_eq!(lit("GetReplicaList", false), format!("87 fd 84 {d} 04 85 04 ff 01"));
    assert_eq!(lit("PutEnd", true), "fd fd 04 04 89 89 ff fd 80 0c 85 04 ff 01 80 0c ff");
    assert_eq!(lit("BatchUpsertEnd", true), "fd fd 04 04 89 89 ff 84 fd 80 0c 85 04 ff 80 0c ff");
    assert_eq!(lit("RemoveAll", true), "fd 0b 80 0c ff");
    assert_eq!(lit("RemoveAll", false), "03");
    assert_eq!(lit("BatchRemove", false), "84 87 fa 01");
    assert_eq!(lit("BatchQueryIp", false), "87 82 fd 04 04 89 89 ff 84 80 0c 01");
    assert_eq!(lit("OffloadObjectHeartbeat", false), "87 84 fd 80 0c 80 0c 03 ff 01");
    assert_eq!(hex(&ERROR_BODY_255.literal()), "fd 08 80 0c ff");
}

#[test]
fn worked_examples_of_the_spec() {
    let x_str = RPCS.iter().find(|d| d.name == "ServiceReady").unwrap().ret;
    let v = Value::ok(Value::str("2.0.0"));
    let debug = encode(&x_str, &v, Style { type_info: true, len_code: 0 }).unwrap();
    assert_eq!(hex(&debug), "35 cc b3 1c 04 87 80 0c 01 00 01 05 32 2e 30 2e 30");
    let release = encode(&x_str, &v, Style { type_info: false, len_code: 0 }).unwrap();
    assert_eq!(hex(&release), "34 cc b3 1c 01 05 32 2e 30 2e 30");
    let wide = encode(&x_str, &v, Style { type_info: true, len_code: 2 }).unwrap();
    assert_eq!(hex(&wide), "35 cc b3 1c 14 87 80 0c 01 00 01 05 00 00 00 32 2e 30 2e 30");
    // Every style decodes to the same value.
    for buf in [&debug, &release, &wide] {
        assert_eq!(decode(&x_str, buf).unwrap().0, v);
    }
    let wide8 = encode(&x_str, &v, Style { type_info: false, len_code: 3 }).unwrap();
    assert_eq!(hex(&wide8), "35 cc b3 1c 18 01 05 00 00 00 00 00 00 00 32 2e 30 2e 30");
    assert_eq!(decode(&x_str, &wide8).unwrap().0, v);
    // RemoveAll: a plain long.
    let n = encode(&Ty::I64, &Value::Int(1), Style { type_info: true, len_code: 0 }).unwrap();
    assert_eq!(hex(&n), "35 68 66 86 04 03 00 01 00 00 00 00 00 00 00");
    // expected<void> failure; the unknown-function error body.
    let x_void = Ty::Expected(&Ty::Void, &ERROR_CODE);
    let e = encode(&x_void, &Value::err(-706), Style { type_info: false, len_code: 0 }).unwrap();
    assert_eq!(hex(&e[4..]), "00 3e fd ff ff");
    let body = error_body(MSG_NOT_REGISTERED);
    assert_eq!(hex(&body[..9]), "77 fa cf 9d 04 80 0c 00 1f");
    assert_eq!(&body[9..], MSG_NOT_REGISTERED.as_bytes());
    // A 300-byte string widens every length of the buffer.
    let t = Ty::Struct(&[Ty::Str, Ty::Str]);
    let v = Value::Struct(vec![Value::Str(vec![b'L'; 300]), Value::str("default")]);
    assert_eq!(t.len_code_for(&v).unwrap(), 1);
    let b = encode(&t, &v, Style { type_info: false, len_code: 0 }).unwrap();
    assert_eq!(hex(&b[4..7]), "08 2c 01");
    assert_eq!(hex(&b[7 + 300..]), "07 00 64 65 66 61 75 6c 74");
    let v4 = Value::Struct(vec![Value::Str(vec![0; 70_000]), Value::str("")]);
    assert_eq!(t.len_code_for(&v4).unwrap(), 2);
    assert_eq!(decode(&t, &encode(&t, &v4, Style { type_info: true, len_code: 0 }).unwrap()).unwrap().0, v4);
}

#[test]
fn malformed_buffers_are_rejected() {
    let ping = UUID;
    let v = Value::Struct(vec![Value::UInt(1), Value::UInt(2)]);
    let good = encode(&ping, &v, Style { type_info: true, len_code: 0 }).unwrap();
    // Wrong type (an ExistKey body sent as Ping).
    let exist = Ty::Struct(&[Ty::Str, Ty::Str]);
    let other =
        encode(&exist, &Value::Struct(vec![Value::str("k"), Value::str("d")]), Style { type_info: true, len_code: 0 })
            .unwrap();
    assert!(matches!(decode(&ping, &other), Err(DecodeError::BadHash { .. })));
    // Right hash, altered literal.
    let mut bad = good.clone();
    bad[6] ^= 1;
    assert_eq!(decode(&ping, &bad), Err(DecodeError::BadLiteral));
    // Truncated and empty.
    assert_eq!(decode(&ping, &good[..good.len() - 1]), Err(DecodeError::Truncated));
    assert_eq!(decode(&ping, &[]), Err(DecodeError::Truncated));
    // Trailing bytes are ignored.
    let mut longer = good.clone();
    longer.extend_from_slice(&[9, 9]);
    let (got, info) = decode(&ping, &longer).unwrap();
    assert_eq!((got, info.consumed), (v, good.len()));
    // Container lengths beyond the buffer, bad flags, bad variant index.
    let strs = Ty::Vec(&Ty::Str);
    let mut huge = encode(&strs, &Value::List(vec![]), Style { type_info: false, len_code: 3 }).unwrap();
    huge[5..13].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(decode(&strs, &huge), Err(DecodeError::BadLength(u64::MAX)));
    let b = Ty::Bool;
    let mut two = encode(&b, &Value::Bool(true), Style { type_info: false, len_code: 0 }).unwrap();
    two[4] = 2;
    assert_eq!(decode(&b, &two), Err(DecodeError::BadFlag(2)));
    let d = REPLICA_DESCRIPTOR;
    let desc = Value::Struct(vec![
        Value::UInt(1),
        Value::Variant(2, Box::new(Value::Struct(vec![Value::str("/f"), Value::UInt(3)]))),
        Value::Int(3),
    ]);
    let mut enc = encode(&d, &desc, Style { type_info: false, len_code: 0 }).unwrap();
    assert_eq!(decode(&d, &enc).unwrap().0, desc);
    enc[12] = 5;
    assert_eq!(decode(&d, &enc), Err(DecodeError::BadVariant(5)));
    // A meta byte with compatible-size bits.
    let mut meta = good.clone();
    meta[4] |= 1;
    assert_eq!(decode(&ping, &meta), Err(DecodeError::BadMeta(0x05)));
    // Encoding a value of the wrong shape is refused.
    assert_eq!(encode(&ping, &Value::Bool(true), Style { type_info: false, len_code: 0 }), Err(Mismatch));
}
