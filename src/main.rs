//! `mc-master`: the Mooncake Store HTTP service (master admin API + embedded store node).
//!
//! This binary parses flags, binds the listeners, builds the sans-IO core
//! ([`mc_core::Master`]) over the Linux platform layer, and hands everything to a runtime
//! adapter. See docs/architecture.md.

mod cli;
mod dataplane;
mod drain;
mod ha;
mod kv_events;
mod net;
mod node;
mod platform;
mod quota_file;
mod self_drain;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use cli::{Args, RpcPort, RuntimeKind};
use mc_core::rpc::RpcAcceptor;
use mc_core::{Config, HttpAcceptor, Listener, Master, Now, WorkerListeners};

fn now() -> Now {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Now::new(Instant::now(), wall)
}

/// A failure that ends the process with the given status (SPEC §11).
struct Fatal(u8, String);

fn usage_error(msg: impl Into<String>) -> Fatal {
    Fatal(2, msg.into())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal(code, msg)) => {
            eprintln!("mc-master: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run(args: Args) -> Result<(), Fatal> {
    let file = match &args.config {
        Some(path) => cli::read_config_file(path).map_err(usage_error)?,
        None => cli::FileConfig::default(),
    };
    if let Some(admin) = args.admin_port {
        if admin != 0 && admin == args.port {
            return Err(usage_error("--admin-port must differ from --port"));
        }
    }
    let page = platform::LinuxPlatform::new();
    let page_size = mc_core::platform::Platform::page_size(&page);
    if !args.mount_alignment.is_power_of_two() || args.mount_alignment < page_size {
        return Err(usage_error(format!("--mount-alignment must be a power of two of at least {page_size}")));
    }
    let threads = args
        .threads
        .map(|t| t as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));

    // Listeners first: the default node name needs the bound port. The HTTP listeners refuse
    // a port another process holds (exit 1); the RPC listener keeps sharing its fixed default
    // port (50051) with other instances of the same user, so that several servers started
    // without `--rpc-port` can run side by side.
    let bind_at = |host: std::net::IpAddr, port: u16, exclusive: bool| {
        net::bind_group(SocketAddr::new(host, port), threads, exclusive)
            .map_err(|e| Fatal(1, format!("cannot bind {host}:{port}: {e}")))
    };
    let bind = |port: u16, exclusive: bool| bind_at(args.host, port, exclusive);
    let main_addrs = bind(args.port, true)?;
    let main_addr = main_addrs[0].local_addr().map_err(|e| Fatal(1, e.to_string()))?;
    let admin_addrs = args.admin_port.map(|p| bind(p, true)).transpose()?;
    let admin_port = admin_addrs.as_ref().and_then(|a| a[0].local_addr().ok()).map(|a| a.port());
    // Store-node mode: `--master`, else the config file's `master_server_address`.
    let master_addr = match args.master.as_deref() {
        Some(m) if m.eq_ignore_ascii_case("off") => None,
        Some(m) => Some(m.to_string()),
        None => file.master_server_address.clone(),
    };
    if master_addr.is_some() && args.te_port == RpcPort::Off {
        return Err(usage_error("a store node (--master) moves values over the data plane: --te-port cannot be off"));
    }
    let drain_base = match (args.drain_on_shutdown, &master_addr, &args.master_http) {
        (false, _, _) => None,
        (true, None, _) => return Err(usage_error("--drain-on-shutdown is for a store node (--master)")),
        (true, Some(_), None) => {
            return Err(usage_error(
                "--drain-on-shutdown needs --master-http HOST:PORT (the master's HTTP listener, which serves \
                 /api/v1/drain_jobs)",
            ))
        }
        (true, Some(_), Some(h)) => Some(self_drain::base_url(h).map_err(usage_error)?),
    };
    let metadata_server = match &args.metadata_server {
        Some(m) => cli::parse_metadata_server(m).map_err(usage_error)?,
        None => file.metadata_server.clone(),
    };
    // Master RPC listener (`--rpc-port`, reference/rpc/rpc-spec.md); a store node has none.
    let rpc_port = if master_addr.is_some() { RpcPort::Off } else { args.rpc_port };
    let rpc_addrs = match rpc_port {
        // This process's own HTTP listeners hold that port: it cannot be bound (SPEC §11).
        RpcPort::Port(p) if p != 0 && (p == main_addr.port() || Some(p) == admin_port) => {
            return Err(Fatal(1, format!("cannot bind {}:{p}: the port is taken by an HTTP listener", args.host)))
        }
        RpcPort::Port(p) => Some(bind(p, false)?),
        RpcPort::Off => None,
    };
    // The transfer engine's data port (`--te-port`, docs/data-plane.md), on --host unless
    // --te-host says otherwise.
    let te_addrs = match args.te_port {
        RpcPort::Port(p) => Some(bind_at(args.te_host.unwrap_or(args.host), p, true)?),
        RpcPort::Off => None,
    };

    let local_hostname = args.local_hostname.clone().or(file.local_hostname).unwrap_or_else(|| "127.0.0.1".to_string());
    let node_name = args.node_name.clone().unwrap_or_else(|| format!("{local_hostname}:{}", main_addr.port()));
    // The data plane publishes this node under its name, which P2PHANDSHAKE clients dial as
    // host:port (the HTTP port answers the handshake): a name of another shape turns it off.
    let te_addrs = match te_addrs {
        Some(_) if mc_rdma::publish::split_host_port(&node_name).is_none() => {
            log::warn!("node name {node_name:?} is not host:port: the data plane (--te-port) is off");
            None
        }
        t => t,
    };
    let te_addr = te_addrs.as_ref().map(|t| t[0].local_addr()).transpose().map_err(|e| Fatal(1, e.to_string()))?;
    let config = Config {
        node_name,
        protocol: args.protocol.or(file.protocol).unwrap_or(mc_core::Protocol::Tcp),
        max_body_size: args.max_body_size,
        max_batch_keys: usize::try_from(args.max_batch_keys).unwrap_or(usize::MAX),
        max_registration_size: args.max_registration_size,
        mount_alignment: args.mount_alignment,
        lease_ttl: args.default_kv_lease_ttl,
        eviction_high_watermark_ratio: args.eviction_high_watermark_ratio,
        eviction_ratio: args.eviction_ratio,
        client_ttl: args.client_ttl,
        client_suspicion_ttl: args.client_suspicion_ttl,
        service_version: args.service_version.clone(),
        soft_pin_default_ttl: args.default_kv_soft_pin_ttl,
        soft_pin_max_ttl: args.max_kv_soft_pin_ttl,
        allow_evict_soft_pinned: args.allow_evict_soft_pinned_objects,
        multi_tenants: args.enable_multi_tenants,
        allocation_strategy: args.allocation_strategy,
        idle_timeout: args.idle_timeout,
        header_read_timeout: args.header_read_timeout,
        max_connections: args.max_connections,
        cluster: te_addrs.is_some(),
        transfer_timeout: args.transfer_timeout,
    };
    let master = Master::new(config, Arc::new(page), now());
    tenant_policies(&args, master.store())?;
    // A store node mounts upstream's default (3.125 GiB, mapped lazily) unless told otherwise.
    let default_segment = if master_addr.is_some() { 3_355_443_200 } else { 0 };
    let startup = args.global_segment_size.or(file.global_segment_size).unwrap_or(default_segment);
    if startup > 0 {
        master
            .mount_startup_segment(now(), startup)
            .map_err(|e| Fatal(1, format!("cannot allocate the start-up segment of {startup} bytes: {e}")))?;
    }

    // High availability (docs/ha.md): the data plane answers durability waits, the main and
    // RPC listeners' replies wait for their changes to be durable in etcd.
    let ha = if args.enable_ha {
        let rpc_addr =
            rpc_addrs.as_ref().map(|r| r[0].local_addr()).transpose().map_err(|e| Fatal(1, e.to_string()))?;
        let Some(rpc) = rpc_addr else {
            return Err(usage_error("--enable-ha needs the RPC listener: --rpc-port cannot be off"));
        };
        if master_addr.is_some() {
            return Err(usage_error(
                "--enable-ha is for masters; a store node (--master) follows etcd's leader itself",
            ));
        }
        let endpoints: Vec<String> = args
            .etcd_endpoints
            .as_deref()
            .unwrap_or("")
            .split([';', ','])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect();
        if endpoints.is_empty() {
            return Err(usage_error("--enable-ha needs --etcd-endpoints HOST:PORT[;HOST:PORT...]"));
        }
        let host = match &args.rpc_address {
            Some(h) => h.clone(),
            None if !args.host.is_unspecified() => args.host.to_string(),
            None => {
                return Err(usage_error(
                    "--enable-ha with --host 0.0.0.0 needs --rpc-address: the view must name a reachable host",
                ))
            }
        };
        if host == "0.0.0.0" || host == "::" || host == "[::]" {
            return Err(usage_error("--rpc-address must be a reachable address, not 0.0.0.0"));
        }
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
        let cfg = ha::HaConfig {
            endpoints,
            cluster_id: args.cluster_id.clone(),
            address: format!("{host}:{}", rpc.port()),
            lease_ttl: args.ha_lease_ttl.max(Duration::from_secs(1)),
            max_txn_ops: usize::try_from(args.ha_max_txn_ops).unwrap_or(128),
        };
        log::info!("HA: cluster {} on etcd {:?}, publishing {}", cfg.cluster_id, cfg.endpoints, cfg.address);
        Some(ha::start(&master, cfg))
    } else {
        None
    };
    let mut plane = match te_addrs {
        // The data plane of an `rdma` node moves bytes with verbs: it needs a device.
        Some(_) if master.config().protocol == mc_core::Protocol::Rdma => {
            let devices = mc_rdma::verbs::probe(&mc_rdma::verbs::VerbsConfig::default())
                .map_err(|cause| Fatal(1, format!("--protocol rdma: {cause}")))?;
            log::info!("RDMA devices: {devices:?}");
            return Err(Fatal(
                1,
                "--protocol rdma: the RDMA data plane is not wired into the binary yet (docs/rdma.md); \
                 use --protocol tcp, or --te-port off for rdma as a segment label only"
                    .into(),
            ));
        }
        Some(listeners) => {
            let advertise = args.te_advertise_host.clone().unwrap_or_else(|| match args.local_hostname.clone() {
                Some(h) => h,
                None if !args.host.is_unspecified() => args.host.to_string(),
                None => local_hostname.clone(),
            });
            // A node's segments are written by whoever the master placed a value with: they
            // are served raw, as upstream's (the master, not this node, knows the values).
            let open_access = args.te_open_access || master_addr.is_some();
            let dp =
                dataplane::DataPlane::start(&master, listeners, &advertise, metadata_server.as_deref(), open_access)
                    .map_err(|e| Fatal(1, format!("cannot start the data plane: {e}")))?;
            Some(dp)
        }
        None => None,
    };
    // The process's data plane: the TE initiator, or a store node's plane around it.
    let store_node = match (&plane, &master_addr) {
        (Some(dp), Some(addr)) => {
            let state = Arc::new(mc_core::node::NodeState::new(addr));
            master.set_node(state.clone());
            let id = mc_core::node::NodeIdentity {
                client_id: uuid::Uuid::new_v4(),
                name: master.config().node_name.clone(),
                tenant: "default".into(),
                version: master.config().service_version.clone(),
            };
            let segments = master
                .store()
                .segments()
                .into_iter()
                .map(|s| mc_core::node::NodeSegment {
                    id: s.id,
                    base: s.base_address,
                    size: s.size,
                    protocol: s.protocol.as_str().into(),
                })
                .collect();
            let target = node::MasterAddr::parse(addr, &args.cluster_id).map_err(usage_error)?;
            let np =
                node::NodePlane::start(addr, target, id, segments, master.store().clone(), dp.plane.clone(), state)
                    .map_err(|e| Fatal(1, format!("cannot start the store node: {e}")))?;
            master.set_data_plane(np.clone());
            Some(np)
        }
        (Some(dp), None) => {
            master.set_data_plane(match &ha {
                Some((h, _)) => ha::plane(h, Some(dp.plane.clone())),
                None => dp.plane.clone(),
            });
            None
        }
        _ => {
            if let Some((h, _)) = &ha {
                master.set_data_plane(ha::plane(h, None));
            }
            None
        }
    };
    let rpc_addr = rpc_addrs.as_ref().map(|r| r[0].local_addr()).transpose().map_err(|e| Fatal(1, e.to_string()))?;
    let durable = |a: Box<dyn mc_core::Acceptor>| -> Box<dyn mc_core::Acceptor> {
        match &ha {
            Some((_, j)) => Box::new(mc_core::ha::DurableAcceptor::new(a, j.clone())),
            None => a,
        }
    };
    let admin_addr =
        admin_addrs.as_ref().map(|a| a[0].local_addr()).transpose().map_err(|e| Fatal(1, e.to_string()))?;
    // Each worker's listeners, each with the acceptor of its protocol; a worker's acceptors
    // share its counters.
    let mut admin_addrs = admin_addrs.map(Vec::into_iter);
    let mut rpc_addrs = rpc_addrs.map(Vec::into_iter);
    let mut workers: Vec<WorkerListeners<std::net::TcpListener>> = Vec::new();
    for main in main_addrs {
        let stats = master.register_worker();
        let http: Box<dyn mc_core::Acceptor> =
            Box::new(HttpAcceptor::new(master.clone(), Listener::Main, stats.clone()));
        let main_acceptor = match &plane {
            Some(p) => p.main_acceptor(durable(http)),
            None => durable(http),
        };
        let mut listeners: WorkerListeners<std::net::TcpListener> = vec![(main, main_acceptor)];
        if let Some(admin) = admin_addrs.as_mut().and_then(Iterator::next) {
            listeners.push((admin, Box::new(HttpAcceptor::new(master.clone(), Listener::Admin, stats.clone()))));
        }
        if let Some(rpc) = rpc_addrs.as_mut().and_then(Iterator::next) {
            listeners.push((rpc, durable(Box::new(RpcAcceptor::new(master.clone(), stats)))));
        }
        if let Some(te) = plane.as_mut().and_then(dataplane::DataPlane::next_listener) {
            listeners.push(te);
        }
        workers.push(listeners);
    }

    master.set_process_info(mc_core::ProcessInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        runtime: match args.runtime {
            RuntimeKind::Mio => "mio",
            RuntimeKind::Glommio => "glommio",
        }
        .to_string(),
        workers: workers.len(),
    });
    let runtime: Box<dyn mc_core::Runtime> = match args.runtime {
        RuntimeKind::Mio => Box::new(
            mc_mio::start(master.clone(), workers, mc_mio::Options { yield_between_turns: !args.no_yield })
                .map_err(|e| Fatal(1, format!("cannot start the mio runtime: {e}")))?,
        ),
        RuntimeKind::Glommio => {
            let opts = mc_glommio::Options {
                yield_every: if args.no_yield { None } else { mc_glommio::Options::default().yield_every },
            };
            Box::new(
                mc_glommio::start(master.clone(), workers, opts)
                    .map_err(|e| Fatal(1, format!("cannot start the glommio runtime: {e}; use --runtime mio")))?,
            )
        }
    };

    // Handlers first: a signal that arrives once the address is printed must shut down
    // gracefully, not kill the process.
    // The KV event publisher, before the address lines: a subscriber may connect as soon as
    // they are printed.
    let kv_addr = if args.enable_kv_events {
        let endpoint = args.kv_events_bind_endpoint.clone().unwrap_or_else(|| match args.host {
            std::net::IpAddr::V6(h) => format!("tcp://[{h}]:5557"),
            h => format!("tcp://{h}:5557"),
        });
        master.store().enable_kv_events(args.kv_events_queue_capacity as usize);
        let events = mc_core::kv_events::KvEventConfig {
            backend_id: args.kv_events_backend_id.clone().unwrap_or_else(|| master.config().node_name.clone()),
            emit_legacy_compat: args.kv_events_emit_legacy_compat,
            emit_object_key: args.kv_events_emit_object_key,
        };
        let (addr, _thread) =
            kv_events::start(master.clone(), kv_events::Options { endpoint, events }).map_err(|e| Fatal(1, e))?;
        Some(addr)
    } else {
        None
    };
    drain::start(master.clone()).map_err(|e| Fatal(1, format!("cannot start the drain driver: {e}")))?;
    // With --drain-on-shutdown the first signal drains this node before the shutdown starts.
    let before_shutdown: Option<Box<dyn FnOnce() + Send>> = drain_base.map(|base| {
        let opts = self_drain::Options { base, name: master.config().node_name.clone(), timeout: args.drain_timeout };
        Box::new(move || drop(self_drain::run(&opts))) as Box<dyn FnOnce() + Send>
    });
    spawn_signal_thread(master.clone(), runtime.waker(), before_shutdown)?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{main_addr}");
        if let Some(a) = admin_addr {
            let _ = writeln!(out, "admin listening on http://{a}");
        }
        if let Some(a) = rpc_addr {
            let _ = writeln!(out, "rpc listening on {a}");
        }
        if let Some(a) = te_addr {
            let _ = writeln!(out, "te listening on {a}");
        }
        if let Some(a) = kv_addr {
            let _ = writeln!(out, "kv events listening on tcp://{a}");
        }
        if let Some(m) = &master_addr {
            let _ = writeln!(out, "store node of master {m}");
        }
        let _ = out.flush();
    }
    log::info!(
        "mc-master {} serving on {main_addr} with {threads} {:?} worker(s)",
        env!("CARGO_PKG_VERSION"),
        args.runtime
    );
    if rpc_port != RpcPort::Off {
        log::info!(
            "RPC: ServiceReady answers version {:?} (--service-version); upstream clients of another build \
             refuse to start (INVALID_VERSION, -300)",
            args.service_version
        );
    }

    runtime.join();
    if let Some((h, _)) = &ha {
        h.resign();
    }
    if let Some(np) = store_node {
        log::info!("leaving the cluster: unmounting from the master");
        np.leave();
    }
    log::info!("all connections closed; exiting");
    Ok(())
}

