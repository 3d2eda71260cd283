//! Named tests of the store: one per lifecycle rule of SPEC §5.5, §7 and §8, driven by a
//! virtual clock (a base `Instant` plus durations) and [`FakePlatform`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::alloc::Allocator;
use super::*;
use crate::platform::FakePlatform;

pub(super) const MIB: u64 = 1 << 20;

/// A store with a virtual clock.
pub(super) struct Harness {
    pub(super) store: Arc<Store>,
    pub(super) platform: Arc<FakePlatform>,
    pub(super) t0: Instant,
    pub(super) now: Instant,
}

pub(super) fn config() -> Config {
    Config {
        node_name: "127.0.0.1:8080".to_string(),
        mount_alignment: MIB,
        eviction_high_watermark_ratio: 1.0,
        eviction_ratio: 0.05,
        lease_ttl: Duration::from_secs(10),
        ..Config::default()
    }
}

impl Harness {
    pub(super) fn new(config: Config) -> Self {
        Self::with_platform(config, FakePlatform::new(7))
    }

    pub(super) fn with_platform(config: Config, platform: FakePlatform) -> Self {
        let platform = Arc::new(platform);
        let t0 = Instant::now();
        let store = Arc::new(Store::new(&config, platform.clone(), t0));
        Self { store, platform, t0, now: t0 }
    }

    /// The instant `secs` after the start.
    pub(super) fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    /// Moves the clock to `t`, applying every deadline on the way at its own instant.
    pub(super) fn advance_to(&mut self, t: Instant) {
        for _ in 0..100_000 {
            match self.store.poll_timeout() {
                Some(d) if d <= t => self.store.handle_timeout(d.max(self.now)),
                _ => break,
            }
        }
        self.now = self.now.max(t);
        self.store.handle_timeout(self.now);
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.advance_to(self.now + d);
    }

    pub(super) fn mount(&self, size: u64) -> Uuid {
        let out = self.store.mount_anonymous(self.now, MountKind::Anonymous, size, Protocol::Tcp, "").unwrap();
        assert_eq!(out.segment_ids.len(), 1);
        out.segment_ids[0]
    }

    pub(super) fn put(&self, key: &str, value: &[u8]) -> Result<(), PutError> {
        self.store.put(self.now, key, value)
    }

    pub(super) fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.store.get(self.now, key, true).map(|r| r.bytes().to_vec())
    }

    pub(super) fn status(&self, id: Uuid) -> Option<SegmentStatus> {
        self.store.segments().into_iter().find(|s| s.id == id).map(|s| s.status)
    }

    pub(super) fn unmount(&self, id: Uuid, grace: Duration) -> bool {
        self.store.unmount(self.now, UnmountFamily::Anonymous, &[id], grace)[0]
    }

    pub(super) fn keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.store.list_keys("", None, usize::MAX, &mut out);
        out
    }
}

fn value(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
}

// ---------------------------------------------------------------- mounting, §5.5

#[test]
fn mount_rounds_up_to_the_alignment() {
    let h = Harness::new(Config { mount_alignment: 16 * MIB, ..config() });
    for (size, want) in [(1, 16 * MIB), (16 * MIB, 16 * MIB), (16 * MIB + 1, 32 * MIB)] {
        let out = h.store.mount_anonymous(h.now, MountKind::Anonymous, size, Protocol::Rdma, "").unwrap();
        assert_eq!(out.allocated_size, want);
    }
    let segs = h.store.segments();
    assert_eq!(segs.len(), 3);
    assert!(segs.iter().all(|s| s.status == SegmentStatus::Mounted && s.protocol == Protocol::Rdma));
    assert!(segs.iter().all(|s| s.client_id == h.store.client_id() && s.name == "127.0.0.1:8080"));
    assert!(segs.iter().all(|s| s.id.get_version_num() == 4));
    let mut ids: Vec<String> = segs.iter().map(|s| s.id.to_string()).collect();
    let sorted = {
        let mut v = ids.clone();
        v.sort();
        v
    };
    assert_eq!(ids, sorted, "sorted by id string");
    ids.dedup();
    assert_eq!(ids.len(), 3);
    assert_eq!(h.store.gauges().total_capacity_bytes, 64 * MIB);
}

#[test]
fn splitting_example_shm() {
    let h = Harness::new(Config { max_registration_size: 4194304, ..config() });
    h.platform.add_shm("seg", 10485760);
    let out = h.store.mount_shm(h.now, "seg", 0, 10485760, Protocol::Tcp, "").unwrap();
    assert_eq!(out.allocated_size, 10485760);
    let mut segs = h.store.segments();
    segs.sort_by_key(|s| s.base_address);
    let sizes: Vec<u64> = segs.iter().map(|s| s.size).collect();
    assert_eq!(sizes, [3497984, 3493888, 3493888]);
    // Chunks are consecutive and `segment_ids` is in address order.
    assert_eq!(segs.iter().map(|s| s.id).collect::<Vec<_>>(), out.segment_ids);
    for w in segs.windows(2) {
        assert_eq!(w[0].base_address + w[0].size, w[1].base_address);
    }
}

