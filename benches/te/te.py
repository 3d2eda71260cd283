#!/usr/bin/env python3
"""TE TCP data-plane benchmark: mc-master's TE target beside upstream's, one client.

Run through `bash benches/te.sh` (which builds the binaries and finds the venv); see
docs/benchmarks.md. Everything listens on, and every request goes to, 127.0.0.1; every
process started here is stopped by its PID.

Phases:
 1. TE targets: upstream's `transfer_engine_bench --mode=target` (with its HTTP metadata
    server) and `mc-master --te-open-access --global-segment-size 1GiB`, both running.
 2. The same Rust client (benches/te_client.rs) against each, READ and WRITE, blocks of
    64 KiB, 1 MiB, 16 MiB, over 1, 2, 4 lanes; both targets back to back per row, a
    different one first each row. GB/s, per-request p50/p99, target CPU.
 3. Interop: upstream's `transfer_engine_bench --mode=initiator` against each target.
 4. REST GET of a 1 MiB value held in another node's memory (an upstream store client),
    through mc-master (second instance, no memory of its own) and through upstream's
    store service (no memory of its own), with wrk.
"""
import argparse
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

HOST = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1 << 20
GIB = 1 << 30
TCK = os.sysconf("SC_CLK_TCK")
STARTED = []  # every Popen started here, stopped by PID at the end


def log(msg):
    print("[te] " + msg, file=sys.stderr, flush=True)


def loadavg():
    return open("/proc/loadavg").read().split()[0]


