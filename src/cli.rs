//! Command line and `--config` file (SPEC §11).

use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use mc_core::Protocol;

/// Which runtime drives the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// mio: readiness-based, thread-per-core, SO_REUSEPORT.
    Mio,
    /// glommio: io_uring, thread-per-core.
    Glommio,
}

/// `--rpc-port N|off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcPort {
    /// Listen on this port (0 = ephemeral).
    Port(u16),
    /// No RPC listener.
    Off,
}

#[derive(Parser, Debug)]
#[command(
    name = "mc-master",
    version,
    about = "Mooncake Store HTTP service: master admin API and Store REST API in one process"
)]
pub struct Args {
    /// Address of every listener.
    #[arg(long, default_value = "127.0.0.1", value_parser = parse_host)]
    pub host: IpAddr,
    /// Main listener port; 0 = ephemeral.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Second listener serving only the admin endpoints.
    #[arg(long = "admin-port", alias = "metrics_port")]
    pub admin_port: Option<u16>,
    /// Listener for upstream's master RPC protocol: a port, 0 = ephemeral, or `off`.
    #[arg(long = "rpc-port", alias = "rpc_port", default_value = "50051", value_parser = parse_rpc_port)]
    pub rpc_port: RpcPort,
    /// I/O runtime.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Mio)]
    pub runtime: RuntimeKind,
    /// Worker threads (default: number of CPU cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// mooncake_config.json (keys used: local_hostname, protocol, global_segment_size).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Host part of the default node name.
    #[arg(long = "local-hostname", alias = "local_hostname")]
    pub local_hostname: Option<String>,
    /// Name of the embedded node's segments (default `<local-hostname>:<bound port>`).
    #[arg(long = "node-name")]
    pub node_name: Option<String>,
    /// Default protocol of mounts: tcp or rdma.
    #[arg(long, value_parser = parse_protocol)]
    pub protocol: Option<Protocol>,
    /// Size of the start-up segment (0 = none).
    #[arg(long = "global-segment-size", alias = "global_segment_size", value_parser = parse_size)]
    pub global_segment_size: Option<u64>,
    /// Largest request body.
    #[arg(long = "max-body-size", default_value = "100MiB", value_parser = parse_size)]
    pub max_body_size: u64,
    /// Largest number of keys in one batch query.
    #[arg(long = "max-batch-keys", default_value_t = 10000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_batch_keys: u64,
    /// Mounts larger than this are split into several segments (0 = never).
    #[arg(long = "max-registration-size", default_value = "0", value_parser = parse_size)]
    pub max_registration_size: u64,
    /// Alignment of `/api/mount` sizes (power of two, at least the page size).
    #[arg(long = "mount-alignment", default_value = "16MiB", value_parser = parse_size)]
    pub mount_alignment: u64,
    /// Lease granted by each read (plain number = milliseconds).
    #[arg(long = "default-kv-lease-ttl", alias = "default_kv_lease_ttl", default_value = "10s", value_parser = parse_duration_ms)]
    pub default_kv_lease_ttl: Duration,
    /// Eviction starts when used/capacity exceeds this ratio.
    #[arg(long = "eviction-high-watermark-ratio", alias = "eviction_high_watermark_ratio", default_value_t = 0.9, value_parser = parse_ratio)]
    pub eviction_high_watermark_ratio: f64,
    /// Fraction of candidates evicted per pass.
    #[arg(long = "eviction-ratio", alias = "eviction_ratio", default_value_t = 0.05, value_parser = parse_ratio)]
    pub eviction_ratio: f64,
    /// Liveness TTL of remote store nodes (plain number = seconds): silent this long, a node
    /// is suspected (or expires when --client-suspicion-ttl is 0).
    #[arg(
        long = "client-ttl",
        visible_alias = "client-active-ttl",
        aliases = ["client_ttl", "client_active_ttl", "client_active_ttl_sec", "client-active-ttl-sec"],
        default_value = "10s",
        value_parser = parse_duration_s
    )]
    pub client_ttl: Duration,
    /// How long a suspected store node keeps its segments and writes (its replicas withheld
    /// from reads) before it expires; its next heartbeat restores it (plain number = seconds;
    /// 0 = no suspicion phase; upstream's default is 20).
    #[arg(
        long = "client-suspicion-ttl",
        aliases = ["client_suspicion_ttl", "client_suspicion_ttl_sec", "client-suspicion-ttl-sec"],
        default_value = "0s",
        value_parser = parse_duration_s
    )]
    pub client_suspicion_ttl: Duration,
    /// Soft pin TTL of an RPC write that asks for a soft pin without a TTL (plain number =
    /// milliseconds): soft-pinned values are evicted after every unpinned one.
    #[arg(long = "default-kv-soft-pin-ttl", alias = "default_kv_soft_pin_ttl", default_value = "30m", value_parser = parse_duration_ms)]
    pub default_kv_soft_pin_ttl: Duration,
    /// The longest soft pin TTL granted (plain number = milliseconds).
    #[arg(long = "max-kv-soft-pin-ttl", alias = "max_kv_soft_pin_ttl", default_value = "24h", value_parser = parse_duration_ms)]
    pub max_kv_soft_pin_ttl: Duration,
    /// Whether soft-pinned values may be evicted once no unpinned candidate is left.
    #[arg(long = "allow-evict-soft-pinned-objects", alias = "allow_evict_soft_pinned_objects", num_args = 0..=1,
          default_missing_value = "true", default_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_evict_soft_pinned_objects: bool,
    /// Multi-tenant mode: the `tenant` of each RPC scopes its keys, /api/v1/tenant_quotas sets
    /// per-tenant memory quotas that writes are admitted against (docs/operations.md).
    #[arg(long = "enable-multi-tenants", alias = "enable_multi_tenants", num_args = 0..=1,
          default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub enable_multi_tenants: bool,
    /// Where tenant quota policies are kept (upstream's `--tenant_quota_connector_type`):
    /// `file` (the file of `--tenant-quota-connector-uri`; memory only without one) or `etcd`
    /// (with `--enable-ha`: replicated with the rest of the state).
    #[arg(long = "tenant-quota-connector-type", alias = "tenant_quota_connector_type", default_value = "file",
          value_parser = ["file", "etcd"])]
    pub tenant_quota_connector_type: String,
    /// The policy file of the `file` connector (upstream's YAML): read at start, rewritten
    /// after every change (docs/operations.md).
    #[arg(long = "tenant-quota-connector-uri", alias = "tenant_quota_connector_uri")]
    pub tenant_quota_connector_uri: Option<String>,
    /// Where an RPC write's first replica goes: free_ratio_first (the node with the largest
    /// free share), random, local_first (the writer's node, then its host).
    #[arg(long = "allocation-strategy", alias = "allocation_strategy", default_value = "free_ratio_first", value_parser = parse_strategy)]
    pub allocation_strategy: mc_core::AllocationStrategy,
    /// Publish KV events (upstream's format: ZMQ PUB, msgpack batches) for every value
    /// stored and removed; `--kv-events-bind-endpoint` says where.
    #[arg(long = "enable-kv-events", alias = "enable_kv_events", num_args = 0..=1, default_missing_value = "true",
          default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub enable_kv_events: bool,
    /// The ZMQ PUB endpoint the KV event publisher binds, `tcp://HOST:PORT` (default:
    /// tcp://<--host>:5557; port 0 = ephemeral).
    #[arg(long = "kv-events-bind-endpoint", alias = "kv_events_bind_endpoint", value_parser = parse_kv_endpoint)]
    pub kv_events_bind_endpoint: Option<String>,
    /// `backend_id` of every KV event (default: the node name).
    #[arg(long = "kv-events-backend-id", alias = "kv_events_backend_id")]
    pub kv_events_backend_id: Option<String>,
    /// Add the vLLM/SGLang aliases `type`, `block_hashes`, `parent_block_hash`.
    #[arg(long = "kv-events-emit-legacy-compat", alias = "kv_events_emit_legacy_compat", num_args = 0..=1,
          default_missing_value = "true", default_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub kv_events_emit_legacy_compat: bool,
    /// Add `object_key` (without it, events of keys that are not one u64 are dropped).
    #[arg(long = "kv-events-emit-object-key", alias = "kv_events_emit_object_key", num_args = 0..=1,
          default_missing_value = "true", default_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub kv_events_emit_object_key: bool,
    /// Events waiting for the publisher before the oldest is dropped (0 = unbounded).
    #[arg(long = "kv-events-queue-capacity", alias = "kv_events_queue_capacity", default_value_t = 65536)]
    pub kv_events_queue_capacity: u32,
    /// Upstream's deprecated KV event flags, accepted and ignored as upstream does.
    #[arg(long = "kv-events-model-name", aliases = ["kv_events_model_name", "kv_events_tenant_id", "kv-events-tenant-id",
          "kv_events_additional_salt", "kv-events-additional-salt", "kv_events_lora_name", "kv-events-lora-name",
          "kv_events_block_size", "kv-events-block-size", "kv_events_dp_rank", "kv-events-dp-rank"], hide = true)]
    pub kv_events_deprecated: Vec<String>,
    /// The version ServiceReady answers: an upstream client refuses a master whose version
    /// differs from its own build's (INVALID_VERSION, -300).
    #[arg(long = "service-version", alias = "service_version", default_value = mc_core::rpc::SERVICE_VERSION, value_parser = parse_version)]
    pub service_version: String,
    /// Idle connection timeout (plain number = seconds).
    #[arg(long = "idle-timeout", default_value = "60s", value_parser = parse_duration_s)]
    pub idle_timeout: Duration,
    /// Request head read timeout (plain number = seconds).
    #[arg(long = "header-read-timeout", default_value = "10s", value_parser = parse_duration_s)]
    pub header_read_timeout: Duration,
    /// Open client connections allowed on all listeners together (0 = unlimited); beyond it a
    /// new connection is answered 503 {"error":"too many connections"} and closed.
    #[arg(long = "max-connections", default_value_t = 0)]
    pub max_connections: u64,
    /// Do not yield the CPU to the OS scheduler while busy (mio: after each event-loop turn
    /// that handled events; glommio: every 100 µs of work). See docs/operations.md: yielding
    /// keeps tail latency low when workers share cores with clients or other work.
    #[arg(long = "no-yield")]
    pub no_yield: bool,
    /// Data port of the transfer engine (TE) target serving this node's segments to upstream
    /// clients and other nodes (docs/data-plane.md): a port, 0 = ephemeral (the default), or
    /// `off` (no data plane: the REST API and RPC clients each see only their own memory).
    #[arg(long = "te-port", alias = "te_port", default_value = "0", value_parser = parse_rpc_port)]
    pub te_port: RpcPort,
    /// Address the TE data port binds (default: --host).
    #[arg(long = "te-host", value_parser = parse_host)]
    pub te_host: Option<IpAddr>,
    /// Host published in this node's TE descriptor (`tcp_data_host`) and RPC replica
    /// descriptors; default: --local-hostname, else --host unless that is a wildcard address,
    /// else 127.0.0.1.
    #[arg(long = "te-advertise-host")]
    pub te_advertise_host: Option<String>,
    /// An external HTTP metadata server (`http://HOST:PORT/metadata`) where this node also
    /// publishes its TE descriptor and looks up other nodes'; default: only its own /metadata.
    #[arg(long = "metadata-server", alias = "metadata_server")]
    pub metadata_server: Option<String>,
    /// Serve any range inside a mounted segment on the TE data port, as upstream does, instead
    /// of only ranges inside complete values (reads) and writes in progress (writes). Unsafe
    /// on a shared network: for benchmarks and trusted clients (docs/data-plane.md).
    #[arg(long = "te-open-access")]
    pub te_open_access: bool,
    /// Run as a store node of this master (`HOST:PORT` of its RPC listener; upstream's
    /// `master_server_address`), or of the HA leader of `--cluster-id` on etcd
    /// (`etcd://HOST:PORT[;HOST:PORT...]`, as upstream's client; read again at every
    /// reconnect, docs/ha.md): this process's memory is mounted into that master and its
    /// Store REST API works on the cluster (docs/cluster.md). `off` ignores a
    /// `master_server_address` of the config file.
    #[arg(long = "master", alias = "master_server_address", alias = "master-server-address")]
    pub master: Option<String>,
    /// Store node: on SIGTERM, before unmounting, ask the master (at `--master-http`) for a
    /// drain job of this node's segments and wait until every value was moved to other nodes
    /// (at most `--drain-timeout`; docs/cluster.md).
    #[arg(long = "drain-on-shutdown", alias = "drain_on_shutdown", num_args = 0..=1, default_missing_value = "true",
          default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub drain_on_shutdown: bool,
    /// The master's HTTP listener, `HOST:PORT` (its `--port` or `--admin-port`), which serves
    /// `/api/v1/drain_jobs`: needed by `--drain-on-shutdown`.
    #[arg(long = "master-http", alias = "master_http")]
    pub master_http: Option<String>,
    /// How long the drain before shutdown may take before it is canceled and the node leaves
    /// anyway (plain number = seconds).
    #[arg(long = "drain-timeout", alias = "drain_timeout", default_value = "60s", value_parser = parse_duration_s)]
    pub drain_timeout: Duration,
    /// How long a REST read of a value held by another node may take (plain number = seconds).
    #[arg(long = "transfer-timeout", default_value = "5s", value_parser = parse_duration_s)]
    pub transfer_timeout: Duration,
    /// High availability on etcd (docs/ha.md): masters elect a leader, the replicated state
    /// lives in etcd. `--enable-ha`, `--enable_ha`, `--enable_ha=true`.
    #[arg(long = "enable-ha", alias = "enable_ha", num_args = 0..=1, default_missing_value = "true",
          default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub enable_ha: bool,
    /// etcd endpoints, `host:port` separated by `;` (or `,`), for `--enable-ha`.
    #[arg(long = "etcd-endpoints", alias = "etcd_endpoints")]
    pub etcd_endpoints: Option<String>,
    /// Cluster id: the leader publishes `mooncake-store/<cluster-id>/master_view`.
    #[arg(long = "cluster-id", alias = "cluster_id", default_value = "mooncake_cluster")]
    pub cluster_id: String,
    /// The RPC host this master publishes as leader (never 0.0.0.0; default: --host).
    #[arg(long = "rpc-address", alias = "rpc_address")]
    pub rpc_address: Option<String>,
    /// TTL of the leader's etcd lease (renewed every third of it; plain number = seconds).
    #[arg(long = "ha-lease-ttl", default_value = "3s", value_parser = parse_duration_s)]
    pub ha_lease_ttl: Duration,
    /// Most operations in one etcd transaction (etcd's `--max-txn-ops`, 128 by default).
    #[arg(long = "ha-max-txn-ops", default_value_t = 128, value_parser = clap::value_parser!(u64).range(2..=100000))]
    pub ha_max_txn_ops: u64,
}

