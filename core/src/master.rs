//! The process-wide state every listener shares: configuration, the store, the platform,
//! per-worker counters, the lifecycle (shutdown flag, open connections) and the summary
//! snapshots. One [`Master`] per process, shared (`Arc`) by every worker thread; the HTTP
//! service (`crate::api`) and the master RPC service (`crate::rpc`) both work on it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::http::Limits;
use crate::platform::Platform;
use crate::session::Lifecycle;
use crate::stats::{Ctr, Snapshot, Totals, WorkerStats};
use crate::store::{MountError, MountKind, Store};
use crate::time::Now;
use crate::transfer::DataPlane;

/// Largest request head (SPEC §2.4).
const MAX_HEAD: usize = 64 * 1024;
/// Interval of the `/metrics/summary` snapshots (SPEC §4.2).
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(10);
/// Interval of the traffic history of `/cluster_summary` (a divisor of the snapshot interval).
pub(crate) const HISTORY_INTERVAL: Duration = Duration::from_secs(2);
/// Points kept in the traffic history: 150 windows, five minutes.
pub(crate) const HISTORY_POINTS: usize = 151;

/// The counters at one history instant (a multiple of [`HISTORY_INTERVAL`] after start).
#[derive(Clone, Debug)]
pub(crate) struct HistoryPoint {
    /// The worker counters, dated.
    pub(crate) snap: Snapshot,
    /// `master_evicted_key_count` then.
    pub(crate) evicted_keys: u64,
}

/// What the embedding program tells about itself, for `/cluster_summary`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The program's version.
    pub version: String,
    /// The runtime driving the core (`mio`, `glommio`, an embedder's name).
    pub runtime: String,
    /// Worker threads serving connections.
    pub workers: usize,
}

