//! Every error an endpoint can answer, and the one place that turns it into a status code and a
//! body of the route's shape (SPEC §1.4 "Error body shapes", §10).

use std::borrow::Cow;

use crate::http::{HttpError, Response};
use crate::route::Route;

use super::json;
use super::reply::{json_reply, text_reply};
use super::router;

/// An endpoint error. [`ApiError::into_response`] is the only mapping to HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// Unknown path: 404 `not found` (always shape E3).
    NotFound,
    /// Known path, method not served: 405 with `Allow` (always shape E3).
    MethodNotAllowed,
    /// Any `Invalid ...`, `Missing ...`, `Malformed JSON body` ... message: 400, `-600`.
    InvalidParams(Cow<'static, str>),
    /// No complete value / no object record: 404, `-704`.
    ObjectNotFound,
    /// `/query_key`: first write still in progress: 404, `-703`.
    ReplicaNotReady,
    /// Remove of a key whose write is in progress: 409, `-703`.
    BeingWritten,
    /// Remove of a leased value: 409, `-706`.
    HasLease,
    /// No space even after eviction: 507, `-200`.
    InsufficientStorage,
    /// The tenant's quota is used up (`--enable-multi-tenants`): 507, `-1700`.
    QuotaExceeded,
    /// The writer's tenant (REST: `default`) has no quota policy: 403, `-1701`.
    TenantNotRegistered,
    /// `/api/mount` allocation refused: 507, `-200`.
    MountNoMemory,
    /// `/dev/shm/<name>` missing: 404, `-1100`.
    ShmNotFound(String),
    /// The OS refused a mapping: 500, `-1`.
    MountFailed(String),
    /// Some unmount ids failed: 404, `-101`, with the ids as written.
    UnmountFailed(Vec<String>),
    /// A streamed write lost its segment: 503, connection closed.
    WriteAborted,
    /// `/query_segment` of a name with no MOUNTED segment: 404.
    SegmentNotFound,
    /// An error the HTTP codec found (400, 408, 413, 417, 431, 505); always shape E3.
    Http(HttpError),
    /// `--max-connections` reached: 503, shape E3.
    TooManyConnections,
    /// The node holding the only replicas could not be read (the text names it): 502,
    /// `-800` (upstream's `TRANSFER_FAIL`).
    NodeUnreachable(String),
    /// The node holding the only replicas did not answer in time: 504, `-800`.
    NodeTimeout(String),
    /// The node a put was placed on could not be written (the text names it): 502, `-800`.
    NodeWriteFailed(String),
    /// The node a put was placed on did not acknowledge in time: 504, `-800`.
    NodeWriteTimeout(String),
    /// Store-node mode: the master cannot be reached (the text says why): 503, `-900`
    /// (upstream's `RPC_FAIL`).
    MasterUnreachable(String),
    /// Store-node mode: the master answered an error this endpoint has no better status for
    /// (its code and name): 502 with that code.
    MasterError(i32),
    /// Store-node mode: the master did not answer in time: 504, `-901` (`RPC_TIMEOUT`).
    MasterTimeout(String),
    /// An error of upstream's `/api/v1/*` endpoints: its code and message, the status by
    /// upstream's map (upstream-behavior §1.3).
    Upstream(i32, Cow<'static, str>),
}

/// The body shapes of SPEC §1.4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `{"success":false,"error_code":<int>,"error_message":"<text>"}`
    Admin,
    /// `{"success":false,"error":"<text>"}`
    Batch,
    /// `{"error":"<text>"}`
    Rest,
    /// The message as a plain-text body.
    Plain,
}

impl Shape {
    /// The error shape an endpoint uses.
    pub(crate) fn of(route: Route) -> Shape {
        match route {
            Route::QueryKey
            | Route::SegmentsStatus
            | Route::TenantQuotas
            | Route::RemoveAllV1
            | Route::KvEventsStatus
            | Route::DrainJobs
            | Route::DrainJobsQuery
            | Route::DrainJobsCancel => Shape::Admin,
            Route::BatchQueryKeys => Shape::Batch,
            Route::GetAllKeys | Route::QuerySegment | Route::Health => Shape::Plain,
            _ => Shape::Rest,
        }
    }
}

