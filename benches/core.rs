//! Microbenchmarks of the sans-IO core (issue 5, docs/benchmarks.md).
//!
//! Each "request" benchmark drives one keep-alive [`mc_core::http::Connection`] with the
//! real [`mc_core::Service`] of a [`Master`] built over [`FakePlatform`]: it feeds the bytes
//! of one request, then drains `poll_transmit`/`consume` until the response is out. That is
//! parse + route + handle + render, with no socket and no syscall.
//!
//! ```text
//! cargo bench --bench core                  # everything (about 3 minutes)
//! cargo bench --bench core -- request/      # one group
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mc_core::api::ApiRequest;
use mc_core::http::Connection;
use mc_core::platform::FakePlatform;
use mc_core::{Config, Listener, Master, Now, Service};

const SEGMENT: u64 = 1 << 30;
const VALUE: [u8; 64] = [b'v'; 64];

fn now() -> Now {
    Now::new(Instant::now(), 1_790_000_000)
}

fn key(i: usize) -> String {
    format!("key-{i:07}")
}

/// A master with a mounted segment and `keys` 64-byte values `key-0000000`...
fn master(keys: usize) -> (Arc<Master>, Service) {
    let t = now();
    let master = Master::new(Config::default(), Arc::new(FakePlatform::new(7)), t);
    master.mount_startup_segment(t, SEGMENT).expect("mount");
    for i in 0..keys {
        master.store().put(t.mono, &key(i), &VALUE).expect("preload");
    }
    let service = Service::new(master.clone(), Listener::Main, master.register_worker());
    (master, service)
}

/// Feeds one request and drains the response; returns the response size.
fn exchange(conn: &mut Connection<ApiRequest>, svc: &mut Service, t: Now, req: &[u8]) -> usize {
    conn.handle_input(t, req, svc);
    let mut n = 0;
    while let Some(out) = conn.poll_transmit() {
        let len = out.len();
        black_box(out);
        n += len;
        conn.consume(t, len, svc);
    }
    n
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\n\r\n").into_bytes()
}

fn put_json(key: &str) -> Vec<u8> {
    let body = format!(r#"{{"key":"{key}","value":"{}"}}"#, "v".repeat(64));
    format!(
        "PUT /api/put HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn put_raw(key: &str) -> Vec<u8> {
    let mut r =
        format!("PUT /api/put/{key} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 64\r\n\r\n").into_bytes();
    r.extend_from_slice(&VALUE);
    r
}

/// Checks that `req` is answered with `status` before timing it.
fn check(conn: &mut Connection<ApiRequest>, svc: &mut Service, req: &[u8], status: &str) {
    let t = now();
    conn.handle_input(t, req, svc);
    let mut resp = Vec::new();
    while let Some(out) = conn.poll_transmit() {
        resp.extend_from_slice(out);
        let n = out.len();
        conn.consume(t, n, svc);
    }
    let line = String::from_utf8_lossy(&resp[..resp.len().min(40)]).into_owned();
    assert!(line.starts_with(&format!("HTTP/1.1 {status}")), "unexpected response: {line}");
}

/// Requests cycled through by one benchmark (different keys on consecutive requests).
fn bench_requests(c: &mut Criterion, name: &str, reqs: &[Vec<u8>], status: &str, svc_keys: usize) {
    let (_master, mut svc) = master(svc_keys);
    let mut conn = svc.new_connection(now());
    check(&mut conn, &mut svc, &reqs[0], status);
    let mut i = 0;
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let t = now();
            let start = Instant::now();
            for _ in 0..iters {
                exchange(&mut conn, &mut svc, t, &reqs[i % reqs.len()]);
                i += 1;
            }
            start.elapsed()
        })
    });
}

fn requests(c: &mut Criterion) {
    const KEYS: usize = 10_000;
    bench_requests(c, "request/health", &[get("/health")], "200", KEYS);
    let q: Vec<_> = (0..KEYS).step_by(7).map(|i| get(&format!("/query_key?key={}", key(i)))).collect();
    bench_requests(c, "request/query_key", &q, "200", KEYS);
    let batch = |n: usize| -> Vec<Vec<u8>> {
        (0..64)
            .map(|j| {
                let keys: Vec<String> = (0..n).map(|i| key((j * 7919 + i * 104_729) % KEYS)).collect();
                get(&format!("/batch_query_keys?keys={}", keys.join(",")))
            })
            .collect()
    };
    bench_requests(c, "request/batch_query_keys_10", &batch(10), "200", KEYS);
    bench_requests(c, "request/batch_query_keys_100", &batch(100), "200", KEYS);
    bench_requests(c, "request/metrics", &[get("/metrics")], "200", KEYS);
    bench_requests(c, "request/get_segments_detail", &[get("/get_segments_detail")], "200", KEYS);
    let g: Vec<_> = (0..KEYS).step_by(7).map(|i| get(&format!("/api/get/{}", key(i)))).collect();
    bench_requests(c, "request/get_64B", &g, "200", KEYS);
    let e: Vec<_> = (0..KEYS).step_by(7).map(|i| get(&format!("/api/exist/{}", key(i)))).collect();
    bench_requests(c, "request/exist", &e, "200", KEYS);
    bench_puts(c, "request/put_json_64B", put_json);
    bench_puts(c, "request/put_raw_64B", put_raw);
}

