//! The RC QP state machine RESET → INIT → RTR → RTS with exactly upstream's attributes
//! (data-plane.md §3.3, `RdmaEndPoint::doSetupConnection`), as values: [`connect_plan`] says
//! which `ibv_modify_qp` calls to make, [`connect_qp`] makes them through a [`Verbs`].
//!
//! | transition | attributes (mask) |
//! |---|---|
//! | → RESET | only if the QP is not already in RESET (upstream queries first: E810 refuses RESET → RESET) |
//! | → INIT | port, `pkey_index` 0, access `LOCAL_WRITE\|REMOTE_READ\|REMOTE_WRITE\|REMOTE_ATOMIC` |
//! | → RTR | `path_mtu = min(active, MC_MTU 4096)`, `is_global 1`, `dgid` = peer GID, `sgid_index` = local, `hop_limit 16`, `dlid` = peer LID, `sl 0`, `traffic_class`, `src_path_bits 0`, `static_rate 0`, port, `dest_qp_num`, `rq_psn 0`, `max_dest_rd_atomic 16`, `min_rnr_timer 12` |
//! | → RTS | `timeout 14`, `retry_cnt 7`, `rnr_retry 7`, `sq_psn 0`, `max_rd_atomic 16` |

use super::api::{
    Mtu, Qp, Verbs, VerbsError, ACCESS_LOCAL_WRITE, ACCESS_REMOTE_ATOMIC, ACCESS_REMOTE_READ, ACCESS_REMOTE_WRITE,
};
use super::gid::Gid;

/// `ibv_qp_attr_mask` bits (values of `<infiniband/verbs.h>`).
pub mod mask {
    /// `IBV_QP_STATE`.
    pub const STATE: u32 = 1;
    /// `IBV_QP_ACCESS_FLAGS`.
    pub const ACCESS_FLAGS: u32 = 1 << 3;
    /// `IBV_QP_PKEY_INDEX`.
    pub const PKEY_INDEX: u32 = 1 << 4;
    /// `IBV_QP_PORT`.
    pub const PORT: u32 = 1 << 5;
    /// `IBV_QP_AV`.
    pub const AV: u32 = 1 << 7;
    /// `IBV_QP_PATH_MTU`.
    pub const PATH_MTU: u32 = 1 << 8;
    /// `IBV_QP_TIMEOUT`.
    pub const TIMEOUT: u32 = 1 << 9;
    /// `IBV_QP_RETRY_CNT`.
    pub const RETRY_CNT: u32 = 1 << 10;
    /// `IBV_QP_RNR_RETRY`.
    pub const RNR_RETRY: u32 = 1 << 11;
    /// `IBV_QP_RQ_PSN`.
    pub const RQ_PSN: u32 = 1 << 12;
    /// `IBV_QP_MAX_QP_RD_ATOMIC`.
    pub const MAX_QP_RD_ATOMIC: u32 = 1 << 13;
    /// `IBV_QP_MIN_RNR_TIMER`.
    pub const MIN_RNR_TIMER: u32 = 1 << 15;
    /// `IBV_QP_SQ_PSN`.
    pub const SQ_PSN: u32 = 1 << 16;
    /// `IBV_QP_MAX_DEST_RD_ATOMIC`.
    pub const MAX_DEST_RD_ATOMIC: u32 = 1 << 17;
    /// `IBV_QP_DEST_QPN`.
    pub const DEST_QPN: u32 = 1 << 20;
}

/// `MAX_HOP_LIMIT` upstream.
pub const HOP_LIMIT: u8 = 16;
/// `TIMEOUT` upstream (4.096 µs × 2^14 ≈ 67 ms per retry).
pub const TIMEOUT: u8 = 14;
/// `RETRY_CNT` upstream.
pub const RETRY_CNT: u8 = 7;
/// `rnr_retry` upstream (7 = infinite).
pub const RNR_RETRY: u8 = 7;
/// `min_rnr_timer` upstream.
pub const MIN_RNR_TIMER: u8 = 12;
/// `max_rd_atomic` and `max_dest_rd_atomic` upstream.
pub const RD_ATOMIC: u8 = 16;
/// Both PSNs are 0 (the wire contract, §3.5).
pub const PSN: u32 = 0;
/// The access flags of INIT.
pub const QP_ACCESS: u32 = ACCESS_LOCAL_WRITE | ACCESS_REMOTE_READ | ACCESS_REMOTE_WRITE | ACCESS_REMOTE_ATOMIC;

