//! (c) An arbitrary sequence of store operations (mount, unmount with grace, put, replace,
//! begin_write / partial writes / complete / abort, get holding or dropping reads, remove,
//! remove_all, time advances) replayed on `mc_core::store::Store`, with invariants checked
//! after every step through the public API:
//!
//! - every listed key is readable, `exists`, and holds exactly the bytes last written to it;
//!   a key that stopped being listed stays gone until written again;
//! - a read in flight keeps its bytes whatever happens meanwhile;
//! - remove answers `Leased` for a key read with a lease less than the TTL ago, `NotFound` for
//!   a key with no value and no write in progress;
//! - per segment used ≤ size (0 when UNMOUNTING); the gauges agree with the segment list;
//! - replicas lie inside a live segment;
//! - after dropping every handle and unmounting everything, nothing is left.
//!
//! Input: a sequence of operations, each an opcode byte followed by its parameter bytes
//! (read with `arbitrary::Unstructured`; missing bytes read as zero).
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use mc_core::platform::FakePlatform;
use mc_core::store::{MountKind, QueryError, RemoveError, SegmentStatus, Store, UnmountFamily, ValueRead, WriteHandle};
use mc_core::{Config, Protocol};
use uuid::Uuid;

const PAGE: u64 = 4096;
const KEYS: u8 = 6;
const LEASE: Duration = Duration::from_secs(1);
const MAX_OPS: usize = 200;

struct Write {
    key: String,
    data: Vec<u8>,
    handle: WriteHandle,
}

struct Harness {
    store: Arc<Store>,
    now: Instant,
    /// Bytes of the current complete value of every key believed present.
    values: BTreeMap<String, Vec<u8>>,
    /// Lease deadline of the current value, per key.
    leases: BTreeMap<String, Instant>,
    writes: Vec<Write>,
    reads: Vec<(ValueRead, Vec<u8>)>,
    /// Every segment ever mounted, with whether it is a shm segment.
    segs: Vec<(Uuid, bool)>,
    shm_next: u64,
}

fn key(k: u8) -> String {
    format!("k{}", k % KEYS)
}

fn bytes(len: usize, fill: u8) -> Vec<u8> {
    (0..len).map(|i| fill.wrapping_add((i * 7) as u8)).collect()
}

fn u8_(u: &mut Unstructured<'_>) -> u8 {
    u.arbitrary::<u8>().unwrap_or(0)
}

fn u16_(u: &mut Unstructured<'_>) -> u16 {
    u.arbitrary::<u16>().unwrap_or(0)
}

impl Harness {
    fn new() -> Self {
        let config = Config {
            mount_alignment: PAGE,
            max_registration_size: 8 * PAGE,
            lease_ttl: LEASE,
            eviction_high_watermark_ratio: 0.7,
            eviction_ratio: 0.3,
            ..Config::default()
        };
        let platform = Arc::new(FakePlatform::new(42));
        platform.add_shm("shm", 4 << 20);
        let now = mc_fuzz::base();
        let store = Arc::new(Store::new(&config, platform, now));
        Self {
            store,
            now,
            values: BTreeMap::new(),
            leases: BTreeMap::new(),
            writes: Vec::new(),
            reads: Vec::new(),
            segs: Vec::new(),
            shm_next: 0,
        }
    }

    fn live_write(&self, k: &str) -> bool {
        self.writes.iter().any(|w| w.key == k)
    }

