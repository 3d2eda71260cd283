//! The Store REST API (SPEC §3, §5, §6.2–§6.7).

use std::time::Duration;

use uuid::Uuid;

use crate::config::Protocol;
use crate::http::{Body, HeadDecision, RequestHead, Response, ValueBytes};
use crate::route::Route;
use crate::store::{MountError, MountKind, MountOutcome, PutError, RemoveError, UnmountFamily, ValueRead, WriteHandle};
use crate::time::Now;

use super::error::ApiError;
use super::json::{self, Json, UInt};
use super::params::{parse_uuid, push_uuid};
use super::reply::{json_reply, CT_OCTET};
use super::{ApiRequest, Service, StreamState};
use crate::stats::Ctr;

/// Largest accepted `size` (2^62, SPEC §3).
const MAX_SIZE: u64 = 1 << 62;
/// Largest `grace_period_seconds` (SPEC §5.2).
const MAX_GRACE: u64 = 86400;
const SUCCESS: &[u8] = br#"{"status":"success"}"#;
const INVALID_SIZE: &str = "Invalid size: must be an integer in [1, 4611686018427387904]";
const INVALID_IDS: &str = "Invalid segment_ids: must be a string or an array of strings";

/// Parses a JSON request body that must be an object (SPEC §3).
pub(super) fn parse_object(body: &[u8]) -> Result<Json<'_>, ApiError> {
    match json::parse(body) {
        Err(_) => Err(ApiError::invalid("Malformed JSON body")),
        Ok(v @ Json::Object(_)) => Ok(v),
        Ok(_) => Err(ApiError::invalid("Request body must be a JSON object")),
    }
}

/// `size`: required integer in `[1, 2^62]`.
fn size_field(obj: &Json<'_>) -> Result<u64, ApiError> {
    match obj.member("size").map(Json::as_uint) {
        Some(UInt::Value(n)) if (1..=MAX_SIZE).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(INVALID_SIZE)),
    }
}

/// `location`: optional string, default `""`.
fn location_field<'j>(obj: &'j Json<'_>) -> Result<&'j str, ApiError> {
    match obj.member("location") {
        None => Ok(""),
        Some(v) => v.as_str().ok_or(ApiError::invalid("Invalid location: must be a string")),
    }
}

/// What [`Service::unmount_here`] did: the ids unmounted (with their spelling), the ids that
/// failed (as written), and the grace period in seconds.
pub(super) type UnmountedHere = (Vec<(Uuid, String)>, Vec<String>, u64);

/// The `key` and `value` of a JSON put, validated in SPEC order (§6.2).
pub(super) fn put_fields<'j>(obj: &'j Json<'_>) -> Result<(&'j str, &'j str), ApiError> {
    let (key, value) = match (obj.member("key"), obj.member("value")) {
        (Some(k), Some(v)) if !matches!(k, Json::Str(s) if s.is_empty()) => (k, v),
        _ => return Err(ApiError::invalid("Missing key or value")),
    };
    let key = key.as_str().ok_or(ApiError::invalid("Invalid key: must be a string"))?;
    let value = value.as_str().ok_or(ApiError::invalid("Invalid value: must be a string"))?;
    Ok((super::params::validate_key(key.as_bytes())?, value))
}

/// The response of a successful `/api/mount`.
pub(super) fn mount_response(out: &MountOutcome) -> Response {
    let mut body = mount_body(out);
    body.extend_from_slice(b",\"allocated_size\":");
    json::push_u64(&mut body, out.allocated_size);
    body.push(b'}');
    json_reply(200, body)
}

/// The response of a successful `/api/mount_shm`.
pub(super) fn mount_shm_response(out: &MountOutcome) -> Response {
    let mut body = mount_body(out);
    body.push(b'}');
    json_reply(200, body)
}

/// `{"status":"success","segment_ids":[...]` (left open for more members).
fn mount_body(out: &MountOutcome) -> Vec<u8> {
    let mut body = Vec::with_capacity(40 + out.segment_ids.len() * 40 + 32);
    body.extend_from_slice(br#"{"status":"success","segment_ids":["#);
    for (i, id) in out.segment_ids.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.push(b'"');
        push_uuid(&mut body, *id);
        body.push(b'"');
    }
    body.push(b']');
    body
}

impl Service {
    /// `protocol`: optional `tcp` / `rdma`, default `--protocol`.
    fn protocol_field(&self, obj: &Json<'_>) -> Result<Protocol, ApiError> {
        match obj.member("protocol").map(|v| v.as_str()) {
            None => Ok(self.master.config.protocol),
            Some(Some("tcp")) => Ok(Protocol::Tcp),
            Some(Some("rdma")) => Ok(Protocol::Rdma),
            Some(_) => Err(ApiError::invalid("Invalid protocol: must be tcp or rdma")),
        }
    }

