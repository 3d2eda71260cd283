//! (d) The JSON and query input layer through the HTTP API: request bodies for every
//! POST/PUT route and query strings / path keys for every GET/DELETE route, handed to the
//! real `Service` (the `Handler` the codec calls) on a master with a mounted segment.
//!
//! Checks: no panic; only documented statuses; every JSON response parses and has the error
//! shape of its route; a body that serde_json rejects as invalid JSON is answered
//! `Malformed JSON body`; `/get_all_keys` streams strictly ascending lines; nothing leaks.
//!
//! Input: byte 0 selects the route; byte 1 selects the mode: even = the rest of the input is
//! one raw body / query (seeds are real requests), odd = the rest is decoded with `arbitrary`
//! as a sequence of (route, generated JSON document) requests whose member names and strings
//! come from the API's vocabulary (including the ids of the segments mounted at that moment).
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use mc_core::api::{CT_JSON, CT_TEXT};
use mc_core::http::{Body, Handler, HeadDecision, Method, RequestHead, Response, Version};
use mc_core::{Master, Service};
use mc_fuzz::{at, config, master, wind_down, SHM_NAME};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// JSON request body.
    Json,
    /// Raw request body (`PUT /api/put/{key}`), path key from the input's first bytes.
    Raw,
    /// The input is the query string.
    Query(&'static str),
    /// The input is the `{key}` path segment.
    PathKey,
}

const ROUTES: &[(Method, &str, Kind)] = &[
    (Method::Post, "/api/mount", Kind::Json),
    (Method::Post, "/api/mount_shm", Kind::Json),
    (Method::Post, "/api/unmount", Kind::Json),
    (Method::Post, "/api/unmount_shm", Kind::Json),
    (Method::Put, "/api/put", Kind::Json),
    (Method::Post, "/batch_query_keys", Kind::Json),
    (Method::Get, "/query_key", Kind::Query("key=")),
    (Method::Get, "/batch_query_keys", Kind::Query("keys=")),
    (Method::Get, "/get_all_keys", Kind::Query("")),
    (Method::Get, "/query_segment", Kind::Query("segment=")),
    (Method::Get, "/api/get/", Kind::PathKey),
    (Method::Head, "/api/get/", Kind::PathKey),
    (Method::Get, "/api/exist/", Kind::PathKey),
    (Method::Delete, "/api/remove/", Kind::PathKey),
    (Method::Put, "/api/put/", Kind::Raw),
    (Method::Get, "/health", Kind::Query("")),
];

/// Member names and strings the API knows.
const WORDS: &[&str] = &[
    "size",
    "name",
    "offset",
    "protocol",
    "location",
    "segment_ids",
    "grace_period_seconds",
    "key",
    "value",
    "keys",
    "tcp",
    "rdma",
    SHM_NAME,
    "/seg",
    "k",
    "a,b",
    "",
    "..",
    "a/b",
    "00000000-0000-0000-0000-000000000000",
];

#[derive(Arbitrary, Debug)]
enum Doc {
    Null,
    Bool(bool),
    Int(u64),
    SmallInt(u16),
    Neg(i64),
    Float(f64),
    Exp(u8),
    Word(u8),
    SegmentId(u8),
    Str(String),
    Array(Vec<Doc>),
    Object(Vec<(Name, Doc)>),
}

#[derive(Arbitrary, Debug)]
enum Name {
    Word(u8),
    Str(String),
}

fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

impl Doc {
    fn render(&self, out: &mut String, ids: &[String], depth: usize) {
        if depth > 40 {
            out.push_str("null");
            return;
        }
        match self {
            Doc::Null => out.push_str("null"),
            Doc::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Doc::Int(n) => out.push_str(&n.to_string()),
            Doc::SmallInt(n) => out.push_str(&(u64::from(*n) * 4096).to_string()),
            Doc::Neg(n) => out.push_str(&n.to_string()),
            Doc::Float(f) if f.is_finite() => out.push_str(&format!("{f:?}")),
            Doc::Float(_) => out.push_str("1.5"),
            Doc::Exp(e) => out.push_str(&format!("1e{e}")),
            Doc::Word(i) => push_json_str(out, WORDS[usize::from(*i) % WORDS.len()]),
            Doc::SegmentId(i) if ids.is_empty() => push_json_str(out, &format!("id-{i}")),
            Doc::SegmentId(i) => {
                let id = &ids[usize::from(*i) % ids.len()];
                // Ids are compared case-insensitively.
                if i % 2 == 0 {
                    push_json_str(out, id)
                } else {
                    push_json_str(out, &id.to_uppercase())
                }
            }
            Doc::Str(s) => push_json_str(out, s),
            Doc::Array(items) => {
                out.push('[');
                for (i, d) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    d.render(out, ids, depth + 1);
                }
                out.push(']');
            }
            Doc::Object(members) => {
                out.push('{');
                for (i, (n, d)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    match n {
                        Name::Word(w) => push_json_str(out, WORDS[usize::from(*w) % 10]),
                        Name::Str(s) => push_json_str(out, s),
                    }
                    out.push(':');
                    d.render(out, ids, depth + 1);
                }
                out.push('}');
            }
        }
    }
}

