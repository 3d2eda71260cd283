#!/usr/bin/env python3
"""Store-node benchmark: mc-master's store node beside upstream's store service, each against
upstream's master and against mc-master as master (four clusters), driven by wrk on loopback.

Run through `bash benches/cluster.sh` (which builds mc-master, installs wrk and upstream's
wheel); see docs/benchmarks.md. Every server listens on 127.0.0.1, every request goes to
127.0.0.1, and every process started here is stopped by its PID when it ends.

The four clusters run side by side, each of a master and two store nodes of one kind:
  A  the node measured with 64-byte values, the only memory of its cluster at first
     (--segment, default 256 MiB);
  C  the node measured with 1 MiB values, started later without memory of its own
     (global segment size 0; upstream's store service accepts 0 or at least 16 MiB), so the
     master places every value put through C in A's segment and every 1 MiB byte moves
     between C and A over the transfer engine; checked with the master's /query_key
     (transport_endpoint_ must name A) before the rows run.
Phases: start masters and A nodes -> idle RSS (VmRSS after --settle s) -> preload --keys
64-byte values through A -> rows GET / exist / PUT 64 B on A -> start C nodes, idle RSS ->
--big-keys 1 MiB values put through C, placement checked, one read back -> rows GET / exist
/ PUT+DELETE 1 MiB on C (JSON PUT on both; raw PUT /api/put/{key} on mc-master's node only). Each row runs on the four clusters back to back, a different one
first each row, so that drifting load on the machine weighs on all alike.
"""

import argparse
import datetime
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

HOST = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "requests.lua")
MIB = 1 << 20
TCK = os.sysconf("SC_CLK_TCK")
STARTED = []  # every Popen started here, stopped by PID at the end
RUN = str(int(time.time()) % 100000)


