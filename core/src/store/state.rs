//! The metadata behind the store's lock: nodes, segments, objects, values, deadlines and
//! counters. Times are nanoseconds since the store's epoch (the `now` given to
//! `Store::new`).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use uuid::Uuid;

use super::alloc::Allocator;
use super::ids::{IdHasher, NodeId, ValueId};
use super::object::{Object, Value};
use super::segment::{Liveness, Mapping, Node, SegShared, SegState, Segment, EMBEDDED};
use super::shard::ShardedMap;
use super::types::{Gauges, MountKind, NodeGauge, RangeRefused, SegmentInfo, StoreCounters, UnmountFamily};
use crate::config::Protocol;

/// The knobs the metadata needs.
#[derive(Clone, Copy, Debug)]
pub(super) struct Params {
    /// `--eviction-high-watermark-ratio`.
    pub(super) high_watermark: f64,
    /// `--eviction-ratio`.
    pub(super) eviction_ratio: f64,
    /// `--client-ttl` in ns (remote nodes are suspected, or expire when the suspicion TTL
    /// is 0, this long after their last heartbeat).
    pub(super) client_ttl: u64,
    /// `--client-suspicion-ttl` in ns: how long a suspected node keeps its resources.
    pub(super) suspicion_ttl: u64,
    /// `--default-kv-soft-pin-ttl` and `--max-kv-soft-pin-ttl` in ns.
    pub(super) soft_pin_default: u64,
    pub(super) soft_pin_max: u64,
    /// `--allow-evict-soft-pinned-objects`.
    pub(super) evict_soft_pinned: bool,
    /// `--allocation-strategy`.
    pub(super) strategy: crate::config::AllocationStrategy,
    /// `Config::cluster`: placement and visibility across nodes.
    pub(super) cluster: bool,
}

/// Period of the eviction check while above the watermark (SPEC §8.6).
pub(super) const EVICTION_PERIOD_NS: u64 = 10_000_000;

/// Everything behind `Store::inner`.
pub(super) struct Inner {
    pub(super) params: Params,
    pub(super) nodes: Vec<Node>,
    /// Remote nodes by client id.
    pub(super) clients: HashMap<Uuid, NodeId>,
    /// Next replica id (process-wide, from 1, as upstream).
    pub(super) next_replica: u64,
    pub(super) segments: BTreeMap<Uuid, Segment>,
    /// Objects in key order (listings, prefix scans); the source of truth for objects.
    pub(super) objects: BTreeMap<Arc<str>, Object>,
    /// Point-lookup index: key → its current (complete) value; exactly the keys whose
    /// object has `current`. Kept in step by `Inner::complete` (the only way into
    /// `Complete`) and `Inner::retire` (the only way out). A B-tree search costs ~20 string
    /// compares through pointers at 10k keys; this is one SipHash and one probe. SipHash
    /// with a random key (std's default), because keys come from clients.
    pub(super) current: ShardedMap<Arc<str>, ValueId, RandomState>,
    /// Value records by id, sharded (see `shard`): no single resize moves them all.
    pub(super) values: ShardedMap<ValueId, Box<Value>, BuildHasherDefault<IdHasher>>,
    /// Retired values waiting for their lease to expire: (lease deadline, value).
    pub(super) pending: BTreeSet<(u64, ValueId)>,
    /// Next periodic eviction check, while armed.
    pub(super) evict_at: Option<u64>,
    pub(super) counters: StoreCounters,
    pub(super) next_value: ValueId,
    /// State of the xorshift generator of `--allocation-strategy random` (never 0).
    pub(super) rng: u64,
    /// KV events waiting for the publisher (`--enable-kv-events`), if on.
    pub(super) kv: Option<crate::kv_events::KvQueue>,
    /// Drain jobs, once one was created.
    pub(super) drains: Option<super::drain::Drains>,
    pub(super) next_seq: u64,
    /// Latest `now` seen by a mutation (for mutations that have no clock: drops).
    pub(super) last_now: u64,
    /// Mappings of removed segments, dropped after the lock is released.
    pub(super) garbage: Vec<Arc<Mapping>>,
    /// The segments of this process changed (`Store::local_buffers`): tell the observer
    /// after the lock.
    pub(super) buffers_changed: bool,
    /// Names of remote nodes that expired, for the metadata cleanup after the lock.
    pub(super) expired_names: Vec<String>,
    /// No alive client expires before this (ns); None: none is alive. See `next_deadline`.
    pub(super) expiry_hint: Option<u64>,
    /// No grace period ends before this (ns); None: none is running.
    pub(super) grace_hint: Option<u64>,
    /// The replication journal of a highly available master (`journal.rs`); None without HA.
    pub(super) ha: Option<super::journal::HaLog>,
    /// Tenants' usage and quotas (`--enable-multi-tenants`); None in single-tenant mode.
    pub(super) tenants: Option<super::tenant::Tenants>,
}