/// Percent-encodes what a request target cannot carry raw (and, in a path key, `/` and `?`),
/// keeping `%`, `+`, `&` and `=` raw so that decoding and splitting are exercised.
fn encode(input: &[u8], path: bool) -> String {
    let mut out = String::with_capacity(input.len() * 3);
    for &b in input {
        let raw = b.is_ascii_graphic() && b != b'#' && !(path && (b == b'/' || b == b'?'));
        if raw {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn head(method: Method, path: String, query: Option<String>, body_len: usize) -> RequestHead {
    RequestHead {
        method,
        path,
        query,
        version: Version::Http11,
        headers: Vec::new(),
        content_length: Some(body_len as u64),
        chunked: false,
        expect_continue: false,
    }
}

/// Runs one request through the handler the way the codec does.
fn call(svc: &mut Service, route: usize, input: &[u8]) {
    let now = at(Duration::ZERO);
    let (method, path, kind) = ROUTES[route % ROUTES.len()];
    let (h, body): (RequestHead, &[u8]) = match kind {
        Kind::Json => (head(method, path.into(), None, input.len()), input),
        Kind::Query(name) => (head(method, path.into(), Some(format!("{name}{}", encode(input, false))), 0), &[]),
        Kind::PathKey => (head(method, format!("{path}{}", encode(input, true)), None, 0), &[]),
        Kind::Raw => {
            let split = input.iter().position(|&b| b == b'\n').unwrap_or(input.len().min(4));
            let (k, v) = input.split_at(split);
            (head(method, format!("{path}{}", encode(k, true)), None, v.len()), v)
        }
    };
    let mut req = svc.route(&h);
    let resp = match svc.on_head(now, &h, &mut req) {
        HeadDecision::Buffer => svc.on_request(now, &h, &mut req, body),
        HeadDecision::Stream => match svc.on_body(now, &mut req, body) {
            Some(r) => r,
            None => svc.on_request(now, &h, &mut req, &[]),
        },
        HeadDecision::Respond(r) | HeadDecision::RespondNow(r) => r,
    };
    check(&h, kind, body, resp);
}

fn check(h: &RequestHead, kind: Kind, body: &[u8], resp: Response) {
    let what = || format!("{:?} {}?{:?} body {:?}", h.method, h.path, h.query, String::from_utf8_lossy(body));
    let status = resp.status;
    assert!([200, 400, 404, 409, 507].contains(&status), "status {status} for {}: {:?}", what(), resp.body);
    let bytes: Vec<u8> = match resp.body {
        Body::Empty => Vec::new(),
        Body::Bytes(b) => b,
        Body::Value(v) => {
            assert!(h.path.starts_with("/api/get/"), "a value body from {}", h.path);
            v.bytes().to_vec()
        }
        // Only a cluster-mode master (not fuzzed here) answers later.
        Body::Pending(_) => panic!("a pending body from {}", what()),
        Body::Stream(mut s) => {
            let mut out = Vec::new();
            let mut pieces = 0;
            while s.next_chunk(&mut out) {
                pieces += 1;
                assert!(pieces < 100_000, "a stream that does not end");
            }
            let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
            assert_eq!(lines.last(), Some(&&b""[..]), "listing does not end with a newline");
            let keys = &lines[..lines.len() - 1];
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "listing not strictly ascending: {keys:?}");
            out
        }
    };
    if resp.content_type == Some(CT_JSON) {
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("invalid JSON response ({e}) for {}: {:?}", what(), String::from_utf8_lossy(&bytes))
        });
        let obj = v.as_object().unwrap_or_else(|| panic!("JSON response is not an object: {v}"));
        if status >= 400 {
            match h.path.as_str() {
                "/query_key" => {
                    assert_eq!(obj.get("success"), Some(&serde_json::Value::Bool(false)), "{v}");
                    assert!(obj.get("error_code").is_some_and(|c| c.is_i64()), "{v}");
                    assert!(obj.get("error_message").is_some_and(|c| c.is_string()), "{v}");
                }
                "/batch_query_keys" => {
                    assert_eq!(obj.get("success"), Some(&serde_json::Value::Bool(false)), "{v}");
                    assert!(obj.get("error").is_some_and(|c| c.is_string()), "{v}");
                }
                _ => assert!(obj.get("error").is_some_and(|c| c.is_string()), "{v}"),
            }
        }
        if kind == Kind::Json {
            // A body serde_json rejects must be reported as malformed, except where serde_json
            // is stricter than RFC 8259 / SPEC §1.4: its nesting limit is one level lower than
            // ours, and it refuses numbers beyond f64 (`1e999` is valid JSON).
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(body) {
                let text = e.to_string();
                if !text.contains("recursion limit") && !text.contains("number out of range") {
                    let msg = obj.get("error").and_then(|m| m.as_str());
                    assert_eq!((status, msg), (400, Some("Malformed JSON body")), "serde_json says {e}: {}", what());
                }
            }
        }
    } else if resp.content_type == Some(CT_TEXT) {
        if status >= 400 {
            assert!(
                !bytes.is_empty() && !bytes.contains(&b'\n'),
                "plain error body {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    } else {
        assert!(status == 200 && h.path.starts_with("/api/get/"), "unexpected content type for {}", what());
    }
}

fn segment_ids(master: &Arc<Master>) -> Vec<String> {
    master.store().segments().iter().map(|s| s.id.to_string()).collect()
}

fuzz_target!(|data: &[u8]| {
    let master = master(config());
    let mut svc = mc_core::Service::new(master.clone(), mc_core::Listener::Main, master.register_worker());
    match data {
        [route, mode, rest @ ..] if mode % 2 == 0 => call(&mut svc, usize::from(*route), rest),
        [_, _, rest @ ..] => {
            let mut u = Unstructured::new(rest);
            let mut n = 0;
            while !u.is_empty() && n < 32 {
                let Ok((route, doc)) = <(u8, Doc)>::arbitrary(&mut u) else { break };
                let mut text = String::new();
                doc.render(&mut text, &segment_ids(&master), 0);
                call(&mut svc, usize::from(route), text.as_bytes());
                n += 1;
            }
        }
        _ => return,
    }
    drop(svc);
    wind_down(&master, at(Duration::from_secs(3600)));
});
