//! The replication journal of a highly available master (docs/ha.md): which objects and
//! segments changed since the last batch made durable, and how a standby applies them.
//!
//! The journal records *state*, not operations. A mutation marks the key (or segment id) it
//! changed as dirty and advances [`Journal::seq`]; a batch ([`crate::store::Store::ha_take`])
//! reads the current record of every dirty key under the same lock, so a key changed twice
//! between batches is written once, with its latest state, and the order in which batches
//! of different workers' changes commit cannot reorder one key's history. A record that is
//! gone (a removed key, an unmounted segment) becomes a delete.
//!
//! ```text
//!   leader:   mutation ─► mark dirty, seq += 1 ─► ha_take() ─► HaBatch { upto, ops } ─► etcd txn
//!             etcd commit ─► Journal::set_durable(upto) ─► replies held for seq ≤ upto are sent
//!   standby:  etcd watch ─► HaOp ─► ha_apply() (nothing recorded: recording is off)
//!   promote:  ha_promote(now): restored clients get a fresh TTL, recording on
//!   step down / resync: ha_clear(now): every remote segment dropped, recording off
//! ```
//!
//! Only remote segments (mounted by clients over the RPC) and the replicas on them are
//! replicated: the memory of the master's own segments is gone with its process. Tenant
//! quota policies (`--enable-multi-tenants`) are replicated too; tenants' charges are not:
//! a standby rebuilds them from the objects it restores.
//!
//! Restored segments belong to *restored* nodes: their replicas are hidden from readers
//! (`-703`, never a wrong answer) until the owning client mounts or remounts, which it does
//! on the new leader's first Ping (NEED_REMOUNT). Allocation in them is allowed at once:
//! the owner's memory is still there and it serves writes with its transfer engine.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use uuid::Uuid;

use super::ids::ValueId;
use super::object::{Loc, Pins, Value, ValueShared, ValueState};
use super::segment::SegState;
use super::state::Inner;
use super::types::{MountKind, RemoteSegment};

/// Counters shared by the store, the sessions that wait for durability and the committer.
#[derive(Default)]
pub struct Journal {
    /// Marks so far (every change of a replicated record adds one).
    seq: AtomicU64,
    /// Every mark up to this one is durable.
    durable: AtomicU64,
    /// Called when a change is marked while none was pending (wakes the committer).
    observer: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("seq", &self.seq()).field("durable", &self.durable()).finish()
    }
}

impl Journal {
    /// Marks so far.
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Marks known durable.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// A change was marked (tests of the sessions that wait for durability).
    #[cfg(test)]
    pub(crate) fn mark_for_test(&self) {
        self.seq.fetch_add(1, Ordering::AcqRel);
    }

    /// Everything up to `seq` is durable now (never moves back).
    pub fn set_durable(&self, seq: u64) {
        self.durable.fetch_max(seq, Ordering::AcqRel);
    }

    /// `f` is called (under the store's lock: keep it short) when a change is marked while
    /// none was pending.
    pub fn set_observer(&self, f: Arc<dyn Fn() + Send + Sync>) {
        *self.observer.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    fn notify(&self) {
        let f = self.observer.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(f) = f {
            f();
        }
    }
}

/// A segment as replicated: what a standby needs to mount it for its owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// The owning client.
    pub client: Uuid,
    /// The owner's node name.
    pub name: String,
    /// Base address in the owner's process.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// Protocol of the mount.
    pub protocol: String,
    /// Transfer-engine endpoint.
    pub te: String,
    /// Milliseconds left of its grace period when written (None: mounted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
}

/// A complete value as replicated: its length, checksum and replicas on remote segments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Value length.
    pub len: u64,
    /// The writer's checksum, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<u64>,
    /// (segment, offset inside it) of every replica.
    pub replicas: Vec<(Uuid, u64)>,
    /// Soft pin TTL in ms (absent: not soft-pinned); a restored value's pin starts afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_pin_ttl_ms: Option<u64>,
    /// Hard-pinned (never evicted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hard_pin: bool,
}

/// One replicated change: the record's new state, `None` when it is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HaOp {
    /// A segment's record.
    Segment(Uuid, Option<SegmentRecord>),
    /// An object's record.
    Object(String, Option<ObjectRecord>),
    /// A tenant's quota policy (requested bytes; `None`: deleted), `--enable-multi-tenants`.
    TenantPolicy(String, Option<u64>),
}

