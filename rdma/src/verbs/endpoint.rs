//! The QP exchange on the handshake port, both sides, sans-IO (data-plane.md §3.3).
//!
//! ```text
//!   active A                                   passive B
//!   Endpoint::create ─ request() ─type 0──────► EndpointTable::handle
//!                                                 paths consistent? QP count? peer GID?
//!                                                 RESET→INIT→RTR→RTS each QP i → A's QP i
//!   on_reply ◄──── {B's paths, qp_num, gid, lid, ready_ack:false} (WaitReadyAck)
//!     symmetry, QP count, RESET→INIT→RTR→RTS
//!     ─ second frame {same, ready_ack:true} ──► accept_ready_ack → Connected
//!   on_ready_ack_reply ◄──── empty HandShakeDesc
//!   Connected
//! ```
//!
//! A non-empty `reply_msg` is a rejection; the passive side uses upstream's words ("QP count
//! mismatch in peer and local endpoints, check MC_MAX_EP_PER_CTX", "Invalid argument: peer nic
//! path inconsistency, …", "Failed to modify QP to RTR, …"). A peer whose frame has no
//! `ready_ack` does not support the follow-up: it is connected as soon as the QPs are, and
//! gets no second frame. The peer's GID and LID come from its frame (`local_gid`,
//! `local_lid`) when the GID is there, otherwise from the peer descriptor's `devices` entry of
//! the peer NIC (upstream's source). A request for an endpoint that exists re-establishes it
//! (QPs back to RESET and connected again), as upstream does.

use std::collections::BTreeMap;

use super::api::{Qp, QpCaps, Verbs, VerbsError};
use super::context::RdmaContext;
use super::gid::Gid;
use super::qp::{connect_qp, reset_qp, LocalPort, PeerQp};
use crate::te::desc::{DeviceDesc, HandShakeDesc};
use crate::te::handshake::{Frame, FrameType};

/// `MC_NUM_QP_PER_EP` default.
pub const NUM_QP_PER_EP: usize = 2;
/// Upstream's rejection when the QP lists differ in length.
pub const QP_COUNT_MISMATCH: &str = "QP count mismatch in peer and local endpoints, check MC_MAX_EP_PER_CTX";

/// `"<server>@<device>"`.
pub fn nic_path(server: &str, device: &str) -> String {
    format!("{server}@{device}")
}

/// `(server, device)` of a NIC path; `None` unless both are non-empty.
pub fn split_nic_path(path: &str) -> Option<(&str, &str)> {
    let (server, device) = path.split_once('@')?;
    (!server.is_empty() && !device.is_empty()).then_some((server, device))
}

/// A type-0 frame carrying `desc`.
pub fn connection_frame(desc: &HandShakeDesc) -> Frame {
    Frame::json(FrameType::Connection, desc)
}

/// Where an endpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpState {
    /// QPs created, not connected.
    Unconnected,
    /// Passive: QPs in RTS, waiting for the peer's `ready_ack:true` frame.
    WaitReadyAck,
    /// Active: QPs in RTS, the `ready_ack:true` frame sent, waiting for its reply.
    ReadyAckSent,
    /// Both sides in RTS.
    Connected,
}

/// Why the active side's exchange failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointError {
    /// The peer set `reply_msg`.
    Rejected(String),
    /// The reply's NIC paths are not ours mirrored.
    PathMismatch {
        /// What we sent (local, peer).
        sent: (String, String),
        /// What came back (local, peer).
        got: (String, String),
    },
    /// The reply's QP list has another length.
    QpCountMismatch {
        /// Ours.
        local: usize,
        /// The peer's.
        peer: usize,
    },
    /// No usable GID for the peer.
    NoPeerAddress(String),
    /// A reply arrived in a state that expects none.
    UnexpectedReply(EpState),
    /// A QP transition failed.
    Connect(String),
}

