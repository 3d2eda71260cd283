//! Upstream Mooncake Transfer Engine (TE) protocols, sans-IO.

pub mod desc;
pub mod handshake;
pub mod handshake_server;
pub mod initiator;
pub mod memory;
pub mod target;
pub mod wire;
