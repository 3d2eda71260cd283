//! The admin endpoints of SPEC §4 (and the POST form of `/batch_query_keys`, §6.1).

use std::collections::HashSet;
use std::sync::Arc;

use crate::http::{Body, BodyStream, Response};
use crate::store::{QueryError, ReplicaRef, Store};

use super::error::ApiError;
use super::json::{self, push_str, push_u64, Json};
use super::metrics::size_human;
use super::params::{self, query_param, validate_key};
use super::reply::{json_reply, text_reply, CT_TEXT};
use super::Service;

const NO_KEYS: &str = "No keys provided. Use ?keys=key1,key2,...";
const HEALTH_JSON_OK: &[u8] =
    br#"{"status":"ok","role":"leader","ha_state":"serving","service_ready":true,"leader_address":null,"view_version":null}"#;
const HEALTH_JSON_DOWN: &[u8] =
    br#"{"status":"unavailable","role":"leader","ha_state":"stopping","service_ready":false,"leader_address":null,"view_version":null}"#;

/// Keys asked from the store per `/get_all_keys` page (one read-lock hold).
const KEYS_PER_PAGE: usize = 1000;
/// A `/get_all_keys` chunk collects pages until it holds this many bytes (fewer writes).
const CHUNK_BYTES: usize = 64 * 1024;

/// `{"transport_endpoint_":..,"buffer_address_":..,"size_":..,"protocol_":..}` (SPEC §4.3).
fn push_descriptor(out: &mut Vec<u8>, r: &ReplicaRef<'_>) {
    out.extend_from_slice(b"{\"transport_endpoint_\":");
    push_str(out, r.endpoint);
    out.extend_from_slice(b",\"buffer_address_\":");
    push_u64(out, r.address);
    out.extend_from_slice(b",\"size_\":");
    push_u64(out, r.size);
    out.extend_from_slice(b",\"protocol_\":\"");
    out.extend_from_slice(r.protocol.as_str().as_bytes());
    out.extend_from_slice(b"\"}");
}

impl Service {
    /// `GET /health` (SPEC §4.9).
    pub(super) fn health(&self, now: crate::time::Now, head: &crate::http::RequestHead) -> Response {
        let down = self.master.is_shutting_down();
        if params::accepts_json(head) {
            if let Some(r) = self.ha_health(now.mono, down) {
                return r;
            }
        }
        // A store node is up only while registered with its master: 503 naming the reason.
        if let Some(Err(why)) = (!down).then(|| self.master.node().map(|n| n.health())).flatten() {
            if params::accepts_json(head) {
                let mut body = br#"{"status":"unavailable","role":"node","service_ready":false,"reason":"#.to_vec();
                push_str(&mut body, &why);
                body.push(b'}');
                return json_reply(503, body);
            }
            return text_reply(503, format!("UNAVAILABLE: {why}").into_bytes());
        }
        let status = if down { 503 } else { 200 };
        if params::accepts_json(head) {
            json_reply(status, if down { HEALTH_JSON_DOWN } else { HEALTH_JSON_OK })
        } else {
            let body: &[u8] = if down { b"UNAVAILABLE" } else { b"OK" };
            text_reply(status, body)
        }
    }

