//! A store node drains itself before it leaves (`--drain-on-shutdown`, docs/cluster.md): on
//! SIGTERM it asks its master's HTTP API for a drain job of its own segments, waits until the
//! job has moved every replica elsewhere (or failed, or the time is up, and then cancels it),
//! and only then unmounts. The values it held stay readable on other nodes.
//!
//! ```text
//!            POST /api/v1/drain_jobs {"segments":[me]}
//!   Create ─────────────────────────────────────────► Wait(job) ◄──┐ GET …/query?job_id=J
//!     │  unreachable / 5xx: again in 500 ms              │  RUNNING ─┘ (every 200 ms)
//!     │  404 (master knows no segment of mine) ──► Done(NothingToDrain)
//!     │  other 4xx ──────────────────────────────► Done(Refused)
//!     │                                              │  SUCCEEDED ──► Done(Drained)
//!     │                                              │  FAILED | CANCELED ──► Done(Failed)
//!     └─ deadline: Done(Unreachable | Refused)       └─ deadline ──► Cancel(job) ──► Done(TimedOut)
//! ```
//!
//! Sans-IO like the rest of the core: the driver sends what [`SelfDrain::poll_request`]
//! returns, feeds the answer to [`SelfDrain::handle_response`] (or the failure to
//! [`SelfDrain::handle_error`]), sleeps until [`SelfDrain::poll_timeout`], calls
//! [`SelfDrain::handle_timeout`], and stops once [`SelfDrain::outcome`] is set.

use std::time::{Duration, Instant};

use serde_json::Value;

/// Between two queries of the job.
pub const QUERY_INTERVAL: Duration = Duration::from_millis(200);
/// Before another try at a master that did not answer.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// How long the cancel of a timed-out job may take.
pub const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// One HTTP request to the master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Path and query.
    pub path: String,
    /// JSON body (empty for a GET).
    pub body: Vec<u8>,
}

/// How far a job got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobProgress {
    /// `A-B`.
    pub job_id: String,
    /// Replicas moved.
    pub succeeded_units: u64,
    /// Replicas that could not be moved.
    pub failed_units: u64,
    /// Bytes moved.
    pub migrated_bytes: u64,
    /// The job's message (`Drain job finished successfully`, ...).
    pub message: String,
}

/// How the self-drain ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every replica was moved.
    Drained(JobProgress),
    /// The master knows no segment of this node (404): nothing to move.
    NothingToDrain,
    /// The job ended FAILED or CANCELED (e.g. no other node has room).
    Failed {
        /// `FAILED`, `CANCELED`, or `UNKNOWN` when the master forgot the job.
        status: String,
        /// The job's last figures.
        progress: JobProgress,
    },
    /// The job was still running at the deadline; it was canceled.
    TimedOut(JobProgress),
    /// The master refused the job (status, its message).
    Refused(u16, String),
    /// No answer from the master before the deadline.
    Unreachable(String),
}

impl DrainOutcome {
    /// Did every value leave this node?
    pub fn drained(&self) -> bool {
        matches!(self, DrainOutcome::Drained(_) | DrainOutcome::NothingToDrain)
    }
}

#[derive(Debug)]
enum State {
    /// Creating the job; `last_error` says why the previous try failed.
    Create {
        last_error: String,
    },
    /// The job runs; query it.
    Wait(JobProgress),
    /// The deadline passed; the cancel is sent once.
    Cancel(JobProgress),
    Done(DrainOutcome),
}

/// The self-drain of one node (see the module docs).
#[derive(Debug)]
pub struct SelfDrain {
    segments: Vec<String>,
    max_concurrency: u32,
    deadline: Instant,
    /// When the next request is due (none while one is in flight).
    next_at: Option<Instant>,
    in_flight: bool,
    state: State,
}

fn field<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.get(k).unwrap_or(&Value::Null)
}

fn progress(v: &Value, job_id: &str) -> JobProgress {
    JobProgress {
        job_id: job_id.to_string(),
        succeeded_units: field(v, "succeeded_units").as_u64().unwrap_or(0),
        failed_units: field(v, "failed_units").as_u64().unwrap_or(0),
        migrated_bytes: field(v, "migrated_bytes").as_u64().unwrap_or(0),
        message: field(v, "message").as_str().unwrap_or("").to_string(),
    }
}

