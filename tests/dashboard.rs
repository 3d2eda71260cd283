//! The dashboard in a real browser (docs/operations.md "The dashboard"): headless Chromium,
//! driven over WebDriver by Debian's chromedriver, opens `/ui` of a running mc-master with a
//! few segments and keys, and the test checks the rendered DOM against the server's own JSON
//! (`/get_segments_detail`, `/query_key`, `/get_all_keys`), the key lookup and the key list,
//! pause and resume, the `/` of a browser, a screenshot that is not blank, and the
//! "disconnected" state once the server is gone.
//!
//! Needs `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the test
//! fails when `CI` is set and is skipped (with a line saying so) otherwise.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{build_request, for_each_runtime, free_port, unique, Conn, Server, MIB};
use serde_json::{json, Value};

/// A chromedriver process with one browser session.
struct Driver {
    child: Child,
    addr: SocketAddr,
    session: String,
    profile: PathBuf,
}

fn chromium_binary() -> Option<&'static str> {
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"].into_iter().find(|p| Path::new(p).exists())
}

impl Driver {
    /// Starts chromedriver and a headless session, or None when they are not installed.
    fn start() -> Option<Driver> {
        let driver = std::env::var("MC_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let (Some(browser), true) = (chromium_binary(), Path::new(&driver).exists()) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "chromium and chromedriver are required in CI (.ci/run installs chromium chromium-driver)"
            );
            eprintln!("SKIP: chromium or chromedriver not installed (apt-get install chromium chromium-driver)");
            return None;
        };
        let port = free_port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let profile = std::env::temp_dir().join(unique("mc-ui-profile"));
        let mut d = Driver { child, addr, session: String::new(), profile };
        assert!(
            common::wait_until(Duration::from_secs(15), || std::net::TcpStream::connect(addr).is_ok()),
            "chromedriver did not listen"
        );
        // The flags of a closed network: no background connections, no first-run, no GPU.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--window-size=1280,1000",
            &format!("--user-data-dir={}", d.profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": browser, "args": args},
        }}});
        let v = d.call("POST", "/session", Some(caps));
        d.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        Some(d)
    }

    /// One WebDriver command; returns its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut conn = Conn::connect(self.addr);
        conn.send(&build_request(
            method,
            path,
            &[("Host", &self.addr.to_string()), ("Content-Type", "application/json"), ("Connection", "close")],
            body.as_bytes(),
        ));
        let r = conn.read_response();
        let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("{method} {path}: {}", r.text()));
        assert_eq!(r.status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}/{what}", self.session), body)
    }

    fn open(&self, url: &str) {
        self.cmd("POST", "url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page with `args`.
    fn js(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// Waits until `script` returns a truthy value; returns it.
    fn wait(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = self.js(script, json!([]));
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd("POST", "element", Some(json!({"using": "css selector", "value": css})));
        v.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).expect("element id").to_string()
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.cmd("POST", &format!("element/{id}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.cmd("POST", &format!("element/{id}/clear"), Some(json!({})));
        self.cmd("POST", &format!("element/{id}/value"), Some(json!({ "text": text })));
    }

    fn screenshot(&self) -> Vec<u8> {
        let b64 = self.cmd("GET", "screenshot", None);
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.as_str().expect("base64")).expect("PNG")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let mut conn = Conn::connect(self.addr);
            let path = format!("/session/{}", self.session);
            conn.send(&build_request("DELETE", &path, &[("Connection", "close")], b""));
            let _ = conn.try_read_response(false, Duration::from_secs(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Distinct colours in a PNG, and the share of its most common one.
fn colours(png_bytes: &[u8]) -> (usize, f64, (u32, u32)) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let px = info.color_type.samples();
    let mut counts = std::collections::HashMap::new();
    for p in buf[..info.buffer_size()].chunks(px) {
        *counts.entry(p.to_vec()).or_insert(0u64) += 1;
    }
    let total: u64 = counts.values().sum();
    let top = counts.values().copied().max().unwrap_or(0);
    (counts.len(), top as f64 / total.max(1) as f64, (info.width, info.height))
}

const STATE: &str = "return document.querySelector('#conn') && document.querySelector('#conn').dataset.state";

/// A master (RPC on any port, `--admin-port`) and one store node of it with `size` bytes.
fn cluster(size: &str) -> (Server, Server) {
    let m = Server::start(&["--rpc-port", "0", "--admin-port", "0"]);
    let line = m.lines_until(|l| l.starts_with("rpc listening on ")).expect("rpc line");
    let rpc = line.trim_start_matches("rpc listening on ").to_string();
    let n = Server::start(&["--master", &rpc, "--global-segment-size", size, "--threads", "1"]);
    assert!(
        common::wait_until(Duration::from_secs(10), || n.get("/health").status == 200),
        "node never registered: {}",
        n.stderr_tail()
    );
    (m, n)
}

#[test]
fn the_dashboard_shows_the_live_cluster_in_a_browser() {
    for_each_runtime(|rt| {
        let Some(driver) = Driver::start() else { return };
        let (server, node) = cluster("67108864");
        let admin = server.admin.expect("admin listener");
        let first = server.mount(16 * MIB)[0].clone();
        let draining = server.mount(32 * MIB)[0].clone();
        let mut keys: Vec<String> = (0..30).map(|i| format!("user/{i:02}")).collect();
        keys.extend((0..7).map(|i| format!("other-{i}")));
        for (i, k) in keys.iter().enumerate() {
            server.put(k, &"v".repeat(100 + i * 1000));
        }
        // Values written through the store node, placed by the master on its nodes.
        for i in 0..5 {
            let r = node.put_raw(&format!("via-node/{i}"), &vec![b'n'; 256 * 1024]);
            assert_eq!(r.status, 200, "{}", r.text());
            keys.push(format!("via-node/{i}"));
        }
        let r =
            server.post("/api/unmount", &format!("{{\"segment_ids\":[\"{draining}\"],\"grace_period_seconds\":600}}"));
        assert_eq!(r.status, 200, "{}", r.text());
        // Some traffic for the charts: gets, exists, misses, for three windows.
        let load = {
            let addr = server.addr;
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_millis(6500);
                let mut c = Conn::connect(addr);
                let mut i = 0u64;
                while Instant::now() < until {
                    let target = match i % 4 {
                        0 => format!("/api/get/user/{:02}", i % 30),
                        1 => format!("/api/exist/other-{}", i % 7),
                        2 => "/api/get/missing".to_string(),
                        _ => "/health".to_string(),
                    };
                    c.send(&build_request("GET", &target, &[], b""));
                    c.read_response();
                    i += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };

        // A browser's `/` lands on the page; the page on the admin listener works as on the main.
        driver.open(&format!("http://{}/", server.addr));
        assert_eq!(driver.js("return location.pathname", json!([])), "/ui");
        driver.open(&format!("http://{admin}/ui?key=user/03"));
        driver.wait("the first refresh", "return document.body.dataset.loaded === '1'");
        assert_eq!(driver.wait("live", STATE), "live");

        // Segment rows match /get_segments_detail byte for byte.
        let rows = driver.js(
            "return [...document.querySelectorAll('tr.segment')].map(r => ({id: r.dataset.segmentId, \
             status: r.dataset.status, used: Number(r.dataset.used), capacity: Number(r.dataset.capacity), \
             usage: r.querySelector('.usage').textContent}))",
            json!([]),
        );
        let rows = rows.as_array().expect("rows");
        let detail = server.segments();
        assert_eq!(rows.len(), detail.len(), "{rows:?}");
        for seg in &detail {
            let id = seg["segment_id"].as_str().unwrap();
            let row = rows.iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("no row for {id}: {rows:?}"));
            assert_eq!(row["status"], seg["status"], "{id}");
            assert_eq!(row["used"], seg["allocator_used_bytes"], "{id}");
            assert_eq!(row["capacity"], seg["allocator_capacity_bytes"], "{id}");
            assert!(row["usage"].as_str().unwrap().contains('%'), "{row}");
        }
        let status_of = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap()["status"].clone();
        assert_eq!(status_of(&first), "MOUNTED");
        assert_eq!(status_of(&draining), "GRACEFULLY_UNMOUNTING");
        let drain_text = driver.js(
            "return document.querySelector(`tr.segment[data-segment-id='${arguments[0]}']`).textContent",
            json!([draining]),
        );
        assert!(drain_text.as_str().unwrap().contains("draining"), "{drain_text}");
        let totals = driver.js("return {...document.querySelector('#totals').dataset}", json!([]));
        assert_eq!(totals["keys"], keys.len().to_string(), "{totals}");
        assert_eq!(totals["segments"], "3", "{totals}");
        assert_eq!(totals["nodes"], "2", "{totals}");
        let process = driver.js("return {...document.querySelector('#process').dataset}", json!([]));
        assert_eq!(process["runtime"], rt, "{process}");
        assert_eq!(process["mode"], "master", "{process}");

        // The lookup of the URL's key shows the replicas /query_key gives.
        let want: Value = serde_json::from_slice(&server.query_key("user/03").body).unwrap();
        let endpoints = driver.wait(
            "replicas of user/03",
            "const r = [...document.querySelectorAll('#key-result tr.replica')]; \
             return r.length && r.map(x => x.dataset.endpoint)",
        );
        let expected: Vec<&str> =
            want["data"].as_array().unwrap().iter().map(|r| r["transport_endpoint_"].as_str().unwrap()).collect();
        assert_eq!(endpoints, json!(expected));
        // A key that does not exist: the error, not a stale table.
        driver.type_into("#key-input", "no-such-key");
        driver.click("#key-lookup");
        let err = driver.wait(
            "the lookup error",
            "const e = document.querySelector('#key-result .error'); return e && e.textContent",
        );
        assert!(!err.as_str().unwrap().is_empty());
        assert_eq!(driver.js("return document.querySelectorAll('#key-result tr.replica').length", json!([])), 0);

        // The key list, filtered by prefix and paged.
        driver.type_into("#keys-prefix", "user/");
        driver.js(
            "const s = document.querySelector('#keys-limit'); s.value = '50'; \
             s.dispatchEvent(new Event('change', {bubbles: true}));",
            json!([]),
        );
        let listed = driver.wait(
            "the user/ keys",
            "const l = [...document.querySelectorAll('#keys-list li.key')].map(x => x.textContent); \
             return l.length === 30 && l.every(k => k.startsWith('user/')) && l",
        );
        let mut user: Vec<&String> = keys.iter().filter(|k| k.starts_with("user/")).collect();
        user.sort();
        assert_eq!(listed, json!(user));

        // Pause and resume.
        driver.click("#pause");
        assert_eq!(driver.wait("paused", STATE), "paused");
        driver.click("#pause");
        driver.wait("live again", "return document.querySelector('#conn').dataset.state === 'live'");

        // The charts draw the history once the load has filled a few windows.
        load.join().unwrap();
        driver.wait(
            "three windows of traffic in the request chart",
            "const l = document.querySelector('#chart-requests polyline'); \
             return l && l.getAttribute('points').trim().split(' ').length >= 3",
        );
        let peak = driver.js(
            "return Math.max(...document.querySelector('#chart-requests polyline').getAttribute('points') \
             .trim().split(' ').map(p => -Number(p.split(',')[1])))",
            json!([]),
        );
        assert!(peak.as_f64().is_some(), "{peak}");
        for chart in ["#chart-latency", "#chart-ops"] {
            let n = driver.js(&format!("return document.querySelectorAll('{chart} polyline').length"), json!([]));
            assert!(n.as_u64().unwrap_or(0) >= 1, "{chart}: {n}");
        }

        // The screenshot shows a page, not a blank (one colour) picture.
        let shot = driver.screenshot();
        let (distinct, top_share, size) = colours(&shot);
        assert!(distinct >= 16 && top_share < 0.97, "blank screenshot: {distinct} colours, top {top_share:.3}");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::write(dir.join(format!("dashboard-{rt}.png")), &shot).unwrap();
        eprintln!("screenshot {size:?}, {distinct} colours: {}", dir.join(format!("dashboard-{rt}.png")).display());

        // The server goes away: the page says so within a few refreshes and marks its figures stale.
        drop(node);
        drop(server);
        assert_eq!(
            driver.wait(
                "disconnected",
                "const s = document.querySelector('#conn').dataset.state; return s === 'disconnected' && s"
            ),
            "disconnected"
        );
        let banner = driver.js(
            "const b = document.querySelector('#banner'); \
             return {visible: !!(b.offsetWidth || b.offsetHeight || b.getClientRects().length), text: b.textContent, \
             stale: document.body.classList.contains('stale')}",
            json!([]),
        );
        assert_eq!(banner["visible"], true, "{banner}");
        assert!(banner["text"].as_str().unwrap().contains("Disconnected"), "{banner}");
        assert_eq!(banner["stale"], true, "{banner}");
        let shot = driver.screenshot();
        std::fs::write(dir.join(format!("dashboard-{rt}-disconnected.png")), &shot).unwrap();
    });
}
