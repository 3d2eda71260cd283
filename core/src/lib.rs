//! # mc-core: the sans-IO core of mc-master
//!
//! No sockets, no threads, no clock reads, no runtime crates. Time and bytes go in;
//! responses, effects and deadlines come out. See `docs/architecture.md`.
#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod http;
pub mod platform;
pub mod store;
pub mod time;

pub use api::{Listener, Master, Service};
pub use config::{Config, Protocol};
pub use time::Now;