/// Upstream's name of an `ErrorCode` (SPEC §10), or the number.
pub(crate) fn error_name(code: i32) -> String {
    let name = match code {
        -1 => "INTERNAL_ERROR",
        -100 => "BUFFER_OVERFLOW",
        -101 => "SEGMENT_NOT_FOUND",
        -102 => "SEGMENT_ALREADY_EXISTS",
        -200 => "NO_AVAILABLE_HANDLE",
        -300 => "INVALID_VERSION",
        -400 => "INVALID_KEY",
        -500 => "WRITE_FAIL",
        -600 => "INVALID_PARAMS",
        -601 => "ILLEGAL_CLIENT",
        -700 => "INVALID_WRITE",
        -701 => "INVALID_READ",
        -702 => "INVALID_REPLICA",
        -703 => "REPLICA_IS_NOT_READY",
        -704 => "OBJECT_NOT_FOUND",
        -705 => "OBJECT_ALREADY_EXISTS",
        -706 => "OBJECT_HAS_LEASE",
        -714 => "OBJECT_REPLICA_BUSY",
        -800 => "TRANSFER_FAIL",
        -900 => "RPC_FAIL",
        -901 => "RPC_TIMEOUT",
        -1010 => "UNAVAILABLE_IN_CURRENT_STATUS",
        -1011 => "UNAVAILABLE_IN_CURRENT_MODE",
        -1700 => "TENANT_QUOTA_EXCEEDED",
        -1701 => "TENANT_NOT_REGISTERED",
        -1702 => "TENANT_NOT_EMPTY",
        _ => return format!("error code {code}"),
    };
    format!("{name} ({code})")
}

impl ApiError {
    /// A 400 with a fixed message.
    pub(crate) fn invalid(msg: &'static str) -> Self {
        ApiError::InvalidParams(Cow::Borrowed(msg))
    }

    /// HTTP status.
    pub(crate) fn status(&self) -> u16 {
        match self {
            ApiError::NotFound
            | ApiError::ObjectNotFound
            | ApiError::ReplicaNotReady
            | ApiError::ShmNotFound(_)
            | ApiError::UnmountFailed(_)
            | ApiError::SegmentNotFound => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::InvalidParams(_) => 400,
            ApiError::BeingWritten | ApiError::HasLease => 409,
            ApiError::TenantNotRegistered => 403,
            ApiError::InsufficientStorage | ApiError::MountNoMemory | ApiError::QuotaExceeded => 507,
            ApiError::MountFailed(_) => 500,
            ApiError::WriteAborted | ApiError::TooManyConnections => 503,
            ApiError::Http(e) => e.status(),
            ApiError::NodeUnreachable(_) | ApiError::NodeWriteFailed(_) => 502,
            ApiError::NodeTimeout(_) | ApiError::NodeWriteTimeout(_) => 504,
            ApiError::MasterUnreachable(_) => 503,
            ApiError::MasterError(_) => 502,
            ApiError::MasterTimeout(_) => 504,
            ApiError::Upstream(code, _) => match code {
                -600 => 400,
                -1402 | -101 | -704 | -1701 => 404,
                -1011 | -1010 | -1702 => 409,
                _ => 500,
            },
        }
    }

    /// Upstream `ErrorCode` (SPEC §10).
    pub(crate) fn code(&self) -> i32 {
        match self {
            ApiError::InvalidParams(_) | ApiError::NotFound | ApiError::MethodNotAllowed | ApiError::Http(_) => -600,
            ApiError::ObjectNotFound => -704,
            ApiError::ReplicaNotReady | ApiError::BeingWritten => -703,
            ApiError::HasLease => -706,
            ApiError::InsufficientStorage | ApiError::MountNoMemory => -200,
            ApiError::QuotaExceeded => -1700,
            ApiError::TenantNotRegistered => -1701,
            ApiError::ShmNotFound(_) => -1100,
            ApiError::MountFailed(_) | ApiError::WriteAborted | ApiError::TooManyConnections => -1,
            ApiError::UnmountFailed(_) | ApiError::SegmentNotFound => -101,
            ApiError::NodeUnreachable(_)
            | ApiError::NodeTimeout(_)
            | ApiError::NodeWriteFailed(_)
            | ApiError::NodeWriteTimeout(_) => -800,
            ApiError::MasterUnreachable(_) => -900,
            ApiError::MasterError(code) => *code,
            ApiError::MasterTimeout(_) => -901,
            ApiError::Upstream(code, _) => *code,
        }
    }

