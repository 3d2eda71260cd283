use super::*;
use proptest::prelude::*;

/// te-handshake-frames.txt conn 1: the type-1 reply of an upstream TCP target.
const UPSTREAM_TARGET: &str = r#"{"buffers":[{"addr":140524574998528,"length":268435456,"name":"127.0.0.1:8598"}],"name":"127.0.0.1:8598","protocol":"tcp","rdma_server_name":"","tcp_data_host":"127.0.0.1","tcp_data_port":8594,"tcp_proto_version":2,"timestamp":"2026-11-27 03:01:52.297568"}"#;
/// te-handshake-frames.txt conn 5: the descriptor an upstream initiator sends with type 1.
const UPSTREAM_INITIATOR: &str = r#"{"buffers":[{"addr":140670583566352,"length":4194304,"name":"127.0.0.1:8592"}],"name":"127.0.0.1:8592","protocol":"tcp","rdma_server_name":"","tcp_data_host":"127.0.0.1","tcp_data_port":8596,"tcp_proto_version":2,"timestamp":"2026-11-27 03:01:53.794888"}"#;
/// data-plane.md §2.3: a descriptor as published to the metadata server.
const PUBLISHED: &str = r#"{"buffers":[{"addr":140663400169472,"length":1073741824,"name":"127.0.0.1:8591"}],"name":"127.0.0.1:8591","protocol":"tcp","rdma_server_name":"","tcp_data_host":"127.0.0.1","tcp_data_port":8599,"tcp_proto_version":2,"timestamp":"2026-11-27 03:00:16.837042"}"#;
/// te-handshake-frames.txt conn 4: the type-0 reply of a TCP-only engine.
const EMPTY_HANDSHAKE: &str =
    r#"{"local_gid":"","local_lid":0,"local_nic_path":"","payload":"","peer_nic_path":"","qp_num":[],"reply_msg":""}"#;

#[test]
fn upstream_descriptors_round_trip_byte_for_byte() {
    for json in [UPSTREAM_TARGET, UPSTREAM_INITIATOR, PUBLISHED] {
        let desc = SegmentDesc::from_json(json.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(desc.to_json()).unwrap(), json);
    }
}

#[test]
fn upstream_descriptor_fields() {
    let desc = SegmentDesc::from_json(UPSTREAM_TARGET.as_bytes()).unwrap();
    assert_eq!(desc.name, "127.0.0.1:8598");
    assert_eq!(desc.protocol, "tcp");
    assert_eq!(desc.tcp_data_host.as_deref(), Some("127.0.0.1"));
    assert_eq!(desc.tcp_data_port, 8594);
    assert_eq!(desc.framing(), Framing::V2);
    assert_eq!(
        desc.buffers,
        vec![BufferDesc {
            addr: 140_524_574_998_528,
            length: 268_435_456,
            name: "127.0.0.1:8598".into(),
            ..Default::default()
        }]
    );
    assert!(desc.devices.is_empty() && desc.priority_matrix.is_empty());
}

#[test]
fn tcp_constructor_matches_upstream_bytes() {
    let desc = SegmentDesc::tcp(
        "127.0.0.1:8598",
        "127.0.0.1",
        8594,
        "2026-11-27 03:01:52.297568".into(),
        &[(140_524_574_998_528, 268_435_456)],
    );
    assert_eq!(String::from_utf8(desc.to_json()).unwrap(), UPSTREAM_TARGET);
}