#[test]
fn splitting_example_anonymous() {
    let h = Harness::new(Config { mount_alignment: 16777216, max_registration_size: 41943040, ..config() });
    let out = h.store.mount_anonymous(h.now, MountKind::Anonymous, 104857600, Protocol::Tcp, "").unwrap();
    assert_eq!(out.allocated_size, 117440512);
    let mut segs = h.store.segments();
    segs.sort_by_key(|s| s.base_address);
    assert_eq!(segs.iter().map(|s| s.size).collect::<Vec<_>>(), [33554432, 33554432, 33554432, 16777216]);
    assert_eq!(segs.iter().map(|s| s.id).collect::<Vec<_>>(), out.segment_ids);
}

#[test]
fn split_chunks_unit() {
    use super::segment::split_chunks;
    assert_eq!(split_chunks(10, 0, 1), [10]);
    assert_eq!(split_chunks(10, 10, 1), [10]);
    assert_eq!(split_chunks(0, 10, 1), Vec::<u64>::new());
    // A limit below the alignment still makes aligned chunks.
    assert_eq!(split_chunks(3 * 4096, 100, 4096), [4096, 4096, 4096]);
    for total in [1u64, 4095, 4096, 4097, 10485760, 10485761] {
        let c = split_chunks(total, 4194304, 4096);
        assert_eq!(c.iter().sum::<u64>(), total);
    }
}

#[test]
fn mount_errors_map_platform_errors() {
    let mut p = FakePlatform::new(1);
    p.max_anonymous = 32 * MIB;
    let h = Harness::with_platform(config(), p);
    let e = h.store.mount_anonymous(h.now, MountKind::Anonymous, 33 * MIB, Protocol::Tcp, "");
    assert_eq!(e, Err(MountError::OutOfMemory));
    assert_eq!(h.store.mount_shm(h.now, "nope", 0, 4096, Protocol::Tcp, ""), Err(MountError::ShmNotFound));
    h.platform.add_shm("small", 8192);
    assert_eq!(h.store.mount_shm(h.now, "small", 4096, 8192, Protocol::Tcp, ""), Err(MountError::TooSmall(8192)));
    assert!(h.store.segments().is_empty());
}

#[test]
fn mount_shm_shares_bytes_with_the_file() {
    let h = Harness::new(config());
    let file = h.platform.add_shm("mooncake_segment", 1 << 20);
    let out = h.store.mount_shm(h.now, "mooncake_segment", 8192, 65536, Protocol::Tcp, "").unwrap();
    assert_eq!(out.allocated_size, 65536, "no rounding for shm");
    h.put("k", b"hello world").unwrap();
    let rep = h.store.query_key("k").unwrap();
    let seg = &h.store.segments()[0];
    let file_off = (8192 + rep[0].address - seg.base_address) as usize;
    assert_eq!(&file.as_slice()[file_off..file_off + 11], b"hello world");
    // A second mount of the same object sees the same bytes.
    let out2 = h.store.mount_shm(h.now, "mooncake_segment", 8192, 65536, Protocol::Tcp, "").unwrap();
    let seg2 = h.store.segments().into_iter().find(|s| s.id == out2.segment_ids[0]).unwrap();
    assert_eq!(seg2.base_address, seg.base_address);
}

#[test]
fn unmount_wrong_family_unknown_and_removed_fail() {
    let h = Harness::new(config());
    h.platform.add_shm("s", 1 << 20);
    let shm = h.store.mount_shm(h.now, "s", 0, 1 << 20, Protocol::Tcp, "").unwrap().segment_ids[0];
    let anon = h.mount(MIB);
    let startup = h.store.mount_anonymous(h.now, MountKind::Startup, MIB, Protocol::Tcp, "").unwrap().segment_ids[0];
    let z = Duration::ZERO;
    assert_eq!(h.store.unmount(h.now, UnmountFamily::Anonymous, &[shm, Uuid::nil()], z), [false, false]);
    assert_eq!(h.store.unmount(h.now, UnmountFamily::Shm, &[anon, startup], z), [false, false]);
    assert_eq!(h.store.unmount(h.now, UnmountFamily::Anonymous, &[anon, startup], z), [true, true]);
    assert_eq!(h.store.unmount(h.now, UnmountFamily::Shm, &[shm], z), [true]);
    assert!(h.store.segments().is_empty());
    assert_eq!(h.store.unmount(h.now, UnmountFamily::Anonymous, &[anon], z), [false], "removed id is unknown");
}

// ---------------------------------------------------------------- segment lifecycle, §7

