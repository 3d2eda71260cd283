//! The HA admin endpoints (`/role`, `/ha_status`, `/leader`; upstream-behavior §1) and the
//! standby's answer to service requests. Served only on a highly available master: without
//! `--enable-ha` these paths are the SPEC's 404.

use crate::http::Response;
use crate::route::Route;

use super::json::{push_str, push_u64};
use super::reply::{json_reply, text_reply};
use super::Service;

/// Routes a standby still serves: the admin plane (metrics, health, HA state) and the
/// dashboard, which shows the replicated state.
pub(super) fn served_on_standby(route: Route) -> bool {
    matches!(
        route,
        Route::Metrics
            | Route::MetricsSummary
            | Route::Health
            | Route::Role
            | Route::HaStatus
            | Route::Leader
            | Route::ClusterSummary
            | Route::Ui
            | Route::Other
    )
}

/// The HA route of `path`, on a highly available master.
pub(super) fn route_of(path: &str) -> Option<Route> {
    match path {
        "/role" => Some(Route::Role),
        "/ha_status" => Some(Route::HaStatus),
        "/leader" => Some(Route::Leader),
        _ => None,
    }
}

fn push_opt_str(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn push_opt_i64(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(n) if n >= 0 => push_u64(out, n as u64),
        _ => out.extend_from_slice(b"null"),
    }
}

impl Service {
    /// `GET /role`: `leader` or `standby`.
    pub(super) fn role(&self, now: std::time::Instant) -> Response {
        let leader = self.master.serves(now);
        text_reply(200, if leader { &b"leader"[..] } else { &b"standby"[..] })
    }

    /// `GET /ha_status`: `starting`, `standby`, `candidate`, `catching_up` or `serving`.
    pub(super) fn ha_status(&self) -> Response {
        let status = self.master.ha().map_or("serving", |h| h.view().role.status());
        text_reply(200, status.as_bytes().to_vec())
    }

    /// `GET /leader`: `{"present":..,"leader_address":..,"view_version":..}`.
    pub(super) fn leader(&self) -> Response {
        let view = self.master.ha().map(|h| h.view());
        let leader = view.as_ref().and_then(|v| v.leader.clone());
        let mut out = b"{\"present\":".to_vec();
        out.extend_from_slice(if leader.is_some() { b"true" } else { b"false" });
        out.extend_from_slice(b",\"leader_address\":");
        push_opt_str(&mut out, leader.as_deref());
        out.extend_from_slice(b",\"view_version\":");
        push_opt_i64(&mut out, view.and_then(|v| v.view_version));
        out.push(b'}');
        json_reply(200, out)
    }

    /// The `/health` JSON body of a highly available master.
    pub(super) fn ha_health(&self, now: std::time::Instant, down: bool) -> Option<Response> {
        let ha = self.master.ha()?;
        let view = ha.view();
        let serving = self.master.serves(now) && !down;
        let mut out = b"{\"status\":".to_vec();
        out.extend_from_slice(if down { b"\"unavailable\"" } else { b"\"ok\"" });
        out.extend_from_slice(b",\"role\":");
        out.extend_from_slice(if serving { b"\"leader\"" } else { b"\"standby\"" });
        out.extend_from_slice(b",\"ha_state\":");
        push_str(&mut out, if down { "stopping" } else { view.role.status() });
        out.extend_from_slice(b",\"service_ready\":");
        out.extend_from_slice(if serving { b"true" } else { b"false" });
        out.extend_from_slice(b",\"leader_address\":");
        push_opt_str(&mut out, view.leader.as_deref());
        out.extend_from_slice(b",\"view_version\":");
        push_opt_i64(&mut out, view.view_version);
        out.push(b'}');
        Some(json_reply(if down { 503 } else { 200 }, out))
    }

    /// A service request on a master that is not the serving leader: 503, naming the leader
    /// (upstream's body, plus `leader_address`).
    pub(super) fn not_serving(&self) -> Response {
        let leader = self.master.ha().and_then(|h| h.view().leader);
        let mut out =
            br#"{"success":false,"error_code":-1011,"error_message":"service plane is not active","leader_address":"#
                .to_vec();
        push_opt_str(&mut out, leader.as_deref());
        out.push(b'}');
        json_reply(503, out).with_header("Retry-After", "1")
    }
}