/// The error text of an `/api/v1` error body, else the body itself (shortened).
fn error_text(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.get("error_message").is_some() => field(&v, "error_message").as_str().unwrap_or("").to_string(),
        _ => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

/// `application/x-www-form-urlencoded` escaping of a query value.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl SelfDrain {
    /// A self-drain of `segments` (this node's name) that must end by `now + timeout`.
    pub fn new(segments: Vec<String>, max_concurrency: u32, now: Instant, timeout: Duration) -> Self {
        SelfDrain {
            segments,
            max_concurrency: max_concurrency.max(1),
            deadline: now + timeout,
            next_at: Some(now),
            in_flight: false,
            state: State::Create { last_error: String::new() },
        }
    }

    /// The request to send now, if one is due.
    pub fn poll_request(&mut self, now: Instant) -> Option<HttpCall> {
        if self.in_flight || !matches!(self.next_at, Some(t) if t <= now) {
            return None;
        }
        let call = match &self.state {
            State::Create { .. } => {
                let body = serde_json::json!({"segments": self.segments, "max_concurrency": self.max_concurrency});
                HttpCall { method: "POST", path: "/api/v1/drain_jobs".into(), body: body.to_string().into_bytes() }
            }
            State::Wait(p) => HttpCall {
                method: "GET",
                path: format!("/api/v1/drain_jobs/query?job_id={}", escape(&p.job_id)),
                body: Vec::new(),
            },
            State::Cancel(p) => HttpCall {
                method: "POST",
                path: format!("/api/v1/drain_jobs/cancel?job_id={}", escape(&p.job_id)),
                body: Vec::new(),
            },
            State::Done(_) => return None,
        };
        self.in_flight = true;
        self.next_at = None;
        Some(call)
    }

    /// The answer to the request last returned by [`Self::poll_request`].
    pub fn handle_response(&mut self, now: Instant, status: u16, body: &[u8]) {
        self.in_flight = false;
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match &mut self.state {
            State::Create { last_error } => match status {
                200 => match field(&json, "job_id").as_str() {
                    Some(id) => {
                        log::info!("drain before shutdown: job {id} created for {:?}", self.segments);
                        self.state = State::Wait(JobProgress { job_id: id.to_string(), ..JobProgress::default() });
                        self.next_at = Some(now + QUERY_INTERVAL);
                    }
                    None => self.state = State::Done(DrainOutcome::Refused(status, "no job_id in the answer".into())),
                },
                404 => self.state = State::Done(DrainOutcome::NothingToDrain),
                s if s >= 500 => {
                    // A master starting up, failing over or overloaded: try again.
                    *last_error = format!("HTTP {s}: {}", error_text(body));
                    self.next_at = Some(now + RETRY_INTERVAL);
                }
                s => self.state = State::Done(DrainOutcome::Refused(s, error_text(body))),
            },
            State::Wait(p) => {
                if status != 200 {
                    // 404 once the master forgot the job (restarted): nothing more to learn.
                    if status == 404 {
                        let p = std::mem::take(p);
                        self.state = State::Done(DrainOutcome::Failed { status: "UNKNOWN".into(), progress: p });
                        return;
                    }
                    self.next_at = Some(now + QUERY_INTERVAL);
                    return;
                }
                let got = progress(&json, &p.job_id);
                *p = got.clone();
                match field(&json, "status_name").as_str().unwrap_or("") {
                    "SUCCEEDED" => self.state = State::Done(DrainOutcome::Drained(got)),
                    s @ ("FAILED" | "CANCELED") => {
                        self.state = State::Done(DrainOutcome::Failed { status: s.to_string(), progress: got })
                    }
                    _ => self.next_at = Some(now + QUERY_INTERVAL),
                }
            }
            State::Cancel(p) => {
                let p = std::mem::take(p);
                self.state = State::Done(DrainOutcome::TimedOut(p));
            }
            State::Done(_) => {}
        }
    }

    /// The request last returned by [`Self::poll_request`] got no answer (`why`).
    pub fn handle_error(&mut self, now: Instant, why: &str) {
        self.in_flight = false;
        match &mut self.state {
            State::Create { last_error } => {
                *last_error = why.to_string();
                self.next_at = Some(now + RETRY_INTERVAL);
            }
            State::Wait(_) => self.next_at = Some(now + QUERY_INTERVAL),
            State::Cancel(p) => {
                let p = std::mem::take(p);
                self.state = State::Done(DrainOutcome::TimedOut(p));
            }
            State::Done(_) => {}
        }
    }

    /// When [`Self::handle_timeout`] is due next (None once done).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Done(_) => None,
            State::Cancel(_) => Some(self.deadline + CANCEL_GRACE),
            _ => Some(self.next_at.map_or(self.deadline, |t| t.min(self.deadline))),
        }
    }

    /// Advances past the deadline (a request due is returned by [`Self::poll_request`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.state {
            State::Create { last_error } if now >= self.deadline => {
                let why = if last_error.is_empty() { "no answer".to_string() } else { std::mem::take(last_error) };
                self.state = State::Done(DrainOutcome::Unreachable(why));
            }
            // A query still out is answered first (the driver bounds each request).
            State::Wait(p) if now >= self.deadline && !self.in_flight => {
                let p = std::mem::take(p);
                log::warn!("drain before shutdown: job {} still running at the deadline; canceling it", p.job_id);
                self.state = State::Cancel(p);
                self.next_at = Some(now);
            }
            State::Cancel(p) if now >= self.deadline + CANCEL_GRACE => {
                let p = std::mem::take(p);
                self.state = State::Done(DrainOutcome::TimedOut(p));
            }
            _ => {}
        }
    }

    /// How it ended, once it has.
    pub fn outcome(&self) -> Option<&DrainOutcome> {
        match &self.state {
            State::Done(o) => Some(o),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    fn job(status: &str, ok: u64, bytes: u64) -> Vec<u8> {
        format!(
            r#"{{"success":true,"job_id":"1-2","status_name":"{status}","succeeded_units":{ok},"failed_units":0,"migrated_bytes":{bytes},"message":"m"}}"#
        )
        .into_bytes()
    }

    /// Runs `d` on a virtual clock: every due request is answered by `master`.
    fn run(d: &mut SelfDrain, mut now: Instant, mut master: impl FnMut(&HttpCall) -> Result<(u16, Vec<u8>), String>) {
        for _ in 0..10_000 {
            while let Some(call) = d.poll_request(now) {
                match master(&call) {
                    Ok((s, b)) => d.handle_response(now, s, &b),
                    Err(e) => d.handle_error(now, &e),
                }
            }
            let Some(t) = d.poll_timeout() else { return };
            now = now.max(t);
            d.handle_timeout(now);
        }
        panic!("never finished");
    }

    #[test]
    fn a_running_job_is_queried_until_it_succeeds() {
        let now = Instant::now();
        let mut d = SelfDrain::new(vec!["127.0.0.1:8081".into()], 4, now, T);
        let mut queries = 0;
        run(&mut d, now, |c| match c.method {
            "POST" => {
                assert_eq!(c.path, "/api/v1/drain_jobs");
                let v: Value = serde_json::from_slice(&c.body).unwrap();
                assert_eq!(v["segments"][0], "127.0.0.1:8081");
                assert_eq!(v["max_concurrency"], 4);
                Ok((200, br#"{"success":true,"job_id":"1-2","status":"CREATED"}"#.to_vec()))
            }
            _ => {
                assert_eq!(c.path, "/api/v1/drain_jobs/query?job_id=1-2");
                queries += 1;
                Ok((200, job(if queries < 3 { "RUNNING" } else { "SUCCEEDED" }, 5, 500)))
            }
        });
        assert_eq!(queries, 3);
        let Some(DrainOutcome::Drained(p)) = d.outcome() else { panic!("{:?}", d.outcome()) };
        assert_eq!((p.succeeded_units, p.migrated_bytes), (5, 500));
        assert!(d.outcome().unwrap().drained());
    }

    #[test]
    fn a_job_still_running_at_the_deadline_is_canceled() {
        let now = Instant::now();
        let mut d = SelfDrain::new(vec!["n".into()], 1, now, T);
        let mut canceled = false;
        run(&mut d, now, |c| match (c.method, c.path.as_str()) {
            ("POST", "/api/v1/drain_jobs") => Ok((200, br#"{"job_id":"1-2"}"#.to_vec())),
            ("POST", p) => {
                assert_eq!(p, "/api/v1/drain_jobs/cancel?job_id=1-2");
                canceled = true;
                Ok((200, b"{}".to_vec()))
            }
            _ => Ok((200, job("RUNNING", 1, 10))),
        });
        assert!(canceled);
        let Some(DrainOutcome::TimedOut(p)) = d.outcome() else { panic!("{:?}", d.outcome()) };
        assert_eq!(p.succeeded_units, 1, "the last progress seen is kept");
        assert!(!d.outcome().unwrap().drained());
    }

    #[test]
    fn a_master_that_never_answers_gives_up_at_the_deadline_with_the_reason() {
        let now = Instant::now();
        let mut d = SelfDrain::new(vec!["n".into()], 4, now, T);
        let mut tries = 0;
        run(&mut d, now, |_| {
            tries += 1;
            Err("Connection refused".into())
        });
        assert_eq!(d.outcome(), Some(&DrainOutcome::Unreachable("Connection refused".into())));
        // Retried every 500 ms for 10 s.
        assert!((19..=21).contains(&tries), "{tries}");
    }

    #[test]
    fn a_master_that_recovers_is_retried_and_a_5xx_is_not_final() {
        let now = Instant::now();
        let mut d = SelfDrain::new(vec!["n".into()], 4, now, T);
        let mut n = 0;
        run(&mut d, now, |c| {
            n += 1;
            match (n, c.method) {
                (1, _) => Err("refused".into()),
                (2, _) => Ok((503, br#"{"success":false,"error_code":-1,"error_message":"not leader"}"#.to_vec())),
                (_, "POST") => Ok((200, br#"{"job_id":"3-4"}"#.to_vec())),
                _ => Ok((200, job("SUCCEEDED", 0, 0))),
            }
        });
        assert!(matches!(d.outcome(), Some(DrainOutcome::Drained(p)) if p.job_id == "3-4"));
    }

    #[test]
    fn refusals_end_it_at_once() {
        let now = Instant::now();
        let mut d = SelfDrain::new(vec!["n".into()], 4, now, T);
        run(&mut d, now, |_| Ok((404, br#"{"success":false,"error_code":-101}"#.to_vec())));
        assert_eq!(d.outcome(), Some(&DrainOutcome::NothingToDrain));
        assert!(d.outcome().unwrap().drained());
        let mut d = SelfDrain::new(vec!["n".into()], 4, now, T);
        let body = br#"{"success":false,"error_code":-1011,"error_message":"UNAVAILABLE_IN_CURRENT_STATUS"}"#;
        run(&mut d, now, |_| Ok((409, body.to_vec())));
        assert_eq!(d.outcome(), Some(&DrainOutcome::Refused(409, "UNAVAILABLE_IN_CURRENT_STATUS".into())));
    }

    #[test]
    fn a_failed_job_reports_its_units() {
        let now = Instant::now();
        let mut d = SelfDrain::new(vec!["n".into()], 4, now, T);
        run(&mut d, now, |c| match c.method {
            "POST" => Ok((200, br#"{"job_id":"1-2"}"#.to_vec())),
            _ => Ok((
                200,
                br#"{"job_id":"1-2","status_name":"FAILED","succeeded_units":2,"failed_units":3,"migrated_bytes":7}"#
                    .to_vec(),
            )),
        });
        let Some(DrainOutcome::Failed { status, progress }) = d.outcome() else { panic!() };
        assert_eq!((status.as_str(), progress.failed_units), ("FAILED", 3));
    }

    #[test]
    fn nothing_is_sent_while_a_request_is_in_flight() {
        let now = Instant::now();
        let mut d = SelfDrain::new(vec!["n".into()], 4, now, T);
        assert!(d.poll_request(now).is_some());
        assert!(d.poll_request(now + T).is_none());
        d.handle_timeout(now + T);
        // The create never answered: at the deadline it is over.
        assert!(matches!(d.outcome(), Some(DrainOutcome::Unreachable(_))));
        assert!(d.poll_request(now + T).is_none());
    }

    #[test]
    fn job_ids_are_escaped_in_the_query() {
        assert_eq!(escape("1-2"), "1-2");
        assert_eq!(escape("a b&c"), "a%20b%26c");
    }
}
