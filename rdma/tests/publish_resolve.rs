//! Descriptor publication (in-process and to an external metadata server), the handshake
//! port answering with it, and the data plane's descriptor lookup: P2PHANDSHAKE, an external
//! server, the rpc_meta fallback, and the re-fetch after a target restarts on a new port.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{master, now, pattern, Server, MIB};
use mc_core::store::{MountKind, UnmountFamily};
use mc_core::transfer::{DataPlane, Transfer, TransferOp, TransferOutcome};
use mc_core::{Master, Protocol};
use mc_rdma::publish::PublishError;
use mc_rdma::resolve::{Resolver, ResolverConfig, Source};
use mc_rdma::te::desc::SegmentDesc;
use mc_rdma::te::handshake_server::HandshakeAcceptor;
use mc_rdma::te::target::{TargetAcceptor, TargetConfig, TargetStats};
use mc_rdma::{PublishConfig, Publisher, StoreMemory, TcpDataPlane, TcpPlaneConfig};

fn far() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn target(m: &Master) -> Server {
    target_counting(m, TargetStats::new())
}

fn target_counting(m: &Master, stats: Arc<TargetStats>) -> Server {
    let memory = Arc::new(StoreMemory::new(m.store().clone()));
    Server::start(Box::new(TargetAcceptor::new(memory, TargetConfig::default(), stats)))
}

fn run(plane: &TcpDataPlane, endpoint: &str, op: TransferOp) -> TransferOutcome {
    let (tx, rx) = channel();
    let t = Transfer { id: 9, endpoint: endpoint.to_owned(), op, deadline: far() };
    plane.submit(t, Box::new(move |o| tx.send(o).unwrap()));
    rx.recv_timeout(Duration::from_secs(30)).expect("an outcome")
}

fn published(m: &Master, name: &str) -> SegmentDesc {
    let json = m.store().metadata().get(&format!("mooncake/ram/{name}")).expect("published");
    SegmentDesc::from_json(&json).unwrap()
}

