//! The etcd harness of the high-availability tests (`tests/common/etcd.rs`) against the real
//! etcd: it starts, answers ranges through the JSON gateway, and a restart keeps its ports
//! and its keys. Skips (prints why, passes) without `/usr/bin/etcd`; fails in CI.

mod common;

use std::time::Duration;

use common::etcd::{etcd_or_skip, master_view_key};

#[test]
fn etcd_starts_serves_the_gateway_and_restarts_with_its_keys() {
    let Some(mut etcd) = etcd_or_skip("etcd_starts_serves_the_gateway_and_restarts_with_its_keys") else {
        return;
    };
    assert!(etcd.endpoint().starts_with("127.0.0.1:"), "{}", etcd.endpoint());
    assert!(etcd.healthy());

    let key = master_view_key("mooncake_cluster/");
    assert_eq!(key, "mooncake-store/mooncake_cluster/master_view");
    assert_eq!(etcd.get(&key), None);
    etcd.put(&key, b"127.0.0.1:50051");
    let kv = etcd.get(&key).expect("the key just written");
    assert_eq!(kv.text(), "127.0.0.1:50051");
    assert_eq!(kv.lease, 0);
    assert!(kv.create_revision > 0 && kv.mod_revision == kv.create_revision, "{kv:?}");
    assert_eq!(etcd.master_view("mooncake_cluster").as_deref(), Some("127.0.0.1:50051"));
    // Bytes that are not UTF-8 come back as they were.
    etcd.put("bin", &[0, 255, 1, 254]);
    assert_eq!(etcd.get("bin").unwrap().value, vec![0, 255, 1, 254]);

    let endpoint = etcd.endpoint();
    etcd.stop();
    assert!(!etcd.is_running());
    assert!(etcd.try_get(&key).is_err(), "a stopped etcd answered");
    etcd.restart();
    assert_eq!(etcd.endpoint(), endpoint);
    assert_eq!(etcd.master_view("mooncake_cluster").as_deref(), Some("127.0.0.1:50051"));
    assert_eq!(etcd.delete(&key), 1);
    assert!(etcd.wait_master_view("mooncake_cluster", Duration::from_millis(200), |_| true).is_none());

    // A restart while running (SIGTERM, same data directory).
    etcd.put("k", b"v");
    etcd.restart();
    assert_eq!(etcd.get_text("k").as_deref(), Some("v"));
}
