//! A [`Verbs`] without hardware, for tests: it records every call, enforces the QP state
//! machine the way a driver does (a transition from the wrong state is `EINVAL`), hands out
//! keys and QP numbers deterministically, completes posted work requests with scripted
//! statuses, and fails any call on demand.

use std::collections::{BTreeMap, VecDeque};

use super::api::{
    Completion, Cq, Ctx, DeviceAttr, Mr, MrKeys, Mtu, Pd, PortInfo, PostError, Qp, QpCaps, Verbs, VerbsError, WcStatus,
    WorkRequest,
};
use super::gid::Gid;
use super::qp::{QpState, QpTransition};

/// `EINVAL`.
pub const EINVAL: i32 = 22;
/// `ENODEV`.
pub const ENODEV: i32 = 19;

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `ibv_get_device_list`.
    DeviceNames,
    /// `ibv_open_device`.
    OpenDevice(String),
    /// `ibv_query_device`.
    QueryDevice(Ctx),
    /// `ibv_query_port`.
    QueryPort(Ctx, u8),
    /// `ibv_query_gid`.
    QueryGid(Ctx, u8, u32),
    /// `ibv_alloc_pd`.
    AllocPd(Ctx),
    /// `ibv_create_cq`.
    CreateCq(Ctx, u32),
    /// `ibv_reg_mr`: pd, addr, len, access.
    RegMr(Pd, u64, u64, u32),
    /// `ibv_dereg_mr`.
    DeregMr(Mr),
    /// `ibv_create_qp`.
    CreateQp(Pd, Cq, QpCaps),
    /// `ibv_query_qp`.
    QueryQp(Qp),
    /// `ibv_modify_qp`.
    ModifyQp(Qp, QpTransition),
    /// `ibv_post_send`.
    PostSend(Qp, Vec<WorkRequest>),
    /// `ibv_poll_cq`.
    PollCq(Cq),
    /// `ibv_destroy_qp`.
    DestroyQp(Qp),
    /// `ibv_destroy_cq`.
    DestroyCq(Cq),
    /// `ibv_dealloc_pd`.
    DeallocPd(Pd),
    /// `ibv_close_device`.
    CloseDevice(Ctx),
}

/// A simulated HCA.
#[derive(Clone, Debug)]
pub struct MockDevice {
    /// Its name (`mlx5_0`).
    pub name: String,
    /// Port 1's LID.
    pub lid: u16,
    /// Port 1's active MTU.
    pub active_mtu: Mtu,
    /// Port 1's GID table.
    pub gids: Vec<Gid>,
    /// Whether port 1 is active.
    pub active: bool,
    /// `max_mr_size`.
    pub max_mr_size: u64,
}

impl MockDevice {
    /// An active RoCE device: LID 0, MTU 4096 reported as 1024 active, GID 0 link-local,
    /// GID 1 `::ffff:10.0.0.<n>`.
    pub fn roce(name: &str, n: u8) -> Self {
        let mut link_local = [0u8; 16];
        link_local[0] = 0xfe;
        link_local[1] = 0x80;
        link_local[15] = n;
        let mut v4 = [0u8; 16];
        v4[10] = 0xff;
        v4[11] = 0xff;
        v4[12..].copy_from_slice(&[10, 0, 0, n]);
        Self {
            name: name.to_owned(),
            lid: 0,
            active_mtu: Mtu::M1024,
            gids: vec![Gid(link_local), Gid(v4)],
            active: true,
            max_mr_size: u64::MAX,
        }
    }
}

#[derive(Clone, Debug)]
struct QpEntry {
    num: u32,
    cq: Cq,
    state: QpState,
}

/// The mock. Fields are public so tests can script and inspect it.
#[derive(Debug, Default)]
pub struct MockVerbs {
    /// The devices `ibv_get_device_list` returns.
    pub devices: Vec<MockDevice>,
    /// Every call, in order.
    pub calls: Vec<Call>,
    /// Calls to fail: (call name as in [`VerbsError::call`], how many more successes first).
    pub fail: Vec<(String, usize)>,
    /// Statuses for the next completions (then `Success`).
    pub statuses: VecDeque<WcStatus>,
    /// First QP number handed out (then +1 each).
    pub first_qp_num: u32,
    /// Completions waiting to be polled, per CQ.
    pending: BTreeMap<Cq, VecDeque<Completion>>,
    qps: BTreeMap<Qp, QpEntry>,
    next: u32,
}

