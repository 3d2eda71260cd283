//! The smallest embedding of `mc-core`: one thread, blocking `std::net` sockets, one
//! connection at a time. The adapters (`adapters/mio`, `adapters/glommio`) run the same
//! calls from an event loop over many connections.
//!
//! ```text
//! cargo run -p mc-core --example blocking -- --port 8080
//! curl -X POST localhost:8080/api/mount -d '{"size":16777216,"protocol":"tcp"}'
//! curl -X PUT localhost:8080/api/put -d '{"key":"k","value":"hello"}'
//! curl localhost:8080/api/get/k
//! ```
//!
//! Segment memory comes from `FakePlatform` (the heap), so `/api/mount` works and
//! `/api/mount_shm` finds no object. `Master::poll_timeout` (leases, eviction, grace periods)
//! is only served while a connection is open: a real loop also wakes for it when idle.

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mc_core::platform::FakePlatform;
use mc_core::{Acceptor, Config, HttpAcceptor, Listener, Master, Now, Session};

fn now() -> Now {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Now::new(Instant::now(), wall.as_secs())
}

/// A master whose segments live on the heap.
pub fn master(config: Config) -> Arc<Master> {
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    Master::new(config, Arc::new(FakePlatform::new(seed)), now())
}

/// Serves `listener` forever, one connection after another.
pub fn serve(master: &Arc<Master>, listener: &TcpListener) -> io::Result<()> {
    let mut acceptor = HttpAcceptor::new(master.clone(), Listener::Main, master.register_worker());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (sock, _) = listener.accept()?;
        serve_connection(master, acceptor.accept(now()), sock, &mut buf);
    }
}

/// Drives one connection until the core closes it or the peer goes away.
fn serve_connection(master: &Master, mut conn: Box<dyn Session>, mut sock: TcpStream, buf: &mut [u8]) {
    let mut eof = false;
    loop {
        // 1. Write everything the core has to say.
        loop {
            let mut bufs = [IoSlice::new(&[]); 16];
            let n = conn.poll_transmit(&mut bufs);
            if n == 0 {
                break;
            }
            match sock.write_vectored(&bufs[..n]) {
                Ok(n) if n > 0 => conn.consume(now(), n),
                _ => return, // The peer is gone; dropping `conn` ends the request.
            }
        }
        if conn.is_closed() {
            // Half-close and drain briefly, so the peer reads our last response, not a reset.
            let _ = sock.shutdown(Shutdown::Write);
            let _ = sock.set_read_timeout(Some(Duration::from_millis(500)));
            while let Ok(1..) = sock.read(buf) {}
            return;
        }
        // 2. Wait for input, but not past the next deadline of the connection or the master.
        let deadline = [conn.poll_timeout(), master.poll_timeout()].into_iter().flatten().min();
        let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
        let got = if eof || !conn.wants_read() {
            std::thread::sleep(wait.unwrap_or(Duration::from_millis(10)));
            Err(ErrorKind::TimedOut.into())
        } else {
            let _ = sock.set_read_timeout(wait); // None: block until bytes or EOF.
            sock.read(buf)
        };
        let now = now();
        match got {
            Ok(0) => {
                eof = true;
                conn.handle_eof(now);
            }
            Ok(n) => conn.handle_input(now, &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => return,
        }
        // 3. Fire whatever is due (idle and header timeouts; leases, eviction, grace periods).
        if conn.poll_timeout().is_some_and(|t| t <= now.mono) {
            conn.handle_timeout(now);
        }
        if master.poll_timeout().is_some_and(|t| t <= now.mono) {
            master.handle_timeout(now);
        }
    }
}

#[allow(dead_code)] // The test includes this file as a module and calls `serve`.
fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port = match args.iter().position(|a| a == "--port") {
        Some(i) => args.get(i + 1).and_then(|p| p.parse().ok()).expect("--port takes a number"),
        None => 8080,
    };
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    let addr = listener.local_addr()?;
    let master = master(Config { node_name: addr.to_string(), ..Config::default() });
    println!("listening on http://{addr}");
    serve(&master, &listener)
}