#[test]
fn grace_period_expiry() {
    let mut h = Harness::new(config());
    let id = h.mount(MIB);
    h.put("k", b"v").unwrap();
    assert!(h.unmount(id, Duration::from_secs(30)));
    assert_eq!(h.status(id), Some(SegmentStatus::GracefullyUnmounting));
    assert_eq!(h.store.poll_timeout(), Some(h.at(30.0)));
    // Readable, still in capacity, not allocatable, not listed as mounted.
    assert_eq!(h.get("k").as_deref(), Some(&b"v"[..]));
    assert_eq!(h.store.query_key("k").unwrap().len(), 1);
    let g = h.store.gauges();
    assert_eq!((g.total_capacity_bytes, g.allocated_bytes, g.segments_unmounting, g.nodes.len()), (MIB, 1, 1, 1));
    assert_eq!(h.put("other", b"x"), Err(PutError::InsufficientStorage));
    assert_eq!(h.store.query_segment("127.0.0.1:8080"), None);
    assert!(h.store.mounted_node_names().is_empty());
    h.advance_to(h.at(29.999));
    assert_eq!(h.status(id), Some(SegmentStatus::GracefullyUnmounting));
    h.advance_to(h.at(30.0));
    // Dropped regardless of the lease granted by the get; no read in flight: removed.
    assert_eq!(h.status(id), None);
    assert!(!h.store.exists("k"));
    let g = h.store.gauges();
    assert_eq!((g.key_count, g.total_capacity_bytes, g.segments_total), (0, 0, 0));
    assert!(g.nodes.is_empty());
    assert_eq!(h.store.poll_timeout(), None);
}

#[test]
fn deadline_only_moves_earlier() {
    let mut h = Harness::new(config());
    let id = h.mount(MIB);
    assert!(h.unmount(id, Duration::from_secs(30)));
    h.advance_to(h.at(10.0));
    assert!(h.unmount(id, Duration::from_secs(60)), "repeat succeeds");
    assert_eq!(h.store.poll_timeout(), Some(h.at(30.0)), "a later deadline is ignored");
    h.advance_to(h.at(15.0));
    assert!(h.unmount(id, Duration::from_secs(5)));
    assert_eq!(h.store.poll_timeout(), Some(h.at(20.0)), "an earlier deadline wins");
    h.advance_to(h.at(19.9));
    assert_eq!(h.status(id), Some(SegmentStatus::GracefullyUnmounting));
    h.advance_to(h.at(20.0));
    assert_eq!(h.status(id), None);
}

#[test]
fn grace_zero_on_gracefully_unmounting_segment() {
    let h = Harness::new(config());
    let id = h.mount(MIB);
    h.put("k", b"v").unwrap();
    assert!(h.unmount(id, Duration::from_secs(30)));
    let read = h.store.get(h.now, "k", false).unwrap();
    assert!(h.unmount(id, Duration::ZERO));
    assert_eq!(h.status(id), Some(SegmentStatus::Unmounting), "read in flight keeps the record");
    assert!(!h.store.exists("k"));
    assert!(h.unmount(id, Duration::ZERO), "repeat on UNMOUNTING succeeds");
    drop(read);
    assert_eq!(h.status(id), None);
    assert_eq!(h.store.poll_timeout(), None, "the grace deadline is gone");
}

#[test]
fn unmount_drops_replicas_regardless_of_leases() {
    let h = Harness::new(config());
    let a = h.mount(MIB);
    h.put("k", b"v").unwrap();
    let b = h.mount(MIB);
    // Steer the next write to b: a gracefully unmounting segment takes no allocation.
    assert!(h.unmount(a, Duration::from_secs(100)));
    h.put("j", b"w").unwrap();
    let seg_b = h.store.segments().into_iter().find(|s| s.id == b).unwrap();
    assert!(h.store.query_key("j").unwrap()[0].address >= seg_b.base_address);
    assert!(h.get("k").is_some() && h.get("j").is_some(), "both leased now");
    assert_eq!(h.store.remove(h.now, "k"), Err(RemoveError::Leased));
    assert!(h.unmount(a, Duration::ZERO));
    assert_eq!(h.status(a), None);
    assert!(!h.store.exists("k"));
    assert_eq!(h.store.query_key("k"), Err(QueryError::NotFound));
    assert_eq!(h.store.remove(h.now, "k"), Err(RemoveError::NotFound));
    assert!(h.store.exists("j"), "a value elsewhere survives");
    assert_eq!(h.store.gauges().key_count, 1);
}

#[test]
fn read_in_flight_keeps_memory_and_record() {
    let h = Harness::new(config());
    let id = h.mount(MIB);
    let data = value(3, 100_000);
    h.put("k", &data).unwrap();
    let read = h.store.get(h.now, "k", true).unwrap();
    assert!(h.unmount(id, Duration::ZERO));
    let info = h.store.segments().into_iter().find(|s| s.id == id).unwrap();
    assert_eq!((info.status, info.used), (SegmentStatus::Unmounting, 0));
    let g = h.store.gauges();
    assert_eq!((g.total_capacity_bytes, g.allocated_bytes, g.key_count, g.segments_unmounting), (0, 0, 0, 1));
    assert!(g.nodes.is_empty());
    assert!(h.get("k").is_none());
    assert_eq!(read.bytes(), &data[..], "the read in flight completes with the right bytes");
    let second = h.store.get(h.now, "k", false);
    assert!(second.is_none());
    drop(read);
    assert!(h.store.segments().is_empty(), "removed when the last read ends");
}

