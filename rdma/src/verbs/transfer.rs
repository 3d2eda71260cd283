//! One-sided READ/WRITE of a sliced request: posting, completion polling and retries
//! (data-plane.md §3.4 items 5-6), stepwise over any [`Verbs`].
//!
//! * Each slice is one signaled single-SGE work request; a [`Router`] picks its QP and keys
//!   per attempt (upstream: the local NIC from the location row, the remote NIC and `rkey`
//!   from the peer's descriptor, round-robin across the endpoint's QPs).
//! * Posting is bounded by the QP depth (`MC_MAX_WR` 256 outstanding per QP) and the CQ
//!   depth (`max_cqe` 4096 outstanding per CQ); requests for one QP are chained in one
//!   `ibv_post_send`.
//! * A completion in error is retried (the router sees the attempt number and the failure),
//!   up to `MC_RETRY_CNT` (9) attempts; a refused post counts as an attempt.
//!   `IBV_WC_WR_FLUSH_ERR` (a QP moved to ERR) is redispatched without counting, as upstream
//!   does, but only `retry_cnt` times per slice, so a QP stuck in ERR cannot loop forever.
//!   The transfer is done when every slice succeeded or failed.

use std::collections::BTreeMap;

use super::api::{Completion, Cq, Opcode, Qp, Verbs, VerbsError, WcStatus, WorkRequest};
use super::slice::Slice;

/// `MC_RETRY_CNT` default.
pub const RETRY_CNT: usize = 9;
/// `MC_MAX_WR` default: outstanding requests per QP.
pub const MAX_WR: usize = 256;
/// `max_cqe` default: outstanding requests per CQ.
pub const MAX_CQE: usize = 4096;

/// Where one attempt of a slice goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The QP to post on.
    pub qp: Qp,
    /// Its CQ.
    pub cq: Cq,
    /// The local buffer's `lkey` on this QP's device.
    pub lkey: u32,
    /// The remote buffer's `rkey` on the chosen peer device.
    pub rkey: u32,
    /// An identifier of the path (endpoint), for [`Router::failed`].
    pub path: usize,
}

/// Chooses routes.
pub trait Router {
    /// The route of attempt `attempt` (0-based) of `slice`; `None`: no path left.
    fn route(&mut self, slice: &Slice, index: usize, attempt: usize) -> Option<Route>;
    /// A completion on `path` failed with `status` (upstream deletes the endpoint and marks the
    /// rail).
    fn failed(&mut self, _path: usize, _status: WcStatus) {}
}

/// A fixed list of routes: attempt `a` of slice `i` takes route `(i + a) % n`, so slices
/// spread round-robin across QPs and a retry moves to the next route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticRouter {
    /// The routes.
    pub routes: Vec<Route>,
}

impl Router for StaticRouter {
    fn route(&mut self, _slice: &Slice, index: usize, attempt: usize) -> Option<Route> {
        (!self.routes.is_empty()).then(|| self.routes[(index + attempt) % self.routes.len()])
    }
}

/// Posting limits and the retry budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferLimits {
    /// Outstanding requests per QP.
    pub max_wr: usize,
    /// Outstanding requests per CQ.
    pub max_cqe: usize,
    /// Attempts per slice.
    pub retry_cnt: usize,
    /// Completions polled per `ibv_poll_cq`.
    pub poll_batch: usize,
}

