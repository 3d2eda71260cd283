//! The master RPC service over the [`Store`](crate::store::Store): every method of the spec's
//! "must implement" set (§6), the batch and upsert forms, graceful unmount and segment status.
//! Methods outside it answer `function_not_registered` (err_code 11) like the real master.
//!
//! Arguments arrive as decoded [`Value`]s (the decoder already checked hash, literal and
//! shape); results are built as `Value`s of the method's result type and encoded Debug-style
//! (literal included, as the real master), so replies are byte-identical to upstream's.
//! Operations move the same `master_*` counters as their REST counterparts (SPEC §9).

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::frame::{error_body, write_response, RequestHeader, ERRC_EXCEPTION, ERRC_INVALID_ARG, ERRC_NOT_REGISTERED};
use super::frame::{MSG_INVALID_ARG, MSG_NOT_REGISTERED};
use super::pack::{decode_with, encode_with, Style, Value};
use super::types::{lookup, Rpc};
use crate::master::Master;
use crate::stats::{Ctr, WorkerStats};
use crate::store::{scoped_key, split_key, valid_tenant, DEFAULT_TENANT};
use crate::store::{ClientStatus, ErrorCode, RemoteSegment, ReplicaDesc, SegmentStatus, SoftPin, WriteConfig};
use crate::time::Now;

/// The version `ServiceReady` answers by default (`Config::service_version`,
/// `--service-version`): the unchanged client compares it with its own build version
/// (`MOONCAKE_STORE_VERSION` of the wheel) and refuses to start on a difference.
pub const SERVICE_VERSION: &str = "2.0.0";

/// Replies are written like the real master's: literal included, narrowest lengths.
const REPLY_STYLE: Style = Style { type_info: true, len_code: 0 };

/// Longest key accepted (the REST key rules, SPEC §1.4).
const MAX_KEY: usize = 4096;

/// The handler of one worker's RPC connections.
#[derive(Clone)]
pub struct RpcService {
    master: Arc<Master>,
    stats: Arc<WorkerStats>,
}

/// A request that does not have the shape of its arguments.
struct BadArgs;

type Handled = Result<Value, BadArgs>;

/// `ReplicaStatus`.
const PROCESSING: i64 = 2;
const COMPLETE: i64 = 3;

fn uuid(v: &Value) -> Result<Uuid, BadArgs> {
    match v.as_fields() {
        Some([Value::UInt(a), Value::UInt(b)]) => Ok(Uuid::from_u64_pair(*a, *b)),
        _ => Err(BadArgs),
    }
}

fn u64_of(v: &Value) -> Result<u64, BadArgs> {
    v.as_u64().ok_or(BadArgs)
}

fn bool_of(v: &Value) -> Result<bool, BadArgs> {
    v.as_bool().ok_or(BadArgs)
}

fn text(v: &Value) -> Result<String, BadArgs> {
    let b = v.as_bytes().ok_or(BadArgs)?;
    Ok(String::from_utf8_lossy(b).into_owned())
}

fn list(v: &Value) -> Result<&[Value], BadArgs> {
    v.as_list().ok_or(BadArgs)
}

/// A key: UTF-8, 1 to 4096 bytes, no control characters (the REST key rules, so every key
/// can be listed by `/get_all_keys`); otherwise `INVALID_PARAMS`.
fn key(v: &Value) -> Result<Result<&str, ErrorCode>, BadArgs> {
    let b = v.as_bytes().ok_or(BadArgs)?;
    Ok(match std::str::from_utf8(b) {
        Ok(s) if !s.is_empty() && s.len() <= MAX_KEY && !s.chars().any(char::is_control) => Ok(s),
        _ => Err(ErrorCode::InvalidParams),
    })
}

