//! Per-worker request counters (SPEC §9) and their sums.
//!
//! Each [`WorkerStats`] is written by one worker thread only, so an increment is a relaxed
//! load and store (no read-modify-write). Scrapes sum every worker with relaxed loads; a
//! counter only ever grows, so successive scrapes never see it decrease.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http::Method;
use crate::route::Route;

/// Status codes with a fixed slot; any other code goes to the overflow list.
pub(crate) const CODES: [u16; 14] = [200, 204, 400, 404, 405, 408, 409, 413, 417, 431, 500, 503, 505, 507];
const NCODE: usize = CODES.len();
const NROUTE: usize = Route::ALL.len();
const NMETHOD: usize = Method::ALL.len();
// The routes of a worker's used pairs are collected in a u64.
const _: () = assert!(NROUTE <= 64);

/// Upper bounds of `http_request_duration_seconds`, in nanoseconds (SPEC §9).
pub(crate) const DURATION_BOUNDS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
/// The `le` labels of `http_request_duration_seconds`, `+Inf` last.
pub(crate) const DURATION_LABELS: [&str; NDUR] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10", "+Inf",
];
/// Buckets of the duration histogram (bounds + `+Inf`).
pub(crate) const NDUR: usize = DURATION_BOUNDS_NS.len() + 1;

/// Upper bounds of `master_value_size_bytes` (SPEC §9).
pub(crate) const VALUE_BOUNDS: [u64; 7] = [4096, 65536, 262144, 1048576, 4194304, 16777216, 67108864];
/// Buckets of the value-size histogram (bounds + `+Inf`).
pub(crate) const NVAL: usize = VALUE_BOUNDS.len() + 1;

/// The `master_*` request counters kept per worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ctr {
    /// `master_put_start_requests_total`
    PutStart,
    /// `master_put_start_failures_total`
    PutStartFail,
    /// `master_put_end_requests_total`
    PutEnd,
    /// `master_get_replica_list_requests_total`
    GetReq,
    /// `master_get_replica_list_failures_total`
    GetFail,
    /// `master_exist_key_requests_total`
    ExistReq,
    /// `master_remove_requests_total`
    RemoveReq,
    /// `master_remove_failures_total`
    RemoveFail,
    /// `master_remove_all_requests_total`
    RemoveAllReq,
    /// `master_mount_segment_requests_total`
    MountReq,
    /// `master_unmount_segment_requests_total`
    UnmountReq,
    /// `master_unmount_segment_failures_total`
    UnmountFail,
    /// `master_mount_segment_failures_total` (registrations refused over RPC)
    MountFail,
}

/// Words of the `(route, method)` bitmap of [`WorkerStats`].
const USED_WORDS: usize = (NROUTE * NMETHOD).div_ceil(64);

/// Number of [`Ctr`] values.
pub(crate) const NCTR: usize = Ctr::MountFail as usize + 1;

/// Adds `n` to a counter that has a single writer.
#[inline]
fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

