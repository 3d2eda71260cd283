//! Listener sockets: one per worker and listener kind, bound with SO_REUSEPORT so the
//! kernel spreads connections over the workers (thread-per-core, no shared accept queue).

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Binds `n` listeners on `addr`; with port 0 the first bind picks the port and the others
/// join it. With `exclusive`, a fixed port that another socket already holds is refused with
/// `AddrInUse` even when that socket is part of another process's SO_REUSEPORT group (a
/// second `mc-master` of the same user would otherwise silently share the port; SPEC §11
/// wants exit status 1 for a listener that cannot be bound).
pub fn bind_group(addr: SocketAddr, n: usize, exclusive: bool) -> io::Result<Vec<TcpListener>> {
    if exclusive && addr.port() != 0 {
        // A socket without SO_REUSEPORT cannot join an existing group: binding it fails
        // exactly when the port is taken. It never listens, so closing it frees the port.
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        if addr.is_ipv6() {
            probe.set_only_v6(true)?;
        }
        probe.bind(&addr.into())?;
    }
    let first = bind_one(addr)?;
    let bound = first.local_addr()?;
    let mut out = vec![first];
    for _ in 1..n {
        out.push(bind_one(bound)?);
    }
    Ok(out)
}