/// The process-wide state: configuration, store, platform, per-worker stats, shutdown flag.
pub struct Master {
    pub(crate) config: Config,
    pub(crate) platform: Arc<dyn Platform>,
    pub(crate) store: Arc<Store>,
    pub(crate) limits: Limits,
    /// Every registered worker's counters, plus `own` (summed at scrape time).
    workers: Mutex<Vec<Arc<WorkerStats>>>,
    /// Counters moved outside any worker (the start-up mount).
    own: Arc<WorkerStats>,
    /// Carries transfers of value bytes to and from other nodes (installed by the binary).
    data_plane: std::sync::OnceLock<Arc<dyn DataPlane>>,
    /// Store-node mode: the node's shared state (installed by the binary before serving).
    node: std::sync::OnceLock<Arc<crate::node::NodeState>>,
    /// The KV event publisher's counters (`--enable-kv-events`, installed by the binary).
    kv_events: std::sync::OnceLock<Arc<crate::kv_events::KvStats>>,
    /// The shutdown flag and the count of open connections of every kind.
    lifecycle: Arc<Lifecycle>,
    /// Open HTTP client connections on all listeners (`http_connections_open`).
    pub connections_open: Arc<AtomicI64>,
    /// Monotonic start time (origin of the summary snapshots).
    pub(crate) start: Instant,
    /// The latest `/metrics/summary` snapshot.
    pub(crate) snapshot: Mutex<Snapshot>,
    /// The traffic history of `/cluster_summary`, oldest first.
    pub(crate) history: Mutex<VecDeque<HistoryPoint>>,
    /// Offset from `start`, in nanoseconds, of the next history point (and snapshot check).
    next_tick_ns: AtomicU64,
    /// Set by the embedding program ([`Master::set_process_info`]).
    process_info: std::sync::OnceLock<ProcessInfo>,
    /// A highly available master's role (installed by the binary; see [`crate::ha`]).
    ha: std::sync::OnceLock<Arc<crate::ha::HaState>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Master {
    /// Builds the master at `now`. Does not mount anything.
    pub fn new(config: Config, platform: Arc<dyn Platform>, now: Now) -> Arc<Self> {
        let store = Arc::new(Store::new(&config, platform.clone(), now.mono));
        let limits = Limits {
            max_head: MAX_HEAD,
            max_body: config.max_body_size,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
        };
        let own = Arc::new(WorkerStats::new());
        Arc::new(Self {
            config,
            platform,
            store,
            limits,
            workers: Mutex::new(vec![own.clone()]),
            own,
            lifecycle: Lifecycle::new(),
            data_plane: std::sync::OnceLock::new(),
            node: std::sync::OnceLock::new(),
            kv_events: std::sync::OnceLock::new(),
            connections_open: Arc::new(AtomicI64::new(0)),
            start: now.mono,
            snapshot: Mutex::new(Snapshot::of(&Totals::default(), now.mono)),
            history: Mutex::new(VecDeque::from([HistoryPoint {
                snap: Snapshot::of(&Totals::default(), now.mono),
                evicted_keys: 0,
            }])),
            next_tick_ns: AtomicU64::new(HISTORY_INTERVAL.as_nanos() as u64),
            process_info: std::sync::OnceLock::new(),
            ha: std::sync::OnceLock::new(),
        })
    }

    /// Mounts the start-up segment of `size` bytes (`--global-segment-size`, SPEC §11).
    pub fn mount_startup_segment(&self, now: Now, size: u64) -> Result<(), MountError> {
        let out = self.store.mount_anonymous(now.mono, MountKind::Startup, size, self.config.protocol, "")?;
        self.own.bump(Ctr::MountReq, out.segment_ids.len() as u64);
        // The start-up mount is part of "start": fold it into the initial summary snapshot so
        // the first window's Mount rate counts only requests.
        let mut snap = lock(&self.snapshot);
        if snap.at == self.start {
            *snap = Snapshot::of(&self.totals(), self.start);
            let mut history = lock(&self.history);
            if let Some(first) = history.front_mut().filter(|p| p.snap.at == self.start) {
                first.snap = snap.clone();
            }
        }
        Ok(())
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Codec limits derived from the configuration.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Registers a new worker's counters (summed at scrape time).
    pub fn register_worker(&self) -> Arc<WorkerStats> {
        let stats = Arc::new(WorkerStats::new());
        lock(&self.workers).push(stats.clone());
        stats
    }

    /// Installs the data plane that carries transfers to other nodes (once; later calls are
    /// ignored). Without one, a value whose replicas all live on other nodes cannot be read
    /// through this process.
    pub fn set_data_plane(&self, dp: Arc<dyn DataPlane>) {
        let _ = self.data_plane.set(dp);
    }

    /// The data plane, if one is installed.
    pub fn data_plane(&self) -> Option<&Arc<dyn DataPlane>> {
        self.data_plane.get()
    }

    /// Turns this process into a store node of another master (docs/cluster.md): the REST
    /// object and mount endpoints work on that master's cluster through the data plane's
    /// [`crate::transfer::TransferOp::Cluster`] operations, `/health` follows the node's
    /// registration and `/metrics` adds the node's series. Set once, before serving.
    pub fn set_node(&self, node: Arc<crate::node::NodeState>) {
        let _ = self.node.set(node);
    }

    /// Installs the KV event publisher's counters (what `/kv_events/status` shows).
    pub fn set_kv_events(&self, stats: Arc<crate::kv_events::KvStats>) {
        let _ = self.kv_events.set(stats);
    }

    /// The KV event publisher's counters, when one runs.
    pub fn kv_events(&self) -> Option<&Arc<crate::kv_events::KvStats>> {
        self.kv_events.get()
    }

    /// The node state, in store-node mode.
    pub fn node(&self) -> Option<&Arc<crate::node::NodeState>> {
        self.node.get()
    }

    /// The shutdown flag and the open-connection count shared by every listener's links.
    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.lifecycle
    }

    /// Enters the shutting-down state (SPEC §2.7). Idempotent.
    pub fn begin_shutdown(&self) {
        self.lifecycle.begin_shutdown();
    }

    /// True after [`Master::begin_shutdown`].
    pub fn is_shutting_down(&self) -> bool {
        self.lifecycle.is_shutting_down()
    }

    /// Tells `/cluster_summary` the program's version, runtime and worker count (once; later
    /// calls are ignored). Without it the core's own version and `embedded` are shown.
    pub fn set_process_info(&self, info: ProcessInfo) {
        let _ = self.process_info.set(info);
    }

    /// What [`Master::set_process_info`] set, or the core's defaults.
    pub fn process_info(&self) -> ProcessInfo {
        self.process_info.get().cloned().unwrap_or_else(|| ProcessInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            runtime: "embedded".to_string(),
            workers: lock(&self.workers).len().saturating_sub(1),
        })
    }