def cpu_ticks(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def start(cmd, logpath, env=None, stdin=None):
    log("$ " + " ".join(cmd))
    p = subprocess.Popen(cmd, stdout=open(logpath, "w"), stderr=subprocess.STDOUT, env=env,
                         stdin=stdin)
    STARTED.append(p)
    return p


def stop(p, sig=signal.SIGINT, wait=10):
    if p is None or p.poll() is not None:
        return
    try:
        if p.stdin:
            try:
                p.stdin.write(b"\n")
                p.stdin.flush()
            except OSError:
                pass
        p.send_signal(sig)
        p.wait(wait)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def stop_all():
    for p in reversed(STARTED):
        stop(p)


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


def port_open(port):
    try:
        socket.create_connection((HOST, port), 0.5).close()
        return True
    except OSError:
        return False


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def descriptor(meta_url, name):
    key = urllib.parse.quote("mooncake/ram/" + name, safe="")
    try:
        d = json.loads(http_get("%s?key=%s" % (meta_url, key), 2))
    except Exception:
        return None
    return d if d.get("buffers") else None


def grep_file(path, regex):
    try:
        m = re.search(regex, open(path).read(), re.M)
    except OSError:
        return None
    return m


def pattern(n):
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


# ---------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------
class UpstreamTarget:
    name = "upstream"

    def __init__(self, a, work):
        self.a, self.work = a, work
        self.meta_port = a.port_base
        self.seg = "%s:%d" % (HOST, a.port_base + 10)
        self.env = dict(os.environ, MC_MIN_RPC_PORT=str(a.port_base + 10), MC_MAX_RPC_PORT=str(a.port_base + 29),
                        MC_TCP_BIND_ADDRESS=HOST, GLOG_minloglevel="1")

    @property
    def meta_url(self):
        return "http://%s:%d/metadata" % (HOST, self.meta_port)

    def start(self):
        self.meta = start([self.a.python, "-m", "mooncake.http_metadata_server", "--port", str(self.meta_port),
                           "--host", HOST], os.path.join(self.work, "upstream-metadata.log"))
        wait_until(lambda: port_open(self.meta_port), 30, self.meta, "upstream metadata server")
        self.proc = start([self.a.te_bench, "--mode=target", "--protocol=tcp", "--metadata_server=" + self.meta_url,
                           "--local_server_name=" + self.seg, "--buffer_size=%d" % GIB],
                          os.path.join(self.work, "upstream-target.log"), env=self.env)
        d = wait_until(lambda: descriptor(self.meta_url, self.seg), 60, self.proc, "upstream target descriptor")
        self.data_port, self.base, self.len = d["tcp_data_port"], d["buffers"][0]["addr"], d["buffers"][0]["length"]
        self.pid = self.proc.pid

    def stop(self):
        stop(self.proc)
        stop(self.meta)


class McTarget:
    name = "mc-master"

    def __init__(self, a, work):
        self.a, self.work = a, work

    def start(self):
        logp = os.path.join(self.work, "mc-master-target.log")
        self.log = logp
        self.proc = start([self.a.mc_bin, "--host", HOST, "--port", "0", "--rpc-port", "off", "--te-port", "0",
                           "--te-open-access", "--global-segment-size", "1GiB"] + self.a.mc_args, logp,
                          env=dict(os.environ, RUST_LOG="info"))
        m = wait_until(lambda: grep_file(logp, r"^te listening on [\d.]+:(\d+)"), 30, self.proc, "mc-master te port")
        self.http = int(grep_file(logp, r"^listening on http://[\d.]+:(\d+)").group(1))
        self.seg = "%s:%d" % (HOST, self.http)
        self.meta_url = "http://%s:%d/metadata" % (HOST, self.http)
        d = wait_until(lambda: descriptor(self.meta_url, self.seg), 30, self.proc, "mc-master descriptor")
        self.data_port, self.base, self.len = d["tcp_data_port"], d["buffers"][0]["addr"], d["buffers"][0]["length"]
        assert self.data_port == int(m.group(1)), (d, m.group(0))
        self.pid = self.proc.pid

    def stop(self):
        stop(self.proc)


def run_client(a, t, op, block, lanes):
    cmd = [a.client, "--addr", "%s:%d" % (HOST, t.data_port), "--base", str(t.base), "--len", str(t.len),
           "--op", op, "--block", str(block), "--lanes", str(lanes), "--secs", str(a.secs),
           "--warmup", str(a.warmup), "--pid", str(t.pid)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.secs + a.warmup + 60)
    try:
        res = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        res = {"gbps": None, "errors": ["client rc %d: %s" % (r.returncode, (r.stderr or r.stdout)[-500:])]}
    res["load1"] = float(loadavg())
    return res


def fmt_size(b):
    return "%d MiB" % (b // MIB) if b >= MIB else "%d KiB" % (b // 1024)


def te_matrix(a, targets, results):
    rows = []
    i = 0
    for op in a.ops:
        for block in a.blocks:
            for lanes in a.lanes:
                order = targets if i % 2 == 0 else targets[::-1]
                i += 1
                row = {"op": op, "block": block, "lanes": lanes, "runs": {t.name: [] for t in targets}}
                for _ in range(a.repeat):
                    for t in order:
                        row["runs"][t.name].append(run_client(a, t, op, block, lanes))
                # best of the repeats per target (both get the same number of tries)
                for t in targets:
                    runs = [r for r in row["runs"][t.name] if r.get("gbps") is not None]
                    row[t.name] = max(runs, key=lambda r: r["gbps"]) if runs else row["runs"][t.name][-1]
                rows.append(row)
                log(summary_line(row, targets))
    results["te"] = rows
    return rows


def summary_line(row, targets):
    parts = ["%-5s %-7s lanes=%d" % (row["op"], fmt_size(row["block"]), row["lanes"])]
    for t in targets:
        r = row[t.name]
        if r.get("gbps") is None:
            parts.append("%s FAILED %s" % (t.name, r.get("errors")))
        else:
            parts.append("%s %.2f GB/s cpu %.0f%% p99 %.0f us (load %.2f)" % (
                t.name, r["gbps"], r.get("target_cpu_pct") or 0, r["p99_us"], r["load1"]))
    return " | ".join(parts)


# ---------------------------------------------------------------------------------------
# Interop: upstream's initiator against both targets
# ---------------------------------------------------------------------------------------
def interop(a, targets, work, results):
    out = []
    n = 0
    for t in targets:
        for op in ("read", "write"):
            n += 1
            name = "%s:%d" % (HOST, a.port_base + 60 + n)
            env = dict(os.environ, MC_MIN_RPC_PORT=str(a.port_base + 40), MC_MAX_RPC_PORT=str(a.port_base + 59),
                       MC_TCP_BIND_ADDRESS=HOST, GLOG_minloglevel="1")
            meta = t.meta_url
            cmd = [a.te_bench, "--mode=initiator", "--protocol=tcp", "--metadata_server=" + meta,
                   "--local_server_name=" + name, "--segment_id=" + t.seg, "--operation=" + op,
                   "--block_size=%d" % MIB, "--threads=1", "--batch_size=64", "--duration=%d" % a.interop_secs,
                   "--buffer_size=%d" % GIB, "--report_unit=GB"]
            log("$ " + " ".join(cmd))
            c0, w0 = cpu_ticks(t.pid), time.time()
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.interop_secs + 60)
                text, rc = r.stdout + r.stderr, r.returncode
            except subprocess.TimeoutExpired as e:
                text, rc = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else str(e), 124
            wall = time.time() - w0
            c1 = cpu_ticks(t.pid)
            with open(os.path.join(work, "interop.log"), "a") as f:
                f.write("\n### %s %s\n$ %s\n%s" % (t.name, op, " ".join(cmd), text))
            m = re.search(r"duration ([\d.]+), batch count (\d+), throughput ([\d.]+) GB/s", text)
            res = {"target": t.name, "op": op, "rc": rc, "load1": float(loadavg()),
                   "gbps": float(m.group(3)) if m else None, "batches": int(m.group(2)) if m else None,
                   "target_cpu_pct": (c1 - c0) / TCK / wall * 100}
            if not m or rc != 0:
                res["tail"] = text.strip().splitlines()[-5:]
            out.append(res)
            log("interop %s %s: %s" % (t.name, op, "%.2f GB/s" % res["gbps"] if res["gbps"] else "FAILED %s" % res))
    results["interop"] = out
    return out


# ---------------------------------------------------------------------------------------
# REST GET of a value held by a remote node
# ---------------------------------------------------------------------------------------
def run_wrk(a, url, pids, work, tag):
    cmd = [a.wrk, "-t%d" % a.wrk_threads, "-c%d" % a.wrk_conns, "-d%ds" % a.rest_secs, "--latency",
           "--timeout", "10s", url]
    log("$ " + " ".join(cmd))
    before = {k: cpu_ticks(p) for k, p in pids.items()}
    w0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.rest_secs + 60)
    wall = time.time() - w0
    cpu = {k: (cpu_ticks(p) - before[k]) / TCK / wall * 100 for k, p in pids.items()}
    with open(os.path.join(work, "wrk.log"), "a") as f:
        f.write("\n### %s\n$ %s\n%s%s" % (tag, " ".join(cmd), r.stdout, r.stderr))
    res = {"rps": None, "p99_ms": None, "p50_ms": None, "cpu_pct": cpu, "load1": float(loadavg())}
    m = re.search(r"Requests/sec:\s*([\d.]+)", r.stdout)
    if m:
        res["rps"] = float(m.group(1))
        res["gbps"] = res["rps"] * MIB / 1e9
    for q, k in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s)" % q, r.stdout, re.M)
        if m:
            res[k] = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", r.stdout)
    res["socket_errors"] = m.group(1) if m else None
    m = re.search(r"(\d+) requests in", r.stdout)
    res["requests"] = int(m.group(1)) if m else 0
    return res


