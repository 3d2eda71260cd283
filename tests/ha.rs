//! High availability on a real etcd (docs/ha.md), every runtime: two masters elect one
//! leader, which publishes its RPC address as upstream's `master_view`; the standby answers
//! its admin endpoints and 503 (naming the leader) on the service ones; a SIGKILLed leader is
//! replaced within a few lease TTLs. Skips without `/usr/bin/etcd` (fails in CI).

mod common;

use std::time::Duration;

use common::etcd::etcd_or_skip;
use common::{for_each_runtime, free_port, wait_until, Server};

fn role(s: &Server) -> String {
    s.get("/role").text()
}

/// Two HA masters on `endpoint` with a 2 s lease: their RPC ports and the servers.
fn start_masters(rt: &str, endpoint: &str) -> ([u16; 2], Vec<Server>) {
    let ports = [free_port(), free_port()];
    let masters = ports
        .iter()
        .map(|p| {
            let p = p.to_string();
            let args = [
                "--host",
                "127.0.0.1",
                "--rpc-port",
                &p,
                "--enable-ha",
                "--etcd-endpoints",
                endpoint,
                "--ha-lease-ttl",
                "2",
            ];
            Server::start_rt(rt, &args)
        })
        .collect();
    (ports, masters)
}

#[test]
fn two_masters_elect_one_leader_and_the_standby_takes_over_after_kill_9() {
    for_each_runtime(|rt| {
        let Some(etcd) = etcd_or_skip("two_masters_elect_one_leader_and_the_standby_takes_over_after_kill_9") else {
            return;
        };
        let (ports, mut masters) = start_masters(rt, &etcd.endpoint());
        assert!(
            wait_until(Duration::from_secs(15), || masters.iter().filter(|m| role(m) == "leader").count() == 1),
            "no single leader: roles {:?}",
            masters.iter().map(role).collect::<Vec<_>>()
        );
        let leader = masters.iter().position(|m| role(m) == "leader").unwrap();
        let standby = 1 - leader;
        let leader_addr = format!("127.0.0.1:{}", ports[leader]);
        assert_eq!(role(&masters[standby]), "standby");
        assert_eq!(etcd.master_view("mooncake_cluster").as_deref(), Some(leader_addr.as_str()));
        assert_eq!(masters[leader].get("/ha_status").text(), "serving");
        // The standby learns the view from its watch, a moment after the leader serves.
        wait_until(Duration::from_secs(5), || masters[standby].get("/leader").json()["present"] == true);
        assert_eq!(masters[standby].get("/ha_status").text(), "standby");
        let view = masters[standby].get("/leader").json();
        assert_eq!(view["present"], true, "{view}");
        assert_eq!(view["leader_address"], leader_addr.as_str(), "{view}");

        // The standby's service plane is off, naming the leader; its health probe answers.
        let r = masters[standby].get("/api/get/k");
        assert_eq!(r.status, 503, "{}", r.text());
        let body = r.json();
        assert_eq!(body["error_code"], -1011, "{body}");
        assert_eq!(body["leader_address"], leader_addr.as_str(), "{body}");
        assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
        assert_eq!(masters[standby].get("/health").status, 200);
        // The leader serves.
        assert_eq!(masters[leader].get("/api/get/k").status, 404);

        // kill -9: the standby is elected once the lease runs out and publishes itself.
        masters[leader].signal(9);
        masters[leader].wait_exit(Duration::from_secs(5));
        let survivor = &masters[standby];
        let new_addr = format!("127.0.0.1:{}", ports[standby]);
        assert!(
            wait_until(Duration::from_secs(15), || role(survivor) == "leader"),
            "the standby did not take over: {}",
            survivor.stderr_tail()
        );
        assert_eq!(etcd.master_view("mooncake_cluster").as_deref(), Some(new_addr.as_str()));
        assert_eq!(survivor.get("/api/get/k").status, 404);
        masters.clear();
    });
}

#[test]
fn a_sigstopped_leader_resumed_after_its_lease_expired_does_not_serve() {
    for_each_runtime(|rt| {
        let Some(etcd) = etcd_or_skip("a_sigstopped_leader_resumed_after_its_lease_expired_does_not_serve") else {
            return;
        };
        let (ports, masters) = start_masters(rt, &etcd.endpoint());
        assert!(wait_until(Duration::from_secs(15), || masters.iter().filter(|m| role(m) == "leader").count() == 1));
        let leader = masters.iter().position(|m| role(m) == "leader").unwrap();
        let standby = 1 - leader;
        masters[leader].signal(libc::SIGSTOP);
        assert!(
            wait_until(Duration::from_secs(15), || role(&masters[standby]) == "leader"),
            "the standby did not take over from a paused leader"
        );
        masters[leader].signal(libc::SIGCONT);
        // At once on resuming, the old leader refuses service requests (its lease deadline
        // passed while it was stopped) and then follows the new view.
        let r = masters[leader].put_raw("after-resume", b"v");
        assert_eq!(r.status, 503, "{}", r.text());
        assert_ne!(role(&masters[leader]), "leader");
        let new_addr = format!("127.0.0.1:{}", ports[standby]);
        assert!(wait_until(Duration::from_secs(10), || {
            masters[leader].get("/leader").json()["leader_address"] == new_addr.as_str()
        }));
        assert_eq!(etcd.master_view("mooncake_cluster").as_deref(), Some(new_addr.as_str()));
        assert_eq!(role(&masters[standby]), "leader");
    });
}
