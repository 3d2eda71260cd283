//! The RDMA verbs transport (data-plane.md §3): what it takes to interoperate with upstream
//! Mooncake's `RdmaTransport`, built over a [`Verbs`] trait so that everything except the
//! FFI runs and is tested without an HCA.
//!
//! | module | what | needs a device |
//! |---|---|---|
//! | [`gid`] | GIDs as `%02x:` strings (§3.2) | no |
//! | [`slice`](mod@slice) | 64 KiB slices, the tail kept whole up to 80 KiB, cut at buffer boundaries (§3.4) | no |
//! | [`api`] | the [`Verbs`] trait: every `ibv_*` call as values | no |
//! | [`qp`] | RESET → INIT → RTR → RTS with upstream's attributes (§3.3) | no |
//! | [`context`] | per-HCA PD, CQ, GID choice; registration of every buffer on every HCA (§3.1, §3.2) | no |
//! | [`desc`] | `devices`, `priority_matrix`, per-buffer `rkey`/`lkey`, MR splitting, device choice (§2.3, §3.2) | no |
//! | [`endpoint`] | the type-0 QP exchange, active and passive, with the `ready_ack` frame (§3.3) | no |
//! | [`transfer`] | posting, completion polling, retries (§3.4) | no |
//! | [`mock`] | [`mock::MockVerbs`], the recording test double | no |
//! | `sys` (feature `verbs`) | [`Verbs`] over `rdma-sys`, and device discovery | yes |
//!
//! [`probe`] is what the binary calls for `--protocol rdma`: the open devices, or the reason
//! there are none (no device, a down port, or a build without the `verbs` feature). It must
//! exit 1 with that reason.
//!
//! Not here yet: the wiring into [`crate::te::handshake_server`] (type 0 still answers as
//! TCP-only; [`endpoint::EndpointTable::handle`] is the function to call instead), async
//! events, the SIEVE endpoint cache, rail pausing, GPU memory. docs/rdma.md has the operator's
//! view and the loopback test for a machine with an HCA.

pub mod api;
pub mod context;
pub mod desc;
pub mod endpoint;
pub mod gid;
pub mod mock;
pub mod qp;
pub mod slice;
#[cfg(feature = "verbs")]
pub mod sys;
pub mod transfer;

#[cfg(test)]
mod tests;

pub use api::Verbs;

use api::{Mtu, QpCaps};
use te_desc::DeviceDesc;

use crate::te::desc as te_desc;

/// Upstream's knobs that the transport reads (`MC_*`), with upstream's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerbsConfig {
    /// HCAs to use (`MC_RDMA_DEVICES`-like); empty: every device found.
    pub devices: Vec<String>,
    /// `MC_IB_PORT` (1).
    pub port: u8,
    /// `MC_GID_INDEX`; `None`: probe (first IPv4-mapped GID, else first non-zero).
    pub gid_index: Option<u8>,
    /// `MC_MTU` (4096).
    pub mtu_limit: Mtu,
    /// `MC_IB_SL` (0).
    pub sl: u8,
    /// `MC_IB_TC` (0).
    pub traffic_class: u8,
    /// `MC_NUM_QP_PER_EP` (2).
    pub num_qp_per_ep: usize,
    /// QP sizes (`MC_MAX_WR` 256, `MC_MAX_SGE` 4, `MC_MAX_INLINE` 64).
    pub caps: QpCaps,
    /// CQ entries (4096).
    pub max_cqe: u32,
    /// `MC_MAX_MR_SIZE` (2^40).
    pub max_mr_size: u64,
    /// `MC_RETRY_CNT` (9).
    pub retry_cnt: usize,
}

impl Default for VerbsConfig {
    fn default() -> Self {
        Self {
            devices: Vec::new(),
            port: 1,
            gid_index: None,
            mtu_limit: Mtu::M4096,
            sl: 0,
            traffic_class: 0,
            num_qp_per_ep: endpoint::NUM_QP_PER_EP,
            caps: QpCaps::default(),
            max_cqe: transfer::MAX_CQE as u32,
            max_mr_size: desc::MAX_MR_SIZE,
            retry_cnt: transfer::RETRY_CNT,
        }
    }
}

/// An HCA that [`probe`] opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The descriptor entry (`name`, `lid`, `gid`).
    pub device: DeviceDesc,
    /// The GID index chosen.
    pub gid_index: u8,
    /// The port's active MTU.
    pub active_mtu: Mtu,
    /// `max_mr_size` in effect.
    pub max_mr_size: u64,
}

/// Opens every configured HCA with `verbs` (PD and CQ included), describes them, and releases
/// them again. The error names the cause, e.g. "no RDMA device found (ibv_get_device_list
/// returned 0 devices)".
pub fn probe_with(verbs: &mut dyn Verbs, cfg: &VerbsConfig) -> Result<Vec<DeviceInfo>, String> {
    let contexts = context::RdmaContext::open_all(verbs, cfg).map_err(|e| e.to_string())?;
    let info = contexts
        .iter()
        .map(|c| DeviceInfo {
            device: c.device_desc(),
            gid_index: c.port.gid_index,
            active_mtu: c.port.active_mtu,
            max_mr_size: c.max_mr_size,
        })
        .collect();
    for c in &contexts {
        if let Err(e) = c.close(verbs) {
            log::warn!("RDMA: {e}");
        }
    }
    Ok(info)
}

/// [`probe_with`] over the real verbs library (feature `verbs`).
#[cfg(feature = "verbs")]
pub fn probe(cfg: &VerbsConfig) -> Result<Vec<DeviceInfo>, String> {
    probe_with(&mut sys::SysVerbs::new(), cfg)
}

/// Without the `verbs` feature there is no RDMA: the error says so.
#[cfg(not(feature = "verbs"))]
pub fn probe(_cfg: &VerbsConfig) -> Result<Vec<DeviceInfo>, String> {
    Err("RDMA is not available: mc-master was built without the `verbs` cargo feature \
         (rebuild with `--features mc-rdma/verbs`, which needs libibverbs-dev, librdmacm-dev and libclang-dev)"
        .to_owned())
}