def start_holder(a, master, meta, work, tag, port0):
    env = dict(os.environ, MC_TCP_BIND_ADDRESS=HOST, MC_MIN_RPC_PORT=str(port0), MC_MAX_RPC_PORT=str(port0 + 19),
               GLOG_minloglevel="1")
    logp = os.path.join(work, "holder-%s.log" % tag)
    p = start([a.python, os.path.join(HERE, "holder.py"), master, meta, a.key, str(MIB)], logp, env=env,
              stdin=subprocess.PIPE)
    m = wait_until(lambda: grep_file(logp, r"^READY (.*)$"), 90, p, "holder (%s)" % tag)
    st = json.loads(m.group(1))
    if st.get("setup") != 0 or st.get("put") != 0:
        raise RuntimeError("holder (%s) failed: %s" % (tag, st))
    return p


def check_value(url):
    body = http_get(url, 30)
    return len(body) == MIB and body == pattern(MIB)


def rest_mc(a, work):
    logp = os.path.join(work, "mc-master-rest.log")
    mc = start([a.mc_bin, "--host", HOST, "--port", "0", "--rpc-port", "0", "--te-port", "0"] + a.mc_args, logp,
               env=dict(os.environ, RUST_LOG="warn"))
    try:
        wait_until(lambda: grep_file(logp, r"^rpc listening on [\d.]+:(\d+)"), 30, mc, "mc-master rpc port")
        http = int(grep_file(logp, r"^listening on http://[\d.]+:(\d+)").group(1))
        rpc = int(grep_file(logp, r"^rpc listening on [\d.]+:(\d+)").group(1))
        holder = start_holder(a, "%s:%d" % (HOST, rpc), "http://%s:%d/metadata" % (HOST, http), work, "mc",
                              a.port_base + 120)
        try:
            url = "http://%s:%d/api/get/%s" % (HOST, http, a.key)
            q = json.loads(http_get("http://%s:%d/query_key?key=%s" % (HOST, http, a.key)))
            ok = check_value(url)
            res = run_wrk(a, url, {"mc-master": mc.pid, "holder": holder.pid}, work, "mc-master")
            res.update(value_ok=ok, replica=q)
            return res
        finally:
            stop(holder)
    finally:
        stop(mc)


