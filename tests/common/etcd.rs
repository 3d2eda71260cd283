//! A real single-member etcd for the high-availability tests: Debian's `etcd-server`
//! (`/usr/bin/etcd`, `MC_ETCD_BIN` picks another) on two free loopback ports (client, peer)
//! with a data directory of its own, killed on drop. `stop` / `restart` keep the ports and the
//! data directory (etcd restarted under load keeps its keys; leases granted before the stop
//! run on from their remaining TTL when it comes back). Keys are read and written through
//! etcd's JSON gateway (`POST /v3/kv/range`, `/v3/kv/put`, keys and values in base64), so the
//! tests need no etcd client library and no `etcdctl`.
//!
//! [`etcd_or_skip`] starts one for a test, or prints a `SKIP` line and returns `None` when the
//! binary is missing (`.ci/run` installs `etcd-server`; with `CI` set a missing one fails).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{build_request, free_port, unique, Conn};

/// Where the binary is looked for unless `MC_ETCD_BIN` names another.
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// How long etcd may take to answer `/health` after it was started.
pub const ETCD_START: Duration = Duration::from_secs(20);

/// The etcd binary of this machine, if any.
pub fn etcd_binary() -> Option<PathBuf> {
    let p = std::env::var_os("MC_ETCD_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(ETCD_BIN));
    p.exists().then_some(p)
}

/// A started etcd for test `name`, or `None` after printing why it is skipped (no etcd
/// binary). With `CI` set a missing binary is a failure, not a skip.
pub fn etcd_or_skip(name: &str) -> Option<Etcd> {
    let Some(bin) = etcd_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name}: etcd is required in CI (.ci/run installs etcd-server; {ETCD_BIN} is missing)"
        );
        println!("SKIP {name}: etcd not installed (apt-get install etcd-server)");
        return None;
    };
    Some(Etcd::start_with(&bin))
}

/// The `master_view` key of a cluster (upstream's `BuildMasterViewKey`).
pub fn master_view_key(cluster_id: &str) -> String {
    format!("mooncake-store/{}/master_view", cluster_id.trim_end_matches('/'))
}

/// One key as the JSON gateway reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

impl Kv {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

/// A running (or stopped) single-member etcd; killed and its data directory removed on drop.
pub struct Etcd {
    bin: PathBuf,
    child: Option<Child>,
    pub client_port: u16,
    pub peer_port: u16,
    /// Holds `data/` (the member's data directory) and `etcd.log`.
    pub dir: PathBuf,
    name: String,
}

impl Etcd {
    /// Starts one with the default binary (panics when there is none: use [`etcd_or_skip`]).
    pub fn start() -> Etcd {
        let bin = etcd_binary().unwrap_or_else(|| panic!("no etcd binary at {ETCD_BIN} (MC_ETCD_BIN unset)"));
        Self::start_with(&bin)
    }

    /// Starts `bin` on fresh ports; tries new ports up to three times when a port was taken
    /// between choosing it and etcd binding it.
    pub fn start_with(bin: &Path) -> Etcd {
        let dir = std::env::temp_dir().join(unique("mc-etcd"));
        std::fs::create_dir_all(&dir).expect("create the etcd directory");
        let mut e = Etcd {
            bin: bin.to_path_buf(),
            child: None,
            client_port: 0,
            peer_port: 0,
            dir,
            name: "mc-test".to_string(),
        };
        let mut last = String::new();
        for _ in 0..3 {
            e.client_port = free_port();
            e.peer_port = free_port();
            if e.client_port == e.peer_port {
                continue;
            }
            match e.spawn_and_wait() {
                Ok(()) => return e,
                Err(why) => {
                    last = why;
                    e.kill();
                    let _ = std::fs::remove_dir_all(e.data_dir());
                }
            }
        }
        panic!("etcd did not start: {last}");
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The log file of the member (both runs of a restart, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// The last 6 KiB of the log.
    pub fn log_tail(&self) -> String {
        let data = std::fs::read(self.log_path()).unwrap_or_default();
        let start = data.len().saturating_sub(6000);
        String::from_utf8_lossy(&data[start..]).into_owned()
    }

    /// `127.0.0.1:PORT` of the client listener (what `--etcd_endpoints` and `etcd://` take).
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.endpoint())
    }

    fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.client_port).into()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("open the etcd log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.bin)
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("{}={peer}", self.name))
            .arg("--initial-cluster-token")
            .arg(self.dir.file_name().and_then(|n| n.to_str()).unwrap_or("mc-test"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        self.wait_ready(ETCD_START)
    }

    /// Waits until `/health` says `{"health":"true"}` while the process is alive.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("etcd exited ({st}); log tail:\n{}", self.log_tail()));
            }
            if self.healthy() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("etcd not healthy after {timeout:?}; log tail:\n{}", self.log_tail()));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `/health` answers `{"health":"true"}` now.
    pub fn healthy(&self) -> bool {
        matches!(self.http("GET", "/health", b""), Some((200, v)) if v["health"] == "true")
    }

    /// SIGKILLs the member and reaps it (the data directory is kept).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the member: SIGTERM, then SIGKILL after 5 s (the data directory is kept).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the member (if running) and starts it again on the same ports and data directory;
    /// panics when it does not come back.
    pub fn restart(&mut self) {
        self.stop();
        // The old listeners are closed with the process; a port still in TIME_WAIT is fine for
        // a listener (Go sets SO_REUSEADDR).
        if let Err(why) = self.spawn_and_wait() {
            panic!("etcd did not restart on {}: {why}", self.endpoint());
        }
    }

    /// One request to the client listener: (status, JSON body), or None when it cannot be
    /// reached or does not answer within 5 s.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> Option<(u16, Value)> {
        let stream = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500)).ok()?;
        stream.set_nodelay(true).ok();
        let mut conn = Conn { stream, buf: Vec::new(), eof: false };
        let host = self.endpoint();
        let headers = [("Host", host.as_str()), ("Content-Type", "application/json"), ("Connection", "close")];
        conn.try_send(&build_request(method, path, &headers, body)).ok()?;
        let r = conn.try_read_response(false, Duration::from_secs(5)).ok()?;
        Some((r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null)))
    }

    /// The key through the gateway (`POST /v3/kv/range`): None when absent; panics when etcd
    /// does not answer.
    #[track_caller]
    pub fn get(&self, key: &str) -> Option<Kv> {
        self.try_get(key).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Etcd::get`], with an error instead of a panic when etcd does not answer.
    pub fn try_get(&self, key: &str) -> Result<Option<Kv>, String> {
        let body = json!({ "key": B64.encode(key) }).to_string();
        let (status, v) = self
            .http("POST", "/v3/kv/range", body.as_bytes())
            .ok_or_else(|| format!("etcd {} does not answer a range of {key:?}", self.endpoint()))?;
        if status != 200 {
            return Err(format!("etcd range {key:?}: status {status}: {v}"));
        }
        let Some(kv) = v["kvs"].as_array().and_then(|a| a.first()) else {
            return Ok(None);
        };
        // int64 fields are JSON strings in the gateway's encoding; absent when zero.
        let num = |f: &str| kv[f].as_str().and_then(|s| s.parse().ok()).or_else(|| kv[f].as_i64()).unwrap_or(0);
        let value = match kv["value"].as_str() {
            Some(s) => B64.decode(s).map_err(|e| format!("etcd value of {key:?} is not base64: {e}"))?,
            None => Vec::new(),
        };
        Ok(Some(Kv {
            value,
            create_revision: num("create_revision"),
            mod_revision: num("mod_revision"),
            lease: num("lease"),
        }))
    }

    /// The value of a key as text (None when absent).
    #[track_caller]
    pub fn get_text(&self, key: &str) -> Option<String> {
        self.get(key).map(|kv| kv.text())
    }

    /// Writes a key without a lease (`POST /v3/kv/put`); panics on failure.
    #[track_caller]
    pub fn put(&self, key: &str, value: &[u8]) {
        let body = json!({ "key": B64.encode(key), "value": B64.encode(value) }).to_string();
        match self.http("POST", "/v3/kv/put", body.as_bytes()) {
            Some((200, _)) => {}
            other => panic!("etcd put {key:?}: {other:?}"),
        }
    }

    /// Deletes a key (`POST /v3/kv/deleterange`); the number of keys deleted.
    #[track_caller]
    pub fn delete(&self, key: &str) -> i64 {
        let body = json!({ "key": B64.encode(key) }).to_string();
        match self.http("POST", "/v3/kv/deleterange", body.as_bytes()) {
            Some((200, v)) => v["deleted"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0),
            other => panic!("etcd delete {key:?}: {other:?}"),
        }
    }

    /// The `master_view` of `cluster_id` (`HOST:PORT` of the leader), None when none is published.
    #[track_caller]
    pub fn master_view(&self, cluster_id: &str) -> Option<String> {
        self.get_text(&master_view_key(cluster_id))
    }

    /// Waits up to `timeout` for a `master_view` of `cluster_id` that satisfies `pick`.
    pub fn wait_master_view(&self, cluster_id: &str, timeout: Duration, pick: impl Fn(&str) -> bool) -> Option<Kv> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(kv)) = self.try_get(&master_view_key(cluster_id)) {
                if pick(&kv.text()) {
                    return Some(kv);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("--- etcd {} log tail ---\n{}", self.endpoint(), self.log_tail());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