fn zeros(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// Per-worker counters (SPEC §9), summed at scrape time.
///
/// Written by one worker thread only (every [`Service`](super::Service) of that worker
/// shares it); read by any thread.
pub struct WorkerStats {
    /// `http_requests_total`, indexed `[route][method][code slot]`.
    requests: Box<[AtomicU64]>,
    /// Bit `route * NMETHOD + method` is set once that pair has a response (set before its
    /// counters change), so a scrape sums only the pairs in use instead of every slot.
    used: [AtomicU64; USED_WORDS],
    /// `http_requests_total` for codes without a slot.
    overflow: Mutex<Vec<(Route, Method, u16, u64)>>,
    /// `http_request_duration_seconds` bucket counts (not cumulative), `[route][bucket]`.
    durations: Box<[AtomicU64]>,
    /// `http_request_duration_seconds_sum` per route, in nanoseconds.
    duration_sum_ns: Box<[AtomicU64]>,
    /// `master_*` request counters.
    counters: [AtomicU64; NCTR],
    /// `master_value_size_bytes` bucket counts (not cumulative).
    values: [AtomicU64; NVAL],
    /// `master_value_size_bytes_sum`.
    value_sum: AtomicU64,
}

impl Default for WorkerStats {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerStats {
    /// All counters at zero.
    pub fn new() -> Self {
        Self {
            requests: zeros(NROUTE * NMETHOD * NCODE),
            used: [const { AtomicU64::new(0) }; USED_WORDS],
            overflow: Mutex::new(Vec::new()),
            durations: zeros(NROUTE * NDUR),
            duration_sum_ns: zeros(NROUTE),
            counters: [const { AtomicU64::new(0) }; NCTR],
            values: [const { AtomicU64::new(0) }; NVAL],
            value_sum: AtomicU64::new(0),
        }
    }

    /// Counts one final response (`100` is never counted).
    pub(crate) fn record_response(&self, route: Route, method: Method, status: u16, duration: Duration) {
        if status == 100 {
            return;
        }
        let (r, m) = (route.index(), method.index());
        let pair = r * NMETHOD + m;
        let (word, bit) = (&self.used[pair / 64], 1u64 << (pair % 64));
        let seen = word.load(Relaxed);
        if seen & bit == 0 {
            word.store(seen | bit, Relaxed);
        }
        match code_slot(status) {
            Some(c) => add(&self.requests[(r * NMETHOD + m) * NCODE + c], 1),
            None => {
                let mut o = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
                match o.iter_mut().find(|e| e.0 == route && e.1 == method && e.2 == status) {
                    Some(e) => e.3 += 1,
                    None => o.push((route, method, status, 1)),
                }
            }
        }
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let b = DURATION_BOUNDS_NS.iter().position(|&bound| ns <= bound).unwrap_or(NDUR - 1);
        add(&self.durations[r * NDUR + b], 1);
        add(&self.duration_sum_ns[r], ns);
    }

    /// Adds `n` to a `master_*` counter.
    #[inline]
    pub(crate) fn bump(&self, c: Ctr, n: u64) {
        add(&self.counters[c as usize], n);
    }

    /// Observes a completed write of `len` bytes in `master_value_size_bytes`.
    pub(crate) fn observe_value(&self, len: u64) {
        let b = VALUE_BOUNDS.iter().position(|&bound| len <= bound).unwrap_or(NVAL - 1);
        add(&self.values[b], 1);
        add(&self.value_sum, len);
    }
}

/// The slot of a status code in the fixed table.
#[inline]
fn code_slot(code: u16) -> Option<usize> {
    CODES.iter().position(|&c| c == code)
}

/// The sum of every worker's counters at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Totals {
    /// `http_requests_total` series with a non-zero count, ordered by route, method, code.
    pub(crate) requests: Vec<(Route, Method, u16, u64)>,
    /// Duration bucket counts (not cumulative) per route.
    pub(crate) durations: [[u64; NDUR]; NROUTE],
    /// Duration sums per route, in nanoseconds.
    pub(crate) duration_sum_ns: [u64; NROUTE],
    /// `master_*` request counters.
    pub(crate) counters: [u64; NCTR],
    /// Value-size bucket counts (not cumulative).
    pub(crate) values: [u64; NVAL],
    /// Value-size sum.
    pub(crate) value_sum: u64,
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            requests: Vec::new(),
            durations: [[0; NDUR]; NROUTE],
            duration_sum_ns: [0; NROUTE],
            counters: [0; NCTR],
            values: [0; NVAL],
            value_sum: 0,
        }
    }
}