    /// `POST /api/mount_shm` (SPEC §5.1).
    pub(super) fn mount_shm(&self, now: Now, body: &[u8]) -> Result<Response, ApiError> {
        let out = self.mount_shm_outcome(now, body)?;
        Ok(mount_shm_response(&out))
    }

    /// `POST /api/mount_shm` up to the mount: its new segments.
    pub(super) fn mount_shm_outcome(&self, now: Now, body: &[u8]) -> Result<MountOutcome, ApiError> {
        let obj = parse_object(body)?;
        let name = obj
            .member("name")
            .and_then(Json::as_str)
            .ok_or(ApiError::invalid("Invalid name: must be a non-empty string"))?;
        let name = name.strip_prefix('/').unwrap_or(name);
        let rule = if name.is_empty() {
            Some("Invalid name: must be a non-empty string")
        } else if name.contains('/') {
            Some("Invalid name: must not contain '/'")
        } else if name == "." || name == ".." {
            Some("Invalid name: must not be '.' or '..'")
        } else if name.contains('\0') {
            Some("Invalid name: must not contain NUL")
        } else if name.len() > 255 {
            Some("Invalid name: must be at most 255 bytes")
        } else {
            None
        };
        if let Some(msg) = rule {
            return Err(ApiError::invalid(msg));
        }
        let size = size_field(&obj)?;
        let page = self.master.platform.page_size().max(1);
        let offset = match obj.member("offset").map(Json::as_uint) {
            None => 0,
            Some(UInt::Value(o)) if o % page == 0 => o,
            Some(_) => {
                return Err(ApiError::InvalidParams(
                    format!("Invalid offset: must be a non-negative multiple of {page}").into(),
                ))
            }
        };
        let protocol = self.protocol_field(&obj)?;
        let location = location_field(&obj)?;
        let out =
            self.master.store.mount_shm(now.mono, name, offset, size, protocol, location).map_err(|e| match e {
                MountError::ShmNotFound => ApiError::ShmNotFound(name.to_string()),
                MountError::NotRegularFile => ApiError::invalid("Invalid name: not a regular file"),
                MountError::TooSmall(n) => ApiError::InvalidParams(
                    format!("Invalid size: offset + size exceeds the object size of {n} bytes").into(),
                ),
                MountError::Os(text) => ApiError::MountFailed(text),
                MountError::OutOfMemory => ApiError::MountFailed(e.to_string()),
            })?;
        self.stats.bump(Ctr::MountReq, out.segment_ids.len() as u64);
        Ok(out)
    }

    /// `POST /api/mount` (SPEC §5.3).
    pub(super) fn mount(&self, now: Now, body: &[u8]) -> Result<Response, ApiError> {
        let out = self.mount_outcome(now, body)?;
        Ok(mount_response(&out))
    }

    /// `POST /api/mount` up to the mount: its new segments.
    pub(super) fn mount_outcome(&self, now: Now, body: &[u8]) -> Result<MountOutcome, ApiError> {
        let obj = parse_object(body)?;
        let size = size_field(&obj)?;
        let protocol = self.protocol_field(&obj)?;
        let location = location_field(&obj)?;
        let out = self.master.store.mount_anonymous(now.mono, MountKind::Anonymous, size, protocol, location).map_err(
            |e| match e {
                // Any refusal of an anonymous allocation is reported as lack of memory (SPEC §5.3).
                MountError::OutOfMemory | MountError::Os(_) => ApiError::MountNoMemory,
                other => ApiError::MountFailed(other.to_string()),
            },
        )?;
        self.stats.bump(Ctr::MountReq, out.segment_ids.len() as u64);
        Ok(out)
    }

    /// `POST /api/unmount_shm` and `POST /api/unmount` (SPEC §5.2, §5.4).
    pub(super) fn unmount(&self, now: Now, body: &[u8], family: UnmountFamily) -> Result<Response, ApiError> {
        let (_, failed, _) = self.unmount_here(now, body, family, Duration::ZERO)?;
        if failed.is_empty() {
            Ok(json_reply(200, SUCCESS))
        } else {
            Err(ApiError::UnmountFailed(failed))
        }
    }