/// The tenant quota connector (upstream's `--tenant_quota_connector_*`): a policy file read
/// now and rewritten after every change, or (`etcd`) the policies replicated by HA.
fn tenant_policies(args: &Args, store: &Arc<mc_core::store::Store>) -> Result<(), Fatal> {
    let uri = args.tenant_quota_connector_uri.as_deref().filter(|u| !u.is_empty());
    if !args.enable_multi_tenants {
        if uri.is_some() {
            log::warn!("--tenant-quota-connector-uri is ignored without --enable-multi-tenants");
        }
        return Ok(());
    }
    match (args.tenant_quota_connector_type.as_str(), uri) {
        ("etcd", _) if !args.enable_ha => Err(usage_error(
            "--tenant-quota-connector-type etcd keeps the policies with the HA state: it needs --enable-ha",
        )),
        ("etcd", _) => {
            log::info!("tenant quota policies are replicated through etcd with the HA state");
            Ok(())
        }
        (_, Some(_)) if args.enable_ha => Err(usage_error(
            "with --enable-ha the tenant quota policies are replicated through etcd: use \
             --tenant-quota-connector-type etcd instead of a policy file",
        )),
        (_, Some(path)) => {
            let path = std::path::PathBuf::from(path);
            let policies = quota_file::load(&path).map_err(|e| Fatal(1, format!("tenant quota policies: {e}")))?;
            store.load_tenant_policies(&policies).map_err(|e| Fatal(1, format!("{}: {e}", path.display())))?;
            log::info!("tenant quota policies: {} loaded from {}", policies.len(), path.display());
            store.set_policy_sink(Arc::new(quota_file::FileSink { path }));
            Ok(())
        }
        (_, None) => {
            log::info!("tenant quota policies are kept in memory only (no --tenant-quota-connector-uri)");
            Ok(())
        }
    }
}

