//! Per-HCA resources (data-plane.md §3.1, upstream's `RdmaContext`) and memory registration
//! on every HCA (§3.2), over any [`Verbs`].
//!
//! [`RdmaContext::open`]: `ibv_open_device`, `ibv_query_device`, `ibv_query_port` (must be
//! active), the GID (`MC_GID_INDEX`, or probed: the first IPv4-mapped GID, else the first
//! non-zero one), `ibv_alloc_pd`, `ibv_create_cq(max_cqe)`. [`Registry`] registers each buffer
//! on every context with `LOCAL_WRITE|REMOTE_WRITE|REMOTE_READ`, split into pieces of at most
//! `max_mr_size`, and keeps the `lkey`/`rkey` of piece *i* on device *j* paired by index with
//! the descriptor's `devices[j]`.

use te_desc::{BufferDesc, DeviceDesc};

use super::api::{Cq, Ctx, Mr, Pd, Verbs, VerbsError, MR_ACCESS};
use super::desc::split_for_mr;
use super::gid::Gid;
use super::qp::LocalPort;
use super::VerbsConfig;
use crate::te::desc as te_desc;

/// One open HCA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaContext {
    /// The device name (`mlx5_0`).
    pub name: String,
    /// The context.
    pub ctx: Ctx,
    /// Its protection domain.
    pub pd: Pd,
    /// Its completion queue.
    pub cq: Cq,
    /// The port, GID and MTU connections use.
    pub port: LocalPort,
    /// `max_mr_size` (the smaller of the device's and `MC_MAX_MR_SIZE`).
    pub max_mr_size: u64,
}

/// Why a context could not be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// `ibv_get_device_list` returned no devices.
    NoDevice,
    /// `ibv_get_device_list` failed (no RDMA support in the kernel: `ENOSYS`).
    NoDeviceList(VerbsError),
    /// A configured device is not in the list.
    UnknownDevice(String),
    /// The port is down.
    PortDown(String, u8),
    /// No usable GID.
    NoGid(String),
    /// A verbs call failed.
    Verbs(VerbsError),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::NoDevice => f.write_str("no RDMA device found (ibv_get_device_list returned 0 devices)"),
            OpenError::NoDeviceList(e) => {
                write!(f, "no RDMA device found ({e}; no RDMA devices or no uverbs support in the kernel)")
            }
            OpenError::UnknownDevice(d) => write!(f, "RDMA device {d:?} not found"),
            OpenError::PortDown(d, p) => write!(f, "RDMA device {d}: port {p} is not active"),
            OpenError::NoGid(d) => write!(f, "RDMA device {d}: no usable GID on the port"),
            OpenError::Verbs(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpenError {}

impl From<VerbsError> for OpenError {
    fn from(e: VerbsError) -> Self {
        OpenError::Verbs(e)
    }
}

impl RdmaContext {
    /// Opens `name` and creates its PD and CQ.
    pub fn open(verbs: &mut dyn Verbs, name: &str, cfg: &VerbsConfig) -> Result<Self, OpenError> {
        let ctx = verbs.open_device(name)?;
        let attr = verbs.query_device(ctx)?;
        let info = verbs.query_port(ctx, cfg.port)?;
        if !info.active {
            return Err(OpenError::PortDown(name.to_owned(), cfg.port));
        }
        let (gid_index, gid) = match cfg.gid_index {
            Some(i) => {
                let gid = verbs.query_gid(ctx, cfg.port, i.into())?;
                if gid.is_zero() {
                    return Err(OpenError::NoGid(name.to_owned()));
                }
                (i, gid)
            }
            None => {
                let mut first = None;
                let mut v4 = None;
                for i in 0..info.gid_table_len.min(256) {
                    let Ok(gid) = verbs.query_gid(ctx, cfg.port, i) else { continue };
                    if gid.is_zero() {
                        continue;
                    }
                    first.get_or_insert((i as u8, gid));
                    if gid.is_ipv4_mapped() {
                        v4 = Some((i as u8, gid));
                        break;
                    }
                }
                v4.or(first).ok_or_else(|| OpenError::NoGid(name.to_owned()))?
            }
        };
        let pd = verbs.alloc_pd(ctx)?;
        let cq = verbs.create_cq(ctx, cfg.max_cqe)?;
        Ok(Self {
            name: name.to_owned(),
            ctx,
            pd,
            cq,
            port: LocalPort {
                port_num: cfg.port,
                gid_index,
                gid,
                lid: info.lid,
                active_mtu: info.active_mtu,
                mtu_limit: cfg.mtu_limit,
                sl: cfg.sl,
                traffic_class: cfg.traffic_class,
            },
            max_mr_size: attr.max_mr_size.min(cfg.max_mr_size),
        })
    }

    /// Opens `cfg.devices`, or every device when that is empty (upstream's topology
    /// discovery lists every HCA). No device at all is [`OpenError::NoDevice`].
    pub fn open_all(verbs: &mut dyn Verbs, cfg: &VerbsConfig) -> Result<Vec<Self>, OpenError> {
        let names = verbs.device_names().map_err(OpenError::NoDeviceList)?;
        if names.is_empty() {
            return Err(OpenError::NoDevice);
        }
        let wanted = if cfg.devices.is_empty() { names.clone() } else { cfg.devices.clone() };
        let mut out = Vec::new();
        for name in &wanted {
            if !names.contains(name) {
                return Err(OpenError::UnknownDevice(name.clone()));
            }
            out.push(Self::open(verbs, name, cfg)?);
        }
        Ok(out)
    }

    /// This HCA as a descriptor's `devices[]` entry.
    pub fn device_desc(&self) -> DeviceDesc {
        DeviceDesc { gid: self.port.gid.to_string(), lid: self.port.lid, name: self.name.clone() }
    }

    /// Releases the CQ, PD and context (QPs and MRs must be gone first).
    pub fn close(&self, verbs: &mut dyn Verbs) -> Result<(), VerbsError> {
        verbs.destroy_cq(self.cq)?;
        verbs.dealloc_pd(self.pd)?;
        verbs.close_device(self.ctx)
    }
}

/// One registered piece of a buffer (at most `max_mr_size` bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    /// Start address of the buffer this piece is part of (what unregistration names).
    pub origin: u64,
    /// Start address.
    pub addr: u64,
    /// Length.
    pub length: u64,
    /// Location (`cpu:0`, or `*`): the buffer's `name` in the descriptor.
    pub location: String,
    /// The MR on each context, in context order.
    pub mrs: Vec<Mr>,
    /// `lkey` per context.
    pub lkey: Vec<u32>,
    /// `rkey` per context.
    pub rkey: Vec<u32>,
}