    fn step(&mut self, u: &mut Unstructured<'_>) {
        let now = self.now;
        match u8_(u) % 14 {
            0 => {
                let pages = u64::from(u8_(u) % 16) + 1;
                let size = (pages * PAGE).saturating_sub(u64::from(u8_(u)));
                let out = self.store.mount_anonymous(now, MountKind::Anonymous, size.max(1), Protocol::Tcp, "");
                let out = out.expect("a small anonymous mount succeeds");
                assert_eq!(out.allocated_size, pages * PAGE);
                self.note_mount(&out.segment_ids, false);
            }
            1 => {
                let size = (u64::from(u8_(u) % 16) + 1) * PAGE;
                let off = self.shm_next;
                match self.store.mount_shm(now, "shm", off, size, Protocol::Rdma, "") {
                    Ok(out) => {
                        assert_eq!(out.allocated_size, size);
                        self.shm_next += size;
                        self.note_mount(&out.segment_ids, true);
                    }
                    Err(_) => assert!(off + size > 4 << 20, "shm mount inside the object failed"),
                }
            }
            2 => {
                let (i, grace_ms, fam) = (u8_(u), u16_(u), u8_(u));
                if self.segs.is_empty() {
                    return;
                }
                let (id, shm) = self.segs[usize::from(i) % self.segs.len()];
                let grace = if grace_ms % 3 == 0 { Duration::ZERO } else { Duration::from_millis(u64::from(grace_ms)) };
                let family = if fam % 2 == 0 { UnmountFamily::Anonymous } else { UnmountFamily::Shm };
                let before = self.store.segments().into_iter().find(|s| s.id == id);
                let ok = self.store.unmount(now, family, &[id], grace)[0];
                let right_family = shm == (family == UnmountFamily::Shm);
                assert_eq!(ok, before.is_some() && right_family, "unmount of {before:?} by {family:?}");
            }
            3 => {
                let (k, len, fill) = (key(u8_(u)), usize::from(u16_(u) % 40000) + 1, u8_(u));
                let data = bytes(len, fill);
                if self.store.put(now, &k, &data).is_ok() {
                    self.values.insert(k.clone(), data);
                    self.leases.remove(&k);
                }
            }
            4 => {
                let (k, len, fill) = (key(u8_(u)), usize::from(u16_(u) % 20000) + 1, u8_(u));
                let data = bytes(len, fill);
                if let Ok(handle) = self.store.begin_write(now, &k, len as u64) {
                    assert_eq!(handle.len(), len as u64);
                    let seg = handle.segment_id();
                    let info = self.store.segments().into_iter().find(|s| s.id == seg);
                    assert_eq!(
                        info.map(|s| s.status),
                        Some(SegmentStatus::Mounted),
                        "write placed off a MOUNTED segment"
                    );
                    self.writes.push(Write { key: k, data, handle });
                }
            }
            5 => {
                // A partial write.
                let (i, n) = (u8_(u), usize::from(u16_(u)));
                if self.writes.is_empty() {
                    return;
                }
                let idx = usize::from(i) % self.writes.len();
                let w = &mut self.writes[idx];
                let at = w.handle.written() as usize;
                let end = (at + n).min(w.data.len());
                if w.handle.write(&w.data[at..end]).is_ok() {
                    assert_eq!(w.handle.written() as usize, end);
                }
            }
            6 => {
                let i = u8_(u);
                if self.writes.is_empty() {
                    return;
                }
                let mut w = self.writes.remove(usize::from(i) % self.writes.len());
                let at = w.handle.written() as usize;
                let wrote = w.handle.write(&w.data[at..]);
                // An aborted write (its segment was unmounted) fails; the key keeps its state.
                if let Ok(n) = w.handle.complete(now) {
                    assert!(wrote.is_ok());
                    assert_eq!(n, w.data.len() as u64);
                    self.leases.remove(&w.key);
                    self.values.insert(w.key, w.data);
                }
            }
            7 => {
                let i = u8_(u);
                if !self.writes.is_empty() {
                    let w = self.writes.remove(usize::from(i) % self.writes.len());
                    drop(w.handle); // aborts
                }
            }
            8 => {
                let (k, flags) = (key(u8_(u)), u8_(u));
                let (hold, lease) = (flags & 1 == 1, flags & 2 == 2);
                let got = self.store.get(now, &k, lease);
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
            9 => {
                let i = u8_(u);
                if !self.reads.is_empty() {
                    let (r, data) = self.reads.remove(usize::from(i) % self.reads.len());
                    assert_eq!(r.bytes(), &data[..]);
                }
            }
            10 => {
                let k = key(u8_(u));
                let present = self.values.contains_key(&k);
                let leased = present && self.leases.get(&k).is_some_and(|&t| now < t);
                let r = self.store.remove(now, &k);
                if leased {
                    assert_eq!(r, Err(RemoveError::Leased), "remove of a leased key");
                } else if !present && !self.live_write(&k) {
                    assert_eq!(r, Err(RemoveError::NotFound), "remove of an absent key");
                }
                if r.is_ok() {
                    assert!(present, "removed a key that had no value");
                    self.values.remove(&k);
                    self.leases.remove(&k);
                }
            }
            11 => {
                let n = self.store.remove_all(now);
                assert!(n as usize <= self.values.len());
                let gone: Vec<String> = self.values.keys().filter(|k| !self.store.exists(k)).cloned().collect();
                for k in &gone {
                    assert!(self.leases.get(k).is_none_or(|&t| t <= now), "remove_all took leased {k}");
                }
            }
            12 => {
                self.now += Duration::from_millis(u64::from(u16_(u) % 5000));
                self.store.handle_timeout(self.now);
                let next = self.store.poll_timeout();
                assert!(next.is_none_or(|d| d > self.now), "a transition due now was left: {next:?}");
            }
            _ => {
                // Replace: put a different value on an existing key.
                let (k, fill) = (key(u8_(u)), u8_(u));
                if let Some(old) = self.values.get(&k) {
                    let data = bytes(old.len() % 3000 + 1, fill);
                    if self.store.put(now, &k, &data).is_ok() {
                        self.values.insert(k.clone(), data);
                        self.leases.remove(&k);
                    }
                }
            }
        }
    }

    /// Keeps every id ever mounted (removed ones too: unmounting them must fail).
    fn note_mount(&mut self, ids: &[Uuid], shm: bool) {
        self.segs.extend(ids.iter().map(|&id| (id, shm)));
    }

    fn check(&mut self) {
        let store = &self.store;
        let now = self.now;
        let mut listed = Vec::new();
        store.list_keys("", None, usize::MAX, &mut listed);
        let listed_set: BTreeSet<&String> = listed.iter().collect();
        assert_eq!(listed.len(), listed_set.len(), "duplicate keys listed");
        assert!(listed.windows(2).all(|w| w[0] < w[1]), "listing not sorted");
        let infos = store.segments();
        for k in &listed {
            let want = self.values.get(k).unwrap_or_else(|| panic!("listed key {k} was never written (or removed)"));
            let r = store.get(now, k, false).expect("listed key readable");
            assert_eq!(r.bytes(), &want[..], "bytes of {k}");
            assert!(store.exists(k));
            let replicas = store.query_key(k).expect("listed key has replicas");
            assert!(!replicas.is_empty());
            for rep in replicas {
                assert_eq!(rep.size, want.len() as u64);
                assert!(
                    infos.iter().any(|s| s.status != SegmentStatus::Unmounting
                        && rep.address >= s.base_address
                        && rep.address + rep.size <= s.base_address + s.size),
                    "replica of {k} outside every live segment"
                );
            }
        }
        // Keys that vanished (evicted, dropped by an unmount) are gone for good.
        let vanished: Vec<String> = self.values.keys().filter(|k| !listed_set.contains(k)).cloned().collect();
        for k in vanished {
            assert!(!store.exists(&k));
            assert!(store.get(now, &k, false).is_none());
            match store.query_key(&k) {
                Err(QueryError::NotFound) => {}
                Err(QueryError::NotReady) => assert!(self.live_write(&k), "{k} not ready without a write"),
                Ok(r) => panic!("{k} not listed but has replicas {r:?}"),
            }
            self.values.remove(&k);
            self.leases.remove(&k);
        }
        for (r, data) in &self.reads {
            assert_eq!(r.bytes(), &data[..], "a read in flight changed");
        }
        let g = store.gauges();
        assert!(infos.iter().all(|s| s.used <= s.size), "{infos:?}");
        assert!(infos.iter().filter(|s| s.status == SegmentStatus::Unmounting).all(|s| s.used == 0));
        assert_eq!(g.allocated_bytes, infos.iter().map(|s| s.used).sum::<u64>());
        let live = infos.iter().filter(|s| s.status != SegmentStatus::Unmounting);
        assert_eq!(g.total_capacity_bytes, live.clone().map(|s| s.size).sum::<u64>());
        assert!(g.allocated_bytes <= g.total_capacity_bytes);
        assert_eq!(g.segments_total, infos.len() as u64);
        assert_eq!(g.segments_mounted, infos.iter().filter(|s| s.status == SegmentStatus::Mounted).count() as u64);
        assert_eq!(g.segments_unmounting, infos.iter().filter(|s| s.status != SegmentStatus::Mounted).count() as u64);
        let mut records: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
        assert!(g.key_count >= records.len() as u64, "key_count {} < listed {}", g.key_count, records.len());
        records.extend(self.writes.iter().map(|w| w.key.as_str()));
        assert!(g.key_count <= records.len() as u64, "key_count {} counts phantom keys", g.key_count);
        assert_eq!(g.nodes.len(), usize::from(live.count() > 0));
    }

    fn wind_down(mut self) {
        self.writes.clear();
        self.reads.clear();
        let ids: Vec<_> = self.store.segments().iter().map(|s| s.id).collect();
        self.store.unmount(self.now, UnmountFamily::Anonymous, &ids, Duration::ZERO);
        self.store.unmount(self.now, UnmountFamily::Shm, &ids, Duration::ZERO);
        self.now += Duration::from_secs(3600);
        self.store.handle_timeout(self.now);
        assert!(self.store.segments().is_empty(), "segments left: {:?}", self.store.segments());
        let g = self.store.gauges();
        assert_eq!((g.key_count, g.allocated_bytes, g.total_capacity_bytes), (0, 0, 0), "{g:?}");
        assert_eq!(self.store.poll_timeout(), None, "a deadline is left with nothing to do");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut h = Harness::new();
    let mut n = 0;
    while !u.is_empty() && n < MAX_OPS {
        h.step(&mut u);
        h.check();
        n += 1;
    }
    h.wind_down();
});
