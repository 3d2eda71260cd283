//! The verbs layer as a trait: every libibverbs call the transport makes, with plain-value
//! arguments and results, so the state machines above it run against [`super::mock::MockVerbs`]
//! in tests and against `verbs::sys::SysVerbs` (feature `verbs`) on an HCA.
//!
//! Resources are named by small handles that the implementation maps to its objects.

use std::fmt;

use super::gid::Gid;
use super::qp::{QpState, QpTransition};

/// `IBV_ACCESS_LOCAL_WRITE`.
pub const ACCESS_LOCAL_WRITE: u32 = 1;
/// `IBV_ACCESS_REMOTE_WRITE`.
pub const ACCESS_REMOTE_WRITE: u32 = 1 << 1;
/// `IBV_ACCESS_REMOTE_READ`.
pub const ACCESS_REMOTE_READ: u32 = 1 << 2;
/// `IBV_ACCESS_REMOTE_ATOMIC`.
pub const ACCESS_REMOTE_ATOMIC: u32 = 1 << 3;
/// `IBV_ACCESS_RELAXED_ORDERING` (an optional flag: ignored where unsupported).
pub const ACCESS_RELAXED_ORDERING: u32 = 1 << 20;
/// What upstream registers every buffer with (§3.2).
pub const MR_ACCESS: u32 = ACCESS_LOCAL_WRITE | ACCESS_REMOTE_WRITE | ACCESS_REMOTE_READ;

macro_rules! handle {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);
    )*};
}

handle!(
    /// An open device context (`ibv_context`).
    Ctx,
    /// A protection domain (`ibv_pd`).
    Pd,
    /// A completion queue (`ibv_cq`).
    Cq,
    /// A memory region (`ibv_mr`).
    Mr,
    /// A queue pair (`ibv_qp`).
    Qp,
);

/// A failed verbs call: which call, and the errno it left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerbsError {
    /// The call, e.g. `"ibv_modify_qp(RTR)"`.
    pub call: String,
    /// `errno` after the call (0 if it did not set one).
    pub errno: i32,
    /// Extra words (a device name, an address).
    pub detail: String,
}

impl VerbsError {
    /// An error of `call` with `errno` and `detail`.
    pub fn new(call: impl Into<String>, errno: i32, detail: impl Into<String>) -> Self {
        Self { call: call.into(), errno, detail: detail.into() }
    }
}

impl fmt::Display for VerbsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed", self.call)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        if self.errno != 0 {
            write!(f, ": {}", std::io::Error::from_raw_os_error(self.errno))?;
        }
        Ok(())
    }
}

impl std::error::Error for VerbsError {}

/// `ibv_mtu` (1 = 256 B … 5 = 4096 B).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mtu {
    /// 256 bytes.
    M256 = 1,
    /// 512 bytes.
    M512 = 2,
    /// 1024 bytes.
    M1024 = 3,
    /// 2048 bytes.
    M2048 = 4,
    /// 4096 bytes (`MC_MTU` default).
    M4096 = 5,
}

impl Mtu {
    /// The enum of an `ibv_mtu` value.
    pub fn from_ibv(v: u32) -> Option<Self> {
        Some(match v {
            1 => Mtu::M256,
            2 => Mtu::M512,
            3 => Mtu::M1024,
            4 => Mtu::M2048,
            5 => Mtu::M4096,
            _ => return None,
        })
    }

    /// The `ibv_mtu` value.
    pub fn ibv(self) -> u32 {
        self as u32
    }

    /// The MTU of a byte count (`MC_MTU`: 256 … 4096).
    pub fn from_bytes(n: u32) -> Option<Self> {
        Some(match n {
            256 => Mtu::M256,
            512 => Mtu::M512,
            1024 => Mtu::M1024,
            2048 => Mtu::M2048,
            4096 => Mtu::M4096,
            _ => return None,
        })
    }
}

/// What `ibv_query_port` says about a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// `IBV_PORT_ACTIVE` (4).
    pub active: bool,
    /// The port's LID (0 on RoCE).
    pub lid: u16,
    /// `active_mtu`.
    pub active_mtu: Mtu,
    /// `gid_tbl_len`.
    pub gid_table_len: u32,
}

/// What `ibv_query_device` says that the transport needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceAttr {
    /// `phys_port_cnt`.
    pub ports: u8,
    /// `max_mr_size`.
    pub max_mr_size: u64,
    /// `max_qp_wr`.
    pub max_qp_wr: u32,
    /// `max_cqe`.
    pub max_cqe: u32,
}

/// `ibv_qp_init_attr.cap` of an RC QP (§3.1: 256 WRs, 4 SGEs, 64 inline bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QpCaps {
    /// `max_send_wr` = `max_recv_wr` (`MC_MAX_WR`).
    pub max_wr: u32,
    /// `max_send_sge` = `max_recv_sge` (`MC_MAX_SGE`).
    pub max_sge: u32,
    /// `max_inline_data` (`MC_MAX_INLINE`).
    pub max_inline: u32,
}

impl Default for QpCaps {
    fn default() -> Self {
        Self { max_wr: 256, max_sge: 4, max_inline: 64 }
    }
}