def rest_upstream(a, work):
    rpc, meta, admin, rest = a.port_base + 100, a.port_base + 101, a.port_base + 102, a.port_base + 103
    env = dict(os.environ, MC_TCP_BIND_ADDRESS=HOST)
    master = start([a.master_bin, "--rpc_port", str(rpc), "--metrics_port", str(admin), "--metrics_host", HOST,
                    "--enable_http_metadata_server", "--http_metadata_server_port", str(meta), "--rpc_address", HOST,
                    "--logtostderr"], os.path.join(work, "upstream-master.log"), env=env)
    store = holder = None
    try:
        for p in (rpc, meta):
            wait_until(lambda: port_open(p), 30, master, "upstream master port %d" % p)
        meta_url = "http://%s:%d/metadata" % (HOST, meta)
        holder = start_holder(a, "%s:%d" % (HOST, rpc), meta_url, work, "upstream", a.port_base + 140)
        cfg = {"local_hostname": HOST, "metadata_server": meta_url, "global_segment_size": 0,
               "local_buffer_size": 64 * MIB, "protocol": "tcp", "device_name": "",
               "master_server_address": "%s:%d" % (HOST, rpc)}
        cfg_path = os.path.join(work, "upstream-store.json")
        json.dump(cfg, open(cfg_path, "w"), indent=2)
        senv = dict(env, MC_MIN_RPC_PORT=str(a.port_base + 160), MC_MAX_RPC_PORT=str(a.port_base + 179))
        store = start([a.python, "-m", "mooncake.mooncake_store_service", "--config", cfg_path, "--port", str(rest)],
                      os.path.join(work, "upstream-store.log"), env=senv)
        wait_until(lambda: port_open(rest), 90, store, "upstream store service")
        url = "http://%s:%d/api/get/%s" % (HOST, rest, a.key)
        ok = check_value(url)
        res = run_wrk(a, url, {"store service": store.pid, "holder": holder.pid, "master": master.pid}, work,
                      "upstream")
        res.update(value_ok=ok)
        return res
    finally:
        stop(store)
        stop(holder)
        stop(master)


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def ratio(x, y):
    return "%.2fx" % (x / y) if x and y else "–"