    /// An unmount request carried out on this process's segments, each kept mapped for
    /// `slack` beyond its grace period: the ids unmounted (with their spelling), those that
    /// failed (as written), and the grace period in seconds.
    pub(super) fn unmount_here(
        &self,
        now: Now,
        body: &[u8],
        family: UnmountFamily,
        slack: Duration,
    ) -> Result<UnmountedHere, ApiError> {
        let obj = parse_object(body)?;
        let raw: Vec<&str> = match obj.member("segment_ids") {
            None => return Err(ApiError::invalid("Missing segment_ids")),
            Some(Json::Str(s)) if s.is_empty() => return Err(ApiError::invalid("Missing segment_ids")),
            Some(Json::Str(s)) => vec![&**s],
            Some(Json::Array(a)) if a.is_empty() => return Err(ApiError::invalid("Missing segment_ids")),
            Some(Json::Array(a)) => {
                a.iter().map(Json::as_str).collect::<Option<_>>().ok_or(ApiError::invalid(INVALID_IDS))?
            }
            Some(_) => return Err(ApiError::invalid(INVALID_IDS)),
        };
        let mut ids: Vec<(Uuid, &str)> = Vec::with_capacity(raw.len());
        for s in &raw {
            let id = parse_uuid(s)
                .ok_or_else(|| ApiError::InvalidParams(format!("Invalid segment_ids: not a UUID: {s}").into()))?;
            // Compared case-insensitively: a repeated id is processed once (first spelling kept).
            if !ids.iter().any(|(seen, _)| *seen == id) {
                ids.push((id, s));
            }
        }
        let grace = match obj.member("grace_period_seconds").map(Json::as_uint) {
            None => 0,
            Some(UInt::Value(g)) if g <= MAX_GRACE => g,
            Some(_) => return Err(ApiError::invalid("Invalid grace_period_seconds: must be an integer in [0, 86400]")),
        };
        let uuids: Vec<Uuid> = ids.iter().map(|(id, _)| *id).collect();
        let ok = self.master.store.unmount(now.mono, family, &uuids, Duration::from_secs(grace) + slack);
        let mut done = Vec::with_capacity(ids.len());
        let mut failed = Vec::new();
        for ((id, s), ok) in ids.iter().zip(ok.iter().chain(std::iter::repeat(&false))) {
            match ok {
                true => done.push((*id, s.to_string())),
                false => failed.push(s.to_string()),
            }
        }
        self.stats.bump(Ctr::UnmountReq, ids.len() as u64);
        self.stats.bump(Ctr::UnmountFail, failed.len() as u64);
        Ok((done, failed, grace))
    }

    /// `PUT /api/put` with `{"key":..,"value":..}` (SPEC §6.2).
    pub(super) fn put_json(&mut self, now: Now, body: &[u8]) -> Result<Response, ApiError> {
        let obj = parse_object(body)?;
        let (key, value) = put_fields(&obj)?;
        self.store_value(now, key, value.as_bytes())
    }

    /// Validates the value and stores it in one step (JSON put, chunked raw put).
    /// Without room in this process, in cluster mode, the value goes to another node's
    /// segment through the data plane, and the response follows its acknowledgement.
    pub(super) fn store_value(&mut self, now: Now, key: &str, value: &[u8]) -> Result<Response, ApiError> {
        if value.is_empty() {
            return Err(ApiError::invalid("Invalid value: must not be empty"));
        }
        self.stats.bump(Ctr::PutStart, 1);
        match self.master.store.put(now.mono, key, value) {
            Ok(()) => {
                self.stats.bump(Ctr::PutEnd, 1);
                self.stats.observe_value(value.len() as u64);
                Ok(json_reply(200, SUCCESS))
            }
            Err(PutError::InsufficientStorage) => {
                match self.master.store.begin_remote_put(now.mono, key, value.len() as u64) {
                    Ok(put) => Ok(self.write_remote(now, put, value)),
                    Err(e) => {
                        self.stats.bump(Ctr::PutStartFail, 1);
                        Err(put_error(e))
                    }
                }
            }
            Err(e @ (PutError::QuotaExceeded | PutError::TenantNotRegistered)) => {
                self.stats.bump(Ctr::PutStartFail, 1);
                Err(put_error(e))
            }
        }
    }

    /// `PUT /api/put/{key}` at the request head (SPEC §6.3): key rules, empty body, then —
    /// with `Content-Length` — allocation before the body is read.
    pub(super) fn put_raw_head(&self, now: Now, head: &RequestHead, req: &mut ApiRequest) -> HeadDecision {
        let key = match req.key(head) {
            Ok(k) => k,
            Err(e) => return HeadDecision::Respond(e.into_response(Route::PutRaw)),
        };
        // Chunked framing, and store nodes (the master places the value once its length is
        // known; the bytes go wherever that is): collect, then store in one step.
        if head.chunked || self.node_mode() {
            let cap = head.content_length.unwrap_or(0).min(self.master.config.max_body_size).min(1 << 26);
            req.stream = Some(StreamState::Collect(Vec::with_capacity(cap as usize)));
            return HeadDecision::Stream;
        }
        let len = match head.content_length {
            Some(n) if n > 0 => n,
            _ => {
                return HeadDecision::Respond(
                    ApiError::invalid("Invalid value: must not be empty").into_response(Route::PutRaw),
                )
            }
        };
        match self.master.store.begin_write(now.mono, key, len) {
            Ok(w) => {
                self.stats.bump(Ctr::PutStart, 1);
                req.stream = Some(StreamState::Write(w));
                HeadDecision::Stream
            }
            // No room here: collect the body, then place it on another node (`store_value`).
            Err(PutError::InsufficientStorage) if self.master.store.could_place_remote(len) => {
                req.stream = Some(StreamState::Collect(Vec::new()));
                HeadDecision::Stream
            }
            Err(e) => {
                self.stats.bump(Ctr::PutStart, 1);
                self.stats.bump(Ctr::PutStartFail, 1);
                let mut resp = put_error(e).into_response(Route::PutRaw);
                resp.close = true;
                HeadDecision::RespondNow(resp)
            }
        }
    }

