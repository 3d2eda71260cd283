//! Remote store nodes: upstream clients that register over the master RPC protocol
//! (`reference/rpc/rpc-spec.md`, SPEC §8.7).
//!
//! A remote node is identified by its client id. It mounts segments of its own memory: the
//! master records only the base address and size and hands out ranges; the client moves the
//! bytes with its transfer engine. Objects written over RPC get their replicas on remote
//! segments only, and objects written over REST on this process's segments only, so a writer
//! always reaches the memory it is told to write (`Placement`).
//!
//! ```text
//!   MountSegment ──► node registered (Active, last_seen = now; Ping answers NEED_REMOUNT
//!                    until ReMountSegment, as upstream)
//!   Ping / mount ──► last_seen = now
//!
//!   Liveness (upstream PR #2991; suspicion TTL 0 = straight from Active to Offline):
//!
//!            last_seen + client_ttl                last_seen + client_ttl + suspicion_ttl
//!   Active ───────────────────────────► Suspected ───────────────────────────────► Offline
//!     ▲                                     │  segments withheld: replicas not handed to
//!     └──── Ping, mount or remount ◄────────┘  readers (-703), no new allocations; writes
//!           of the client                      in progress and metadata kept
//!
//!   Offline (expired): active clients −1, its segments UNMOUNTING (replicas dropped
//!                    regardless of leases), its writes in progress aborted, its metadata
//!                    entries deleted. A later mount registers it as a new Active node.
//!   PutStart ──► Writing (visible: the key reports a write in progress) ──PutEnd──► Complete
//!                    └──PutRevoke / writer expired / segment unmounted──► aborted
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use uuid::Uuid;

use super::alloc::Allocator;
use super::ids::{NodeId, ValueId};
use super::object::{Loc, Pins, Value, ValueShared, ValueState};
use super::segment::{Liveness, Node, Placement, SegShared, SegState, Segment};
use super::state::Inner;
use super::types::*;
use super::Store;
use crate::config::{AllocationStrategy, Protocol};

/// A PutStart whose write is still in progress after this long may be discarded by a new
/// PutStart of the same key (upstream `--put_start_discard_timeout_sec`, 30 s).
const PUT_START_DISCARD_NS: u64 = 30_000_000_000;

impl Inner {
    /// The node of `client`, registered (or revived) at `now` with `name`.
    fn client_node(&mut self, now: u64, client: Uuid, name: &str) -> NodeId {
        if let Some(&id) = self.clients.get(&client) {
            let n = &mut self.nodes[id.0];
            if !n.alive() {
                n.liveness = Liveness::Active;
                n.remounted = false;
                n.name = name.to_string();
            }
            self.heard_from(now, id);
            self.note_seen(now);
            return id;
        }
        self.note_seen(now);
        self.nodes.push(Node {
            name: name.to_string(),
            client_id: client,
            liveness: Liveness::Active,
            last_seen: Some(now),
            remounted: false,
            restored: false,
        });
        let id = NodeId(self.nodes.len() - 1);
        self.clients.insert(client, id);
        id
    }

    /// The alive node of `client`, if any.
    fn alive_client(&self, client: Uuid) -> Option<NodeId> {
        self.clients.get(&client).copied().filter(|&id| self.nodes[id.0].alive())
    }

    /// `node` (alive) was heard from at `now`: its heartbeat moves, and a Suspected node is
    /// Active again, its segments no longer withheld.
    fn heard_from(&mut self, now: u64, node: NodeId) {
        let n = &mut self.nodes[node.0];
        n.last_seen = Some(now);
        if n.liveness == Liveness::Suspected {
            n.liveness = Liveness::Active;
            let (client, name) = (n.client_id, n.name.clone());
            self.withhold(node, false);
            self.counters.recovered_clients += 1;
            log::info!("client {client} ({name}) recovered: heard from again, its replicas are readable");
            // Its expiry is client_ttl from now, earlier than the Offline deadline it had.
            self.note_seen(now);
        }
    }

    /// Marks every segment of `node` withheld (Suspected) or not.
    fn withhold(&mut self, node: NodeId, on: bool) {
        for s in self.segments.values_mut().filter(|s| s.node == node) {
            s.withheld = on;
        }
    }