/// The tenant of a request (its last argument). Without `--enable-multi-tenants` it is
/// ignored: `""`, every key in the one key space. With it: `default` for an empty tenant, and
/// `INVALID_PARAMS` for one that is not 1 to 256 bytes of UTF-8 without control characters.
fn tenant_of(multi: bool, v: &Value) -> Result<Result<&str, ErrorCode>, BadArgs> {
    if !multi {
        return Ok(Ok(""));
    }
    let b = v.as_bytes().ok_or(BadArgs)?;
    Ok(match std::str::from_utf8(b) {
        Ok("") => Ok(DEFAULT_TENANT),
        Ok(t) if valid_tenant(t) => Ok(t),
        _ => Err(ErrorCode::InvalidParams),
    })
}

/// The tenant-local key of a store key `k` when it belongs to `tenant` (`""`: single-tenant
/// mode, every key).
fn local_key<'k>(tenant: &str, k: &'k str) -> Option<&'k str> {
    if tenant.is_empty() {
        return Some(k);
    }
    let (t, local) = split_key(k);
    (t == tenant).then_some(local)
}

/// A valid key (see [`key`]) of `tenant`, as the store keeps it.
fn scoped<'v>(
    tenant: Result<&str, ErrorCode>,
    v: &'v Value,
) -> Result<Result<std::borrow::Cow<'v, str>, ErrorCode>, BadArgs> {
    let k = key(v)?;
    Ok(tenant.and_then(|t| k.map(|k| scoped_key(t, k))))
}

fn segment(v: &Value) -> Result<RemoteSegment, BadArgs> {
    match v.as_fields() {
        Some([id, name, base, size, te, protocol, _host]) => Ok(RemoteSegment {
            id: uuid(id)?,
            name: text(name)?,
            base: u64_of(base)?,
            size: u64_of(size)?,
            te_endpoint: text(te)?,
            protocol: text(protocol)?,
        }),
        _ => Err(BadArgs),
    }
}

fn write_config(v: &Value) -> Result<WriteConfig, BadArgs> {
    let f = v.as_fields().ok_or(BadArgs)?;
    if f.len() != 13 {
        return Err(BadArgs);
    }
    let mut preferred = list(&f[6])?.iter().map(text).collect::<Result<Vec<_>, _>>()?;
    let one = text(&f[7])?;
    if !one.is_empty() && !preferred.contains(&one) {
        preferred.insert(0, one);
    }
    let soft_pin = match u64_of(&f[3])? {
        1 => SoftPin::Enable(match &f[4] {
            Value::Opt(Some(ms)) => Some(u64_of(ms)?),
            _ => None,
        }),
        2 => SoftPin::Disable,
        _ => SoftPin::Preserve,
    };
    Ok(WriteConfig { replicas: u64_of(&f[0])?, preferred, soft_pin, hard_pin: bool_of(&f[5])?, host_id: text(&f[11])? })
}

fn void(r: Result<(), ErrorCode>) -> Value {
    match r {
        Ok(()) => Value::ok_void(),
        Err(e) => Value::err(e.code()),
    }
}

fn descriptor(d: &ReplicaDesc) -> Value {
    let buffer = Value::Struct(vec![
        Value::UInt(d.size),
        Value::UInt(d.address),
        // Upstream always says "tcp" here (upstream-behavior §10.12); the client's transfer
        // engine uses its own protocol.
        Value::str("tcp"),
        Value::str(&d.endpoint),
    ]);
    Value::Struct(vec![
        Value::UInt(d.id),
        Value::Variant(0, Box::new(Value::Struct(vec![buffer]))),
        Value::Int(if d.complete { COMPLETE } else { PROCESSING }),
    ])
}

fn descriptors(ds: &[ReplicaDesc]) -> Value {
    Value::List(ds.iter().map(descriptor).collect())
}

fn segment_status(s: Option<SegmentStatus>) -> Value {
    match s {
        // `SegmentStatus`: OK 1, GRACEFULLY_UNMOUNTING 4, UNMOUNTING 5.
        Some(SegmentStatus::Mounted) => Value::ok(Value::Int(1)),
        Some(SegmentStatus::GracefullyUnmounting) => Value::ok(Value::Int(4)),
        Some(SegmentStatus::Unmounting) => Value::ok(Value::Int(5)),
        None => Value::err(ErrorCode::SegmentNotFound.code()),
    }
}