/// PUT of a new key per request; the store is emptied outside the timed part now and then.
fn bench_puts(c: &mut Criterion, name: &str, make: fn(&str) -> Vec<u8>) {
    const BATCH: usize = 50_000;
    let (master, mut svc) = master(0);
    let mut conn = svc.new_connection(now());
    check(&mut conn, &mut svc, &make("warm-up"), "200");
    let reqs: Vec<Vec<u8>> = (0..BATCH).map(|i| make(&format!("put-{i:07}"))).collect();
    let mut i = 0;
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                if i == BATCH {
                    master.store().remove_all(now().mono);
                    i = 0;
                }
                let n = left.min((BATCH - i) as u64);
                let t = now();
                let start = Instant::now();
                for _ in 0..n {
                    exchange(&mut conn, &mut svc, t, &reqs[i]);
                    i += 1;
                }
                total += start.elapsed();
                left -= n;
            }
            total
        })
    });
}

/// `/get_all_keys` with 100k keys: render and drain the whole streamed body.
fn get_all_keys(c: &mut Criterion) {
    let mut g = c.benchmark_group("get_all_keys");
    g.sample_size(20);
    for keys in [10_000usize, 100_000] {
        let (_master, mut svc) = master(keys);
        let mut conn = svc.new_connection(now());
        let req = get("/get_all_keys");
        check(&mut conn, &mut svc, &req, "200");
        g.throughput(Throughput::Elements(keys as u64));
        g.bench_function(format!("{}k_keys", keys / 1000), |b| {
            b.iter(|| exchange(&mut conn, &mut svc, now(), &req));
        });
    }
    g.finish();
}

/// Allocator and object bookkeeping through the Store API (the allocator is private):
/// mixes of puts of assorted sizes and removes, on a store that is kept part full.
fn allocator(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    // Sizes between 64 B and 64 KiB (a deterministic LCG keeps runs comparable).
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        seed >> 33
    };
    let sizes: Vec<usize> = (0..4096).map(|_| 64 + (next() as usize % (64 * 1024 - 64))).collect();
    let victims: Vec<usize> = (0..4096).map(|_| next() as usize).collect();
    let big = vec![0u8; 64 * 1024];
    const LIVE: usize = 2048;

    // A 64-byte put of a new key through the Store alone (no HTTP, no JSON): the store's
    // share of `request/put_*`. Emptied outside the timed part every 50k puts.
    g.throughput(Throughput::Elements(1));
    g.bench_function("put_64B", |b| {
        const BATCH: usize = 50_000;
        let (master, _svc) = master(0);
        let store = master.store().clone();
        let names: Vec<String> = (0..BATCH).map(|i| format!("put-{i:07}")).collect();
        let mut i = 0;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                if i == BATCH {
                    store.remove_all(now().mono);
                    i = 0;
                }
                let n = left.min((BATCH - i) as u64);
                let t = now().mono;
                let start = Instant::now();
                for _ in 0..n {
                    store.put(t, &names[i], &VALUE).expect("put");
                    i += 1;
                }
                total += start.elapsed();
                left -= n;
            }
            total
        })
    });
    // Replace a random live object with one of another size: one free, one allocation.
    let mut churn = |name: &str, size_of: &dyn Fn(usize) -> usize| {
        g.throughput(Throughput::Elements(2));
        g.bench_function(name, |b| {
            let (master, _svc) = master(0);
            let store = master.store().clone();
            let t = now().mono;
            let mut names: Vec<String> = (0..LIVE).map(|i| format!("obj-{i}")).collect();
            for (i, n) in names.iter().enumerate() {
                store.put(t, n, &big[..size_of(i)]).expect("put");
            }
            let mut i = 0usize;
            b.iter(|| {
                let slot = victims[i % victims.len()] % LIVE;
                store.remove(t, &names[slot]).expect("remove");
                names[slot].clear();
                names[slot].push_str(&format!("obj-{slot}-{i}"));
                store.put(t, &names[slot], &big[..size_of(i)]).expect("put");
                i += 1;
            });
        });
    };
    churn("remove_put_64B", &|_| 64);
    churn("remove_put_64B_to_64KiB", &|i| sizes[i % sizes.len()]);
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = requests, get_all_keys, allocator
}
criterion_main!(benches);