/// `ibv_qp_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QpState {
    /// `IBV_QPS_RESET` (0).
    Reset,
    /// `IBV_QPS_INIT` (1).
    Init,
    /// `IBV_QPS_RTR` (2).
    Rtr,
    /// `IBV_QPS_RTS` (3).
    Rts,
    /// `IBV_QPS_SQD` (4).
    Sqd,
    /// `IBV_QPS_SQE` (5).
    Sqe,
    /// `IBV_QPS_ERR` (6), or an unknown value.
    Error,
}

impl QpState {
    /// The state of an `ibv_qp_state` value.
    pub fn from_ibv(v: u32) -> Self {
        match v {
            0 => QpState::Reset,
            1 => QpState::Init,
            2 => QpState::Rtr,
            3 => QpState::Rts,
            4 => QpState::Sqd,
            5 => QpState::Sqe,
            _ => QpState::Error,
        }
    }

    /// The `ibv_qp_state` value.
    pub fn ibv(self) -> u32 {
        match self {
            QpState::Reset => 0,
            QpState::Init => 1,
            QpState::Rtr => 2,
            QpState::Rts => 3,
            QpState::Sqd => 4,
            QpState::Sqe => 5,
            QpState::Error => 6,
        }
    }
}

/// RESET → INIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitAttr {
    /// `port_num`.
    pub port_num: u8,
    /// `pkey_index` (0).
    pub pkey_index: u16,
    /// `qp_access_flags`.
    pub access: u32,
}

/// INIT → RTR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtrAttr {
    /// `path_mtu`.
    pub path_mtu: Mtu,
    /// `ah_attr.is_global` (1).
    pub is_global: u8,
    /// `ah_attr.grh.dgid`: the peer's GID.
    pub dgid: Gid,
    /// `ah_attr.grh.sgid_index`: the local GID index.
    pub sgid_index: u8,
    /// `ah_attr.grh.hop_limit` (16).
    pub hop_limit: u8,
    /// `ah_attr.grh.traffic_class` (`MC_IB_TC`, 0).
    pub traffic_class: u8,
    /// `ah_attr.dlid`: the peer's LID.
    pub dlid: u16,
    /// `ah_attr.sl` (`MC_IB_SL`, 0).
    pub sl: u8,
    /// `ah_attr.src_path_bits` (0).
    pub src_path_bits: u8,
    /// `ah_attr.static_rate` (0).
    pub static_rate: u8,
    /// `ah_attr.port_num`: the local port.
    pub port_num: u8,
    /// `dest_qp_num`: the peer QP of the same index.
    pub dest_qp_num: u32,
    /// `rq_psn` (0).
    pub rq_psn: u32,
    /// `max_dest_rd_atomic` (16).
    pub max_dest_rd_atomic: u8,
    /// `min_rnr_timer` (12).
    pub min_rnr_timer: u8,
}

/// RTR → RTS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtsAttr {
    /// `timeout` (14).
    pub timeout: u8,
    /// `retry_cnt` (7).
    pub retry_cnt: u8,
    /// `rnr_retry` (7).
    pub rnr_retry: u8,
    /// `sq_psn` (0).
    pub sq_psn: u32,
    /// `max_rd_atomic` (16).
    pub max_rd_atomic: u8,
}

/// One `ibv_modify_qp` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QpTransition {
    /// Any state → RESET (`IBV_QP_STATE` only).
    Reset,
    /// RESET → INIT.
    Init(InitAttr),
    /// INIT → RTR.
    Rtr(RtrAttr),
    /// RTR → RTS.
    Rts(RtsAttr),
}

impl QpTransition {
    /// The target state.
    pub fn state(&self) -> QpState {
        match self {
            QpTransition::Reset => QpState::Reset,
            QpTransition::Init(_) => QpState::Init,
            QpTransition::Rtr(_) => QpState::Rtr,
            QpTransition::Rts(_) => QpState::Rts,
        }
    }

    /// The `ibv_qp_attr_mask` upstream passes.
    pub fn mask(&self) -> u32 {
        use mask::*;
        match self {
            QpTransition::Reset => STATE,
            QpTransition::Init(_) => STATE | PKEY_INDEX | PORT | ACCESS_FLAGS,
            QpTransition::Rtr(_) => STATE | PATH_MTU | MIN_RNR_TIMER | AV | MAX_DEST_RD_ATOMIC | DEST_QPN | RQ_PSN,
            QpTransition::Rts(_) => STATE | TIMEOUT | RETRY_CNT | RNR_RETRY | SQ_PSN | MAX_QP_RD_ATOMIC,
        }
    }

