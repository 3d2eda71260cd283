#!/usr/bin/env python3
"""High-availability benchmark: a leader master SIGKILLed under an unchanged upstream client,
for upstream's mooncake_master and for mc-master, on one real etcd, on loopback.

Run through benches/ha.sh (which installs what is missing and builds mc-master). Every
process listens on 127.0.0.1 and every process this script starts is stopped by its PID.
See docs/benchmarks.md, "High availability".

For each system (--systems, default upstream,mc):
  failover    a fresh etcd (single member, temp data dir) and two masters of that kind in HA
              mode; the leader is the one named by mooncake-store/<cluster>/master_view. The
              client (tests/ha_upstream/client.py, master_server_addr etcd://...) writes --keys
              keys of --value-size bytes, then puts a fresh key every 20 ms; the leader is
              SIGKILLed and the client told when. Recorded: seconds from the kill to the
              client's first successful put that started after it, keys kept of --keys (read
              back byte for byte), and the harness's own view of the election: when the
              master_view key disappeared (lease expiry), when the survivor published its
              view, when it answered /role "leader" and when its RPC port accepted.
              --repeat runs it that many times (fresh etcd and masters each time).
  throughput  puts/s of --small-size byte values for --tp-seconds, summed over C client
              processes for each C in --tp-clients (default 1; each one thread, their
              timed windows started together after every client's warm-up): HA on (etcd +
              two HA masters, clients via etcd://) and HA off (one master of the same binary
              without HA flags, clients given its HOST:PORT), --tp-rounds alternating
              rounds; the fraction is the median HA-on over the median HA-off. One client
              measures the latency of one put (HA on adds an etcd round trip to every put
              end); several show what batching many put ends per etcd txn recovers (each
              upstream client costs about a core here, so on 2 cores more than one mostly
              measures the clients: the store-node rows below are the concurrent ones).
  node        the same HA on / HA off comparison with an mc-master store node as the client
              of the master (it speaks upstream's RPC; `--master etcd://...` with HA on, the
              master's HOST:PORT without) and wrk (one thread, --tp-node-conns connections,
              default 1,16,64, benches/cluster/requests.lua's `put` mode: a new key of
              --small-size bytes per request) against the node's REST API. wrk costs far less
              CPU than the Python client, so on a small machine this is the row where several
              writers at once are measured rather than the clients' own CPU.
Prints a side-by-side table and writes results.json and every process's log under --out
(default target/bench-ha/<date>/).
"""

import argparse
import base64
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HOST = "127.0.0.1"
ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CLIENT = os.path.join(ROOT, "tests", "ha_upstream", "client.py")
STARTED = []   # every Popen started here, stopped by PID at the end