fn parse_host(s: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(ip);
    }
    (s, 0u16)
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .map(|a| a.ip())
        .ok_or_else(|| format!("not an address: {s}"))
}

fn parse_rpc_port(s: &str) -> Result<RpcPort, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(RpcPort::Off);
    }
    s.parse::<u16>().map(RpcPort::Port).map_err(|_| format!("expected a port or `off`, got {s}"))
}

/// `tcp` or `rdma`, case-insensitive.
pub fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "rdma" => Ok(Protocol::Rdma),
        _ => Err(format!("protocol must be tcp or rdma, got {s}")),
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("expected a number in [0, 1], got {s}")),
    }
}

/// Splits `12.5MiB` into (`12.5`, `MiB`).
fn split_number(s: &str) -> (&str, &str) {
    let s = s.trim();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    (&s[..end], s[end..].trim())
}

fn parse_number(num: &str) -> Option<f64> {
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return None;
    }
    num.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

/// A size: a plain integer (bytes) or a number with a 1024-based suffix (SPEC §11).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let err = || format!("not a size: {s}");
    let (num, unit) = split_number(s);
    if unit.is_empty() {
        return num.parse::<u64>().map_err(|_| err());
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(err()),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(1u64 << shift).ok_or_else(err);
    }
    let v = parse_number(num).ok_or_else(err)? * (1u64 << shift) as f64;
    if v >= u64::MAX as f64 {
        return Err(err());
    }
    Ok(v as u64)
}

