//! Drain jobs in the store, with a virtual clock and the copies reported by hand (the bytes
//! are the driver's business): validation, DRAINING/DRAINED, concurrency, leases deferring a
//! unit, cancel, failures, and a value replaced while it is copied.

use std::time::Duration;

use uuid::Uuid;

use super::remote_tests::seg;
use super::tests::{config, Harness, MIB};
use super::*;

const C1: Uuid = Uuid::from_u128(0xc1);
const C2: Uuid = Uuid::from_u128(0xc2);
const C3: Uuid = Uuid::from_u128(0xc3);

/// n1 (C1) with `n` values of 4 KiB, n2 (C2) with room; leases of 1 s.
fn setup(n: usize) -> Harness {
    let h =
        Harness::new(Config { lease_ttl: Duration::from_secs(1), client_ttl: Duration::from_secs(3600), ..config() });
    h.store.client_mount(h.now, C1, &seg(0x51, "n1", 0x7f00_0000_0000, 16 * MIB)).unwrap();
    h.store.client_mount(h.now, C2, &seg(0x61, "n2", 0x7e00_0000_0000, 16 * MIB)).unwrap();
    let on_n1 = WriteConfig { replicas: 1, preferred: vec!["n1".into()], ..Default::default() };
    for i in 0..n {
        let k = format!("k{i}");
        h.store.client_put_start(h.now, C1, &k, 4096, &on_n1, false).unwrap();
        h.store.client_put_end(h.now, C1, &k, None).unwrap();
    }
    h
}

fn req(src: &[&str], dst: &[&str], conc: u64) -> DrainRequest {
    DrainRequest {
        segments: src.iter().map(|s| s.to_string()).collect(),
        targets: dst.iter().map(|s| s.to_string()).collect(),
        max_concurrency: conc,
    }
}

fn endpoint(h: &Harness, key: &str) -> String {
    h.store.client_get(h.now, key).unwrap().replicas[0].endpoint.clone()
}

/// Polls and finishes every unit with `ok` until the job is over; returns the units seen.
fn run(h: &Harness, id: (u64, u64), max_conc: usize) -> usize {
    let mut seen = 0;
    for _ in 0..1000 {
        let units = h.store.drain_poll(h.now, 1);
        assert!(units.len() <= max_conc, "{} units at once", units.len());
        if units.is_empty()
            && matches!(h.store.drain_view(id).unwrap().status, JobStatus::Succeeded | JobStatus::Failed)
        {
            return seen;
        }
        for u in units {
            assert_eq!(u.len, 4096);
            assert_eq!(u.from.endpoint, "te-n1");
            assert_eq!(u.to.endpoint, "te-n2");
            assert!(!u.from.local && !u.to.local);
            seen += 1;
            h.store.drain_finish(u.id, Ok(()), 2);
        }
    }
    panic!("the job never ended");
}

#[test]
fn requests_are_validated_as_upstream_does() {
    let h = setup(1);
    for (r, want) in [
        (req(&[], &[], 4), DrainError::InvalidParams("segments must not be empty")),
        (req(&["n1"], &[], 0), DrainError::InvalidParams("max_concurrency must be positive")),
        (req(&["n1", "n1"], &[], 4), DrainError::InvalidParams("duplicate segment names")),
        (req(&["n1"], &["n1"], 4), DrainError::InvalidParams("a target segment is also a source")),
        (req(&["nope"], &[], 4), DrainError::SegmentNotFound("nope".into())),
        (req(&["n1"], &["nope"], 4), DrainError::SegmentNotFound("nope".into())),
    ] {
        assert_eq!(h.store.drain_create(&r, 0), Err(want));
    }
    h.store.drain_create(&req(&["n1"], &["n2"], 4), 0).unwrap();
    assert!(
        matches!(h.store.drain_create(&req(&["n1"], &[], 4), 0), Err(DrainError::Unavailable(_))),
        "already draining"
    );
    assert!(
        matches!(h.store.drain_create(&req(&["n2"], &["n1"], 4), 0), Err(DrainError::Unavailable(_))),
        "a draining target"
    );
    assert_eq!(h.store.drain_view((9, 9)), Err(DrainError::JobNotFound));
    assert_eq!(parse_job_id("12-34"), Some((12, 34)));
    for bad in ["12", "12abc-3", "1--2", "-", "a-b"] {
        assert_eq!(parse_job_id(bad), None, "{bad}");
    }
}

#[test]
fn a_drain_moves_every_replica_and_leaves_the_source_drained() {
    let h = setup(7);
    let id = parse_job_id(&h.store.drain_create(&req(&["n1"], &["n2"], 2), 10).unwrap()).unwrap();
    let v = h.store.drain_view(id).unwrap();
    assert_eq!((v.status, v.segments.clone(), v.created_ms), (JobStatus::Created, vec!["n1".to_string()], 10));
    assert_eq!(h.store.segment_drain("n1"), Some("DRAINING"));
    // Out of allocation while draining, still readable.
    let on_n1 = WriteConfig { replicas: 1, preferred: vec!["n1".into()], ..Default::default() };
    let d = h.store.client_put_start(h.now, C1, "new", 100, &on_n1, false).unwrap();
    assert_eq!(d[0].endpoint, "te-n2");
    h.store.client_put_end(h.now, C1, "new", None).unwrap();
    let units = run(&h, id, 2);
    assert_eq!(units, 7);
    let v = h.store.drain_view(id).unwrap();
    assert_eq!((v.status, v.succeeded_units, v.failed_units, v.migrated_bytes), (JobStatus::Succeeded, 7, 0, 7 * 4096));
    assert_eq!(v.message, "Drain job finished successfully");
    for i in 0..7 {
        assert_eq!(endpoint(&h, &format!("k{i}")), "te-n2");
    }
    assert_eq!(h.store.query_segment("n1"), Some((0, 16 * MIB)), "empty, still mounted");
    assert_eq!(h.store.segment_drain("n1"), Some("DRAINED"));
    let g = h.store.gauges();
    assert_eq!((g.segments_draining, g.segments_drained), (0, 1));
    let c = h.store.drain_counters();
    assert_eq!(c, (7 * 4096, 7, 0));
}

