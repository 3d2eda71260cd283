//! High availability on etcd, the IO half (docs/ha.md; the sans-IO half is `mc_core::ha`
//! and the store's journal).
//!
//! Threads, all started by [`start`]:
//! - the supervisor: loads the replicated state, runs the election (a lease and a txn that
//!   creates `mooncake-store/<cluster>/master_view` only if absent, as upstream), keeps the
//!   lease alive while leading, steps down when it cannot;
//! - the watcher: one watch of the cluster prefix from the loaded revision, applying every
//!   change to the standby replica and reporting view changes;
//! - the committer, while leading: takes journal batches and writes them in fenced txns,
//!   then wakes the replies waiting for them ([`HaPlane`]).

pub(crate) mod etcd;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mc_core::ha::{decode_op, encode_op, HaRole, HaState};
use mc_core::store::{HaOp, Journal};
use mc_core::transfer::{DataPlane, Transfer, TransferOp, TransferOutcome};
use mc_core::Master;

use etcd::{prefix_end, Etcd, TxnOp, WatchMsg};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What `--enable-ha` and its flags say.
#[derive(Clone, Debug)]
pub struct HaConfig {
    pub endpoints: Vec<String>,
    pub cluster_id: String,
    /// `host:rpc_port` published as the view.
    pub address: String,
    pub lease_ttl: Duration,
    pub max_txn_ops: usize,
}

/// Keys per page of the snapshot load.
const PAGE: i64 = 2000;
/// Bytes of keys and values per txn (etcd refuses requests over 1.5 MiB by default).
const TXN_BYTES: usize = 1 << 20;
/// Txns of one batch sent at once.
const PARALLEL_TXNS: usize = 8;
/// How long a winner may take to apply the changes up to its view before it gives up.
const CATCH_UP: Duration = Duration::from_secs(5);
/// History older than this is compacted by the leader.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

type Done = Box<dyn FnOnce(TransferOutcome) + Send>;

/// What the threads share.
#[derive(Default)]
struct Shared {
    /// The view the watch last saw: (leader address, create revision).
    view: Option<(String, i64)>,
    /// Highest revision the watcher applied.
    applied: i64,
    /// The watch of this generation failed (reload).
    watch_failed: Option<String>,
    /// Bumped at every (re)load; a watcher of an older one stops.
    generation: u64,
    /// The committer found the view taken by another master.
    fenced: bool,
}

struct Waiters {
    list: Vec<(u64, Instant, Done)>,
    /// The committer should look at the journal.
    pending: bool,
}

/// The HA machinery of one master.
pub struct Ha {
    cfg: HaConfig,
    etcd: Etcd,
    master: Arc<Master>,
    state: Arc<HaState>,
    journal: Arc<Journal>,
    shared: Mutex<Shared>,
    changed: Condvar,
    waiters: Mutex<Waiters>,
    wake: Condvar,
    /// Leading term; the committer of an older one exits.
    term: AtomicU64,
    /// The lease while leading (0: none).
    lease: AtomicU64,
}

/// The process's data plane with durability waits answered by the committer.
pub struct HaPlane {
    ha: Arc<Ha>,
    inner: Option<Arc<dyn DataPlane>>,
}

impl DataPlane for HaPlane {
    fn submit(&self, transfer: Transfer, done: Box<dyn FnOnce(TransferOutcome) + Send>) {
        match transfer.op {
            TransferOp::Durable { seq } => self.ha.wait_durable(seq, transfer.deadline, done),
            _ => match &self.inner {
                Some(p) => p.submit(transfer, done),
                None => done(TransferOutcome::Failed("no data plane in this process".into())),
            },
        }
    }
}

