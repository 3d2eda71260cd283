//! [`Verbs`] over libibverbs through `rdma-sys` (feature `verbs`). All the unsafe FFI of the
//! transport is in this file; every call's result is checked and turned into a
//! [`VerbsError`] naming the call and errno.
//!
//! Handles index tables of the raw objects; [`Drop`] releases whatever is still open (QPs,
//! MRs, CQs, PDs, contexts, in that order).

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::raw::c_int;
use std::ptr;

use rdma_sys as ffi;

use super::api::{
    Completion, Cq, Ctx, DeviceAttr, Mr, MrKeys, Mtu, Opcode, Pd, PortInfo, PostError, Qp, QpCaps, Verbs, VerbsError,
    WcStatus, WorkRequest,
};
use super::gid::Gid;
use super::qp::{QpState, QpTransition};

/// The raw list (to free) and its (name, device) pairs.
type DeviceList = (*mut *mut ffi::ibv_device, Vec<(String, *mut ffi::ibv_device)>);

/// The real verbs library.
pub struct SysVerbs {
    ctxs: Vec<*mut ffi::ibv_context>,
    pds: Vec<*mut ffi::ibv_pd>,
    cqs: Vec<*mut ffi::ibv_cq>,
    mrs: Vec<*mut ffi::ibv_mr>,
    qps: Vec<*mut ffi::ibv_qp>,
}

// SAFETY: libibverbs objects may be used from any thread (the library is thread-safe); the
// tables are only reached through `&mut self`.
unsafe impl Send for SysVerbs {}