    /// `MountSegment`: returns whether a new segment was created (false: already mounted).
    pub(super) fn mount_remote(&mut self, now: u64, client: Uuid, seg: &RemoteSegment) -> Result<bool, ErrorCode> {
        if seg.base == 0 || seg.size == 0 || seg.id.is_nil() {
            return Err(ErrorCode::InvalidParams);
        }
        if let Some(existing) = self.segments.get(&seg.id) {
            let same = existing.is_remote()
                && existing.map_off == seg.base
                && existing.size == seg.size
                && self.clients.get(&client) == Some(&existing.node);
            if !same {
                return Err(ErrorCode::InvalidParams);
            }
            if !existing.is_mounted() {
                return Err(ErrorCode::UnavailableInCurrentStatus);
            }
            self.client_node(now, client, &seg.name);
            return Ok(false);
        }
        let node = self.client_node(now, client, &seg.name);
        let protocol = if seg.protocol.eq_ignore_ascii_case("rdma") { Protocol::Rdma } else { Protocol::Tcp };
        self.segments.insert(
            seg.id,
            Segment {
                id: seg.id,
                node,
                kind: MountKind::Remote,
                protocol,
                location: String::new(),
                mapping: None,
                map_off: seg.base,
                size: seg.size,
                te_endpoint: Some(seg.te_endpoint.clone()),
                state: SegState::Mounted { alloc: Allocator::new(seg.size) },
                withheld: false,
                drain: super::segment::SegDrain::None,
                shared: Arc::new(SegShared::default()),
                values: Default::default(),
                allocs: Default::default(),
            },
        );
        self.ha_segment(seg.id);
        Ok(true)
    }

    /// `ReMountSegment`: a no-op for a remounted client; otherwise mounts each segment
    /// (identical ones already mounted are fine) and marks the client remounted.
    /// Returns the number of segments created.
    pub(super) fn remount_remote(&mut self, now: u64, client: Uuid, segs: &[RemoteSegment]) -> Result<u64, ErrorCode> {
        if let Some(id) = self.alive_client(client) {
            if self.nodes[id.0].remounted {
                self.heard_from(now, id);
                return Ok(0);
            }
        }
        let mut created = 0;
        for s in segs {
            created += u64::from(self.mount_remote(now, client, s)?);
        }
        if let Some(id) = self.alive_client(client) {
            self.nodes[id.0].remounted = true;
            self.heard_from(now, id);
        }
        Ok(created)
    }

    /// `UnmountSegment` (immediate): unknown ids succeed (idempotent, as upstream).
    pub(super) fn unmount_remote(&mut self, now: u64, id: Uuid) -> Result<(), ErrorCode> {
        let Some(seg) = self.segments.get(&id) else {
            return Ok(());
        };
        if seg.kind != MountKind::Remote {
            return Err(ErrorCode::InvalidParams);
        }
        if matches!(seg.state, SegState::Unmounting) {
            return Err(ErrorCode::UnavailableInCurrentStatus);
        }
        self.begin_unmounting(now, id);
        Ok(())
    }

    /// `GracefulUnmountSegment`: the segment must belong to `client`.
    pub(super) fn graceful_unmount_remote(
        &mut self,
        now: u64,
        id: Uuid,
        client: Uuid,
        grace: u64,
    ) -> Result<(), ErrorCode> {
        let node = *self.clients.get(&client).ok_or(ErrorCode::SegmentNotFound)?;
        let seg = self.segments.get_mut(&id).filter(|s| s.node == node).ok_or(ErrorCode::InvalidParams)?;
        if matches!(seg.state, SegState::Unmounting) {
            return Err(ErrorCode::UnavailableInCurrentStatus);
        }
        self.start_grace(now, id, now.saturating_add(grace));
        Ok(())
    }

    /// `Ping`: refreshes a known client's heartbeat.
    pub(super) fn ping(&mut self, now: u64, client: Uuid) -> ClientStatus {
        match self.alive_client(client) {
            Some(id) => {
                self.heard_from(now, id);
                if self.nodes[id.0].remounted {
                    ClientStatus::Ok
                } else {
                    ClientStatus::NeedRemount
                }
            }
            None => ClientStatus::NeedRemount,
        }
    }

