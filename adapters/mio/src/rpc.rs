//! The master RPC listener of a worker (`--rpc-port`): the same readiness loop as HTTP,
//! driving `mc_core::rpc::RpcConnection`. Every protocol decision is made by the core.
//!
//! Tokens: the RPC listener is [`RPC_LISTEN`]; its connections are `RPC_LISTEN + 1 + slot`,
//! far above the HTTP connection tokens.

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Instant;

use mc_core::api::WorkerStats;
use mc_core::rpc::{RpcConnection, RpcService};
use mc_core::{Master, Now};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Token};

use super::{Worker, LINGER};

/// Token of the RPC listener.
const RPC_LISTEN: Token = Token(usize::MAX / 2);

/// True for the RPC listener's token and its connections' tokens.
pub(crate) fn owns(t: Token) -> bool {
    t.0 >= RPC_LISTEN.0
}

struct RpcConn {
    sock: TcpStream,
    core: RpcConnection,
    read_closed: bool,
    /// Set once the core is done: we half-closed and drain input until this instant.
    linger_until: Option<Instant>,
}

/// The RPC listener of one worker and its connections.
pub(crate) struct RpcSide {
    listener: Option<TcpListener>,
    svc: RpcService,
    conns: Vec<Option<RpcConn>>,
    free: Vec<usize>,
    open: usize,
}

impl RpcSide {
    pub(crate) fn new(
        master: &Arc<Master>,
        stats: &Arc<WorkerStats>,
        poll: &Poll,
        listener: Option<std::net::TcpListener>,
    ) -> io::Result<Self> {
        let listener = match listener {
            Some(l) => {
                let mut l = TcpListener::from_std(l);
                poll.registry().register(&mut l, RPC_LISTEN, Interest::READABLE)?;
                Some(l)
            }
            None => None,
        };
        let svc = RpcService::new(master.clone(), stats.clone());
        Ok(Self { listener, svc, conns: Vec::new(), free: Vec::new(), open: 0 })
    }

    /// Open RPC connections.
    pub(crate) fn open(&self) -> usize {
        self.open
    }

    /// The earliest linger deadline (the core itself has no timers).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.conns.iter().flatten().filter_map(|c| c.linger_until.or_else(|| c.core.poll_timeout())).min()
    }
}

impl Worker {
    pub(crate) fn rpc_event(&mut self, now: Now, t: Token) {
        if t == RPC_LISTEN {
            self.rpc_accept(now);
        } else {
            self.rpc_drive(now, t.0 - RPC_LISTEN.0 - 1);
        }
    }

    pub(crate) fn rpc_shutdown(&mut self, now: Now) {
        if let Some(mut l) = self.rpc.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        for i in 0..self.rpc.conns.len() {
            if let Some(c) = self.rpc.conns[i].as_mut() {
                c.core.handle_shutdown(now);
                self.rpc_drive(now, i);
            }
        }
    }

    pub(crate) fn rpc_timers(&mut self, now: Now) {
        for i in 0..self.rpc.conns.len() {
            if self.rpc.conns[i].as_ref().and_then(|c| c.linger_until).is_some_and(|t| t <= now.mono) {
                self.rpc_close(i);
            }
        }
    }

    fn rpc_accept(&mut self, now: Now) {
        loop {
            let Some(listener) = self.rpc.listener.as_ref() else { return };
            let mut sock = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("rpc accept failed: {e}");
                    return;
                }
            };
            let _ = sock.set_nodelay(true);
            let side = &mut self.rpc;
            let slot = side.free.pop().unwrap_or_else(|| {
                side.conns.push(None);
                side.conns.len() - 1
            });
            let token = Token(RPC_LISTEN.0 + 1 + slot);
            if let Err(e) = self.poll.registry().register(&mut sock, token, Interest::READABLE | Interest::WRITABLE) {
                log::warn!("rpc register failed: {e}");
                side.free.push(slot);
                continue;
            }
            let core = side.svc.new_connection(now);
            side.conns[slot] = Some(RpcConn { sock, core, read_closed: false, linger_until: None });
            side.open += 1;
        }
    }

    /// Moves bytes both ways until the socket would block or the core pauses.
    fn rpc_drive(&mut self, now: Now, i: usize) {
        let side = &mut self.rpc;
        let Some(c) = side.conns.get_mut(i).and_then(|c| c.as_mut()) else { return };
        let buf = &mut self.buf;
        if c.linger_until.is_some() {
            loop {
                match c.sock.read(buf) {
                    Ok(0) => return self.rpc_close(i),
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return self.rpc_close(i),
                }
            }
        }
        loop {
            let mut progressed = false;
            while let Some(out) = c.core.poll_transmit() {
                match c.sock.write(out) {
                    Ok(0) => return self.rpc_close(i),
                    Ok(n) => {
                        c.core.consume(now, n, &mut side.svc);
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return self.rpc_close(i),
                }
            }
            if c.core.is_closed() {
                let _ = c.sock.shutdown(Shutdown::Write);
                if c.read_closed {
                    return self.rpc_close(i);
                }
                c.linger_until = Some(now.mono + LINGER);
                return self.rpc_drive(now, i);
            }
            if !c.read_closed && c.core.wants_read() {
                match c.sock.read(buf) {
                    Ok(0) => {
                        c.read_closed = true;
                        c.core.handle_eof(now, &mut side.svc);
                        progressed = true;
                    }
                    Ok(n) => {
                        c.core.handle_input(now, &buf[..n], &mut side.svc);
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => progressed = true,
                    Err(_) => return self.rpc_close(i),
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn rpc_close(&mut self, i: usize) {
        if let Some(mut c) = self.rpc.conns[i].take() {
            let _ = self.poll.registry().deregister(&mut c.sock);
            self.rpc.free.push(i);
            self.rpc.open -= 1;
        }
    }
}
