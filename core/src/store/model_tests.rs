//! Model-based property test: random sequences of store operations against a simple
//! reference model, with the store's internal invariants checked after every step.
//!
//! The model predicts everything except which values eviction picks; eviction is
//! reconciled through the counters (every key that vanished without a predicted cause
//! must be accounted for by `evicted_keys`, and must have been evictable).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use uuid::Uuid;

use super::object::ValueState;
use super::segment::SegState;
use super::state::Inner;
use super::tests::Harness;
use super::*;
use crate::platform::FakePlatform;

const PAGE: u64 = 4096;
const KEYS: u8 = 8;
const LEASE: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
enum Op {
    MountAnon { pages: u8 },
    MountShm { pages: u8 },
    Unmount { seg: u8, grace_ms: u16, shm_family: bool },
    Put { key: u8, len: u16, fill: u8 },
    Begin { key: u8, len: u16, fill: u8 },
    Complete { w: u8 },
    Abort { w: u8 },
    Get { key: u8, hold: bool, lease: bool },
    DropRead { r: u8 },
    Remove { key: u8 },
    RemoveAll,
    Advance { ms: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u8..=4).prop_map(|pages| Op::MountAnon { pages }),
        1 => (1u8..=4).prop_map(|pages| Op::MountShm { pages }),
        2 => (any::<u8>(), prop_oneof![Just(0u16), 1u16..3000], any::<bool>())
            .prop_map(|(seg, grace_ms, shm_family)| Op::Unmount { seg, grace_ms, shm_family }),
        8 => (0..KEYS, 1u16..3000, any::<u8>()).prop_map(|(key, len, fill)| Op::Put { key, len, fill }),
        3 => (0..KEYS, 1u16..3000, any::<u8>()).prop_map(|(key, len, fill)| Op::Begin { key, len, fill }),
        3 => any::<u8>().prop_map(|w| Op::Complete { w }),
        1 => any::<u8>().prop_map(|w| Op::Abort { w }),
        5 => (0..KEYS, any::<bool>(), any::<bool>()).prop_map(|(key, hold, lease)| Op::Get { key, hold, lease }),
        2 => any::<u8>().prop_map(|r| Op::DropRead { r }),
        2 => (0..KEYS).prop_map(|key| Op::Remove { key }),
        1 => Just(Op::RemoveAll),
        3 => (1u16..2500).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn key(k: u8) -> String {
    format!("k{k}")
}

fn bytes(len: u16, fill: u8) -> Vec<u8> {
    (0..len as usize).map(|i| fill.wrapping_add((i * 7) as u8)).collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum MStatus {
    Mounted,
    Graceful(Instant),
    /// UNMOUNTING, or removed once no read is in flight.
    Dead,
}

struct MSeg {
    id: Uuid,
    shm: bool,
    status: MStatus,
}

struct MWrite {
    key: String,
    data: Vec<u8>,
    handle: WriteHandle,
    aborted: bool,
}

struct Model {
    h: Harness,
    values: BTreeMap<String, Vec<u8>>,
    leases: BTreeMap<String, Instant>,
    segs: Vec<MSeg>,
    writes: Vec<MWrite>,
    reads: Vec<(ValueRead, Vec<u8>)>,
    revokes: u64,
    evicted_seen: u64,
    shm_next: u64,
}

impl Model {
    fn new() -> Self {
        let config = Config {
            mount_alignment: PAGE,
            max_registration_size: 2 * PAGE,
            lease_ttl: LEASE,
            eviction_high_watermark_ratio: 0.7,
            eviction_ratio: 0.3,
            // Charges are checked after every step (`check_inner`); the one tenant's policy
            // asks for more than any capacity, so admission never refuses.
            multi_tenants: true,
            ..super::tests::config()
        };
        let h = Harness::with_platform(config, FakePlatform::new(42));
        h.store.set_tenant_quota(super::DEFAULT_TENANT, i64::MAX as u64).expect("multi-tenant");
        h.platform.add_shm("shm", 4 << 20);
        Self {
            h,
            values: BTreeMap::new(),
            leases: BTreeMap::new(),
            segs: Vec::new(),
            writes: Vec::new(),
            reads: Vec::new(),
            revokes: 0,
            evicted_seen: 0,
            shm_next: 0,
        }
    }

    fn now(&self) -> Instant {
        self.h.now
    }

    fn leased(&self, k: &str) -> bool {
        self.leases.get(k).is_some_and(|&t| self.now() < t)
    }

    fn writing(&self, k: &str) -> bool {
        self.writes.iter().any(|w| w.key == k && !w.aborted)
    }

    /// Keys whose current value lives on segment `id`.
    fn keys_on(&self, id: Uuid) -> Vec<String> {
        let Some(seg) = self.h.store.segments().into_iter().find(|s| s.id == id) else {
            return Vec::new();
        };
        self.values
            .keys()
            .filter(|k| {
                self.h.store.query_key(k).is_ok_and(|r| {
                    r.iter().any(|r| r.address >= seg.base_address && r.address < seg.base_address + seg.size)
                })
            })
            .cloned()
            .collect()
    }

    /// Segment `id` goes UNMOUNTING: its keys are dropped and its writes aborted.
    fn kill(&mut self, id: Uuid, keys: &[String]) {
        for k in keys {
            self.values.remove(k);
            self.leases.remove(k);
        }
        for w in &mut self.writes {
            if w.handle.segment_id() == id && !w.aborted {
                w.aborted = true;
                self.revokes += 1;
            }
        }
        for s in &mut self.segs {
            if s.id == id {
                s.status = MStatus::Dead;
            }
        }
    }

    fn mount(&mut self, out: MountOutcome, shm: bool) {
        for id in out.segment_ids {
            self.segs.push(MSeg { id, shm, status: MStatus::Mounted });
        }
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now();
        // Keys evictable during the op (eviction may only take those, or the op's own key).
        let end = match *op {
            Op::Advance { ms } => now + Duration::from_millis(ms as u64),
            _ => now,
        };
        let mut evictable = self.evictable(end);
        let mut own_key: Option<String> = None;
        match *op {
            Op::MountAnon { pages } => {
                let out = self
                    .h
                    .store
                    .mount_anonymous(now, MountKind::Anonymous, pages as u64 * PAGE - 100, Protocol::Tcp, "")
                    .unwrap();
                assert_eq!(out.allocated_size, pages as u64 * PAGE);
                self.mount(out, false);
            }
            Op::MountShm { pages } => {
                let size = pages as u64 * PAGE;
                let out = self.h.store.mount_shm(now, "shm", self.shm_next, size, Protocol::Rdma, "").unwrap();
                self.shm_next += size;
                self.mount(out, true);
            }
            Op::Unmount { seg, grace_ms, shm_family } => {
                if self.segs.is_empty() {
                    return;
                }
                let i = seg as usize % self.segs.len();
                let (id, shm, status) = (self.segs[i].id, self.segs[i].shm, self.segs[i].status);
                let record = status != MStatus::Dead || self.reads.iter().any(|(r, _)| r.seg == id);
                let expect = record && shm == shm_family;
                let grace = Duration::from_millis(grace_ms as u64);
                let deadline = match status {
                    MStatus::Graceful(d) => d.min(now + grace),
                    _ => now + grace,
                };
                let doomed =
                    if expect && status != MStatus::Dead && deadline <= now { self.keys_on(id) } else { vec![] };
                let family = if shm_family { UnmountFamily::Shm } else { UnmountFamily::Anonymous };
                let got = self.h.store.unmount(now, family, &[id], grace)[0];
                assert_eq!(got, expect, "unmount of {status:?} (shm {shm}) by shm family {shm_family}");
                if expect && status != MStatus::Dead {
                    if deadline <= now {
                        self.kill(id, &doomed);
                    } else {
                        self.segs[i].status = MStatus::Graceful(deadline);
                    }
                }
            }
            Op::Put { key: k, len, fill } => {
                let (k, data) = (key(k), bytes(len, fill));
                match self.h.store.put(now, &k, &data) {
                    Ok(()) => {
                        self.values.insert(k.clone(), data);
                        self.leases.remove(&k);
                    }
                    // Only space can refuse a write here: the tenant's quota is unlimited.
                    Err(e) => assert_eq!(e, PutError::InsufficientStorage, "put {k}"),
                }
                own_key = Some(k);
            }
            Op::Begin { key: k, len, fill } => {
                let (k, data) = (key(k), bytes(len, fill));
                match self.h.store.begin_write(now, &k, data.len() as u64) {
                    Ok(handle) => {
                        let seg = handle.segment_id();
                        assert!(self.segs.iter().any(|s| s.id == seg && s.status == MStatus::Mounted));
                        self.writes.push(MWrite { key: k, data, handle, aborted: false });
                    }
                    Err(e) => assert_eq!(e, PutError::InsufficientStorage, "begin_write {k}"),
                }
            }
            Op::Complete { w } => {
                if self.writes.is_empty() {
                    return;
                }
                let mut w = self.writes.remove(w as usize % self.writes.len());
                let (a, b) = w.data.split_at(w.data.len() / 2);
                let r1 = w.handle.write(a);
                let r2 = w.handle.write(b);
                let r3 = w.handle.complete(now);
                if w.aborted {
                    assert_eq!((r1, r2, r3), (Err(WriteAborted), Err(WriteAborted), Err(WriteAborted)));
                } else {
                    assert_eq!((r1, r2, r3), (Ok(()), Ok(()), Ok(w.data.len() as u64)));
                    self.values.insert(w.key.clone(), w.data);
                    self.leases.remove(&w.key);
                    own_key = Some(w.key);
                }
            }
            Op::Abort { w } => {
                if self.writes.is_empty() {
                    return;
                }
                let w = self.writes.remove(w as usize % self.writes.len());
                if !w.aborted {
                    self.revokes += 1;
                }
            }
            Op::Get { key: k, hold, lease } => {
                let k = key(k);
                let got = self.h.store.get(now, &k, lease);
                assert_eq!(got.as_ref().map(|r| r.bytes()), self.values.get(&k).map(|v| &v[..]), "get {k}");
                if let Some(r) = got {
                    if lease {
                        let until = now + LEASE;
                        let e = self.leases.entry(k).or_insert(until);
                        *e = (*e).max(until);
                    }
                    if hold {
                        let data = r.bytes().to_vec();
                        self.reads.push((r, data));
                    }
                }
            }
            Op::DropRead { r } => {
                if !self.reads.is_empty() {
                    let (read, data) = self.reads.remove(r as usize % self.reads.len());
                    assert_eq!(read.bytes(), &data[..]);
                }
            }
            Op::Remove { key: k } => {
                let k = key(k);
                let expect = if !self.values.contains_key(&k) && !self.writing(&k) {
                    Err(RemoveError::NotFound)
                } else if self.values.contains_key(&k) && self.leased(&k) {
                    Err(RemoveError::Leased)
                } else if self.writing(&k) {
                    Err(RemoveError::BeingWritten)
                } else {
                    Ok(())
                };
                assert_eq!(self.h.store.remove(now, &k), expect, "remove {k}");
                if expect.is_ok() {
                    self.values.remove(&k);
                    self.leases.remove(&k);
                }
            }
            Op::RemoveAll => {
                let doomed: Vec<String> =
                    self.values.keys().filter(|k| !self.leased(k) && !self.writing(k)).cloned().collect();
                assert_eq!(self.h.store.remove_all(now), doomed.len() as u64);
                for k in doomed {
                    self.values.remove(&k);
                    self.leases.remove(&k);
                }
            }
            Op::Advance { ms } => {
                let to = now + Duration::from_millis(ms as u64);
                let mut due: Vec<(Instant, Uuid)> = self
                    .segs
                    .iter()
                    .filter_map(|s| match s.status {
                        MStatus::Graceful(d) if d <= to => Some((d, s.id)),
                        _ => None,
                    })
                    .collect();
                due.sort();
                let doomed: Vec<(Uuid, Vec<String>)> = due.iter().map(|&(_, id)| (id, self.keys_on(id))).collect();
                self.h.advance_to(to);
                for (id, keys) in doomed {
                    self.kill(id, &keys);
                }
            }
        }
        // Writes aborted by the op (unmounts) make their keys evictable too.
        evictable.extend(self.evictable(end));
        self.reconcile_evictions(&evictable, own_key);
    }

    /// Keys with no lease left at `at` and no write in progress.
    fn evictable(&self, at: Instant) -> BTreeSet<String> {
        self.values
            .keys()
            .filter(|k| self.leases.get(*k).is_none_or(|&t| t <= at) && !self.writing(k))
            .cloned()
            .collect()
    }

    /// Keys the model has but the store lost must have been evicted.
    fn reconcile_evictions(&mut self, evictable: &BTreeSet<String>, own_key: Option<String>) {
        let c = self.h.store.counters();
        let delta = c.evicted_keys - self.evicted_seen;
        self.evicted_seen = c.evicted_keys;
        let gone: Vec<String> = self.values.keys().filter(|k| !self.h.store.exists(k)).cloned().collect();
        for k in &gone {
            assert!(evictable.contains(k) || own_key.as_ref() == Some(k), "{k} vanished but was not evictable");
            self.values.remove(k);
            self.leases.remove(k);
        }
        let n = gone.len() as u64;
        // The op's own key may have lost its old value to eviction and got a new one.
        assert!(n <= delta && delta <= n + u64::from(own_key.is_some()), "evicted {delta}, vanished {n}");
        assert!(c.successful_evictions <= c.attempted_evictions);
        assert_eq!(c.put_revokes, self.revokes);
    }

    fn check(&self) {
        let store = &self.h.store;
        // Listing and reads agree with the model.
        let mut listed = Vec::new();
        store.list_keys("", None, usize::MAX, &mut listed);
        assert_eq!(listed, self.values.keys().cloned().collect::<Vec<_>>());
        for (k, v) in &self.values {
            let r = store.get(self.now(), k, false).expect("listed key readable");
            assert_eq!(r.bytes(), &v[..]);
            assert!(store.exists(k));
        }
        for (r, data) in &self.reads {
            assert_eq!(r.bytes(), &data[..], "a read in flight was overwritten");
        }
        // Segments agree with the model.
        let infos = store.segments();
        for s in &self.segs {
            let info = infos.iter().find(|i| i.id == s.id);
            match s.status {
                MStatus::Mounted => {
                    assert_eq!(info.map(|i| i.status), Some(SegmentStatus::Mounted))
                }
                MStatus::Graceful(_) => {
                    assert_eq!(info.map(|i| i.status), Some(SegmentStatus::GracefullyUnmounting))
                }
                MStatus::Dead => {
                    let reading = self.reads.iter().any(|(r, _)| r.seg == s.id);
                    assert_eq!(info.map(|i| (i.status, i.used)), reading.then_some((SegmentStatus::Unmounting, 0)));
                }
            }
        }
        assert_eq!(infos.len(), self.segs.iter().filter(|s| infos.iter().any(|i| i.id == s.id)).count());
        // Gauges agree with the segments and objects.
        let g = store.gauges();
        let mut records: BTreeSet<&str> = self.values.keys().map(String::as_str).collect();
        records.extend(self.writes.iter().filter(|w| !w.aborted).map(|w| w.key.as_str()));
        assert_eq!(g.key_count, records.len() as u64);
        assert_eq!(g.allocated_bytes, infos.iter().map(|i| i.used).sum::<u64>());
        let live = infos.iter().filter(|i| i.status != SegmentStatus::Unmounting);
        assert_eq!(g.total_capacity_bytes, live.clone().map(|i| i.size).sum::<u64>());
        assert_eq!(g.segments_total, infos.len() as u64);
        assert_eq!(g.segments_mounted, infos.iter().filter(|i| i.status == SegmentStatus::Mounted).count() as u64);
        assert_eq!(g.nodes.len(), usize::from(live.count() > 0));
        assert!(infos.iter().all(|i| i.used <= i.size));
        check_inner(&store.inner.read().unwrap());
    }
}

/// Structural invariants of the metadata.
pub(super) fn check_inner(inner: &Inner) {
    // Every value's replicas are on segments that list it; ranges tile with the free ranges.
    let mut per_seg: BTreeMap<Uuid, Vec<(u64, u64)>> = BTreeMap::new();
    for (vid, v) in &inner.values {
        assert!(v.len > 0);
        for loc in &v.replicas {
            let seg = inner.segments.get(&loc.seg).expect("replica on a known segment");
            assert!(seg.values.contains_key(vid));
            assert!(seg.is_live(), "no replica on an UNMOUNTING segment");
            per_seg.entry(loc.seg).or_default().push((loc.off, v.len));
        }
        match v.state {
            ValueState::Complete => {
                assert_eq!(inner.objects.get(&v.key).and_then(|o| o.current), Some(*vid));
                assert_eq!(inner.current.get(&v.key), Some(vid), "point index misses {}", v.key);
            }
            ValueState::Writing { visible } => {
                let listed = inner.objects.get(&v.key).is_some_and(|o| o.writes.contains(vid));
                assert_eq!(listed, visible);
            }
            ValueState::Retired => {
                let leased = v.pending_at.is_some();
                let read = v.shared.reads.load(std::sync::atomic::Ordering::SeqCst) > 0;
                assert!(leased || read || v.replicas.is_empty(), "a releasable value was kept");
            }
        }
        if let Some(at) = v.pending_at {
            assert!(inner.pending.contains(&(at, *vid)));
        }
    }
    assert!(inner.pending.iter().all(|(at, vid)| inner.values.get(vid).is_some_and(|v| v.pending_at == Some(*at))));
    for (key, obj) in &inner.objects {
        assert!(obj.current.is_some() || !obj.writes.is_empty(), "empty object {key}");
    }
    // The point index holds exactly the objects' current values.
    assert_eq!(inner.current.len(), inner.objects.values().filter(|o| o.current.is_some()).count());
    for (key, vid) in &inner.current {
        assert_eq!(inner.objects.get(key).and_then(|o| o.current), Some(*vid), "stale index entry {key}");
    }
    for (id, seg) in &inner.segments {
        match &seg.state {
            SegState::Unmounting => assert!(seg.values.is_empty()),
            SegState::Mounted { .. } | SegState::GracefullyUnmounting { .. } => {
                let alloc = seg.allocator().unwrap();
                let mut ranges = per_seg.remove(id).unwrap_or_default();
                assert_eq!(alloc.used(), ranges.iter().map(|r| r.1).sum::<u64>());
                assert_eq!(seg.values.len(), ranges.len());
                ranges.extend(alloc.free_ranges());
                ranges.sort();
                let mut pos = 0;
                for (off, len) in ranges {
                    assert_eq!(off, pos, "overlap or leak in segment {id}");
                    pos += len;
                }
                assert_eq!(pos, seg.size);
            }
        }
    }
    assert!(per_seg.is_empty());
    // Each tenant is charged exactly its records' length × replicas.
    if let Some(t) = &inner.tenants {
        let mut sums: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (_, v) in &inner.values {
            let e = sums.entry(super::tenant::split_key(&v.key).0).or_default();
            e.0 += v.len * v.replicas.len() as u64;
            e.1 += 1;
        }
        assert_eq!(t.usage_table(), sums.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Vec<_>>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_shrink_iters: 4000,
        // Keep the crate tree clean; failures print their minimal input.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        let mut m = Model::new();
        for op in &ops {
            m.apply(op);
            m.check();
        }
        // Wind down: every handle and read goes; nothing may leak.
        m.writes.clear();
        m.reads.clear();
        let ids: Vec<Uuid> = m.segs.iter().map(|s| s.id).collect();
        let now = m.now();
        m.h.store.unmount(now, UnmountFamily::Anonymous, &ids, Duration::ZERO);
        m.h.store.unmount(now, UnmountFamily::Shm, &ids, Duration::ZERO);
        prop_assert!(m.h.store.segments().is_empty());
        let inner = m.h.store.inner.read().unwrap();
        prop_assert!(inner.values.is_empty() && inner.objects.is_empty() && inner.pending.is_empty());
    }
}

#[test]
fn model_smoke() {
    let mut m = Model::new();
    let ops = [
        Op::MountAnon { pages: 2 },
        Op::Put { key: 0, len: 100, fill: 1 },
        Op::Get { key: 0, hold: true, lease: true },
        Op::Put { key: 0, len: 200, fill: 2 },
        Op::Begin { key: 1, len: 50, fill: 3 },
        Op::Unmount { seg: 0, grace_ms: 0, shm_family: false },
        Op::Complete { w: 0 },
        Op::Advance { ms: 1500 },
        Op::DropRead { r: 0 },
    ];
    for op in &ops {
        m.apply(op);
        m.check();
    }
    let _ = Arc::clone(&m.h.store);
}