    /// A client registered or revived at `now` (`client_node`, the only way a node becomes
    /// alive): its expiry may be the next one. Later heartbeats only move expiries later.
    pub(super) fn note_seen(&mut self, now: u64) {
        let at = now.saturating_add(self.params.client_ttl);
        self.expiry_hint = Some(self.expiry_hint.map_or(at, |h| h.min(at)));
    }

    /// When `n`'s next liveness transition is due (None: the embedded node, or offline).
    fn liveness_deadline(&self, n: &Node) -> Option<u64> {
        let seen = n.last_seen?;
        let p = &self.params;
        match n.liveness {
            Liveness::Active => Some(seen.saturating_add(p.client_ttl)),
            Liveness::Suspected => Some(seen.saturating_add(p.client_ttl).saturating_add(p.suspicion_ttl)),
            Liveness::Offline => None,
        }
    }

    /// Earliest liveness transition of a remote node (a scan of every node: see
    /// `expiry_hint`).
    pub(super) fn next_client_expiry(&self) -> Option<u64> {
        self.nodes.iter().filter_map(|n| self.liveness_deadline(n)).min()
    }

    /// Runs the liveness transitions due at `now`: Active nodes silent for the TTL become
    /// Suspected (or Offline without a suspicion phase), Suspected ones silent for the
    /// suspicion TTL more go Offline (SPEC §8.7).
    pub(super) fn expire_clients(&mut self, now: u64) {
        let due: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&i| self.liveness_deadline(&self.nodes[i]).is_some_and(|t| t <= now))
            .map(NodeId)
            .collect();
        for node in due {
            let suspect = self.nodes[node.0].liveness == Liveness::Active && self.params.suspicion_ttl > 0;
            let n = &mut self.nodes[node.0];
            if suspect {
                n.liveness = Liveness::Suspected;
                let (client, name) = (n.client_id, n.name.clone());
                let silent = now.saturating_sub(n.last_seen.unwrap_or(now)) / 1_000_000;
                log::warn!(
                    "client {client} ({name}) suspected: no heartbeat for {silent} ms; its replicas are withheld \
                     and it goes offline in {} ms unless heard from",
                    self.params.suspicion_ttl / 1_000_000
                );
                self.withhold(node, true);
                self.counters.suspected_clients += 1;
                continue;
            }
            n.liveness = Liveness::Offline;
            n.remounted = false;
            let (client, name) = (n.client_id, n.name.clone());
            log::info!("client {client} ({name}) offline (expired): unmounting its segments");
            let segs: Vec<Uuid> = self.segments.values().filter(|s| s.node == node).map(|s| s.id).collect();
            for id in segs {
                self.begin_unmounting(now, id);
            }
            let writes: Vec<ValueId> = self
                .values
                .iter()
                .filter(|(_, v)| v.writer == Some(client) && matches!(v.state, ValueState::Writing { .. }))
                .map(|(&vid, _)| vid)
                .collect();
            for vid in writes {
                self.abort(vid, true);
            }
            self.expired_names.push(name);
            self.counters.expired_clients += 1;
        }
    }

    /// Replica placement of an RPC write: up to `cfg.replicas` ranges on distinct remote
    /// nodes, preferred names first; the first one may evict (SPEC §8.2, §8.6).
    fn place_remote(
        &mut self,
        now: u64,
        client: Uuid,
        len: u64,
        cfg: &WriteConfig,
    ) -> Result<Vec<(Uuid, u64)>, ErrorCode> {
        // With a data plane, RPC writers reach this process's segments too (its TE target).
        let place = if self.params.cluster { Placement::Any } else { Placement::Remote };
        let want = cfg.replicas.clamp(1, 64) as usize;
        let mut out: Vec<(Uuid, u64)> = Vec::with_capacity(want);
        let mut used: Vec<NodeId> = Vec::new();
        // Node names, for preferred segments only (cloning every name on every PutStart was a
        // per-write cost proportional to the number of clients).
        let names: Vec<String> =
            if cfg.preferred.is_empty() { Vec::new() } else { self.nodes.iter().map(|n| n.name.clone()).collect() };
        for name in &cfg.preferred {
            if out.len() == want {
                break;
            }
            let pick = |s: &Segment| names[s.node.0] == *name && !used.contains(&s.node);
            if let Some(spot) = self.try_place(len, place, &pick) {
                used.push(self.segments[&spot.0].node);
                out.push(spot);
            }
        }
        if out.is_empty() {
            // The first copy goes to the node `--allocation-strategy` picks among those that
            // can hold it (FREE_RATIO_FIRST by default: the largest free share of its memory,
            // spreading writers over the nodes), best fit within it; eviction only when no
            // node has room.
            let node = match self.params.strategy {
                AllocationStrategy::FreeRatioFirst => self.roomiest_node(len, place),
                AllocationStrategy::Random => self.random_node(len, place),
                AllocationStrategy::LocalFirst => {
                    self.local_node(client, &cfg.host_id, len, place).or_else(|| self.roomiest_node(len, place))
                }
            };
            if let Some(node) = node {
                if let Some(spot) = self.try_place(len, place, &|s: &Segment| s.node == node) {
                    used.push(node);
                    out.push(spot);
                }
            }
        }
        if out.is_empty() {
            let spot = self.allocate_space(now, len, place).map_err(|_| ErrorCode::NoAvailableHandle)?;
            used.push(self.segments[&spot.0].node);
            out.push(spot);
        }
        while out.len() < want {
            let pick = |s: &Segment| !used.contains(&s.node);
            let Some(spot) = self.try_place(len, place, &pick) else { break };
            used.push(self.segments[&spot.0].node);
            out.push(spot);
        }
        Ok(out)
    }

    /// The nodes with a mounted segment (that `place` admits) that could hold `len` bytes now,
    /// without repeats, in segment order.
    fn nodes_with_room(&self, len: u64, place: Placement) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::new();
        for s in self.segments.values().filter(|s| s.is_mounted() && place.admits(s)) {
            if !out.contains(&s.node) && s.allocator().and_then(|a| a.best_fit(len)).is_some() {
                out.push(s.node);
            }
        }
        out
    }

    /// A node with room picked at random (`--allocation-strategy random`).
    fn random_node(&mut self, len: u64, place: Placement) -> Option<NodeId> {
        let nodes = self.nodes_with_room(len, place);
        if nodes.is_empty() {
            return None;
        }
        // xorshift64: the core has no clock or entropy of its own; seeded from the store's
        // random client id.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        Some(nodes[(x % nodes.len() as u64) as usize])
    }

    /// `--allocation-strategy local_first`: the writer's own node if it has room, else a node
    /// with room on the writer's host (`host_id`, compared with the host part of node names).
    fn local_node(&self, client: Uuid, host_id: &str, len: u64, place: Placement) -> Option<NodeId> {
        let nodes = self.nodes_with_room(len, place);
        if let Some(&own) = self.clients.get(&client).filter(|id| nodes.contains(id)) {
            return Some(own);
        }
        if host_id.is_empty() {
            return None;
        }
        let host_of = |name: &str| name.rsplit_once(':').map_or(name, |(h, _)| h).to_string();
        nodes.into_iter().find(|n| host_of(&self.nodes[n.0].name) == host_of(host_id))
    }

    /// The node whose mounted segments (that `place` admits) have the largest free share of
    /// their size, among those with a segment that could hold `len` bytes now.
    fn roomiest_node(&self, len: u64, place: Placement) -> Option<NodeId> {
        let mut per: Vec<(NodeId, u64, u64, bool)> = Vec::new();
        // Each node's row by id: a linear search per segment made a PutStart cost
        // segments × nodes (72% of the master's CPU with 3k clients).
        let mut row: HashMap<NodeId, usize> = HashMap::new();
        for s in self.segments.values().filter(|s| s.is_mounted() && place.admits(s)) {
            let fits = s.allocator().and_then(|a| a.best_fit(len)).is_some();
            let used = s.allocator().map_or(s.size, |a| a.used());
            let i = *row.entry(s.node).or_insert_with(|| {
                per.push((s.node, 0, 0, false));
                per.len() - 1
            });
            let p = &mut per[i];
            p.1 += s.size;
            p.2 += used;
            p.3 |= fits;
        }
        // free/size compared without division: f1 * s2 > f2 * s1.
        per.into_iter()
            .filter(|p| p.3 && p.1 > 0)
            .max_by(|a, b| {
                let (fa, fb) = (u128::from(a.1 - a.2.min(a.1)), u128::from(b.1 - b.2.min(b.1)));
                (fa * u128::from(b.1)).cmp(&(fb * u128::from(a.1))).then(b.0 .0.cmp(&a.0 .0))
            })
            .map(|p| p.0)
    }

    /// The pins of a write with `cfg`; `previous`: those of the value an upsert replaces.
    fn pins_of(&self, cfg: &WriteConfig, previous: Option<Pins>) -> Pins {
        let p = &self.params;
        let soft_ttl = match cfg.soft_pin {
            SoftPin::Preserve => previous.map_or(0, |q| q.soft_ttl),
            SoftPin::Enable(ms) => {
                ms.map_or(p.soft_pin_default, |ms| ms.saturating_mul(1_000_000)).min(p.soft_pin_max).max(1)
            }
            SoftPin::Disable => 0,
        };
        Pins { soft_ttl, hard: cfg.hard_pin }
    }

    /// The descriptor of one replica of a value of `len` bytes.
    fn describe(&self, loc: &Loc, len: u64, complete: bool) -> Option<ReplicaDesc> {
        let seg = self.segments.get(&loc.seg)?;
        Some(ReplicaDesc {
            id: loc.rid,
            address: seg.base_address() + loc.off,
            size: len,
            endpoint: self.endpoint(seg).to_string(),
            complete,
        })
    }

    /// The transfer endpoint of a segment: its own for remote segments, else the node name.
    pub(super) fn endpoint<'a>(&'a self, seg: &'a Segment) -> &'a str {
        seg.te_endpoint.as_deref().unwrap_or_else(|| self.node_name(seg.node))
    }

    /// `PutStart` / `UpsertStart` (upstream §4.1).
    pub(super) fn put_start(
        &mut self,
        now: u64,
        client: Uuid,
        key: &str,
        len: u64,
        cfg: &WriteConfig,
        upsert: bool,
    ) -> PutStartResult {
        if key.is_empty() || len == 0 || cfg.replicas == 0 {
            return Err(ErrorCode::InvalidParams);
        }
        if let Some(obj) = self.objects.get(key) {
            if obj.current.is_some() && !upsert {
                return Err(ErrorCode::ObjectAlreadyExists);
            }
            let mut stale = Vec::new();
            for &w in &obj.writes {
                let v = &self.values[&w];
                if v.writer.is_some() && v.started.saturating_add(PUT_START_DISCARD_NS) <= now {
                    stale.push(w);
                } else if upsert {
                    return Err(ErrorCode::ObjectReplicaBusy);
                } else {
                    return Err(ErrorCode::ObjectAlreadyExists);
                }
            }
            for w in stale {
                log::debug!("discarding a stale write of {key}");
                self.abort(w, true);
            }
        }
        let previous = if upsert { self.current(key).map(|(_, v)| v.pins) } else { None };
        let pins = self.pins_of(cfg, previous);
        self.admit(now, key, len.saturating_mul(cfg.replicas)).map_err(|e| match e {
            PutError::TenantNotRegistered => ErrorCode::TenantNotRegistered,
            _ => ErrorCode::TenantQuotaExceeded,
        })?;
        let spots = self.place_remote(now, client, len, cfg)?;
        let vid = self.next_value.take_next();
        let mut replicas = SmallVec::with_capacity(spots.len());
        for (seg, off) in spots {
            replicas.push(Loc { seg, off, rid: self.next_replica });
            self.next_replica += 1;
            self.segments.get_mut(&seg).expect("placed on a known segment").add_value(vid, off);
        }
        let key: Arc<str> = match self.objects.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => Arc::from(key),
        };
        self.objects.entry(key.clone()).or_default().writes.push(vid);
        let descs = replicas.iter().filter_map(|l| self.describe(l, len, false)).collect();
        self.insert_value(
            vid,
            Box::new(Value {
                key,
                len,
                replicas,
                state: ValueState::Writing { visible: true },
                seq: 0,
                pending_at: None,
                shared: Arc::new(ValueShared::default()),
                writer: Some(client),
                started: now,
                checksum: None,
                pins,
            }),
        );
        Ok(descs)
    }

    /// A one-step REST put of `len` bytes of `key` on another node's segment (cluster mode,
    /// when this process has no room): allocated like any value (evicting there if needed),
    /// invisible until complete, written by this process's data plane.
    pub(super) fn begin_remote_put(&mut self, now: u64, key: &str, len: u64) -> Result<RemotePut, PutError> {
        self.admit(now, key, len)?;
        let (seg, off) = self.allocate_space(now, len, Placement::Remote)?;
        let vid = self.next_value.take_next();
        let loc = Loc { seg, off, rid: self.next_replica };
        self.next_replica += 1;
        self.segments.get_mut(&seg).expect("placed on a known segment").add_value(vid, off);
        let desc = self.describe(&loc, len, false).expect("a known segment");
        let key: Arc<str> = match self.objects.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => Arc::from(key),
        };
        self.insert_value(
            vid,
            Box::new(Value {
                key,
                len,
                replicas: SmallVec::from_elem(loc, 1),
                state: ValueState::Writing { visible: false },
                seq: 0,
                pending_at: None,
                shared: Arc::new(ValueShared::default()),
                writer: None,
                started: now,
                checksum: None,
                pins: Pins::default(),
            }),
        );
        Ok(RemotePut { id: vid.0, endpoint: desc.endpoint, address: desc.address })
    }

    /// The write of `key` by `client` in progress, or why there is none.
    fn client_write(&self, client: Uuid, key: &str) -> Result<Option<ValueId>, ErrorCode> {
        let obj = self.objects.get(key).ok_or(ErrorCode::ObjectNotFound)?;
        if let Some(&w) = obj.writes.iter().find(|w| self.values.get(w).is_some_and(|v| v.writer == Some(client))) {
            return Ok(Some(w));
        }
        if !obj.writes.is_empty() {
            return Err(ErrorCode::IllegalClient);
        }
        Ok(None)
    }

    /// `PutEnd`: returns the value length when a write completed (None for a repeated end).
    pub(super) fn put_end(
        &mut self,
        now: u64,
        client: Uuid,
        key: &str,
        checksum: Option<u64>,
    ) -> Result<Option<u64>, ErrorCode> {
        match self.client_write(client, key)? {
            Some(vid) => {
                let len = self.values[&vid].len;
                self.values.get_mut(&vid).expect("present").checksum = checksum;
                self.complete(now, vid).map_err(|_| ErrorCode::InvalidWrite)?;
                Ok(Some(len))
            }
            None => match self.current(key) {
                Some((_, v)) if v.writer == Some(client) => Ok(None),
                _ => Err(ErrorCode::InvalidWrite),
            },
        }
    }

    /// `PutRevoke`: aborts `client`'s write of `key`.
    pub(super) fn put_revoke(&mut self, client: Uuid, key: &str) -> Result<(), ErrorCode> {
        match self.client_write(client, key)? {
            Some(vid) => {
                self.abort(vid, true);
                Ok(())
            }
            None => Err(ErrorCode::InvalidWrite),
        }
    }

    /// The replicas of `key` an RPC reader can reach (those on remote segments).
    fn remote_replicas(&self, key: &str) -> Result<(ValueId, ReplicaList), ErrorCode> {
        // The hash index first: the B-tree search (about 20 key compares at 10M keys) is
        // needed only to tell "no such key" from "write in progress".
        let Some((vid, v)) = self.current(key) else {
            let obj = self.objects.get(key).ok_or(ErrorCode::ObjectNotFound)?;
            return Err(if obj.writes.is_empty() { ErrorCode::ObjectNotFound } else { ErrorCode::ReplicaNotReady });
        };
        let replicas: Vec<ReplicaDesc> = v
            .replicas
            .iter()
            .filter(|l| {
                self.segments.get(&l.seg).is_some_and(|s| (self.params.cluster || s.is_remote()) && s.is_readable())
                    && !self.hidden_segment(l.seg)
            })
            .filter_map(|l| self.describe(l, v.len, true))
            .collect();
        if replicas.is_empty() {
            let withheld = |l: &Loc| self.segments.get(&l.seg).is_some_and(|s| s.withheld && s.is_live());
            if v.replicas.iter().any(|l| self.hidden_segment(l.seg) || withheld(l)) {
                // Restored after a failover, its owner not remounted yet (docs/ha.md); or
                // its owner is Suspected (kept, not handed out until it is heard from).
                return Err(ErrorCode::ReplicaNotReady);
            }
            // Stored in this process's memory, which RPC readers cannot reach (no data plane).
            return Err(ErrorCode::ObjectNotFound);
        }
        Ok((vid, ReplicaList { replicas, checksum: v.checksum }))
    }
}