#[test]
fn write_aborted_by_unmount() {
    let h = Harness::new(config());
    let a = h.mount(MIB);
    h.put("k", b"old").unwrap();
    let b = h.mount(MIB);
    assert!(h.unmount(a, Duration::from_secs(100)));
    let mut w = h.store.begin_write(h.now, "k", 6).unwrap();
    assert_eq!(w.segment_id(), b, "no allocation on a gracefully unmounting segment");
    assert_eq!(h.store.remove(h.now, "k"), Err(RemoveError::BeingWritten));
    w.write(b"new").unwrap();
    assert!(h.unmount(b, Duration::ZERO));
    assert_eq!(w.write(b"val"), Err(WriteAborted));
    assert_eq!(w.complete(h.now), Err(WriteAborted));
    assert_eq!(h.store.counters().put_revokes, 1);
    assert_eq!(h.get("k").as_deref(), Some(&b"old"[..]), "the key keeps its previous value");
    assert!(h.store.remove(h.now, "k").is_err_and(|e| e == RemoveError::Leased));
}

#[test]
fn dropped_write_handle_aborts() {
    let h = Harness::new(config());
    h.mount(MIB);
    let w = h.store.begin_write(h.now, "k", 10).unwrap();
    assert_eq!(h.store.query_key("k"), Err(QueryError::NotReady));
    assert!(!h.store.exists("k") && h.keys().is_empty());
    assert_eq!(h.store.gauges().key_count, 1);
    assert_eq!(h.store.gauges().allocated_bytes, 10);
    drop(w);
    assert_eq!(h.store.counters().put_revokes, 1);
    let g = h.store.gauges();
    assert_eq!((g.key_count, g.allocated_bytes), (0, 0));
    assert_eq!(h.store.remove(h.now, "k"), Err(RemoveError::NotFound));
}

// ---------------------------------------------------------------- objects, §8

#[test]
fn replace_under_concurrent_reader() {
    let h = Harness::new(Config { eviction_ratio: 0.0, ..config() });
    h.mount(MIB);
    let old = value(1, 200_000);
    let new = value(2, 200_000);
    h.put("k", &old).unwrap();
    let read = h.store.get(h.now, "k", false).unwrap();
    h.put("k", &new).unwrap();
    assert_eq!(h.get("k").unwrap(), new);
    assert_eq!(h.store.gauges().allocated_bytes, 400_000, "the old value is kept while read");
    // Fill the rest of the segment: the old range must not be reused.
    while h.put(&format!("fill{}", h.keys().len()), &value(9, 50_000)).is_ok() {}
    assert_eq!(read.bytes(), &old[..]);
    let before = h.store.gauges().allocated_bytes;
    drop(read);
    assert_eq!(h.store.gauges().allocated_bytes, before - 200_000, "released at the read's end");
}

#[test]
fn two_concurrent_writes_of_one_key() {
    let h = Harness::new(config());
    h.mount(MIB);
    let mut w1 = h.store.begin_write(h.now, "k", 3).unwrap();
    let mut w2 = h.store.begin_write(h.now, "k", 4).unwrap();
    assert_eq!(h.store.query_key("k"), Err(QueryError::NotReady));
    assert_eq!(h.store.gauges().key_count, 1);
    w1.write(b"one").unwrap();
    w2.write(b"two!").unwrap();
    assert_eq!(w2.complete(h.now), Ok(4));
    assert_eq!(h.get("k").as_deref(), Some(&b"two!"[..]));
    assert_eq!(h.store.remove(h.now, "k"), Err(RemoveError::Leased));
    assert_eq!(w1.complete(h.now), Ok(3));
    assert_eq!(h.get("k").as_deref(), Some(&b"one"[..]), "the last to complete wins");
    assert_eq!(h.store.gauges().key_count, 1);
}

#[test]
fn lease_blocks_remove_then_expires() {
    // SPEC §8.4 example (TTL 10 s).
    let mut h = Harness::new(config());
    h.mount(MIB);
    h.put("k", b"v").unwrap();
    h.advance_to(h.at(1.0));
    assert!(h.get("k").is_some());
    h.advance_to(h.at(2.0));
    assert_eq!(h.store.remove(h.now, "k"), Err(RemoveError::Leased));
    h.advance_to(h.at(11.001));
    assert_eq!(h.store.remove(h.now, "k"), Ok(()));
    assert_eq!(h.store.remove(h.now, "k"), Err(RemoveError::NotFound));
    assert_eq!(h.store.gauges().allocated_bytes, 0);
}

