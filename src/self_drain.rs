//! `--drain-on-shutdown` (docs/cluster.md): the driver of the core's
//! [`mc_core::node::self_drain::SelfDrain`]. On SIGTERM a store node asks its master's HTTP
//! API for a drain job of its own segments and waits for it before it unmounts; this file
//! only sends the requests (blocking, each bounded) and sleeps until the next one is due.

use std::time::{Duration, Instant};

use mc_core::node::self_drain::{DrainOutcome, SelfDrain};

/// The most one request to the master may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What the drain needs to know.
pub struct Options {
    /// The master's HTTP listener, `http://HOST:PORT`.
    pub base: String,
    /// This node's name (the name of its segments in the master).
    pub name: String,
    /// The whole drain's deadline.
    pub timeout: Duration,
}

/// `HOST:PORT` or `http://HOST:PORT[/]` as a base URL; anything else is refused.
pub fn base_url(s: &str) -> Result<String, String> {
    let rest = s.trim().trim_end_matches('/');
    let rest = rest.strip_prefix("http://").unwrap_or(rest);
    match mc_rdma::publish::split_host_port(rest) {
        Some((host, _)) if !host.is_empty() && !rest.contains('/') => Ok(format!("http://{rest}")),
        _ => Err(format!("--master-http {s:?}: expected HOST:PORT (the master's HTTP listener)")),
    }
}

/// Runs the drain to its end; logs and returns how it ended.
pub fn run(opts: &Options) -> DrainOutcome {
    let agent = ureq::AgentBuilder::new().timeout_connect(REQUEST_TIMEOUT).timeout(REQUEST_TIMEOUT).build();
    let started = Instant::now();
    log::info!(
        "drain before shutdown: asking the master at {} to move the values of {} (at most {:?})",
        opts.base,
        opts.name,
        opts.timeout
    );
    let mut d = SelfDrain::new(vec![opts.name.clone()], 4, started, opts.timeout);
    let outcome = loop {
        while let Some(call) = d.poll_request(Instant::now()) {
            let url = format!("{}{}", opts.base, call.path);
            let req = agent.request(call.method, &url).set("Content-Type", "application/json");
            let sent = if call.method == "GET" { req.call() } else { req.send_bytes(&call.body) };
            let answer = match sent {
                Ok(r) => Ok(r),
                Err(ureq::Error::Status(_, r)) => Ok(r),
                Err(e) => Err(e.to_string()),
            };
            match answer {
                Ok(r) => {
                    let status = r.status();
                    let mut body = Vec::new();
                    match std::io::Read::read_to_end(&mut r.into_reader(), &mut body) {
                        Ok(_) => d.handle_response(Instant::now(), status, &body),
                        Err(e) => d.handle_error(Instant::now(), &e.to_string()),
                    }
                }
                Err(why) => d.handle_error(Instant::now(), &why),
            }
        }
        if let Some(o) = d.outcome() {
            break o.clone();
        }
        if let Some(t) = d.poll_timeout() {
            std::thread::sleep(t.saturating_duration_since(Instant::now()));
        }
        d.handle_timeout(Instant::now());
    };
    let secs = started.elapsed().as_secs_f64();
    match &outcome {
        DrainOutcome::Drained(p) => log::info!(
            "drain before shutdown: job {} moved {} replicas ({} bytes) in {secs:.1} s; leaving",
            p.job_id,
            p.succeeded_units,
            p.migrated_bytes
        ),
        DrainOutcome::NothingToDrain => {
            log::info!("drain before shutdown: the master holds nothing of {}; leaving", opts.name)
        }
        DrainOutcome::Failed { status, progress: p } => log::warn!(
            "drain before shutdown: job {} ended {status} after {secs:.1} s ({} replicas moved, {} not: {}); \
             leaving, and what was not moved is lost",
            p.job_id,
            p.succeeded_units,
            p.failed_units,
            p.message
        ),
        DrainOutcome::TimedOut(p) => log::warn!(
            "drain before shutdown: job {} not done after {secs:.1} s (--drain-timeout), canceled with {} replicas \
             moved; leaving, and what was not moved is lost",
            p.job_id,
            p.succeeded_units
        ),
        DrainOutcome::Refused(status, why) => {
            log::warn!("drain before shutdown: the master refused the job ({status}: {why}); leaving without it")
        }
        DrainOutcome::Unreachable(why) => log::warn!(
            "drain before shutdown: no answer from the master at {} within {secs:.1} s ({why}); leaving without it",
            opts.base
        ),
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::base_url;

    #[test]
    fn master_http_takes_host_port_or_a_base_url() {
        assert_eq!(base_url("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(base_url("http://[::1]:9003/").unwrap(), "http://[::1]:9003");
        assert!(base_url("8080").is_err());
        assert!(base_url("http://h:1/api").is_err());
        assert!(base_url("https://h:1").is_err());
    }
}
