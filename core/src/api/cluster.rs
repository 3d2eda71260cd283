//! The Store REST API of a store node (docs/cluster.md): the same routes, bodies and
//! validation as the single process (`rest`), carried out on the master's cluster. Each
//! request becomes one [`ClusterOp`] handed out as a transfer; its [`ClusterReply`] becomes
//! the response here, and every cluster error maps to an [`ApiError`] in [`cluster_error`].

use std::time::Duration;

use crate::http::{RequestHead, Response};
use crate::node::{ClusterError, ClusterOp, ClusterReply, NodeSegment};
use crate::route::Route;
use crate::store::{MountOutcome, UnmountFamily};
use crate::time::Now;
use crate::transfer::TransferOp;

use super::error::ApiError;
use super::json::{self, Json, UInt};
use super::params::query_param;
use super::reply::{json_reply, CT_OCTET};
use super::{ApiRequest, Owed, Service, StreamState};
use bytes::Bytes;

/// Most copies one put may ask for.
const MAX_REPLICAS: u64 = 64;
const INVALID_REPLICAS: &str = "Invalid replica_num: must be an integer in [1, 64]";
/// Extra time a segment unmounted through a node stays mapped locally after the master
/// dropped it, so that a transfer the master placed just before is not cut off.
const LOCAL_UNMOUNT_SLACK: Duration = Duration::from_secs(2);

/// `replica_num`: a JSON member or a query parameter, default 1.
fn replicas_of(head: &RequestHead, obj: Option<&Json<'_>>) -> Result<u64, ApiError> {
    if let Some(v) = obj.and_then(|o| o.member("replica_num")) {
        return match v.as_uint() {
            UInt::Value(n) if (1..=MAX_REPLICAS).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(INVALID_REPLICAS)),
        };
    }
    match query_param(head.query.as_deref(), "replica_num") {
        None => Ok(1),
        Some(raw) => match std::str::from_utf8(&raw).ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(n) if (1..=MAX_REPLICAS).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(INVALID_REPLICAS)),
        },
    }
}

/// The one mapping of cluster errors to endpoint errors.
fn cluster_error(e: ClusterError, route: Route, master: &str) -> ApiError {
    match e {
        ClusterError::Master(-704) => ApiError::ObjectNotFound,
        ClusterError::Master(-706) => ApiError::HasLease,
        ClusterError::Master(-703 | -714) => ApiError::BeingWritten,
        ClusterError::Master(-200) if matches!(route, Route::Mount | Route::MountShm) => ApiError::MountNoMemory,
        ClusterError::Master(-200) => ApiError::InsufficientStorage,
        ClusterError::Master(code) => ApiError::MasterError(code),
        ClusterError::Unreachable(why) => ApiError::MasterUnreachable(why),
        ClusterError::Protocol(why) => ApiError::MasterUnreachable(format!("{master}: {why}")),
        ClusterError::Transfer(why) if route == Route::Get => ApiError::NodeUnreachable(why),
        ClusterError::Transfer(why) => ApiError::NodeWriteFailed(why),
    }
}

impl Service {
    /// True in store-node mode.
    pub(super) fn node_mode(&self) -> bool {
        self.master.node().is_some()
    }

    /// The master's address (store-node mode; empty otherwise).
    fn master_addr(&self) -> String {
        self.master.node().map(|n| n.master().to_string()).unwrap_or_default()
    }