/// A registered memory region's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MrKeys {
    /// The region.
    pub mr: Mr,
    /// `lkey`: names the region in local SGEs.
    pub lkey: u32,
    /// `rkey`: lets peers read and write it.
    pub rkey: u32,
}

/// A one-sided operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// `IBV_WR_RDMA_READ`: remote → local.
    Read,
    /// `IBV_WR_RDMA_WRITE`: local → remote.
    Write,
}

/// One signaled, single-SGE work request (§3.4 item 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkRequest {
    /// Comes back in the completion.
    pub wr_id: u64,
    /// READ or WRITE.
    pub opcode: Opcode,
    /// The SGE's address.
    pub local_addr: u64,
    /// The SGE's length.
    pub len: u32,
    /// The SGE's `lkey`.
    pub lkey: u32,
    /// `wr.rdma.remote_addr`.
    pub remote_addr: u64,
    /// `wr.rdma.rkey`.
    pub rkey: u32,
}

/// `ibv_wc_status`, as far as the transport tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WcStatus {
    /// `IBV_WC_SUCCESS`.
    Success,
    /// `IBV_WC_WR_FLUSH_ERR` (5): the QP went to ERR; redispatched, not a rail failure.
    Flushed,
    /// Any other status (the raw value).
    Error(u32),
}

impl WcStatus {
    /// The status of a raw `ibv_wc_status`.
    pub fn from_ibv(v: u32) -> Self {
        match v {
            0 => WcStatus::Success,
            5 => WcStatus::Flushed,
            other => WcStatus::Error(other),
        }
    }
}

/// One work completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The work request's `wr_id`.
    pub wr_id: u64,
    /// How it ended.
    pub status: WcStatus,
    /// The QP it ran on.
    pub qp_num: u32,
}

/// `ibv_post_send` refused part of a list: the first refused request and what followed it
/// were not posted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostError {
    /// Index of the first request not posted.
    pub first_unposted: usize,
    /// The call's error.
    pub error: VerbsError,
}

/// The libibverbs calls of the RDMA transport.
pub trait Verbs {
    /// `ibv_get_device_list`: the device names (possibly none).
    fn device_names(&mut self) -> Result<Vec<String>, VerbsError>;
    /// `ibv_open_device` of the named device.
    fn open_device(&mut self, name: &str) -> Result<Ctx, VerbsError>;
    /// `ibv_query_device`.
    fn query_device(&mut self, ctx: Ctx) -> Result<DeviceAttr, VerbsError>;
    /// `ibv_query_port`.
    fn query_port(&mut self, ctx: Ctx, port: u8) -> Result<PortInfo, VerbsError>;
    /// `ibv_query_gid`.
    fn query_gid(&mut self, ctx: Ctx, port: u8, index: u32) -> Result<Gid, VerbsError>;
    /// `ibv_alloc_pd`.
    fn alloc_pd(&mut self, ctx: Ctx) -> Result<Pd, VerbsError>;
    /// `ibv_create_cq` with `cqe` entries (no completion channel; the transport polls).
    fn create_cq(&mut self, ctx: Ctx, cqe: u32) -> Result<Cq, VerbsError>;
    /// `ibv_reg_mr` of `[addr, addr + len)`; the memory must stay valid until deregistered.
    fn reg_mr(&mut self, pd: Pd, addr: u64, len: u64, access: u32) -> Result<MrKeys, VerbsError>;
    /// `ibv_dereg_mr`.
    fn dereg_mr(&mut self, mr: Mr) -> Result<(), VerbsError>;
    /// `ibv_create_qp`: an RC QP, `cq` for send and receive, `sq_sig_all` 0; with its number.
    fn create_qp(&mut self, pd: Pd, cq: Cq, caps: QpCaps) -> Result<(Qp, u32), VerbsError>;
    /// `ibv_query_qp` of the state only.
    fn query_qp_state(&mut self, qp: Qp) -> Result<QpState, VerbsError>;
    /// `ibv_modify_qp` with the transition's attributes and mask.
    fn modify_qp(&mut self, qp: Qp, transition: &QpTransition) -> Result<(), VerbsError>;
    /// `ibv_post_send` of a chained list of signaled RDMA READ/WRITE requests.
    fn post_send(&mut self, qp: Qp, wrs: &[WorkRequest]) -> Result<(), PostError>;
    /// `ibv_poll_cq` for up to `max` completions, appended to `out`; how many came.
    fn poll_cq(&mut self, cq: Cq, max: usize, out: &mut Vec<Completion>) -> Result<usize, VerbsError>;
    /// `ibv_destroy_qp`.
    fn destroy_qp(&mut self, qp: Qp) -> Result<(), VerbsError>;
    /// `ibv_destroy_cq`.
    fn destroy_cq(&mut self, cq: Cq) -> Result<(), VerbsError>;
    /// `ibv_dealloc_pd`.
    fn dealloc_pd(&mut self, pd: Pd) -> Result<(), VerbsError>;
    /// `ibv_close_device`.
    fn close_device(&mut self, ctx: Ctx) -> Result<(), VerbsError>;
}