impl Default for SysVerbs {
    fn default() -> Self {
        Self::new()
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The error of a call returning an error number (0 = success), as `ibv_modify_qp` does.
fn check_rc(rc: c_int, call: &str, detail: impl Into<String>) -> Result<(), VerbsError> {
    match rc {
        0 => Ok(()),
        rc if rc > 0 => Err(VerbsError::new(call, rc, detail)),
        _ => Err(VerbsError::new(call, errno(), detail)),
    }
}

fn put<T>(table: &mut Vec<*mut T>, p: *mut T) -> u32 {
    table.push(p);
    table.len() as u32
}

fn get<T>(table: &[*mut T], h: u32, what: &str) -> Result<*mut T, VerbsError> {
    match table.get((h as usize).wrapping_sub(1)) {
        Some(p) if !p.is_null() => Ok(*p),
        _ => Err(VerbsError::new(what, 22, format!("no such handle {h}"))),
    }
}

fn take<T>(table: &mut [*mut T], h: u32) {
    if let Some(p) = table.get_mut((h as usize).wrapping_sub(1)) {
        *p = ptr::null_mut();
    }
}

impl SysVerbs {
    /// No objects open yet.
    pub fn new() -> Self {
        Self { ctxs: Vec::new(), pds: Vec::new(), cqs: Vec::new(), mrs: Vec::new(), qps: Vec::new() }
    }

    /// The device list as (name, device) pairs; the list must be freed by the caller.
    fn list() -> Result<DeviceList, VerbsError> {
        let mut n: c_int = 0;
        // SAFETY: `n` is a valid out-pointer; the list is freed by the caller.
        let list = unsafe { ffi::ibv_get_device_list(&mut n) };
        if list.is_null() {
            let e = errno();
            return Err(VerbsError::new("ibv_get_device_list", e, ""));
        }
        let mut out = Vec::new();
        for i in 0..n.max(0) as usize {
            // SAFETY: the list holds `n` valid device pointers.
            let dev = unsafe { *list.add(i) };
            if dev.is_null() {
                break;
            }
            // SAFETY: `dev` is a valid device; the name is a NUL-terminated string it owns.
            let name = unsafe { CStr::from_ptr(ffi::ibv_get_device_name(dev)) }.to_string_lossy().into_owned();
            out.push((name, dev));
        }
        Ok((list, out))
    }
}

impl Verbs for SysVerbs {
    fn device_names(&mut self) -> Result<Vec<String>, VerbsError> {
        let (list, devs) = Self::list()?;
        // SAFETY: `list` came from ibv_get_device_list.
        unsafe { ffi::ibv_free_device_list(list) };
        Ok(devs.into_iter().map(|(n, _)| n).collect())
    }

    fn open_device(&mut self, name: &str) -> Result<Ctx, VerbsError> {
        let (list, devs) = Self::list()?;
        let dev = devs.iter().find(|(n, _)| n == name).map(|(_, d)| *d);
        let ctx = match dev {
            // SAFETY: `d` is a device of the still-allocated list.
            Some(d) => unsafe { ffi::ibv_open_device(d) },
            None => ptr::null_mut(),
        };
        let e = errno();
        // SAFETY: `list` came from ibv_get_device_list; the context outlives it.
        unsafe { ffi::ibv_free_device_list(list) };
        if dev.is_none() {
            return Err(VerbsError::new("ibv_open_device", 19, format!("no device named {name}")));
        }
        if ctx.is_null() {
            return Err(VerbsError::new("ibv_open_device", e, name));
        }
        Ok(Ctx(put(&mut self.ctxs, ctx)))
    }

    fn query_device(&mut self, ctx: Ctx) -> Result<DeviceAttr, VerbsError> {
        let c = get(&self.ctxs, ctx.0, "ibv_query_device")?;
        let mut attr = MaybeUninit::<ffi::ibv_device_attr>::zeroed();
        // SAFETY: `c` is an open context, `attr` a writable struct of the right type.
        check_rc(unsafe { ffi::ibv_query_device(c, attr.as_mut_ptr()) }, "ibv_query_device", "")?;
        // SAFETY: zero-initialised and filled by the call; all fields are plain integers.
        let a = unsafe { attr.assume_init() };
        Ok(DeviceAttr {
            ports: a.phys_port_cnt,
            max_mr_size: a.max_mr_size,
            max_qp_wr: a.max_qp_wr.max(0) as u32,
            max_cqe: a.max_cqe.max(0) as u32,
        })
    }

    fn query_port(&mut self, ctx: Ctx, port: u8) -> Result<PortInfo, VerbsError> {
        let c = get(&self.ctxs, ctx.0, "ibv_query_port")?;
        let mut attr = MaybeUninit::<ffi::ibv_port_attr>::zeroed();
        // SAFETY: `c` is an open context, `attr` a writable ibv_port_attr.
        check_rc(
            unsafe { ffi::___ibv_query_port(c, port, attr.as_mut_ptr()) },
            "ibv_query_port",
            format!("port {port}"),
        )?;
        // SAFETY: zero-initialised and filled by the call; plain integers.
        let a = unsafe { attr.assume_init() };
        Ok(PortInfo {
            active: a.state == ffi::ibv_port_state::IBV_PORT_ACTIVE,
            lid: a.lid,
            active_mtu: Mtu::from_ibv(a.active_mtu).unwrap_or(Mtu::M1024),
            gid_table_len: a.gid_tbl_len.max(0) as u32,
        })
    }

    fn query_gid(&mut self, ctx: Ctx, port: u8, index: u32) -> Result<Gid, VerbsError> {
        let c = get(&self.ctxs, ctx.0, "ibv_query_gid")?;
        let mut gid = ffi::ibv_gid { raw: [0; 16] };
        // SAFETY: `c` is an open context, `gid` a writable ibv_gid.
        let rc = unsafe { ffi::ibv_query_gid(c, port, index as c_int, &mut gid) };
        check_rc(rc, "ibv_query_gid", format!("port {port} index {index}"))?;
        // SAFETY: every bit pattern of the union is a valid `[u8; 16]`.
        Ok(Gid(unsafe { gid.raw }))
    }

    fn alloc_pd(&mut self, ctx: Ctx) -> Result<Pd, VerbsError> {
        let c = get(&self.ctxs, ctx.0, "ibv_alloc_pd")?;
        // SAFETY: `c` is an open context.
        let pd = unsafe { ffi::ibv_alloc_pd(c) };
        if pd.is_null() {
            return Err(VerbsError::new("ibv_alloc_pd", errno(), ""));
        }
        Ok(Pd(put(&mut self.pds, pd)))
    }

    fn create_cq(&mut self, ctx: Ctx, cqe: u32) -> Result<Cq, VerbsError> {
        let c = get(&self.ctxs, ctx.0, "ibv_create_cq")?;
        let n = cqe.min(i32::MAX as u32) as c_int;
        // SAFETY: `c` is an open context; no CQ context, no completion channel.
        let cq = unsafe { ffi::ibv_create_cq(c, n, ptr::null_mut(), ptr::null_mut(), 0) };
        if cq.is_null() {
            return Err(VerbsError::new("ibv_create_cq", errno(), format!("{cqe} entries")));
        }
        Ok(Cq(put(&mut self.cqs, cq)))
    }

    fn reg_mr(&mut self, pd: Pd, addr: u64, len: u64, access: u32) -> Result<MrKeys, VerbsError> {
        let p = get(&self.pds, pd.0, "ibv_reg_mr")?;
        // SAFETY: `p` is a live PD. The caller guarantees the range stays mapped while
        // registered (the `Verbs::reg_mr` contract); the kernel pins it or fails.
        let mr = unsafe { ffi::ibv_reg_mr(p, addr as *mut _, len as usize, access as c_int) };
        if mr.is_null() {
            return Err(VerbsError::new("ibv_reg_mr", errno(), format!("{len} bytes at {addr:#x}")));
        }
        // SAFETY: `mr` is a valid region just returned.
        let (lkey, rkey) = unsafe { ((*mr).lkey, (*mr).rkey) };
        Ok(MrKeys { mr: Mr(put(&mut self.mrs, mr)), lkey, rkey })
    }

    fn dereg_mr(&mut self, mr: Mr) -> Result<(), VerbsError> {
        let m = get(&self.mrs, mr.0, "ibv_dereg_mr")?;
        // SAFETY: `m` is a registered region, deregistered once (its slot is cleared).
        check_rc(unsafe { ffi::ibv_dereg_mr(m) }, "ibv_dereg_mr", "")?;
        take(&mut self.mrs, mr.0);
        Ok(())
    }

    fn create_qp(&mut self, pd: Pd, cq: Cq, caps: QpCaps) -> Result<(Qp, u32), VerbsError> {
        let p = get(&self.pds, pd.0, "ibv_create_qp")?;
        let c = get(&self.cqs, cq.0, "ibv_create_qp")?;
        // SAFETY: all-zero is a valid ibv_qp_init_attr (null pointers, zero counts).
        let mut attr: ffi::ibv_qp_init_attr = unsafe { MaybeUninit::zeroed().assume_init() };
        attr.send_cq = c;
        attr.recv_cq = c;
        attr.qp_type = ffi::ibv_qp_type::IBV_QPT_RC;
        attr.sq_sig_all = 0;
        attr.cap.max_send_wr = caps.max_wr;
        attr.cap.max_recv_wr = caps.max_wr;
        attr.cap.max_send_sge = caps.max_sge;
        attr.cap.max_recv_sge = caps.max_sge;
        attr.cap.max_inline_data = caps.max_inline;
        // SAFETY: `p` and `c` are live; `attr` is fully initialised.
        let qp = unsafe { ffi::ibv_create_qp(p, &mut attr) };
        if qp.is_null() {
            return Err(VerbsError::new("ibv_create_qp", errno(), format!("{caps:?}")));
        }
        // SAFETY: `qp` is a valid QP just returned.
        let num = unsafe { (*qp).qp_num };
        Ok((Qp(put(&mut self.qps, qp)), num))
    }

    fn query_qp_state(&mut self, qp: Qp) -> Result<QpState, VerbsError> {
        let q = get(&self.qps, qp.0, "ibv_query_qp")?;
        // SAFETY: all-zero is valid for both attribute structs (integers and null pointers).
        let mut attr: ffi::ibv_qp_attr = unsafe { MaybeUninit::zeroed().assume_init() };
        // SAFETY: as above.
        let mut init: ffi::ibv_qp_init_attr = unsafe { MaybeUninit::zeroed().assume_init() };
        let mask = ffi::ibv_qp_attr_mask::IBV_QP_STATE.0 as c_int;
        // SAFETY: `q` is a live QP; both structs are writable.
        check_rc(unsafe { ffi::ibv_query_qp(q, &mut attr, mask, &mut init) }, "ibv_query_qp", "")?;
        Ok(QpState::from_ibv(attr.qp_state))
    }

    fn modify_qp(&mut self, qp: Qp, t: &QpTransition) -> Result<(), VerbsError> {
        let q = get(&self.qps, qp.0, t.call_name())?;
        // SAFETY: all-zero is a valid ibv_qp_attr (upstream memsets it too).
        let mut attr: ffi::ibv_qp_attr = unsafe { MaybeUninit::zeroed().assume_init() };
        attr.qp_state = t.state().ibv();
        match t {
            QpTransition::Reset => {}
            QpTransition::Init(a) => {
                attr.port_num = a.port_num;
                attr.pkey_index = a.pkey_index;
                attr.qp_access_flags = a.access;
            }
            QpTransition::Rtr(a) => {
                attr.path_mtu = a.path_mtu.ibv();
                attr.ah_attr.grh.dgid = ffi::ibv_gid { raw: a.dgid.0 };
                attr.ah_attr.grh.sgid_index = a.sgid_index;
                attr.ah_attr.grh.hop_limit = a.hop_limit;
                attr.ah_attr.grh.traffic_class = a.traffic_class;
                attr.ah_attr.dlid = a.dlid;
                attr.ah_attr.sl = a.sl;
                attr.ah_attr.src_path_bits = a.src_path_bits;
                attr.ah_attr.static_rate = a.static_rate;
                attr.ah_attr.is_global = a.is_global;
                attr.ah_attr.port_num = a.port_num;
                attr.dest_qp_num = a.dest_qp_num;
                attr.rq_psn = a.rq_psn;
                attr.max_dest_rd_atomic = a.max_dest_rd_atomic;
                attr.min_rnr_timer = a.min_rnr_timer;
            }
            QpTransition::Rts(a) => {
                attr.timeout = a.timeout;
                attr.retry_cnt = a.retry_cnt;
                attr.rnr_retry = a.rnr_retry;
                attr.sq_psn = a.sq_psn;
                attr.max_rd_atomic = a.max_rd_atomic;
            }
        }
        // SAFETY: `q` is a live QP; `attr` is initialised for the fields the mask names.
        check_rc(unsafe { ffi::ibv_modify_qp(q, &mut attr, t.mask() as c_int) }, t.call_name(), "")
    }

    fn post_send(&mut self, qp: Qp, wrs: &[WorkRequest]) -> Result<(), PostError> {
        let q = get(&self.qps, qp.0, "ibv_post_send").map_err(|error| PostError { first_unposted: 0, error })?;
        if wrs.is_empty() {
            return Ok(());
        }
        let mut sges: Vec<ffi::ibv_sge> =
            wrs.iter().map(|w| ffi::ibv_sge { addr: w.local_addr, length: w.len, lkey: w.lkey }).collect();
        // SAFETY: all-zero is a valid ibv_send_wr (null pointers, zero unions).
        let mut list: Vec<ffi::ibv_send_wr> =
            (0..wrs.len()).map(|_| unsafe { MaybeUninit::zeroed().assume_init() }).collect();
        let base = list.as_mut_ptr();
        for (i, w) in wrs.iter().enumerate() {
            let wr = &mut list[i];
            wr.wr_id = w.wr_id;
            wr.opcode = match w.opcode {
                Opcode::Read => ffi::ibv_wr_opcode::IBV_WR_RDMA_READ,
                Opcode::Write => ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE,
            };
            wr.num_sge = 1;
            wr.sg_list = &mut sges[i];
            wr.send_flags = ffi::ibv_send_flags::IBV_SEND_SIGNALED.0;
            wr.wr.rdma = ffi::rdma_t { remote_addr: w.remote_addr, rkey: w.rkey };
            // SAFETY: `base` points at `list`, which is not reallocated; i + 1 < len.
            wr.next = if i + 1 == wrs.len() { ptr::null_mut() } else { unsafe { base.add(i + 1) } };
        }
        let mut bad: *mut ffi::ibv_send_wr = ptr::null_mut();
        // SAFETY: `q` is a live QP; the chain and its SGEs stay alive for the call (the
        // provider copies them into the send queue before returning).
        let rc = unsafe { ffi::ibv_post_send(q, base, &mut bad) };
        if rc == 0 {
            return Ok(());
        }
        let first_unposted = if bad.is_null() {
            0
        } else {
            // SAFETY: `bad` points into `list` on failure.
            (unsafe { bad.offset_from(base) }).clamp(0, wrs.len() as isize) as usize
        };
        let e = if rc > 0 { rc } else { errno() };
        Err(PostError { first_unposted, error: VerbsError::new("ibv_post_send", e, format!("{} requests", wrs.len())) })
    }

    fn poll_cq(&mut self, cq: Cq, max: usize, out: &mut Vec<Completion>) -> Result<usize, VerbsError> {
        let c = get(&self.cqs, cq.0, "ibv_poll_cq")?;
        let max = max.clamp(1, 256);
        // SAFETY: all-zero is a valid ibv_wc (integers and a zero union).
        let mut wcs: Vec<ffi::ibv_wc> = (0..max).map(|_| unsafe { MaybeUninit::zeroed().assume_init() }).collect();
        // SAFETY: `c` is a live CQ; `wcs` has room for `max` entries.
        let n = unsafe { ffi::ibv_poll_cq(c, max as i32, wcs.as_mut_ptr()) };
        if n < 0 {
            return Err(VerbsError::new("ibv_poll_cq", errno(), ""));
        }
        for wc in &wcs[..n as usize] {
            out.push(Completion { wr_id: wc.wr_id, status: WcStatus::from_ibv(wc.status), qp_num: wc.qp_num });
        }
        Ok(n as usize)
    }

    fn destroy_qp(&mut self, qp: Qp) -> Result<(), VerbsError> {
        let q = get(&self.qps, qp.0, "ibv_destroy_qp")?;
        // SAFETY: `q` is a live QP, destroyed once.
        check_rc(unsafe { ffi::ibv_destroy_qp(q) }, "ibv_destroy_qp", "")?;
        take(&mut self.qps, qp.0);
        Ok(())
    }

    fn destroy_cq(&mut self, cq: Cq) -> Result<(), VerbsError> {
        let c = get(&self.cqs, cq.0, "ibv_destroy_cq")?;
        // SAFETY: `c` is a live CQ, destroyed once.
        check_rc(unsafe { ffi::ibv_destroy_cq(c) }, "ibv_destroy_cq", "")?;
        take(&mut self.cqs, cq.0);
        Ok(())
    }

    fn dealloc_pd(&mut self, pd: Pd) -> Result<(), VerbsError> {
        let p = get(&self.pds, pd.0, "ibv_dealloc_pd")?;
        // SAFETY: `p` is a live PD, released once.
        check_rc(unsafe { ffi::ibv_dealloc_pd(p) }, "ibv_dealloc_pd", "")?;
        take(&mut self.pds, pd.0);
        Ok(())
    }

    fn close_device(&mut self, ctx: Ctx) -> Result<(), VerbsError> {
        let c = get(&self.ctxs, ctx.0, "ibv_close_device")?;
        // SAFETY: `c` is an open context, closed once.
        check_rc(unsafe { ffi::ibv_close_device(c) }, "ibv_close_device", "")?;
        take(&mut self.ctxs, ctx.0);
        Ok(())
    }
}

impl Drop for SysVerbs {
    fn drop(&mut self) {
        // SAFETY: every non-null entry is a live object this struct created and has not
        // released; children go before their parents.
        unsafe {
            for &q in self.qps.iter().filter(|p| !p.is_null()) {
                ffi::ibv_destroy_qp(q);
            }
            for &m in self.mrs.iter().filter(|p| !p.is_null()) {
                ffi::ibv_dereg_mr(m);
            }
            for &c in self.cqs.iter().filter(|p| !p.is_null()) {
                ffi::ibv_destroy_cq(c);
            }
            for &p in self.pds.iter().filter(|p| !p.is_null()) {
                ffi::ibv_dealloc_pd(p);
            }
            for &c in self.ctxs.iter().filter(|p| !p.is_null()) {
                ffi::ibv_close_device(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verbs::api::*;
    use crate::verbs::qp::mask;

    #[test]
    fn constants_match_the_headers() {
        use ffi::ibv_qp_attr_mask as m;
        assert_eq!(mask::STATE, m::IBV_QP_STATE.0);
        assert_eq!(mask::ACCESS_FLAGS, m::IBV_QP_ACCESS_FLAGS.0);
        assert_eq!(mask::PKEY_INDEX, m::IBV_QP_PKEY_INDEX.0);
        assert_eq!(mask::PORT, m::IBV_QP_PORT.0);
        assert_eq!(mask::AV, m::IBV_QP_AV.0);
        assert_eq!(mask::PATH_MTU, m::IBV_QP_PATH_MTU.0);
        assert_eq!(mask::TIMEOUT, m::IBV_QP_TIMEOUT.0);
        assert_eq!(mask::RETRY_CNT, m::IBV_QP_RETRY_CNT.0);
        assert_eq!(mask::RNR_RETRY, m::IBV_QP_RNR_RETRY.0);
        assert_eq!(mask::RQ_PSN, m::IBV_QP_RQ_PSN.0);
        assert_eq!(mask::MAX_QP_RD_ATOMIC, m::IBV_QP_MAX_QP_RD_ATOMIC.0);
        assert_eq!(mask::MIN_RNR_TIMER, m::IBV_QP_MIN_RNR_TIMER.0);
        assert_eq!(mask::SQ_PSN, m::IBV_QP_SQ_PSN.0);
        assert_eq!(mask::MAX_DEST_RD_ATOMIC, m::IBV_QP_MAX_DEST_RD_ATOMIC.0);
        assert_eq!(mask::DEST_QPN, m::IBV_QP_DEST_QPN.0);
        use ffi::ibv_access_flags as a;
        assert_eq!(ACCESS_LOCAL_WRITE, a::IBV_ACCESS_LOCAL_WRITE.0);
        assert_eq!(ACCESS_REMOTE_WRITE, a::IBV_ACCESS_REMOTE_WRITE.0);
        assert_eq!(ACCESS_REMOTE_READ, a::IBV_ACCESS_REMOTE_READ.0);
        assert_eq!(ACCESS_REMOTE_ATOMIC, a::IBV_ACCESS_REMOTE_ATOMIC.0);
        assert_eq!(ACCESS_RELAXED_ORDERING, a::IBV_ACCESS_RELAXED_ORDERING.0);
        assert_eq!(Mtu::M4096.ibv(), ffi::ibv_mtu::IBV_MTU_4096);
        assert_eq!(Mtu::M256.ibv(), ffi::ibv_mtu::IBV_MTU_256);
        assert_eq!(QpState::Rts.ibv(), ffi::ibv_qp_state::IBV_QPS_RTS);
        assert_eq!(QpState::Error.ibv(), ffi::ibv_qp_state::IBV_QPS_ERR);
        assert_eq!(WcStatus::from_ibv(ffi::ibv_wc_status::IBV_WC_WR_FLUSH_ERR), WcStatus::Flushed);
        assert_eq!(WcStatus::from_ibv(ffi::ibv_wc_status::IBV_WC_SUCCESS), WcStatus::Success);
    }

    /// On a machine with an HCA this opens every device; without one it must fail with a
    /// message naming the cause (both are fine here: the test checks the shape).
    #[test]
    fn probe_names_the_cause_or_lists_devices() {
        match crate::verbs::probe(&crate::verbs::VerbsConfig::default()) {
            Ok(devs) => assert!(!devs.is_empty()),
            Err(e) => {
                eprintln!("probe: {e}");
                assert!(e.contains("RDMA") || e.contains("ibv_"), "{e}");
            }
        }
    }
}