/// A new segment to register.
pub(super) struct NewSegment {
    pub(super) id: Uuid,
    pub(super) map_off: u64,
    pub(super) size: u64,
}

impl Inner {
    pub(super) fn new(params: Params, node_name: String, client_id: Uuid) -> Self {
        Self {
            params,
            nodes: vec![Node {
                name: node_name,
                client_id,
                liveness: Liveness::Active,
                last_seen: None,
                remounted: true,
                restored: false,
            }],
            clients: HashMap::new(),
            next_replica: 1,
            segments: BTreeMap::new(),
            objects: BTreeMap::new(),
            current: ShardedMap::default(),
            values: ShardedMap::default(),
            buffers_changed: false,
            pending: BTreeSet::new(),
            evict_at: None,
            counters: StoreCounters::default(),
            next_value: ValueId(1),
            rng: client_id.as_u64_pair().0 | 1,
            kv: None,
            drains: None,
            next_seq: 1,
            last_now: 0,
            garbage: Vec::new(),
            expired_names: Vec::new(),
            expiry_hint: None,
            grace_hint: None,
            ha: None,
            tenants: None,
        }
    }

    /// Records `now` (monotonic: never goes back).
    pub(super) fn tick(&mut self, now: u64) -> u64 {
        self.last_now = self.last_now.max(now);
        now
    }

    /// The live segment of this process that holds `[addr, addr + len)` entirely.
    pub(super) fn local_segment_at(&self, addr: u64, len: u64) -> Result<&Segment, RangeRefused> {
        let end = addr.checked_add(len).filter(|_| len > 0).ok_or(RangeRefused::NoSegment)?;
        self.segments
            .values()
            .find(|s| {
                s.mapping.is_some() && s.is_live() && s.base_address() <= addr && end <= s.base_address() + s.size
            })
            .ok_or(RangeRefused::NoSegment)
    }

    /// The live segment of this process, allocation and offset that hold
    /// `[addr, addr + len)` entirely (addresses as advertised).
    pub(super) fn range_value(&self, addr: u64, len: u64) -> Result<(&Segment, ValueId, u64), RangeRefused> {
        let end = addr.checked_add(len).filter(|_| len > 0).ok_or(RangeRefused::NoSegment)?;
        let seg = self
            .segments
            .values()
            .find(|s| {
                s.mapping.is_some() && s.is_live() && s.base_address() <= addr && end <= s.base_address() + s.size
            })
            .ok_or(RangeRefused::NoSegment)?;
        let off = addr - seg.base_address();
        let (start, vid) = seg.alloc_at(off).ok_or(RangeRefused::NotInValue)?;
        let v = self.values.get(&vid).ok_or(RangeRefused::NotInValue)?;
        if off + len > start + v.len {
            return Err(RangeRefused::NotInValue);
        }
        Ok((seg, vid, off))
    }

    /// Registers the chunks of one mapping as MOUNTED segments of the embedded node.
    pub(super) fn add_segments(
        &mut self,
        mapping: &Arc<Mapping>,
        chunks: Vec<NewSegment>,
        kind: MountKind,
        protocol: Protocol,
        location: &str,
    ) {
        for c in chunks {
            let seg = Segment {
                id: c.id,
                node: EMBEDDED,
                kind,
                protocol,
                location: location.to_string(),
                mapping: Some(mapping.clone()),
                map_off: c.map_off,
                te_endpoint: None,
                size: c.size,
                state: SegState::Mounted { alloc: Allocator::new(c.size) },
                withheld: false,
                drain: super::segment::SegDrain::None,
                shared: Arc::new(SegShared::default()),
                values: Default::default(),
                allocs: Default::default(),
            };
            self.segments.insert(c.id, seg);
            self.buffers_changed = true;
        }
    }