/// The changes of one batch; durable once every op is, which makes every mark up to `upto`
/// durable.
#[derive(Debug)]
pub struct HaBatch {
    /// [`Journal::seq`] when the batch was taken.
    pub upto: u64,
    /// Segment puts first, then objects, then segment deletes: a standby applying them in
    /// order never sees a replica on a segment it does not know yet.
    pub ops: Vec<HaOp>,
}

/// The dirty sets behind the store's lock.
pub(super) struct HaLog {
    /// Marks are recorded only while serving as leader.
    pub(super) recording: bool,
    keys: HashSet<Arc<str>>,
    segs: BTreeSet<Uuid>,
    /// Tenants whose quota policy changed.
    policies: BTreeSet<String>,
    pub(super) shared: Arc<Journal>,
}

impl HaLog {
    pub(super) fn new(shared: Arc<Journal>) -> Self {
        Self { recording: false, keys: HashSet::new(), segs: BTreeSet::new(), policies: BTreeSet::new(), shared }
    }

    fn bump(&mut self, was_empty: bool) {
        self.shared.seq.fetch_add(1, Ordering::AcqRel);
        if was_empty {
            self.shared.notify();
        }
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.segs.is_empty() && self.policies.is_empty()
    }
}

impl Inner {
    /// Marks `key` changed if `vid` (its value, current or just retired) has a replica on a
    /// remote segment.
    pub(super) fn ha_value(&mut self, vid: ValueId) {
        let Some(log) = self.ha.as_ref() else { return };
        if !log.recording {
            return;
        }
        let Some(v) = self.values.get(&vid) else { return };
        if !v.replicas.iter().any(|l| self.segments.get(&l.seg).is_some_and(|s| s.is_remote())) {
            return;
        }
        let key = v.key.clone();
        let log = self.ha.as_mut().expect("checked");
        let was_empty = log.is_empty();
        if log.keys.insert(key) {
            log.bump(was_empty);
        } else {
            log.shared.seq.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Marks the remote segment `id` changed.
    pub(super) fn ha_segment(&mut self, id: Uuid) {
        let remote = self.segments.get(&id).is_some_and(|s| s.is_remote());
        let Some(log) = self.ha.as_mut() else { return };
        if !log.recording || !remote {
            return;
        }
        let was_empty = log.is_empty();
        log.segs.insert(id);
        log.bump(was_empty);
    }

    /// Marks `tenant`'s quota policy changed.
    pub(super) fn ha_policy(&mut self, tenant: &str) {
        let Some(log) = self.ha.as_mut() else { return };
        if !log.recording {
            return;
        }
        let was_empty = log.is_empty();
        log.policies.insert(tenant.to_string());
        log.bump(was_empty);
    }

    /// The replicated record of segment `id` at `now` (None: gone or not replicated).
    fn segment_record(&self, now: u64, id: Uuid) -> Option<SegmentRecord> {
        let s = self.segments.get(&id).filter(|s| s.kind == MountKind::Remote)?;
        let grace_ms = match s.state {
            SegState::Mounted { .. } => None,
            SegState::GracefullyUnmounting { deadline, .. } => Some(deadline.saturating_sub(now) / 1_000_000),
            SegState::Unmounting => return None,
        };
        let node = &self.nodes[s.node.0];
        Some(SegmentRecord {
            client: node.client_id,
            name: node.name.clone(),
            base: s.map_off,
            size: s.size,
            protocol: s.protocol.as_str().to_string(),
            te: self.endpoint(s).to_string(),
            grace_ms,
        })
    }

    /// The replicated record of `key` (None: no complete value with a remote replica).
    fn object_record(&self, key: &str) -> Option<ObjectRecord> {
        let (_, v) = self.current(key)?;
        let replicas: Vec<(Uuid, u64)> = v
            .replicas
            .iter()
            .filter(|l| self.segments.get(&l.seg).is_some_and(|s| s.is_remote() && s.is_live()))
            .map(|l| (l.seg, l.off))
            .collect();
        let soft_pin_ttl_ms = (v.pins.soft_ttl > 0).then_some(v.pins.soft_ttl.div_ceil(1_000_000));
        (!replicas.is_empty()).then_some(ObjectRecord {
            len: v.len,
            checksum: v.checksum,
            replicas,
            soft_pin_ttl_ms,
            hard_pin: v.pins.hard,
        })
    }

    /// Takes every pending change as a batch.
    pub(super) fn ha_take(&mut self, now: u64) -> Option<HaBatch> {
        let log = self.ha.as_mut()?;
        if log.is_empty() {
            return None;
        }
        let upto = log.shared.seq();
        let keys = std::mem::take(&mut log.keys);
        let segs = std::mem::take(&mut log.segs);
        let policies = std::mem::take(&mut log.policies);
        let mut ops = Vec::with_capacity(keys.len() + segs.len() + policies.len());
        let mut deletes = Vec::new();
        for tenant in policies {
            let rec = self.tenants.as_ref().and_then(|t| t.policy(&tenant));
            ops.push(HaOp::TenantPolicy(tenant, rec));
        }
        for id in segs {
            match self.segment_record(now, id) {
                Some(r) => ops.push(HaOp::Segment(id, Some(r))),
                None => deletes.push(HaOp::Segment(id, None)),
            }
        }
        for key in keys {
            let rec = self.object_record(&key);
            ops.push(HaOp::Object(key.to_string(), rec));
        }
        ops.extend(deletes);
        Some(HaBatch { upto, ops })
    }

    /// Applies one replicated change on a standby.
    pub(super) fn ha_apply(&mut self, now: u64, lease_ttl: u64, op: HaOp) {
        match op {
            HaOp::Segment(id, Some(r)) => {
                if self.segments.contains_key(&id) {
                    if let Some(ms) = r.grace_ms {
                        self.start_grace(now, id, now.saturating_add(ms.saturating_mul(1_000_000)));
                    }
                    return;
                }
                let seg = RemoteSegment {
                    id,
                    name: r.name.clone(),
                    base: r.base,
                    size: r.size,
                    te_endpoint: r.te.clone(),
                    protocol: r.protocol.clone(),
                };
                match self.mount_remote(now, r.client, &seg) {
                    Ok(_) => {
                        if let Some(&node) = self.clients.get(&r.client) {
                            self.nodes[node.0].restored = true;
                        }
                        if let Some(ms) = r.grace_ms {
                            self.start_grace(now, id, now.saturating_add(ms.saturating_mul(1_000_000)));
                        }
                    }
                    Err(e) => log::warn!("replicated segment {id} not applied: {e}"),
                }
            }
            HaOp::Segment(id, None) => self.begin_unmounting(now, id),
            // A standby without --enable-multi-tenants has no quotas to keep.
            HaOp::TenantPolicy(tenant, rec) => {
                if let Some(t) = self.tenants.as_mut() {
                    t.restore_policy(&tenant, rec);
                }
            }
            HaOp::Object(key, rec) => {
                if let Some(obj) = self.objects.get(key.as_str()) {
                    if rec.is_some() && rec == self.object_record(&key) {
                        return;
                    }
                    let current = obj.current;
                    if obj.writes.is_empty() {
                        self.objects.remove(key.as_str());
                    } else if let Some(o) = self.objects.get_mut(key.as_str()) {
                        o.current = None;
                    }
                    if let Some(vid) = current {
                        self.retire(vid, now, true);
                    }
                }
                if let Some(rec) = rec {
                    self.restore_object(now, lease_ttl, key, rec);
                }
            }
        }
    }

    /// Inserts a complete value at the replicated places (skipping ranges that are not free).
    fn restore_object(&mut self, now: u64, lease_ttl: u64, key: String, rec: ObjectRecord) {
        if rec.len == 0 {
            return;
        }
        let vid = self.next_value.take_next();
        let mut replicas: SmallVec<[Loc; 1]> = SmallVec::new();
        for (seg, off) in rec.replicas {
            let Some(s) = self.segments.get_mut(&seg) else {
                log::warn!("replica of {key:?} on unknown segment {seg}: skipped");
                continue;
            };
            if !s.mounted_or_draining_reserve(off, rec.len) {
                log::warn!("replica of {key:?} at {off} of segment {seg} overlaps another: skipped");
                continue;
            }
            s.add_value(vid, off);
            replicas.push(Loc { seg, off, rid: self.next_replica });
            self.next_replica += 1;
        }
        if replicas.is_empty() {
            return;
        }
        let key: Arc<str> = Arc::from(key.as_str());
        let shared = Arc::new(ValueShared::default());
        // A restored value starts with a lease: a reader of the former leader may still be
        // reading its bytes.
        shared.lease.store(now.saturating_add(lease_ttl), Ordering::Relaxed);
        let pins = Pins { soft_ttl: rec.soft_pin_ttl_ms.unwrap_or(0).saturating_mul(1_000_000), hard: rec.hard_pin };
        if pins.soft_ttl > 0 {
            shared.soft_pin.store(now.saturating_add(pins.soft_ttl), Ordering::Relaxed);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.insert_value(
            vid,
            Box::new(Value {
                key: key.clone(),
                len: rec.len,
                replicas,
                state: ValueState::Complete,
                seq,
                pending_at: None,
                shared,
                writer: None,
                started: now,
                checksum: rec.checksum,
                pins,
            }),
        );
        self.current.insert(key.clone(), vid);
        self.objects.entry(key).or_default().current = Some(vid);
    }

    /// Leader from now: restored clients get a fresh TTL from `now`; changes are recorded.
    pub(super) fn ha_promote(&mut self, now: u64) {
        let mut any = false;
        for n in self.nodes.iter_mut().filter(|n| n.restored && n.alive()) {
            n.last_seen = Some(now);
            any = true;
        }
        if any {
            self.note_seen(now);
        }
        if let Some(log) = self.ha.as_mut() {
            log.recording = true;
        }
        self.arm_eviction(now);
    }

    /// Back to an empty replica (step down, or a standby that must reload): every remote
    /// segment and its values dropped, remote nodes forgotten, nothing recorded.
    pub(super) fn ha_clear(&mut self, now: u64) {
        if let Some(log) = self.ha.as_mut() {
            log.recording = false;
            log.keys.clear();
            log.segs.clear();
            log.policies.clear();
        }
        // Reloaded from the replicated state with the rest.
        if let Some(t) = self.tenants.as_mut() {
            t.clear_policies();
        }
        let remote: Vec<Uuid> = self.segments.values().filter(|s| s.is_remote()).map(|s| s.id).collect();
        for id in remote {
            self.begin_unmounting(now, id);
        }
        for n in self.nodes.iter_mut().skip(1) {
            n.liveness = super::segment::Liveness::Offline;
            n.remounted = false;
            n.restored = false;
        }
        self.expiry_hint = None;
    }

    /// A client proved it is alive with its memory (mount, remount): its replicas show.
    pub(super) fn confirm_client(&mut self, client: Uuid) {
        if let Some(&id) = self.clients.get(&client) {
            self.nodes[id.0].restored = false;
        }
    }

    /// Is the node of segment `seg` a restored one whose owner has not come back yet?
    pub(super) fn hidden_segment(&self, seg: Uuid) -> bool {
        self.segments.get(&seg).is_some_and(|s| self.nodes[s.node.0].restored)
    }
}

impl super::Store {
    /// Turns the replication journal on (a highly available master, before serving); the
    /// store starts as a standby replica: nothing is recorded until [`Self::ha_promote`].
    pub fn enable_journal(&self) -> Arc<Journal> {
        let mut inner = self.write();
        if let Some(log) = inner.ha.as_ref() {
            return log.shared.clone();
        }
        let shared = Arc::new(Journal::default());
        inner.ha = Some(HaLog::new(shared.clone()));
        shared
    }

    /// The journal, if [`Self::enable_journal`] was called.
    pub fn journal(&self) -> Option<Arc<Journal>> {
        self.read().ha.as_ref().map(|l| l.shared.clone())
    }

    /// Every change marked since the last batch, with the records as they are now.
    pub fn ha_take(&self, now: std::time::Instant) -> Option<HaBatch> {
        let now = self.ns(now);
        self.with_write(|inner| inner.ha_take(now))
    }

    /// A standby applies replicated changes, in order.
    pub fn ha_apply(&self, now: std::time::Instant, ops: impl IntoIterator<Item = HaOp>) {
        let now = self.ns(now);
        let ttl = self.lease_ttl_ns;
        self.with_write_at(now, |inner, now| {
            for op in ops {
                inner.ha_apply(now, ttl, op);
            }
        });
    }

    /// This process became the leader: restored clients' TTLs start now, changes are recorded.
    pub fn ha_promote(&self, now: std::time::Instant) {
        let now = self.ns(now);
        self.with_write_at(now, |inner, now| inner.ha_promote(now));
    }

    /// Drops every replicated segment and value and stops recording (a leader stepping down
    /// reloads from etcd as a standby; see docs/ha.md).
    pub fn ha_clear(&self, now: std::time::Instant) {
        let now = self.ns(now);
        self.with_write_at(now, |inner, now| inner.ha_clear(now));
    }

    /// Remote segments and complete values with a remote replica (a standby's catch-up check).
    pub fn ha_counts(&self) -> (usize, usize) {
        let inner = self.read();
        let segs = inner.segments.values().filter(|s| s.is_remote() && s.is_live()).count();
        let objs = inner.objects.keys().filter(|k| inner.object_record(k).is_some()).count();
        (segs, objs)
    }
}