/// SIGTERM/SIGINT handling (SPEC §2.7): the first signal starts the shutdown (and a 5 s
/// deadline), the second exits at once. `before` (the drain of `--drain-on-shutdown`) runs
/// first, on a thread of its own, while the process still serves; a second signal meanwhile
/// exits at once too.
fn spawn_signal_thread(
    master: Arc<Master>,
    wake: Arc<dyn Fn() + Send + Sync>,
    mut before: Option<Box<dyn FnOnce() + Send>>,
) -> Result<(), Fatal> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| Fatal(1, format!("cannot install signal handlers: {e}")))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen > 1 {
                    log::info!("second signal {sig}: exiting now");
                    std::process::exit(0);
                }
                let before = before.take();
                let master = master.clone();
                let wake = wake.clone();
                let shut_down = move || {
                    if let Some(f) = before {
                        f();
                    }
                    log::info!("signal {sig}: shutting down");
                    master.begin_shutdown();
                    wake();
                    std::thread::sleep(Duration::from_secs(5));
                    log::warn!("shutdown deadline reached with connections open; exiting");
                    std::process::exit(0);
                };
                if let Err(e) = std::thread::Builder::new().name("shutdown".into()).spawn(shut_down) {
                    log::error!("cannot start the shutdown: {e}; exiting now");
                    std::process::exit(1);
                }
            }
        })
        .map_err(|e| Fatal(1, e.to_string()))?;
    Ok(())
}