    /// `GET /query_key?key=K` (SPEC §4.3). Read-only: no lease, no counter.
    pub(super) fn query_key(&self, head: &crate::http::RequestHead) -> Result<Response, ApiError> {
        let raw = query_param(head.query.as_deref(), "key").ok_or(ApiError::invalid("Missing key query parameter"))?;
        let key = validate_key(&raw)?;
        let mut out = Vec::new();
        let mut result = Ok(());
        self.master.store.query_keys_with(&[key], |_, replicas| match replicas {
            Ok(replicas) => {
                out.reserve(40 + replicas.len() * 128);
                out.extend_from_slice(b"{\"success\":true,\"data\":[");
                for (i, r) in replicas.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    push_descriptor(&mut out, r);
                }
                out.extend_from_slice(b"]}");
            }
            Err(e) => result = Err(query_error(e)),
        });
        result?;
        Ok(json_reply(200, out))
    }

    /// `GET /batch_query_keys?keys=k1,k2` (SPEC §4.4).
    pub(super) fn batch_query_get(&self, head: &crate::http::RequestHead) -> Result<Response, ApiError> {
        let raw = query_param(head.query.as_deref(), "keys").ok_or(ApiError::invalid(NO_KEYS))?;
        let n = raw.iter().filter(|&&b| b == b',').count() + 1;
        self.check_batch_len(n)?;
        let items: Vec<&[u8]> = raw.split(|&b| b == b',').collect();
        self.batch_query(&items)
    }

    /// `POST /batch_query_keys` with `{"keys":[...]}` (SPEC §6.1).
    pub(super) fn batch_query_post(&self, body: &[u8]) -> Result<Response, ApiError> {
        let doc = super::rest::parse_object(body)?;
        let keys = match doc.member("keys") {
            None => return Err(ApiError::invalid(NO_KEYS)),
            Some(Json::Array(a)) if a.is_empty() => return Err(ApiError::invalid(NO_KEYS)),
            Some(Json::Array(a)) => a,
            Some(_) => return Err(ApiError::invalid("Invalid keys: must be an array of strings")),
        };
        let items = keys
            .iter()
            .map(|k| k.as_str().map(str::as_bytes))
            .collect::<Option<Vec<&[u8]>>>()
            .ok_or(ApiError::invalid("Invalid keys: must be an array of strings"))?;
        self.check_batch_len(items.len())?;
        self.batch_query(&items)
    }

    fn check_batch_len(&self, n: usize) -> Result<(), ApiError> {
        let max = self.master.config.max_batch_keys;
        if n > max {
            return Err(ApiError::InvalidParams(format!("Too many keys: {n} exceeds the limit of {max}").into()));
        }
        Ok(())
    }

    /// The common part of both batch forms: key rules, de-duplication, lookups (all under
    /// one read lock of the store).
    fn batch_query(&self, items: &[&[u8]]) -> Result<Response, ApiError> {
        let keys = items.iter().map(|k| validate_key(k)).collect::<Result<Vec<&str>, _>>()?;
        // De-duplication set of this request only (at most --max-batch-keys entries): seeded
        // foldhash, several times faster than SipHash on short keys; the store's persistent
        // index of client keys keeps SipHash.
        let cap = if keys.len() > 8 { keys.len() } else { 0 };
        let mut seen = HashSet::with_capacity_and_hasher(cap, foldhash::quality::RandomState::default());
        let mut unique = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let dup = if keys.len() > 8 { !seen.insert(*key) } else { keys[..i].contains(key) };
            if !dup {
                unique.push(*key);
            }
        }
        let mut out = Vec::with_capacity(32 + unique.len() * 160);
        out.extend_from_slice(b"{\"success\":true,\"data\":{");
        self.master.store.query_keys_with(&unique, |i, replicas| {
            if i > 0 {
                out.push(b',');
            }
            push_str(&mut out, unique[i]);
            match replicas {
                Ok(replicas) => {
                    out.extend_from_slice(b":{\"ok\":true,\"values\":[");
                    for (j, r) in replicas.iter().enumerate() {
                        if j > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(b"{\"transport_endpoint_\":");
                        push_str(&mut out, r.endpoint);
                        out.extend_from_slice(b",\"buffer_descriptor\":");
                        push_descriptor(&mut out, r);
                        out.push(b'}');
                    }
                    out.extend_from_slice(b"]}");
                }
                Err(QueryError::NotFound) => out.extend_from_slice(br#":{"ok":false,"error":"OBJECT_NOT_FOUND"}"#),
                Err(QueryError::NotReady) => out.extend_from_slice(br#":{"ok":false,"error":"REPLICA_IS_NOT_READY"}"#),
            }
        });
        out.extend_from_slice(b"}}");
        Ok(json_reply(200, out))
    }

    /// `GET /get_all_keys[?prefix=&after=&limit=]` (SPEC §4.5): a streamed body.
    pub(super) fn get_all_keys(&self, head: &crate::http::RequestHead) -> Result<Response, ApiError> {
        let q = head.query.as_deref();
        let limit = match query_param(q, "limit") {
            None => u64::MAX,
            Some(raw) => params::parse_limit(&raw).ok_or(ApiError::invalid("Invalid limit parameter"))?,
        };
        let prefix = query_param(q, "prefix").map(|p| p.into_owned()).unwrap_or_default();
        let after = query_param(q, "after").map(|a| a.into_owned());
        let stream = KeyStream::new(self.master.store.clone(), prefix, after, limit);
        Ok(Response::with_body(200, CT_TEXT, Body::Stream(Box::new(stream))))
    }

    /// `GET /get_all_segments` (SPEC §4.6).
    pub(super) fn get_all_segments(&self) -> Response {
        let names = self.master.store.mounted_node_names();
        let mut out = Vec::with_capacity(names.iter().map(|n| n.len() + 1).sum());
        for n in &names {
            out.extend_from_slice(n.as_bytes());
            out.push(b'\n');
        }
        text_reply(200, out)
    }

    /// `GET /query_segment?segment=NAME` (SPEC §4.7).
    pub(super) fn query_segment(&self, head: &crate::http::RequestHead) -> Result<Response, ApiError> {
        let name = query_param(head.query.as_deref(), "segment")
            .ok_or(ApiError::invalid("Missing segment query parameter"))?;
        // Node names are text: a name that is not UTF-8 matches no segment.
        let text = std::str::from_utf8(&name).map_err(|_| ApiError::SegmentNotFound)?;
        let (used, cap) = self.master.store.query_segment(text).ok_or(ApiError::SegmentNotFound)?;
        let mut out = Vec::with_capacity(name.len() + 64);
        out.extend_from_slice(&name);
        out.extend_from_slice(b"\nUsed(bytes): ");
        push_u64(&mut out, used);
        out.extend_from_slice(b"\nCapacity(bytes): ");
        push_u64(&mut out, cap);
        out.push(b'\n');
        Ok(text_reply(200, out))
    }

    /// `GET /get_segments_detail` (SPEC §4.8).
    pub(super) fn get_segments_detail(&self) -> Response {
        let segs = self.master.store.segments();
        let mut out = Vec::with_capacity(48 + segs.len() * 420);
        out.extend_from_slice(b"{\"total_segments\":");
        push_u64(&mut out, segs.len() as u64);
        out.extend_from_slice(b",\"segments\":[");
        for (i, s) in segs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"segment_name\":");
            push_str(&mut out, &s.name);
            out.extend_from_slice(b",\"segment_id\":\"");
            params::push_uuid(&mut out, s.id);
            out.extend_from_slice(b"\",\"client_id\":\"");
            params::push_uuid(&mut out, s.client_id);
            out.extend_from_slice(format!("\",\"base_address\":\"0x{:x}\",\"size_bytes\":", s.base_address).as_bytes());
            push_u64(&mut out, s.size);
            out.extend_from_slice(b",\"size_human\":");
            push_str(&mut out, &size_human(s.size));
            out.extend_from_slice(b",\"te_endpoint\":");
            push_str(&mut out, &s.te_endpoint);
            out.extend_from_slice(b",\"protocol\":\"");
            out.extend_from_slice(s.protocol.as_str().as_bytes());
            out.extend_from_slice(b"\",\"status\":\"");
            out.extend_from_slice(s.status.as_str().as_bytes());
            if let Some(d) = s.drain {
                // Only while a drain job has the segment (docs/api.md §4.13).
                out.extend_from_slice(b"\",\"drain_status\":\"");
                out.extend_from_slice(d.as_bytes());
            }
            out.extend_from_slice(b"\",\"allocator_used_bytes\":");
            push_u64(&mut out, s.used);
            out.extend_from_slice(b",\"allocator_capacity_bytes\":");
            push_u64(&mut out, s.size);
            out.extend_from_slice(b",\"allocator_usage_percent\":");
            let pct = if s.used == 0 || s.size == 0 { 0.0 } else { s.used as f64 * 100.0 / s.size as f64 };
            json::push_f64(&mut out, pct);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        json_reply(200, out)
    }
}

