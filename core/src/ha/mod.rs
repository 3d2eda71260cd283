//! High availability on etcd, the sans-IO part (docs/ha.md): the role of this master, the
//! layout of the replicated state in etcd, and the session wrapper that holds a reply until
//! the changes it acknowledges are durable.
//!
//! The binary's `src/ha.rs` does the IO: the etcd lease and election, the watch that feeds
//! a standby, and the committer that writes batches ([`crate::store::HaBatch`]).
//!
//! ```text
//!              start ─► Starting ──snapshot loaded, watch running──► Standby
//!   Standby ──no master_view in etcd──► Candidate ──txn created the view──► CatchingUp
//!   Candidate ──another one won──► Standby
//!   CatchingUp ──watch applied up to the view's revision──► Serving
//!   CatchingUp ──catch-up failed or timed out (lease revoked)──► Standby
//!   Serving ──lease lost / keep-alive failed / a fenced txn failed──► Standby (state cleared, reloaded)
//! ```
//!
//! Fencing: every replicated write is an etcd txn that compares the view key's
//! `create_revision` with the one this leader created, so once another master holds the view
//! no write of the former leader commits, and no reply that depends on it is sent
//! ([`DurableSession`]). A leader also stops serving once its own lease may have expired
//! (`serve_until`), before another can be elected.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::session::{Acceptor, ListenerAtShutdown, Session};
use crate::store::{HaOp, Journal, ObjectRecord, SegmentRecord};
use crate::time::Now;
use crate::transfer::{Transfer, TransferOp, TransferOutcome};

/// Where this master is in the election (see the module diagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaRole {
    /// Loading the replicated state.
    Starting,
    /// Following the leader's changes.
    Standby,
    /// Trying to create the view.
    Candidate,
    /// Won; applying the last changes before serving.
    CatchingUp,
    /// The leader.
    Serving,
}

impl HaRole {
    /// `/ha_status` (upstream's names).
    pub fn status(self) -> &'static str {
        match self {
            HaRole::Starting => "starting",
            HaRole::Standby => "standby",
            HaRole::Candidate => "candidate",
            HaRole::CatchingUp => "catching_up",
            HaRole::Serving => "serving",
        }
    }
}

/// What `/leader`, `/role` and `/health` report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaView {
    /// This master's role.
    pub role: HaRole,
    /// The leader's RPC address, when one is known.
    pub leader: Option<String>,
    /// The view's version (the etcd revision that created it).
    pub view_version: Option<i64>,
}

/// The role of this master, shared by the workers (who gate requests on it) and the
/// binary's election thread (who changes it).
#[derive(Debug)]
pub struct HaState {
    /// The cluster id (`--cluster-id`).
    pub cluster_id: String,
    /// This master's advertised RPC address.
    pub address: String,
    view: Mutex<HaView>,
    serving: AtomicBool,
    /// Nanoseconds after `base` until which a leader may serve (its lease's safe end).
    serve_until: AtomicU64,
    base: Instant,
}

/// How long a reply waits for its changes to become durable before the connection closes
/// without it.
pub const DURABLE_TIMEOUT: Duration = Duration::from_secs(10);

impl HaState {
    /// A master of `cluster_id` advertising `address`, starting.
    pub fn new(cluster_id: &str, address: &str, now: Instant) -> Arc<Self> {
        Arc::new(Self {
            cluster_id: cluster_id.to_string(),
            address: address.to_string(),
            view: Mutex::new(HaView { role: HaRole::Starting, leader: None, view_version: None }),
            serving: AtomicBool::new(false),
            serve_until: AtomicU64::new(0),
            base: now,
        })
    }

    /// The current view.
    pub fn view(&self) -> HaView {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets the role and the known leader. Serving only through [`HaState::serve`].
    pub fn set(&self, role: HaRole, leader: Option<String>, view_version: Option<i64>) {
        if role != HaRole::Serving {
            self.serving.store(false, Ordering::Release);
        }
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = HaView { role, leader, view_version };
    }

    /// This master serves as leader of view `version`, until `until` unless renewed.
    pub fn serve(&self, version: i64, until: Instant) {
        self.renew(until);
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) =
            HaView { role: HaRole::Serving, leader: Some(self.address.clone()), view_version: Some(version) };
        self.serving.store(true, Ordering::Release);
    }

