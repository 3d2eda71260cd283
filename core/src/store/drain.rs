//! Drain jobs (upstream-behavior §1.4.8): every replica on the source segments is copied to
//! target segments (named ones, or any eligible), at most `max_concurrency` at a time, while
//! the values stay readable (from the old place until the copy is committed) and writable (a
//! new value of the key simply makes the copy moot). The bytes move outside the store: the
//! caller takes [`DrainUnit`]s from [`Store::drain_poll`], copies `from` to `to` (in memory
//! for this process's segments, through the data plane for other nodes'), and reports with
//! [`Store::drain_finish`].
//!
//! ```text
//!   job:     CREATED ──first poll──► RUNNING ──no value left on the sources──► SUCCEEDED
//!                                       │                     (failed units) ──► FAILED
//!                                       └──cancel──► CANCELED
//!   sources: OK ──create──► DRAINING (no new allocations, readable) ──SUCCEEDED──► DRAINED
//!                                    └──FAILED / CANCELED──► OK
//!   unit:    queued ──poll: target space taken──► copying ──finish ok──► committed (the
//!            value's replica now on the target, the source range freed)
//!            leased / being read ──► back of the queue (blocked_units +1)
//!            no target room, copy failed ──► failed_units +1 (target space freed)
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Instant;

use uuid::Uuid;

use super::ids::{NodeId, ValueId};
use super::object::{Loc, ValueState};
use super::segment::{Placement, SegDrain};
use super::state::Inner;

/// Upstream's drain job status numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Accepted, no unit started yet.
    Created = 0,
    /// Units being copied.
    Running = 2,
    /// Every value moved.
    Succeeded = 3,
    /// Some values could not be moved.
    Failed = 4,
    /// Stopped by a cancel.
    Canceled = 5,
}

impl JobStatus {
    /// Upstream's name.
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Created => "CREATED",
            JobStatus::Running => "RUNNING",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::Canceled => "CANCELED",
        }
    }

    fn finished(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Canceled)
    }
}

/// Why a drain request or a job lookup failed (mapped to upstream's codes by the API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainError {
    /// `INVALID_PARAMS` (-600).
    InvalidParams(&'static str),
    /// `SEGMENT_NOT_FOUND` (-101): the unknown name.
    SegmentNotFound(String),
    /// `UNAVAILABLE_IN_CURRENT_STATUS` (-1010).
    Unavailable(String),
    /// `JOB_NOT_FOUND` (-1402).
    JobNotFound,
}

/// A drain request (`POST /api/v1/drain_jobs`).
#[derive(Clone, Debug, Default)]
pub struct DrainRequest {
    /// Node names whose segments are drained.
    pub segments: Vec<String>,
    /// Node names the replicas go to (empty: any eligible segment).
    pub targets: Vec<String>,
    /// Units copied at once.
    pub max_concurrency: u64,
}

/// One end of a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainPlace {
    /// Transfer endpoint of the segment's node.
    pub endpoint: String,
    /// Address of the first byte in that node.
    pub address: u64,
    /// A segment of this process (copy in memory, [`Store::drain_read_local`] and
    /// [`Store::drain_write_local`]).
    pub local: bool,
}

/// A copy to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainUnit {
    /// Its id, for [`Store::drain_finish`].
    pub id: u64,
    /// Bytes.
    pub len: u64,
    /// Where the value is.
    pub from: DrainPlace,
    /// Where it goes (space already taken).
    pub to: DrainPlace,
}

/// A job as `GET /api/v1/drain_jobs/query` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainJobView {
    /// `<u64>-<u64>`.
    pub job_id: String,
    /// Status.
    pub status: JobStatus,
    /// Wall-clock ms of its creation.
    pub created_ms: u64,
    /// Wall-clock ms of its last change.
    pub updated_ms: u64,
    /// Source node names.
    pub segments: Vec<String>,
    /// Units committed.
    pub succeeded_units: u64,
    /// Units that failed (no room on a target, a copy that failed).
    pub failed_units: u64,
    /// Times a unit was deferred (its value leased or being read when its turn came).
    pub blocked_units: u64,
    /// Units being copied.
    pub active_units: u64,
    /// Bytes committed on targets.
    pub migrated_bytes: u64,
    /// What happened, in words.
    pub message: String,
}