fn parse_duration_with(s: &str, plain_unit_secs: f64) -> Result<Duration, String> {
    let err = || format!("not a duration: {s}");
    let (num, unit) = split_number(s);
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" => plain_unit_secs,
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    let secs = parse_number(num).ok_or_else(err)? * factor;
    Duration::try_from_secs_f64(secs).map_err(|_| err())
}

fn parse_duration_ms(s: &str) -> Result<Duration, String> {
    parse_duration_with(s, 0.001)
}

fn parse_duration_s(s: &str) -> Result<Duration, String> {
    parse_duration_with(s, 1.0)
}

fn parse_kv_endpoint(s: &str) -> Result<String, String> {
    crate::kv_events::parse_endpoint(s).map(|_| s.to_string())
}

fn parse_strategy(s: &str) -> Result<mc_core::AllocationStrategy, String> {
    mc_core::AllocationStrategy::parse(s)
        .ok_or_else(|| format!("{s:?} is not an allocation strategy (free_ratio_first, random, local_first)"))
}

/// A version string as upstream's builds spell theirs (`2.0.0`, `0.3.13.post1`): 1 to 64
/// visible ASCII characters.
fn parse_version(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{s:?} is not a version (1 to 64 visible ASCII characters, e.g. 2.0.0)"));
    }
    Ok(s.to_string())
}

