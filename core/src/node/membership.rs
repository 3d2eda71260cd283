//! A store node's membership in its master (rpc-spec §1, §5.3): connect, check the
//! version, mount this node's segments, heartbeat, remount when the master asks, reconnect
//! with backoff when it goes away, and unmount when leaving. Sans-IO: the driver connects,
//! sends the calls of [`Action::Call`] and reports what happened; time comes in as `now`.
//!
//! ```text
//!            ┌──────────── connect failed / connection lost / 3 pings unanswered ─────────┐
//!            ▼                                                                            │
//!   Down{retry_at} ──timeout──► Connecting ──connected──► Handshake (ServiceReady) ──────┤
//!    ▲  (backoff 100 ms … 5 s)                                 │ version "2.0.0"          │
//!    │                                                         ▼                          │
//!    │                                         Mounting (MountSegment × segments) ────────┤
//!    │                                                         │ all answered             │
//!    │                                                         ▼                          │
//!    │                      Up: Ping every second; NEED_REMOUNT ──► ReMountSegment(all) ──┘
//!    │                                                         │ leave()
//!    └─ (not after leave)                                      ▼
//!                                        Leaving (UnmountSegment × segments) ──► Left
//! ```
//!
//! While not `Up`, [`Membership::health`] names the reason (the node's `/health` answers 503
//! with it).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::op::{mount_args, segment_value, CallOutcomeError, CallResult, NodeIdentity, NodeSegment};
use crate::rpc::client::{self, NEED_REMOUNT};
use crate::rpc::{Rpc, Value};

/// Heartbeat period (upstream's Ping thread: 1 s).
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Pings in a row without an answer before the connection is given up (upstream: 3).
pub const PING_MISSES: u32 = 3;
/// First reconnect delay; doubled after each failure up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the handshake and the mounts may take before the connection is given up.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the driver does for the membership.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a connection to the master; report with [`Membership::handle_connected`] or
    /// [`Membership::handle_connect_failed`].
    Connect,
    /// Send this call; report its reply with [`Membership::handle_reply`] and `token`.
    Call {
        /// Identifies the call.
        token: u64,
        /// Method.
        rpc: Rpc,
        /// Arguments.
        args: Vec<Value>,
    },
    /// Close the connection (calls in flight fail); no report expected.
    Disconnect,
}

#[derive(Debug)]
enum Phase {
    Down { retry_at: Instant },
    Connecting,
    Handshake { token: u64, deadline: Instant },
    Mounting { waiting: Vec<u64>, deadline: Instant },
    Up { next_ping: Instant, ping: Option<u64>, remount: Option<u64> },
    Leaving { waiting: Vec<u64>, deadline: Instant },
    Left,
}

/// Counters of the membership (exported as node metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MembershipStats {
    /// Connections established.
    pub connects: u64,
    /// Connections lost or given up.
    pub disconnects: u64,
    /// ReMountSegment calls (NEED_REMOUNT answers).
    pub remounts: u64,
    /// Pings answered.
    pub pings: u64,
}

/// The state machine.
#[derive(Debug)]
pub struct Membership {
    id: NodeIdentity,
    master: String,
    segments: Vec<NodeSegment>,
    phase: Phase,
    backoff: Duration,
    misses: u32,
    out: VecDeque<Action>,
    next_token: u64,
    reason: String,
    stats: MembershipStats,
}

impl Membership {
    /// A node `id` of `master` (an address, for messages) with `segments`; it connects at
    /// the first [`Membership::handle_timeout`] (due at `now`).
    pub fn new(id: NodeIdentity, master: &str, segments: Vec<NodeSegment>, now: Instant) -> Self {
        Self {
            id,
            master: master.to_string(),
            segments,
            phase: Phase::Down { retry_at: now },
            backoff: MIN_BACKOFF,
            misses: 0,
            out: VecDeque::new(),
            next_token: 0,
            reason: format!("connecting to the master at {master}"),
            stats: MembershipStats::default(),
        }
    }

    /// Ok while registered with the master; otherwise why not.
    pub fn health(&self) -> Result<(), &str> {
        match self.phase {
            Phase::Up { .. } => Ok(()),
            _ => Err(&self.reason),
        }
    }

    /// Counters.
    pub fn stats(&self) -> MembershipStats {
        self.stats
    }

    /// The segments this node has registered (or will register on the next connection).
    pub fn segments(&self) -> &[NodeSegment] {
        &self.segments
    }