    /// The lease was renewed: serving may go on until `until`.
    pub fn renew(&self, until: Instant) {
        let ns = u64::try_from(until.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        self.serve_until.store(ns, Ordering::Release);
    }

    /// Is this master the leader (whether or not its lease is still safe)?
    pub fn is_leader(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// May this master answer service requests at `now`?
    pub fn serves(&self, now: Instant) -> bool {
        if !self.serving.load(Ordering::Acquire) {
            return false;
        }
        let ns = u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        ns < self.serve_until.load(Ordering::Acquire)
    }

    /// The etcd key of the view (`mooncake-store/<cluster_id>/master_view`, as upstream).
    pub fn view_key(&self) -> String {
        view_key(&self.cluster_id)
    }

    /// The prefix under which the replicated state lives.
    pub fn state_prefix(&self) -> String {
        format!("{}/ha/", cluster_prefix(&self.cluster_id))
    }
}

/// `mooncake-store/<cluster_id>` without a trailing `/` (as upstream strips it).
pub fn cluster_prefix(cluster_id: &str) -> String {
    format!("mooncake-store/{}", cluster_id.trim_end_matches('/'))
}

/// The view key upstream clients read: `mooncake-store/<cluster_id>/master_view`.
pub fn view_key(cluster_id: &str) -> String {
    format!("{}/master_view", cluster_prefix(cluster_id))
}

/// One replicated change as an etcd key (under `prefix`, see [`HaState::state_prefix`])
/// and value (None: delete). Segments live under `s/<uuid>`, objects under `o/<key>`, tenant
/// quota policies under `t/<tenant>` (`{"requested_quota_bytes":N}`).
pub fn encode_op(prefix: &str, op: &HaOp) -> (Vec<u8>, Option<Vec<u8>>) {
    match op {
        HaOp::Segment(id, rec) => (
            format!("{prefix}s/{id}").into_bytes(),
            rec.as_ref().map(|r| serde_json::to_vec(r).expect("a record serializes")),
        ),
        HaOp::Object(key, rec) => {
            let mut k = format!("{prefix}o/").into_bytes();
            k.extend_from_slice(key.as_bytes());
            (k, rec.as_ref().map(|r| serde_json::to_vec(r).expect("a record serializes")))
        }
        HaOp::TenantPolicy(tenant, bytes) => {
            let mut k = format!("{prefix}t/").into_bytes();
            k.extend_from_slice(tenant.as_bytes());
            (k, bytes.map(|b| format!("{{\"requested_quota_bytes\":{b}}}").into_bytes()))
        }
    }
}

/// Why a replicated record could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad replicated record {key:?}: {why}")]
pub struct DecodeError {
    /// The etcd key.
    pub key: String,
    /// What is wrong.
    pub why: String,
}

/// The change an etcd key and value (None: a delete) stand for; `Ok(None)` for a key of the
/// cluster prefix that is not replicated state (the view key).
pub fn decode_op(prefix: &str, key: &[u8], value: Option<&[u8]>) -> Result<Option<HaOp>, DecodeError> {
    let err = |why: String| DecodeError { key: String::from_utf8_lossy(key).into_owned(), why };
    let Some(rest) = key.strip_prefix(prefix.as_bytes()) else { return Ok(None) };
    if let Some(id) = rest.strip_prefix(b"s/") {
        let id = std::str::from_utf8(id).ok().and_then(|s| uuid::Uuid::parse_str(s).ok());
        let id = id.ok_or_else(|| err("not a segment id".into()))?;
        let rec =
            value.map(|v| serde_json::from_slice::<SegmentRecord>(v).map_err(|e| err(e.to_string()))).transpose()?;
        return Ok(Some(HaOp::Segment(id, rec)));
    }
    if let Some(k) = rest.strip_prefix(b"o/") {
        let k = String::from_utf8(k.to_vec()).map_err(|_| err("key is not UTF-8".into()))?;
        let rec =
            value.map(|v| serde_json::from_slice::<ObjectRecord>(v).map_err(|e| err(e.to_string()))).transpose()?;
        return Ok(Some(HaOp::Object(k, rec)));
    }
    if let Some(t) = rest.strip_prefix(b"t/") {
        let t = String::from_utf8(t.to_vec()).map_err(|_| err("tenant is not UTF-8".into()))?;
        let bytes = value
            .map(|v| {
                let doc: serde_json::Value = serde_json::from_slice(v).map_err(|e| err(e.to_string()))?;
                doc.get("requested_quota_bytes")
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(|| err("no requested_quota_bytes".into()))
            })
            .transpose()?;
        return Ok(Some(HaOp::TenantPolicy(t, bytes)));
    }
    Ok(None)
}

/// The transfer id a [`DurableSession`] uses for its wait (inner sessions count from 0).
const DURABLE_ID: u64 = u64::MAX;

/// Wraps a session so that no reply leaves before the changes it acknowledges are durable:
/// after each call that marked changes in the journal, the output that call produced (and
/// everything after it in the stream) is held until the journal is durable up to the mark
/// the call reached, and a [`TransferOp::Durable`] wait goes to the data plane (the
/// binary's committer answers it). Output produced *before* the call is not held by it, so
/// a connection that carries many clients' requests at once (a store node's link) keeps
/// flowing under load: each reply waits for its own batch, not for a lull. A failed wait
/// (the commit was fenced off: another master leads) closes the connection without the
/// held replies. Changes of other workers made during a call may extend its wait; they
/// never shorten it.
///
/// ```text
///   stream:  | sent | free to send | held for mark m1 | held for m2 ...
///                   ^ sent          ^ start of m1 (position when m1's call began)
///   durable >= m1: the m1 bytes join "free"; the wait moves on to m2
/// ```
pub struct DurableSession {
    inner: Box<dyn Session>,
    journal: Arc<Journal>,
    /// Bytes consumed so far (stream position of the next byte to send).
    sent: u64,
    /// (start, seq): the bytes from stream position `start` on wait until the journal is
    /// durable up to `seq`; positions and marks both ascend.
    marks: VecDeque<(u64, u64)>,
    /// A wait is outstanding.
    waiting: bool,
    /// A wait to hand out by `poll_transfer`.
    queued: Option<Transfer>,
    /// The wait failed: the session is over.
    failed: bool,
}

/// Slices looked at to measure the pending output; more means "unknown" (hold it all).
const MEASURE_SLICES: usize = 16;

impl DurableSession {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Session>, journal: Arc<Journal>) -> Self {
        Self { inner, journal, sent: 0, marks: VecDeque::new(), waiting: false, queued: None, failed: false }
    }

    /// Bytes the inner session has ready, if it can tell in [`MEASURE_SLICES`] slices.
    fn pending(&self) -> Option<u64> {
        let mut bufs = [IoSlice::new(&[]); MEASURE_SLICES];
        let n = self.inner.poll_transmit(&mut bufs);
        (n < MEASURE_SLICES).then(|| bufs[..n].iter().map(|b| b.len() as u64).sum())
    }

    /// The first mark not durable yet.
    fn first_held(&self) -> Option<(u64, u64)> {
        let durable = self.journal.durable();
        self.marks.iter().copied().find(|&(_, seq)| seq > durable)
    }

    /// How many bytes may leave now (None: no limit).
    fn limit(&self) -> Option<usize> {
        self.first_held().map(|(start, _)| usize::try_from(start.saturating_sub(self.sent)).unwrap_or(usize::MAX))
    }

    fn held(&self) -> bool {
        self.first_held().is_some()
    }

    /// Runs `f` on the inner session; `consumed`: bytes written just before (a `consume`),
    /// still counted as pending by the inner session until `f` tells it.
    fn around(&mut self, now: Now, consumed: usize, f: impl FnOnce(&mut dyn Session)) {
        let before = self.journal.seq();
        // Pending output starts at `sent`; the call's output comes after it. Unknown: hold
        // from what is already pending (more than needed, never less).
        let start = self.sent + self.pending().unwrap_or(0);
        self.sent += consumed as u64;
        f(&mut *self.inner);
        let after = self.journal.seq();
        if after > before {
            match self.marks.back_mut() {
                Some(last) if last.0 >= start => last.1 = last.1.max(after),
                _ => self.marks.push_back((start, after)),
            }
        }
        let durable = self.journal.durable();
        while self.marks.front().is_some_and(|&(_, seq)| seq <= durable) {
            self.marks.pop_front();
        }
        self.want_wait(now);
    }

    fn want_wait(&mut self, now: Now) {
        if self.waiting || self.failed {
            return;
        }
        if let Some((_, seq)) = self.first_held() {
            self.waiting = true;
            self.queued = Some(Transfer {
                id: DURABLE_ID,
                endpoint: String::new(),
                op: TransferOp::Durable { seq },
                deadline: now.mono + DURABLE_TIMEOUT,
            });
        }
    }
}

impl Session for DurableSession {
    fn handle_input(&mut self, now: Now, data: &[u8]) {
        self.around(now, 0, |s| s.handle_input(now, data));
    }
    fn handle_eof(&mut self, now: Now) {
        self.around(now, 0, |s| s.handle_eof(now));
    }
    fn handle_timeout(&mut self, now: Now) {
        self.around(now, 0, |s| s.handle_timeout(now));
    }
    fn handle_shutdown(&mut self, now: Now) {
        self.around(now, 0, |s| s.handle_shutdown(now));
    }
    fn poll_transmit<'a>(&'a self, bufs: &mut [IoSlice<'a>]) -> usize {
        if self.failed {
            return 0;
        }
        match self.limit() {
            None => self.inner.poll_transmit(bufs),
            Some(0) => 0,
            Some(limit) => self.inner.poll_transmit_upto(bufs, limit),
        }
    }
    fn consume(&mut self, now: Now, n: usize) {
        self.around(now, n, |s| s.consume(now, n));
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
    fn wants_read(&self) -> bool {
        !self.failed && self.inner.wants_read()
    }
    fn is_closed(&self) -> bool {
        self.failed || (!self.held() && self.inner.is_closed())
    }
    fn poll_transfer(&mut self) -> Option<Transfer> {
        if let Some(t) = self.queued.take() {
            return Some(t);
        }
        self.inner.poll_transfer()
    }
    fn handle_transfer(&mut self, now: Now, id: u64, outcome: TransferOutcome) {
        if id != DURABLE_ID {
            self.around(now, 0, |s| s.handle_transfer(now, id, outcome));
            return;
        }
        self.waiting = false;
        match outcome {
            TransferOutcome::Written => {
                let durable = self.journal.durable();
                while self.marks.front().is_some_and(|&(_, seq)| seq <= durable) {
                    self.marks.pop_front();
                }
                self.want_wait(now)
            }
            TransferOutcome::Failed(why) => {
                log::warn!("replies dropped, their changes are not durable: {why}");
                self.failed = true;
            }
            _ => self.failed = true,
        }
    }
    fn read_into(&mut self) -> Option<&mut [u8]> {
        self.inner.read_into()
    }
    fn handle_read_into(&mut self, now: Now, n: usize) {
        self.around(now, 0, |s| s.handle_read_into(now, n));
    }
}

/// Makes [`DurableSession`]s around another acceptor's sessions.
pub struct DurableAcceptor {
    inner: Box<dyn Acceptor>,
    journal: Arc<Journal>,
}

impl DurableAcceptor {
    /// Wraps `inner`'s sessions.
    pub fn new(inner: Box<dyn Acceptor>, journal: Arc<Journal>) -> Self {
        Self { inner, journal }
    }
}

impl Acceptor for DurableAcceptor {
    fn accept(&mut self, now: Now) -> Box<dyn Session> {
        Box::new(DurableSession::new(self.inner.accept(now), self.journal.clone()))
    }
    fn on_shutdown(&self) -> ListenerAtShutdown {
        self.inner.on_shutdown()
    }
}

#[cfg(test)]
mod tests;