impl Registered {
    /// The piece as a descriptor buffer.
    pub fn buffer_desc(&self) -> BufferDesc {
        BufferDesc {
            addr: self.addr,
            length: self.length,
            lkey: self.lkey.clone(),
            name: self.location.clone(),
            rkey: self.rkey.clone(),
        }
    }
}

/// The memory registered on every context, in registration order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registry {
    /// The pieces.
    pub pieces: Vec<Registered>,
}

impl Registry {
    /// Registers `[addr, addr + len)` at `location` on every context. The memory must stay
    /// mapped until [`Registry::unregister`]. On failure nothing of this buffer stays
    /// registered.
    pub fn register(
        &mut self,
        verbs: &mut dyn Verbs,
        contexts: &[RdmaContext],
        addr: u64,
        len: u64,
        location: &str,
    ) -> Result<(), VerbsError> {
        let max = contexts.iter().map(|c| c.max_mr_size).min().unwrap_or(u64::MAX);
        let mut added = Vec::new();
        for (a, l) in split_for_mr(addr, len, max) {
            let mut piece = Registered {
                origin: addr,
                addr: a,
                length: l,
                location: location.to_owned(),
                mrs: vec![],
                lkey: vec![],
                rkey: vec![],
            };
            for c in contexts {
                match verbs.reg_mr(c.pd, a, l, MR_ACCESS) {
                    Ok(k) => {
                        piece.mrs.push(k.mr);
                        piece.lkey.push(k.lkey);
                        piece.rkey.push(k.rkey);
                    }
                    Err(mut e) => {
                        for mr in added.iter().flat_map(|p: &Registered| p.mrs.iter()).chain(piece.mrs.iter()) {
                            let _ = verbs.dereg_mr(*mr);
                        }
                        e.detail = format!("{} bytes at {a:#x} on {}", l, c.name);
                        return Err(e);
                    }
                }
            }
            added.push(piece);
        }
        self.pieces.extend(added);
        Ok(())
    }

    /// Deregisters every piece of the buffer registered at `addr`; false if there was none.
    pub fn unregister(&mut self, verbs: &mut dyn Verbs, addr: u64) -> Result<bool, VerbsError> {
        if !self.pieces.iter().any(|p| p.origin == addr) {
            return Ok(false);
        }
        let (gone, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.pieces).into_iter().partition(|p| p.origin == addr);
        self.pieces = kept;
        for p in gone {
            for mr in p.mrs {
                verbs.dereg_mr(mr)?;
            }
        }
        Ok(true)
    }

    /// The pieces as `(addr, length)`, for slicing.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.pieces.iter().map(|p| (p.addr, p.length)).collect()
    }

    /// The descriptor buffers.
    pub fn buffer_descs(&self) -> Vec<BufferDesc> {
        self.pieces.iter().map(Registered::buffer_desc).collect()
    }
}

/// The GID of a descriptor device, parsed.
pub fn device_gid(d: &DeviceDesc) -> Result<Gid, super::gid::GidError> {
    Gid::parse(&d.gid)
}