impl std::fmt::Display for EndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointError::Rejected(m) => write!(f, "handshake rejected by peer: {m}"),
            EndpointError::PathMismatch { sent, got } => write!(
                f,
                "Invalid argument: received packet mismatch, local.local_nic_path: {}, local.peer_nic_path: {}, \
                 peer.local_nic_path: {}, peer.peer_nic_path: {}",
                sent.0, sent.1, got.0, got.1
            ),
            EndpointError::QpCountMismatch { local, peer } => {
                write!(f, "{QP_COUNT_MISMATCH} (local {local}, peer {peer})")
            }
            EndpointError::NoPeerAddress(p) => write!(f, "Peer nic not found in that server: {p}"),
            EndpointError::UnexpectedReply(s) => write!(f, "handshake reply in state {s:?}"),
            EndpointError::Connect(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for EndpointError {}

/// The peer's GID and LID: from the frame when it has a GID, else from its descriptor device.
pub fn peer_address(frame: &HandShakeDesc, device: Option<&DeviceDesc>) -> Option<(Gid, u16)> {
    if !frame.local_gid.is_empty() {
        if let Ok(gid) = Gid::parse(&frame.local_gid) {
            return Some((gid, frame.local_lid));
        }
    }
    let d = device?;
    Some((Gid::parse(&d.gid).ok()?, d.lid))
}

/// One RDMA endpoint: the RC QPs between a local NIC and a peer NIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Our NIC path.
    pub local_nic_path: String,
    /// The peer's NIC path.
    pub peer_nic_path: String,
    /// The QPs, paired by index with the peer's.
    pub qps: Vec<Qp>,
    /// Their numbers.
    pub qp_nums: Vec<u32>,
    /// The peer's QP numbers, once known.
    pub peer_qp_nums: Vec<u32>,
    /// Where the exchange is.
    pub state: EpState,
    /// The local port the QPs use.
    pub port: LocalPort,
}

impl Endpoint {
    /// Creates `n` RC QPs on `ctx` (its PD, its CQ for send and receive). On failure the QPs
    /// made so far are destroyed.
    pub fn create(
        verbs: &mut dyn Verbs,
        ctx: &RdmaContext,
        local_nic_path: String,
        peer_nic_path: String,
        n: usize,
        caps: QpCaps,
    ) -> Result<Self, VerbsError> {
        let mut qps = Vec::with_capacity(n);
        let mut qp_nums = Vec::with_capacity(n);
        for _ in 0..n {
            match verbs.create_qp(ctx.pd, ctx.cq, caps) {
                Ok((qp, num)) => {
                    qps.push(qp);
                    qp_nums.push(num);
                }
                Err(e) => {
                    for qp in qps {
                        let _ = verbs.destroy_qp(qp);
                    }
                    return Err(e);
                }
            }
        }
        Ok(Self {
            local_nic_path,
            peer_nic_path,
            qps,
            qp_nums,
            peer_qp_nums: Vec::new(),
            state: EpState::Unconnected,
            port: ctx.port,
        })
    }

    fn own_desc(&self, ready_ack: Option<bool>) -> HandShakeDesc {
        HandShakeDesc {
            local_gid: self.port.gid.to_string(),
            local_lid: self.port.lid,
            local_nic_path: self.local_nic_path.clone(),
            payload: String::new(),
            peer_nic_path: self.peer_nic_path.clone(),
            qp_num: self.qp_nums.clone(),
            ready_ack,
            reply_msg: String::new(),
        }
    }

    fn connect_all(&mut self, verbs: &mut dyn Verbs, gid: Gid, lid: u16, peer_qps: &[u32]) -> Result<(), String> {
        for (&qp, &qp_num) in self.qps.iter().zip(peer_qps) {
            connect_qp(verbs, qp, &self.port, &PeerQp { gid, lid, qp_num }).map_err(|e| e.message)?;
        }
        self.peer_qp_nums = peer_qps.to_vec();
        Ok(())
    }

    /// Active side, first frame: our paths, QPs, GID and LID, `ready_ack:false` ("supported").
    pub fn request(&self) -> HandShakeDesc {
        self.own_desc(Some(false))
    }