/// An ECMAScript-like regex (`std::regex_search`), as far as the `regex` crate goes.
fn regex(v: &Value) -> Result<Option<regex::Regex>, BadArgs> {
    let pattern = text(v)?;
    Ok(regex::Regex::new(&pattern).ok())
}

impl RpcService {
    /// The RPC handler of one worker; `stats` is the worker's counters (shared with its
    /// HTTP services).
    pub fn new(master: Arc<Master>, stats: Arc<WorkerStats>) -> Self {
        Self { master, stats }
    }

    /// The version `ServiceReady` answers (`--service-version`).
    pub fn service_version(&self) -> &str {
        &self.master.config.service_version
    }

    /// True once the process is shutting down.
    pub fn shutting_down(&self) -> bool {
        self.master.is_shutting_down()
    }

    /// May this master answer RPCs at `now` (always without HA; the leader with HA)?
    pub fn serves(&self, now: Now) -> bool {
        self.master.serves(now.mono)
    }

    /// Answers one request: appends the reply frame (with the request's seq) to `out`.
    pub fn call_into(&mut self, now: Now, h: &RequestHeader, body: &[u8], out: &mut Vec<u8>) {
        let (code, reply) = self.call(now, h.function_id, body);
        write_response(out, h.seq, code, &reply);
    }

    /// Answers one request body of method `function_id`: (err_code, reply body).
    pub fn call(&mut self, now: Now, function_id: u32, body: &[u8]) -> (u8, Vec<u8>) {
        let Some(info) = lookup(function_id).filter(|i| i.def.served) else {
            log::debug!("rpc: function {function_id:#010x} not registered");
            return (ERRC_NOT_REGISTERED, error_body(MSG_NOT_REGISTERED));
        };
        let args = match &info.req {
            None => Value::Struct(Vec::new()),
            Some(ty) => match decode_with(ty, &info.req_literal, info.req_hash, body) {
                Ok((v, _)) => v,
                Err(e) => {
                    log::debug!("rpc: {} with a bad body: {e}", info.def.name);
                    return (ERRC_INVALID_ARG, error_body(MSG_INVALID_ARG));
                }
            },
        };
        let one = info.def.args.len() == 1;
        let arg = |i: usize| -> Result<&Value, BadArgs> {
            if one {
                Ok(&args)
            } else {
                args.as_fields().and_then(|f| f.get(i)).ok_or(BadArgs)
            }
        };
        let result = match self.handle(now, info.def.rpc, &arg) {
            Ok(v) => v,
            Err(BadArgs) => return (ERRC_INVALID_ARG, error_body(MSG_INVALID_ARG)),
        };
        match encode_with(&info.def.ret, &info.ret_literal, info.ret_hash, &result, REPLY_STYLE) {
            Ok(body) => (0, body),
            Err(_) => {
                log::error!("rpc: {} built a reply of the wrong shape", info.def.name);
                (ERRC_EXCEPTION, error_body("internal error"))
            }
        }
    }

    fn bump(&self, c: Ctr) {
        self.stats.bump(c, 1);
    }

