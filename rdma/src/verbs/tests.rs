//! Device-free tests of the verbs transport: everything runs against [`MockVerbs`] and
//! recorded peer frames (fixtures/*.json, in the shape of data-plane.md §3.3).

use super::api::*;
use super::context::{RdmaContext, Registry};
use super::desc::{priority_matrix, rdma_descriptor, select_device, split_for_mr};
use super::endpoint::*;
use super::gid::Gid;
use super::mock::{Call, MockDevice, MockVerbs};
use super::qp::*;
use super::slice::{slice_request, SliceConfig};
use super::transfer::{Route, StaticRouter, Transfer, TransferError, TransferLimits};
use super::*;
use crate::te::desc::{DeviceDesc, HandShakeDesc, SegmentDesc};
use crate::te::handshake::{FrameType, HandshakeDecoder};

const PEER_REQUEST: &str = include_str!("fixtures/peer_request.json");
const PEER_READY_ACK: &str = include_str!("fixtures/peer_ready_ack.json");
const PEER_REPLY: &str = include_str!("fixtures/peer_reply.json");

fn hs(json: &str) -> HandShakeDesc {
    serde_json::from_str(json).unwrap()
}

fn two_devices() -> MockVerbs {
    MockVerbs::new(vec![MockDevice::roce("mlx5_0", 1), MockDevice::roce("mlx5_1", 1)])
}

fn peer_gid() -> Gid {
    Gid::parse("00:00:00:00:00:00:00:00:00:00:ff:ff:0a:00:00:02").unwrap()
}

#[test]
fn open_context_picks_the_ipv4_mapped_gid_and_makes_pd_and_cq() {
    let mut v = two_devices();
    let cfg = VerbsConfig::default();
    let ctxs = RdmaContext::open_all(&mut v, &cfg).unwrap();
    assert_eq!(ctxs.len(), 2);
    let c = &ctxs[1];
    assert_eq!(c.name, "mlx5_1");
    assert_eq!(c.port.gid_index, 1);
    assert_eq!(c.port.gid.to_string(), "00:00:00:00:00:00:00:00:00:00:ff:ff:0a:00:00:01");
    assert_eq!(c.port.port_num, 1);
    assert_eq!(c.device_desc(), DeviceDesc { gid: c.port.gid.to_string(), lid: 0, name: "mlx5_1".into() });
    assert!(v.calls.contains(&Call::CreateCq(c.ctx, 4096)));
    assert!(v.calls.contains(&Call::AllocPd(c.ctx)));
    // A configured index is used as is.
    let mut v = two_devices();
    let cfg = VerbsConfig { gid_index: Some(0), devices: vec!["mlx5_0".into()], ..VerbsConfig::default() };
    let ctxs = RdmaContext::open_all(&mut v, &cfg).unwrap();
    assert_eq!(ctxs.len(), 1);
    assert_eq!(ctxs[0].port.gid_index, 0);
    assert_eq!(ctxs[0].port.gid.0[0], 0xfe);
}

#[test]
fn probe_without_a_device_names_the_cause() {
    let mut v = MockVerbs::new(vec![]);
    let e = probe_with(&mut v, &VerbsConfig::default()).unwrap_err();
    assert_eq!(e, "no RDMA device found (ibv_get_device_list returned 0 devices)");
    let mut v = two_devices();
    v.fail_call("ibv_get_device_list", 0);
    let e = probe_with(&mut v, &VerbsConfig::default()).unwrap_err();
    assert!(e.starts_with("no RDMA device found (ibv_get_device_list failed"), "{e}");
    let mut v = two_devices();
    v.devices[0].active = false;
    let e = probe_with(&mut v, &VerbsConfig::default()).unwrap_err();
    assert_eq!(e, "RDMA device mlx5_0: port 1 is not active");
    let mut v = two_devices();
    let cfg = VerbsConfig { devices: vec!["mlx5_9".into()], ..VerbsConfig::default() };
    assert_eq!(probe_with(&mut v, &cfg).unwrap_err(), "RDMA device \"mlx5_9\" not found");
    let mut v = two_devices();
    v.fail_call("ibv_alloc_pd", 0);
    let e = probe_with(&mut v, &VerbsConfig::default()).unwrap_err();
    assert!(e.starts_with("ibv_alloc_pd failed"), "{e}");
    // With devices: listed, then released.
    let mut v = two_devices();
    let devs = probe_with(&mut v, &VerbsConfig::default()).unwrap();
    assert_eq!(devs.len(), 2);
    assert_eq!(devs[0].device.name, "mlx5_0");
    assert_eq!(v.calls.iter().filter(|c| matches!(c, Call::CloseDevice(_))).count(), 2);
    assert_eq!(v.calls.iter().filter(|c| matches!(c, Call::DestroyCq(_))).count(), 2);
}

