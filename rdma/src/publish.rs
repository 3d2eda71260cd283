//! Publication of this node's TE segment descriptor (data-plane.md §2.1, §2.3, §5.1 item 3).
//!
//! Upstream clients find a segment by its name: in HTTP-metadata mode they GET
//! `mooncake/ram/<name>` (the descriptor) and, when it lacks `tcp_data_host`,
//! `mooncake/rpc_meta/<name>` from the metadata server; in P2PHANDSHAKE mode they ask the
//! handshake port (`host:port` of the name) with a type-1 frame. The [`Publisher`] keeps both
//! answers current:
//!
//! * it writes both keys into the store's in-process metadata map (what mc-master's own
//!   `/metadata` endpoint serves), and optionally PUTs them to an external metadata server
//!   from a background thread (failed PUTs are retried every second, newest value wins);
//! * it rebuilds the descriptor on every change of [`Store::local_buffers`] (registered as the
//!   store's buffers observer by [`Publisher::install`]);
//! * [`Publisher::provider`] is the descriptor the handshake port answers with.
//!
//! The descriptor: `name` = the segment name, `protocol:"tcp"`, `rdma_server_name:""`,
//! `tcp_data_host`/`tcp_data_port` = where the TE target listens, `tcp_proto_version:2`, a
//! UTC `timestamp` in upstream's format, and one `{name, addr, length}` buffer per live local
//! segment. With no segment mounted the buffer list is empty (`"buffers":[]`), which
//! upstream's decoder accepts (its checks are per buffer) and which is what an upstream
//! engine publishes between installing its transport and registering memory.
//! `rpc_meta` = `{"ip_or_host_name": data host, "rpc_port": the port of the segment name}`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mc_core::store::{MetadataPut, Store};

use crate::http::{self, Url};
use crate::te::desc::{to_json, RpcMeta, SegmentDesc};
use crate::te::handshake_server::DescriptorProvider;

/// Upstream's key prefix (`MC_METADATA_CLUSTER_ID` unset).
pub const DEFAULT_PREFIX: &str = "mooncake/";

/// How often failed PUTs to the external metadata server are retried.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// What the publisher announces and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishConfig {
    /// This node's TE segment name, `host:port` (`[v6]:port`) where `port` is the handshake
    /// port; the replicas' `transport_endpoint_` of this node's segments.
    pub segment_name: String,
    /// The routable host of the TE data port (`--advertise-host`; never `0.0.0.0`).
    pub data_host: String,
    /// The TE data port.
    pub data_port: u16,
    /// Key prefix: `mooncake/`, or `mooncake/<cluster id>/`.
    pub key_prefix: String,
    /// An external metadata server to PUT the keys to as well (`http://host:port/metadata`).
    pub metadata_server: Option<String>,
}

impl PublishConfig {
    /// Publishes `segment_name` with its data port at `data_host:data_port`, into the
    /// in-process metadata only, under [`DEFAULT_PREFIX`].
    pub fn new(segment_name: impl Into<String>, data_host: impl Into<String>, data_port: u16) -> Self {
        Self {
            segment_name: segment_name.into(),
            data_host: data_host.into(),
            data_port,
            key_prefix: DEFAULT_PREFIX.to_owned(),
            metadata_server: None,
        }
    }

    /// Also PUTs to the metadata server at `url` (`http://host:port/metadata`).
    pub fn with_metadata_server(mut self, url: impl Into<String>) -> Self {
        self.metadata_server = Some(url.into());
        self
    }
}

/// Why a publisher cannot be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishError {
    /// The segment name is not `host:port`.
    BadSegmentName(String),
    /// The data host is empty or unspecified (`0.0.0.0`, `::`): peers could not connect.
    UnroutableHost(String),
    /// The metadata server URL is not `http://host[:port]/path`.
    BadMetadataServer(String),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::BadSegmentName(n) => write!(f, "TE segment name {n:?} is not host:port"),
            PublishError::UnroutableHost(h) => {
                write!(f, "TE data host {h:?} is not routable (give the address peers connect to)")
            }
            PublishError::BadMetadataServer(e) => write!(f, "metadata server: {e}"),
        }
    }
}