def log(msg):
    print("[ha %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def accepts(port, timeout=0.3):
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_get(port, path, timeout=1.0):
    try:
        with urllib.request.urlopen("http://%s:%d%s" % (HOST, port, path), timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, ValueError):
        return None, ""


def spawn(name, argv, logdir, env=None, stdin=None, stdout=None):
    path = os.path.join(logdir, "%s.log" % name)
    f = open(path, "ab")
    e = dict(os.environ)
    e["MC_TCP_BIND_ADDRESS"] = HOST
    if env:
        e.update(env)
    p = subprocess.Popen(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                         stdout=stdout if stdout is not None else f, stderr=f, env=e,
                         start_new_session=True)
    p.log_path = path
    p.name = name
    STARTED.append(p)
    return p


def stop(p, sig=signal.SIGTERM, wait=10):
    if p is None or p.poll() is not None:
        return
    try:
        os.kill(p.pid, sig)
        p.wait(timeout=wait)
    except Exception:  # noqa: BLE001
        try:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        except Exception:  # noqa: BLE001
            pass


def tail(path, n=15):
    try:
        with open(path, "rb") as f:
            return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------
# etcd
# ---------------------------------------------------------------------------------------

class Etcd:
    def __init__(self, binary, logdir, tag):
        self.dir = tempfile.mkdtemp(prefix="mc-ha-etcd-")
        self.port, self.peer = free_port(), free_port()
        client = "http://%s:%d" % (HOST, self.port)
        peer = "http://%s:%d" % (HOST, self.peer)
        self.proc = spawn("etcd-%s" % tag, [
            binary, "--name", "bench", "--data-dir", os.path.join(self.dir, "data"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "bench=%s" % peer], logdir)
        end = time.time() + 20
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("etcd exited:\n" + tail(self.proc.log_path))
            st, body = http_get(self.port, "/health")
            if st == 200 and '"true"' in body:
                return
            time.sleep(0.05)
        raise RuntimeError("etcd not healthy:\n" + tail(self.proc.log_path))

    def endpoint(self):
        return "%s:%d" % (HOST, self.port)

    def get(self, key):
        """(value, create_revision) or None; raises OSError when etcd does not answer."""
        body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
        req = urllib.request.Request("http://%s/v3/kv/range" % self.endpoint(), data=body, method="POST")
        with urllib.request.urlopen(req, timeout=2) as r:
            v = json.loads(r.read())
        kvs = v.get("kvs") or []
        if not kvs:
            return None
        return base64.b64decode(kvs[0].get("value", "")).decode(), int(kvs[0].get("create_revision", 0))

    def close(self):
        stop(self.proc, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def view_key(cluster):
    return "mooncake-store/%s/master_view" % cluster.rstrip("/")


# ---------------------------------------------------------------------------------------
# masters
# ---------------------------------------------------------------------------------------

class Master:
    """One master process: rpc (RPC port), admin (its HTTP port with /role)."""

    def __init__(self, kind, a, logdir, tag, etcd=None):
        self.kind = kind
        self.rpc, self.admin = free_port(), free_port()
        self.addr = "%s:%d" % (HOST, self.rpc)
        if kind == "upstream":
            argv = [a.upstream_master, "--rpc_port=%d" % self.rpc, "--rpc_address=%s" % HOST,
                    "--metrics_port=%d" % self.admin, "--metrics_host=%s" % HOST,
                    "--rpc_thread_num=%d" % a.rpc_threads, "--logtostderr=true",
                    "--cluster_id=%s" % a.cluster_id]
            if etcd is not None:
                argv += ["--enable_ha=true", "--etcd_endpoints=%s" % etcd.endpoint()]
        else:
            argv = [a.mc_bin, "--port", str(self.admin), "--rpc-port", str(self.rpc)]
            if etcd is not None:
                argv += ["--enable-ha", "--etcd-endpoints", etcd.endpoint(), "--rpc-address", HOST,
                         "--cluster-id", a.cluster_id]
                if a.mc_lease_ttl:
                    argv += ["--ha-lease-ttl", a.mc_lease_ttl]
        self.proc = spawn("%s-%s" % (kind, tag), argv, logdir)

    def role(self):
        st, body = http_get(self.admin, "/role", timeout=0.5)
        return body.strip() if st == 200 else None

    def alive(self):
        return self.proc.poll() is None


def wait_leader(etcd, masters, cluster, timeout):
    """The master named by master_view once its RPC port accepts; raises on timeout."""
    end = time.time() + timeout
    while time.time() < end:
        for m in masters:
            if not m.alive():
                raise RuntimeError("%s exited:\n%s" % (m.proc.name, tail(m.proc.log_path)))
        try:
            v = etcd.get(view_key(cluster))
        except OSError:
            v = None
        if v is not None:
            lead = [m for m in masters if m.addr == v[0]]
            if not lead:
                raise RuntimeError("master_view %r names none of %s" % (v[0], [m.addr for m in masters]))
            if accepts(lead[0].rpc):
                return lead[0], v[1]
        time.sleep(0.05)
    raise RuntimeError("no serving leader after %s s; logs:\n%s" % (
        timeout, "\n".join("--- %s\n%s" % (m.proc.name, tail(m.proc.log_path)) for m in masters)))


def wait_single(m, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if not m.alive():
            raise RuntimeError("%s exited:\n%s" % (m.proc.name, tail(m.proc.log_path)))
        if accepts(m.rpc):
            return
        time.sleep(0.05)
    raise RuntimeError("%s does not listen on %d" % (m.proc.name, m.rpc))


# ---------------------------------------------------------------------------------------
# client
# ---------------------------------------------------------------------------------------

def client_argv(a, master, *mode):
    return [a.python, CLIENT, "--master", master, "--cluster-id", a.cluster_id,
            "--value-size", str(a.value_size), "--small-size", str(a.small_size),
            "--segment-mib", str(a.segment_mib)] + [str(x) for x in mode]


def readline_timeout(p, timeout):
    box = {}

    def rd():
        box["line"] = p.stdout.readline()

    t = threading.Thread(target=rd, daemon=True)
    t.start()
    t.join(max(0.0, timeout))
    if t.is_alive():
        return None
    line = box.get("line", "")
    return line if line else None


# ---------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------

def failover_run(a, kind, logdir, i):
    tag = "%s-fo%d" % (kind, i)
    etcd = Etcd(a.etcd, logdir, tag)
    masters, client = [], None
    try:
        masters = [Master(kind, a, logdir, "%s-%s" % (tag, x), etcd) for x in "ab"]
        t0 = time.monotonic()
        leader, rev = wait_leader(etcd, masters, a.cluster_id, a.start_timeout)
        first_serving_s = time.monotonic() - t0
        standby = [m for m in masters if m is not leader][0]
        log("%s: leader %s (%s, view revision %d) after %.1f s; standby %s role=%s" % (
            tag, leader.addr, leader.proc.name, rev, first_serving_s, standby.addr, standby.role()))
        client = spawn("client-%s" % tag, client_argv(a, "etcd://" + etcd.endpoint(), "failover", a.keys),
                       logdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        # Up to READY.
        lines = []
        end = time.time() + a.start_timeout + 60
        ready = False
        while time.time() < end:
            line = readline_timeout(client, end - time.time())
            if line is None:
                break
            line = line.decode() if isinstance(line, bytes) else line
            if line.strip() == "READY":
                ready = True
                break
            if line.startswith("{"):
                lines.append(json.loads(line))
                if lines[-1].get("event") == "error" or (lines[-1].get("event") == "setup" and lines[-1]["rc"]):
                    break
        if not ready:
            raise RuntimeError("client not READY: %s\n%s" % (lines, tail(client.log_path, 30)))
        written = next((x for x in lines if x.get("event") == "written"), {})
        verified = next((x for x in lines if x.get("event") == "verified"), {})
        time.sleep(a.pre_kill)

        # Watch the election from outside while the client recovers.
        marks = {}
        watching = threading.Event()
        watching.set()

        def watch(t_kill):
            while watching.is_set():
                now = time.monotonic()
                try:
                    v = etcd.get(view_key(a.cluster_id))
                except OSError:
                    v = "error"
                if v is None and "view_gone_s" not in marks:
                    marks["view_gone_s"] = now - t_kill
                if isinstance(v, tuple) and v[0] == standby.addr and "view_new_s" not in marks:
                    marks["view_new_s"] = now - t_kill
                    marks["view_new_revision"] = v[1]
                if "role_leader_s" not in marks and standby.role() == "leader":
                    marks["role_leader_s"] = time.monotonic() - t_kill
                if "rpc_accepts_s" not in marks and "view_new_s" in marks and accepts(standby.rpc, 0.1):
                    marks["rpc_accepts_s"] = time.monotonic() - t_kill
                if all(k in marks for k in ("view_new_s", "role_leader_s", "rpc_accepts_s")):
                    return
                time.sleep(0.02)

        os.kill(leader.proc.pid, signal.SIGKILL)
        t_kill = time.monotonic()
        client.stdin.write(("KILLED %.6f\n" % t_kill).encode())
        client.stdin.flush()
        leader.proc.wait(timeout=10)
        w = threading.Thread(target=watch, args=(t_kill,), daemon=True)
        w.start()
        log("%s: SIGKILLed the leader %s" % (tag, leader.addr))
        res, more = read_json_lines(client, "failover", a.recovery_timeout + 120)
        watching.clear()
        w.join(2)
        if res is None or res.get("event") != "failover":
            raise RuntimeError("client gave no failover result: %s\n%s" % (more, tail(client.log_path, 30)))
        res.update({k: round(v, 3) if isinstance(v, float) else v for k, v in marks.items()})
        res["first_serving_s"] = round(first_serving_s, 3)
        res["write_seconds"] = written.get("seconds")
        res["kept_before_kill"] = verified.get("kept")
        res["standby_role_after"] = standby.role()
        res["client_log"] = client.log_path
        log("%s: recovery %.2f s, kept %s/%s (view gone %s, new view %s, role leader %s, rpc %s)" % (
            tag, res["recovery_s"] if res["recovery_s"] is not None else float("nan"), res["kept"], res["n"],
            res.get("view_gone_s"), res.get("view_new_s"), res.get("role_leader_s"), res.get("rpc_accepts_s")))
        return res
    finally:
        stop(client, wait=20)
        for m in masters:
            stop(m.proc)
        etcd.close()


def read_json_lines(p, until_event, timeout):
    out = []
    end = time.time() + timeout
    while time.time() < end:
        line = readline_timeout(p, end - time.time())
        if line is None:
            break
        line = (line.decode(errors="replace") if isinstance(line, bytes) else line).strip()
        if not line.startswith("{"):
            continue
        obj = json.loads(line)
        out.append(obj)
        if obj.get("event") in (until_event, "error"):
            return obj, out
    return None, out


def throughput_run(a, kind, logdir, ha, r, clients):
    tag = "%s-c%d-tp%s%d" % (kind, clients, "on" if ha else "off", r)
    etcd, masters = None, []
    try:
        if ha:
            etcd = Etcd(a.etcd, logdir, tag)
            masters = [Master(kind, a, logdir, "%s-%s" % (tag, x), etcd) for x in "ab"]
            wait_leader(etcd, masters, a.cluster_id, a.start_timeout)
            master = "etcd://" + etcd.endpoint()
        else:
            masters = [Master(kind, a, logdir, tag)]
            wait_single(masters[0], a.start_timeout)
            master = masters[0].addr
        res = throughput(a, master, logdir, tag, clients)
        log("%s: %.0f puts/s from %d client(s) (%s)" % (tag, res["puts_per_s"], clients, master))
        return res
    finally:
        for m in masters:
            stop(m.proc)
        if etcd is not None:
            etcd.close()


def throughput(a, master, logdir, tag, clients):
    ps = [spawn("client-%s-%d" % (tag, c), client_argv(a, master, "throughput", a.tp_seconds, "--wait-go"),
                logdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE) for c in range(clients)]
    try:
        for p in ps:
            res, lines = read_json_lines(p, "tp_ready", a.start_timeout + 60)
            if res is None or res.get("event") != "tp_ready":
                raise RuntimeError("throughput client %s gave %s; log:\n%s" % (p.name, lines, tail(p.log_path)))
        for p in ps:
            p.stdin.write(b"go\n")
            p.stdin.flush()
        out = []
        for p in ps:
            res, lines = read_json_lines(p, "throughput", a.tp_seconds + 90)
            if res is None or res.get("event") != "throughput":
                raise RuntimeError("throughput client %s gave %s; log:\n%s" % (p.name, lines, tail(p.log_path)))
            out.append(res)
    finally:
        for p in ps:
            stop(p, wait=20)
    return {"puts_per_s": round(sum(x["puts_per_s"] for x in out), 1), "clients": clients,
            "failed": sum(x["failed"] for x in out), "per_client": out}


def node_throughput_run(a, kind, logdir, ha, r, conns):
    tag = "%s-n%d-tp%s%d" % (kind, conns, "on" if ha else "off", r)
    etcd, masters, node = None, [], None
    try:
        if ha:
            etcd = Etcd(a.etcd, logdir, tag)
            masters = [Master(kind, a, logdir, "%s-%s" % (tag, x), etcd) for x in "ab"]
            wait_leader(etcd, masters, a.cluster_id, a.start_timeout)
            master = "etcd://" + etcd.endpoint()
        else:
            masters = [Master(kind, a, logdir, tag)]
            wait_single(masters[0], a.start_timeout)
            master = masters[0].addr
        port = free_port()
        node = spawn("node-%s" % tag, [a.mc_bin, "--host", HOST, "--port", str(port), "--rpc-port", "off",
                                       "--master", master, "--cluster-id", a.cluster_id,
                                       "--global-segment-size", "%dMiB" % a.node_segment_mib,
                                       "--threads", "1"], logdir)
        end = time.time() + a.start_timeout
        while http_get(port, "/health")[0] != 200:
            if node.poll() is not None or time.time() > end:
                raise RuntimeError("store node (%s) not registered; log:\n%s" % (tag, tail(node.log_path)))
            time.sleep(0.1)
        env = dict(os.environ, BENCH_MODE="put", BENCH_VALUE_LEN=str(a.small_size), BENCH_TAG=tag)
        cmd = [a.wrk, "-t1", "-c%d" % conns, "-d%ds" % max(1, round(a.tp_seconds)), "--timeout", "10s",
               "-s", os.path.join(ROOT, "benches", "cluster", "requests.lua"), "http://%s:%d" % (HOST, port)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.tp_seconds + 60).stdout
        with open(os.path.join(logdir, "wrk-%s.log" % tag), "w") as f:
            f.write(" ".join(cmd) + "\n" + out)
        m = re.search(r"Requests/sec:\s*([\d.]+)", out)
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errs = re.search(r"Socket errors: (.*)", out)
        if m is None:
            raise RuntimeError("wrk (%s) gave no figure:\n%s" % (tag, out))
        res = {"puts_per_s": float(m.group(1)), "conns": conns, "non2xx": int(bad.group(1)) if bad else 0,
               "socket_errors": errs.group(1).strip() if errs else None}
        if res["non2xx"]:
            # A refused put is no throughput: count only the acknowledged ones.
            total = int(re.search(r"(\d+) requests in", out).group(1))
            res["puts_per_s"] = round(res["puts_per_s"] * (total - res["non2xx"]) / max(total, 1), 1)
        log("%s: %.0f acknowledged puts/s through a store node, %d connection(s) (%s)"
            % (tag, res["puts_per_s"], conns, master))
        return res
    finally:
        stop(node)
        for m_ in masters:
            stop(m_.proc)
        if etcd is not None:
            etcd.close()


def has_mc_ha(mc_bin):
    try:
        out = subprocess.run([mc_bin, "--help"], capture_output=True, timeout=20, text=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--enable-ha" in out.stdout + out.stderr


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def summarize(kind, fo, tp, ntp):
    row = {
        "system": kind,
        "failover_runs": len(fo),
        "recovery_s": med([x["recovery_s"] for x in fo]),
        "recovery_s_all": [x["recovery_s"] for x in fo],
        "kept": med([x["kept"] for x in fo]),
        "kept_all": [x["kept"] for x in fo],
        "readable_after_s": med([x.get("readable_after_s") for x in fo]),
        "keys": fo[0]["n"] if fo else None,
        "view_gone_s": med([x.get("view_gone_s") for x in fo]),
        "view_new_s": med([x.get("view_new_s") for x in fo]),
        "role_leader_s": med([x.get("role_leader_s") for x in fo]),
        "rpc_accepts_s": med([x.get("rpc_accepts_s") for x in fo]),
        "first_failure_after_kill_s": med([x.get("first_failure_after_kill_s") for x in fo]),
        "puts_failed_after_kill": med([x.get("puts_failed_after_kill") for x in fo]),
        "errors_after_kill": sorted({e for x in fo for e in x.get("errors_after_kill", [])}),
        "longest_put_after_kill_s": med([x.get("longest_put_after_kill_s") for x in fo]),
        "fresh_after_kill_readable": [(x.get("fresh_after_kill_readable"), x.get("fresh_after_kill_ok"))
                                      for x in fo],
        "first_serving_s": med([x.get("first_serving_s") for x in fo]),
    }
    for c, (tp_on, tp_off) in sorted(tp.items()):
        on = med([x["puts_per_s"] for x in tp_on])
        off = med([x["puts_per_s"] for x in tp_off])
        row["puts_per_s_ha_on_c%d" % c] = on
        row["puts_per_s_ha_off_c%d" % c] = off
        row["ha_on_fraction_c%d" % c] = round(on / off, 3) if on and off else None
        row["puts_per_s_ha_on_c%d_all" % c] = [x["puts_per_s"] for x in tp_on]
        row["puts_per_s_ha_off_c%d_all" % c] = [x["puts_per_s"] for x in tp_off]
    for c, (tp_on, tp_off) in sorted(ntp.items()):
        on = med([x["puts_per_s"] for x in tp_on])
        off = med([x["puts_per_s"] for x in tp_off])
        row["node_puts_per_s_ha_on_n%d" % c] = on
        row["node_puts_per_s_ha_off_n%d" % c] = off
        row["node_ha_on_fraction_n%d" % c] = round(on / off, 3) if on and off else None
        row["node_puts_per_s_ha_on_n%d_all" % c] = [x["puts_per_s"] for x in tp_on]
        row["node_puts_per_s_ha_off_n%d_all" % c] = [x["puts_per_s"] for x in tp_off]
    return row


def table(rows, clients, conns):
    names = {"upstream": "mooncake_master", "mc": "mc-master"}
    fields = [
        ("kill -> client's first successful put (s)", "recovery_s", "%.2f"),
        ("keys kept of N", "kept", None),
        ("first put -> all kept keys readable (s)", "readable_after_s", "%.2f"),
        ("kill -> master_view key gone (s)", "view_gone_s", "%.2f"),
        ("kill -> survivor's master_view (s)", "view_new_s", "%.2f"),
        ("kill -> survivor /role leader (s)", "role_leader_s", "%.2f"),
        ("kill -> survivor RPC accepts (s)", "rpc_accepts_s", "%.2f"),
        ("fresh puts failed after kill", "puts_failed_after_kill", "%g"),
        ("error codes after kill", "errors_after_kill", None),
        ("start -> first leader serving (s)", "first_serving_s", "%.2f"),
    ]
    for c in clients:
        fields += [
            ("puts/s HA off (direct), %d client(s)" % c, "puts_per_s_ha_off_c%d" % c, "%.0f"),
            ("puts/s HA on (etcd://), %d client(s)" % c, "puts_per_s_ha_on_c%d" % c, "%.0f"),
            ("HA on / HA off, %d client(s)" % c, "ha_on_fraction_c%d" % c, "%.3f"),
        ]
    for c in conns:
        fields += [
            ("node puts/s HA off, wrk %d conn(s)" % c, "node_puts_per_s_ha_off_n%d" % c, "%.0f"),
            ("node puts/s HA on, wrk %d conn(s)" % c, "node_puts_per_s_ha_on_n%d" % c, "%.0f"),
            ("HA on / HA off, node, %d conn(s)" % c, "node_ha_on_fraction_n%d" % c, "%.3f"),
        ]
    head = ["measure"] + [names.get(r["system"], r["system"]) for r in rows]
    body = []
    for label, key, fmt in fields:
        cells = [label]
        for r in rows:
            v = r.get(key)
            if key == "kept" and v is not None:
                cells.append("%g of %s" % (v, r.get("keys")))
            elif v is None:
                cells.append("-")
            elif fmt:
                cells.append(fmt % v)
            else:
                cells.append(json.dumps(v))
        body.append(cells)
    w = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(head)) + " |",
             "|" + "|".join("-" * (x + 2) for x in w) + "|"]
    lines += ["| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |" for r in body]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mc-bin", default=os.path.join(ROOT, "target", "release", "mc-master"))
    p.add_argument("--venv", default=os.path.join(ROOT, "target", "tmp", "rpc-upstream-venv"))
    p.add_argument("--etcd", default=os.environ.get("MC_ETCD_BIN", "/usr/bin/etcd"))
    p.add_argument("--systems", default="upstream,mc", help="comma list of upstream, mc")
    p.add_argument("--keys", type=int, default=200)
    p.add_argument("--value-size", type=int, default=4096)
    p.add_argument("--small-size", type=int, default=64)
    p.add_argument("--segment-mib", type=int, default=64)
    p.add_argument("--repeat", type=int, default=1, help="failover runs per system")
    p.add_argument("--tp-seconds", type=float, default=5)
    p.add_argument("--tp-rounds", type=int, default=2)
    p.add_argument("--tp-clients", default="1", help="comma list of concurrent client counts")
    p.add_argument("--tp-node-conns", default="1,16,64", help="comma list of wrk connection counts (store-node rows)")
    p.add_argument("--node-segment-mib", type=int, default=512)
    p.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk")
    p.add_argument("--pre-kill", type=float, default=1.0, help="seconds of fresh puts before the kill")
    p.add_argument("--cluster-id", default="mooncake_cluster")
    p.add_argument("--mc-lease-ttl", default="", help="mc-master --ha-lease-ttl (default: its own)")
    p.add_argument("--rpc-threads", type=int, default=2, help="upstream --rpc_thread_num")
    p.add_argument("--start-timeout", type=float, default=60)
    p.add_argument("--recovery-timeout", type=float, default=120)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--out", default="")
    a = p.parse_args()
    clients = [int(c) for c in a.tp_clients.split(",") if c.strip()]
    conns = [int(c) for c in a.tp_node_conns.split(",") if c.strip()]

    a.python = os.path.join(a.venv, "bin", "python")
    a.upstream_master = os.path.join(a.venv, "bin", "mooncake_master")
    systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    if not os.path.exists(a.etcd):
        sys.exit("no etcd at %s (apt-get install etcd-server)" % a.etcd)
    if "mc" in systems and not has_mc_ha(a.mc_bin):
        if a.systems == p.get_default("systems"):
            log("%s --help lists no --enable-ha: mc-master left out" % a.mc_bin)
            systems.remove("mc")
        else:
            sys.exit("%s --help lists no --enable-ha" % a.mc_bin)
    out = a.out or os.path.join(ROOT, "target", "bench-ha", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    logdir = os.path.join(out, "logs")
    os.makedirs(logdir, exist_ok=True)

    rows, raw = [], {}
    try:
        for kind in systems:
            fo = [failover_run(a, kind, logdir, i) for i in range(a.repeat)]
            tp = {}
            if not a.skip_throughput:
                for c in clients:
                    tp_on, tp_off = [], []
                    for r in range(a.tp_rounds):
                        tp_off.append(throughput_run(a, kind, logdir, False, r, c))
                        tp_on.append(throughput_run(a, kind, logdir, True, r, c))
                    tp[c] = (tp_on, tp_off)
            ntp = {}
            if not a.skip_throughput:
                for c in conns:
                    tp_on, tp_off = [], []
                    for r in range(a.tp_rounds):
                        tp_off.append(node_throughput_run(a, kind, logdir, False, r, c))
                        tp_on.append(node_throughput_run(a, kind, logdir, True, r, c))
                    ntp[c] = (tp_on, tp_off)
            raw[kind] = {"failover": fo,
                         "throughput": {str(c): {"ha_on": on, "ha_off": off} for c, (on, off) in tp.items()},
                         "node_throughput": {str(c): {"ha_on": on, "ha_off": off} for c, (on, off) in ntp.items()}}
            rows.append(summarize(kind, fo, tp, ntp))
    finally:
        for pr in STARTED:
            stop(pr, signal.SIGKILL, wait=5)
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "settings": {k: v for k, v in vars(a).items()},
        "summary": rows,
        "runs": raw,
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    t = table(rows, [] if a.skip_throughput else clients, [] if a.skip_throughput else conns)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("# HA failover, %s\n\n%s\n" % (result["date"], t))
    print(t)
    log("results: %s" % os.path.join(out, "results.json"))


if __name__ == "__main__":
    main()