#[test]
fn lease_ttl_zero_disables_leases() {
    let h = Harness::new(Config { lease_ttl: Duration::ZERO, ..config() });
    h.mount(MIB);
    h.put("k", b"v").unwrap();
    assert!(h.get("k").is_some());
    assert_eq!(h.store.remove(h.now, "k"), Ok(()));
}

#[test]
fn non_lease_reads_grant_no_lease() {
    let h = Harness::new(config());
    h.mount(MIB);
    h.put("k", b"v").unwrap();
    assert!(h.store.get(h.now, "k", false).is_some());
    assert!(h.store.exists("k"));
    assert!(h.store.query_key("k").is_ok());
    assert_eq!(h.store.remove(h.now, "k"), Ok(()));
}

#[test]
fn retired_leased_value_is_released_at_lease_expiry() {
    let mut h = Harness::new(config());
    h.mount(MIB);
    h.put("k", &[1; 1000]).unwrap();
    assert!(h.get("k").is_some());
    h.put("k", &[2; 10]).unwrap();
    assert_eq!(h.store.remove(h.now, "k"), Ok(()), "the new value starts without a lease");
    assert_eq!(h.store.gauges().allocated_bytes, 1000, "old value waits for its lease");
    assert_eq!(h.store.poll_timeout(), Some(h.at(10.0)));
    h.advance_to(h.at(9.9));
    assert_eq!(h.store.gauges().allocated_bytes, 1000);
    h.advance_to(h.at(10.0));
    assert_eq!(h.store.gauges().allocated_bytes, 0);
    assert_eq!(h.store.poll_timeout(), None);
}

/// `remove_all` walks the keys in steps of `REMOVE_STEP` under separate lock holds; the
/// result is that of one walk: every removable key gone, leased and in-progress ones kept,
/// whichever step they fall in.
#[test]
fn remove_all_in_steps_removes_what_one_walk_would() {
    let h = Harness::new(config());
    h.mount(64 * MIB);
    let n = 3 * super::REMOVE_STEP + 17;
    for i in 0..n {
        h.put(&format!("k{i:06}"), b"v").unwrap();
    }
    // Leased keys on both sides of the step boundaries, and one write in progress.
    let kept: Vec<String> = [0, super::REMOVE_STEP - 1, super::REMOVE_STEP, 2 * super::REMOVE_STEP + 5, n - 1]
        .iter()
        .map(|i| format!("k{i:06}"))
        .collect();
    for k in &kept {
        assert!(h.get(k).is_some());
    }
    let w = h.store.begin_write(h.now, "k000100", 1).unwrap();
    assert_eq!(h.store.remove_all(h.now), (n - kept.len() - 1) as u64);
    let mut left = kept.clone();
    left.push("k000100".to_string());
    left.sort();
    assert_eq!(h.keys(), left);
    drop(w);
    // One step by hand: the cursor is the last key looked at, None at the end.
    let mut inner = h.store.inner.write().unwrap();
    let now = inner.last_now;
    let (removed, next) = inner.remove_some(now, true, &|_| true, None, 2);
    assert_eq!((removed, next.as_deref()), (2, Some("k000100")));
    let (removed, next) = inner.remove_some(now, true, &|_| true, next.as_deref(), 100);
    assert_eq!((removed, next), (4, None));
}

#[test]
fn remove_all_skips_leased_and_in_progress() {
    let h = Harness::new(config());
    h.mount(MIB);
    for k in ["a", "b", "c"] {
        h.put(k, k.as_bytes()).unwrap();
    }
    assert!(h.get("a").is_some());
    let wc = h.store.begin_write(h.now, "c", 1).unwrap();
    let wd = h.store.begin_write(h.now, "d", 1).unwrap();
    assert_eq!(h.store.remove_all(h.now), 1);
    assert_eq!(h.keys(), ["a", "c"]);
    assert_eq!(h.store.gauges().key_count, 3, "a, c and d (write in progress)");
    drop((wc, wd));
    assert_eq!(h.store.remove_all(h.now), 1, "c now; a still leased");
    assert_eq!(h.store.remove_all(h.now), 0);
}