#[cfg(not(feature = "verbs"))]
#[test]
fn probe_without_the_feature_says_so() {
    let e = probe(&VerbsConfig::default()).unwrap_err();
    assert!(e.contains("without the `verbs` cargo feature"), "{e}");
}

fn local_port() -> LocalPort {
    LocalPort {
        port_num: 1,
        gid_index: 3,
        gid: Gid([1; 16]),
        lid: 7,
        active_mtu: Mtu::M4096,
        mtu_limit: Mtu::M4096,
        sl: 0,
        traffic_class: 0,
    }
}

/// The transitions of data-plane.md §3.3, written out field by field.
fn spec_transitions(peer: &PeerQp, path_mtu: Mtu) -> Vec<QpTransition> {
    vec![
        QpTransition::Init(InitAttr { port_num: 1, pkey_index: 0, access: 0b1111 }),
        QpTransition::Rtr(RtrAttr {
            path_mtu,
            is_global: 1,
            dgid: peer.gid,
            sgid_index: 3,
            hop_limit: 16,
            traffic_class: 0,
            dlid: peer.lid,
            sl: 0,
            src_path_bits: 0,
            static_rate: 0,
            port_num: 1,
            dest_qp_num: peer.qp_num,
            rq_psn: 0,
            max_dest_rd_atomic: 16,
            min_rnr_timer: 12,
        }),
        QpTransition::Rts(RtsAttr { timeout: 14, retry_cnt: 7, rnr_retry: 7, sq_psn: 0, max_rd_atomic: 16 }),
    ]
}

#[test]
fn qp_transitions_recorded_by_the_mock_are_the_spec() {
    let mut v = two_devices();
    let ctx = RdmaContext::open(&mut v, "mlx5_0", &VerbsConfig::default()).unwrap();
    let (qp, _) = v.create_qp(ctx.pd, ctx.cq, QpCaps::default()).unwrap();
    let peer = PeerQp { gid: peer_gid(), lid: 9, qp_num: 1234 };
    connect_qp(&mut v, qp, &local_port(), &peer).unwrap();
    // A fresh QP is in RESET: no RESET transition (upstream queries first).
    assert_eq!(v.transitions(qp), spec_transitions(&peer, Mtu::M4096));
    assert_eq!(v.qp_state(qp), Some(QpState::Rts));
    // Connected again: RESET first, then the same three.
    connect_qp(&mut v, qp, &local_port(), &peer).unwrap();
    let mut again = vec![QpTransition::Reset];
    again.extend(spec_transitions(&peer, Mtu::M4096));
    assert_eq!(v.transitions(qp)[3..], again[..]);
    // Masks as upstream's doSetupConnection.
    let masks: Vec<u32> = again.iter().map(QpTransition::mask).collect();
    assert_eq!(masks, vec![0x1, 0x39, 0x0012_9181, 0x0001_2E01]);
}

#[test]
fn path_mtu_is_min_of_active_and_limit() {
    let peer = PeerQp { gid: peer_gid(), lid: 0, qp_num: 1 };
    let mut port = local_port();
    port.active_mtu = Mtu::M1024;
    let plan = connect_plan(QpState::Reset, &port, &peer);
    assert!(matches!(plan[1], QpTransition::Rtr(RtrAttr { path_mtu: Mtu::M1024, .. })));
    port.active_mtu = Mtu::M4096;
    port.mtu_limit = Mtu::M2048;
    let plan = connect_plan(QpState::Error, &port, &peer);
    assert_eq!(plan[0], QpTransition::Reset);
    assert!(matches!(plan[2], QpTransition::Rtr(RtrAttr { path_mtu: Mtu::M2048, .. })));
}

#[test]
fn a_failed_transition_gives_upstreams_message_and_the_mock_rejects_bad_orders() {
    let mut v = two_devices();
    let ctx = RdmaContext::open(&mut v, "mlx5_0", &VerbsConfig::default()).unwrap();
    let (qp, _) = v.create_qp(ctx.pd, ctx.cq, QpCaps::default()).unwrap();
    v.fail_call("ibv_modify_qp(RTR)", 0);
    let e = connect_qp(&mut v, qp, &local_port(), &PeerQp { gid: peer_gid(), lid: 0, qp_num: 1 }).unwrap_err();
    assert!(
        e.message.starts_with("Failed to modify QP to RTR, check mtu, gid, peer lid, peer qp num: "),
        "{}",
        e.message
    );
    assert_eq!(v.qp_state(qp), Some(QpState::Init));
    // The mock enforces the state machine: RTS straight from INIT is EINVAL.
    let rts = connect_plan(QpState::Reset, &local_port(), &PeerQp { gid: peer_gid(), lid: 0, qp_num: 1 })[2];
    assert_eq!(v.modify_qp(qp, &rts).unwrap_err().errno, 22);
}