impl Totals {
    /// Sums `workers`.
    pub(crate) fn sum(workers: &[std::sync::Arc<WorkerStats>]) -> Self {
        let mut t = Totals::default();
        let mut req = vec![0u64; NROUTE * NMETHOD * NCODE];
        let mut extra: Vec<(Route, Method, u16, u64)> = Vec::new();
        let mut all_used = [0u64; USED_WORDS];
        for w in workers {
            // Only pairs that ever had a response can hold non-zero counts (and only their
            // routes non-zero durations).
            let mut routes = 0u64;
            for (wi, word) in w.used.iter().enumerate() {
                let mut bits = word.load(Relaxed);
                all_used[wi] |= bits;
                while bits != 0 {
                    let pair = wi * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    routes |= 1 << (pair / NMETHOD);
                    let base = pair * NCODE;
                    for (acc, c) in req[base..base + NCODE].iter_mut().zip(&w.requests[base..base + NCODE]) {
                        *acc += c.load(Relaxed);
                    }
                }
            }
            while routes != 0 {
                let r = routes.trailing_zeros() as usize;
                routes &= routes - 1;
                for (b, acc) in t.durations[r].iter_mut().enumerate() {
                    *acc += w.durations[r * NDUR + b].load(Relaxed);
                }
                t.duration_sum_ns[r] += w.duration_sum_ns[r].load(Relaxed);
            }
            for (acc, c) in t.counters.iter_mut().zip(&w.counters) {
                *acc += c.load(Relaxed);
            }
            for (acc, c) in t.values.iter_mut().zip(&w.values) {
                *acc += c.load(Relaxed);
            }
            t.value_sum += w.value_sum.load(Relaxed);
            for &(route, method, code, n) in w.overflow.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                match extra.iter_mut().find(|e| e.0 == route && e.1 == method && e.2 == code) {
                    Some(e) => e.3 += n,
                    None => extra.push((route, method, code, n)),
                }
            }
        }
        // Pairs in ascending order, so the series come out ordered by route, method, code.
        for (wi, &word) in all_used.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let rm = wi * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                for (c, &n) in req[rm * NCODE..(rm + 1) * NCODE].iter().enumerate().filter(|(_, &n)| n > 0) {
                    t.requests.push((Route::ALL[rm / NMETHOD], Method::ALL[rm % NMETHOD], CODES[c], n));
                }
            }
        }
        if !extra.is_empty() {
            t.requests.extend(extra);
            t.requests.sort_by_key(|&(r, m, c, _)| (r.index(), m.index(), c));
        }
        t
    }

    /// A `master_*` counter.
    pub(crate) fn ctr(&self, c: Ctr) -> u64 {
        self.counters[c as usize]
    }
}

/// What `/metrics/summary` compares against: the counters at a snapshot instant (SPEC §4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// When it was taken (a multiple of 10 s after start).
    pub(crate) at: Instant,
    /// Final responses.
    pub(crate) http_total: u64,
    /// Responses with a 4xx status.
    pub(crate) http_4xx: u64,
    /// Responses with a 5xx status.
    pub(crate) http_5xx: u64,
    /// Duration bucket counts over all routes (not cumulative).
    pub(crate) latency: [u64; NDUR],
    /// `master_*` request counters.
    pub(crate) counters: [u64; NCTR],
}

impl Snapshot {
    /// The summary view of `t`, dated `at`.
    pub(crate) fn of(t: &Totals, at: Instant) -> Self {
        let mut s = Snapshot { at, http_total: 0, http_4xx: 0, http_5xx: 0, latency: [0; NDUR], counters: t.counters };
        for &(_, _, code, n) in &t.requests {
            s.http_total += n;
            match code {
                400..=499 => s.http_4xx += n,
                500..=599 => s.http_5xx += n,
                _ => {}
            }
        }
        for row in &t.durations {
            for (acc, &n) in s.latency.iter_mut().zip(row) {
                *acc += n;
            }
        }
        s
    }

    /// A `master_*` counter.
    pub(crate) fn ctr(&self, c: Ctr) -> u64 {
        self.counters[c as usize]
    }
}
