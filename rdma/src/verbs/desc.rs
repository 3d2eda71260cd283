//! The RDMA fields of a segment descriptor (data-plane.md §2.3, §3.2) and choosing a device
//! and key from one (§3.4 items 2-3).
//!
//! * `devices[i] = {gid, lid, name}`, `buffers[k].rkey[i]`/`lkey[i]` for `devices[i]`;
//! * `priority_matrix`: every location row (and the wildcard `"*"` upstream adds) lists
//!   **every** HCA as preferred, in `devices` order: identical rows remove upstream's
//!   `unordered_map` ordering ambiguity (§3.2);
//! * buffers above `max_mr_size` (`MC_MAX_MR_SIZE`, 2^40) are split into several buffers.

use std::collections::BTreeMap;

use crate::te::desc::{BufferDesc, DeviceDesc, PriorityRow, SegmentDesc, TCP_PROTO_VERSION};

/// `MC_MAX_MR_SIZE` default: 1 TiB.
pub const MAX_MR_SIZE: u64 = 1 << 40;
/// The wildcard location.
pub const ANY_LOCATION: &str = "*";

/// `[addr, addr + len)` cut into pieces of at most `max` bytes (one when it fits; none for 0).
pub fn split_for_mr(addr: u64, len: u64, max: u64) -> Vec<(u64, u64)> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut off = 0;
    while off < len {
        let l = (len - off).min(max);
        out.push((addr + off, l));
        off += l;
    }
    out
}

/// A matrix with one identical row per location plus `"*"`: every device preferred.
pub fn priority_matrix<'a>(
    devices: &[DeviceDesc],
    locations: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, PriorityRow> {
    let all: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
    let row = PriorityRow { preferred: all, available: Vec::new() };
    let mut m = BTreeMap::new();
    m.insert(ANY_LOCATION.to_owned(), row.clone());
    for loc in locations {
        m.insert(loc.to_owned(), row.clone());
    }
    m
}

/// An RDMA descriptor as mc-master publishes it: `protocol:"rdma"`, the devices, the matrix,
/// the buffers with their keys, and the TCP fields as for TCP (upstream always emits
/// `tcp_data_port`; `tcp_data_host` and v2 keep a TCP fallback reachable).
pub fn rdma_descriptor(
    name: &str,
    data_host: &str,
    data_port: u16,
    timestamp: String,
    devices: Vec<DeviceDesc>,
    buffers: Vec<BufferDesc>,
) -> SegmentDesc {
    let priority_matrix = priority_matrix(&devices, buffers.iter().map(|b| b.name.as_str()));
    SegmentDesc {
        buffers,
        devices,
        name: name.to_owned(),
        priority_matrix,
        protocol: "rdma".to_owned(),
        rdma_server_name: String::new(),
        tcp_data_host: Some(data_host.to_owned()),
        tcp_data_port: data_port,
        tcp_instance_id: None,
        tcp_proto_version: TCP_PROTO_VERSION,
        timestamp,
    }
}

/// A device and key chosen for a range of a descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChoice {
    /// Index into `buffers`.
    pub buffer: usize,
    /// Index into `devices`.
    pub device: usize,
    /// `devices[device].name`.
    pub device_name: String,
    /// `buffers[buffer].rkey[device]`.
    pub rkey: u32,
    /// `buffers[buffer].lkey[device]` (0 when the descriptor carries none).
    pub lkey: u32,
}

/// Upstream's `selectDevice`: the buffer holding all of `[addr, addr + len)`, then a device
/// from its location's row (`"*"` when the location has none; every device when neither
/// exists): the candidates are preferred then available, and attempt `retry` takes candidate
/// `(seed + retry) % n` (upstream: random among preferred first, then walks the list).
/// `None`: no buffer holds the range, or no listed device has a key in it.
pub fn select_device(desc: &SegmentDesc, addr: u64, len: u64, seed: usize, retry: usize) -> Option<KeyChoice> {
    let end = addr.checked_add(len)?;
    let (buffer, b) = desc
        .buffers
        .iter()
        .enumerate()
        .find(|(_, b)| b.addr <= addr && b.addr.checked_add(b.length).is_some_and(|e| end <= e))?;
    let row = desc.priority_matrix.get(&b.name).or_else(|| desc.priority_matrix.get(ANY_LOCATION));
    let mut candidates: Vec<usize> = Vec::new();
    match row {
        Some(row) => {
            for n in row.preferred.iter().chain(row.available.iter()) {
                if let Some(i) = desc.devices.iter().position(|d| &d.name == n) {
                    if !candidates.contains(&i) {
                        candidates.push(i);
                    }
                }
            }
        }
        None => candidates.extend(0..desc.devices.len()),
    }
    candidates.retain(|&i| i < b.rkey.len());
    if candidates.is_empty() {
        return None;
    }
    let device = candidates[(seed.wrapping_add(retry)) % candidates.len()];
    Some(KeyChoice {
        buffer,
        device,
        device_name: desc.devices[device].name.clone(),
        rkey: b.rkey[device],
        lkey: b.lkey.get(device).copied().unwrap_or(0),
    })
}
