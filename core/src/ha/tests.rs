//! Record layout, the role gate and the durable wait of a session.

use std::time::{Duration, Instant};

use super::*;
use crate::store::{HaOp, ObjectRecord, SegmentRecord};

#[test]
fn records_round_trip_through_their_etcd_keys() {
    let p = "mooncake-store/c/ha/";
    let id = uuid::Uuid::from_u128(7);
    let seg = HaOp::Segment(
        id,
        Some(SegmentRecord {
            client: uuid::Uuid::from_u128(9),
            name: "n:1".into(),
            base: 4096,
            size: 1 << 20,
            protocol: "tcp".into(),
            te: "127.0.0.1:1".into(),
            grace_ms: Some(5),
        }),
    );
    let obj = HaOp::Object("k/ü".into(), Some(ObjectRecord { len: 3, checksum: None, replicas: vec![(id, 64)] }));
    for op in [seg, obj, HaOp::Object("gone".into(), None), HaOp::Segment(id, None)] {
        let (k, v) = encode_op(p, &op);
        assert_eq!(decode_op(p, &k, v.as_deref()), Ok(Some(op)));
    }
    assert_eq!(decode_op(p, b"mooncake-store/c/master_view", Some(b"h:1")), Ok(None));
    assert!(decode_op(p, b"mooncake-store/c/ha/s/not-a-uuid", None).is_err());
    assert!(decode_op(p, b"mooncake-store/c/ha/o/k", Some(b"{bad")).is_err());
    assert_eq!(view_key("mooncake_cluster/"), "mooncake-store/mooncake_cluster/master_view");
}

#[test]
fn a_leader_serves_only_within_its_lease() {
    let t0 = Instant::now();
    let s = HaState::new("c", "127.0.0.1:1", t0);
    assert!(!s.serves(t0));
    s.serve(5, t0 + Duration::from_secs(2));
    assert!(s.serves(t0 + Duration::from_secs(1)));
    assert!(!s.serves(t0 + Duration::from_secs(3)), "lease may be gone");
    s.renew(t0 + Duration::from_secs(4));
    assert!(s.serves(t0 + Duration::from_secs(3)));
    s.set(HaRole::Standby, Some("other:1".into()), Some(9));
    assert!(!s.serves(t0 + Duration::from_secs(1)));
    assert_eq!(s.view().leader.as_deref(), Some("other:1"));
}