    fn handle<'a>(&mut self, now: Now, rpc: Rpc, arg: &dyn Fn(usize) -> Result<&'a Value, BadArgs>) -> Handled {
        let store = self.master.store().clone();
        let t = now.mono;
        let multi = self.master.config.multi_tenants;
        // The tenant argument of keyed methods (always the last one).
        let tenant_at = |i: usize| -> Result<Result<&'a str, ErrorCode>, BadArgs> { tenant_of(multi, arg(i)?) };
        Ok(match rpc {
            Rpc::ServiceReady => Value::ok(Value::str(&self.master.config.service_version)),
            Rpc::GetStorageConfig => Value::ok(Value::Struct(vec![Value::str(""), Value::Bool(true), Value::UInt(0)])),
            Rpc::GetFsdir => Value::ok(Value::str("")),
            Rpc::FetchTasks => {
                uuid(arg(0)?)?;
                Value::ok(Value::List(Vec::new()))
            }
            Rpc::Ping => {
                let status = match store.client_ping(t, uuid(arg(0)?)?) {
                    ClientStatus::Ok => 1,
                    ClientStatus::NeedRemount => 2,
                };
                Value::ok(Value::Struct(vec![Value::Int(0), Value::Int(status)]))
            }
            Rpc::MountSegment => {
                let (seg, client) = (segment(arg(0)?)?, uuid(arg(1)?)?);
                let r = store.client_mount(t, client, &seg);
                match r {
                    Ok(new) => self.stats.bump(Ctr::MountReq, u64::from(new)),
                    Err(_) => self.bump(Ctr::MountFail),
                }
                void(r.map(|_| ()))
            }
            Rpc::ReMountSegment => {
                let segs = list(arg(0)?)?.iter().map(segment).collect::<Result<Vec<_>, _>>()?;
                let r = store.client_remount(t, uuid(arg(1)?)?, &segs);
                match r {
                    Ok(n) => self.stats.bump(Ctr::MountReq, n),
                    Err(_) => self.bump(Ctr::MountFail),
                }
                void(r.map(|_| ()))
            }
            Rpc::UnmountSegment => {
                let (seg, _client) = (uuid(arg(0)?)?, uuid(arg(1)?)?);
                let r = store.client_unmount(t, seg);
                self.count_unmount(&r);
                void(r)
            }
            Rpc::GracefulUnmountSegment => {
                let (seg, client, ms) = (uuid(arg(0)?)?, uuid(arg(1)?)?, u64_of(arg(2)?)?);
                let r = store.client_graceful_unmount(t, seg, client, Duration::from_millis(ms));
                self.count_unmount(&r);
                void(r)
            }
            Rpc::QuerySegmentStatusById => segment_status(store.segment_status(uuid(arg(0)?)?)),
            Rpc::QuerySegmentStatus => segment_status(store.segment_status_by_name(&text(arg(0)?)?)),
            // ExistKey grants no lease here, so ProbeKey (a newer client's lease-free check)
            // is the same question; both count as existence checks.
            Rpc::ExistKey | Rpc::ProbeKey => self.exist(tenant_at(1)?, arg(0)?)?,
            Rpc::BatchExistKey | Rpc::BatchProbeKey => {
                let tenant = tenant_at(1)?;
                Value::List(list(arg(0)?)?.iter().map(|k| self.exist(tenant, k)).collect::<Result<_, _>>()?)
            }
            Rpc::GetReplicaList => self.get(now, tenant_at(1)?, arg(0)?)?,
            Rpc::BatchGetReplicaList => {
                let tenant = tenant_at(1)?;
                Value::List(list(arg(0)?)?.iter().map(|k| self.get(now, tenant, k)).collect::<Result<_, _>>()?)
            }
            Rpc::GetReplicaListByRegex => match (regex(arg(0)?)?, tenant_at(1)?) {
                (None, _) | (_, Err(_)) => Value::err(ErrorCode::InvalidParams.code()),
                (Some(re), Ok(tenant)) => {
                    let keys = store.keys_where(&|k| local_key(tenant, k).is_some_and(|l| re.is_match(l)));
                    let pairs = keys
                        .iter()
                        .filter_map(|k| {
                            let local = local_key(tenant, k)?;
                            Some((Value::str(local), descriptors(&store.client_get(t, k).ok()?.replicas)))
                        })
                        .collect();
                    Value::ok(Value::Map(pairs))
                }
            },
            Rpc::PutStart | Rpc::UpsertStart => {
                let (client, cfg) = (uuid(arg(0)?)?, write_config(arg(3)?)?);
                let tenant = tenant_at(4)?;
                self.put_start(now, client, tenant, arg(1)?, u64_of(arg(2)?)?, &cfg, rpc == Rpc::UpsertStart)?
            }
            Rpc::BatchPutStart | Rpc::BatchUpsertStart => {
                let (client, cfg) = (uuid(arg(0)?)?, write_config(arg(3)?)?);
                let (keys, lens) = (list(arg(1)?)?, list(arg(2)?)?);
                let tenant = tenant_at(4)?;
                let upsert = rpc == Rpc::BatchUpsertStart;
                let mut out = Vec::with_capacity(keys.len());
                for (i, k) in keys.iter().enumerate() {
                    out.push(match lens.get(i) {
                        Some(len) => self.put_start(now, client, tenant, k, u64_of(len)?, &cfg, upsert)?,
                        None => Value::err(ErrorCode::InvalidParams.code()),
                    });
                }
                Value::List(out)
            }
            Rpc::PutEnd | Rpc::UpsertEnd => self.put_end(now, uuid(arg(0)?)?, tenant_at(3)?, arg(1)?)?,
            Rpc::BatchPutEnd | Rpc::BatchUpsertEnd => {
                let client = uuid(arg(0)?)?;
                let tenant = tenant_at(if rpc == Rpc::BatchPutEnd { 3 } else { 2 })?;
                Value::List(
                    list(arg(1)?)?.iter().map(|m| self.put_end(now, client, tenant, m)).collect::<Result<_, _>>()?,
                )
            }
            Rpc::PutRevoke | Rpc::UpsertRevoke => self.put_revoke(now, uuid(arg(0)?)?, tenant_at(3)?, arg(1)?)?,
            Rpc::BatchPutRevoke | Rpc::BatchUpsertRevoke => {
                let client = uuid(arg(0)?)?;
                let tenant = tenant_at(if rpc == Rpc::BatchPutRevoke { 3 } else { 2 })?;
                Value::List(
                    list(arg(1)?)?.iter().map(|k| self.put_revoke(now, client, tenant, k)).collect::<Result<_, _>>()?,
                )
            }
            Rpc::Remove => self.remove(now, tenant_at(2)?, arg(0)?, bool_of(arg(1)?)?)?,
            Rpc::BatchRemove => {
                let force = bool_of(arg(1)?)?;
                let tenant = tenant_at(2)?;
                Value::List(
                    list(arg(0)?)?.iter().map(|k| self.remove(now, tenant, k, force)).collect::<Result<_, _>>()?,
                )
            }
            Rpc::RemoveByRegex => match (regex(arg(0)?)?, tenant_at(2)?) {
                (None, _) | (_, Err(_)) => Value::err(ErrorCode::InvalidParams.code()),
                (Some(re), Ok(tenant)) => {
                    let pick = |k: &str| local_key(tenant, k).is_some_and(|l| re.is_match(l));
                    let n = store.remove_where(t, bool_of(arg(1)?)?, &pick);
                    Value::ok(Value::Int(n as i64))
                }
            },
            Rpc::RemoveAll => {
                self.bump(Ctr::RemoveAllReq);
                let force = bool_of(arg(0)?)?;
                // A client's RemoveAll empties its own tenant; an invalid tenant removes nothing.
                let n = match tenant_at(1)? {
                    Ok("") => store.remove_where(t, force, &|_| true),
                    Ok(tenant) => store.remove_where(t, force, &|k| split_key(k).0 == tenant),
                    Err(_) => 0,
                };
                Value::Int(n as i64)
            }
            Rpc::BatchQueryIp
            | Rpc::BatchReplicaClear
            | Rpc::MountLocalDiskSegment
            | Rpc::UnmountLocalDiskSegment
            | Rpc::OffloadObjectHeartbeat
            | Rpc::PollRemoveAll => unreachable!("not served: answered before dispatch"),
        })
    }

    fn count_unmount(&self, r: &Result<(), ErrorCode>) {
        self.bump(Ctr::UnmountReq);
        if r.is_err() {
            self.bump(Ctr::UnmountFail);
        }
    }

    fn exist(&self, tenant: Result<&str, ErrorCode>, k: &Value) -> Handled {
        Ok(match scoped(tenant, k)? {
            Ok(k) => {
                self.bump(Ctr::ExistReq);
                Value::ok(Value::Bool(self.master.store().client_exists(&k)))
            }
            Err(e) => Value::err(e.code()),
        })
    }

    fn get(&self, now: Now, tenant: Result<&str, ErrorCode>, k: &Value) -> Handled {
        let k = match scoped(tenant, k)? {
            Ok(k) => k,
            Err(e) => return Ok(Value::err(e.code())),
        };
        let k = &*k;
        self.bump(Ctr::GetReq);
        let store = self.master.store();
        Ok(match store.client_get(now.mono, k) {
            Ok(list) => Value::ok(Value::Struct(vec![
                descriptors(&list.replicas),
                Value::UInt(u64::try_from(store.lease_ttl().as_millis()).unwrap_or(u64::MAX)),
                Value::opt(list.checksum.map(Value::UInt)),
            ])),
            Err(e) => {
                self.bump(Ctr::GetFail);
                Value::err(e.code())
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn put_start(
        &self,
        now: Now,
        client: Uuid,
        tenant: Result<&str, ErrorCode>,
        k: &Value,
        len: u64,
        cfg: &WriteConfig,
        upsert: bool,
    ) -> Handled {
        let k = match scoped(tenant, k)? {
            Ok(k) => k,
            Err(e) => return Ok(Value::err(e.code())),
        };
        let r = self.master.store().client_put_start(now.mono, client, &k, len, cfg, upsert);
        // `master_put_start_*` count writes that reached allocation (SPEC §9).
        match &r {
            Ok(_) => self.bump(Ctr::PutStart),
            Err(ErrorCode::NoAvailableHandle) => {
                self.bump(Ctr::PutStart);
                self.bump(Ctr::PutStartFail);
            }
            Err(_) => {}
        }
        Ok(match r {
            Ok(ds) => Value::ok(descriptors(&ds)),
            Err(e) => Value::err(e.code()),
        })
    }

    fn put_end(&self, now: Now, client: Uuid, tenant: Result<&str, ErrorCode>, meta: &Value) -> Handled {
        let (k, checksum) = match meta.as_fields() {
            Some([k, c]) => (k, c.as_opt().ok_or(BadArgs)?.map(u64_of).transpose()?),
            _ => return Err(BadArgs),
        };
        let k = match scoped(tenant, k)? {
            Ok(k) => k,
            Err(e) => return Ok(Value::err(e.code())),
        };
        let r = self.master.store().client_put_end(now.mono, client, &k, checksum);
        if let Ok(Some(len)) = r {
            self.bump(Ctr::PutEnd);
            self.stats.observe_value(len);
        }
        Ok(void(r.map(|_| ())))
    }

    fn put_revoke(&self, now: Now, client: Uuid, tenant: Result<&str, ErrorCode>, k: &Value) -> Handled {
        Ok(match scoped(tenant, k)? {
            Ok(k) => void(self.master.store().client_put_revoke(now.mono, client, &k)),
            Err(e) => Value::err(e.code()),
        })
    }

    fn remove(&self, now: Now, tenant: Result<&str, ErrorCode>, k: &Value, force: bool) -> Handled {
        let k = match scoped(tenant, k)? {
            Ok(k) => k,
            Err(e) => return Ok(Value::err(e.code())),
        };
        self.bump(Ctr::RemoveReq);
        let r = self.master.store().remove_forced(now.mono, &k, force).map_err(ErrorCode::from);
        if r.is_err() {
            self.bump(Ctr::RemoveFail);
        }
        Ok(void(r))
    }
}
