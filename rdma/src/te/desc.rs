//! The JSON documents of TE's metadata and handshake port (data-plane.md §2.1, §2.3, §2.5,
//! §3.3): the segment descriptor (`mooncake/ram/<name>`), `rpc_meta`, the QP-exchange
//! `HandShakeDesc` and the notify message.
//!
//! Upstream writes JSON with jsoncpp, which sorts object keys; every struct here declares its
//! fields in that order, so the compact encoding is byte-identical to upstream's. Decoding
//! tolerates unknown fields and missing optional ones. RDMA-only fields (`devices`,
//! `priority_matrix`, per-buffer `rkey`/`lkey`) are emitted only when non-empty, which is what
//! upstream emits for a TCP descriptor (te-handshake-frames.txt).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::wire::Framing;

/// The `tcp_proto_version` mc-master advertises (v2 framing).
pub const TCP_PROTO_VERSION: u32 = 2;

/// A TE segment descriptor (`mooncake/ram/<name>`, or the type-1 handshake reply).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentDesc {
    /// The registered buffers. TCP: `{name, addr, length}`, `name` = the segment name.
    pub buffers: Vec<BufferDesc>,
    /// RDMA: the HCAs, indexed like each buffer's `rkey`/`lkey` (empty for TCP).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceDesc>,
    /// The segment name; must equal the name in the metadata key (§2.3).
    pub name: String,
    /// RDMA: location (`cpu:0`, `*`, …) → preferred and available HCAs (empty for TCP).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub priority_matrix: BTreeMap<String, PriorityRow>,
    /// `"tcp"` or `"rdma"`; the initiator picks its transport from it.
    pub protocol: String,
    /// The dual-NIC name used in RDMA NIC paths (informational for TCP).
    pub rdma_server_name: String,
    /// Where initiators connect for data (wheel PR #3543); missing: the `rpc_meta` IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_data_host: Option<String>,
    /// The TE TCP data port (always emitted, meaningless for RDMA).
    pub tcp_data_port: u16,
    /// Newer owners (upstream PR #3554): an id regenerated per transport incarnation, so an
    /// initiator's pooled connections to a restarted owner on the same port are not reused.
    /// Optional; mc-master's own descriptors omit it (0.3.13 initiators do not know it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_instance_id: Option<String>,
    /// The data-port framing the owner speaks; missing means 1, at least 2 means v2.
    #[serde(default = "default_proto_version")]
    pub tcp_proto_version: u32,
    /// Informational, `%Y-%m-%d %H:%M:%S.%f` upstream.
    pub timestamp: String,
}

fn default_proto_version() -> u32 {
    1
}

impl Default for SegmentDesc {
    /// Everything empty; `tcp_proto_version` 1, what a missing field means.
    fn default() -> Self {
        Self {
            buffers: Vec::new(),
            devices: Vec::new(),
            name: String::new(),
            priority_matrix: BTreeMap::new(),
            protocol: String::new(),
            rdma_server_name: String::new(),
            tcp_data_host: None,
            tcp_data_port: 0,
            tcp_instance_id: None,
            tcp_proto_version: default_proto_version(),
            timestamp: String::new(),
        }
    }
}

/// One registered buffer of a segment descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BufferDesc {
    /// Start address in the owner's advertised address space (nonzero).
    pub addr: u64,
    /// Length in bytes (nonzero).
    pub length: u64,
    /// RDMA: local keys, one per device.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lkey: Vec<u32>,
    /// TCP: the segment name; RDMA: the location (a `priority_matrix` row).
    pub name: String,
    /// RDMA: remote keys, one per device.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rkey: Vec<u32>,
}

/// An HCA of an RDMA segment descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceDesc {
    /// The GID: 16 bytes as `%02x` joined by `:`.
    pub gid: String,
    /// The port's LID.
    pub lid: u16,
    /// The device name, e.g. `mlx5_0`.
    pub name: String,
}

/// A `priority_matrix` row: `[[preferred HCAs], [available HCAs]]` on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Vec<String>>", into = "[Vec<String>; 2]")]
pub struct PriorityRow {
    /// HCAs preferred for this location.
    pub preferred: Vec<String>,
    /// Other HCAs usable from this location.
    pub available: Vec<String>,
}

impl From<Vec<Vec<String>>> for PriorityRow {
    fn from(rows: Vec<Vec<String>>) -> Self {
        let mut rows = rows.into_iter();
        Self { preferred: rows.next().unwrap_or_default(), available: rows.next().unwrap_or_default() }
    }
}

impl From<PriorityRow> for [Vec<String>; 2] {
    fn from(row: PriorityRow) -> Self {
        [row.preferred, row.available]
    }
}

