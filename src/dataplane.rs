//! The data plane of this process (docs/data-plane.md): the transfer-engine (TE) target for
//! its own segments, the descriptor it publishes, the handshake answered on the HTTP port,
//! and the initiator that reads values held by other nodes. Everything protocol-shaped is in
//! `mc-rdma`; this module only wires it to the master and to the listeners.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use mc_core::{Acceptor, Master, SniffAcceptor};
use mc_rdma::te::handshake_server::HandshakeAcceptor;
use mc_rdma::te::memory::TargetMemory;
use mc_rdma::te::target::{TargetAcceptor, TargetConfig, TargetStats};
use mc_rdma::{PublishConfig, Publisher, StoreMemory, TcpDataPlane, TcpPlaneConfig};

/// The data plane's parts shared by every worker.
pub struct DataPlane {
    publisher: Arc<Publisher>,
    memory: Arc<dyn TargetMemory>,
    stats: Arc<TargetStats>,
    /// The TE data listeners, one per worker (taken as the workers are built).
    listeners: Vec<TcpListener>,
    /// The initiator: what moves bytes to and from other nodes (installed by the caller as
    /// the master's data plane, directly or inside a store node's plane).
    pub plane: Arc<TcpDataPlane>,
}

/// A TE handshake frame starts with its length, a u64 LE of at most 1 MiB: bytes 3 to 7 are
/// zero. An HTTP request starts with a method token and a space, so byte 3 is never zero.
fn looks_like_handshake(b: &[u8]) -> Option<bool> {
    match b.get(3) {
        None => None,
        Some(0) if b.len() < 8 => {
            if b[4..].iter().all(|&x| x == 0) {
                None
            } else {
                Some(false)
            }
        }
        Some(0) => Some(b[4..8].iter().all(|&x| x == 0)),
        Some(_) => Some(false),
    }
}

impl DataPlane {
    /// Publishes this node's descriptor (and again after every mount and unmount), builds
    /// the initiator ([`DataPlane::plane`]), and keeps `listeners` (the TE data port,
    /// bound, one per worker) for [`DataPlane::add_listeners`].
    pub fn start(
        master: &Arc<Master>,
        listeners: Vec<TcpListener>,
        advertise_host: &str,
        metadata_server: Option<&str>,
        open_access: bool,
    ) -> Result<Self, String> {
        let port = listeners[0].local_addr().map_err(|e| e.to_string())?.port();
        let store = master.store();
        let mut publish = PublishConfig::new(master.config().node_name.clone(), advertise_host, port);
        if let Some(url) = metadata_server {
            publish = publish.with_metadata_server(url);
        }
        let publisher = Publisher::install(store, publish).map_err(|e| e.to_string())?;
        let plane = TcpDataPlane::new(
            store.clone(),
            TcpPlaneConfig {
                metadata_server: metadata_server.map(str::to_string),
                own_descriptor: Some(publisher.provider()),
                ..TcpPlaneConfig::default()
            },
        )?;
        let memory = match open_access {
            true => StoreMemory::open_access(store.clone()),
            false => StoreMemory::new(store.clone()),
        };
        Ok(Self { publisher, memory: Arc::new(memory), stats: TargetStats::new(), listeners, plane })
    }

    /// The main listener's acceptor: HTTP, or the TE handshake when the first bytes are a
    /// handshake frame (so this node's name, `host:port`, is also its handshake address).
    pub fn main_acceptor(&self, http: Box<dyn Acceptor>) -> Box<dyn Acceptor> {
        let handshake = HandshakeAcceptor::new(self.publisher.provider()).with_timeout(Duration::from_secs(5));
        Box::new(SniffAcceptor::new(http, Box::new(handshake), looks_like_handshake))
    }

    /// One worker's TE data listener with its acceptor, if any is left.
    pub fn next_listener(&mut self) -> Option<(TcpListener, Box<dyn Acceptor>)> {
        let l = self.listeners.pop()?;
        let acceptor = TargetAcceptor::new(self.memory.clone(), TargetConfig::default(), self.stats.clone());
        Some((l, Box::new(acceptor)))
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_handshake;

    #[test]
    fn handshake_frames_and_http_requests_are_told_apart() {
        let frame = [0x17, 0, 0, 0, 0, 0, 0, 0, 1, b'{'];
        assert_eq!(looks_like_handshake(&frame), Some(true));
        assert_eq!(looks_like_handshake(&frame[..3]), None);
        assert_eq!(looks_like_handshake(&frame[..6]), None);
        for req in [&b"GET / HTTP/1.1\r\n"[..], b"POST", b"HEAD", b"PUT ", b"DELETE", b"OPTIONS", b"\r\nGET"] {
            assert_eq!(looks_like_handshake(req), Some(false), "{:?}", String::from_utf8_lossy(req));
        }
        assert_eq!(looks_like_handshake(&[1, 2, 3, 0, 9]), Some(false));
        assert_eq!(looks_like_handshake(&[1, 2, 3, 0, 0, 0, 0, 1]), Some(false));
    }
}
