//! The batch encoding against routing.md §1.4-§1.6, decoded with an independent msgpack
//! reader, and the queue's drop-oldest accounting.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rmpv::Value;

use super::*;

fn ev(kind: KvEventKind, key: &str) -> KvEvent {
    KvEvent { kind, key: Arc::from(key) }
}

fn decode(p: &[u8]) -> Value {
    let mut r = p;
    let v = rmpv::decode::read_value(&mut r).unwrap();
    assert!(r.is_empty(), "trailing bytes");
    v
}

fn map_keys(v: &Value) -> Vec<String> {
    v.as_map().unwrap().iter().map(|(k, _)| k.as_str().unwrap().to_string()).collect()
}

fn get<'a>(v: &'a Value, k: &str) -> &'a Value {
    &v.as_map().unwrap().iter().find(|(key, _)| key.as_str() == Some(k)).unwrap_or_else(|| panic!("no {k}")).1
}

fn publisher(legacy: bool, object_key: bool) -> KvPublisher {
    let cfg = KvEventConfig { backend_id: "be-1".into(), emit_legacy_compat: legacy, emit_object_key: object_key };
    KvPublisher::new(cfg, Arc::new(KvStats::default()))
}

#[test]
fn a_batch_has_upstreams_shape_order_and_types() {
    let mut p = publisher(true, true);
    let b = p
        .encode_batch(
            &[ev(KvEventKind::Stored, "42"), ev(KvEventKind::Removed, "0xFFFFFFFFFFFFFFFF")],
            0,
            1_700_000_000_123,
        )
        .unwrap();
    assert_eq!(b.seq, 1);
    // The batch time is a uint64 (0xcf) as msgpack-c packs upstream's int64.
    assert_eq!(&b.payload[..2], &[0x93, 0xcf]);
    let v = decode(&b.payload);
    let a = v.as_array().unwrap();
    assert_eq!(a[0].as_u64(), Some(1_700_000_000_123));
    assert_eq!(a[2].as_u64(), Some(0));
    let events = a[1].as_array().unwrap();
    assert_eq!(
        map_keys(&events[0]),
        [
            "event_id",
            "timestamp",
            "event_type",
            "type",
            "model_name",
            "block_size",
            "additional_salt",
            "lora_name",
            "tenant_id",
            "backend_id",
            "group_id",
            "medium",
            "dp_rank",
            "object_key",
            "seq_hashes",
            "block_hashes",
            "base_block_idx",
            "parent_hash",
            "token_ids",
            "parent_block_hash"
        ]
    );
    assert_eq!(map_keys(&events[1]).len(), 17);
    let s = &events[0];
    assert_eq!(get(s, "event_id").as_u64(), Some(1));
    assert_eq!(get(s, "event_type").as_str(), Some("stored"));
    assert_eq!(get(s, "type").as_str(), Some("BlockStored"));
    assert_eq!(get(s, "tenant_id").as_str(), Some("default"));
    assert_eq!(get(s, "backend_id").as_str(), Some("be-1"));
    assert_eq!(get(s, "medium").as_str(), Some("cpu"));
    assert!(get(s, "model_name").is_nil() && get(s, "group_id").is_nil() && get(s, "dp_rank").is_nil());
    assert_eq!(get(s, "seq_hashes").as_array().unwrap()[0].as_u64(), Some(42));
    assert_eq!(get(s, "base_block_idx").as_u64(), Some(0));
    let r = &events[1];
    assert_eq!(get(r, "event_id").as_u64(), Some(2));
    assert_eq!(get(r, "type").as_str(), Some("BlockRemoved"));
    assert_eq!(get(r, "seq_hashes").as_array().unwrap()[0].as_u64(), Some(u64::MAX));
    // block_hashes: the same hash as a signed int64.
    assert_eq!(get(r, "block_hashes").as_array().unwrap()[0].as_i64(), Some(-1));
    assert!(get(r, "base_block_idx").is_nil());
    // The message: empty topic, 8-byte big-endian sequence, payload.
    let m = b.message();
    assert_eq!(&m[..2], &[0x01, 0x00]);
    assert_eq!(&m[2..12], &[0x01, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
}

#[test]
fn map_sizes_follow_the_compat_flags() {
    for (legacy, key, stored, removed) in
        [(true, true, 20, 17), (true, false, 19, 16), (false, true, 17, 15), (false, false, 16, 14)]
    {
        let mut p = publisher(legacy, key);
        let b = p.encode_batch(&[ev(KvEventKind::Stored, "1"), ev(KvEventKind::Removed, "2")], 0, 5).unwrap();
        let v = decode(&b.payload);
        let e = v.as_array().unwrap()[1].as_array().unwrap();
        assert_eq!((map_keys(&e[0]).len(), map_keys(&e[1]).len()), (stored, removed), "{legacy} {key}");
    }
}

#[test]
fn unparsed_keys_are_sent_with_empty_hashes_or_dropped() {
    let mut p = publisher(true, true);
    let b = p.encode_batch(&[ev(KvEventKind::Stored, "model@tp_rank:0@abc")], 0, 5).unwrap();
    let v = decode(&b.payload);
    let e = &v.as_array().unwrap()[1].as_array().unwrap()[0];
    assert_eq!(get(e, "object_key").as_str(), Some("model@tp_rank:0@abc"));
    assert!(get(e, "seq_hashes").as_array().unwrap().is_empty());
    assert_eq!(p.stats().skipped_unparsed_keys.load(Ordering::Relaxed), 1);
    // Without object_key such an event is dropped, and a batch of only those takes no seq.
    let mut q = publisher(true, false);
    assert_eq!(q.encode_batch(&[ev(KvEventKind::Stored, "nope")], 0, 5), None);
    assert_eq!(q.encode_batch(&[ev(KvEventKind::Stored, "7")], 0, 5).unwrap().seq, 1);
}

#[test]
fn seq_hash_parsing_is_upstreams() {
    for (k, want) in [
        ("12345", Some(12345)),
        ("0x2a", Some(42)),
        ("0XFF", Some(255)),
        ("+7", Some(7)),
        ("  9", Some(9)),
        ("-1", Some(u64::MAX)),
        ("18446744073709551616", None),
        ("123abc", None),
        ("0x", None),
        ("0xzz", None),
        ("", None),
        ("not-a-hash", None),
    ] {
        assert_eq!(parse_seq_hash(k), want, "{k:?}");
    }
}

#[test]
fn dropped_events_leave_a_sequence_gap_and_are_counted() {
    let mut q = KvQueue::new(3);
    for i in 0..5 {
        q.push(ev(KvEventKind::Stored, &i.to_string()));
    }
    let (events, dropped) = q.take(MAX_BATCH);
    assert_eq!(dropped, 2);
    assert_eq!(events.iter().map(|e| &*e.key).collect::<Vec<_>>(), ["2", "3", "4"]);
    let mut p = publisher(true, true);
    assert_eq!(p.encode_batch(&events[..1], 0, 1).unwrap().seq, 1);
    assert_eq!(p.encode_batch(&events[1..], dropped, 1).unwrap().seq, 4, "two numbers reserved");
    let s = p.stats();
    assert_eq!(s.dropped_events.load(Ordering::Relaxed), 2);
    assert_eq!(s.published_batches.load(Ordering::Relaxed), 2);
    assert_eq!(s.published_events.load(Ordering::Relaxed), 3);
    assert_eq!(
        String::from_utf8(s.status_json()).unwrap(),
        r#"{"enabled":false,"published_batches":2,"published_events":3,"dropped_events":2,"skipped_unparsed_keys":0}"#
    );
    // Unbounded queue.
    let mut u = KvQueue::new(0);
    for i in 0..100 {
        u.push(ev(KvEventKind::Removed, &i.to_string()));
    }
    assert_eq!(u.take(1000).1, 0);
}