/// Makes `master` highly available: returns the HA machinery (for [`plane`]) and the
/// journal (for the acceptors' [`mc_core::ha::DurableAcceptor`]). Threads start at once;
/// the master serves only once elected.
pub fn start(master: &Arc<Master>, cfg: HaConfig) -> (Arc<Ha>, Arc<Journal>) {
    let state = HaState::new(&cfg.cluster_id, &cfg.address, Instant::now());
    let journal = master.set_ha(state.clone());
    let etcd = Etcd::new(&cfg.endpoints, Duration::from_secs(2));
    let ha = Arc::new(Ha {
        cfg,
        etcd,
        master: master.clone(),
        state,
        journal: journal.clone(),
        shared: Mutex::new(Shared::default()),
        changed: Condvar::new(),
        waiters: Mutex::new(Waiters { list: Vec::new(), pending: false }),
        wake: Condvar::new(),
        term: AtomicU64::new(0),
        lease: AtomicU64::new(0),
    });
    {
        let h = Arc::downgrade(&ha);
        journal.set_observer(Arc::new(move || {
            if let Some(h) = h.upgrade() {
                lock(&h.waiters).pending = true;
                h.wake.notify_one();
            }
        }));
    }
    let h = ha.clone();
    std::thread::Builder::new().name("ha".into()).spawn(move || h.supervise()).expect("spawn the HA thread");
    (ha, journal)
}

/// The data plane of a highly available master: `inner` (the TE initiator, if any) with the
/// durability waits answered by `ha`.
pub fn plane(ha: &Arc<Ha>, inner: Option<Arc<dyn DataPlane>>) -> Arc<dyn DataPlane> {
    Arc::new(HaPlane { ha: ha.clone(), inner })
}

impl Ha {
    fn view_key(&self) -> Vec<u8> {
        self.state.view_key().into_bytes()
    }

    fn prefix(&self) -> String {
        self.state.state_prefix()
    }

    /// A reply waits until the journal is durable up to `seq`.
    fn wait_durable(&self, seq: u64, deadline: Instant, done: Done) {
        let mut w = lock(&self.waiters);
        if self.journal.durable() >= seq {
            drop(w);
            done(TransferOutcome::Written);
            return;
        }
        if !self.state.is_leader() {
            drop(w);
            done(TransferOutcome::Failed("this master is not the leader".into()));
            return;
        }
        w.list.push((seq, deadline, done));
        w.pending = true;
        self.wake.notify_one();
    }