#[test]
fn query_key_and_listing() {
    let h = Harness::new(config());
    let id = h.mount(MIB);
    for k in ["a1", "a2", "a3", "b1"] {
        h.put(k, b"xyz").unwrap();
    }
    let _w = h.store.begin_write(h.now, "a0", 1).unwrap();
    let mut out = Vec::new();
    h.store.list_keys("a", None, 2, &mut out);
    assert_eq!(out, ["a1", "a2"]);
    out.clear();
    h.store.list_keys("a", Some("a2"), 2, &mut out);
    assert_eq!(out, ["a3"]);
    out.clear();
    h.store.list_keys("", Some("a"), 10, &mut out);
    assert_eq!(out, ["a1", "a2", "a3", "b1"]);
    out.clear();
    h.store.list_keys("b", Some("a9"), 10, &mut out);
    assert_eq!(out, ["b1"]);
    out.clear();
    h.store.list_keys("a", Some("b"), 10, &mut out);
    assert!(out.is_empty());
    let seg = h.store.segments().into_iter().find(|s| s.id == id).unwrap();
    let r = h.store.query_key("a2").unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].endpoint.as_str(), r[0].size, r[0].protocol), ("127.0.0.1:8080", 3, Protocol::Tcp));
    assert!(r[0].address >= seg.base_address && r[0].address + 3 <= seg.base_address + seg.size);
    assert_eq!(h.store.query_key("zz"), Err(QueryError::NotFound));
    assert_eq!(h.store.query_segment("127.0.0.1:8080"), Some((13, MIB)));
    assert_eq!(h.store.query_segment("other"), None);
    assert_eq!(h.store.mounted_node_names(), ["127.0.0.1:8080"]);
    let g = h.store.gauges();
    assert_eq!(g.key_count, 5);
    assert_eq!(g.allocated_bytes, 13);
    assert_eq!(g.active_clients, 1);
    assert_eq!((g.segments_total, g.segments_mounted, g.segments_unmounting, g.nodes_mounted), (1, 1, 0, 1));
    assert_eq!(g.nodes, [NodeGauge { name: "127.0.0.1:8080".into(), allocated: 13, capacity: MIB }]);
}

#[test]
fn values_are_packed_without_padding() {
    let h = Harness::new(config());
    h.mount(MIB);
    h.put("a", &[1; 8]).unwrap();
    h.put("b", &[2; 8]).unwrap();
    let a = h.store.query_key("a").unwrap()[0].address;
    let b = h.store.query_key("b").unwrap()[0].address;
    assert_eq!(a.abs_diff(b), 8);
    assert_eq!(h.store.gauges().allocated_bytes, 16);
}

// ---------------------------------------------------------------- eviction, §8.6

#[test]
fn eviction_worked_example() {
    let h = Harness::new(Config {
        eviction_high_watermark_ratio: 0.5,
        eviction_ratio: 0.1,
        mount_alignment: 16 * MIB,
        ..config()
    });
    h.mount(16 * MIB);
    for i in 0..14 {
        h.put(&format!("ev-{i:02}"), &vec![i as u8; MIB as usize]).unwrap();
        if i == 8 {
            assert_eq!(h.keys().len(), 7, "after the 9th put: 2 of 9 evicted");
            assert!(!h.store.exists("ev-00") && !h.store.exists("ev-01"));
        }
    }
    let want: Vec<String> = (6..14).map(|i| format!("ev-{i:02}")).collect();
    assert_eq!(h.keys(), want);
    assert_eq!(h.store.gauges().allocated_bytes, 8388608);
    let c = h.store.counters();
    assert_eq!(c.successful_evictions, 3);
    assert_eq!(c.attempted_evictions, 3);
    assert_eq!(c.evicted_keys, 6);
    assert_eq!(c.evicted_bytes, 6291456);
    assert_eq!(h.store.poll_timeout(), None, "at 50 % nothing is armed");
    for k in &want {
        assert_eq!(h.get(k).unwrap()[0], k[3..].parse::<u8>().unwrap());
    }
}

#[test]
fn eviction_order_follows_leases() {
    let mut h = Harness::new(Config { eviction_high_watermark_ratio: 0.5, eviction_ratio: 0.1, ..config() });
    h.mount(16 * MIB);
    for i in 0..8 {
        h.put(&format!("k{i}"), &vec![0; MIB as usize]).unwrap();
    }
    // Read k0 and k1 at t=1: their leases end at t=11, later than the others' completion.
    h.advance_to(h.at(1.0));
    h.get("k0").unwrap();
    h.get("k1").unwrap();
    h.advance_to(h.at(20.0));
    h.put("k8", &vec![0; MIB as usize]).unwrap();
    // N = 9, f = 0.1625 → 2 evicted: the never-read k2, k3 first.
    assert!(h.store.exists("k0") && h.store.exists("k1"));
    assert!(!h.store.exists("k2") && !h.store.exists("k3"));
}

#[test]
fn periodic_check_waits_for_leases_then_evicts() {
    let mut h = Harness::new(Config { eviction_high_watermark_ratio: 0.5, eviction_ratio: 0.1, ..config() });
    h.mount(16 * MIB);
    for i in 0..8 {
        h.put(&format!("k{i}"), &vec![0; MIB as usize]).unwrap();
        h.get(&format!("k{i}")).unwrap();
    }
    // A write in progress is not a candidate but counts as used: 10/16 > H, all leased.
    let w = h.store.begin_write(h.now, "w", 2 * MIB).unwrap();
    assert_eq!(h.store.poll_timeout(), Some(h.at(0.01)), "periodic check armed");
    h.advance_to(h.at(5.0));
    assert_eq!(h.store.counters(), StoreCounters::default(), "no candidate: no pass");
    assert_eq!(h.store.poll_timeout(), Some(h.at(10.0)), "next check at the first lease expiry");
    h.advance_to(h.at(10.0));
    // N = 8, used = 0.625, f = 0.225 → ceil(1.8) = 2 evicted; used = 0.5: disarmed.
    let c = h.store.counters();
    assert_eq!((c.attempted_evictions, c.successful_evictions, c.evicted_keys), (1, 1, 2));
    assert!(!h.store.exists("k0") && !h.store.exists("k1") && h.store.exists("k2"));
    assert_eq!(h.store.gauges().allocated_bytes, 8 * MIB);
    assert_eq!(h.store.poll_timeout(), None);
    drop(w);
    assert_eq!(h.store.gauges().allocated_bytes, 6 * MIB);
}

