//! The KV event publisher (`--enable-kv-events`): one thread that binds the ZMQ PUB endpoint,
//! accepts subscribers, drains the store's event queue in batches of 64 and hands every batch
//! to every subscriber. The protocol is the core's (`mc_core::kv_events`: the batch encoding,
//! and `zmtp::PubSession` per connection); this file only moves bytes over nonblocking
//! sockets, like upstream's single publisher worker.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mc_core::kv_events::zmtp::PubSession;
use mc_core::kv_events::{KvEventConfig, KvPublisher, KvStats, MAX_BATCH};
use mc_core::Master;

/// Messages a subscriber may have waiting before further ones are dropped (upstream's
/// `ZMQ_SNDHWM`).
const HWM: usize = 10_000;

/// Batches encoded per turn before the sockets are written.
const BATCHES_PER_TURN: usize = 256;

/// The publisher's settings.
pub struct Options {
    /// `tcp://HOST:PORT` (`*` = every address; port 0 = ephemeral).
    pub endpoint: String,
    pub events: KvEventConfig,
}

/// `tcp://HOST:PORT` as a socket address.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    let bad = || format!("{s:?} is not a tcp://HOST:PORT endpoint");
    let rest = s.strip_prefix("tcp://").ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let host = match host.trim_start_matches('[').trim_end_matches(']') {
        "*" => "0.0.0.0",
        h => h,
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    (host, port).to_socket_addrs().map_err(|e| format!("{s}: {e}"))?.next().ok_or_else(bad)
}

struct Subscriber {
    stream: TcpStream,
    session: PubSession,
    peer: SocketAddr,
}

/// What one nonblocking read or write came to.
enum Io {
    /// `n` bytes moved (0: the peer closed, for a read).
    Moved(usize),
    /// Nothing more now.
    Again,
    /// Interrupted: try again at once.
    Retry,
    /// The connection is broken.
    Broken(String),
}

fn io_step(r: std::io::Result<usize>) -> Io {
    match r {
        Ok(n) => Io::Moved(n),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Io::Again,
        Err(e) if e.kind() == ErrorKind::Interrupted => Io::Retry,
        Err(e) => Io::Broken(e.to_string()),
    }
}

impl Subscriber {
    /// Feeds what the subscriber sent to its session; whether anything arrived.
    fn read_input(&mut self, buf: &mut [u8]) -> bool {
        let mut any = false;
        loop {
            match io_step(self.stream.read(buf)) {
                Io::Retry => continue,
                Io::Moved(0) => {
                    self.session.why = Some("closed by the subscriber".into());
                    return any;
                }
                Io::Moved(n) => {
                    self.session.handle_input(&buf[..n]);
                    any = true;
                }
                Io::Again => return any,
                Io::Broken(why) => {
                    self.session.why = Some(why);
                    return any;
                }
            }
        }
    }

    /// Writes what the session has queued, as far as the socket takes it; whether anything
    /// went out.
    fn write_output(&mut self) -> bool {
        let mut any = false;
        while let Some(out) = self.session.poll_transmit() {
            match io_step(self.stream.write(out)) {
                Io::Retry => continue,
                Io::Moved(0) | Io::Again => break,
                Io::Moved(n) => {
                    self.session.consume(n);
                    any = true;
                }
                Io::Broken(why) => {
                    self.session.why = Some(why);
                    break;
                }
            }
        }
        any
    }
}

/// Binds `opts.endpoint` and starts the publisher thread; returns the bound address.
pub fn start(master: Arc<Master>, opts: Options) -> Result<(SocketAddr, JoinHandle<()>), String> {
    let addr = parse_endpoint(&opts.endpoint)?;
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot bind the KV event endpoint {addr}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let stats = Arc::new(KvStats::default());
    stats.enabled.store(true, std::sync::atomic::Ordering::Relaxed);
    master.set_kv_events(stats.clone());
    let publisher = KvPublisher::new(opts.events, stats);
    log::info!("kv_events publisher enabled on tcp://{bound}");
    let h = std::thread::Builder::new()
        .name("kv-events".into())
        .spawn(move || run(&master, &listener, publisher))
        .map_err(|e| e.to_string())?;
    Ok((bound, h))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn run(master: &Master, listener: &TcpListener, mut publisher: KvPublisher) {
    let store = master.store().clone();
    let mut subs: Vec<Subscriber> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let stopping = master.is_shutting_down();
        let mut busy = false;
        // New subscribers.
        while let Ok((stream, peer)) = listener.accept() {
            if stream.set_nonblocking(true).is_ok() {
                let _ = stream.set_nodelay(true);
                log::info!("kv_events: subscriber {peer} connected");
                subs.push(Subscriber { stream, session: PubSession::new(HWM), peer });
                busy = true;
            }
        }
        // Their handshakes and subscriptions.
        for s in &mut subs {
            busy |= s.read_input(&mut buf);
        }
        // Events: batches of up to 64, each offered to every subscriber.
        for _ in 0..BATCHES_PER_TURN {
            let (events, dropped) = store.take_kv_events(MAX_BATCH);
            if events.is_empty() && dropped == 0 {
                break;
            }
            busy = true;
            if !master.serves(Instant::now()) {
                // A standby applies the leader's changes; only the serving leader publishes.
                continue;
            }
            if let Some(batch) = publisher.encode_batch(&events, dropped, now_ms()) {
                let msg = batch.message();
                for s in &mut subs {
                    s.session.offer(b"", &msg);
                }
            }
        }
        // Writes.
        for s in &mut subs {
            busy |= s.write_output();
        }
        subs.retain(|s| {
            let gone = s.session.is_closed() || s.session.why.is_some();
            if gone {
                log::info!(
                    "kv_events: subscriber {} gone ({}), {} messages dropped for its high-water mark",
                    s.peer,
                    s.session.why.as_deref().unwrap_or("protocol error"),
                    s.session.dropped
                );
            }
            !gone
        });
        if stopping && store.kv_events_pending() == 0 {
            return;
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_endpoint;

    #[test]
    fn endpoints() {
        assert_eq!(parse_endpoint("tcp://127.0.0.1:5557").unwrap().to_string(), "127.0.0.1:5557");
        assert_eq!(parse_endpoint("tcp://*:0").unwrap().to_string(), "0.0.0.0:0");
        assert_eq!(parse_endpoint("tcp://[::1]:9").unwrap().to_string(), "[::1]:9");
        for bad in ["127.0.0.1:5557", "ipc:///tmp/x", "tcp://h", "tcp://127.0.0.1:x"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }
}
