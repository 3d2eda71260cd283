//! From a TE segment name (a replica's `transport_endpoint_`) to where its bytes are: the
//! initiator's descriptor lookup (data-plane.md §2.2, §2.5, §5.1 item 4).
//!
//! Sources, in order, the first that knows the name wins:
//!
//! 1. this process's metadata map (`mooncake/ram/<name>`): what upstream clients in
//!    HTTP-metadata mode publish when pointed at mc-master's `/metadata`, and what mc-master
//!    publishes itself;
//! 2. an external HTTP metadata server (`GET …/metadata?key=<escaped key>`), if configured;
//! 3. P2PHANDSHAKE: a type-1 frame to the name as `host:port` (the owner's handshake port),
//!    carrying our own descriptor (or `{}`); the reply is the owner's descriptor.
//!
//! The data port is the descriptor's `tcp_data_host:tcp_data_port`; without `tcp_data_host`
//! (HEAD-era owners) the host is `rpc_meta`'s (from the same metadata source), else the host
//! part of the name. Results are cached per name; unlike upstream, which never re-reads a
//! descriptor, the data plane drops an entry and re-fetches once after a connect failure or
//! a reject ([`Resolver::invalidate`]).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mc_core::store::Store;

use crate::http::{self, Url};
use crate::publish::{ram_key, rpc_meta_key, split_host_port, DEFAULT_PREFIX};
use crate::te::desc::{RpcMeta, SegmentDesc};
use crate::te::handshake::{Frame, FrameType, HandshakeDecoder};
use crate::te::handshake_server::DescriptorProvider;

/// Upstream's handshake connect timeout (`MC_HANDSHAKE_CONNECT_TIMEOUT`).
pub const HANDSHAKE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upstream's handshake read timeout.
pub const HANDSHAKE_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a descriptor came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// This process's metadata map.
    Local,
    /// The external HTTP metadata server.
    MetadataServer,
    /// A P2PHANDSHAKE type-1 exchange.
    Handshake,
}

/// A resolved segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The owner's descriptor.
    pub desc: SegmentDesc,
    /// The host of the owner's TE data port.
    pub data_host: String,
    /// The owner's TE data port.
    pub data_port: u16,
    /// Where the descriptor came from.
    pub source: Source,
}

/// Which sources a [`Resolver`] asks.
#[derive(Clone)]
pub struct ResolverConfig {
    /// Key prefix (`mooncake/` or `mooncake/<cluster id>/`).
    pub key_prefix: String,
    /// Ask this process's metadata map first.
    pub local: bool,
    /// An external metadata server (`http://host:port/metadata`).
    pub metadata_server: Option<Url>,
    /// Fall back to a P2PHANDSHAKE type-1 exchange with the name as `host:port`.
    pub handshake: bool,
    /// Our own descriptor, sent in type-1 requests (`{}` without one).
    pub own_descriptor: Option<DescriptorProvider>,
}

impl Default for ResolverConfig {
    /// Local metadata, then the handshake; no external server.
    fn default() -> Self {
        Self {
            key_prefix: DEFAULT_PREFIX.to_owned(),
            local: true,
            metadata_server: None,
            handshake: true,
            own_descriptor: None,
        }
    }
}

/// The descriptor lookup with its cache. Shared by the data plane's threads.
pub struct Resolver {
    store: Arc<Store>,
    config: ResolverConfig,
    cache: Mutex<HashMap<String, Arc<Resolved>>>,
}

impl Resolver {
    /// Looks names up in `store`'s metadata map and the sources of `config`.
    pub fn new(store: Arc<Store>, config: ResolverConfig) -> Self {
        Self { store, config, cache: Mutex::default() }
    }