#[test]
fn watermark_pass_runs_after_each_completed_write() {
    let h = Harness::new(Config { eviction_high_watermark_ratio: 0.5, eviction_ratio: 0.1, ..config() });
    h.mount(16 * MIB);
    for i in 0..8 {
        h.put(&format!("k{i}"), &vec![0; MIB as usize]).unwrap();
        h.get(&format!("k{i}")).unwrap();
    }
    // 9th write: only itself is a candidate (N = 1) and goes at once.
    let mut w = h.store.begin_write(h.now, "k8", MIB).unwrap();
    w.write(&vec![0; MIB as usize]).unwrap();
    w.complete(h.now).unwrap();
    let c = h.store.counters();
    assert_eq!((c.attempted_evictions, c.successful_evictions, c.evicted_keys, c.evicted_bytes), (1, 1, 1, MIB));
    assert!(!h.store.exists("k8"));
    assert_eq!(h.store.poll_timeout(), None);
}

#[test]
fn allocation_failure_eviction() {
    let h = Harness::new(Config { eviction_ratio: 0.1, ..config() });
    h.mount(16 * MIB);
    for i in 0..16 {
        h.put(&format!("k{i:02}"), &vec![0; MIB as usize]).unwrap();
    }
    assert_eq!(h.store.counters(), StoreCounters::default(), "H = 1: no watermark pass");
    h.get("k00").unwrap();
    h.put("new", &vec![1; MIB as usize]).unwrap();
    // N = 15 (k00 leased), ceil(1.5) = 2: k01, k02.
    let c = h.store.counters();
    assert_eq!((c.attempted_evictions, c.successful_evictions, c.evicted_keys, c.evicted_bytes), (1, 1, 2, 2 * MIB));
    assert!(h.store.exists("k00") && !h.store.exists("k01") && !h.store.exists("k02"));
    // A value needing 3 MiB of contiguous space: passes run until it fits.
    h.put("big", &vec![2; 3 * MIB as usize]).unwrap();
    assert!(h.store.counters().attempted_evictions >= 2);
    assert_eq!(h.get("big").unwrap().len(), 3 * MIB as usize);
}

#[test]
fn eviction_ratio_zero_gives_507() {
    let h = Harness::new(Config { eviction_ratio: 0.0, ..config() });
    h.mount(MIB);
    h.put("a", &vec![0; MIB as usize]).unwrap();
    assert_eq!(h.put("b", b"x"), Err(PutError::InsufficientStorage));
    assert_eq!(h.store.begin_write(h.now, "b", 1).err(), Some(PutError::InsufficientStorage));
    assert_eq!(h.store.counters(), StoreCounters::default());
    assert!(h.store.exists("a"));
    assert_eq!(h.store.gauges().key_count, 1);
}

#[test]
fn no_mounted_segment_or_too_large_gives_507_without_eviction() {
    let h = Harness::new(Config { eviction_ratio: 0.5, ..config() });
    assert_eq!(h.put("a", b"x"), Err(PutError::InsufficientStorage));
    h.mount(MIB);
    h.put("a", b"x").unwrap();
    assert_eq!(h.put("b", &vec![0; MIB as usize + 1]), Err(PutError::InsufficientStorage));
    assert_eq!(h.store.counters(), StoreCounters::default());
    assert!(h.store.exists("a"));
}

#[test]
fn no_candidate_gives_507() {
    let h = Harness::new(Config { eviction_ratio: 0.5, ..config() });
    h.mount(MIB);
    h.put("a", &vec![0; MIB as usize]).unwrap();
    h.get("a").unwrap();
    assert_eq!(h.put("b", b"x"), Err(PutError::InsufficientStorage));
    assert_eq!(h.store.counters().attempted_evictions, 0);
}

// ---------------------------------------------------------------- allocator

#[test]
fn allocator_no_overlap_and_coalescing() {
    let mut a = Allocator::new(1000);
    let x = a.alloc(100).unwrap();
    let y = a.alloc(200).unwrap();
    let z = a.alloc(300).unwrap();
    assert_eq!((x, y, z), (0, 100, 300));
    assert_eq!(a.alloc(401), None);
    a.free(y, 200);
    assert_eq!(a.alloc(150), Some(100), "best fit: the 200-byte hole, not the 400-byte tail");
    a.free(100, 150);
    a.free(x, 100);
    a.free(z, 300);
    assert_eq!(a.used(), 0);
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [(0, 1000)], "fully coalesced");
    assert_eq!(a.alloc(1000), Some(0));
}