impl MockVerbs {
    /// A mock with these devices; QP numbers from 0x100.
    pub fn new(devices: Vec<MockDevice>) -> Self {
        Self { devices, first_qp_num: 0x100, ..Self::default() }
    }

    /// Makes the `nth` (0-based) later call named `call` fail with `EINVAL`.
    pub fn fail_call(&mut self, call: &str, nth: usize) {
        self.fail.push((call.to_owned(), nth));
    }

    /// The transitions recorded for `qp`, in order.
    pub fn transitions(&self, qp: Qp) -> Vec<QpTransition> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::ModifyQp(q, t) if *q == qp => Some(*t),
                _ => None,
            })
            .collect()
    }

    /// The current state of `qp`.
    pub fn qp_state(&self, qp: Qp) -> Option<QpState> {
        self.qps.get(&qp).map(|e| e.state)
    }

    /// Every work request posted so far.
    pub fn posted(&self) -> Vec<(Qp, WorkRequest)> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::PostSend(q, wrs) => Some(wrs.iter().map(|w| (*q, *w)).collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Drops the completions still queued (as a QP reset does).
    pub fn drop_pending(&mut self) {
        self.pending.clear();
    }

    fn handle(&mut self) -> u32 {
        self.next += 1;
        self.next
    }

    fn check(&mut self, call: &str) -> Result<(), VerbsError> {
        if let Some(i) = self.fail.iter().position(|(c, _)| c == call) {
            if self.fail[i].1 == 0 {
                self.fail.remove(i);
                return Err(VerbsError::new(call, EINVAL, "injected by MockVerbs"));
            }
            self.fail[i].1 -= 1;
        }
        Ok(())
    }

    fn device(&self, ctx: Ctx) -> Result<&MockDevice, VerbsError> {
        self.devices.get(ctx.0 as usize).ok_or_else(|| VerbsError::new("mock", ENODEV, format!("no context {ctx:?}")))
    }
}

impl Verbs for MockVerbs {
    fn device_names(&mut self) -> Result<Vec<String>, VerbsError> {
        self.calls.push(Call::DeviceNames);
        self.check("ibv_get_device_list")?;
        Ok(self.devices.iter().map(|d| d.name.clone()).collect())
    }

    fn open_device(&mut self, name: &str) -> Result<Ctx, VerbsError> {
        self.calls.push(Call::OpenDevice(name.to_owned()));
        self.check("ibv_open_device")?;
        let i = self
            .devices
            .iter()
            .position(|d| d.name == name)
            .ok_or_else(|| VerbsError::new("ibv_open_device", ENODEV, name))?;
        Ok(Ctx(i as u32))
    }

    fn query_device(&mut self, ctx: Ctx) -> Result<DeviceAttr, VerbsError> {
        self.calls.push(Call::QueryDevice(ctx));
        self.check("ibv_query_device")?;
        let d = self.device(ctx)?;
        Ok(DeviceAttr { ports: 1, max_mr_size: d.max_mr_size, max_qp_wr: 32768, max_cqe: 1 << 22 })
    }

    fn query_port(&mut self, ctx: Ctx, port: u8) -> Result<PortInfo, VerbsError> {
        self.calls.push(Call::QueryPort(ctx, port));
        self.check("ibv_query_port")?;
        let d = self.device(ctx)?;
        if port != 1 {
            return Err(VerbsError::new("ibv_query_port", EINVAL, format!("port {port}")));
        }
        Ok(PortInfo { active: d.active, lid: d.lid, active_mtu: d.active_mtu, gid_table_len: d.gids.len() as u32 })
    }

    fn query_gid(&mut self, ctx: Ctx, port: u8, index: u32) -> Result<Gid, VerbsError> {
        self.calls.push(Call::QueryGid(ctx, port, index));
        self.check("ibv_query_gid")?;
        let d = self.device(ctx)?;
        d.gids
            .get(index as usize)
            .copied()
            .ok_or_else(|| VerbsError::new("ibv_query_gid", EINVAL, format!("index {index}")))
    }

    fn alloc_pd(&mut self, ctx: Ctx) -> Result<Pd, VerbsError> {
        self.calls.push(Call::AllocPd(ctx));
        self.check("ibv_alloc_pd")?;
        Ok(Pd(self.handle()))
    }

    fn create_cq(&mut self, ctx: Ctx, cqe: u32) -> Result<Cq, VerbsError> {
        self.calls.push(Call::CreateCq(ctx, cqe));
        self.check("ibv_create_cq")?;
        Ok(Cq(self.handle()))
    }