impl Store {
    /// Starts a one-step put of `value` onto another node's segment (cluster mode): where the
    /// data plane must write it before [`Store::finish_remote_put`]. `PutError` when no
    /// remote segment has room, even after eviction there.
    pub fn begin_remote_put(&self, now: Instant, key: &str, len: u64) -> Result<RemotePut, PutError> {
        let now = self.ns(now);
        self.with_write_at(now, |inner, now| {
            if !inner.params.cluster {
                return Err(PutError::InsufficientStorage);
            }
            inner.begin_remote_put(now, key, len)
        })
    }

    /// Whether a value of `len` bytes could be placed on another node's segment (cluster
    /// mode, a mounted remote segment at least that large), evicting there if needed.
    pub fn could_place_remote(&self, len: u64) -> bool {
        let inner = self.read();
        inner.params.cluster && inner.segments.values().any(|s| s.is_mounted() && s.is_remote() && s.size >= len)
    }

    /// The remote write of [`Store::begin_remote_put`] `id` was acknowledged (`written`):
    /// the value becomes current; or it failed: the allocation is freed.
    pub fn finish_remote_put(&self, now: Instant, id: u64, written: bool) -> Result<(), WriteAborted> {
        let vid = ValueId(id);
        self.rpc_write(now, |inner, now| {
            if written {
                let r = inner.complete(now, vid);
                if r.is_err() {
                    inner.abort(vid, false);
                }
                r
            } else {
                inner.abort(vid, false);
                Err(WriteAborted)
            }
        })
    }