    /// Unmount request of the embedded node (SPEC §5.2, §5.4, §7).
    pub(super) fn unmount(&mut self, now: u64, family: UnmountFamily, ids: &[Uuid], grace: u64) -> Vec<bool> {
        let deadline = now.saturating_add(grace);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(seg) = self.segments.get(id) else {
                out.push(false);
                continue;
            };
            if seg.node != EMBEDDED || !seg.accepts(family) {
                out.push(false);
                continue;
            }
            out.push(true);
            // UNMOUNTING already: nothing to do; otherwise start or shorten the grace period.
            self.start_grace(now, *id, deadline);
        }
        out
    }

    /// Starts or shortens the grace period of segment `id` to end at `deadline` (nothing
    /// when it is UNMOUNTING already); one that ends at once (`deadline <= now`) unmounts now.
    pub(super) fn start_grace(&mut self, now: u64, id: Uuid, deadline: u64) {
        let Some(seg) = self.segments.get_mut(&id) else {
            return;
        };
        if !seg.set_grace(deadline) {
            return;
        }
        let d = seg.deadline();
        self.ha_segment(id);
        if let Some(d) = d {
            self.grace_hint = Some(self.grace_hint.map_or(d, |h| h.min(d)));
        }
        if d.is_some_and(|d| d <= now) {
            self.begin_unmounting(now, id);
        }
    }

    /// The earliest grace deadline of any segment (a scan: see `grace_hint`).
    fn next_grace(&self) -> Option<u64> {
        self.segments.values().filter_map(Segment::deadline).min()
    }

    /// Any state → UNMOUNTING: replicas dropped, writes aborted, the record removed at once
    /// if no read is in flight (SPEC §7).
    pub(super) fn begin_unmounting(&mut self, now: u64, id: Uuid) {
        let Some(seg) = self.segments.get_mut(&id) else {
            return;
        };
        if matches!(seg.state, SegState::Unmounting) {
            return;
        }
        let ended = seg.deadline();
        seg.state = SegState::Unmounting;
        self.ha_segment(id);
        let seg = self.segments.get_mut(&id).expect("present");
        self.buffers_changed |= seg.mapping.is_some();
        // In id (write) order, as before the set was hashed.
        seg.allocs.clear();
        let mut values: Vec<ValueId> = std::mem::take(&mut seg.values).keys().copied().collect();
        values.sort_unstable();
        if ended.is_some() && ended == self.grace_hint {
            // The earliest grace period ended early: the next one (one scan, only then).
            self.grace_hint = self.next_grace();
        }
        log::debug!("segment {id} unmounting: {} values dropped", values.len());
        for vid in values {
            self.drop_replica(now, id, vid);
        }
        self.segment_read_ended(id, true);
    }

    /// Removes an UNMOUNTING segment's record if no read is in flight on it. `publish`:
    /// the segment just became UNMOUNTING (set the flag readers check on drop).
    pub(super) fn segment_read_ended(&mut self, id: Uuid, publish: bool) {
        let Some(seg) = self.segments.get(&id) else {
            return;
        };
        if !matches!(seg.state, SegState::Unmounting) {
            return;
        }
        if publish {
            // Pairs with the `fetch_sub` in `ValueRead::drop` (SeqCst on both sides).
            seg.shared.unmounting.store(true, Ordering::SeqCst);
        }
        if seg.shared.reads.load(Ordering::SeqCst) == 0 {
            let seg = self.segments.remove(&id).expect("present");
            log::debug!("segment {id} removed");
            self.garbage.extend(seg.mapping);
        }
    }

    /// Runs every transition due at `now`: grace deadlines, lease expiries of retired
    /// values, the periodic eviction check.
    pub(super) fn handle_timeout(&mut self, now: u64) {
        // The hints are lower bounds: scan only when one is due, then take the true next one.
        if self.expiry_hint.is_some_and(|t| t <= now) {
            if self.next_client_expiry().is_some_and(|t| t <= now) {
                self.expire_clients(now);
            }
            self.expiry_hint = self.next_client_expiry();
        }
        if self.grace_hint.is_some_and(|t| t <= now) {
            let due: Vec<Uuid> =
                self.segments.values().filter(|s| s.deadline().is_some_and(|d| d <= now)).map(|s| s.id).collect();
            for id in due {
                self.begin_unmounting(now, id);
            }
            self.grace_hint = self.next_grace();
        }
        while let Some(&(at, vid)) = self.pending.first() {
            if at > now {
                break;
            }
            self.mark_ready(vid);
            // `mark_ready` removes the entry; make sure a stale one cannot loop.
            self.pending.remove(&(at, vid));
        }
        if self.evict_at.is_some_and(|t| t <= now) {
            self.periodic_eviction(now);
        } else {
            self.arm_eviction(now);
        }
    }

    /// Earliest deadline (ns), if any.
    /// O(1): the grace and client-expiry parts are the hints, lower bounds kept up to date
    /// by the mutations that can bring them closer (a scan of every segment and node here,
    /// on every event-loop turn of every worker, was a third of the master's CPU with 5k
    /// clients). A hint that fires early finds nothing due and is replaced by the true time.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        let lease = self.pending.first().map(|&(at, _)| at);
        [self.grace_hint, lease, self.evict_at, self.expiry_hint].into_iter().flatten().min()
    }

    /// (allocated, capacity): used bytes over all segments, size of the live ones.
    pub(super) fn totals(&self) -> (u64, u64) {
        self.segments.values().fold((0, 0), |(a, c), s| (a + s.used(), c + if s.is_live() { s.size } else { 0 }))
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    pub(super) fn node_name(&self, id: NodeId) -> &str {
        &self.node(id).name
    }

    /// Every segment record, sorted by node name then id string.
    pub(super) fn segment_infos(&self) -> Vec<SegmentInfo> {
        let mut out: Vec<SegmentInfo> = self
            .segments
            .values()
            .map(|s| {
                let node = self.node(s.node);
                SegmentInfo {
                    name: node.name.clone(),
                    te_endpoint: self.endpoint(s).to_string(),
                    id: s.id,
                    client_id: node.client_id,
                    base_address: s.base_address(),
                    size: s.size,
                    protocol: s.protocol,
                    status: s.status(),
                    used: s.used(),
                    grace_deadline_ns: s.deadline(),
                    drain: match s.drain {
                        super::segment::SegDrain::Draining(_) => Some("DRAINING"),
                        super::segment::SegDrain::Drained => Some("DRAINED"),
                        super::segment::SegDrain::None => None,
                    },
                }
            })
            .collect();
        // Uuid order is the order of its lower-case hex string.
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        out
    }

    pub(super) fn mounted_node_names(&self) -> Vec<String> {
        let names: BTreeSet<&str> =
            self.segments.values().filter(|s| s.is_mounted()).map(|s| self.node_name(s.node)).collect();
        names.into_iter().map(str::to_string).collect()
    }

    pub(super) fn query_segment(&self, name: &str) -> Option<(u64, u64)> {
        self.segments.values().filter(|s| s.is_mounted() && self.node_name(s.node) == name).fold(None, |acc, s| {
            let (u, c) = acc.unwrap_or((0, 0));
            Some((u + s.used(), c + s.size))
        })
    }

    pub(super) fn gauges(&self) -> Gauges {
        let (allocated_bytes, total_capacity_bytes) = self.totals();
        let mut per_node: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let mut g = Gauges {
            key_count: self.objects.len() as u64,
            allocated_bytes,
            total_capacity_bytes,
            active_clients: self.nodes.iter().filter(|n| n.alive()).count() as u64,
            suspected_clients: self.nodes.iter().filter(|n| n.liveness == Liveness::Suspected).count() as u64,
            oldest_heartbeat_ns: self.nodes.iter().filter(|n| n.alive()).filter_map(|n| n.last_seen).min(),
            ..Gauges::default()
        };
        for s in self.segments.values() {
            g.segments_total += 1;
            match s.drain {
                super::segment::SegDrain::Draining(_) => g.segments_draining += 1,
                super::segment::SegDrain::Drained => g.segments_drained += 1,
                super::segment::SegDrain::None => {}
            }
            if s.is_mounted() {
                g.segments_mounted += 1;
            } else {
                g.segments_unmounting += 1;
            }
            if s.is_live() {
                let e = per_node.entry(self.node_name(s.node)).or_default();
                e.0 += s.used();
                e.1 += s.size;
            }
        }
        g.nodes_mounted = self.mounted_node_names().len() as u64;
        g.nodes = per_node
            .into_iter()
            .map(|(name, (allocated, capacity))| NodeGauge { name: name.to_string(), allocated, capacity })
            .collect();
        g
    }
}