def report(a, results):
    L = []
    L.append("TE TCP data plane, mc-master's target against upstream's, same client "
             "(benches/te_client.rs, v2, one request in flight per lane), %s s per run after %s s warm-up, "
             "best of %d; %s" % (a.secs, a.warmup, a.repeat, results["started"]))
    L.append("")
    L.append("| op | block | lanes | mc-master GB/s | upstream GB/s | ratio | mc CPU % | up CPU % | "
             "mc p50/p99 µs | up p50/p99 µs | load |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in results.get("te", []):
        m, u = row.get("mc-master", {}), row.get("upstream", {})

        def g(r, k, f="%.2f"):
            v = r.get(k)
            return f % v if isinstance(v, (int, float)) else "FAILED"

        L.append("| %s | %s | %d | %s | %s | %s | %s | %s | %s / %s | %s / %s | %.1f / %.1f |" % (
            row["op"].upper(), fmt_size(row["block"]), row["lanes"], g(m, "gbps"), g(u, "gbps"),
            ratio(m.get("gbps"), u.get("gbps")), g(m, "target_cpu_pct", "%.0f"), g(u, "target_cpu_pct", "%.0f"),
            g(m, "p50_us", "%.0f"), g(m, "p99_us", "%.0f"), g(u, "p50_us", "%.0f"), g(u, "p99_us", "%.0f"),
            m.get("load1", 0), u.get("load1", 0)))
    if results.get("interop"):
        L.append("")
        L.append("Upstream's `transfer_engine_bench --mode=initiator` (1 MiB, threads 1, batch 64, %d s):" %
                 a.interop_secs)
        L.append("")
        L.append("| target | op | rc | GB/s | target CPU % | load |")
        L.append("|---|---|---|---|---|---|")
        for r in results["interop"]:
            L.append("| %s | %s | %s | %s | %.0f | %.1f |" % (r["target"], r["op"].upper(), r["rc"],
                                                            "%.2f" % r["gbps"] if r["gbps"] else "FAILED",
                                                            r["target_cpu_pct"], r["load1"]))
    if results.get("rest"):
        L.append("")
        L.append("REST `GET /api/get/<key>` of a 1 MiB value held in an upstream store client's memory "
                 "(wrk -t%d -c%d -d%ds):" % (a.wrk_threads, a.wrk_conns, a.rest_secs))
        L.append("")
        L.append("| system | req/s | GB/s | p50 ms | p99 ms | errors | value ok | CPU % (server, holder) | load |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for name, r in results["rest"].items():
            if "error" in r:
                L.append("| %s | FAILED: %s | | | | | | | |" % (name, r["error"][:200]))
                continue
            cpu = ", ".join("%s %.0f" % (k, v) for k, v in r["cpu_pct"].items())
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %.1f |" % (
                name, "%.0f" % r["rps"] if r["rps"] else "–", "%.2f" % r["gbps"] if r.get("gbps") else "–",
                "%.2f" % r["p50_ms"] if r["p50_ms"] else "–", "%.2f" % r["p99_ms"] if r["p99_ms"] else "–",
                "%d non-2xx; %s" % (r["non2xx"], r["socket_errors"] or "no socket errors"), r.get("value_ok"),
                cpu, r["load1"]))
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mc-bin", required=True)
    ap.add_argument("--client", required=True, help="the te_client binary")
    ap.add_argument("--venv", required=True)
    ap.add_argument("--mc-args", default="", help="extra flags for every mc-master (e.g. '--threads 2')")
    ap.add_argument("--secs", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--repeat", type=int, default=1, help="runs per row and target; the best is reported")
    ap.add_argument("--ops", default="read,write")
    ap.add_argument("--blocks", default="65536,1048576,16777216")
    ap.add_argument("--lanes", default="1,2,4")
    ap.add_argument("--interop-secs", type=int, default=4)
    ap.add_argument("--rest-secs", type=int, default=5)
    ap.add_argument("--wrk", default="wrk")
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--wrk-conns", type=int, default=4)
    ap.add_argument("--port-base", type=int, default=23500,
                    help="ports PORT_BASE..PORT_BASE+180 (below 32768, outside the ephemeral range)")
    ap.add_argument("--key", default="te-bench-1MiB")
    ap.add_argument("--skip", default="", help="comma list of phases to skip: te,interop,rest,rest-upstream")
    ap.add_argument("--out", default=None, help="results folder (default target/bench-te/<date>)")
    a = ap.parse_args()
    a.ops = a.ops.split(",")
    a.blocks = [int(b) for b in a.blocks.split(",")]
    a.lanes = [int(n) for n in a.lanes.split(",")]
    a.mc_args = a.mc_args.split()
    skip = set(filter(None, a.skip.split(",")))
    a.python = os.path.join(a.venv, "bin", "python")
    pkg = subprocess.check_output([a.python, "-c", "import mooncake,os;print(os.path.dirname(mooncake.__file__))"],
                                  text=True).strip()
    a.te_bench = os.path.join(pkg, "transfer_engine_bench")
    a.master_bin = os.path.join(pkg, "mooncake_master")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H-%M-%SZ")
    work = a.out or os.path.join("target", "bench-te", stamp)
    os.makedirs(work, exist_ok=True)
    results = {"started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "load_at_start": open("/proc/loadavg").read().strip(), "cpus": os.cpu_count(),
               "args": {k: v for k, v in vars(a).items()}}
    log("results in %s; load average %s" % (work, results["load_at_start"]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.time()
    try:
        if not {"te", "interop"} <= skip:
            targets = [McTarget(a, work), UpstreamTarget(a, work)]
            for t in targets:
                t.start()
                log("%s target: data port %d, buffer %#x + %d, pid %d" % (t.name, t.data_port, t.base, t.len, t.pid))
            try:
                if "te" not in skip:
                    te_matrix(a, targets, results)
                if "interop" not in skip:
                    interop(a, targets, work, results)
                mlog = open(targets[0].log).read()
                results["mc_target_rejects"] = len(re.findall(r"rejected", mlog))
            finally:
                for t in targets:
                    t.stop()
        if "rest" not in skip:
            results["rest"] = {}
            for name, fn in (("mc-master", rest_mc), ("upstream", rest_upstream)):
                if name == "upstream" and "rest-upstream" in skip:
                    continue
                try:
                    results["rest"][name] = fn(a, work)
                except Exception as e:  # report, keep going
                    log("REST %s failed: %s" % (name, e))
                    results["rest"][name] = {"error": str(e)}
    finally:
        stop_all()
        results["seconds"] = round(time.time() - t0)
        results["load_at_end"] = open("/proc/loadavg").read().strip()
        json.dump(results, open(os.path.join(work, "results.json"), "w"), indent=2, default=str)
        text = report(a, results)
        text += "\nLoad average (1, 5, 15 min) at start: %s; at end: %s; %d CPUs; %d s in all.\n" % (
            results["load_at_start"], results["load_at_end"], results["cpus"], results["seconds"])
        open(os.path.join(work, "report.md"), "w").write(text)
        print(text)
        log("wrote %s/report.md and results.json" % work)


if __name__ == "__main__":
    main()