    /// Makes this a highly available master with `state` (before serving): the store keeps
    /// a replication journal and starts as a standby replica.
    pub fn set_ha(&self, state: Arc<crate::ha::HaState>) -> Arc<crate::store::Journal> {
        let _ = self.ha.set(state);
        self.store.enable_journal()
    }

    /// The HA state, on a highly available master.
    pub fn ha(&self) -> Option<&Arc<crate::ha::HaState>> {
        self.ha.get()
    }

    /// Does this master serve the service plane at `now`? Always without HA; on a highly
    /// available master only as the leader, within its lease.
    pub fn serves(&self, now: Instant) -> bool {
        self.ha.get().is_none_or(|h| h.serves(now))
    }

    /// Next process-wide deadline (store deadlines, summary snapshots, history points).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let snap = self.start + Duration::from_nanos(self.next_tick_ns.load(Ordering::Acquire));
        if self.ha.get().is_some_and(|h| !h.is_leader()) {
            return Some(snap);
        }
        Some(self.store.poll_timeout().map_or(snap, |d| d.min(snap)))
    }

    /// Runs process-wide transitions due at `now`. Any worker may call it; calls are idempotent.
    pub fn handle_timeout(&self, now: Now) {
        // A standby's replica is passive: its clients heartbeat the leader, not it.
        if self.serves(now.mono) {
            self.store.handle_timeout(now.mono);
        }
        self.snapshot_if_due(now);
    }

    /// Takes the `/metrics/summary` snapshot of the latest multiple of its interval, and the
    /// history point of the latest multiple of [`HISTORY_INTERVAL`], if due at `now` (SPEC
    /// §4.2). Called by timers and before a summary is rendered, so a summary served just
    /// after a multiple of 10 s (before the timer fired) never reports a window of 10 s or more.
    pub(crate) fn snapshot_if_due(&self, now: Now) {
        let elapsed = now.mono.saturating_duration_since(self.start).as_nanos() as u64;
        if elapsed < self.next_tick_ns.load(Ordering::Acquire) {
            return;
        }
        let mut snap = lock(&self.snapshot);
        if elapsed < self.next_tick_ns.load(Ordering::Acquire) {
            return; // another worker took it meanwhile
        }
        let totals = self.totals();
        // Both are dated at the latest multiple of their interval.
        let tick = HISTORY_INTERVAL.as_nanos() as u64;
        let k = elapsed / tick;
        let point = HistoryPoint {
            snap: Snapshot::of(&totals, self.start + Duration::from_nanos(k * tick)),
            evicted_keys: self.store.counters().evicted_keys,
        };
        let interval = SNAPSHOT_INTERVAL.as_nanos() as u64;
        let at = self.start + Duration::from_nanos(elapsed / interval * interval);
        if snap.at < at {
            *snap = Snapshot { at, ..point.snap.clone() };
        }
        let mut history = lock(&self.history);
        if history.len() == HISTORY_POINTS {
            history.pop_front();
        }
        history.push_back(point);
        self.next_tick_ns.store((k + 1) * tick, Ordering::Release);
    }

    /// The sum of every worker's counters.
    pub(crate) fn totals(&self) -> Totals {
        Totals::sum(&lock(&self.workers))
    }
}
