//! Proof with the real client: installs upstream's wheel (`mooncake-transfer-engine-non-cuda`)
//! into a virtual environment, points the unchanged Python client and
//! `python -m mooncake.mooncake_store_service` at `mc-master`, and runs
//! `tests/rpc_upstream/driver.py` (setup, put, get, exist, remove, remove_all, batch calls,
//! upsert, mount/unmount with and without grace, a killed client expiring, the admin
//! endpoints' view, the HTTP metadata server, and put/get round trips per second against
//! `mc-master` and upstream's `mooncake_master`).
//!
//! Runs once per runtime of `common::runtimes` (upstream's master is measured with the first).
//!
//! Skips (prints why, passes) when Python, the wheel or its system library cannot be had
//! (e.g. no network), or when `MC_SKIP_UPSTREAM=1`. The environment is cached in
//! `target/tmp/rpc-upstream-venv`; `MC_UPSTREAM_VENV` points at another one. `MC_RPC_BENCH`
//! sets the number of values of the round-trip measurement (default 300, 0 = none).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::upstream::{python_or_skip, Kill};

#[test]
fn unchanged_upstream_client_against_mc_master() {
    let Some(py) = python_or_skip("upstream client test") else { return };
    for (i, rt) in common::runtimes().iter().enumerate() {
        // upstream's master is measured once, next to the first runtime.
        upstream_client_against(&py, rt, i == 0);
    }
}

/// Runs the driver against `mc-master --runtime <rt>`.
fn upstream_client_against(py: &Path, rt: &str, compare_upstream: bool) {
    println!("=== runtime: {rt}");
    let ttl = 3;
    let mut master = Command::new(env!("CARGO_BIN_EXE_mc-master"))
        .args(["--port", "0", "--rpc-port", "0", "--threads", "2", "--runtime", rt, "--client-ttl"])
        .arg(format!("{ttl}s"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mc-master");
    let mut lines = BufReader::new(master.stdout.take().unwrap()).lines();
    let _guard = Kill(master);
    let http = lines.next().unwrap().unwrap().strip_prefix("listening on http://").unwrap().to_string();
    let rpc = lines.next().unwrap().unwrap().strip_prefix("rpc listening on ").unwrap().to_string();
    let bench = std::env::var("MC_RPC_BENCH").unwrap_or_else(|_| "300".to_string());
    let workdir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rpc-upstream-work-{rt}"));
    let upstream = py.parent().unwrap().join("mooncake_master");
    let mut driver = Command::new(py);
    driver
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rpc_upstream/driver.py"))
        .args(["--python"])
        .arg(py)
        .args(["--master", &rpc, "--http", &http, "--ttl", &ttl.to_string(), "--bench", &bench, "--workdir"])
        .arg(&workdir);
    if compare_upstream && upstream.exists() {
        driver.arg("--upstream-master").arg(&upstream);
    }
    let mut child = driver.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start the driver");
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut verdict = String::new();
    for line in out.lines().map_while(Result::ok) {
        println!("{line}");
        if line.starts_with("UPSTREAM ") {
            verdict = line;
        }
    }
    let status = child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(10));
    assert!(status.success() && verdict.starts_with("UPSTREAM PASS"), "{rt}: {verdict}");
}