    /// Store-node mode: the routes carried out on the cluster (`None`: the others, served
    /// as in the single process).
    pub(super) fn dispatch_cluster(
        &mut self,
        now: Now,
        head: &RequestHead,
        req: &mut ApiRequest,
        body: &[u8],
    ) -> Option<Result<Response, ApiError>> {
        let route = req.route;
        Some(match route {
            Route::PutJson => super::rest::parse_object(body).and_then(|obj| {
                let (key, value) = super::rest::put_fields(&obj)?;
                let replicas = replicas_of(head, Some(&obj))?;
                self.cluster_put(now, key, Bytes::copy_from_slice(value.as_bytes()), replicas)
            }),
            Route::PutRaw => {
                // The collected body becomes the transfer's bytes without a copy.
                let value = match req.stream.take() {
                    Some(StreamState::Collect(buf)) => Bytes::from(buf),
                    _ => Bytes::copy_from_slice(body),
                };
                replicas_of(head, None).and_then(|n| req.key(head).and_then(|k| self.cluster_put(now, k, value, n)))
            }
            Route::Get | Route::Exist | Route::Remove => {
                req.key(head).map(str::to_string).map(|k| self.cluster_key_op(now, route, k))
            }
            Route::RemoveAll => Ok(self.cluster_key_op(now, route, String::new())),
            Route::Mount | Route::MountShm => self.cluster_mount(now, route, body),
            Route::Unmount => self.cluster_unmount(now, route, body, UnmountFamily::Anonymous),
            Route::UnmountShm => self.cluster_unmount(now, route, body, UnmountFamily::Shm),
            _ => return None,
        })
    }

    /// Answers later, once `op` ran on the cluster.
    fn cluster(&mut self, now: Now, op: ClusterOp, owed: Owed) -> Response {
        let master = self.master_addr();
        self.transfer(now, master, TransferOp::Cluster(op), owed)
    }

    /// A put of `value` under `key` with `replicas` copies.
    fn cluster_put(&mut self, now: Now, key: &str, value: bytes::Bytes, replicas: u64) -> Result<Response, ApiError> {
        if value.is_empty() {
            return Err(ApiError::invalid("Invalid value: must not be empty"));
        }
        let op = ClusterOp::Put { key: key.to_string(), value, replicas };
        Ok(self.cluster(now, op, Owed::Cluster { route: Route::PutJson, local: Box::new(Local::None) }))
    }

    /// `GET /api/get/{key}`, `GET /api/exist/{key}`, `DELETE /api/remove/{key}`,
    /// `DELETE /api/remove_all` (`key` unused).
    fn cluster_key_op(&mut self, now: Now, route: Route, key: String) -> Response {
        let op = match route {
            Route::Get => ClusterOp::Get { key },
            Route::Exist => ClusterOp::Exist { key },
            Route::Remove => ClusterOp::Remove { key },
            _ => ClusterOp::RemoveAll,
        };
        self.cluster(now, op, Owed::Cluster { route, local: Box::new(Local::None) })
    }

    /// `/api/mount`, `/api/mount_shm`: the memory is mapped here first (same validation and
    /// errors as the single process), then registered with the master; a refusal unmaps it.
    fn cluster_mount(&mut self, now: Now, route: Route, body: &[u8]) -> Result<Response, ApiError> {
        let out = match route {
            Route::Mount => self.mount_outcome(now, body)?,
            _ => self.mount_shm_outcome(now, body)?,
        };
        if out.segment_ids.is_empty() {
            return Ok(super::rest::mount_shm_response(&out));
        }
        let segments: Vec<NodeSegment> = self
            .master
            .store
            .segments()
            .into_iter()
            .filter(|s| out.segment_ids.contains(&s.id))
            .map(|s| NodeSegment { id: s.id, base: s.base_address, size: s.size, protocol: s.protocol.as_str().into() })
            .collect();
        let local = Local::Mounted(out);
        Ok(self.cluster(now, ClusterOp::Mount { segments }, Owed::Cluster { route, local: Box::new(local) }))
    }