/// Maps a replica query failure.
fn query_error(e: QueryError) -> ApiError {
    match e {
        QueryError::NotFound => ApiError::ObjectNotFound,
        QueryError::NotReady => ApiError::ReplicaNotReady,
    }
}

/// The body of `/get_all_keys`: pages through [`Store::visit_keys`] lazily, continuing
/// after the last key seen (so a HEAD costs nothing); a chunk holds pages up to
/// [`CHUNK_BYTES`], and the lock is released between pages.
///
/// `prefix` and `after` are byte strings; when they are not UTF-8 the store is asked with
/// their longest valid UTF-8 prefix and the result is filtered here by bytes.
pub(crate) struct KeyStream {
    store: Arc<Store>,
    prefix: Vec<u8>,
    /// The UTF-8 part of `prefix` given to the store.
    store_prefix: String,
    /// Only keys strictly greater than this (bytes).
    after: Option<Vec<u8>>,
    /// Where the next store page starts (exclusive).
    cursor: Option<String>,
    remaining: u64,
    done: bool,
}

/// The longest prefix of `b` that is valid UTF-8.
fn utf8_prefix(b: &[u8]) -> &str {
    match std::str::from_utf8(b) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or_default(),
    }
}

impl KeyStream {
    /// A stream of at most `limit` keys starting with `prefix`, strictly after `after`.
    pub(crate) fn new(store: Arc<Store>, prefix: Vec<u8>, after: Option<Vec<u8>>, limit: u64) -> Self {
        let store_prefix = utf8_prefix(&prefix).to_string();
        // The store cursor starts at the UTF-8 part of `after`: every key > after is > it.
        let cursor = after.as_deref().map(|a| utf8_prefix(a).to_string());
        Self { store, prefix, store_prefix, after, cursor, remaining: limit, done: limit == 0 }
    }