/// Values read from `--config` (SPEC §11).
#[derive(Debug, Default)]
pub struct FileConfig {
    /// `local_hostname`.
    pub local_hostname: Option<String>,
    /// `protocol`.
    pub protocol: Option<Protocol>,
    /// `global_segment_size`.
    pub global_segment_size: Option<u64>,
    /// `master_server_address` (store-node mode).
    pub master_server_address: Option<String>,
    /// `metadata_server`: an HTTP metadata URL, or `P2PHANDSHAKE` (`None` here).
    pub metadata_server: Option<String>,
}

/// `metadata_server` as upstream spells it: `P2PHANDSHAKE` means none (peers are found by
/// their `host:port` handshake), `http://...` a metadata server; anything else is refused.
pub fn parse_metadata_server(s: &str) -> Result<Option<String>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("P2PHANDSHAKE") || t.is_empty() {
        return Ok(None);
    }
    if t.starts_with("http://") {
        return Ok(Some(t.to_string()));
    }
    Err(format!("metadata_server {t:?} is not supported: use an http://HOST:PORT/metadata server or P2PHANDSHAKE"))
}

/// Reads and validates a mooncake_config.json.
pub fn read_config_file(path: &std::path::Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("invalid config file {}: {e}", path.display()))?;
    let obj = v.as_object().ok_or_else(|| format!("invalid config file {}: not a JSON object", path.display()))?;
    let mut out = FileConfig::default();
    match obj.get("local_hostname") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(s)) => out.local_hostname = Some(s.clone()),
        Some(_) => return Err("invalid config file: local_hostname must be a string".into()),
    }
    match obj.get("protocol") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(s)) => {
            out.protocol = Some(parse_protocol(s).map_err(|e| format!("invalid config file: {e}"))?)
        }
        Some(_) => return Err("invalid config file: protocol must be a string".into()),
    }
    match obj.get("global_segment_size") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Number(n)) => {
            out.global_segment_size =
                Some(n.as_u64().ok_or("invalid config file: global_segment_size must be a non-negative integer")?)
        }
        Some(serde_json::Value::String(s)) => {
            out.global_segment_size =
                Some(parse_size(s).map_err(|e| format!("invalid config file: global_segment_size: {e}"))?)
        }
        Some(_) => return Err("invalid config file: global_segment_size must be an integer or a size string".into()),
    }
    let string = |name: &str| -> Result<Option<String>, String> {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("invalid config file: {name} must be a string")),
        }
    };
    out.master_server_address = string("master_server_address")?.filter(|s| !s.trim().is_empty());
    if let Some(m) = string("metadata_server")? {
        out.metadata_server = parse_metadata_server(&m).map_err(|e| format!("invalid config file: {e}"))?;
    }
    // Accepted as upstream's store service has them; a node needs no registered local
    // transfer buffer (values go straight into response bodies) and no device over TCP.
    for (name, _) in obj.iter().filter(|(k, _)| matches!(k.as_str(), "local_buffer_size" | "device_name")) {
        log::debug!("config file: {name} accepted and not needed by mc-master");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1.5g"), Ok(1536 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("2KB"), Ok(2048));
        assert_eq!(parse_size("1.0001k"), Ok(1024));
        assert!(parse_size("1.5").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("12xb").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999t").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration_s("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration_s("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration_s("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration_s("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration_s("1d").is_err());
        assert!(parse_duration_s("x").is_err());
    }

    #[test]
    fn ratios_and_protocols() {
        assert!(parse_ratio("1.5").is_err());
        assert_eq!(parse_ratio("0.5"), Ok(0.5));
        assert_eq!(parse_protocol("RDMA"), Ok(Protocol::Rdma));
        assert!(parse_protocol("bogus").is_err());
        assert_eq!(parse_rpc_port("off"), Ok(RpcPort::Off));
    }
}