/// `mooncake/rpc_meta/<name>`: where the owner's handshake port listens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcMeta {
    /// Host or IP (`MC_TCP_BIND_ADDRESS` or the first non-loopback address upstream).
    pub ip_or_host_name: String,
    /// The handshake port.
    pub rpc_port: u16,
}

/// The type-0 (Connection) document: the RDMA QP exchange (§3.3). A TCP-only engine answers
/// with [`HandShakeDesc::default`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HandShakeDesc {
    /// The sender's GID string.
    pub local_gid: String,
    /// The sender's LID.
    pub local_lid: u16,
    /// `"<segment or rdma_server_name>@<device>"` of the sender.
    pub local_nic_path: String,
    /// Opaque payload.
    pub payload: String,
    /// The receiver's NIC path as the sender sees it.
    pub peer_nic_path: String,
    /// The sender's QP numbers, paired by index with the receiver's.
    pub qp_num: Vec<u32>,
    /// Presence means "supports the ready ACK"; `true` in the second frame of the exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_ack: Option<bool>,
    /// Non-empty means the exchange was rejected.
    pub reply_msg: String,
}

/// The type-2 (Notify) document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifyDesc {
    /// The sender's name (empty in the reply).
    pub name: String,
    /// The message (`"success"` in the reply).
    pub notify_msg: String,
}

/// Why a descriptor was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DescError {
    /// Not JSON, or a field of the wrong type.
    Json(String),
    /// Upstream's "Corrupted segment descriptor": a buffer with an empty name, a zero address
    /// or length, or (RDMA) keys that do not match the devices.
    Corrupted {
        /// Index of the offending buffer.
        buffer: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for DescError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DescError::Json(e) => write!(f, "invalid segment descriptor: {e}"),
            DescError::Corrupted { buffer, reason } => {
                write!(f, "Corrupted segment descriptor: buffer {buffer}: {reason}")
            }
        }
    }
}

impl std::error::Error for DescError {}

impl SegmentDesc {
    /// A TCP descriptor as mc-master publishes it: `protocol:"tcp"`, `tcp_data_host` set,
    /// `tcp_proto_version` 2, empty `rdma_server_name`, and one `{name, addr, length}` buffer
    /// per `(addr, length)` range, each named after the segment.
    pub fn tcp(name: &str, data_host: &str, data_port: u16, timestamp: String, ranges: &[(u64, u64)]) -> Self {
        let buffers = ranges
            .iter()
            .map(|&(addr, length)| BufferDesc { addr, length, name: name.to_owned(), ..BufferDesc::default() })
            .collect();
        Self {
            buffers,
            name: name.to_owned(),
            protocol: "tcp".to_owned(),
            tcp_data_host: Some(data_host.to_owned()),
            tcp_data_port: data_port,
            tcp_proto_version: TCP_PROTO_VERSION,
            timestamp,
            ..Self::default()
        }
    }

    /// Decodes and [validates](SegmentDesc::validate) a descriptor.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DescError> {
        let desc: Self = serde_json::from_slice(bytes).map_err(|e| DescError::Json(e.to_string()))?;
        desc.validate()?;
        Ok(desc)
    }

    /// Compact JSON, keys in upstream's (sorted) order, without a trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Rejects what upstream rejects as "Corrupted segment descriptor" (§2.3): a buffer with
    /// an empty name, `addr == 0` or `length == 0`; for `protocol:"rdma"` also a buffer whose
    /// `rkey` count differs from the `devices` count.
    pub fn validate(&self) -> Result<(), DescError> {
        for (i, b) in self.buffers.iter().enumerate() {
            let reason = if b.name.is_empty() {
                "empty name"
            } else if b.addr == 0 {
                "zero address"
            } else if b.length == 0 {
                "zero length"
            } else if self.protocol == "rdma" && b.rkey.len() != self.devices.len() {
                "rkey count differs from the device count"
            } else {
                continue;
            };
            return Err(DescError::Corrupted { buffer: i, reason });
        }
        Ok(())
    }

    /// The data-port framing to use towards this segment's owner.
    pub fn framing(&self) -> Framing {
        Framing::from_proto_version(self.tcp_proto_version)
    }

    /// The buffer that holds all of `[addr, addr + len)`, if one does (§1.5: a range that
    /// spans two buffers is outside).
    pub fn buffer_containing(&self, addr: u64, len: u64) -> Option<&BufferDesc> {
        let end = addr.checked_add(len)?;
        self.buffers.iter().find(|b| b.addr <= addr && b.addr.checked_add(b.length).is_some_and(|e| end <= e))
    }
}

/// Compact JSON of any of this module's documents (fields in declaration order).
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs (strings, integers, maps with string keys) cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
#[path = "desc_tests.rs"]
mod tests;