    /// Active side: the passive side's reply. Checks rejection, path symmetry and QP count,
    /// connects the QPs, and returns the `ready_ack:true` frame to send when the peer supports
    /// it (then call [`Endpoint::on_ready_ack_reply`] with its answer), or `None` (connected).
    pub fn on_reply(
        &mut self,
        verbs: &mut dyn Verbs,
        reply: &HandShakeDesc,
        peer_device: Option<&DeviceDesc>,
    ) -> Result<Option<HandShakeDesc>, EndpointError> {
        if self.state != EpState::Unconnected {
            return Err(EndpointError::UnexpectedReply(self.state));
        }
        if !reply.reply_msg.is_empty() {
            return Err(EndpointError::Rejected(reply.reply_msg.clone()));
        }
        if reply.local_nic_path != self.peer_nic_path || reply.peer_nic_path != self.local_nic_path {
            return Err(EndpointError::PathMismatch {
                sent: (self.local_nic_path.clone(), self.peer_nic_path.clone()),
                got: (reply.local_nic_path.clone(), reply.peer_nic_path.clone()),
            });
        }
        if reply.qp_num.len() != self.qps.len() {
            return Err(EndpointError::QpCountMismatch { local: self.qps.len(), peer: reply.qp_num.len() });
        }
        let (gid, lid) =
            peer_address(reply, peer_device).ok_or_else(|| EndpointError::NoPeerAddress(self.peer_nic_path.clone()))?;
        self.connect_all(verbs, gid, lid, &reply.qp_num).map_err(EndpointError::Connect)?;
        if reply.ready_ack.is_some() {
            self.state = EpState::ReadyAckSent;
            Ok(Some(self.own_desc(Some(true))))
        } else {
            self.state = EpState::Connected;
            Ok(None)
        }
    }

    /// Active side: the answer to the `ready_ack:true` frame (empty = accepted).
    pub fn on_ready_ack_reply(&mut self, reply: &HandShakeDesc) -> Result<(), EndpointError> {
        if self.state != EpState::ReadyAckSent {
            return Err(EndpointError::UnexpectedReply(self.state));
        }
        if !reply.reply_msg.is_empty() {
            return Err(EndpointError::Rejected(reply.reply_msg.clone()));
        }
        self.state = EpState::Connected;
        Ok(())
    }

    /// Passive side, first frame: validates, connects, and returns the reply (with
    /// `reply_msg` set on any failure).
    pub fn accept(
        &mut self,
        verbs: &mut dyn Verbs,
        req: &HandShakeDesc,
        peer_device: Option<&DeviceDesc>,
    ) -> HandShakeDesc {
        if self.state != EpState::Unconnected {
            log::info!("RDMA handshake: re-establishing {} <-> {}", self.local_nic_path, self.peer_nic_path);
            self.disconnect(verbs);
        }
        if req.peer_nic_path != self.local_nic_path || req.local_nic_path != self.peer_nic_path {
            let reply_msg = format!(
                "Invalid argument: peer nic path inconsistency, expect {} + {}, while got {} + {}",
                self.local_nic_path, self.peer_nic_path, req.peer_nic_path, req.local_nic_path
            );
            return HandShakeDesc { reply_msg, ..HandShakeDesc::default() };
        }
        let mut reply = self.own_desc(Some(false));
        if req.qp_num.len() != self.qps.len() {
            reply.reply_msg = QP_COUNT_MISMATCH.to_owned();
            return reply;
        }
        let Some((gid, lid)) = peer_address(req, peer_device) else {
            reply.reply_msg = format!("Peer nic not found in that server: {}", self.peer_nic_path);
            return reply;
        };
        if let Err(m) = self.connect_all(verbs, gid, lid, &req.qp_num) {
            reply.reply_msg = m;
            return reply;
        }
        self.state = if req.ready_ack.is_some() { EpState::WaitReadyAck } else { EpState::Connected };
        reply
    }

    /// Passive side, the `ready_ack:true` frame: `Connected` when it names the QPs we
    /// connected to; the reply is the empty descriptor, or a `reply_msg`.
    pub fn accept_ready_ack(&mut self, req: &HandShakeDesc) -> HandShakeDesc {
        let ok = matches!(self.state, EpState::WaitReadyAck | EpState::Connected) && req.qp_num == self.peer_qp_nums;
        if !ok {
            let reply_msg = format!(
                "ready ACK for {} does not match the endpoint ({:?}, peer QPs {:?}, got {:?})",
                self.peer_nic_path, self.state, self.peer_qp_nums, req.qp_num
            );
            return HandShakeDesc { reply_msg, ..HandShakeDesc::default() };
        }
        self.state = EpState::Connected;
        HandShakeDesc::default()
    }

    /// QPs back to RESET (outstanding requests produce no completions).
    pub fn disconnect(&mut self, verbs: &mut dyn Verbs) {
        for &qp in &self.qps {
            if let Err(e) = reset_qp(verbs, qp) {
                log::warn!("RDMA: {e}");
            }
        }
        self.peer_qp_nums.clear();
        self.state = EpState::Unconnected;
    }