#[derive(Debug)]
pub(super) struct Job {
    id: (u64, u64),
    status: JobStatus,
    sources: Vec<String>,
    source_ids: Vec<Uuid>,
    targets: Vec<String>,
    max_concurrency: usize,
    queue: VecDeque<(ValueId, Uuid)>,
    /// Values whose unit failed: not tried again by this job.
    failed_vids: std::collections::HashSet<ValueId>,
    active: usize,
    succeeded: u64,
    failed: u64,
    blocked: u64,
    migrated: u64,
    created_ms: u64,
    updated_ms: u64,
    message: String,
}

#[derive(Debug)]
pub(super) struct Unit {
    job: u64,
    vid: ValueId,
    src: Loc,
    dst: (Uuid, u64),
    len: u64,
}

/// Drain state kept in [`Inner`].
#[derive(Debug, Default)]
pub(super) struct Drains {
    jobs: Vec<(u64, Job)>,
    units: HashMap<u64, Unit>,
    next_job: u64,
    next_unit: u64,
    /// `master_drain_migrated_bytes_total`, `master_drain_units_{succeeded,failed}_total`.
    pub(super) migrated_bytes: u64,
    pub(super) units_succeeded: u64,
    pub(super) units_failed: u64,
}

impl Drains {
    fn job_mut(&mut self, key: u64) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|(k, _)| *k == key).map(|(_, j)| j)
    }

    /// Jobs that may start units.
    pub(super) fn running(&self) -> bool {
        self.jobs.iter().any(|(_, j)| !j.status.finished())
    }
}