impl std::error::Error for PublishError {}

/// Splits `host:port` or `[v6]:port`; the host keeps no brackets.
pub fn split_host_port(name: &str) -> Option<(&str, u16)> {
    let (host, port) = name.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty()).then_some((host, port))
}

/// The key of segment `name`'s descriptor: `<prefix>ram/<name>`, or `<prefix><name>` when
/// the name already contains a `/` (upstream's `getFullMetadataKey`).
pub fn ram_key(prefix: &str, name: &str) -> String {
    if name.contains('/') {
        format!("{prefix}{name}")
    } else {
        format!("{prefix}ram/{name}")
    }
}

/// The key of segment `name`'s handshake address: `<prefix>rpc_meta/<name>`.
pub fn rpc_meta_key(prefix: &str, name: &str) -> String {
    format!("{prefix}rpc_meta/{name}")
}

/// `t` as upstream's descriptor timestamp, `YYYY-MM-DD HH:MM:SS.ffffff` (UTC here).
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    format!("{y:04}-{m:02}-{day:02} {:02}:{:02}:{:02}.{:06}", rem / 3600, rem / 60 % 60, rem % 60, d.subsec_micros())
}

/// Days since 1970-01-01 to (year, month, day) of the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps this node's descriptor published. See the module docs.
pub struct Publisher {
    config: PublishConfig,
    store: Weak<Store>,
    rpc_meta: RpcMeta,
    state: Mutex<State>,
    external: Option<Arc<External>>,
}

#[derive(Default)]
struct State {
    last: Option<SegmentDesc>,
    withdrawn: bool,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher of `store`'s buffers under `config`; publishes nothing yet. It holds the
    /// store weakly (the store's observer holds the publisher).
    pub fn new(store: &Arc<Store>, config: PublishConfig) -> Result<Arc<Self>, PublishError> {
        let (_, rpc_port) = split_host_port(&config.segment_name)
            .ok_or_else(|| PublishError::BadSegmentName(config.segment_name.clone()))?;
        let host = config.data_host.trim_start_matches('[').trim_end_matches(']');
        let unspecified = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
        if host.is_empty() || unspecified {
            return Err(PublishError::UnroutableHost(config.data_host.clone()));
        }
        let external = match &config.metadata_server {
            Some(url) => Some(External::start(Url::parse(url).map_err(PublishError::BadMetadataServer)?)),
            None => None,
        };
        let rpc_meta = RpcMeta { ip_or_host_name: config.data_host.clone(), rpc_port };
        Ok(Arc::new(Self { config, store: Arc::downgrade(store), rpc_meta, state: Mutex::default(), external }))
    }

    /// [`Publisher::new`], then the first publication, then registers the publisher as the
    /// store's buffers observer so every mount and unmount republishes.
    pub fn install(store: &Arc<Store>, config: PublishConfig) -> Result<Arc<Self>, PublishError> {
        let publisher = Self::new(store, config)?;
        publisher.publish();
        let p = publisher.clone();
        store.set_buffers_observer(Box::new(move || {
            p.publish();
        }));
        Ok(publisher)
    }

    /// The configuration.
    pub fn config(&self) -> &PublishConfig {
        &self.config
    }

    /// The descriptor key (`mooncake/ram/<name>`).
    pub fn ram_key(&self) -> String {
        ram_key(&self.config.key_prefix, &self.config.segment_name)
    }

    /// The handshake-address key (`mooncake/rpc_meta/<name>`).
    pub fn rpc_meta_key(&self) -> String {
        rpc_meta_key(&self.config.key_prefix, &self.config.segment_name)
    }