    /// `/api/unmount`, `/api/unmount_shm`: unmounted here (the memory stays mapped for the
    /// grace period plus a little), then at the master.
    fn cluster_unmount(
        &mut self,
        now: Now,
        route: Route,
        body: &[u8],
        family: UnmountFamily,
    ) -> Result<Response, ApiError> {
        // Here a segment stays mapped a little after the master dropped it: one already on
        // its way out is not unmounted again (as in the single process, where it is gone).
        let mounted: Vec<uuid::Uuid> = self
            .master
            .store
            .segments()
            .into_iter()
            .filter(|s| s.status == crate::store::SegmentStatus::Mounted)
            .map(|s| s.id)
            .collect();
        let (mut done, mut failed, grace) = self.unmount_here(now, body, family, LOCAL_UNMOUNT_SLACK)?;
        done.retain(|(id, s)| {
            mounted.contains(id) || {
                failed.push(s.clone());
                false
            }
        });
        let op = ClusterOp::Unmount { ids: done.iter().map(|(id, _)| *id).collect(), grace_ms: grace * 1000 };
        let local = Local::Unmounted { sent: done.into_iter().map(|(_, s)| s).collect(), failed };
        Ok(self.cluster(now, op, Owed::Cluster { route, local: Box::new(local) }))
    }

    /// The response of a cluster operation of `route` (`local`: what the request did here).
    pub(super) fn cluster_answer(
        &mut self,
        now: Now,
        route: Route,
        local: Local,
        reply: Result<ClusterReply, ApiError>,
    ) -> Response {
        let master = self.master_addr();
        let reply = match reply {
            Ok(ClusterReply::Failed(e)) => Err(cluster_error(e, route, &master)),
            other => other,
        };
        let result = match (route, reply, local) {
            (_, Err(e), local) => {
                if let Local::Mounted(out) = local {
                    let _ = self.master.store.unmount(now.mono, family_of(route), &out.segment_ids, Duration::ZERO);
                }
                Err(e)
            }
            (Route::Get, Ok(ClusterReply::Value(bytes)), _) => Ok(Response::new(200, CT_OCTET, bytes)),
            (Route::Exist, Ok(ClusterReply::Exists(b)), _) => {
                Ok(json_reply(200, if b { &br#"{"exists":true}"#[..] } else { br#"{"exists":false}"# }))
            }
            (Route::PutJson | Route::PutRaw, Ok(ClusterReply::Stored), _)
            | (Route::Remove, Ok(ClusterReply::Removed), _) => Ok(super::rest::success()),
            (Route::RemoveAll, Ok(ClusterReply::RemovedAll(n)), _) => {
                let mut body = br#"{"status":"success removed "#.to_vec();
                json::push_u64(&mut body, n);
                body.extend_from_slice(br#" keys"}"#);
                Ok(json_reply(200, body))
            }
            (Route::Mount, Ok(ClusterReply::Mounted), Local::Mounted(out)) => Ok(super::rest::mount_response(&out)),
            (Route::MountShm, Ok(ClusterReply::Mounted), Local::Mounted(out)) => {
                Ok(super::rest::mount_shm_response(&out))
            }
            (
                Route::Unmount | Route::UnmountShm,
                Ok(ClusterReply::Unmounted(results)),
                Local::Unmounted { sent, mut failed },
            ) => {
                for (id, r) in sent.into_iter().zip(results) {
                    // Gone at the master already (expired, or never registered) is fine.
                    if matches!(r, Err(ref e) if *e != ClusterError::Master(-101)) {
                        failed.push(id);
                    }
                }
                if failed.is_empty() {
                    Ok(super::rest::success())
                } else {
                    Err(ApiError::UnmountFailed(failed))
                }
            }
            (_, Ok(other), _) => Err(ApiError::MasterUnreachable(format!("{master}: unexpected outcome {other:?}"))),
        };
        result.unwrap_or_else(|e| e.into_response(route))
    }
}

/// What a cluster request did on this node before asking the master.
#[derive(Clone, Debug)]
pub(super) enum Local {
    /// Nothing.
    None,
    /// Mapped these new segments (unmapped again if the master refuses them).
    Mounted(MountOutcome),
    /// Unmounted `sent` here (asked of the master too); `failed` here already (as written).
    Unmounted { sent: Vec<String>, failed: Vec<String> },
}

fn family_of(route: Route) -> UnmountFamily {
    match route {
        Route::MountShm | Route::UnmountShm => UnmountFamily::Shm,
        _ => UnmountFamily::Anonymous,
    }
}