#[test]
fn a_leased_value_waits_for_its_lease() {
    let mut h = setup(2);
    h.store.client_get(h.now, "k1").unwrap(); // leased for 1 s
    let id = parse_job_id(&h.store.drain_create(&req(&["n1"], &[], 4), 0).unwrap()).unwrap();
    let units = h.store.drain_poll(h.now, 0);
    assert_eq!(units.len(), 1, "k0 only");
    h.store.drain_finish(units[0].id, Ok(()), 0);
    assert!(h.store.drain_poll(h.now, 0).is_empty());
    assert!(h.store.drain_view(id).unwrap().blocked_units >= 1);
    h.advance(Duration::from_millis(1001));
    let units = h.store.drain_poll(h.now, 0);
    assert_eq!(units.len(), 1, "k1 after its lease");
    h.store.drain_finish(units[0].id, Ok(()), 0);
    h.store.drain_poll(h.now, 0);
    assert_eq!(h.store.drain_view(id).unwrap().status, JobStatus::Succeeded);
    assert_eq!(endpoint(&h, "k1"), "te-n2");
}

#[test]
fn cancel_failures_no_room_and_replaced_values() {
    // Cancel: sources back to OK, the copy in flight discarded.
    let h = setup(2);
    let id = parse_job_id(&h.store.drain_create(&req(&["n1"], &[], 1), 0).unwrap()).unwrap();
    let units = h.store.drain_poll(h.now, 0);
    assert_eq!(units.len(), 1);
    h.store.drain_cancel(id, 5).unwrap();
    assert_eq!(h.store.segment_drain("n1"), None);
    h.store.drain_finish(units[0].id, Ok(()), 6);
    assert_eq!(endpoint(&h, "k0"), "te-n1", "a canceled copy is not committed");
    assert_eq!(h.store.drain_view(id).unwrap().status, JobStatus::Canceled);
    assert!(matches!(h.store.drain_cancel(id, 7), Err(DrainError::Unavailable(_))));
    assert_eq!(h.store.query_segment("n2"), Some((0, 16 * MIB)), "its target space was freed");

    // A failed copy: the job fails, the source takes allocations again.
    let h = setup(1);
    let id = parse_job_id(&h.store.drain_create(&req(&["n1"], &["n2"], 4), 0).unwrap()).unwrap();
    let u = h.store.drain_poll(h.now, 0).remove(0);
    h.store.drain_finish(u.id, Err("n2: connection refused".into()), 0);
    h.store.drain_poll(h.now, 0);
    let v = h.store.drain_view(id).unwrap();
    assert_eq!((v.status, v.failed_units), (JobStatus::Failed, 1));
    assert!(v.message.contains("connection refused"), "{}", v.message);
    assert_eq!(h.store.segment_drain("n1"), None);
    assert_eq!(endpoint(&h, "k0"), "te-n1");

    // No room on the only target.
    let h = setup(1);
    h.store.client_mount(h.now, C3, &seg(0x71, "tiny", 0x7d00_0000_0000, 1024)).unwrap();
    let id = parse_job_id(&h.store.drain_create(&req(&["n1"], &["tiny"], 4), 0).unwrap()).unwrap();
    assert!(h.store.drain_poll(h.now, 0).is_empty());
    h.store.drain_poll(h.now, 0);
    let v = h.store.drain_view(id).unwrap();
    assert_eq!(v.status, JobStatus::Failed);
    assert!(v.message.contains("no target segment has room"), "{}", v.message);

    // A value replaced while its copy runs: the copy is moot, the new value stands.
    let h = setup(1);
    let id = parse_job_id(&h.store.drain_create(&req(&["n1"], &[], 4), 0).unwrap()).unwrap();
    let u = h.store.drain_poll(h.now, 0).remove(0);
    let any = WriteConfig { replicas: 1, ..Default::default() };
    h.store.client_put_start(h.now, C2, "k0", 8192, &any, true).unwrap();
    h.store.client_put_end(h.now, C2, "k0", None).unwrap();
    h.store.drain_finish(u.id, Ok(()), 0);
    assert_eq!(h.store.client_get(h.now, "k0").unwrap().replicas[0].size, 8192);
    h.store.drain_poll(h.now, 0);
    assert_eq!(h.store.drain_view(id).unwrap().status, JobStatus::Succeeded);
    assert_eq!(h.store.query_segment("n2").map(|(u, _)| u), Some(8192), "the moot copy's space was freed");
}