    /// The message in shape `shape`: admin bodies carry the code name for object errors,
    /// Store REST bodies their sentence.
    pub(crate) fn message(&self, shape: Shape) -> Cow<'_, str> {
        let admin = matches!(shape, Shape::Admin | Shape::Batch);
        Cow::Borrowed(match self {
            ApiError::NotFound => "not found",
            ApiError::MethodNotAllowed => "method not allowed",
            ApiError::InvalidParams(m) => m,
            ApiError::ObjectNotFound if admin => "OBJECT_NOT_FOUND",
            ApiError::ObjectNotFound => "Key not found",
            ApiError::ReplicaNotReady => "REPLICA_IS_NOT_READY",
            ApiError::BeingWritten => "Key is being written",
            ApiError::HasLease => "Key has an active lease",
            ApiError::InsufficientStorage => "Insufficient storage",
            ApiError::QuotaExceeded if admin => "TENANT_QUOTA_EXCEEDED",
            ApiError::QuotaExceeded => "Tenant quota exceeded",
            ApiError::TenantNotRegistered if admin => "TENANT_NOT_REGISTERED",
            ApiError::TenantNotRegistered => {
                "Tenant not registered: default (set its quota with PUT /api/v1/tenant_quotas)"
            }
            ApiError::MountNoMemory => "Allocate and mount failed: insufficient memory",
            ApiError::ShmNotFound(name) => return Cow::Owned(format!("Shared memory object not found: {name}")),
            ApiError::MountFailed(text) => return Cow::Owned(format!("Mount failed: {text}")),
            ApiError::NodeUnreachable(text) => return Cow::Owned(format!("Cannot read the value from {text}")),
            ApiError::NodeTimeout(node) => return Cow::Owned(format!("Timed out reading the value from {node}")),
            ApiError::NodeWriteFailed(text) => return Cow::Owned(format!("Cannot write the value to {text}")),
            ApiError::NodeWriteTimeout(node) => return Cow::Owned(format!("Timed out writing the value to {node}")),
            ApiError::MasterUnreachable(why) => return Cow::Owned(format!("Master unreachable: {why}")),
            ApiError::MasterError(code) => return Cow::Owned(format!("The master answered {}", error_name(*code))),
            ApiError::MasterTimeout(m) => return Cow::Owned(format!("Timed out waiting for the master at {m}")),
            ApiError::UnmountFailed(_) => "Unmount failed for one or more segments",
            ApiError::WriteAborted => "Write aborted: segment unmounted",
            ApiError::SegmentNotFound => "segment not found",
            ApiError::Http(e) => e.message(),
            ApiError::TooManyConnections => "too many connections",
            ApiError::Upstream(_, m) => m,
        })
    }

    /// The response for this error on `route`.
    pub(crate) fn into_response(self, route: Route) -> Response {
        let status = self.status();
        // Protocol-level errors use shape E3 whatever the route (SPEC §1.4).
        let shape = match self {
            ApiError::NotFound | ApiError::MethodNotAllowed | ApiError::Http(_) | ApiError::TooManyConnections => {
                Shape::Rest
            }
            _ => Shape::of(route),
        };
        let msg = self.message(shape);
        let mut resp = match shape {
            Shape::Plain => text_reply(status, msg.as_bytes()),
            Shape::Rest => {
                let mut body = json::error_body(&msg);
                if let ApiError::UnmountFailed(ids) = &self {
                    body.pop();
                    body.extend_from_slice(b",\"failed_segment_ids\":[");
                    for (i, id) in ids.iter().enumerate() {
                        if i > 0 {
                            body.push(b',');
                        }
                        json::push_str(&mut body, id);
                    }
                    body.extend_from_slice(b"]}");
                }
                json_reply(status, body)
            }
            Shape::Admin => {
                let mut body = Vec::with_capacity(64 + msg.len());
                body.extend_from_slice(b"{\"success\":false,\"error_code\":");
                let code = self.code();
                if code < 0 {
                    body.push(b'-');
                }
                json::push_u64(&mut body, u64::from(code.unsigned_abs()));
                body.extend_from_slice(b",\"error_message\":");
                json::push_str(&mut body, &msg);
                body.push(b'}');
                json_reply(status, body)
            }
            Shape::Batch => {
                let mut body = Vec::with_capacity(32 + msg.len());
                body.extend_from_slice(b"{\"success\":false,\"error\":");
                json::push_str(&mut body, &msg);
                body.push(b'}');
                json_reply(status, body)
            }
        };
        match self {
            ApiError::MethodNotAllowed => resp = resp.with_header("Allow", router::allow(route)),
            ApiError::WriteAborted => resp.close = true,
            _ => {}
        }
        resp
    }
}