    /// Destroys the QPs.
    pub fn destroy(self, verbs: &mut dyn Verbs) -> Result<(), VerbsError> {
        for qp in self.qps {
            verbs.destroy_qp(qp)?;
        }
        Ok(())
    }
}

/// Looks up the peer descriptor's device for `(server, device)` (upstream reads the peer's
/// segment descriptor); `None` when unknown.
pub type PeerDeviceLookup<'a> = &'a dyn Fn(&str, &str) -> Option<DeviceDesc>;

/// The passive side's endpoints, keyed by (local device, peer NIC path), and its answer to
/// every type-0 frame.
#[derive(Debug, Default)]
pub struct EndpointTable {
    /// The endpoints.
    pub endpoints: BTreeMap<(String, String), Endpoint>,
    /// How many QPs a new endpoint gets when `match_peer_qp_count` is off.
    pub num_qp_per_ep: usize,
    /// A new endpoint gets as many QPs as the peer offers (1 ..= 64), instead of
    /// `num_qp_per_ep` and "QP count mismatch" for any other count.
    pub match_peer_qp_count: bool,
    /// The QP sizes.
    pub caps: QpCaps,
}

impl EndpointTable {
    /// A table creating `num_qp_per_ep` QPs per endpoint; `match_peer_qp_count` as given.
    pub fn new(num_qp_per_ep: usize, match_peer_qp_count: bool, caps: QpCaps) -> Self {
        Self { endpoints: BTreeMap::new(), num_qp_per_ep, match_peer_qp_count, caps }
    }

    /// The reply to a type-0 request. `server` is this node's segment (or
    /// `rdma_server_name`), `contexts` its open HCAs.
    pub fn handle(
        &mut self,
        verbs: &mut dyn Verbs,
        contexts: &[RdmaContext],
        server: &str,
        req: &HandShakeDesc,
        lookup: PeerDeviceLookup<'_>,
    ) -> HandShakeDesc {
        let reject = |reply_msg: String| HandShakeDesc { reply_msg, ..HandShakeDesc::default() };
        let Some((our_server, device)) = split_nic_path(&req.peer_nic_path) else {
            return reject(format!("Parse peer nic path failed: {}", req.peer_nic_path));
        };
        if our_server != server {
            return reject(format!(
                "Invalid argument: peer nic path inconsistency, this server is {server}, while got {}",
                req.peer_nic_path
            ));
        }
        let Some(ctx) = contexts.iter().find(|c| c.name == device) else {
            return reject(format!("Local nic not found: {}", req.peer_nic_path));
        };
        let Some((peer_server, peer_device)) = split_nic_path(&req.local_nic_path) else {
            return reject(format!("Parse peer nic path failed: {}", req.local_nic_path));
        };
        let key = (ctx.name.clone(), req.local_nic_path.clone());
        if req.ready_ack == Some(true) {
            return match self.endpoints.get_mut(&key) {
                Some(ep) => ep.accept_ready_ack(req),
                None => reject(format!("ready ACK for unknown endpoint {}", req.local_nic_path)),
            };
        }
        let wanted = if self.match_peer_qp_count && (1..=64).contains(&req.qp_num.len()) {
            req.qp_num.len()
        } else {
            self.num_qp_per_ep
        };
        if self.endpoints.get(&key).is_some_and(|ep| ep.qps.len() != wanted) {
            if let Some(old) = self.endpoints.remove(&key) {
                if let Err(e) = old.destroy(verbs) {
                    log::warn!("RDMA: {e}");
                }
            }
        }
        if !self.endpoints.contains_key(&key) {
            let local = nic_path(server, &ctx.name);
            match Endpoint::create(verbs, ctx, local, req.local_nic_path.clone(), wanted, self.caps) {
                Ok(ep) => {
                    self.endpoints.insert(key.clone(), ep);
                }
                Err(e) => return reject(format!("Failed to create QP: {e}")),
            }
        }
        let device = lookup(peer_server, peer_device);
        match self.endpoints.get_mut(&key) {
            Some(ep) => ep.accept(verbs, req, device.as_ref()),
            None => reject("endpoint vanished".to_owned()),
        }
    }
}