#[test]
fn missing_optional_fields_take_upstream_defaults() {
    // An older (HEAD) descriptor: no tcp_data_host, no tcp_proto_version.
    let json = r#"{"buffers":[{"addr":4096,"length":4096,"name":"n"}],"name":"n","protocol":"tcp","tcp_data_port":1}"#;
    let desc = SegmentDesc::from_json(json.as_bytes()).unwrap();
    assert_eq!(desc.tcp_data_host, None);
    assert_eq!(desc.tcp_proto_version, 1);
    assert_eq!(desc.framing(), Framing::V1);
    assert_eq!(desc.rdma_server_name, "");
    assert_eq!(desc.timestamp, "");
    // Re-encoding leaves tcp_data_host out (it was not known) and writes the version.
    let out = String::from_utf8(desc.to_json()).unwrap();
    assert!(!out.contains("tcp_data_host"));
    assert!(out.contains(r#""tcp_proto_version":1"#));
    // An empty object decodes too (and is valid: no buffers).
    assert_eq!(SegmentDesc::from_json(b"{}").unwrap(), SegmentDesc::default());
}

#[test]
fn unknown_fields_are_ignored() {
    let json = r#"{"name":"n","protocol":"tcp","future":{"x":[1,2]},"buffers":[{"addr":1,"length":2,"name":"n","location":"cpu:0"}],"tcp_data_port":5}"#;
    let desc = SegmentDesc::from_json(json.as_bytes()).unwrap();
    assert_eq!(desc.buffers[0].addr, 1);
    assert_eq!(desc.tcp_data_port, 5);
}

/// Newer owners (upstream PR #3554) add `tcp_instance_id`: accepted, kept, written back in
/// its sorted place; descriptors without it are written without it.
#[test]
fn tcp_instance_id_is_accepted_and_kept() {
    let json = r#"{"buffers":[{"addr":4096,"length":8192,"name":"h:1"}],"name":"h:1","protocol":"tcp","rdma_server_name":"","tcp_data_host":"127.0.0.1","tcp_data_port":15001,"tcp_instance_id":"7f3a-2","tcp_proto_version":2,"timestamp":"t"}"#;
    let desc = SegmentDesc::from_json(json.as_bytes()).unwrap();
    assert_eq!(desc.tcp_instance_id.as_deref(), Some("7f3a-2"));
    assert_eq!(desc.tcp_data_port, 15001);
    assert_eq!(String::from_utf8(desc.to_json()).unwrap(), json);
    let without = SegmentDesc { tcp_instance_id: None, ..desc };
    assert!(!String::from_utf8(without.to_json()).unwrap().contains("tcp_instance_id"));
}

#[test]
fn corrupted_descriptors_are_rejected() {
    let cases = [
        (r#"{"buffers":[{"addr":1,"length":2,"name":""}]}"#, "empty name"),
        (r#"{"buffers":[{"addr":1,"length":2}]}"#, "empty name"),
        (r#"{"buffers":[{"addr":0,"length":2,"name":"n"}]}"#, "zero address"),
        (r#"{"buffers":[{"addr":1,"length":0,"name":"n"}]}"#, "zero length"),
        (r#"{"buffers":[{"addr":1,"length":2,"name":"n"},{"addr":1,"name":"n"}]}"#, "zero length"),
    ];
    for (json, want) in cases {
        match SegmentDesc::from_json(json.as_bytes()) {
            Err(DescError::Corrupted { reason, .. }) => assert_eq!(reason, want, "{json}"),
            other => panic!("{json}: {other:?}"),
        }
    }
    let err = SegmentDesc::from_json(br#"{"buffers":[{"addr":0,"length":2,"name":"n"}]}"#).unwrap_err();
    assert!(err.to_string().starts_with("Corrupted segment descriptor"));
}

#[test]
fn malformed_json_is_an_error() {
    for json in [&b"not json"[..], b"3", br#"{"tcp_data_port":"x"}"#, br#"{"tcp_data_port":70000}"#, b"{\"name\":"] {
        assert!(matches!(SegmentDesc::from_json(json), Err(DescError::Json(_))), "{:?}", String::from_utf8_lossy(json));
    }
}

fn rdma_desc() -> SegmentDesc {
    let mut matrix = BTreeMap::new();
    matrix
        .insert("cpu:0".to_owned(), PriorityRow { preferred: vec!["mlx5_0".into()], available: vec!["mlx5_1".into()] });
    SegmentDesc {
        buffers: vec![BufferDesc {
            addr: 0x1000,
            length: 0x2000,
            lkey: vec![3, 4],
            name: "cpu:0".into(),
            rkey: vec![5, 6],
        }],
        devices: vec![
            DeviceDesc { gid: "fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:01".into(), lid: 1, name: "mlx5_0".into() },
            DeviceDesc { gid: "fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:02".into(), lid: 2, name: "mlx5_1".into() },
        ],
        name: "10.0.0.1:1234".into(),
        priority_matrix: matrix,
        protocol: "rdma".into(),
        rdma_server_name: "10.0.0.1:1234".into(),
        tcp_data_host: Some("10.0.0.1".into()),
        tcp_data_port: 7,
        tcp_instance_id: None,
        tcp_proto_version: 2,
        timestamp: "t".into(),
    }
}

#[test]
fn rdma_descriptor_emits_its_fields_in_sorted_order() {
    let desc = rdma_desc();
    let json = String::from_utf8(desc.to_json()).unwrap();
    assert_eq!(
        json,
        concat!(
            r#"{"buffers":[{"addr":4096,"length":8192,"lkey":[3,4],"name":"cpu:0","rkey":[5,6]}],"#,
            r#""devices":[{"gid":"fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:01","lid":1,"name":"mlx5_0"},"#,
            r#"{"gid":"fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:02","lid":2,"name":"mlx5_1"}],"#,
            r#""name":"10.0.0.1:1234","priority_matrix":{"cpu:0":[["mlx5_0"],["mlx5_1"]]},"protocol":"rdma","#,
            r#""rdma_server_name":"10.0.0.1:1234","tcp_data_host":"10.0.0.1","tcp_data_port":7,"tcp_proto_version":2,"timestamp":"t"}"#
        )
    );
    assert_eq!(SegmentDesc::from_json(json.as_bytes()).unwrap(), desc);
}

#[test]
fn rdma_keys_must_match_devices() {
    let mut desc = rdma_desc();
    desc.buffers[0].rkey.pop();
    assert!(matches!(desc.validate(), Err(DescError::Corrupted { buffer: 0, .. })));
    // TCP descriptors do not look at keys.
    desc.protocol = "tcp".into();
    assert_eq!(desc.validate(), Ok(()));
}

#[test]
fn priority_rows_tolerate_short_and_long_arrays() {
    let desc: SegmentDesc =
        serde_json::from_str(r#"{"priority_matrix":{"*":[["a"]],"cpu:1":[["b"],["c"],["d"]],"x":[]}}"#).unwrap();
    assert_eq!(desc.priority_matrix["*"], PriorityRow { preferred: vec!["a".into()], available: vec![] });
    assert_eq!(desc.priority_matrix["cpu:1"], PriorityRow { preferred: vec!["b".into()], available: vec!["c".into()] });
    assert_eq!(desc.priority_matrix["x"], PriorityRow::default());
}

#[test]
fn buffer_lookup_is_within_one_buffer() {
    let desc = SegmentDesc::tcp("n", "h", 1, String::new(), &[(0x1000, 0x1000), (0x2000, 0x1000)]);
    assert_eq!(desc.buffer_containing(0x1000, 0x1000).map(|b| b.addr), Some(0x1000));
    assert_eq!(desc.buffer_containing(0x2800, 0x800).map(|b| b.addr), Some(0x2000));
    assert!(desc.buffer_containing(0x1800, 0x1000).is_none(), "spans two buffers");
    assert!(desc.buffer_containing(0x2800, 0x801).is_none());
    assert!(desc.buffer_containing(u64::MAX, 2).is_none());
}

#[test]
fn empty_handshake_desc_matches_upstream_bytes() {
    assert_eq!(String::from_utf8(to_json(&HandShakeDesc::default())).unwrap(), EMPTY_HANDSHAKE);
    let parsed: HandShakeDesc = serde_json::from_str(EMPTY_HANDSHAKE).unwrap();
    assert_eq!(parsed, HandShakeDesc::default());
    assert_eq!(parsed.ready_ack, None);
}

#[test]
fn handshake_desc_keeps_ready_ack_presence() {
    // te-handshake-frames.txt conn 4 request: a partial document.
    let req: HandShakeDesc =
        serde_json::from_str(r#"{"local_nic_path": "x@y", "peer_nic_path": "127.0.0.1:8598@z", "qp_num": [1, 2]}"#)
            .unwrap();
    assert_eq!(req.local_nic_path, "x@y");
    assert_eq!(req.qp_num, vec![1, 2]);
    assert_eq!(req.ready_ack, None);
    // §3.3: the active side's first frame carries ready_ack:false; presence survives.
    let json = r#"{"local_gid":"00:01","local_lid":0,"local_nic_path":"A:1@mlx5_0","payload":"","peer_nic_path":"B:2@mlx5_1","qp_num":[1234,1235],"ready_ack":false,"reply_msg":""}"#;
    let desc: HandShakeDesc = serde_json::from_str(json).unwrap();
    assert_eq!(desc.ready_ack, Some(false));
    assert_eq!(String::from_utf8(to_json(&desc)).unwrap(), json);
}

#[test]
fn notify_and_rpc_meta_bytes() {
    let reply = NotifyDesc { name: String::new(), notify_msg: "success".into() };
    assert_eq!(to_json(&reply), br#"{"name":"","notify_msg":"success"}"#);
    let req: NotifyDesc = serde_json::from_str(r#"{"name": "raw", "notify_msg": "hello"}"#).unwrap();
    assert_eq!(req, NotifyDesc { name: "raw".into(), notify_msg: "hello".into() });
    let meta = RpcMeta { ip_or_host_name: "127.0.0.1".into(), rpc_port: 8593 };
    assert_eq!(to_json(&meta), br#"{"ip_or_host_name":"127.0.0.1","rpc_port":8593}"#);
    assert_eq!(serde_json::from_slice::<RpcMeta>(&to_json(&meta)).unwrap(), meta);
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9:.\"\\\\ é]{0,12}"
}

fn buffer() -> impl Strategy<Value = BufferDesc> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u32>(), 0..3),
        name(),
        proptest::collection::vec(any::<u32>(), 0..3),
    )
        .prop_map(|(addr, length, lkey, name, rkey)| BufferDesc { addr, length, lkey, name, rkey })
}

fn segment() -> impl Strategy<Value = SegmentDesc> {
    (
        proptest::collection::vec(buffer(), 0..4),
        proptest::collection::vec(
            (name(), any::<u16>(), name()).prop_map(|(gid, lid, name)| DeviceDesc { gid, lid, name }),
            0..3,
        ),
        name(),
        proptest::collection::btree_map(
            name(),
            (proptest::collection::vec(name(), 0..2), proptest::collection::vec(name(), 0..2)),
            0..3,
        ),
        (name(), name(), proptest::option::of(name()), any::<u16>(), any::<u32>(), name()),
        proptest::option::of(name()),
    )
        .prop_map(
            |(
                buffers,
                devices,
                name,
                matrix,
                (protocol, rdma_server_name, tcp_data_host, port, version, timestamp),
                tcp_instance_id,
            )| {
                SegmentDesc {
                    buffers,
                    devices,
                    name,
                    priority_matrix: matrix
                        .into_iter()
                        .map(|(k, (p, a))| (k, PriorityRow { preferred: p, available: a }))
                        .collect(),
                    protocol,
                    rdma_server_name,
                    tcp_data_host,
                    tcp_data_port: port,
                    tcp_instance_id,
                    tcp_proto_version: version,
                    timestamp,
                }
            },
        )
}

proptest! {
    #[test]
    fn segment_desc_round_trip(desc in segment()) {
        let json = desc.to_json();
        let back: SegmentDesc = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(&back, &desc);
        prop_assert_eq!(back.to_json(), json);
    }

    #[test]
    fn handshake_desc_round_trip(
        gid in name(), lid: u16, local in name(), payload in name(), peer in name(),
        qp_num in proptest::collection::vec(any::<u32>(), 0..4), ready_ack: Option<bool>, reply in name(),
    ) {
        let desc = HandShakeDesc {
            local_gid: gid, local_lid: lid, local_nic_path: local, payload, peer_nic_path: peer, qp_num, ready_ack, reply_msg: reply,
        };
        prop_assert_eq!(serde_json::from_slice::<HandShakeDesc>(&to_json(&desc)).unwrap(), desc);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes: Vec<u8>) {
        let _ = SegmentDesc::from_json(&bytes);
        let _ = serde_json::from_slice::<HandShakeDesc>(&bytes);
    }
}
