//! Test fixtures: a master with a mounted segment, and a tiny blocking server that drives
//! `mc_core::Link`s over real loopback sockets, a thread per connection.
#![allow(dead_code)]

use std::io::{IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mc_core::platform::FakePlatform;
use mc_core::{Acceptor, Config, Lifecycle, Link, Master, Now};

pub const MIB: u64 = 1 << 20;

pub fn now() -> Now {
    Now::new(Instant::now(), SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs())
}

/// A master named `name` with `segment` bytes mounted at start-up; RPC writers may be placed
/// on its segments (cluster mode).
pub fn master(name: &str, segment: u64) -> Arc<Master> {
    let config = Config { node_name: name.to_owned(), cluster: true, ..Config::default() };
    let m = Master::new(config, Arc::new(FakePlatform::new(7)), now());
    if segment > 0 {
        m.mount_startup_segment(now(), segment).unwrap();
    }
    m
}

/// Bytes `0, 1, …` scrambled by `seed`.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| ((i * 131 + i / 7919) as u8).wrapping_add(seed)).collect()
}

/// A listener on 127.0.0.1 serving sessions of one acceptor.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves on a random port.
    pub fn start(acceptor: Box<dyn Acceptor>) -> Self {
        Self::start_on(acceptor, 0)
    }

    /// Serves on `port` (0: random).
    pub fn start_on(mut acceptor: Box<dyn Acceptor>, port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let life = Lifecycle::new();
        let flag = stop.clone();
        let accept = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream.set_nodelay(true).unwrap();
                        let link = Link::new(now(), acceptor.accept(now()), &life);
                        let flag = flag.clone();
                        conns.push(std::thread::spawn(move || drive(stream, link, &flag)));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
            drop(listener);
            for c in conns {
                let _ = c.join();
            }
        });
        Self { addr, stop, accept: Some(accept) }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Closes the listener and every connection.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Drives one connection: the adapter loop of `mc_core::session`, with blocking calls.
fn drive(mut stream: TcpStream, mut link: Link, stop: &AtomicBool) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        loop {
            let written = {
                let mut bufs = [IoSlice::new(&[]); 8];
                let n = link.poll_transmit(&mut bufs);
                if n == 0 {
                    break;
                }
                stream.write_vectored(&bufs[..n])
            };
            match written {
                Ok(k) if k > 0 => link.consume(now(), k),
                _ => return,
            }
        }
        if link.poll_half_close(now()) {
            let _ = stream.shutdown(Shutdown::Write);
        }
        if link.is_done() || stop.load(Ordering::Relaxed) {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        let wait = link
            .poll_timeout()
            .map_or(Duration::from_millis(50), |d| d.saturating_duration_since(Instant::now()))
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        if link.wants_read() {
            stream.set_read_timeout(Some(wait)).unwrap();
            match stream.read(&mut buf) {
                Ok(0) => link.handle_eof(now()),
                Ok(n) => link.handle_input(now(), &buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    link.handle_timeout(now())
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        } else {
            std::thread::sleep(wait.min(Duration::from_millis(1)));
            link.handle_timeout(now());
        }
    }
}