    fn rpc_write<R>(&self, now: Instant, f: impl FnOnce(&mut Inner, u64) -> R) -> R {
        let now = self.ns(now);
        self.with_write_at(now, |inner, now| {
            let r = f(inner, now);
            inner.arm_eviction(now);
            r
        })
    }

    /// `MountSegment` of an RPC client. Returns whether a new segment was created.
    pub fn client_mount(&self, now: Instant, client: Uuid, seg: &RemoteSegment) -> Result<bool, ErrorCode> {
        self.rpc_write(now, |inner, now| {
            let r = inner.mount_remote(now, client, seg);
            if r.is_ok() {
                inner.confirm_client(client);
            }
            r
        })
    }

    /// `ReMountSegment`. Returns the number of segments created.
    pub fn client_remount(&self, now: Instant, client: Uuid, segs: &[RemoteSegment]) -> Result<u64, ErrorCode> {
        self.rpc_write(now, |inner, now| {
            let r = inner.remount_remote(now, client, segs);
            if r.is_ok() {
                inner.confirm_client(client);
            }
            r
        })
    }

    /// `UnmountSegment` (immediate; unknown ids succeed).
    pub fn client_unmount(&self, now: Instant, segment: Uuid) -> Result<(), ErrorCode> {
        self.rpc_write(now, |inner, now| inner.unmount_remote(now, segment))
    }

