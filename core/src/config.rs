//! Configuration of the core (the subset of the command line that changes behaviour).
//! Parsing flags and config files is the binary's job; the core receives typed values.

use std::time::Duration;

/// Protocol recorded on a segment (SPEC §3). It does not change how bytes move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `tcp`
    Tcp,
    /// `rdma`
    Rdma,
}

impl Protocol {
    /// The wire spelling: `tcp` or `rdma`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Rdma => "rdma",
        }
    }
}

/// Every knob of the core. Defaults follow SPEC §11.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--node-name` (already resolved: `<local-hostname>:<bound port>` by default).
    pub node_name: String,
    /// `--protocol`: default protocol of mounts.
    pub protocol: Protocol,
    /// `--max-body-size` (SPEC §2.4).
    pub max_body_size: u64,
    /// `--max-batch-keys` (SPEC §4.4).
    pub max_batch_keys: usize,
    /// `--max-registration-size`, 0 = unlimited (SPEC §5.5).
    pub max_registration_size: u64,
    /// `--mount-alignment` (SPEC §5.3).
    pub mount_alignment: u64,
    /// `--default-kv-lease-ttl` (SPEC §8.4); zero disables leases.
    pub lease_ttl: Duration,
    /// `--eviction-high-watermark-ratio` (SPEC §8.6).
    pub eviction_high_watermark_ratio: f64,
    /// `--eviction-ratio` (SPEC §8.6).
    pub eviction_ratio: f64,
    /// `--client-ttl` (`--client-active-ttl`, SPEC §8.7): a remote node not heard from for
    /// this long is Suspected, or Offline when `client_suspicion_ttl` is zero.
    pub client_ttl: Duration,
    /// `--client-suspicion-ttl`: how long a Suspected node keeps its segments and writes
    /// (its replicas withheld) before it goes Offline; zero (the default) = no suspicion
    /// phase, a node expires at `client_ttl` as SPEC §8.7 says.
    pub client_suspicion_ttl: Duration,
    /// `--service-version`: the version `ServiceReady` answers (upstream clients compare it
    /// with their own build's and refuse to start on a difference).
    pub service_version: String,
    /// `--default-kv-soft-pin-ttl`: the soft pin TTL of a write that asks for one without a
    /// TTL (upstream: 30 min).
    pub soft_pin_default_ttl: Duration,
    /// `--max-kv-soft-pin-ttl`: the longest soft pin TTL granted (upstream: 24 h).
    pub soft_pin_max_ttl: Duration,
    /// `--allow-evict-soft-pinned-objects`: soft-pinned values may be evicted once no unpinned
    /// candidate is left (upstream's default: true).
    pub allow_evict_soft_pinned: bool,
    /// `--enable-multi-tenants`: RPC keys scoped by their `tenant`, per-tenant quotas
    /// (`store/tenant.rs`).
    pub multi_tenants: bool,
    /// `--allocation-strategy`: how an RPC write's first replica picks its node.
    pub allocation_strategy: AllocationStrategy,
    /// `--idle-timeout` (SPEC §2.5).
    pub idle_timeout: Duration,
    /// `--header-read-timeout` (SPEC §2.5).
    pub header_read_timeout: Duration,
    /// `--max-connections`: open client connections allowed on all listeners together;
    /// 0 = unlimited. A connection beyond it is answered `503 {"error":"too many connections"}`
    /// at once and closed (docs/robustness.md).
    pub max_connections: u64,
    /// This process serves its own segments over the data plane (a transfer-engine target)
    /// and can reach other nodes' memory (a `DataPlane` is installed): RPC writers may be
    /// placed on its segments, RPC readers see its replicas, and REST reads reach replicas
    /// on other nodes. Off: the REST API sees only this process's memory and RPC clients
    /// only theirs (the single-process split).
    pub cluster: bool,
    /// How long a REST read of a value on another node may take (`--transfer-timeout`).
    pub transfer_timeout: Duration,
}

/// `--allocation-strategy` (upstream's names): where an RPC write's first replica goes when no
/// preferred segment takes it. Further replicas go to other nodes, best fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocationStrategy {
    /// The node with the largest free share of its memory that can hold the value, best fit
    /// within it (mc-master's default).
    FreeRatioFirst,
    /// A node picked at random among those that can hold the value (upstream's default).
    Random,
    /// The writer's own node, else a node on the writer's host (`host_id`), else as
    /// `FreeRatioFirst`.
    LocalFirst,
}

impl AllocationStrategy {
    /// Parses upstream's spelling (`random`, `free_ratio_first`, `local_first`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "free_ratio_first" => Some(Self::FreeRatioFirst),
            "random" => Some(Self::Random),
            "local_first" => Some(Self::LocalFirst),
            _ => None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_name: "127.0.0.1:8080".to_string(),
            protocol: Protocol::Tcp,
            max_body_size: 100 * 1024 * 1024,
            max_batch_keys: 10_000,
            max_registration_size: 0,
            mount_alignment: 16 * 1024 * 1024,
            lease_ttl: Duration::from_secs(10),
            eviction_high_watermark_ratio: 0.9,
            eviction_ratio: 0.05,
            client_ttl: Duration::from_secs(10),
            client_suspicion_ttl: Duration::ZERO,
            service_version: crate::rpc::SERVICE_VERSION.to_string(),
            soft_pin_default_ttl: Duration::from_secs(30 * 60),
            soft_pin_max_ttl: Duration::from_secs(24 * 3600),
            allow_evict_soft_pinned: true,
            multi_tenants: false,
            allocation_strategy: AllocationStrategy::FreeRatioFirst,
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 0,
            cluster: false,
            transfer_timeout: Duration::from_secs(5),
        }
    }
}