    /// Answers every waiter that is durable now, past its deadline, or (`fail`) all of them.
    fn settle_waiters(&self, fail: Option<&str>) {
        let now = Instant::now();
        let durable = self.journal.durable();
        let mut out = Vec::new();
        {
            let mut w = lock(&self.waiters);
            let mut i = 0;
            while i < w.list.len() {
                let (seq, deadline, _) = &w.list[i];
                if fail.is_some() || *seq <= durable || *deadline <= now {
                    out.push(w.list.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        }
        for (seq, _, done) in out {
            if seq <= durable {
                done(TransferOutcome::Written);
            } else {
                let why = fail.unwrap_or("the change was not made durable in time");
                done(TransferOutcome::Failed(why.to_string()));
            }
        }
    }

    /// The supervisor: load, follow, campaign, lead, and around again.
    fn supervise(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            self.state.set(HaRole::Starting, None, None);
            let rev = match self.load() {
                Ok(rev) => rev,
                Err(e) => {
                    // A restore that fails is never served (upstream #3497): retry later.
                    log::error!("HA: cannot load the replicated state: {e}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            let generation = self.start_watch(rev);
            self.follow(generation);
        }
    }

    /// Loads the replicated state at the current revision into an empty replica.
    fn load(&self) -> Result<i64, String> {
        let started = Instant::now();
        self.master.store().ha_clear(Instant::now());
        let (kvs, _, rev) = self.etcd.range(&self.view_key(), None, 0, 0)?;
        let view = kvs.first().map(|kv| (String::from_utf8_lossy(&kv.value).into_owned(), kv.create_revision));
        let prefix = self.prefix();
        let mut n = 0;
        // Segments first, then objects (their replicas need the segments).
        for part in ["s/", "o/"] {
            let start = format!("{prefix}{part}").into_bytes();
            let end = prefix_end(&start);
            let mut from = start.clone();
            loop {
                let (kvs, more, _) = self.etcd.range(&from, Some(&end), rev, PAGE)?;
                let mut ops = Vec::with_capacity(kvs.len());
                for kv in &kvs {
                    if let Some(op) = decode_op(&prefix, &kv.key, Some(&kv.value)).map_err(|e| e.to_string())? {
                        ops.push(op);
                    }
                }
                n += ops.len();
                self.master.store().ha_apply(Instant::now(), ops);
                match kvs.last() {
                    Some(last) if more => {
                        from = last.key.clone();
                        from.push(0);
                    }
                    _ => break,
                }
            }
        }
        let (segs, objs) = self.master.store().ha_counts();
        log::info!(
            "HA: loaded {n} records at revision {rev} in {:?}: {segs} segments, {objs} objects; leader {:?}",
            started.elapsed(),
            view.as_ref().map(|v| &v.0)
        );
        let mut sh = lock(&self.shared);
        sh.view = view;
        sh.applied = rev;
        sh.watch_failed = None;
        sh.fenced = false;
        Ok(rev)
    }

    /// Starts the watcher of a new generation from `rev + 1`.
    fn start_watch(self: &Arc<Self>, rev: i64) -> u64 {
        let generation = {
            let mut sh = lock(&self.shared);
            sh.generation += 1;
            sh.generation
        };
        let h = self.clone();
        std::thread::Builder::new()
            .name("ha-watch".into())
            .spawn(move || {
                let cluster = mc_core::ha::cluster_prefix(&h.cfg.cluster_id) + "/";
                let r = h.etcd.watch(cluster.as_bytes(), rev + 1, |msg| h.on_watch(generation, msg));
                let mut sh = lock(&h.shared);
                if sh.generation == generation && sh.watch_failed.is_none() {
                    sh.watch_failed = Some(r.err().unwrap_or_else(|| "watch ended".into()));
                }
                drop(sh);
                h.changed.notify_all();
            })
            .expect("spawn the HA watcher");
        generation
    }

    /// One watch message: apply the state changes (not while leading: those are ours),
    /// note view changes.
    fn on_watch(&self, generation: u64, msg: WatchMsg) -> bool {
        if lock(&self.shared).generation != generation {
            return false;
        }
        let events = match msg {
            WatchMsg::Events(events) => events,
            WatchMsg::Cancelled(why) => {
                lock(&self.shared).watch_failed = Some(why);
                self.changed.notify_all();
                return false;
            }
        };
        let prefix = self.prefix();
        let view_key = self.view_key();
        let leading = self.state.is_leader();
        let mut ops: Vec<HaOp> = Vec::new();
        let mut view_change = None;
        let mut top = 0;
        for e in events {
            top = top.max(e.mod_revision);
            if e.key == view_key {
                view_change = Some(e.value.map(|v| (String::from_utf8_lossy(&v).into_owned(), e.create_revision)));
                continue;
            }
            if leading {
                continue;
            }
            match decode_op(&prefix, &e.key, e.value.as_deref()) {
                Ok(Some(op)) => ops.push(op),
                Ok(None) => {}
                Err(err) => {
                    // Never serve a replica that missed a change: reload.
                    log::error!("HA: {err}; reloading");
                    lock(&self.shared).watch_failed = Some(err.to_string());
                    self.changed.notify_all();
                    return false;
                }
            }
        }
        if !ops.is_empty() {
            self.master.store().ha_apply(Instant::now(), ops);
        }
        let mut sh = lock(&self.shared);
        if let Some(v) = view_change {
            sh.view = v;
        }
        sh.applied = sh.applied.max(top);
        drop(sh);
        self.changed.notify_all();
        true
    }

    /// Standby and candidate: until the watch fails or a term ends.
    fn follow(self: &Arc<Self>, generation: u64) {
        loop {
            let view = {
                let sh = lock(&self.shared);
                if sh.generation != generation || sh.watch_failed.is_some() {
                    log::warn!("HA: replica out of step ({:?}); reloading", sh.watch_failed);
                    return;
                }
                sh.view.clone()
            };
            match view {
                Some((leader, version)) => {
                    self.state.set(HaRole::Standby, Some(leader), Some(version));
                    let sh = lock(&self.shared);
                    let _ = self.changed.wait_timeout(sh, Duration::from_secs(1));
                }
                None => {
                    self.state.set(HaRole::Candidate, None, None);
                    match self.campaign() {
                        Ok(Some((lease, version, granted_at))) => {
                            self.lead(lease, version, granted_at);
                            // Whatever ended the term, the replica may hold changes etcd
                            // does not: start again from etcd.
                            return;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            log::warn!("HA: campaign failed: {e}");
                            std::thread::sleep(Duration::from_millis(500));
                        }
                    }
                }
            }
        }
    }

    /// Tries to create the view: the lease, the view's revision and when the lease was asked
    /// for, once this master has caught up to that revision.
    fn campaign(&self) -> Result<Option<(i64, i64, Instant)>, String> {
        let ttl = self.cfg.lease_ttl.as_secs().max(1);
        let asked = Instant::now();
        let lease = self.etcd.grant(ttl)?;
        let created = match self.etcd.create(&self.view_key(), self.cfg.address.as_bytes(), lease) {
            Ok(c) => c,
            Err(e) => {
                let _ = self.etcd.revoke(lease);
                return Err(e);
            }
        };
        let Some(version) = created else {
            let _ = self.etcd.revoke(lease);
            return Ok(None);
        };
        self.state.set(HaRole::CatchingUp, Some(self.cfg.address.clone()), Some(version));
        // Serve only once every change before the view is applied.
        let until = Instant::now() + CATCH_UP;
        let mut sh = lock(&self.shared);
        while sh.applied < version && sh.watch_failed.is_none() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sh = self.changed.wait_timeout(sh, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        if sh.applied < version {
            drop(sh);
            log::error!("HA: won view {version} but could not catch up to it; stepping back");
            let _ = self.etcd.revoke(lease);
            return Err("catch-up failed".into());
        }
        Ok(Some((lease, version, asked)))
    }

    /// Leads until the lease or the view is lost.
    fn lead(self: &Arc<Self>, lease: i64, version: i64, granted_at: Instant) {
        let ttl = Duration::from_secs(self.cfg.lease_ttl.as_secs().max(1));
        // A lease asked for at t lasts at least until t + TTL at etcd: stop short of it.
        let margin = (ttl / 6).max(Duration::from_millis(300));
        self.lease.store(lease as u64, Ordering::Release);
        self.master.store().ha_promote(Instant::now());
        self.state.serve(version, granted_at + ttl - margin);
        let term = self.term.fetch_add(1, Ordering::AcqRel) + 1;
        let (segs, objs) = self.master.store().ha_counts();
        log::info!("HA: leading view {version} as {} ({segs} segments, {objs} objects restored)", self.cfg.address);
        {
            let h = self.clone();
            std::thread::Builder::new()
                .name("ha-commit".into())
                .spawn(move || h.commit_loop(term, version))
                .expect("spawn the HA committer");
        }
        let every = ttl / 3;
        let mut next_keepalive = Instant::now() + every;
        let mut safe_until = granted_at + ttl - margin;
        let mut compact_at = Instant::now() + COMPACT_EVERY;
        let mut compact_rev = 0i64;
        let reason = loop {
            {
                let sh = lock(&self.shared);
                if sh.fenced {
                    break "another master holds the view".to_string();
                }
                match &sh.view {
                    Some((_, v)) if *v == version => {}
                    other => break format!("the view changed to {other:?}"),
                }
                if let Some(w) = &sh.watch_failed {
                    log::warn!("HA: watch failed while leading ({w}); still leading on the lease");
                }
                let wait = next_keepalive.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    let _ = self.changed.wait_timeout(sh, wait.min(Duration::from_millis(200)));
                    continue;
                }
            }
            let asked = Instant::now();
            match self.etcd.keepalive(lease) {
                Ok(left) if left > 0 => {
                    safe_until = asked + Duration::from_secs(left as u64) - margin;
                    self.state.renew(safe_until);
                    next_keepalive = asked + every;
                }
                Ok(_) => break "the lease expired".to_string(),
                Err(e) => {
                    if Instant::now() >= safe_until {
                        break format!("the lease could not be renewed in time: {e}");
                    }
                    next_keepalive = Instant::now() + Duration::from_millis(200);
                }
            }
            if Instant::now() >= compact_at {
                compact_at = Instant::now() + COMPACT_EVERY;
                if let Ok((_, _, rev)) = self.etcd.range(&self.view_key(), None, 0, 0) {
                    if compact_rev > 0 {
                        if let Err(e) = self.etcd.compact(compact_rev) {
                            log::debug!("HA: compaction to {compact_rev}: {e}");
                        }
                    }
                    compact_rev = rev;
                }
            }
        };
        log::warn!("HA: stepping down from view {version}: {reason}");
        self.step_down(&reason);
    }

    /// Stops serving, fails the waiting replies, gives the lease back.
    fn step_down(&self, reason: &str) {
        self.state.set(HaRole::Standby, None, None);
        self.term.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_all();
        self.settle_waiters(Some(&format!("lost leadership: {reason}")));
        let lease = self.lease.swap(0, Ordering::AcqRel) as i64;
        if lease != 0 {
            let _ = self.etcd.revoke(lease);
        }
    }

    /// Gives up leadership at shutdown, so that a standby takes over at once.
    pub fn resign(&self) {
        if self.state.is_leader() {
            // Let the last batch commit before the lease (and the view) goes.
            let until = Instant::now() + Duration::from_secs(2);
            while self.journal.durable() < self.journal.seq() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            self.step_down("shutting down");
        }
    }

    /// The committer of one term: batches of the journal, in fenced txns.
    fn commit_loop(self: Arc<Self>, term: u64, version: i64) {
        let fence = self.view_key();
        let prefix = self.prefix();
        loop {
            {
                let mut w = lock(&self.waiters);
                if !w.pending {
                    w = self.wake.wait_timeout(w, Duration::from_millis(50)).unwrap_or_else(PoisonError::into_inner).0;
                }
                w.pending = false;
            }
            if self.term.load(Ordering::Acquire) != term {
                return;
            }
            if let Some(batch) = self.master.store().ha_take(Instant::now()) {
                let ops: Vec<TxnOp> = batch
                    .ops
                    .iter()
                    .map(|op| match encode_op(&prefix, op) {
                        (key, Some(value)) => TxnOp::Put { key, value },
                        (key, None) => TxnOp::Delete { key },
                    })
                    .collect();
                match self.commit(&fence, version, &ops, term) {
                    Ok(()) => self.journal.set_durable(batch.upto),
                    Err(fenced) => {
                        log::warn!("HA: batch of {} changes not committed: {fenced}", ops.len());
                        let mut sh = lock(&self.shared);
                        sh.fenced = true;
                        drop(sh);
                        self.changed.notify_all();
                        self.settle_waiters(Some(&fenced));
                        return;
                    }
                }
            }
            self.settle_waiters(None);
        }
    }

    /// Writes `ops` in txns of at most `max_txn_ops` operations and [`TXN_BYTES`], several
    /// at once (their keys are distinct); retries failed ones while the term lasts.
    fn commit(&self, fence: &[u8], version: i64, ops: &[TxnOp], term: u64) -> Result<(), String> {
        let mut chunks: Vec<&[TxnOp]> = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, op) in ops.iter().enumerate() {
            let b = match op {
                TxnOp::Put { key, value } => key.len() + value.len(),
                TxnOp::Delete { key } => key.len(),
            } * 4
                / 3
                + 64;
            if i > start && (i - start >= self.cfg.max_txn_ops || bytes + b > TXN_BYTES) {
                chunks.push(&ops[start..i]);
                start = i;
                bytes = 0;
            }
            bytes += b;
        }
        if start < ops.len() {
            chunks.push(&ops[start..]);
        }
        let mut todo: Vec<&[TxnOp]> = chunks;
        let mut delay = Duration::from_millis(20);
        while !todo.is_empty() {
            if self.term.load(Ordering::Acquire) != term || !self.state.serves(Instant::now()) {
                return Err("this master stopped leading before the changes were committed".into());
            }
            let results: Vec<Result<bool, String>> = std::thread::scope(|s| {
                let handles: Vec<_> = todo
                    .iter()
                    .take(PARALLEL_TXNS)
                    .map(|c| s.spawn(move || self.etcd.fenced_txn(fence, version, c)))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("txn thread panicked".into()))).collect()
            });
            let mut again = Vec::new();
            let mut failed = false;
            for (i, r) in results.into_iter().enumerate() {
                match r {
                    Ok(true) => {}
                    Ok(false) => return Err("fenced: another master holds the view".into()),
                    Err(e) => {
                        log::warn!("HA: txn failed, retrying: {e}");
                        failed = true;
                        again.push(todo[i]);
                    }
                }
            }
            again.extend(todo.iter().skip(PARALLEL_TXNS));
            if failed {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            todo = again;
        }
        Ok(())
    }
}