    /// `GracefulUnmountSegment`.
    pub fn client_graceful_unmount(
        &self,
        now: Instant,
        segment: Uuid,
        client: Uuid,
        grace: Duration,
    ) -> Result<(), ErrorCode> {
        let grace = u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX);
        self.rpc_write(now, |inner, now| inner.graceful_unmount_remote(now, segment, client, grace))
    }

    /// `Ping`.
    pub fn client_ping(&self, now: Instant, client: Uuid) -> ClientStatus {
        // A heartbeat changes no usage: no eviction check (which sums every segment), and a
        // later heartbeat can only move the client's expiry later (`Inner::expiry_hint`).
        let now = self.ns(now);
        self.with_write_at(now, |inner, now| inner.ping(now, client))
    }

    /// Status of a segment by id (`QuerySegmentStatusById`); `None` once removed.
    pub fn segment_status(&self, id: Uuid) -> Option<SegmentStatus> {
        self.read().segments.get(&id).map(|s| s.status())
    }

    /// Status of a segment of the node `name` (`QuerySegmentStatus`): MOUNTED if any is.
    pub fn segment_status_by_name(&self, name: &str) -> Option<SegmentStatus> {
        let inner = self.read();
        let mut found = None;
        for s in inner.segments.values().filter(|s| inner.node_name(s.node) == name) {
            if s.is_mounted() {
                return Some(SegmentStatus::Mounted);
            }
            found = Some(s.status());
        }
        found
    }

    /// `PutStart` / `UpsertStart` of an RPC client.
    pub fn client_put_start(
        &self,
        now: Instant,
        client: Uuid,
        key: &str,
        len: u64,
        cfg: &WriteConfig,
        upsert: bool,
    ) -> PutStartResult {
        self.rpc_write(now, |inner, now| inner.put_start(now, client, key, len, cfg, upsert))
    }

    /// `PutEnd`: Some(length) when the write completed now.
    pub fn client_put_end(
        &self,
        now: Instant,
        client: Uuid,
        key: &str,
        checksum: Option<u64>,
    ) -> Result<Option<u64>, ErrorCode> {
        self.rpc_write(now, |inner, now| inner.put_end(now, client, key, checksum))
    }

    /// `PutRevoke`.
    pub fn client_put_revoke(&self, now: Instant, client: Uuid, key: &str) -> Result<(), ErrorCode> {
        self.rpc_write(now, |inner, _| inner.put_revoke(client, key))
    }

    /// `GetReplicaList`: the replicas an RPC reader can reach; grants a lease (SPEC §8.4).
    pub fn client_get(&self, now: Instant, key: &str) -> Result<ReplicaList, ErrorCode> {
        let inner = self.read();
        let (vid, list) = inner.remote_replicas(key)?;
        if let Some(v) = inner.values.get(&vid) {
            v.touch(self.ns(now), self.lease_ttl_ns);
        }
        Ok(list)
    }

    /// `ExistKey`: true when an RPC reader would find a replica. Grants no lease.
    pub fn client_exists(&self, key: &str) -> bool {
        self.read().remote_replicas(key).is_ok()
    }

    /// Keys with a complete value that satisfy `pick`, ascending.
    pub fn keys_where(&self, pick: &dyn Fn(&str) -> bool) -> Vec<String> {
        let inner = self.read();
        inner.objects.iter().filter(|(k, o)| o.current.is_some() && pick(k)).map(|(k, _)| k.to_string()).collect()
    }

    /// `Remove(key, force)`.
    pub fn remove_forced(&self, now: Instant, key: &str, force: bool) -> Result<(), RemoveError> {
        self.rpc_write(now, |inner, now| inner.remove_key(now, key, force))
    }

    /// `RemoveAll(force)` and `RemoveByRegex(…, force)`: removes every object with a complete
    /// value, no write in progress and (unless `force`) no lease, whose key satisfies `pick`.
    pub fn remove_where(&self, now: Instant, force: bool, pick: &dyn Fn(&str) -> bool) -> u64 {
        self.remove_stepwise(now, force, pick)
    }

    /// The lease TTL granted by reads.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_nanos(self.lease_ttl_ns)
    }
}