/// The passive node "10.0.0.1:15000" with mlx5_0 and mlx5_1.
fn passive() -> (MockVerbs, Vec<RdmaContext>) {
    let mut v = two_devices();
    let ctxs = RdmaContext::open_all(&mut v, &VerbsConfig::default()).unwrap();
    (v, ctxs)
}

fn no_lookup(_: &str, _: &str) -> Option<DeviceDesc> {
    None
}

#[test]
fn passive_exchange_against_a_recorded_peer() {
    let (mut v, ctxs) = passive();
    let mut table = EndpointTable::new(2, false, QpCaps::default());
    // The request arrives as a type-0 frame.
    let mut bytes = Vec::new();
    let body_len = 1 + PEER_REQUEST.len() as u64;
    bytes.extend_from_slice(&body_len.to_le_bytes());
    bytes.push(0);
    bytes.extend_from_slice(PEER_REQUEST.as_bytes());
    let mut d = HandshakeDecoder::new();
    d.push(&bytes);
    let frame = d.next_frame().unwrap().unwrap();
    assert_eq!(frame.kind, FrameType::Connection);
    let req: HandShakeDesc = serde_json::from_slice(&frame.json).unwrap();

    let reply = table.handle(&mut v, &ctxs, "10.0.0.1:15000", &req, &no_lookup);
    assert_eq!(reply.reply_msg, "");
    assert_eq!(reply.local_nic_path, "10.0.0.1:15000@mlx5_1");
    assert_eq!(reply.peer_nic_path, "10.0.0.2:15001@mlx5_0");
    assert_eq!(reply.ready_ack, Some(false));
    assert_eq!(reply.qp_num.len(), 2);
    assert_eq!(reply.local_gid, "00:00:00:00:00:00:00:00:00:00:ff:ff:0a:00:00:01");
    // The reply's JSON: upstream's sorted keys, ready_ack present and false.
    let json = String::from_utf8(connection_frame(&reply).json).unwrap();
    assert!(json.contains(r#""qp_num":[256,257],"ready_ack":false,"reply_msg":"""#), "{json}");
    assert!(json.ends_with("}\n"));

    let key = ("mlx5_1".to_owned(), "10.0.0.2:15001@mlx5_0".to_owned());
    let ep = &table.endpoints[&key];
    assert_eq!(ep.state, EpState::WaitReadyAck);
    assert_eq!(ep.peer_qp_nums, vec![1234, 1235]);
    // QP i is connected to the peer's QP i, with the peer's GID from its frame.
    for (i, &qp) in ep.qps.iter().enumerate() {
        let t = v.transitions(qp);
        assert_eq!(t.len(), 3);
        let QpTransition::Rtr(rtr) = t[1] else { panic!("{t:?}") };
        assert_eq!(rtr.dest_qp_num, [1234, 1235][i]);
        assert_eq!(rtr.dgid, peer_gid());
        assert_eq!(rtr.sgid_index, 1);
        assert_eq!(rtr.path_mtu, Mtu::M1024);
        assert_eq!(v.qp_state(qp), Some(QpState::Rts));
    }
    // The second frame completes it, answered by the empty descriptor.
    let ack = table.handle(&mut v, &ctxs, "10.0.0.1:15000", &hs(PEER_READY_ACK), &no_lookup);
    assert_eq!(ack, HandShakeDesc::default());
    assert_eq!(table.endpoints[&key].state, EpState::Connected);
}

#[test]
fn passive_rejections() {
    let (mut v, ctxs) = passive();
    let server = "10.0.0.1:15000";
    let mut table = EndpointTable::new(2, false, QpCaps::default());
    // QP count mismatch (upstream's fixed count).
    let mut req = hs(PEER_REQUEST);
    req.qp_num = vec![1, 2, 3];
    let r = table.handle(&mut v, &ctxs, server, &req, &no_lookup);
    assert_eq!(r.reply_msg, QP_COUNT_MISMATCH);
    // Another server's NIC path.
    let mut req = hs(PEER_REQUEST);
    req.peer_nic_path = "10.0.0.9:15000@mlx5_1".into();
    let r = table.handle(&mut v, &ctxs, server, &req, &no_lookup);
    assert!(r.reply_msg.contains("peer nic path inconsistency"), "{}", r.reply_msg);
    // An unknown local device.
    let mut req = hs(PEER_REQUEST);
    req.peer_nic_path = format!("{server}@mlx5_7");
    assert!(table.handle(&mut v, &ctxs, server, &req, &no_lookup).reply_msg.starts_with("Local nic not found"));
    // A malformed path.
    let mut req = hs(PEER_REQUEST);
    req.local_nic_path = "nodevice".into();
    assert!(table.handle(&mut v, &ctxs, server, &req, &no_lookup).reply_msg.starts_with("Parse peer nic path failed"));
    // No GID in the frame and none in the peer's descriptor.
    let mut req = hs(PEER_REQUEST);
    req.local_gid.clear();
    let r = table.handle(&mut v, &ctxs, server, &req, &no_lookup);
    assert_eq!(r.reply_msg, "Peer nic not found in that server: 10.0.0.2:15001@mlx5_0");
    // ... but the descriptor's device will do (upstream's source of the peer GID).
    let lookup = |s: &str, d: &str| {
        (s == "10.0.0.2:15001" && d == "mlx5_0").then(|| DeviceDesc {
            gid: peer_gid().to_string(),
            lid: 5,
            name: d.into(),
        })
    };
    let r = table.handle(&mut v, &ctxs, server, &req, &lookup);
    assert_eq!(r.reply_msg, "");
    // A QP transition failing is reported in reply_msg.
    v.fail_call("ibv_modify_qp(INIT)", 0);
    let r = table.handle(&mut v, &ctxs, server, &hs(PEER_REQUEST), &no_lookup);
    assert!(r.reply_msg.starts_with("Failed to modify QP to INIT"), "{}", r.reply_msg);
    // A ready ACK naming other QPs, or for no endpoint.
    let r = table.handle(&mut v, &ctxs, server, &hs(PEER_REQUEST), &no_lookup);
    assert_eq!(r.reply_msg, "");
    let mut ack = hs(PEER_READY_ACK);
    ack.qp_num = vec![9, 9];
    assert!(!table.handle(&mut v, &ctxs, server, &ack, &no_lookup).reply_msg.is_empty());
    let mut ack = hs(PEER_READY_ACK);
    ack.local_nic_path = "10.0.0.3:1@mlx5_0".into();
    assert!(table.handle(&mut v, &ctxs, server, &ack, &no_lookup).reply_msg.starts_with("ready ACK for unknown"));
}

#[test]
fn passive_matches_the_peer_count_and_accepts_peers_without_ready_ack() {
    let (mut v, ctxs) = passive();
    let mut table = EndpointTable::new(2, true, QpCaps::default());
    let mut req = hs(PEER_REQUEST);
    req.qp_num = vec![7, 8, 9, 10];
    req.ready_ack = None;
    let r = table.handle(&mut v, &ctxs, "10.0.0.1:15000", &req, &no_lookup);
    assert_eq!(r.reply_msg, "");
    assert_eq!(r.qp_num.len(), 4);
    let ep = table.endpoints.values().next().unwrap();
    assert_eq!(ep.state, EpState::Connected);
    // The peer restarts with 2 QPs: the endpoint is rebuilt.
    let r = table.handle(&mut v, &ctxs, "10.0.0.1:15000", &hs(PEER_REQUEST), &no_lookup);
    assert_eq!(r.qp_num.len(), 2);
    assert_eq!(v.calls.iter().filter(|c| matches!(c, Call::DestroyQp(_))).count(), 4);
}

#[test]
fn active_exchange_against_a_recorded_peer() {
    // We are 10.0.0.1:15000@mlx5_1 dialling 10.0.0.2:15001@mlx5_0.
    let mut v = two_devices();
    let ctx = RdmaContext::open(&mut v, "mlx5_1", &VerbsConfig::default()).unwrap();
    let reply = hs(PEER_REPLY);
    let mut ep = Endpoint::create(
        &mut v,
        &ctx,
        "10.0.0.1:15000@mlx5_1".into(),
        "10.0.0.2:15001@mlx5_1".into(),
        2,
        QpCaps::default(),
    )
    .unwrap();
    // Paths not mirrored (we dialled mlx5_1, mlx5_0 answered): refused before any transition.
    assert!(matches!(ep.on_reply(&mut v, &reply, None), Err(EndpointError::PathMismatch { .. })));
    assert!(v.transitions(ep.qps[0]).is_empty());

    let mut ep = Endpoint::create(
        &mut v,
        &ctx,
        "10.0.0.1:15000@mlx5_1".into(),
        "10.0.0.2:15001@mlx5_0".into(),
        2,
        QpCaps::default(),
    )
    .unwrap();
    let req = ep.request();
    assert_eq!(req.ready_ack, Some(false));
    assert_eq!(req.qp_num, ep.qp_nums);
    assert_eq!(req.local_gid, ctx.port.gid.to_string());
    let second = ep.on_reply(&mut v, &reply, None).unwrap().expect("the peer supports ready_ack");
    assert_eq!(second.ready_ack, Some(true));
    assert_eq!(second.qp_num, req.qp_num);
    assert_eq!(ep.state, EpState::ReadyAckSent);
    let QpTransition::Rtr(rtr) = v.transitions(ep.qps[1])[1] else { panic!() };
    assert_eq!(rtr.dest_qp_num, 4322);
    ep.on_ready_ack_reply(&HandShakeDesc::default()).unwrap();
    assert_eq!(ep.state, EpState::Connected);
    // The JSON of both frames has §3.3's fields in jsoncpp's order.
    let first = String::from_utf8(connection_frame(&req).json).unwrap();
    assert!(first.starts_with(r#"{"local_gid":"00:00:00:00:00:00:00:00:00:00:ff:ff:0a:00:00:01","local_lid":0,"local_nic_path":"10.0.0.1:15000@mlx5_1","payload":"","peer_nic_path":"10.0.0.2:15001@mlx5_0","qp_num":["#), "{first}");
    assert!(first.ends_with("],\"ready_ack\":false,\"reply_msg\":\"\"}\n"), "{first}");
}

#[test]
fn active_rejections_and_old_peers() {
    let mut v = two_devices();
    let ctx = RdmaContext::open(&mut v, "mlx5_1", &VerbsConfig::default()).unwrap();
    let mk = |v: &mut MockVerbs| {
        Endpoint::create(v, &ctx, "10.0.0.1:15000@mlx5_1".into(), "10.0.0.2:15001@mlx5_0".into(), 2, QpCaps::default())
            .unwrap()
    };
    let reply = hs(PEER_REPLY);

    let mut rejected = reply.clone();
    rejected.reply_msg = QP_COUNT_MISMATCH.into();
    let mut ep = mk(&mut v);
    assert_eq!(ep.on_reply(&mut v, &rejected, None), Err(EndpointError::Rejected(QP_COUNT_MISMATCH.into())));

    let mut three = reply.clone();
    three.qp_num.push(1);
    let mut ep = mk(&mut v);
    assert_eq!(ep.on_reply(&mut v, &three, None), Err(EndpointError::QpCountMismatch { local: 2, peer: 3 }));

    let mut no_gid = reply.clone();
    no_gid.local_gid.clear();
    let mut ep = mk(&mut v);
    assert!(matches!(ep.on_reply(&mut v, &no_gid, None), Err(EndpointError::NoPeerAddress(_))));

    // A peer without ready_ack support: connected at once, no second frame.
    let mut old = reply.clone();
    old.ready_ack = None;
    let mut ep = mk(&mut v);
    assert_eq!(ep.on_reply(&mut v, &old, None), Ok(None));
    assert_eq!(ep.state, EpState::Connected);
    assert!(matches!(ep.on_reply(&mut v, &old, None), Err(EndpointError::UnexpectedReply(EpState::Connected))));

    // The ready ACK refused.
    let mut ep = mk(&mut v);
    ep.on_reply(&mut v, &reply, None).unwrap();
    let no = HandShakeDesc { reply_msg: "no".into(), ..HandShakeDesc::default() };
    assert_eq!(ep.on_ready_ack_reply(&no), Err(EndpointError::Rejected("no".into())));
}

#[test]
fn active_and_passive_against_each_other() {
    // Two mocks, two nodes: A (active) and B (passive), frames through the real codec.
    let (mut va, ctx_a) = passive();
    let (mut vb, ctx_b) = {
        let mut v = MockVerbs::new(vec![MockDevice::roce("mlx5_0", 2)]);
        v.first_qp_num = 0x900;
        let c = RdmaContext::open_all(&mut v, &VerbsConfig::default()).unwrap();
        (v, c)
    };
    let mut ep = Endpoint::create(
        &mut va,
        &ctx_a[0],
        "A:1@mlx5_0".into(),
        "B:2@mlx5_0".into(),
        NUM_QP_PER_EP,
        QpCaps::default(),
    )
    .unwrap();
    let mut table = EndpointTable::new(NUM_QP_PER_EP, false, QpCaps::default());
    let wire = |d: &HandShakeDesc| {
        let mut dec = HandshakeDecoder::new();
        dec.push(&connection_frame(d).encode());
        serde_json::from_slice::<HandShakeDesc>(&dec.next_frame().unwrap().unwrap().json).unwrap()
    };
    let reply = table.handle(&mut vb, &ctx_b, "B:2", &wire(&ep.request()), &no_lookup);
    let second = ep.on_reply(&mut va, &wire(&reply), None).unwrap().unwrap();
    let ack = table.handle(&mut vb, &ctx_b, "B:2", &wire(&second), &no_lookup);
    ep.on_ready_ack_reply(&wire(&ack)).unwrap();
    let b = table.endpoints.values().next().unwrap();
    assert_eq!((ep.state, b.state), (EpState::Connected, EpState::Connected));
    assert_eq!(ep.peer_qp_nums, b.qp_nums);
    assert_eq!(b.peer_qp_nums, ep.qp_nums);
    let QpTransition::Rtr(a_rtr) = va.transitions(ep.qps[0])[1] else { panic!() };
    assert_eq!(a_rtr.dgid, ctx_b[0].port.gid);
    let QpTransition::Rtr(b_rtr) = vb.transitions(b.qps[0])[1] else { panic!() };
    assert_eq!(b_rtr.dgid, ctx_a[0].port.gid);
}

#[test]
fn registration_on_every_device_with_split_and_keys_paired() {
    let (mut v, ctxs) = passive();
    let mut cfg_ctxs = ctxs.clone();
    for c in &mut cfg_ctxs {
        c.max_mr_size = 1 << 20;
    }
    let mut reg = Registry::default();
    reg.register(&mut v, &cfg_ctxs, 0x7f00_0000_0000, (5 << 19) + 17, "cpu:0").unwrap();
    reg.register(&mut v, &cfg_ctxs, 0x7f10_0000_0000, 4096, "cpu:1").unwrap();
    assert_eq!(reg.pieces.len(), 4);
    assert_eq!(
        reg.ranges()[..3],
        [(0x7f00_0000_0000, 1 << 20), (0x7f00_0010_0000, 1 << 20), (0x7f00_0020_0000, (1 << 19) + 17)]
    );
    let regs: Vec<&Call> = v.calls.iter().filter(|c| matches!(c, Call::RegMr(..))).collect();
    assert_eq!(regs.len(), 8);
    assert!(matches!(regs[0], Call::RegMr(pd, 0x7f00_0000_0000, 0x10_0000, 7) if *pd == ctxs[0].pd));
    assert!(matches!(regs[1], Call::RegMr(pd, 0x7f00_0000_0000, 0x10_0000, 7) if *pd == ctxs[1].pd));

    let devices: Vec<DeviceDesc> = ctxs.iter().map(RdmaContext::device_desc).collect();
    let desc = rdma_descriptor("10.0.0.1:15000", "10.0.0.1", 15100, "t".into(), devices, reg.buffer_descs());
    desc.validate().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&desc.to_json()).unwrap();
    assert_eq!(json["protocol"], "rdma");
    assert_eq!(json["devices"][1]["name"], "mlx5_1");
    assert_eq!(json["devices"][1]["gid"], "00:00:00:00:00:00:00:00:00:00:ff:ff:0a:00:00:01");
    assert_eq!(json["devices"][1]["lid"], 0);
    assert_eq!(json["buffers"][0]["name"], "cpu:0");
    assert_eq!(json["buffers"][0]["rkey"].as_array().unwrap().len(), 2);
    assert_eq!(json["buffers"][0]["lkey"].as_array().unwrap().len(), 2);
    assert_eq!(json["priority_matrix"]["*"], serde_json::json!([["mlx5_0", "mlx5_1"], []]));
    assert_eq!(json["priority_matrix"]["cpu:0"], json["priority_matrix"]["cpu:1"]);
    assert_eq!(json["tcp_data_port"], 15100);
    // Round trip through the te decoder, and upstream's key order.
    let back = SegmentDesc::from_json(&desc.to_json()).unwrap();
    assert_eq!(back, desc);
    let text = String::from_utf8(desc.to_json()).unwrap();
    assert!(text.starts_with("{\"buffers\":[{\"addr\":"), "{text}");
    let order = ["}],\"devices\":[", "}],\"name\":", ",\"priority_matrix\":{", "]]},\"protocol\":\"rdma\""];
    let pos: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{text}");

    // Keys: rkey[i] belongs to devices[i].
    let k = select_device(&desc, 0x7f00_0010_0000, 64, 0, 1).unwrap();
    assert_eq!((k.buffer, k.device, k.device_name.as_str()), (1, 1, "mlx5_1"));
    assert_eq!(k.rkey, reg.pieces[1].rkey[1]);
    assert_eq!(k.lkey, reg.pieces[1].lkey[1]);
    assert!(select_device(&desc, 0x7f00_0000_0000 + (1 << 20) - 8, 64, 0, 0).is_none(), "crosses an MR boundary");

    // Unregistration removes every piece of that buffer, on every device.
    assert!(reg.unregister(&mut v, 0x7f00_0000_0000).unwrap());
    assert_eq!(reg.pieces.len(), 1);
    assert_eq!(v.calls.iter().filter(|c| matches!(c, Call::DeregMr(_))).count(), 6);
    assert!(!reg.unregister(&mut v, 0x1234).unwrap());
}

#[test]
fn a_failed_registration_leaves_nothing_registered() {
    let (mut v, ctxs) = passive();
    let mut reg = Registry::default();
    v.fail_call("ibv_reg_mr", 1);
    let e = reg.register(&mut v, &ctxs, 0x1000, 4096, "cpu:0").unwrap_err();
    assert!(e.to_string().contains("on mlx5_1"), "{e}");
    assert!(reg.pieces.is_empty());
    assert_eq!(v.calls.iter().filter(|c| matches!(c, Call::DeregMr(_))).count(), 1);
}

#[test]
fn descriptor_helpers() {
    assert_eq!(split_for_mr(0x1000, 0, 10), vec![]);
    assert_eq!(split_for_mr(0x1000, 25, 10), vec![(0x1000, 10), (0x100a, 10), (0x1014, 5)]);
    assert_eq!(split_for_mr(0x1000, 25, 1 << 40), vec![(0x1000, 25)]);
    let devs = vec![DeviceDesc { name: "a".into(), ..DeviceDesc::default() }];
    let m = priority_matrix(&devs, ["cpu:0", "cpu:0"]);
    assert_eq!(m.len(), 2);
    // A descriptor of an upstream node with a matrix of distinct rows: preferred then available.
    let upstream = r#"{"buffers":[{"addr":4096,"length":4096,"lkey":[1,2],"name":"cpu:0","rkey":[11,12]}],
        "devices":[{"gid":"fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:01","lid":1,"name":"mlx5_0"},
                   {"gid":"fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:02","lid":2,"name":"mlx5_1"}],
        "name":"n","priority_matrix":{"cpu:0":[["mlx5_1"],["mlx5_0"]]},"protocol":"rdma","rdma_server_name":"",
        "tcp_data_port":0,"timestamp":""}"#;
    let d = SegmentDesc::from_json(upstream.as_bytes()).unwrap();
    assert_eq!(select_device(&d, 4096, 10, 0, 0).unwrap().rkey, 12);
    assert_eq!(select_device(&d, 4096, 10, 0, 1).unwrap().rkey, 11);
    assert!(select_device(&d, 8000, 1000, 0, 0).is_none());
}

fn transfer_setup(v: &mut MockVerbs) -> (RdmaContext, Vec<Route>) {
    let ctx = RdmaContext::open(v, "mlx5_0", &VerbsConfig::default()).unwrap();
    let mut ep = Endpoint::create(v, &ctx, "A@mlx5_0".into(), "B@mlx5_0".into(), 2, QpCaps::default()).unwrap();
    let reply = HandShakeDesc {
        local_gid: peer_gid().to_string(),
        local_nic_path: "B@mlx5_0".into(),
        peer_nic_path: "A@mlx5_0".into(),
        qp_num: vec![1, 2],
        ..HandShakeDesc::default()
    };
    assert_eq!(ep.on_reply(v, &reply, None), Ok(None));
    let routes =
        ep.qps.iter().enumerate().map(|(i, &qp)| Route { qp, cq: ctx.cq, lkey: 0x11, rkey: 0x22, path: i }).collect();
    (ctx, routes)
}

#[test]
fn sliced_write_posts_signaled_requests_round_robin_and_completes() {
    let mut v = two_devices();
    let (_ctx, routes) = transfer_setup(&mut v);
    let b = [(0x10_0000, 1 << 20)];
    let slices = slice_request(0x10_0000, 0x10_0000, 300 << 10, &b, &b, SliceConfig::default()).unwrap();
    assert_eq!(slices.len(), 5);
    let mut t = Transfer::new(Opcode::Write, slices, TransferLimits::default());
    let mut router = StaticRouter { routes: routes.clone() };
    let mut steps = 0;
    let done = loop {
        steps += 1;
        if let Some(r) = t.step(&mut v, &mut router) {
            break r;
        }
    };
    assert_eq!(done, Ok(300 << 10));
    assert_eq!(steps, 1);
    let posted = v.posted();
    assert_eq!(posted.len(), 5);
    assert_eq!(posted.iter().filter(|(q, _)| *q == routes[0].qp).count(), 3);
    let (_, w) = posted.iter().find(|(_, w)| w.wr_id == 4).unwrap();
    assert_eq!((w.opcode, w.len, w.lkey, w.rkey), (Opcode::Write, 44 << 10, 0x11, 0x22));
    assert_eq!(w.local_addr, 0x10_0000 + (256 << 10));
    // One chained ibv_post_send per QP.
    assert_eq!(v.calls.iter().filter(|c| matches!(c, Call::PostSend(..))).count(), 2);
}

#[test]
fn retries_depth_limits_and_giving_up() {
    let mut v = two_devices();
    let (_ctx, routes) = transfer_setup(&mut v);
    let b = [(0x10_0000, 16 << 20)];
    let slices = slice_request(0x10_0000, 0x10_0000, 64 << 10, &b, &b, SliceConfig::default()).unwrap();
    // Two errors then a flush then success: three redispatches, on alternating QPs.
    v.statuses.extend([WcStatus::Error(12), WcStatus::Error(12), WcStatus::Flushed]);
    let mut t = Transfer::new(Opcode::Read, slices.clone(), TransferLimits::default());
    let mut router = StaticRouter { routes: routes.clone() };
    let r = (0..10).find_map(|_| t.step(&mut v, &mut router));
    assert_eq!(r, Some(Ok(64 << 10)));
    assert_eq!((t.posted, t.errors), (4, 3));
    let qps: Vec<Qp> = v.posted().iter().map(|(q, _)| *q).collect();
    assert_eq!(qps, vec![routes[0].qp, routes[1].qp, routes[0].qp, routes[0].qp]);

    // Every attempt fails: given up after MC_RETRY_CNT.
    let mut v2 = two_devices();
    let (_c, routes2) = transfer_setup(&mut v2);
    v2.statuses.extend(std::iter::repeat_n(WcStatus::Error(12), 20));
    let mut t = Transfer::new(Opcode::Read, slices.clone(), TransferLimits::default());
    let mut router2 = StaticRouter { routes: routes2 };
    let r = (0..30).find_map(|_| t.step(&mut v2, &mut router2));
    assert_eq!(r, Some(Err(TransferError::Slices(vec![(0, Some(WcStatus::Error(12)))]))));
    assert_eq!(t.posted, 9);

    // Depth: one outstanding request per QP at most.
    let mut v3 = two_devices();
    let (_c, routes3) = transfer_setup(&mut v3);
    let many = slice_request(0x10_0000, 0x10_0000, 1 << 20, &b, &b, SliceConfig::default()).unwrap();
    let limits = TransferLimits { max_wr: 1, ..TransferLimits::default() };
    let mut t = Transfer::new(Opcode::Write, many, limits);
    let mut router = StaticRouter { routes: routes3 };
    let mut steps = 0;
    let r = loop {
        steps += 1;
        if let Some(r) = t.step(&mut v3, &mut router) {
            break r;
        }
    };
    assert_eq!(r, Ok(1 << 20));
    assert_eq!(steps, 8);
    assert!(v3.calls.iter().all(|c| !matches!(c, Call::PostSend(_, w) if w.len() > 1)));

    // No route at all.
    let mut t = Transfer::new(Opcode::Write, slices.clone(), TransferLimits::default());
    let r = t.step(&mut v3, &mut StaticRouter { routes: vec![] });
    assert_eq!(r, Some(Err(TransferError::Slices(vec![(0, None)]))));

    // A refused post is redispatched (and counts as an attempt).
    let mut v4 = two_devices();
    let (_c, routes4) = transfer_setup(&mut v4);
    v4.fail_call("ibv_post_send", 0);
    let mut t = Transfer::new(Opcode::Write, slices, TransferLimits::default());
    let mut router = StaticRouter { routes: routes4 };
    let r = (0..5).find_map(|_| t.step(&mut v4, &mut router));
    assert_eq!(r, Some(Ok(64 << 10)));
    assert_eq!(v4.posted().len(), 2);
}