    /// Upstream's words when this transition fails (the `reply_msg` prefix).
    pub fn failure_message(&self) -> &'static str {
        match self {
            QpTransition::Reset => "Failed to modify QP to RESET",
            QpTransition::Init(_) => "Failed to modify QP to INIT, check local context port num",
            QpTransition::Rtr(_) => "Failed to modify QP to RTR, check mtu, gid, peer lid, peer qp num",
            QpTransition::Rts(_) => "Failed to modify QP to RTS",
        }
    }

    /// The name used in error messages: `ibv_modify_qp(RTR)`.
    pub fn call_name(&self) -> &'static str {
        match self {
            QpTransition::Reset => "ibv_modify_qp(RESET)",
            QpTransition::Init(_) => "ibv_modify_qp(INIT)",
            QpTransition::Rtr(_) => "ibv_modify_qp(RTR)",
            QpTransition::Rts(_) => "ibv_modify_qp(RTS)",
        }
    }
}

/// The local side of a connection: one HCA port and its GID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalPort {
    /// The port number (`MC_IB_PORT`, 1).
    pub port_num: u8,
    /// The GID index (`MC_GID_INDEX` or probed).
    pub gid_index: u8,
    /// That GID.
    pub gid: Gid,
    /// The port's LID.
    pub lid: u16,
    /// The port's `active_mtu`.
    pub active_mtu: Mtu,
    /// `MC_MTU` (4096): the path MTU is at most this.
    pub mtu_limit: Mtu,
    /// `MC_IB_SL` (0).
    pub sl: u8,
    /// `MC_IB_TC` (0).
    pub traffic_class: u8,
}

/// The peer's address for one QP pairing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerQp {
    /// The peer HCA's GID.
    pub gid: Gid,
    /// The peer HCA's LID.
    pub lid: u16,
    /// The peer QP of the same index.
    pub qp_num: u32,
}

/// The `ibv_modify_qp` calls that connect a QP now in `current` to `peer`.
pub fn connect_plan(current: QpState, local: &LocalPort, peer: &PeerQp) -> Vec<QpTransition> {
    let mut plan = Vec::with_capacity(4);
    if current != QpState::Reset {
        plan.push(QpTransition::Reset);
    }
    plan.push(QpTransition::Init(InitAttr { port_num: local.port_num, pkey_index: 0, access: QP_ACCESS }));
    plan.push(QpTransition::Rtr(RtrAttr {
        path_mtu: local.active_mtu.min(local.mtu_limit),
        is_global: 1,
        dgid: peer.gid,
        sgid_index: local.gid_index,
        hop_limit: HOP_LIMIT,
        traffic_class: local.traffic_class,
        dlid: peer.lid,
        sl: local.sl,
        src_path_bits: 0,
        static_rate: 0,
        port_num: local.port_num,
        dest_qp_num: peer.qp_num,
        rq_psn: PSN,
        max_dest_rd_atomic: RD_ATOMIC,
        min_rnr_timer: MIN_RNR_TIMER,
    }));
    plan.push(QpTransition::Rts(RtsAttr {
        timeout: TIMEOUT,
        retry_cnt: RETRY_CNT,
        rnr_retry: RNR_RETRY,
        sq_psn: PSN,
        max_rd_atomic: RD_ATOMIC,
    }));
    plan
}

/// A failed connection step, with upstream's `reply_msg` words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectError {
    /// Upstream's message for the failed transition, then the verbs error.
    pub message: String,
    /// The verbs error.
    pub error: VerbsError,
}

/// Connects `qp` to `peer`: queries its state (a failed query is treated as ERR, as upstream
/// does), then runs [`connect_plan`].
pub fn connect_qp(verbs: &mut dyn Verbs, qp: Qp, local: &LocalPort, peer: &PeerQp) -> Result<(), ConnectError> {
    let current = verbs.query_qp_state(qp).unwrap_or(QpState::Error);
    for t in connect_plan(current, local, peer) {
        verbs
            .modify_qp(qp, &t)
            .map_err(|error| ConnectError { message: format!("{}: {error}", t.failure_message()), error })?;
    }
    Ok(())
}

/// Moves `qp` to RESET (disconnect; outstanding requests produce no completions).
pub fn reset_qp(verbs: &mut dyn Verbs, qp: Qp) -> Result<(), VerbsError> {
    verbs.modify_qp(qp, &QpTransition::Reset)
}