def log(msg):
    print("[cluster %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / TCK
    except (OSError, IndexError, ValueError):
        return None


def start(cmd, logpath, env=None):
    log("$ " + " ".join(cmd))
    p = subprocess.Popen(cmd, stdout=open(logpath, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env)
    STARTED.append(p)
    return p


def stop(p, wait=10):
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(signal.SIGINT)
        p.wait(wait)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def wait_until(pred, timeout, proc=None, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s: process %d exited with %s" % (what, proc.pid, proc.returncode))
        time.sleep(0.1)
    raise RuntimeError("timed out waiting for " + what)


def grep(path, regex):
    try:
        with open(path) as f:
            return re.search(regex, f.read(), re.M)
    except OSError:
        return None


def port_open(port):
    try:
        socket.create_connection((HOST, port), 0.5).close()
        return True
    except OSError:
        return False


def request(port, method, path, body=None, timeout=30):
    """One HTTP request on a fresh connection: (status, body bytes), or (None, error text)."""
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException) as e:
        return None, str(e).encode()
    finally:
        c.close()


# ---------------------------------------------------------------------------------------
# Masters and nodes
# ---------------------------------------------------------------------------------------
class UpstreamMaster:
    kind = "upstream"

    def __init__(self, a, work, base):
        self.a, self.work = a, work
        self.rpc, self.meta, self.admin = base, base + 1, base + 2

    def start(self):
        env = dict(os.environ, MC_TCP_BIND_ADDRESS=HOST)
        self.proc = start([self.a.master_bin, "--rpc_port", str(self.rpc), "--rpc_address", HOST,
                           "--rpc_thread_num", str(self.a.up_rpc_threads), "--metrics_port", str(self.admin),
                           "--metrics_host", HOST, "--enable_http_metadata_server=true",
                           "--http_metadata_server_port", str(self.meta), "--logtostderr"],
                          os.path.join(self.work, "upstream-master-%d.log" % self.rpc), env=env)

    def wait(self):
        for p in (self.rpc, self.meta, self.admin):
            wait_until(lambda: port_open(p), 30, self.proc, "upstream master port %d" % p)
        self.rpc_addr = "%s:%d" % (HOST, self.rpc)
        self.meta_url = "http://%s:%d/metadata" % (HOST, self.meta)
        self.query_port = self.admin
        self.pid = self.proc.pid


class McMaster:
    kind = "mc"

    def __init__(self, a, work, base):
        self.a, self.work = a, work
        self.logp = os.path.join(work, "mc-master-%d.log" % base)

    def start(self):
        self.proc = start([self.a.mc_bin, "--host", HOST, "--port", "0", "--rpc-port", "0", "--te-port", "0"]
                          + self.a.mc_master_args, self.logp, env=dict(os.environ, RUST_LOG="warn"))

    def wait(self):
        m = wait_until(lambda: grep(self.logp, r"^rpc listening on ([\d.]+:\d+)"), 30, self.proc, "mc-master rpc")
        http = int(grep(self.logp, r"^listening on http://[\d.]+:(\d+)").group(1))
        self.rpc_addr = m.group(1)
        self.meta_url = "http://%s:%d/metadata" % (HOST, http)
        self.query_port = http
        self.pid = self.proc.pid


class McNode:
    kind = "mc"

    def __init__(self, a, work, tag, master, segment):
        self.a, self.master, self.segment = a, master, segment
        self.logp = os.path.join(work, "mc-node-%s.log" % tag)

    def start(self):
        self.proc = start([self.a.mc_bin, "--host", HOST, "--port", "0", "--master", self.master.rpc_addr,
                           "--global-segment-size", str(self.segment), "--metadata-server", self.master.meta_url]
                          + self.a.mc_node_args, self.logp, env=dict(os.environ, RUST_LOG="warn"))

    def wait(self):
        m = wait_until(lambda: grep(self.logp, r"^listening on http://[\d.]+:(\d+)"), 30, self.proc, "mc node")
        self.port = int(m.group(1))
        wait_until(lambda: request(self.port, "GET", "/health", timeout=2)[0] == 200, 30, self.proc,
                   "mc node /health 200 (registered with the master)")
        self.pid = self.proc.pid


class UpstreamNode:
    kind = "upstream"

    def __init__(self, a, work, tag, master, segment, port, te_ports):
        self.a, self.work, self.tag, self.master, self.segment = a, work, tag, master, segment
        self.port, self.te_ports = port, te_ports

    def start(self):
        cfg = {"local_hostname": HOST, "metadata_server": self.master.meta_url, "global_segment_size": self.segment,
               "local_buffer_size": self.a.up_local_buffer, "protocol": "tcp", "device_name": "",
               "master_server_address": self.master.rpc_addr}
        path = os.path.join(self.work, "upstream-node-%s.json" % self.tag)
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
        env = dict(os.environ, MC_TCP_BIND_ADDRESS=HOST, MC_MIN_RPC_PORT=str(self.te_ports),
                   MC_MAX_RPC_PORT=str(self.te_ports + 19))
        self.proc = start([self.a.python, "-m", "mooncake.mooncake_store_service", "--config", path,
                           "--port", str(self.port)], os.path.join(self.work, "upstream-node-%s.log" % self.tag),
                          env=env)

    def wait(self):
        wait_until(lambda: request(self.port, "GET", "/api/exist/ready-probe", timeout=2)[0] == 200, 120,
                   self.proc, "upstream store service on %d" % self.port)
        self.pid = self.proc.pid


class Cluster:
    def __init__(self, a, work, node_kind, master_kind, index):
        self.a, self.work, self.index = a, work, index
        self.node_kind, self.master_kind = node_kind, master_kind
        self.name = "%s node / %s master" % ("mc" if node_kind == "mc" else "upstream",
                                            "mc" if master_kind == "mc" else "upstream")
        self.key = "%s-%s" % (node_kind, master_kind)
        base = a.port_base + 200 * index
        self.base = base
        self.master = (McMaster if master_kind == "mc" else UpstreamMaster)(a, work, base)
        self.A = self.C = None
        self.a_endpoint = None

    def node(self, tag, segment, slot):
        if self.node_kind == "mc":
            return McNode(self.a, self.work, "%s-%s" % (self.key, tag), self.master, segment)
        return UpstreamNode(self.a, self.work, "%s-%s" % (self.key, tag), self.master, segment,
                            self.base + 10 + slot, self.base + 40 + 20 * slot)

    def query(self, key):
        """transport_endpoint_ of the replicas of `key`, from the master's /query_key."""
        st, body = request(self.master.query_port, "GET", "/query_key?key=" + urllib.parse.quote(key, safe=""))
        if st != 200:
            return None
        try:
            return [d.get("transport_endpoint_") for d in json.loads(body).get("data", [])]
        except ValueError:
            return None


def start_all(objs):
    for o in objs:
        o.start()
    for o in objs:
        o.wait()


# ---------------------------------------------------------------------------------------
# Loading values
# ---------------------------------------------------------------------------------------
def put_many(port, keys, value_len):
    """PUT /api/put of each key (JSON, value of 'v's) on one keep-alive connection."""
    c = http.client.HTTPConnection(HOST, port, timeout=60)
    value = "v" * value_len
    failed = []
    try:
        for k in keys:
            body = json.dumps({"key": k, "value": value})
            c.request("PUT", "/api/put", body=body, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            if r.status != 200:
                failed.append((k, r.status))
    finally:
        c.close()
    return failed


def small_keys(n):
    return ["s-%07d" % i for i in range(n)]


def big_keys(n):
    return ["b-%07d" % i for i in range(n)]


def preload_small(a, cl):
    t0 = time.time()
    failed = put_many(cl.A.port, small_keys(a.keys), 64)
    if failed:
        raise RuntimeError("%s: %d of %d preload puts failed, first %s" % (cl.name, len(failed), a.keys, failed[0]))
    eps = cl.query("s-%07d" % (a.keys // 2))
    if not eps:
        raise RuntimeError("%s: /query_key of a preloaded key failed" % cl.name)
    cl.a_endpoint = eps[0]
    st, body = request(cl.A.port, "GET", "/api/get/s-0000000")
    if st != 200 or body != b"v" * 64:
        raise RuntimeError("%s: GET of a preloaded key: %s %r" % (cl.name, st, body[:100]))
    log("%s: %d keys preloaded through A in %.1f s; A is %s" % (cl.name, a.keys, time.time() - t0, cl.a_endpoint))


def preload_big(a, cl):
    t0 = time.time()
    keys = big_keys(a.big_keys)
    failed = put_many(cl.C.port, keys, MIB)
    if failed:
        raise RuntimeError("%s: %d 1 MiB puts through C failed, first %s" % (cl.name, len(failed), failed[0]))
    placement = {}
    for k in keys:
        eps = cl.query(k) or ["(not found)"]
        for e in eps:
            placement[e] = placement.get(e, 0) + 1
    cl.big_placement = placement
    if placement.get(cl.a_endpoint) != len(keys) or len(placement) != 1:
        raise RuntimeError("%s: 1 MiB replicas not all on A (%s): %s" % (cl.name, cl.a_endpoint, placement))
    st, body = request(cl.C.port, "GET", "/api/get/" + keys[0])
    if st != 200 or body != b"v" * MIB:
        raise RuntimeError("%s: GET through C of a 1 MiB value held by A: %s, %d bytes" % (cl.name, st, len(body)))
    log("%s: %d 1 MiB values put through C in %.1f s, all on A (%s), read back through C" % (
        cl.name, len(keys), time.time() - t0, cl.a_endpoint))


PROBES = [0]


def probe_put_placement(cl):
    """Where a 1 MiB PUT through C lands (before the PUT rows): must be A."""
    PROBES[0] += 1
    k = "probe-%s-%d" % (RUN, PROBES[0])
    st, _ = request(cl.C.port, "PUT", "/api/put", json.dumps({"key": k, "value": "v" * MIB}))
    eps = cl.query(k) if st == 200 else None
    return {"status": st, "endpoints": eps}


# ---------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------
def parse_wrk(out):
    res = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": 0, "non2xx": 0, "socket_errors": None}
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    for q, k in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s)\b" % q, out, re.M)
        if m:
            res[k] = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: (.*)", out)
    if m:
        res["socket_errors"] = m.group(1).strip()
    return res


def run_wrk(a, port, wrk_args, env, pids, tag):
    cmd = [a.wrk] + wrk_args + ["-d%ss" % a.duration, "--latency", "--timeout", "10s", "-s", LUA,
                                "http://%s:%d" % (HOST, port)]
    full_env = dict(os.environ, **env)
    before = {k: cpu_s(p) for k, p in pids.items()}
    out = tempfile.TemporaryFile(mode="w+")
    w0 = time.time()
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, stdin=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - w0
    after = {k: cpu_s(p2) for k, p2 in pids.items()}
    out.seek(0)
    text = out.read()
    with open(os.path.join(a.work, "wrk.log"), "a") as f:
        f.write("\n### %s\n$ %s %s\n%s" % (tag, " ".join("%s=%s" % kv for kv in env.items()), " ".join(cmd), text))
    res = parse_wrk(text)
    res.update(rc=p.returncode, wall_s=wall, load1=loadavg(), wrk=" ".join(wrk_args),
               wrk_cpu_s=ru.ru_utime + ru.ru_stime,
               cpu_s={k: (after[k] - before[k]) if after[k] is not None and before[k] is not None else None
                      for k in pids})
    return res


# (id, label, node, mode env, wrk settings key)
ROWS_SMALL = [
    ("get64", "GET /api/get/{key}, 64 B", {"BENCH_MODE": "get"}, "small"),
    ("exist64", "GET /api/exist/{key} (64 B values)", {"BENCH_MODE": "exist"}, "small"),
    ("put64", "PUT /api/put, 64 B, new key each", {"BENCH_MODE": "put", "BENCH_VALUE_LEN": "64"}, "small"),
]
ROWS_BIG = [
    ("get1m", "GET /api/get/{key}, 1 MiB, replica remote", {"BENCH_MODE": "get"}, "big"),
    ("exist1m", "GET /api/exist/{key} (1 MiB values)", {"BENCH_MODE": "exist"}, "big"),
    ("put1m", "PUT /api/put, 1 MiB, remote (+ DELETE)",
     {"BENCH_MODE": "putdel", "BENCH_VALUE_LEN": str(MIB)}, "putdel"),
    ("putraw1m", "PUT /api/put/{key} raw, 1 MiB, remote (+ DELETE), mc only",
     {"BENCH_MODE": "rawputdel", "BENCH_VALUE_LEN": str(MIB)}, "putdel"),
]


def wrk_args(a, cl, kind):
    spec = {"small": (a.mc_wrk, a.up_wrk), "big": (a.mc_wrk_big, a.up_wrk_big),
            "putdel": (a.mc_wrk_put_big, a.up_wrk_put_big)}[kind]
    return (spec[0] if cl.node_kind == "mc" else spec[1]).split()


def run_rows(a, clusters, rows, node_attr, results, offset):
    for i, (rid, label, env, kind) in enumerate(rows):
        if a.only and rid not in a.only:
            continue
        n = len(clusters)
        order = [clusters[(j + i + offset) % n] for j in range(n)]
        for cl in order:
            if rid == "putraw1m" and cl.node_kind != "mc":
                continue  # upstream's store service has no raw PUT
            node = getattr(cl, node_attr)
            e = dict(env, BENCH_TAG="%s-%s-%s" % (RUN, cl.key, rid))
            if rid in ("get64", "exist64"):
                e["BENCH_KEYS"] = "s-:%d" % a.keys
            elif rid in ("get1m", "exist1m"):
                e["BENCH_KEYS"] = "b-:%d" % a.big_keys
            extra = {}
            if rid in ("put1m", "putraw1m"):
                extra["placement_probe"] = probe_put_placement(cl)
            pids = {"node": node.pid, "master": cl.master.pid}
            if node_attr == "C":
                pids["holder"] = cl.A.pid
            r = run_wrk(a, node.port, wrk_args(a, cl, kind), e, pids, "%s %s" % (rid, cl.name))
            r.update(extra)
            if kind == "putdel" and r["rps"]:
                r["puts_per_s"] = r["rps"] / 2
                r["gbps"] = r["rps"] / 2 * MIB / 1e9
            elif kind == "big" and rid == "get1m" and r["rps"]:
                r["gbps"] = r["rps"] * MIB / 1e9
            results["rows"].setdefault(rid, {})[cl.key] = r
            log("%-8s %-28s %s req/s p99 %s ms%s non2xx %d sockerr %s cpu %s (load %.1f)" % (
                rid, cl.name, "%.0f" % r["rps"] if r["rps"] else "FAILED",
                "%.2f" % r["p99_ms"] if r["p99_ms"] is not None else "-",
                " %.2f GB/s" % r["gbps"] if r.get("gbps") else "", r["non2xx"], r["socket_errors"],
                {k: round(v, 2) for k, v in r["cpu_s"].items() if v is not None}, r["load1"]))


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
COMBOS = [("upstream", "upstream"), ("mc", "upstream"), ("upstream", "mc"), ("mc", "mc")]


def fmt_num(x):
    if x is None:
        return "–"
    if x >= 100:
        return "{:,.0f}".format(x)
    if x >= 10:
        return "%.1f" % x
    return "%.2f" % x


def ratio(x, y):
    return "%.1fx" % (x / y) if x and y else "–"


def cell(r, big):
    """(throughput, p99) of one run for the table."""
    if not r or not r.get("rps"):
        return ("FAILED" if r else "–"), "–"
    if big and r.get("gbps"):
        thr = "%.2f GB/s (%s/s)" % (r["gbps"], fmt_num(r.get("puts_per_s", r["rps"])))
    else:
        thr = fmt_num(r["rps"])
    return thr, fmt_num(r["p99_ms"])


def thr_value(r):
    if not r or not r.get("rps"):
        return None
    return r.get("puts_per_s", r["rps"])


def report(a, results):
    L = []
    rows = ROWS_SMALL + ROWS_BIG
    L.append("Store nodes, %s s per run; wrk: 64 B rows mc `%s`, upstream `%s`; 1 MiB GET/exist mc `%s`, "
             "upstream `%s`; 1 MiB PUT+DELETE mc `%s`, upstream `%s`; %s, commit %s" % (
                 a.duration, a.mc_wrk, a.up_wrk, a.mc_wrk_big, a.up_wrk_big, a.mc_wrk_put_big, a.up_wrk_put_big,
                 results["started"], results["commit"]))
    L.append("")
    L.append("Requests per second (1 MiB rows: GB/s = 10^9 B/s, with PUTs or GETs per second) and p99 in ms; "
             "ratio = mc-master's node ÷ upstream's node under the same master; last column: all-mc cluster ÷ "
             "all-upstream cluster.")
    L.append("")
    L.append("| row | upstream node, upstream master | p99 | mc node, upstream master | p99 | ratio | "
             "upstream node, mc master | p99 | mc node, mc master | p99 | ratio | mc/mc ÷ up/up |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rid, label, _, kind in rows:
        per = results["rows"].get(rid)
        if not per:
            continue
        big = kind != "small" and rid != "exist1m"
        cells = []
        g = {c: per.get("%s-%s" % c) for c in COMBOS}
        for c in COMBOS:
            cells.extend(cell(g[c], big))
            if c[0] == "mc":
                cells.append(ratio(thr_value(g[c]), thr_value(g[("upstream", c[1])])))
        cells.append(ratio(thr_value(g[("mc", "mc")]), thr_value(g[("upstream", "upstream")])))
        L.append("| %s | %s |" % (label, " | ".join(cells)))
    L.append("")
    L.append("CPU per request (µs; 1 MiB PUT rows per PUT+DELETE pair counted as two requests): node measured, "
             "its master, wrk; and errors (non-2xx responses / socket errors):")
    L.append("")
    L.append("| row | cluster | req/s | node µs/req | master µs/req | holder (A) µs/req | wrk µs/req | errors | load |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for rid, label, _, _ in rows:
        per = results["rows"].get(rid, {})
        for c in COMBOS:
            r = per.get("%s-%s" % c)
            if not r:
                continue
            n = r.get("requests") or 0

            def us(v):
                return "%.1f" % (v / n * 1e6) if v is not None and n else "–"

            cpu = r["cpu_s"]
            L.append("| %s | %s node, %s master | %s | %s | %s | %s | %s | %d / %s | %.1f |" % (
                rid, c[0], c[1], fmt_num(r.get("rps")), us(cpu.get("node")), us(cpu.get("master")),
                us(cpu.get("holder")), us(r.get("wrk_cpu_s")), r["non2xx"], r["socket_errors"] or "none",
                r["load1"]))
    L.append("")
    L.append("Idle resident memory (VmRSS, %s s after start-up, before any load):" % a.settle)
    L.append("")
    L.append("| cluster | node A (%s segment) | node C (no segment) | master |" % fmt_size(a.segment))
    L.append("|---|---|---|---|")
    for c in COMBOS:
        m = results["rss"].get("%s-%s" % c)
        if not m:
            continue
        L.append("| %s node, %s master | %s | %s | %s |" % (c[0], c[1], mib(m.get("A")), mib(m.get("C")),
                                                           mib(m.get("master"))))
    if results.get("placement"):
        L.append("")
        L.append("Placement of the 1 MiB values (from each master's /query_key): " + "; ".join(
            "%s: %s" % (k, v) for k, v in results["placement"].items()))
    if results.get("errors"):
        L.append("")
        L.append("Errors: " + "; ".join(results["errors"]))
    return "\n".join(L) + "\n"


def mib(kib):
    return "%.1f MiB" % (kib / 1024) if kib else "–"


def fmt_size(b):
    if b >= MIB:
        return "%d MiB" % (b // MIB)
    return "%d KiB" % (b // 1024)


def parse_size(s):
    m = re.fullmatch(r"(\d+)\s*([KMG]i?B?)?", s.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError("bad size %r" % s)
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[(m.group(2) or "")[:1].upper()]
    return int(m.group(1)) * mult


def env(name, default):
    return os.environ.get(name, default)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mc-bin", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--wrk", default="wrk")
    ap.add_argument("--duration", default=env("CLUSTER_DURATION", "5"), help="seconds per wrk run (CLUSTER_DURATION)")
    ap.add_argument("--keys", type=int, default=int(env("CLUSTER_KEYS", "10000")),
                    help="64-byte values preloaded for GET/exist (CLUSTER_KEYS)")
    ap.add_argument("--big-keys", type=int, default=int(env("CLUSTER_BIG_KEYS", "16")),
                    help="1 MiB values for GET/exist (CLUSTER_BIG_KEYS)")
    ap.add_argument("--mc-wrk", default=env("CLUSTER_MC_WRK", "-t2 -c8"), help="wrk threads/connections, mc node, 64 B")
    ap.add_argument("--up-wrk", default=env("CLUSTER_UP_WRK", "-t1 -c2"), help="upstream node, 64 B")
    ap.add_argument("--mc-wrk-big", default=env("CLUSTER_MC_WRK_BIG", "-t1 -c4"), help="mc node, 1 MiB GET/exist")
    ap.add_argument("--up-wrk-big", default=env("CLUSTER_UP_WRK_BIG", "-t1 -c2"), help="upstream node, 1 MiB GET/exist")
    ap.add_argument("--mc-wrk-put-big", default=env("CLUSTER_MC_WRK_PUT_BIG", "-t2 -c2"),
                    help="mc node, 1 MiB PUT+DELETE (one connection per thread)")
    ap.add_argument("--up-wrk-put-big", default=env("CLUSTER_UP_WRK_PUT_BIG", "-t2 -c2"),
                    help="upstream node, 1 MiB PUT+DELETE (one connection per thread)")
    ap.add_argument("--segment", type=parse_size, default=parse_size(env("CLUSTER_SEGMENT", "256MiB")),
                    help="global segment of node A")
    ap.add_argument("--up-local-buffer", type=parse_size, default=parse_size("64MiB"),
                    help="local_buffer_size of upstream's store services")
    ap.add_argument("--up-rpc-threads", type=int, default=2, help="--rpc_thread_num of upstream's master")
    ap.add_argument("--mc-node-args", default=env("CLUSTER_MC_NODE_ARGS", ""), help="extra flags of mc nodes")
    ap.add_argument("--mc-master-args", default=env("CLUSTER_MC_MASTER_ARGS", ""), help="extra flags of mc master")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds idle before reading VmRSS")
    ap.add_argument("--port-base", type=int, default=25000,
                    help="upstream's fixed ports: PORT_BASE .. PORT_BASE+800 (below the ephemeral range)")
    ap.add_argument("--combos", default=env("CLUSTER_COMBOS", "up-up,mc-up,up-mc,mc-mc"),
                    help="node-master pairs to run (CLUSTER_COMBOS)")
    ap.add_argument("--only", default=env("CLUSTER_ONLY", ""),
                    help="rows to run: get64,exist64,put64,get1m,exist1m,put1m (CLUSTER_ONLY)")
    ap.add_argument("--out", default=None, help="results folder (default target/bench-cluster/<date>)")
    a = ap.parse_args()
    a.duration = str(a.duration).rstrip("s")
    a.only = set(filter(None, a.only.split(",")))
    a.mc_node_args = a.mc_node_args.split()
    a.mc_master_args = a.mc_master_args.split()
    a.python = os.path.join(a.venv, "bin", "python")
    pkg = subprocess.check_output([a.python, "-c", "import mooncake,os;print(os.path.dirname(mooncake.__file__))"],
                                  text=True).strip()
    a.master_bin = os.path.join(pkg, "mooncake_master")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H-%M-%SZ")
    a.work = work = a.out or os.path.join("target", "bench-cluster", stamp)
    os.makedirs(work, exist_ok=True)
    names = {"up": "upstream", "mc": "mc"}
    combos = []
    for c in a.combos.split(","):
        n, m = c.split("-")
        combos.append((names[n], names[m]))
    try:
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                         stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    results = {"started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "commit": commit,
               "load_at_start": open("/proc/loadavg").read().strip(), "cpus": os.cpu_count(),
               "args": {k: v for k, v in vars(a).items() if k != "only"}, "rows": {}, "rss": {},
               "placement": {}, "errors": []}
    log("results in %s; load average %s" % (work, results["load_at_start"]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.time()
    clusters = []
    try:
        clusters = [Cluster(a, work, n, m, COMBOS.index((n, m))) for n, m in combos]
        start_all([cl.master for cl in clusters])
        for cl in clusters:
            cl.A = cl.node("A", a.segment, 0)
        start_all([cl.A for cl in clusters])
        time.sleep(a.settle)
        for cl in clusters:
            results["rss"][cl.key] = {"A": rss_kib(cl.A.pid), "master": rss_kib(cl.master.pid)}
            log("%s: idle VmRSS node A %s KiB, master %s KiB" % (cl.name, results["rss"][cl.key]["A"],
                                                                   results["rss"][cl.key]["master"]))
        for cl in clusters:
            preload_small(a, cl)
        run_rows(a, clusters, ROWS_SMALL, "A", results, 0)
        if not a.only or a.only & {r[0] for r in ROWS_BIG}:
            for cl in clusters:
                cl.C = cl.node("C", 0, 1)
            start_all([cl.C for cl in clusters])
            time.sleep(a.settle)
            for cl in clusters:
                results["rss"][cl.key]["C"] = rss_kib(cl.C.pid)
            for cl in clusters:
                preload_big(a, cl)
                results["placement"][cl.name] = "%d of %d on node A (%s)" % (
                    cl.big_placement.get(cl.a_endpoint, 0), a.big_keys, cl.a_endpoint)
            run_rows(a, clusters, ROWS_BIG, "C", results, 1)
            for cl in clusters:
                for rid in ("put1m", "putraw1m"):
                    r = results["rows"].get(rid, {}).get(cl.key)
                    if r and r.get("placement_probe"):
                        pr = r["placement_probe"]
                        if pr["endpoints"] != [cl.a_endpoint]:
                            results["errors"].append("%s: a 1 MiB PUT through C landed on %s" % (cl.name, pr))
    except Exception as e:
        log("FAILED: %s" % e)
        results["errors"].append(str(e))
        raise
    finally:
        for cl in clusters:
            for n in (cl.C, cl.A):
                if n is not None and getattr(n, "proc", None) is not None:
                    results["rss"].setdefault(cl.key, {}).setdefault("end_" + ("C" if n is cl.C else "A"),
                                                                     rss_kib(n.proc.pid))
        for p in reversed(STARTED):
            stop(p)
        results["seconds"] = round(time.time() - t0)
        results["load_at_end"] = open("/proc/loadavg").read().strip()
        with open(os.path.join(work, "results.json"), "w") as f:
            json.dump(results, f, indent=2, default=str)
        text = report(a, results)
        text += "\nLoad average (1, 5, 15 min) at start: %s; at end: %s; %d CPUs; %d s in all.\n" % (
            results["load_at_start"], results["load_at_end"], results["cpus"], results["seconds"])
        with open(os.path.join(work, "report.md"), "w") as f:
            f.write(text)
        print(text)
        log("wrote %s/report.md and results.json" % work)


if __name__ == "__main__":
    main()
