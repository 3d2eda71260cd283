//! KV events in upstream's publisher format (routing.md §1): a `stored` event when a value
//! becomes a key's current value, a `removed` event when a key loses its value by any path
//! (remove, batch and regex removes, remove_all, eviction, unmount, client expiry, a failed
//! restore), none for a value replaced by a newer one (its `stored` says it all) or for a
//! write that never completed.
//!
//! ```text
//!   store mutation ──► KvQueue (in the store, bounded: the oldest event is dropped and its
//!                       sequence number reserved, so a subscriber sees the gap)
//!   publisher thread ──take ≤ 64──► KvPublisher::encode_batch ──► [topic "", seq u64 BE,
//!                       msgpack [ms, [event maps], 0]] ──► zmtp::PubSession per subscriber
//! ```
//!
//! The core keeps no clock: the caller passes the batch time in milliseconds.

pub mod zmtp;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Events per batch (upstream's worker takes up to 64).
pub const MAX_BATCH: usize = 64;

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KvEventKind {
    /// A value became current (put end, upsert end, a one-step put).
    Stored,
    /// The key lost its value (any path).
    Removed,
}

/// One pending event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEvent {
    /// Stored or removed.
    pub kind: KvEventKind,
    /// The object key as the client wrote it.
    pub key: Arc<str>,
}

/// The bounded queue the store fills under its lock (`--kv-events-queue-capacity`; 0 =
/// unbounded).
#[derive(Debug, Default)]
pub struct KvQueue {
    events: VecDeque<KvEvent>,
    capacity: usize,
    /// Dropped since the last [`KvQueue::take`].
    dropped: u64,
}

impl KvQueue {
    /// A queue of at most `capacity` events (0: unbounded).
    pub fn new(capacity: usize) -> Self {
        Self { events: VecDeque::new(), capacity, dropped: 0 }
    }

    /// Appends `ev`; when full the oldest event goes.
    pub fn push(&mut self, ev: KvEvent) {
        if self.capacity > 0 && self.events.len() >= self.capacity {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(ev);
    }

    /// Up to `max` events, oldest first, and how many were dropped since the last take.
    pub fn take(&mut self, max: usize) -> (Vec<KvEvent>, u64) {
        let n = max.min(self.events.len());
        let out = self.events.drain(..n).collect();
        (out, std::mem::take(&mut self.dropped))
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// No event waiting.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Events were dropped since the last take.
    pub fn has_dropped(&self) -> bool {
        self.dropped > 0
    }
}

/// The publisher's counters, as `/kv_events/status` shows them.
#[derive(Debug, Default)]
pub struct KvStats {
    /// The publisher is configured and bound.
    pub enabled: AtomicBool,
    /// Batches handed to the subscribers.
    pub published_batches: AtomicU64,
    /// Events in those batches.
    pub published_events: AtomicU64,
    /// Events dropped from the full queue.
    pub dropped_events: AtomicU64,
    /// Events whose key is not one u64 (sent with empty hashes, or dropped without
    /// `object_key`).
    pub skipped_unparsed_keys: AtomicU64,
}

impl KvStats {
    /// The `/kv_events/status` body, upstream's five fields in upstream's order.
    pub fn status_json(&self) -> Vec<u8> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "{{\"enabled\":{},\"published_batches\":{},\"published_events\":{},\"dropped_events\":{},\"skipped_unparsed_keys\":{}}}",
            self.enabled.load(Ordering::Relaxed),
            g(&self.published_batches),
            g(&self.published_events),
            g(&self.dropped_events),
            g(&self.skipped_unparsed_keys)
        )
        .into_bytes()
    }
}

/// `--kv-events-*` settings that shape the events.
#[derive(Clone, Debug)]
pub struct KvEventConfig {
    /// `--kv-events-backend-id`: copied into every event.
    pub backend_id: String,
    /// `--kv-events-emit-legacy-compat`: the vLLM/SGLang aliases `type`, `block_hashes`,
    /// `parent_block_hash`.
    pub emit_legacy_compat: bool,
    /// `--kv-events-emit-object-key`: `object_key`; without it events of keys that are not
    /// one u64 are dropped.
    pub emit_object_key: bool,
}

impl Default for KvEventConfig {
    fn default() -> Self {
        Self { backend_id: String::new(), emit_legacy_compat: true, emit_object_key: true }
    }
}

/// The seq hash a key names, as upstream parses it (routing.md §1.6): the whole key is one
/// u64, `0x`/`0X` + hex, or decimal (leading whitespace and a sign accepted, a negative value
/// wrapping, as `stoull`).
pub fn parse_seq_hash(key: &str) -> Option<u64> {
    if let Some(hex) = key.strip_prefix("0x").or_else(|| key.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    let t = key.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u64 = digits.parse().ok()?;
    Some(if neg { v.wrapping_neg() } else { v })
}

/// Sequence numbers, event ids and the encoding of batches (the publisher thread owns it).
#[derive(Debug)]
pub struct KvPublisher {
    config: KvEventConfig,
    next_seq: u64,
    next_event_id: u64,
    stats: Arc<KvStats>,
}

/// One encoded batch: its sequence number and msgpack payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvBatch {
    /// Sequence number (from 1; gaps where events were dropped).
    pub seq: u64,
    /// The msgpack `[timestamp_ms, [events], 0]`.
    pub payload: Vec<u8>,
    /// Events in it.
    pub events: usize,
}