#[test]
fn allocator_random_sequences_never_overlap() {
    let mut rng = 0x1234_5678_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let size = 1 << 16;
    let mut a = Allocator::new(size);
    let mut live: Vec<(u64, u64)> = Vec::new();
    for _ in 0..20_000 {
        if live.is_empty() || next() % 3 != 0 {
            let len = 1 + next() % 2000;
            if let Some(off) = a.alloc(len) {
                live.push((off, len));
            } else {
                let free: u64 = a.free_ranges().map(|(_, l)| l).max().unwrap_or(0);
                assert!(free < len);
            }
        } else {
            let (off, len) = live.swap_remove((next() % live.len() as u64) as usize);
            a.free(off, len);
        }
        assert_eq!(a.used(), live.iter().map(|&(_, l)| l).sum::<u64>());
    }
    // Live ranges and free ranges tile the segment exactly.
    let mut all: Vec<(u64, u64)> = live.clone();
    all.extend(a.free_ranges());
    all.sort();
    let mut pos = 0;
    for (off, len) in all {
        assert_eq!(off, pos, "gap or overlap");
        pos += len;
    }
    assert_eq!(pos, size);
}

// ---------------------------------------------------------------- concurrency

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
    fn send<T: Send>() {}
    send::<ValueRead>();
    send::<WriteHandle>();
}

#[test]
fn concurrent_readers_see_complete_old_or_new_values() {
    let h = Harness::new(Config { lease_ttl: Duration::ZERO, ..config() });
    h.mount(16 * MIB);
    let make = |version: u32, len: usize| -> Vec<u8> {
        let mut v = version.to_le_bytes().to_vec();
        v.extend((0..len).map(|i| (version as usize + i) as u8));
        v
    };
    let check = |bytes: &[u8]| -> u32 {
        let version = u32::from_le_bytes(bytes[..4].try_into().unwrap());
        assert!(bytes[4..].iter().enumerate().all(|(i, &b)| b == (version as usize + i) as u8), "torn value");
        version
    };
    h.put("k", &make(0, 1000)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let store = h.store.clone();
        let stop = stop.clone();
        let now = h.now;
        readers.push(std::thread::spawn(move || {
            let mut last = 0;
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = store.get(now, "k", true).expect("always present");
                let v = check(r.bytes());
                assert!(v >= last, "versions never go back");
                last = v;
                // Hold some reads a little while a replace happens.
                if reads & 7 == 0 {
                    std::thread::yield_now();
                    assert_eq!(check(r.bytes()), v);
                }
                reads += 1;
            }
            reads
        }));
    }
    for version in 1..2000u32 {
        // Small values go under the lock, large ones through the unlocked copy path.
        let len = if version % 2 == 0 { 1000 } else { 100_000 };
        h.put("k", &make(version, len)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(check(&h.get("k").unwrap()), 1999);
    assert_eq!(h.store.gauges().allocated_bytes, 100_004, "every old value was released");
}

#[test]
fn concurrent_reads_racing_replace_and_unmount_leak_nothing() {
    let h = Harness::new(Config { lease_ttl: Duration::ZERO, eviction_ratio: 0.0, ..config() });
    let mut mounted: Vec<Uuid> = (0..4).map(|_| h.mount(MIB)).collect();
    let make = |key: usize, version: usize| -> Vec<u8> {
        let len = 100 + (version * 37) % 3000;
        (0..len).map(|i| (key * 31 + version + i) as u8).collect()
    };
    for k in 0..4 {
        h.put(&format!("k{k}"), &make(k, 0)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let (store, stop, now) = (h.store.clone(), stop.clone(), h.now);
            std::thread::spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let k = i % 4;
                    if let Some(r) = store.get(now, &format!("k{k}"), i % 2 == 0) {
                        let b = r.bytes();
                        // Every byte follows from the first: never torn, never overwritten.
                        let base = b[0];
                        assert!(b.iter().enumerate().all(|(j, &x)| x == base.wrapping_add(j as u8)));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for round in 1..600 {
        let k = round % 4;
        let _ = h.put(&format!("k{k}"), &make(k, round));
        if round % 40 == 0 {
            let victim = mounted.remove(round / 40 % mounted.len());
            assert!(h.unmount(victim, Duration::ZERO));
            mounted.push(h.mount(MIB));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    // Every read ended: nothing retired is left, no UNMOUNTING record remains.
    let inner = h.store.inner.read().unwrap();
    super::model_tests::check_inner(&inner);
    assert_eq!(inner.values.len(), inner.objects.len());
    assert!(inner.pending.is_empty());
    assert!(inner.segments.values().all(|s| s.is_mounted()));
    assert_eq!(inner.segments.len(), 4);
    let current: u64 = inner.objects.values().map(|o| inner.values[&o.current.unwrap()].len).sum();
    assert_eq!(inner.totals().0, current);
}