    /// Appends one page of keys to `out`.
    fn page(&mut self, out: &mut Vec<u8>) {
        let want = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(KEYS_PER_PAGE);
        // Byte filters are needed only when the store could not be asked exactly.
        let filter_prefix = self.prefix.len() != self.store_prefix.len();
        let prefix = self.prefix.as_slice();
        let after = self.after.as_deref().filter(|a| std::str::from_utf8(a).is_err());
        let (mut remaining, mut done) = (self.remaining, false);
        let (seen, last) = self.store.visit_keys(&self.store_prefix, self.cursor.as_deref(), want, |key| {
            if done {
                return;
            }
            let k = key.as_bytes();
            if filter_prefix && !k.starts_with(prefix) {
                if k > prefix {
                    // Sorted: no later key can start with the prefix.
                    done = true;
                }
                return;
            }
            if after.is_some_and(|a| k <= a) {
                return;
            }
            out.extend_from_slice(k);
            out.push(b'\n');
            remaining -= 1;
            if remaining == 0 {
                done = true;
            }
        });
        self.remaining = remaining;
        self.done = done || seen < want;
        if last.is_some() {
            self.cursor = last;
        }
    }
}

impl BodyStream for KeyStream {
    fn next_chunk(&mut self, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        while !self.done && out.len() - start < CHUNK_BYTES {
            self.page(out);
        }
        !self.done
    }
}