/// Parses `<u64>-<u64>` (both halves complete).
pub fn parse_job_id(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl Inner {
    fn segments_named(&self, name: &str) -> Vec<Uuid> {
        self.segments.values().filter(|s| self.node_name(s.node) == name).map(|s| s.id).collect()
    }

    fn drain_create(&mut self, req: &DrainRequest, wall_ms: u64) -> Result<String, DrainError> {
        if req.segments.is_empty() {
            return Err(DrainError::InvalidParams("segments must not be empty"));
        }
        if req.max_concurrency == 0 {
            return Err(DrainError::InvalidParams("max_concurrency must be positive"));
        }
        let mut seen = std::collections::HashSet::new();
        if !req.segments.iter().all(|s| seen.insert(s.as_str())) {
            return Err(DrainError::InvalidParams("duplicate segment names"));
        }
        if req.targets.iter().any(|t| req.segments.contains(t)) {
            return Err(DrainError::InvalidParams("a target segment is also a source"));
        }
        let mut source_ids = Vec::new();
        for name in &req.segments {
            let ids = self.segments_named(name);
            if ids.is_empty() {
                return Err(DrainError::SegmentNotFound(name.clone()));
            }
            let mounted: Vec<Uuid> = ids
                .into_iter()
                .filter(|id| self.segments.get(id).is_some_and(|s| s.is_mounted() && s.drain == SegDrain::None))
                .collect();
            if mounted.is_empty() {
                return Err(DrainError::Unavailable(format!("segment {name} is not in status OK")));
            }
            source_ids.extend(mounted);
        }
        for name in &req.targets {
            let ids = self.segments_named(name);
            if ids.is_empty() {
                return Err(DrainError::SegmentNotFound(name.clone()));
            }
            if !ids.iter().any(|id| {
                self.segments.get(id).is_some_and(|s| s.is_mounted() && s.drain == SegDrain::None && !s.withheld)
            }) {
                return Err(DrainError::Unavailable(format!("target segment {name} is not allocatable")));
            }
        }
        let d = self.drains.get_or_insert_with(Drains::default);
        d.next_job += 1;
        let key = d.next_job;
        // The second half tells jobs of different processes apart.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        let id = (key, x >> 1);
        let d = self.drains.as_mut().expect("just set");
        d.jobs.push((
            key,
            Job {
                id,
                status: JobStatus::Created,
                sources: req.segments.clone(),
                source_ids: source_ids.clone(),
                targets: req.targets.clone(),
                max_concurrency: req.max_concurrency.min(1024) as usize,
                queue: VecDeque::new(),
                failed_vids: Default::default(),
                active: 0,
                succeeded: 0,
                failed: 0,
                blocked: 0,
                migrated: 0,
                created_ms: wall_ms,
                updated_ms: wall_ms,
                message: "Drain job created".into(),
            },
        ));
        for sid in source_ids {
            if let Some(s) = self.segments.get_mut(&sid) {
                s.drain = SegDrain::Draining(key);
            }
        }
        log::info!("drain job {}-{} created for {:?}", id.0, id.1, req.segments);
        Ok(format!("{}-{}", id.0, id.1))
    }

    /// Complete values with a replica on one of `job`'s live sources.
    fn values_on_sources(&self, ids: &[Uuid]) -> (Vec<(ValueId, Uuid)>, bool) {
        let mut out = Vec::new();
        let mut writing = false;
        for id in ids {
            let Some(seg) = self.segments.get(id).filter(|s| s.is_live()) else { continue };
            let mut vids: Vec<ValueId> = seg.values.keys().copied().collect();
            vids.sort_unstable();
            for vid in vids {
                match self.values.get(&vid).map(|v| v.state) {
                    Some(ValueState::Complete) => out.push((vid, *id)),
                    Some(ValueState::Writing { .. }) => writing = true,
                    _ => {}
                }
            }
        }
        (out, writing)
    }

    fn drain_end(&mut self, key: u64, wall_ms: u64) {
        let Some(d) = self.drains.as_mut() else { return };
        let Some(job) = d.job_mut(key) else { return };
        let ok = job.failed == 0;
        job.status = if ok { JobStatus::Succeeded } else { JobStatus::Failed };
        job.updated_ms = wall_ms;
        job.message = if ok {
            "Drain job finished successfully".into()
        } else {
            format!("{} of {} units failed: {}", job.failed, job.failed + job.succeeded, job.message)
        };
        let ids = job.source_ids.clone();
        let (id, status) = (job.id, job.status);
        for sid in ids {
            if let Some(s) = self.segments.get_mut(&sid) {
                if s.drain == SegDrain::Draining(key) {
                    s.drain = if ok { SegDrain::Drained } else { SegDrain::None };
                }
            }
        }
        log::info!("drain job {}-{} {}", id.0, id.1, status.name());
    }

    /// The units to start now, for every running job.
    fn drain_poll(&mut self, now: u64, wall_ms: u64) -> Vec<DrainUnit> {
        let Some(d) = self.drains.as_ref() else { return Vec::new() };
        let keys: Vec<u64> = d.jobs.iter().filter(|(_, j)| !j.status.finished()).map(|(k, _)| *k).collect();
        let mut out = Vec::new();
        for key in keys {
            self.drain_poll_job(key, now, wall_ms, &mut out);
        }
        out
    }

    /// Running job `key` (the caller knows it exists).
    fn drain_job(&mut self, key: u64) -> &mut Job {
        self.drains.as_mut().and_then(|d| d.job_mut(key)).expect("a known job")
    }

    fn drain_poll_job(&mut self, key: u64, now: u64, wall_ms: u64, out: &mut Vec<DrainUnit>) {
        let job = self.drain_job(key);
        if job.status == JobStatus::Created {
            job.status = JobStatus::Running;
            job.updated_ms = wall_ms;
        }
        if job.queue.is_empty() && job.active == 0 {
            let ids = job.source_ids.clone();
            let (mut found, writing) = self.values_on_sources(&ids);
            let job = self.drain_job(key);
            found.retain(|(vid, _)| !job.failed_vids.contains(vid));
            if found.is_empty() {
                if !writing {
                    self.drain_end(key, wall_ms);
                }
                return;
            }
            job.queue.extend(found);
        }
        // The nodes the job may write to, once (None: any).
        let job = self.drain_job(key);
        let targets = (!job.targets.is_empty()).then(|| job.targets.clone());
        let target_nodes: Option<Vec<NodeId>> =
            targets.map(|t| (0..self.nodes.len()).filter(|&i| t.contains(&self.nodes[i].name)).map(NodeId).collect());
        let mut tries = self.drain_job(key).queue.len();
        while tries > 0 {
            tries -= 1;
            let job = self.drain_job(key);
            if job.active >= job.max_concurrency {
                return;
            }
            let Some((vid, src_seg)) = job.queue.pop_front() else { return };
            let Some(v) = self.values.get(&vid).filter(|v| v.state == ValueState::Complete) else { continue };
            let Some(src) = v.replicas.iter().copied().find(|l| l.seg == src_seg) else { continue };
            let len = v.len;
            if v.shared.lease.load(Ordering::SeqCst) > now || v.shared.reads.load(Ordering::SeqCst) > 0 {
                // A reader may still be using the old place: later.
                let job = self.drain_job(key);
                job.queue.push_back((vid, src_seg));
                job.blocked += 1;
                continue;
            }
            let holders: Vec<NodeId> =
                v.replicas.iter().filter_map(|l| self.segments.get(&l.seg).map(|s| s.node)).collect();
            let place = if self.params.cluster {
                Placement::Any
            } else if self.segments.get(&src_seg).is_some_and(|s| s.is_remote()) {
                Placement::Remote
            } else {
                Placement::Local
            };
            let pick = |s: &super::segment::Segment| {
                !holders.contains(&s.node) && target_nodes.as_ref().is_none_or(|t| t.contains(&s.node))
            };
            let Some(dst) = self.try_place(len, place, &pick) else {
                let message = format!("no target segment has room for {:?} ({len} bytes)", &*self.values[&vid].key);
                let job = self.drain_job(key);
                job.failed += 1;
                job.failed_vids.insert(vid);
                job.message = message;
                job.updated_ms = wall_ms;
                if let Some(d) = self.drains.as_mut() {
                    d.units_failed += 1;
                }
                continue;
            };
            let from = self.place_of(src.seg, src.off);
            let to = self.place_of(dst.0, dst.1);
            let d = self.drains.as_mut().expect("drains");
            d.next_unit += 1;
            let id = d.next_unit;
            d.units.insert(id, Unit { job: key, vid, src, dst, len });
            d.job_mut(key).expect("running job").active += 1;
            out.push(DrainUnit { id, len, from, to });
        }
    }

    fn place_of(&self, seg: Uuid, off: u64) -> DrainPlace {
        let s = &self.segments[&seg];
        DrainPlace { endpoint: self.endpoint(s).to_string(), address: s.base_address() + off, local: !s.is_remote() }
    }

    /// Frees a unit's target range.
    fn drain_free_target(&mut self, dst: (Uuid, u64), len: u64) {
        if let Some(a) = self.segments.get_mut(&dst.0).and_then(|s| s.allocator_mut()) {
            a.free(dst.1, len);
        }
    }

    fn drain_finish(&mut self, unit: u64, result: Result<(), String>, wall_ms: u64) {
        let Some(u) = self.drains.as_mut().and_then(|d| d.units.remove(&unit)) else { return };
        let canceled = {
            let job = self.drain_job(u.job);
            job.active -= 1;
            job.updated_ms = wall_ms;
            job.status == JobStatus::Canceled
        };
        if canceled {
            self.drain_free_target(u.dst, u.len);
            return;
        }
        if let Err(why) = result {
            self.drain_free_target(u.dst, u.len);
            let d = self.drains.as_mut().expect("drains");
            d.units_failed += 1;
            let job = d.job_mut(u.job).expect("job");
            job.failed += 1;
            job.failed_vids.insert(u.vid);
            job.message = why;
            return;
        }
        // Commit, unless the value changed meanwhile (then the copy is moot).
        let target_ok = self.segments.get(&u.dst.0).is_some_and(|s| s.is_live());
        let current =
            self.values.get(&u.vid).is_some_and(|v| v.state == ValueState::Complete && v.replicas.contains(&u.src));
        if !(target_ok && current) {
            self.drain_free_target(u.dst, u.len);
            return;
        }
        let rid = self.next_replica;
        self.next_replica += 1;
        let v = self.values.get_mut(&u.vid).expect("checked");
        v.replicas.retain(|l| *l != u.src);
        v.replicas.push(Loc { seg: u.dst.0, off: u.dst.1, rid });
        if let Some(s) = self.segments.get_mut(&u.dst.0) {
            s.add_value(u.vid, u.dst.1);
        }
        if let Some(s) = self.segments.get_mut(&u.src.seg) {
            s.remove_value(u.vid, u.src.off);
            if let Some(a) = s.allocator_mut() {
                a.free(u.src.off, u.len);
            }
        }
        self.ha_value(u.vid);
        let d = self.drains.as_mut().expect("drains");
        d.units_succeeded += 1;
        d.migrated_bytes += u.len;
        let job = d.job_mut(u.job).expect("job");
        job.succeeded += 1;
        job.migrated += u.len;
    }

    fn drain_cancel(&mut self, id: (u64, u64), wall_ms: u64) -> Result<(), DrainError> {
        let d = self.drains.as_mut().ok_or(DrainError::JobNotFound)?;
        let (key, job) = d.jobs.iter_mut().find(|(_, j)| j.id == id).ok_or(DrainError::JobNotFound)?;
        if job.status.finished() {
            return Err(DrainError::Unavailable(format!("the job is {}", job.status.name())));
        }
        job.status = JobStatus::Canceled;
        job.queue.clear();
        job.updated_ms = wall_ms;
        job.message = "Drain job canceled".into();
        let (key, ids) = (*key, job.source_ids.clone());
        for sid in ids {
            if let Some(s) = self.segments.get_mut(&sid) {
                if s.drain == SegDrain::Draining(key) {
                    s.drain = SegDrain::None;
                }
            }
        }
        Ok(())
    }

    fn drain_view(&self, id: (u64, u64)) -> Result<DrainJobView, DrainError> {
        let d = self.drains.as_ref().ok_or(DrainError::JobNotFound)?;
        let (_, j) = d.jobs.iter().find(|(_, j)| j.id == id).ok_or(DrainError::JobNotFound)?;
        Ok(DrainJobView {
            job_id: format!("{}-{}", j.id.0, j.id.1),
            status: j.status,
            created_ms: j.created_ms,
            updated_ms: j.updated_ms,
            segments: j.sources.clone(),
            succeeded_units: j.succeeded,
            failed_units: j.failed,
            blocked_units: j.blocked,
            active_units: j.active as u64,
            migrated_bytes: j.migrated,
            message: j.message.clone(),
        })
    }
}

impl super::Store {
    /// Starts a drain job (sources become DRAINING); its id.
    pub fn drain_create(&self, req: &DrainRequest, wall_ms: u64) -> Result<String, DrainError> {
        self.write().drain_create(req, wall_ms)
    }

    /// Whether a drain job is running (the driver polls only then).
    pub fn drain_running(&self) -> bool {
        self.read().drains.as_ref().is_some_and(Drains::running)
    }

    /// The copies to start now (target space taken for each); jobs with nothing left end.
    pub fn drain_poll(&self, now: Instant, wall_ms: u64) -> Vec<DrainUnit> {
        let now = self.ns(now);
        self.write().drain_poll(now, wall_ms)
    }

    /// The bytes of unit `id`'s source, when it is this process's memory.
    pub fn drain_read_local(&self, id: u64) -> Option<Vec<u8>> {
        let inner = self.read();
        let u = inner.drains.as_ref()?.units.get(&id)?;
        let seg = inner.segments.get(&u.src.seg)?;
        let m = seg.mapping.as_ref()?;
        // SAFETY: the range is the unit's complete value, inside the segment; it is not freed
        // while the unit exists (only `drain_finish` frees it, under the write lock), and the
        // read lock held here keeps every writer of the store out.
        Some(unsafe { m.bytes(seg.map_off + u.src.off, u.len) }.to_vec())
    }

    /// Writes `data` into unit `id`'s target, when it is this process's memory.
    pub fn drain_write_local(&self, id: u64, data: &[u8]) -> bool {
        let inner = self.read();
        let Some(u) = inner.drains.as_ref().and_then(|d| d.units.get(&id)) else { return false };
        let Some(seg) = inner.segments.get(&u.dst.0).filter(|s| s.is_live()) else { return false };
        let Some(m) = seg.mapping.as_ref() else { return false };
        if data.len() as u64 != u.len {
            return false;
        }
        // SAFETY: the target range was allocated for this unit alone and holds no value yet:
        // nobody else reads or writes it until the unit is finished.
        unsafe { m.write(seg.map_off + u.dst.1, data) };
        true
    }

    /// Unit `id` was copied (`Ok`) or not; a copied value's replica moves to the target.
    pub fn drain_finish(&self, id: u64, result: Result<(), String>, wall_ms: u64) {
        self.write().drain_finish(id, result, wall_ms);
    }

    /// Cancels job `id` (sources back to OK; copies in flight are discarded).
    pub fn drain_cancel(&self, id: (u64, u64), wall_ms: u64) -> Result<(), DrainError> {
        self.write().drain_cancel(id, wall_ms)
    }

    /// `DRAINING` or `DRAINED` when a segment of node `name` is (DRAINING first).
    pub fn segment_drain(&self, name: &str) -> Option<&'static str> {
        let inner = self.read();
        let mut out = None;
        for s in inner.segments.values().filter(|s| inner.node_name(s.node) == name) {
            match s.drain {
                SegDrain::Draining(_) => return Some("DRAINING"),
                SegDrain::Drained => out = Some("DRAINED"),
                SegDrain::None => {}
            }
        }
        out
    }

    /// (bytes migrated, units committed, units failed) over every job.
    pub fn drain_counters(&self) -> (u64, u64, u64) {
        self.read().drains.as_ref().map_or((0, 0, 0), |d| (d.migrated_bytes, d.units_succeeded, d.units_failed))
    }

    /// Job `id`'s state.
    pub fn drain_view(&self, id: (u64, u64)) -> Result<DrainJobView, DrainError> {
        self.read().drain_view(id)
    }
}