impl KvBatch {
    /// The three frames of its ZMQ message: empty topic, sequence (8 bytes big-endian),
    /// payload.
    pub fn message(&self) -> bytes::Bytes {
        zmtp::encode_message(&[b"", &self.seq.to_be_bytes(), &self.payload]).into()
    }
}

fn w_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_str(out, s);
}

fn w_key(out: &mut Vec<u8>, k: &str) {
    w_str(out, k);
}

fn w_nil(out: &mut Vec<u8>) {
    let _ = rmp::encode::write_nil(out);
}

fn w_uint(out: &mut Vec<u8>, v: u64) {
    let _ = rmp::encode::write_uint(out, v);
}

impl KvPublisher {
    /// A publisher counting into `stats`.
    pub fn new(config: KvEventConfig, stats: Arc<KvStats>) -> Self {
        Self { config, next_seq: 1, next_event_id: 1, stats }
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<KvStats> {
        &self.stats
    }

    /// Encodes `events` (at most [`MAX_BATCH`]) as one batch at `now_ms`; `dropped` events
    /// were lost from the queue before them (their sequence numbers are skipped). `None`
    /// when every event was skipped (no sequence number is used). Counts the batch as
    /// published.
    pub fn encode_batch(&mut self, events: &[KvEvent], dropped: u64, now_ms: u64) -> Option<KvBatch> {
        if dropped > 0 {
            self.next_seq += dropped;
            self.stats.dropped_events.fetch_add(dropped, Ordering::Relaxed);
        }
        let mut kept: Vec<(&KvEvent, Option<u64>)> = Vec::with_capacity(events.len());
        for ev in events {
            let hash = parse_seq_hash(crate::store::split_key(&ev.key).1);
            if hash.is_none() {
                self.stats.skipped_unparsed_keys.fetch_add(1, Ordering::Relaxed);
                if !self.config.emit_object_key || ev.key.is_empty() {
                    continue;
                }
            }
            kept.push((ev, hash));
        }
        if kept.is_empty() {
            return None;
        }
        let mut p = Vec::with_capacity(64 + kept.len() * 320);
        let _ = rmp::encode::write_array_len(&mut p, 3);
        let _ = rmp::encode::write_u64(&mut p, now_ms);
        let _ = rmp::encode::write_array_len(&mut p, kept.len() as u32);
        for (ev, hash) in &kept {
            self.encode_event(&mut p, ev, *hash, now_ms);
        }
        w_uint(&mut p, 0);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.published_batches.fetch_add(1, Ordering::Relaxed);
        self.stats.published_events.fetch_add(kept.len() as u64, Ordering::Relaxed);
        Some(KvBatch { seq, payload: p, events: kept.len() })
    }

    /// One event map, members in upstream's order (routing.md §1.5).
    fn encode_event(&mut self, p: &mut Vec<u8>, ev: &KvEvent, hash: Option<u64>, now_ms: u64) {
        let stored = ev.kind == KvEventKind::Stored;
        let legacy = self.config.emit_legacy_compat;
        let object_key = self.config.emit_object_key;
        let mut n = if stored { 16 } else { 14 };
        if legacy {
            n += if stored { 3 } else { 2 };
        }
        if object_key {
            n += 1;
        }
        let _ = rmp::encode::write_map_len(p, n);
        let id = self.next_event_id;
        self.next_event_id += 1;
        w_key(p, "event_id");
        w_uint(p, id);
        w_key(p, "timestamp");
        w_uint(p, now_ms);
        w_key(p, "event_type");
        w_str(p, if stored { "stored" } else { "removed" });
        if legacy {
            w_key(p, "type");
            w_str(p, if stored { "BlockStored" } else { "BlockRemoved" });
        }
        for k in ["model_name", "block_size", "additional_salt", "lora_name"] {
            w_key(p, k);
            w_nil(p);
        }
        // A multi-tenant store's key carries its tenant (`store/tenant.rs`); events name the
        // tenant and the tenant-local key, as upstream's do.
        let (tenant, local) = crate::store::split_key(&ev.key);
        w_key(p, "tenant_id");
        w_str(p, tenant);
        w_key(p, "backend_id");
        w_str(p, &self.config.backend_id);
        w_key(p, "group_id");
        w_nil(p);
        w_key(p, "medium");
        w_str(p, "cpu");
        w_key(p, "dp_rank");
        w_nil(p);
        if object_key {
            w_key(p, "object_key");
            w_str(p, local);
        }
        w_key(p, "seq_hashes");
        let _ = rmp::encode::write_array_len(p, u32::from(hash.is_some()));
        if let Some(h) = hash {
            w_uint(p, h);
        }
        if legacy {
            w_key(p, "block_hashes");
            let _ = rmp::encode::write_array_len(p, u32::from(hash.is_some()));
            if let Some(h) = hash {
                let _ = rmp::encode::write_sint(p, h as i64);
            }
        }
        w_key(p, "base_block_idx");
        if stored {
            w_uint(p, 0);
            for k in ["parent_hash", "token_ids"] {
                w_key(p, k);
                w_nil(p);
            }
            if legacy {
                w_key(p, "parent_block_hash");
                w_nil(p);
            }
        } else {
            w_nil(p);
        }
    }
}

#[cfg(test)]
mod tests;