impl Default for TransferLimits {
    fn default() -> Self {
        Self { max_wr: MAX_WR, max_cqe: MAX_CQE, retry_cnt: RETRY_CNT, poll_batch: 64 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SliceState {
    Pending,
    Posted(Route),
    Done,
    Failed,
}

/// Why a transfer failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferError {
    /// Slices that failed every attempt or found no route: (index, last status or `None`).
    Slices(Vec<(usize, Option<WcStatus>)>),
    /// Polling a CQ failed.
    Poll(VerbsError),
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::Slices(s) => write!(f, "{} slice(s) failed, first: {:?}", s.len(), s.first()),
            TransferError::Poll(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TransferError {}

/// A sliced READ or WRITE in progress. Call [`Transfer::step`] until it returns `Some`.
#[derive(Clone, Debug)]
pub struct Transfer {
    opcode: Opcode,
    slices: Vec<Slice>,
    state: Vec<SliceState>,
    attempts: Vec<usize>,
    flushes: Vec<usize>,
    last_status: Vec<Option<WcStatus>>,
    limits: TransferLimits,
    per_qp: BTreeMap<Qp, usize>,
    per_cq: BTreeMap<Cq, usize>,
    /// Work requests posted, retries included.
    pub posted: usize,
    /// Completions in error (flushes included).
    pub errors: usize,
}

impl Transfer {
    /// A transfer of `slices` (from [`super::slice::slice_request`]).
    pub fn new(opcode: Opcode, slices: Vec<Slice>, limits: TransferLimits) -> Self {
        let n = slices.len();
        Self {
            opcode,
            slices,
            state: vec![SliceState::Pending; n],
            attempts: vec![0; n],
            flushes: vec![0; n],
            last_status: vec![None; n],
            limits,
            per_qp: BTreeMap::new(),
            per_cq: BTreeMap::new(),
            posted: 0,
            errors: 0,
        }
    }

    /// Bytes of the slices done so far.
    pub fn transferred(&self) -> u64 {
        self.slices.iter().zip(&self.state).filter(|(_, s)| **s == SliceState::Done).map(|(s, _)| s.len).sum()
    }

    /// Posts what the limits allow, polls every CQ in use once, handles completions. `Some`
    /// once every slice has finished: `Ok(bytes)` or the failures.
    pub fn step(&mut self, verbs: &mut dyn Verbs, router: &mut dyn Router) -> Option<Result<u64, TransferError>> {
        self.post(verbs, router);
        let cqs: Vec<Cq> = self.per_cq.iter().filter(|(_, &n)| n > 0).map(|(&cq, _)| cq).collect();
        let mut done = Vec::new();
        for cq in cqs {
            if let Err(e) = verbs.poll_cq(cq, self.limits.poll_batch, &mut done) {
                return Some(Err(TransferError::Poll(e)));
            }
        }
        for c in done {
            self.complete(c, router);
        }
        self.finished()
    }

    fn finished(&self) -> Option<Result<u64, TransferError>> {
        if self.state.iter().any(|s| matches!(s, SliceState::Pending | SliceState::Posted(_))) {
            return None;
        }
        let failed: Vec<(usize, Option<WcStatus>)> = self
            .state
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == SliceState::Failed)
            .map(|(i, _)| (i, self.last_status[i]))
            .collect();
        Some(if failed.is_empty() { Ok(self.transferred()) } else { Err(TransferError::Slices(failed)) })
    }

    fn post(&mut self, verbs: &mut dyn Verbs, router: &mut dyn Router) {
        let mut batches: BTreeMap<Qp, Vec<(usize, Route)>> = BTreeMap::new();
        for i in 0..self.slices.len() {
            if self.state[i] != SliceState::Pending {
                continue;
            }
            if self.attempts[i] >= self.limits.retry_cnt {
                self.state[i] = SliceState::Failed;
                continue;
            }
            let Some(route) = router.route(&self.slices[i], i, self.attempts[i]) else {
                self.state[i] = SliceState::Failed;
                continue;
            };
            let q = self.per_qp.entry(route.qp).or_default();
            let c = self.per_cq.entry(route.cq).or_default();
            if *q >= self.limits.max_wr || *c >= self.limits.max_cqe {
                continue;
            }
            *q += 1;
            *c += 1;
            self.state[i] = SliceState::Posted(route);
            batches.entry(route.qp).or_default().push((i, route));
        }
        for (qp, batch) in batches {
            let wrs: Vec<WorkRequest> = batch
                .iter()
                .map(|&(i, r)| {
                    let s = &self.slices[i];
                    WorkRequest {
                        wr_id: i as u64,
                        opcode: self.opcode,
                        local_addr: s.local_addr,
                        len: s.len as u32,
                        lkey: r.lkey,
                        remote_addr: s.remote_addr,
                        rkey: r.rkey,
                    }
                })
                .collect();
            self.posted += wrs.len();
            if let Err(e) = verbs.post_send(qp, &wrs) {
                log::warn!("RDMA: {}; {} request(s) redispatched", e.error, batch.len() - e.first_unposted);
                for &(i, r) in &batch[e.first_unposted.min(batch.len())..] {
                    self.unpost(r);
                    self.state[i] = SliceState::Pending;
                    self.attempts[i] += 1;
                }
                self.posted -= batch.len() - e.first_unposted.min(batch.len());
            }
        }
    }

    fn unpost(&mut self, r: Route) {
        if let Some(n) = self.per_qp.get_mut(&r.qp) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = self.per_cq.get_mut(&r.cq) {
            *n = n.saturating_sub(1);
        }
    }

    fn complete(&mut self, c: Completion, router: &mut dyn Router) {
        let i = c.wr_id as usize;
        let Some(SliceState::Posted(route)) = self.state.get(i).copied() else {
            log::warn!("RDMA: completion for unknown work request {}", c.wr_id);
            return;
        };
        self.unpost(route);
        self.last_status[i] = Some(c.status);
        match c.status {
            WcStatus::Success => self.state[i] = SliceState::Done,
            WcStatus::Flushed => {
                self.errors += 1;
                self.flushes[i] += 1;
                if self.flushes[i] > self.limits.retry_cnt {
                    self.attempts[i] += 1;
                }
                self.state[i] = SliceState::Pending;
            }
            WcStatus::Error(_) => {
                self.errors += 1;
                router.failed(route.path, c.status);
                self.attempts[i] += 1;
                self.state[i] = SliceState::Pending;
            }
        }
    }
}