    /// The `rpc_meta` document.
    pub fn rpc_meta(&self) -> &RpcMeta {
        &self.rpc_meta
    }

    /// The descriptor of the buffers now (not published).
    pub fn build(&self) -> SegmentDesc {
        let buffers = self.store.upgrade().map(|s| s.local_buffers()).unwrap_or_default();
        let c = &self.config;
        SegmentDesc::tcp(&c.segment_name, &c.data_host, c.data_port, timestamp(SystemTime::now()), &buffers)
    }

    /// The descriptor last published (built now if none was): the handshake port's type-1
    /// answer.
    pub fn descriptor(&self) -> SegmentDesc {
        let state = lock(&self.state);
        match &state.last {
            Some(d) => d.clone(),
            None => {
                drop(state);
                self.build()
            }
        }
    }

    /// [`Publisher::descriptor`] as the handshake acceptor's provider.
    pub fn provider(self: &Arc<Self>) -> DescriptorProvider {
        let p = self.clone();
        Arc::new(move || p.descriptor())
    }

    /// Rebuilds the descriptor and publishes both keys (a no-op after
    /// [`Publisher::withdraw`]). Returns what was published.
    pub fn publish(&self) -> SegmentDesc {
        // Under the lock, so concurrent publications land in order.
        let mut state = lock(&self.state);
        let desc = self.build();
        if state.withdrawn {
            return desc;
        }
        let json = desc.to_json();
        let rpc = to_json(&self.rpc_meta);
        let (ram_key, rpc_key) = (self.ram_key(), self.rpc_meta_key());
        if let Some(store) = self.store.upgrade() {
            let md = store.metadata();
            if md.put(&rpc_key, &rpc) == MetadataPut::Duplicate {
                // This node owns its name: an older address of it is replaced.
                log::info!("TE: replacing the stale {rpc_key}");
                md.delete(&rpc_key);
                md.put(&rpc_key, &rpc);
            }
            md.put(&ram_key, &json);
        }
        if let Some(ext) = &self.external {
            ext.queue(rpc_key, Some(rpc));
            ext.queue(ram_key, Some(json));
        }
        log::debug!("TE: published {} with {} buffers", self.config.segment_name, desc.buffers.len());
        state.last = Some(desc.clone());
        desc
    }

    /// Deletes both keys (in-process and external; upstream does so on close) and stops
    /// publishing.
    pub fn withdraw(&self) {
        let mut state = lock(&self.state);
        state.withdrawn = true;
        let (ram_key, rpc_key) = (self.ram_key(), self.rpc_meta_key());
        if let Some(store) = self.store.upgrade() {
            store.metadata().delete(&ram_key);
            store.metadata().delete(&rpc_key);
        }
        if let Some(ext) = &self.external {
            ext.queue(ram_key, None);
            ext.queue(rpc_key, None);
        }
    }

    /// Waits until the external metadata server has every queued update (true), or `timeout`
    /// passed (false). True at once without an external server.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.external.as_ref().is_none_or(|e| e.flush(Instant::now() + timeout))
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(ext) = &self.external {
            let mut s = lock(&ext.shared);
            s.stop = true;
            ext.wake.notify_all();
        }
    }
}

/// The background PUT/DELETE queue to an external metadata server.
struct External {
    url: Url,
    shared: Mutex<Queue>,
    wake: Condvar,
}

#[derive(Default)]
struct Queue {
    /// Key → new value (`None`: delete). A newer update of a key replaces an older one.
    pending: BTreeMap<String, Option<Vec<u8>>>,
    /// Updates taken by the worker and not yet done.
    in_flight: usize,
    stop: bool,
}

impl External {
    fn start(url: Url) -> Arc<Self> {
        let ext = Arc::new(Self { url, shared: Mutex::default(), wake: Condvar::new() });
        let worker = ext.clone();
        let spawned = std::thread::Builder::new().name("te-metadata".into()).spawn(move || worker.run());
        if let Err(e) = spawned {
            log::error!("TE: cannot start the metadata publisher thread: {e}");
        }
        ext
    }

