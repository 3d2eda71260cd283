//! # mc-core: the sans-IO core of mc-master
//!
//! Everything that decides what mc-master *does* lives here: the incremental HTTP/1.1
//! codec ([`http`]), the router and endpoint handlers with their metrics ([`api`]), and the
//! master state: segments, allocators, objects, leases, eviction ([`store`]), and upstream
//! Mooncake's master RPC protocol, coro_rpc framing with struct_pack payloads ([`rpc`]).
//!
//! The core has no sockets, no threads, no clock reads and no runtime crates. Time comes in
//! as a [`Now`]; bytes come in as `&[u8]`; responses go out as byte slices the caller writes;
//! the next deadline goes out from `poll_timeout`. Memory mappings, randomness and process
//! statistics come from a [`platform::Platform`] the embedding program supplies.
//!
//! ## Driving the core
//!
//! One [`Master`] per process, shared by every thread. Every connection kind (HTTP, the
//! master RPC, the data plane's) is a [`Session`] with the same driving API, made by an
//! [`Acceptor`] per listener and worker ([`HttpAcceptor`], [`rpc::RpcAcceptor`]); adapters
//! wrap each in a [`Link`] (half-close, linger, shutdown) and drive it. The canonical loop,
//! for one connection on a blocking socket (see `examples/` and the adapters for event-loop
//! versions):
//!
//! ```no_run
//! use std::io::{IoSlice, Read, Write};
//! use std::sync::Arc;
//! use std::time::{Instant, SystemTime, UNIX_EPOCH};
//! use mc_core::{platform::FakePlatform, Acceptor, Config, HttpAcceptor, Listener, Master, Now, Session};
//!
//! fn now() -> Now {
//!     let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
//!     Now::new(Instant::now(), wall)
//! }
//!
//! let master = Master::new(Config::default(), Arc::new(FakePlatform::new(1)), now());
//! let mut acceptor = HttpAcceptor::new(master.clone(), Listener::Main, master.register_worker());
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let (mut sock, _) = listener.accept().unwrap();
//! let mut conn = acceptor.accept(now());
//! let mut buf = [0u8; 65536];
//! loop {
//!     // 1. Drain output until there is none.
//!     loop {
//!         let mut bufs = [IoSlice::new(&[]); 16];
//!         let n = conn.poll_transmit(&mut bufs);
//!         if n == 0 {
//!             break;
//!         }
//!         let n = sock.write_vectored(&bufs[..n]).unwrap();
//!         conn.consume(now(), n);
//!     }
//!     if conn.is_closed() {
//!         break;
//!     }
//!     // 2. Feed input (a real loop would wait for readiness or conn.poll_timeout()
//!     //    and call conn.handle_timeout(now) / master.handle_timeout(now) when due).
//!     match sock.read(&mut buf).unwrap() {
//!         0 => conn.handle_eof(now()),
//!         n => conn.handle_input(now(), &buf[..n]),
//!     }
//! }
//! ```
//!
//! After every call that feeds the connection (`handle_input`, `handle_eof`,
//! `handle_timeout`, `handle_shutdown`, `consume`), drain `poll_transmit` again and re-read
//! `poll_timeout`. After [`Master::handle_timeout`], re-read [`Master::poll_timeout`].
#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod ha;
pub mod http;
pub mod kv_events;
pub mod master;
pub mod node;
pub mod platform;
pub mod route;
pub mod rpc;
pub mod session;
pub mod stats;
pub mod store;
pub mod time;
pub mod transfer;

pub use api::{HttpAcceptor, Listener, Service};
pub use config::{AllocationStrategy, Config, Protocol};
pub use master::{Master, ProcessInfo};
pub use session::{Acceptor, Lifecycle, Link, ListenerAtShutdown, Runtime, Session, SniffAcceptor, WorkerListeners};
pub use time::Now;