    fn reg_mr(&mut self, pd: Pd, addr: u64, len: u64, access: u32) -> Result<MrKeys, VerbsError> {
        self.calls.push(Call::RegMr(pd, addr, len, access));
        self.check("ibv_reg_mr")?;
        let h = self.handle();
        Ok(MrKeys { mr: Mr(h), lkey: 0x1000 + h, rkey: 0x2000 + h })
    }

    fn dereg_mr(&mut self, mr: Mr) -> Result<(), VerbsError> {
        self.calls.push(Call::DeregMr(mr));
        self.check("ibv_dereg_mr")
    }

    fn create_qp(&mut self, pd: Pd, cq: Cq, caps: QpCaps) -> Result<(Qp, u32), VerbsError> {
        self.calls.push(Call::CreateQp(pd, cq, caps));
        self.check("ibv_create_qp")?;
        let qp = Qp(self.handle());
        let num = self.first_qp_num + self.qps.len() as u32;
        self.qps.insert(qp, QpEntry { num, cq, state: QpState::Reset });
        Ok((qp, num))
    }

    fn query_qp_state(&mut self, qp: Qp) -> Result<QpState, VerbsError> {
        self.calls.push(Call::QueryQp(qp));
        self.check("ibv_query_qp")?;
        self.qps.get(&qp).map(|e| e.state).ok_or_else(|| VerbsError::new("ibv_query_qp", EINVAL, "no such QP"))
    }

    fn modify_qp(&mut self, qp: Qp, t: &QpTransition) -> Result<(), VerbsError> {
        self.calls.push(Call::ModifyQp(qp, *t));
        self.check(t.call_name())?;
        let entry = self.qps.get_mut(&qp).ok_or_else(|| VerbsError::new(t.call_name(), EINVAL, "no such QP"))?;
        let legal = match t {
            QpTransition::Reset => true,
            QpTransition::Init(_) => matches!(entry.state, QpState::Reset | QpState::Init),
            QpTransition::Rtr(_) => entry.state == QpState::Init,
            QpTransition::Rts(_) => matches!(entry.state, QpState::Rtr | QpState::Rts),
        };
        if !legal {
            return Err(VerbsError::new(t.call_name(), EINVAL, format!("QP in {:?}", entry.state)));
        }
        entry.state = t.state();
        Ok(())
    }

    fn post_send(&mut self, qp: Qp, wrs: &[WorkRequest]) -> Result<(), PostError> {
        self.calls.push(Call::PostSend(qp, wrs.to_vec()));
        self.check("ibv_post_send").map_err(|error| PostError { first_unposted: 0, error })?;
        let Some(entry) = self.qps.get(&qp).cloned() else {
            return Err(PostError { first_unposted: 0, error: VerbsError::new("ibv_post_send", EINVAL, "no such QP") });
        };
        if entry.state != QpState::Rts {
            let error = VerbsError::new("ibv_post_send", EINVAL, format!("QP in {:?}", entry.state));
            return Err(PostError { first_unposted: 0, error });
        }
        for wr in wrs {
            let status = self.statuses.pop_front().unwrap_or(WcStatus::Success);
            self.pending.entry(entry.cq).or_default().push_back(Completion {
                wr_id: wr.wr_id,
                status,
                qp_num: entry.num,
            });
        }
        Ok(())
    }

    fn poll_cq(&mut self, cq: Cq, max: usize, out: &mut Vec<Completion>) -> Result<usize, VerbsError> {
        self.calls.push(Call::PollCq(cq));
        self.check("ibv_poll_cq")?;
        let q = self.pending.entry(cq).or_default();
        let n = q.len().min(max);
        out.extend(q.drain(..n));
        Ok(n)
    }

    fn destroy_qp(&mut self, qp: Qp) -> Result<(), VerbsError> {
        self.calls.push(Call::DestroyQp(qp));
        self.check("ibv_destroy_qp")?;
        self.qps.remove(&qp);
        Ok(())
    }

    fn destroy_cq(&mut self, cq: Cq) -> Result<(), VerbsError> {
        self.calls.push(Call::DestroyCq(cq));
        self.check("ibv_destroy_cq")
    }

    fn dealloc_pd(&mut self, pd: Pd) -> Result<(), VerbsError> {
        self.calls.push(Call::DeallocPd(pd));
        self.check("ibv_dealloc_pd")
    }

    fn close_device(&mut self, ctx: Ctx) -> Result<(), VerbsError> {
        self.calls.push(Call::CloseDevice(ctx));
        self.check("ibv_close_device")
    }
}