#[test]
fn publishes_both_keys_and_republishes_on_mount_and_unmount() {
    let name = "127.0.0.1:17002";
    let m = master(name, 32 * MIB);
    let p = Publisher::install(m.store(), PublishConfig::new(name, "127.0.0.1", 17003)).unwrap();
    let md = m.store().metadata();
    assert_eq!(
        md.get("mooncake/rpc_meta/127.0.0.1:17002").as_deref(),
        Some(&br#"{"ip_or_host_name":"127.0.0.1","rpc_port":17002}"#[..])
    );
    let json = String::from_utf8(md.get("mooncake/ram/127.0.0.1:17002").unwrap()).unwrap();
    let (base, size) = m.store().local_buffers()[0];
    let prefix = format!(
        r#"{{"buffers":[{{"addr":{base},"length":{size},"name":"127.0.0.1:17002"}}],"name":"127.0.0.1:17002","protocol":"tcp","rdma_server_name":"","tcp_data_host":"127.0.0.1","tcp_data_port":17003,"tcp_proto_version":2,"timestamp":""#
    );
    assert!(json.starts_with(&prefix), "upstream's compact, sorted form: {json}");
    assert_eq!(json.len(), prefix.len() + "2026-11-27 03:00:16.837042\"}".len(), "{json}");
    let desc = SegmentDesc::from_json(json.as_bytes()).unwrap();
    assert_eq!(desc, p.descriptor(), "the handshake answer is what was published");
    assert_eq!(desc.to_json(), json.as_bytes(), "round trip");

    let out = m.store().mount_anonymous(now().mono, MountKind::Anonymous, 16 * MIB, Protocol::Tcp, "").unwrap();
    let two = published(&m, name);
    assert_eq!(two.buffers.len(), 2);
    let listed: Vec<(u64, u64)> = two.buffers.iter().map(|b| (b.addr, b.length)).collect();
    assert_eq!(listed, m.store().local_buffers());
    assert!(two.buffers.iter().all(|b| b.name == name));
    assert_eq!(p.descriptor(), two);

    assert_eq!(m.store().unmount(now().mono, UnmountFamily::Anonymous, &out.segment_ids, Duration::ZERO), vec![true]);
    assert_eq!(published(&m, name).buffers, desc.buffers, "back to the start-up segment");

    p.withdraw();
    assert_eq!(md.get("mooncake/ram/127.0.0.1:17002"), None);
    assert_eq!(md.get("mooncake/rpc_meta/127.0.0.1:17002"), None);
    m.store().mount_anonymous(now().mono, MountKind::Anonymous, 16 * MIB, Protocol::Tcp, "").unwrap();
    assert_eq!(md.get("mooncake/ram/127.0.0.1:17002"), None, "withdrawn: no more publications");
}

#[test]
fn without_memory_the_buffer_list_is_empty() {
    let m = master("127.0.0.1:17004", 0);
    let _p = Publisher::install(m.store(), PublishConfig::new("127.0.0.1:17004", "127.0.0.1", 1)).unwrap();
    let json = m.store().metadata().get("mooncake/ram/127.0.0.1:17004").unwrap();
    assert!(json.starts_with(br#"{"buffers":[],"name":"127.0.0.1:17004""#));
    assert!(SegmentDesc::from_json(&json).unwrap().buffers.is_empty());
    m.store().mount_anonymous(now().mono, MountKind::Anonymous, 16 * MIB, Protocol::Tcp, "").unwrap();
    assert_eq!(published(&m, "127.0.0.1:17004").buffers.len(), 1);
}

#[test]
fn configuration_errors() {
    let m = master("n:1", 0);
    let bad = |c: PublishConfig| Publisher::new(m.store(), c).unwrap_err();
    assert!(matches!(bad(PublishConfig::new("no-port", "127.0.0.1", 1)), PublishError::BadSegmentName(_)));
    assert!(matches!(bad(PublishConfig::new("h:1", "0.0.0.0", 1)), PublishError::UnroutableHost(_)));
    assert!(matches!(bad(PublishConfig::new("h:1", "[::]", 1)), PublishError::UnroutableHost(_)));
    assert!(matches!(bad(PublishConfig::new("h:1", "", 1)), PublishError::UnroutableHost(_)));
    let https = PublishConfig::new("h:1", "127.0.0.1", 1).with_metadata_server("https://x/metadata");
    assert!(matches!(bad(https), PublishError::BadMetadataServer(_)));
    let stale = m.store().metadata();
    stale.put("mooncake/rpc_meta/h:1", b"{\"ip_or_host_name\":\"10.0.0.9\",\"rpc_port\":1}");
    let _p = Publisher::install(m.store(), PublishConfig::new("h:1", "127.0.0.1", 1)).unwrap();
    assert_eq!(
        stale.get("mooncake/rpc_meta/h:1").as_deref(),
        Some(&br#"{"ip_or_host_name":"127.0.0.1","rpc_port":1}"#[..]),
        "our own stale rpc_meta is replaced"
    );
}

#[test]
fn p2p_handshake_finds_the_descriptor_and_the_data_port() {
    // The owner: a handshake port answering with the publisher's descriptor, a data port.
    let owner = master("placeholder:1", 16 * MIB);
    let data = target(&owner);
    let hs_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let hs_port = hs_listener.local_addr().unwrap().port();
    drop(hs_listener);
    let name = format!("127.0.0.1:{hs_port}");
    let p = Publisher::install(owner.store(), PublishConfig::new(&name, "127.0.0.1", data.port())).unwrap();
    let _hs = Server::start_on(Box::new(HandshakeAcceptor::new(p.provider())), hs_port);
    owner.store().put(now().mono, "v", b"over p2p").unwrap();
    let addr = owner.store().query_key("v").unwrap()[0].address;

    // The reader: another process, knowing nothing but the name.
    let reader = master("127.0.0.1:17005", 0);
    let config = ResolverConfig { local: true, ..ResolverConfig::default() };
    let resolver = Resolver::new(reader.store().clone(), config);
    let r = resolver.fetch(&name, far()).unwrap();
    assert_eq!(r.source, Source::Handshake);
    assert_eq!((r.data_host.as_str(), r.data_port), ("127.0.0.1", data.port()));
    assert_eq!(r.desc, p.descriptor());

    let own = Publisher::new(reader.store(), PublishConfig::new("127.0.0.1:17005", "127.0.0.1", 9)).unwrap();
    let plane = TcpDataPlane::new(
        reader.store().clone(),
        TcpPlaneConfig { own_descriptor: Some(own.provider()), ..Default::default() },
    )
    .unwrap();
    assert_eq!(run(&plane, &name, TransferOp::Read { addr, len: 8 }), TransferOutcome::Read(b"over p2p".to_vec()));

    let nobody = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    match run(&plane, &nobody.to_string(), TransferOp::Read { addr, len: 8 }) {
        TransferOutcome::Failed(why) => {
            assert!(why.starts_with(&format!("{nobody}: no segment descriptor")), "{why}");
            assert!(why.contains("handshake with"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rpc_meta_gives_the_host_when_the_descriptor_has_none() {
    let owner = master("127.0.0.1:17006", 16 * MIB);
    let stats = TargetStats::new();
    let data = target_counting(&owner, stats.clone());
    owner.store().put(now().mono, "v", b"head-era").unwrap();
    let addr = owner.store().query_key("v").unwrap()[0].address;
    let mut desc = SegmentDesc::tcp("127.0.0.1:17006", "", data.port(), String::new(), &owner.store().local_buffers());
    desc.tcp_data_host = None;
    desc.tcp_proto_version = 1;
    let md = owner.store().metadata();
    md.put("mooncake/ram/127.0.0.1:17006", &desc.to_json());
    md.put("mooncake/rpc_meta/127.0.0.1:17006", br#"{"ip_or_host_name":"127.0.0.1","rpc_port":17006}"#);
    let resolver = Resolver::new(owner.store().clone(), ResolverConfig::default());
    let r = resolver.fetch("127.0.0.1:17006", far()).unwrap();
    assert_eq!((r.source, r.data_host.as_str()), (Source::Local, "127.0.0.1"));
    // v1 framing (tcp_proto_version 1): reads work; a write is "written" once its bytes are
    // in the socket (no status frame), so a PutEnd could overtake it (data-plane.md §5.3):
    // the target's count of finished writes is awaited here before PutEnd.
    let plane = TcpDataPlane::new(owner.store().clone(), TcpPlaneConfig::default()).unwrap();
    assert_eq!(
        run(&plane, "127.0.0.1:17006", TransferOp::Read { addr, len: 8 }),
        TransferOutcome::Read(b"head-era".to_vec())
    );
    let client = uuid::Uuid::from_u128(0xc3);
    let cfg = mc_core::store::WriteConfig { replicas: 1, preferred: Vec::new(), ..Default::default() };
    let w = owner.store().client_put_start(now().mono, client, "w", 5, &cfg, false).unwrap()[0].address;
    let op = TransferOp::Write { addr: w, data: bytes::Bytes::from_static(b"v1 ok") };
    assert_eq!(run(&plane, "127.0.0.1:17006", op), TransferOutcome::Written);
    let landed = Instant::now() + Duration::from_secs(5);
    while stats.snapshot().writes == 0 {
        assert!(Instant::now() < landed, "the v1 write landed");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(owner.store().client_put_end(now().mono, client, "w", None), Ok(Some(5)));
    assert_eq!(owner.store().get(now().mono, "w", false).unwrap().bytes(), b"v1 ok");
    assert_eq!(
        run(&plane, "127.0.0.1:17006", TransferOp::Read { addr: w, len: 5 }),
        TransferOutcome::Read(b"v1 ok".to_vec())
    );
}

#[test]
fn a_target_restarted_on_a_new_port_is_found_again() {
    let name = "127.0.0.1:17007";
    let m = master(name, 16 * MIB);
    m.store().put(now().mono, "v", &pattern(1000, 5)).unwrap();
    let addr = m.store().query_key("v").unwrap()[0].address;
    let first = target(&m);
    let _p1 = Publisher::install(m.store(), PublishConfig::new(name, "127.0.0.1", first.port())).unwrap();
    let plane =
        TcpDataPlane::new(m.store().clone(), TcpPlaneConfig { handshake: false, ..Default::default() }).unwrap();
    let read = TransferOp::Read { addr, len: 1000 };
    assert_eq!(run(&plane, name, read.clone()), TransferOutcome::Read(pattern(1000, 5)));
    let old_port = first.port();
    first.stop();

    let second = target(&m);
    assert_ne!(second.port(), old_port);
    let _p2 = Publisher::install(m.store(), PublishConfig::new(name, "127.0.0.1", second.port())).unwrap();
    assert_eq!(run(&plane, name, read.clone()), TransferOutcome::Read(pattern(1000, 5)), "re-fetched");
    let s = plane.stats();
    assert_eq!((s.refetches, s.failed), (1, 0), "{s:?}");
    assert_eq!(plane.resolver().get(name, far()).unwrap().data_port, second.port(), "cached anew");

    second.stop();
    match run(&plane, name, read) {
        TransferOutcome::Failed(why) => {
            assert!(why.starts_with(&format!("{name}: connect to 127.0.0.1:")), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

/// A tiny stand-in for upstream's HTTP metadata server: keys stored raw (not URL-decoded),
/// rpc_meta keys refuse a different value.
struct MetadataServer {
    port: u16,
    map: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl MetadataServer {
    fn start() -> Self {
        Self::start_on(0)
    }

    fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let map = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (map.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => serve_metadata(stream, &m),
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self { port, map, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/metadata", self.port)
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_metadata(mut s: TcpStream, map: &Mutex<HashMap<String, Vec<u8>>>) {
    s.set_nonblocking(false).unwrap();
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    let (head_end, len) = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "request cut short");
        req.extend_from_slice(&buf[..n]);
        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&req[..i]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                .unwrap_or(0);
            break (i + 4, len);
        }
    };
    while req.len() < head_end + len {
        let n = s.read(&mut buf).unwrap();
        req.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&req[..head_end]).to_string();
    let body = req[head_end..head_end + len].to_vec();
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
    let key = target.split_once("?key=").map(|(_, k)| k.to_owned()).unwrap_or_default();
    let mut map = map.lock().unwrap();
    let (status, reply): (&str, Vec<u8>) = match method {
        "GET" => match map.get(&key) {
            Some(v) => ("200 OK", v.clone()),
            None => ("404 Not Found", b"metadata not found".to_vec()),
        },
        "PUT" if key.contains("rpc_meta") && map.get(&key).is_some_and(|v| *v != body) => {
            ("400 Bad Request", b"Duplicate rpc_meta key not allowed".to_vec())
        }
        "PUT" => {
            map.insert(key, body);
            ("200 OK", b"metadata updated".to_vec())
        }
        "DELETE" => match map.remove(&key) {
            Some(_) => ("200 OK", b"metadata deleted".to_vec()),
            None => ("404 Not Found", b"metadata not found".to_vec()),
        },
        _ => ("405 Method Not Allowed", Vec::new()),
    };
    let mut out =
        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", reply.len()).into_bytes();
    out.extend_from_slice(&reply);
    let _ = s.write_all(&out);
}

#[test]
fn external_metadata_server_publication_and_lookup() {
    let server = MetadataServer::start();
    let name = "127.0.0.1:17008";
    let owner = master(name, 16 * MIB);
    let data = target(&owner);
    server.map.lock().unwrap().insert("mooncake%2Frpc_meta%2F127.0.0.1%3A17008".into(), b"stale".to_vec());
    let config = PublishConfig::new(name, "127.0.0.1", data.port()).with_metadata_server(server.url());
    let p = Publisher::install(owner.store(), config).unwrap();
    assert!(p.flush(Duration::from_secs(10)));
    {
        let map = server.map.lock().unwrap();
        let ram = map.get("mooncake%2Fram%2F127.0.0.1%3A17008").expect("PUT under curl's escaping");
        assert_eq!(SegmentDesc::from_json(ram).unwrap(), p.descriptor());
        assert_eq!(
            map.get("mooncake%2Frpc_meta%2F127.0.0.1%3A17008").map(Vec::as_slice),
            Some(&br#"{"ip_or_host_name":"127.0.0.1","rpc_port":17008}"#[..]),
            "a refused rpc_meta is deleted and put again"
        );
    }
    owner.store().put(now().mono, "v", b"via the metadata server").unwrap();
    let addr = owner.store().query_key("v").unwrap()[0].address;

    // A reader whose own metadata does not know the name.
    let reader = master("127.0.0.1:17009", 0);
    let config = TcpPlaneConfig { metadata_server: Some(server.url()), handshake: false, ..Default::default() };
    let plane = TcpDataPlane::new(reader.store().clone(), config).unwrap();
    assert_eq!(plane.resolver().fetch(name, far()).unwrap().source, Source::MetadataServer);
    assert_eq!(
        run(&plane, name, TransferOp::Read { addr, len: 23 }),
        TransferOutcome::Read(b"via the metadata server".to_vec())
    );

    owner.store().mount_anonymous(now().mono, MountKind::Anonymous, 16 * MIB, Protocol::Tcp, "").unwrap();
    assert!(p.flush(Duration::from_secs(10)));
    let ram = server.map.lock().unwrap().get("mooncake%2Fram%2F127.0.0.1%3A17008").cloned().unwrap();
    assert_eq!(SegmentDesc::from_json(&ram).unwrap().buffers.len(), 2, "republished on mount");

    p.withdraw();
    assert!(p.flush(Duration::from_secs(10)));
    assert!(server.map.lock().unwrap().is_empty(), "both keys deleted");
}

#[test]
fn metadata_server_down_then_up_is_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let m = master("127.0.0.1:17010", 0);
    let config = PublishConfig::new("127.0.0.1:17010", "127.0.0.1", 1)
        .with_metadata_server(format!("http://127.0.0.1:{port}/metadata"));
    let p = Publisher::install(m.store(), config).unwrap();
    m.store().mount_anonymous(now().mono, MountKind::Anonymous, 16 * MIB, Protocol::Tcp, "").unwrap();
    assert!(!p.flush(Duration::from_millis(300)), "nobody listens yet");
    assert!(m.store().metadata().get("mooncake/ram/127.0.0.1:17010").is_some(), "the local copy is there");
    let server = MetadataServer::start_on(port);
    assert!(p.flush(Duration::from_secs(10)), "retried once the server is up");
    let ram = server.map.lock().unwrap().get("mooncake%2Fram%2F127.0.0.1%3A17010").cloned().unwrap();
    assert_eq!(SegmentDesc::from_json(&ram).unwrap(), p.descriptor(), "the newest descriptor");
    assert_eq!(p.descriptor().buffers.len(), 1, "the mount while the server was down");
}