    fn queue(&self, key: String, value: Option<Vec<u8>>) {
        lock(&self.shared).pending.insert(key, value);
        self.wake.notify_all();
    }

    fn flush(&self, deadline: Instant) -> bool {
        let mut s = lock(&self.shared);
        while !s.pending.is_empty() || s.in_flight > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
            s = self.wake.wait_timeout(s, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }

    fn run(&self) {
        let mut failing = false;
        loop {
            let batch = {
                let mut s = lock(&self.shared);
                loop {
                    if s.stop {
                        return;
                    }
                    if !s.pending.is_empty() {
                        break;
                    }
                    s = self.wake.wait(s).unwrap_or_else(PoisonError::into_inner);
                }
                let batch = std::mem::take(&mut s.pending);
                s.in_flight = batch.len();
                batch
            };
            let mut failed = Vec::new();
            for (key, value) in batch {
                if let Err(e) = self.send(&key, value.as_deref()) {
                    if !failing {
                        log::warn!("TE: metadata server {}: {key}: {e} (retrying every second)", self.url.authority);
                    }
                    failed.push((key, value));
                }
            }
            let mut s = lock(&self.shared);
            s.in_flight = 0;
            failing = !failed.is_empty();
            for (key, value) in failed {
                // A newer update queued meanwhile wins.
                s.pending.entry(key).or_insert(value);
            }
            self.wake.notify_all();
            if failing && !s.stop {
                let _unused = self.wake.wait_timeout(s, RETRY_INTERVAL).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    /// One PUT (or DELETE); an `rpc_meta` PUT refused as a duplicate deletes the old entry
    /// first.
    fn send(&self, key: &str, value: Option<&[u8]>) -> Result<(), String> {
        let url = self.url.with_key(key);
        let deadline = Instant::now() + http::REQUEST_TIMEOUT;
        match value {
            None => {
                let r = http::request("DELETE", &url, None, deadline)?;
                // 404: already gone.
                if r.status == 200 || r.status == 404 {
                    Ok(())
                } else {
                    Err(format!("DELETE answered {}", r.status))
                }
            }
            Some(body) => {
                let mut r = http::request("PUT", &url, Some(body), deadline)?;
                if r.status == 400 && key.contains("rpc_meta") {
                    http::request("DELETE", &url, None, deadline)?;
                    r = http::request("PUT", &url, Some(body), deadline)?;
                }
                if r.status == 200 {
                    Ok(())
                } else {
                    Err(format!("PUT answered {}: {}", r.status, String::from_utf8_lossy(&r.body)))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_upstreams_format() {
        let t = UNIX_EPOCH + Duration::new(1_795_748_416, 837_042_000);
        assert_eq!(timestamp(t), "2026-11-27 03:00:16.837042");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00.000000");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29 00:00:00.000000");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(4_107_542_399)), "2100-02-28 23:59:59.000000");
    }

    #[test]
    fn names_and_keys() {
        assert_eq!(split_host_port("127.0.0.1:8591"), Some(("127.0.0.1", 8591)));
        assert_eq!(split_host_port("[::1]:9"), Some(("::1", 9)));
        assert_eq!(split_host_port("node-a:15001"), Some(("node-a", 15001)));
        assert_eq!(split_host_port("::1:9"), None);
        assert_eq!(split_host_port("h"), None);
        assert_eq!(split_host_port(":9"), None);
        assert_eq!(split_host_port("h:99999"), None);
        assert_eq!(ram_key(DEFAULT_PREFIX, "127.0.0.1:1"), "mooncake/ram/127.0.0.1:1");
        assert_eq!(ram_key("mooncake/c1/", "a/b"), "mooncake/c1/a/b");
        assert_eq!(rpc_meta_key(DEFAULT_PREFIX, "h:1"), "mooncake/rpc_meta/h:1");
    }
}