    /// The last body byte of a streamed write arrived: the value becomes current.
    pub(super) fn complete_write(&self, now: Now, w: WriteHandle) -> Result<Response, ApiError> {
        let len = w.complete(now.mono).map_err(|_| ApiError::WriteAborted)?;
        self.stats.bump(Ctr::PutEnd, 1);
        self.stats.observe_value(len);
        Ok(json_reply(200, SUCCESS))
    }

    /// `GET /api/get/{key}` (SPEC §6.4); HEAD answers the same without lease or counter.
    /// A value whose replicas all live on other nodes is read through the data plane
    /// (cluster mode): the response follows once the bytes arrived (502/504 naming the node
    /// when they do not).
    pub(super) fn get(&mut self, now: Now, head: &RequestHead, key: &str) -> Result<Response, ApiError> {
        let side_effects = head.method != crate::http::Method::Head;
        if side_effects {
            self.stats.bump(Ctr::GetReq, 1);
        }
        match self.master.store.get(now.mono, key, side_effects) {
            Some(v) => Ok(Response::with_body(200, CT_OCTET, Body::Value(Box::new(v)))),
            None if self.master.config.cluster => match self.master.store.remote_replica(now.mono, key, side_effects) {
                Some(r) => Ok(self.read_remote(now, r, side_effects)),
                None => {
                    if side_effects {
                        self.stats.bump(Ctr::GetFail, 1);
                    }
                    Err(ApiError::ObjectNotFound)
                }
            },
            None => {
                if side_effects {
                    self.stats.bump(Ctr::GetFail, 1);
                }
                Err(ApiError::ObjectNotFound)
            }
        }
    }

    /// `GET /api/exist/{key}` (SPEC §6.5).
    pub(super) fn exist(&self, head: &RequestHead, key: &str) -> Result<Response, ApiError> {
        if head.method != crate::http::Method::Head {
            self.stats.bump(Ctr::ExistReq, 1);
        }
        let body: &[u8] = if self.master.store.exists(key) { br#"{"exists":true}"# } else { br#"{"exists":false}"# };
        Ok(json_reply(200, body))
    }

    /// `DELETE /api/remove/{key}` (SPEC §6.6).
    pub(super) fn remove(&self, now: Now, key: &str) -> Result<Response, ApiError> {
        self.stats.bump(Ctr::RemoveReq, 1);
        self.master.store.remove(now.mono, key).map_err(|e| {
            self.stats.bump(Ctr::RemoveFail, 1);
            match e {
                RemoveError::NotFound => ApiError::ObjectNotFound,
                RemoveError::Leased => ApiError::HasLease,
                RemoveError::BeingWritten => ApiError::BeingWritten,
            }
        })?;
        Ok(json_reply(200, SUCCESS))
    }

    /// `DELETE /api/remove_all` (SPEC §6.7).
    pub(super) fn remove_all(&self, now: Now) -> Response {
        self.stats.bump(Ctr::RemoveAllReq, 1);
        let n = self.master.store.remove_all(now.mono);
        let mut body = Vec::with_capacity(48);
        body.extend_from_slice(br#"{"status":"success removed "#);
        json::push_u64(&mut body, n);
        body.extend_from_slice(br#" keys"}"#);
        json_reply(200, body)
    }
}

/// A value read is sent as a response body straight from segment memory; holding it keeps
/// the read in flight (SPEC §8.1).
impl ValueBytes for ValueRead {
    fn bytes(&self) -> &[u8] {
        ValueRead::bytes(self)
    }
}

/// `200 {"status":"success"}`.
pub(super) fn success() -> Response {
    json_reply(200, SUCCESS)
}

/// The API error of a refused write.
fn put_error(e: PutError) -> ApiError {
    match e {
        PutError::InsufficientStorage => ApiError::InsufficientStorage,
        PutError::QuotaExceeded => ApiError::QuotaExceeded,
        PutError::TenantNotRegistered => ApiError::TenantNotRegistered,
    }
}