    /// The cached entry of `endpoint`, or a fresh [`Resolver::fetch`] (then cached).
    pub fn get(&self, endpoint: &str, deadline: Instant) -> Result<Arc<Resolved>, String> {
        if let Some(r) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(endpoint) {
            return Ok(r.clone());
        }
        let r = Arc::new(self.fetch(endpoint, deadline)?);
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).insert(endpoint.to_owned(), r.clone());
        Ok(r)
    }

    /// Drops the cached entry of `endpoint`.
    pub fn invalidate(&self, endpoint: &str) {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).remove(endpoint);
    }

    /// Asks the sources in order, bypassing the cache.
    pub fn fetch(&self, endpoint: &str, deadline: Instant) -> Result<Resolved, String> {
        let mut tried = Vec::new();
        let prefix = &self.config.key_prefix;
        if self.config.local {
            let md = self.store.metadata();
            match md.get(&ram_key(prefix, endpoint)) {
                Some(json) => {
                    let rpc = md.get(&rpc_meta_key(prefix, endpoint));
                    return self
                        .finish(endpoint, &json, || Ok(rpc), Source::Local)
                        .map_err(|e| format!("local metadata: {e}"));
                }
                None => tried.push("not in the local metadata".to_owned()),
            }
        }
        if let Some(url) = &self.config.metadata_server {
            match http_get(url, &ram_key(prefix, endpoint), deadline) {
                Ok(Some(json)) => {
                    let rpc = || http_get(url, &rpc_meta_key(prefix, endpoint), deadline);
                    return self
                        .finish(endpoint, &json, rpc, Source::MetadataServer)
                        .map_err(|e| format!("metadata server {}: {e}", url.authority));
                }
                Ok(None) => tried.push(format!("not on the metadata server {}", url.authority)),
                Err(e) => tried.push(format!("metadata server {}: {e}", url.authority)),
            }
        }
        if self.config.handshake {
            match split_host_port(endpoint) {
                Some((host, port)) => match self.handshake(host, port, deadline) {
                    Ok(json) => {
                        return self
                            .finish(endpoint, &json, || Ok(None), Source::Handshake)
                            .map_err(|e| format!("handshake with {endpoint}: {e}"))
                    }
                    Err(e) => tried.push(format!("handshake with {endpoint}: {e}")),
                },
                None => tried.push("not host:port, no handshake".to_owned()),
            }
        }
        if tried.is_empty() {
            tried.push("no descriptor source configured".to_owned());
        }
        Err(format!("no segment descriptor ({})", tried.join("; ")))
    }

    /// Decodes `json` and picks the data host: `tcp_data_host`, else `rpc_meta`'s host (asked
    /// for only then), else the host part of the name.
    fn finish(
        &self,
        endpoint: &str,
        json: &[u8],
        rpc_meta: impl FnOnce() -> Result<Option<Vec<u8>>, String>,
        source: Source,
    ) -> Result<Resolved, String> {
        let desc = SegmentDesc::from_json(json).map_err(|e| e.to_string())?;
        if desc.name != endpoint {
            log::debug!("TE: the descriptor of {endpoint} names itself {:?}", desc.name);
        }
        let data_host = match &desc.tcp_data_host {
            Some(h) if !h.is_empty() => h.clone(),
            _ => {
                let meta = rpc_meta()?.and_then(|b| serde_json::from_slice::<RpcMeta>(&b).ok());
                match meta.map(|m| m.ip_or_host_name).filter(|h| !h.is_empty()) {
                    Some(h) => h,
                    None => split_host_port(endpoint)
                        .map(|(h, _)| h.to_owned())
                        .ok_or_else(|| "no tcp_data_host, no rpc_meta and no host in the name".to_owned())?,
                }
            }
        };
        if desc.tcp_data_port == 0 {
            return Err("the descriptor has no tcp_data_port".to_owned());
        }
        Ok(Resolved { data_port: desc.tcp_data_port, desc, data_host, source })
    }

    /// One type-1 exchange with `host:port`: the reply's JSON.
    fn handshake(&self, host: &str, port: u16, deadline: Instant) -> Result<Vec<u8>, String> {
        let mut stream = connect((host, port), HANDSHAKE_CONNECT_TIMEOUT, deadline)?;
        let request = match &self.config.own_descriptor {
            Some(own) => Frame::json(FrameType::Metadata, &own()),
            None => Frame::json(FrameType::Metadata, &serde_json::json!({})),
        };
        stream.set_write_timeout(Some(left(deadline)?.min(HANDSHAKE_READ_TIMEOUT))).map_err(|e| e.to_string())?;
        stream.write_all(&request.encode()).map_err(|e| format!("send: {e}"))?;
        let read_deadline = deadline.min(Instant::now() + HANDSHAKE_READ_TIMEOUT);
        let mut decoder = HandshakeDecoder::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            stream.set_read_timeout(Some(left(read_deadline)?)).map_err(|e| e.to_string())?;
            let n = match stream.read(&mut buf) {
                Ok(0) => return Err("closed without a reply".into()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Err("timed out".into())
                }
                Err(e) => return Err(format!("receive: {e}")),
            };
            decoder.push(&buf[..n]);
            match decoder.next_frame() {
                Ok(Some(f)) if f.kind == FrameType::Metadata && !f.legacy => return Ok(f.json),
                Ok(Some(f)) => return Err(format!("a {:?} frame in reply to Metadata", f.kind)),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// The time left until `deadline`, or "timed out".
pub(crate) fn left(deadline: Instant) -> Result<Duration, String> {
    deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or_else(|| "timed out".to_owned())
}

/// Connects to the first address of `addr` that accepts, within `limit` and the deadline.
pub(crate) fn connect(
    addr: impl ToSocketAddrs + std::fmt::Debug,
    limit: Duration,
    deadline: Instant,
) -> Result<TcpStream, String> {
    let addrs = addr.to_socket_addrs().map_err(|e| format!("{addr:?}: {e}"))?;
    let mut last = format!("{addr:?}: no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, left(deadline)?.min(limit)) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = format!("connect to {a}: {e}"),
        }
    }
    Err(last)
}

/// GET of metadata key `key`: `Some(body)` on 200, `None` on 404.
fn http_get(url: &Url, key: &str, deadline: Instant) -> Result<Option<Vec<u8>>, String> {
    let r = http::request("GET", &url.with_key(key), None, deadline)?;
    match r.status {
        200 => Ok(Some(r.body)),
        404 => Ok(None),
        s => Err(format!("GET {key} answered {s}")),
    }
}