    /// Segments mounted through the REST API (already registered by their mount call):
    /// included in every later remount.
    pub fn add_segments(&mut self, segs: impl IntoIterator<Item = NodeSegment>) {
        for s in segs {
            if !self.segments.iter().any(|x| x.id == s.id) {
                self.segments.push(s);
            }
        }
    }

    /// Segments unmounted through the REST API: no longer remounted.
    pub fn remove_segments(&mut self, ids: &[Uuid]) {
        self.segments.retain(|s| !ids.contains(&s.id));
    }

    /// Next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// When [`Membership::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Down { retry_at } => Some(retry_at),
            Phase::Handshake { deadline, .. } | Phase::Mounting { deadline, .. } | Phase::Leaving { deadline, .. } => {
                Some(deadline)
            }
            Phase::Up { next_ping, .. } => Some(next_ping),
            Phase::Connecting | Phase::Left => None,
        }
    }

    /// True once [`Membership::leave`] finished (or gave up).
    pub fn has_left(&self) -> bool {
        matches!(self.phase, Phase::Left)
    }

    fn call(&mut self, rpc: Rpc, args: Vec<Value>) -> u64 {
        self.next_token += 1;
        let token = self.next_token;
        self.out.push_back(Action::Call { token, rpc, args });
        token
    }

    /// Gives the connection up: down, and retry after the backoff.
    fn down(&mut self, now: Instant, reason: String, close: bool) {
        if matches!(self.phase, Phase::Leaving { .. } | Phase::Left) {
            self.phase = Phase::Left;
            return;
        }
        if close {
            self.out.push_back(Action::Disconnect);
        }
        if !matches!(self.phase, Phase::Down { .. } | Phase::Connecting) {
            self.stats.disconnects += 1;
        }
        self.reason = reason;
        self.phase = Phase::Down { retry_at: now + self.backoff };
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.misses = 0;
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Down { retry_at } if retry_at <= now => {
                self.phase = Phase::Connecting;
                self.out.push_back(Action::Connect);
            }
            Phase::Handshake { deadline, .. } | Phase::Mounting { deadline, .. } if deadline <= now => {
                let why = format!("the master at {} did not answer the registration in time", self.master);
                self.down(now, why, true);
            }
            Phase::Leaving { deadline, .. } if deadline <= now => {
                self.out.push_back(Action::Disconnect);
                self.phase = Phase::Left;
            }
            Phase::Up { next_ping, ping, remount } if next_ping <= now => {
                if ping.is_some() {
                    self.misses += 1;
                    if self.misses >= PING_MISSES {
                        let why = format!("the master at {} stopped answering heartbeats", self.master);
                        self.down(now, why, true);
                        return;
                    }
                }
                let token = self.call(Rpc::Ping, vec![client::uuid(self.id.client_id)]);
                self.phase = Phase::Up { next_ping: now + PING_INTERVAL, ping: Some(token), remount };
            }
            _ => {}
        }
    }

    /// The connection is open: handshake.
    pub fn handle_connected(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Connecting) {
            return;
        }
        self.stats.connects += 1;
        let token = self.call(Rpc::ServiceReady, vec![]);
        self.phase = Phase::Handshake { token, deadline: now + SETUP_TIMEOUT };
    }

    /// The connection could not be opened.
    pub fn handle_connect_failed(&mut self, now: Instant, why: &str) {
        if matches!(self.phase, Phase::Connecting) {
            self.down(now, format!("the master at {} is unreachable: {why}", self.master), false);
        }
    }

    /// The connection broke (calls in flight are failed by the driver, or not reported).
    pub fn handle_disconnected(&mut self, now: Instant, why: &str) {
        if !matches!(self.phase, Phase::Down { .. }) {
            self.down(now, format!("lost the connection to the master at {}: {why}", self.master), false);
        }
    }

    /// The reply of call `token`.
    pub fn handle_reply(&mut self, now: Instant, token: u64, reply: CallResult) {
        match &mut self.phase {
            Phase::Handshake { token: t, .. } if *t == token => match reply {
                Ok(Value::Ok(v)) if v.as_bytes() == Some(self.id.version.as_bytes()) => {
                    let calls: Vec<Vec<Value>> = self.segments.iter().map(|s| mount_args(&self.id, s)).collect();
                    let waiting: Vec<u64> = calls.into_iter().map(|a| self.call(Rpc::MountSegment, a)).collect();
                    self.phase = Phase::Mounting { waiting, deadline: now + SETUP_TIMEOUT };
                    self.mounted_check(now);
                }
                Ok(Value::Ok(v)) => {
                    let got = String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into_owned();
                    let why = format!(
                        "the master at {} speaks version {got:?}, this node {:?} (--service-version)",
                        self.master, self.id.version
                    );
                    self.backoff = MAX_BACKOFF;
                    self.down(now, why, true);
                }
                other => {
                    let why = format!("the master at {} refused the handshake: {}", self.master, describe(&other));
                    self.down(now, why, true);
                }
            },
            Phase::Mounting { waiting, .. } if waiting.contains(&token) => {
                waiting.retain(|&t| t != token);
                if let Err(why) = result_of(&reply) {
                    log::warn!("mounting a segment with the master at {} failed: {why}", self.master);
                }
                if let Err(CallOutcomeError::Unreachable(why)) = reply {
                    let why = format!("lost the connection to the master at {}: {why}", self.master);
                    self.down(now, why, true);
                    return;
                }
                self.mounted_check(now);
            }
            Phase::Up { ping, remount, .. } => {
                if *ping == Some(token) {
                    *ping = None;
                    match &reply {
                        Ok(Value::Ok(v)) => {
                            self.misses = 0;
                            self.stats.pings += 1;
                            let status = v.as_fields().and_then(|f| f.get(1)).and_then(Value::as_i64);
                            if status == Some(NEED_REMOUNT) && remount.is_none() {
                                let segs: Vec<Value> =
                                    self.segments.iter().map(|s| segment_value(&self.id, s)).collect();
                                let args = vec![Value::List(segs), client::uuid(self.id.client_id)];
                                self.stats.remounts += 1;
                                let t = self.call(Rpc::ReMountSegment, args);
                                if let Phase::Up { remount, .. } = &mut self.phase {
                                    *remount = Some(t);
                                }
                            }
                        }
                        Err(CallOutcomeError::Unreachable(why)) => {
                            let why = format!("lost the connection to the master at {}: {why}", self.master);
                            self.down(now, why, true);
                        }
                        other => log::warn!("heartbeat to the master at {}: {}", self.master, describe(other)),
                    }
                } else if *remount == Some(token) {
                    *remount = None;
                    if let Err(why) = result_of(&reply) {
                        log::warn!("remounting with the master at {} failed: {why}", self.master);
                    }
                }
            }
            Phase::Leaving { waiting, .. } if waiting.contains(&token) => {
                waiting.retain(|&t| t != token);
                if let Err(why) = result_of(&reply) {
                    log::warn!("unmounting from the master at {} failed: {why}", self.master);
                }
                if waiting.is_empty() {
                    self.out.push_back(Action::Disconnect);
                    self.phase = Phase::Left;
                }
            }
            _ => {}
        }
    }

    fn mounted_check(&mut self, now: Instant) {
        if let Phase::Mounting { waiting, .. } = &self.phase {
            if waiting.is_empty() {
                self.backoff = MIN_BACKOFF;
                self.misses = 0;
                self.reason.clear();
                // The first ping at once: a master that lost us answers NEED_REMOUNT.
                self.phase = Phase::Up { next_ping: now, ping: None, remount: None };
            }
        }
    }

    /// Leaves the cluster: unmounts every segment (when connected), then [`Membership::has_left`].
    pub fn leave(&mut self, now: Instant) {
        match self.phase {
            Phase::Up { .. } | Phase::Mounting { .. } if !self.segments.is_empty() => {
                let ids: Vec<Uuid> = self.segments.iter().map(|s| s.id).collect();
                let cid = client::uuid(self.id.client_id);
                let waiting = ids
                    .into_iter()
                    .map(|id| self.call(Rpc::UnmountSegment, vec![client::uuid(id), cid.clone()]))
                    .collect();
                self.reason = "leaving the cluster".into();
                self.phase = Phase::Leaving { waiting, deadline: now + Duration::from_secs(2) };
            }
            Phase::Leaving { .. } | Phase::Left => {}
            _ => {
                self.out.push_back(Action::Disconnect);
                self.phase = Phase::Left;
            }
        }
    }
}

fn result_of(reply: &CallResult) -> Result<(), String> {
    match reply {
        Ok(v) => match client::expected(v) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(code)) => Err(format!("error code {code}")),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(describe(&Err(e.clone()))),
    }
}

fn describe(reply: &CallResult) -> String {
    match reply {
        Ok(Value::Err(code)) => format!("error code {code:?}"),
        Ok(v) => format!("unexpected reply {v:?}"),
        Err(CallOutcomeError::Unreachable(why)) => why.clone(),
        Err(CallOutcomeError::Call(e)) => e.to_string(),
    }
}
