#!/usr/bin/env python3
"""Load benchmark: mc-master side by side with upstream Mooncake, driven by wrk on loopback.

Run through benches/load.sh (which builds mc-master, installs wrk and upstream's wheel).
Every server is started by this script on 127.0.0.1, every request goes to 127.0.0.1, and
every process it started is stopped (by PID) when it ends. See docs/benchmarks.md.

All systems (upstream, and mc-master per runtime and thread count) run at once, on
different ports; each phase runs on each of them in turn:
  start -> idle RSS -> preload --keys 64-byte values -> RSS -> wrk per endpoint (each
  endpoint on every system back to back, a different system first each time)
  -> preload 1 MiB values, 1 MiB GET throughput -> top up to --keys-large keys,
  /get_all_keys -> REST PUT (new key per request) -> 1 MiB PUT throughput -> stop.

Each wrk run also accounts CPU, from /proc: the utime+stime the server spent during the run
(upstream: master and store service summed), wrk's own CPU (its rusage, from wait4), the
server's run-queue wait (schedstat) and the whole machine's busy time. The report's second
table gives server and wrk CPU per request, the cores the server used, and for mc-master the
cost ratio (upstream server CPU per request / mc-master's) and the ceiling: the req/s ratio
mc-master would reach at zero CPU of its own, since wrk and the server share the cores, so
requests/s is at most cores / (server + wrk CPU per request). results.json has it all.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "requests.lua")
MIB = 1 << 20

# (id, label, kind, path, wrk env); kind decides which port of upstream serves it:
# "admin" = master --metrics_port, "rest" = store service. mc-master serves all on one port.
ENDPOINTS = [
    ("health", "GET /health", "admin", "/health", {}),
    ("metrics", "GET /metrics", "admin", "/metrics", {}),
    ("query_key", "GET /query_key", "admin", "/query_key?key=", {"BENCH_MODE": "single"}),
    ("batch10", "GET /batch_query_keys (10 keys)", "admin", "/batch_query_keys?keys=",
     {"BENCH_MODE": "batch", "BENCH_BATCH": "10"}),
    ("batch100", "GET /batch_query_keys (100 keys)", "admin", "/batch_query_keys?keys=",
     {"BENCH_MODE": "batch", "BENCH_BATCH": "100"}),
    ("all_keys_small", "GET /get_all_keys ({small} keys)", "admin", "/get_all_keys", {}),
    ("segments", "GET /get_segments_detail", "admin", "/get_segments_detail", {}),
    ("rest_get", "GET /api/get/{{key}} (64 B)", "rest", "/api/get/", {"BENCH_MODE": "single"}),
    ("rest_exist", "GET /api/exist/{{key}}", "rest", "/api/exist/", {"BENCH_MODE": "single"}),
]
ALL_KEYS_LARGE = ("all_keys_large", "GET /get_all_keys ({large} keys)", "admin", "/get_all_keys", {})
REST_PUT = ("rest_put", "PUT /api/put (new key, 64 B)", "rest", "/api/put", {"BENCH_MODE": "put"})
BIG_GET = ("big_get", "GET /api/get/{{key}} (1 MiB)", "rest", "/api/get/", {"BENCH_MODE": "bigget"})
# 1 MiB puts alternate with a DELETE of the key just put (one connection per wrk thread),
# so they measure writing values, not evicting a full segment; MB/s counts the puts only.
BIG_PUT = ("big_put", "PUT /api/put JSON (new key, 1 MiB)", "rest", "/api/put",
           {"BENCH_MODE": "put", "BENCH_VALUE_LEN": str(MIB), "BENCH_DELETE_PATH": "/api/remove/"})
BIG_PUT_RAW = ("big_put_raw", "PUT /api/put/{{key}} raw (new key, 1 MiB)", "rest", "/api/put/",
               {"BENCH_MODE": "rawput", "BENCH_VALUE_LEN": str(MIB), "BENCH_DELETE_PATH": "/api/remove/"})

RUN_TAG = str(int(time.time()))


def log(msg):
    print("[load %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid):
    """CPU time (utime + stime, /proc/PID/stat fields 14 and 15) of a process, all its threads
    included, in seconds; None if it cannot be read."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rpartition(")")[2].split()  # fields from 3 (state) on
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def proc_runq_wait_s(pid):
    """Time the threads of a process spent runnable but waiting for a CPU (second field of
    /proc/PID/task/*/schedstat), in seconds; None if unreadable (no schedstats in the kernel)."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return None
    total, seen = 0, False
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[1])
                seen = True
        except (OSError, IndexError, ValueError):
            pass  # the thread just ended
    return total / 1e9 if seen else None


def machine_busy_s():
    """CPU time of the whole machine that was not idle (all CPUs, /proc/stat), in seconds."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return (sum(v) - v[3] - v[4]) / CLK_TCK  # less idle and iowait
    except (OSError, ValueError):
        return None


def cpu_sample(pids):
    """{name: (cpu s, run-queue wait s)} of the server processes, the machine's busy time, now."""
    return {k: (proc_cpu_s(p), proc_runq_wait_s(p)) for k, p in pids.items()}, machine_busy_s(), time.monotonic()


def cpu_account(res, before, after, wrk_rusage):
    """Fills res with the CPU used between two cpu_sample()s: by the server processes, by wrk
    (its exact rusage) and by the whole machine, per request and in cores (CPU s / wall s)."""
    (b, mb, t0), (a, ma, t1) = before, after
    wall = t1 - t0
    by_proc = {k: round(a[k][0] - b[k][0], 6) for k in b if b[k][0] is not None and a[k][0] is not None}
    waits = [a[k][1] - b[k][1] for k in b if b[k][1] is not None and a[k][1] is not None]
    res["cpu_wall_s"] = wall
    res["server_cpu_s"] = sum(by_proc.values()) if by_proc else None
    res["server_cpu_by_process_s"] = by_proc
    res["server_runq_wait_s"] = sum(waits) if waits else None
    res["wrk_cpu_s"] = wrk_rusage.ru_utime + wrk_rusage.ru_stime
    res["wrk_user_s"], res["wrk_sys_s"] = wrk_rusage.ru_utime, wrk_rusage.ru_stime
    res["machine_busy_cores"] = (ma - mb) / wall if ma is not None and mb is not None and wall > 0 else None
    n = res.get("requests") or 0
    for who in ("server", "wrk"):
        cpu = res["%s_cpu_s" % who]
        res["%s_us_per_req" % who] = cpu * 1e6 / n if cpu is not None and n else None
        res["%s_cores" % who] = cpu / wall if cpu is not None and wall > 0 else None
    w = res["server_runq_wait_s"]
    res["server_runq_us_per_req"] = w * 1e6 / n if w is not None and n else None


def port_free(port):
    s = socket.socket()
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_port(port, timeout, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def stop(proc, wait=10):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=wait)
    except Exception:
        try:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except Exception:
            pass


# ---------------------------------------------------------------------------------------
# minimal HTTP/1.1 client with pipelining (preload of mc-master, checks)
# ---------------------------------------------------------------------------------------
class Http:
    def __init__(self, port):
        self.sock = socket.create_connection((HOST, port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _read_response(self):
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise IOError("connection closed")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if m:
            n = int(m.group(1))
            while len(rest) < n:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise IOError("connection closed")
                rest += chunk
            body, self.buf = rest[:n], rest[n:]
        elif re.search(rb"(?i)\r\ntransfer-encoding:\s*chunked", head):
            body = b""
            while True:
                while b"\r\n" not in rest:
                    rest += self.sock.recv(1 << 20)
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(rest) < size + 2:
                    rest += self.sock.recv(1 << 20)
                body += rest[:size]
                rest = rest[size + 2:]
                if size == 0:
                    break
            self.buf = rest
        else:
            body, self.buf = rest, b""
        return status, body

    def pipeline(self, requests):
        """Sends raw requests back to back, returns [(status, body)]."""
        self.sock.sendall(b"".join(requests))
        return [self._read_response() for _ in requests]

    def request(self, method, path, body=b"", headers=None):
        return self.pipeline([build_request(method, path, body, headers)])[0]


def build_request(method, path, body=b"", headers=None):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % HOST]
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    if body or method in ("PUT", "POST"):
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def json_put(key, value_len):
    body = ('{"key":"%s","value":"%s"}' % (key, "v" * value_len)).encode()
    return build_request("PUT", "/api/put", body, {"Content-Type": "application/json"})


def http_get(port, path):
    c = Http(port)
    try:
        return c.request("GET", path)
    finally:
        c.close()


# ---------------------------------------------------------------------------------------
# systems under test
# ---------------------------------------------------------------------------------------
class McMaster:
    def __init__(self, args, runtime, threads, workdir, port):
        self.name = "mc-master %s t%d" % (runtime, threads)
        self.short = "mc-%s-t%d" % (runtime, threads)
        self.args, self.runtime, self.threads, self.workdir = args, runtime, threads, workdir
        self.port = port
        self.proc = None

    def ports(self):
        return [self.port]

    def start(self):
        cmd = [self.args.mc_bin, "--host", HOST, "--port", str(self.port), "--rpc-port", "off",
               "--runtime", self.runtime, "--threads", str(self.threads),
               "--global-segment-size", self.args.segment_size]
        self.cmd = " ".join(cmd)
        log("$ " + self.cmd)
        out = open(os.path.join(self.workdir, self.short + ".log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, RUST_LOG="warn"))
        if not wait_port(self.port, 30, self.proc):
            raise RuntimeError("%s did not start; see %s.log" % (self.name, self.short))

    def stop(self):
        stop(self.proc)

    def pids(self):
        return {"mc-master": self.proc.pid}

    def url(self, kind):
        return "http://%s:%d" % (HOST, self.port)

    def preload(self, prefix, first, count, value_len, fmt="%07d"):
        c = Http(self.port)
        try:
            per = max(1, min(1000, (8 * MIB) // max(1, value_len)))
            done = 0
            while done < count:
                n = min(per, count - done)
                reqs = [json_put(prefix + (fmt % (first + done + j)), value_len) for j in range(n)]
                bad = [s for s, _ in c.pipeline(reqs) if s != 200]
                if bad:
                    raise RuntimeError("preload: %d puts failed (status %s)" % (len(bad), bad[0]))
                done += n
        finally:
            c.close()


class Upstream:
    def __init__(self, args, workdir):
        self.name = "upstream"
        self.short = "upstream"
        self.args, self.workdir = args, workdir
        self.rpc, self.admin, self.meta, self.rest = args.up_rpc_port, args.up_admin_port, args.up_meta_port, args.up_rest_port
        self.master = self.store = None
        self.py = os.path.join(args.venv, "bin", "python")
        pkg = subprocess.check_output([self.py, "-c", "import mooncake,os;print(os.path.dirname(mooncake.__file__))"],
                                      text=True).strip()
        self.master_bin = os.path.join(pkg, "mooncake_master")
        # The transfer engine would otherwise listen on (and advertise) the first non-loopback
        # interface; keep every socket of the benchmark on loopback.
        self.env = dict(os.environ, MC_TCP_BIND_ADDRESS=HOST)

    def ports(self):
        return [self.rpc, self.admin, self.meta, self.rest]

    def version(self):
        r = subprocess.run([self.master_bin, "--version"], capture_output=True, text=True)
        return (r.stdout.strip() or r.stderr.strip()).splitlines()[0][:120]

    def start(self):
        cmd = [self.master_bin, "--rpc_port", str(self.rpc), "--metrics_port", str(self.admin),
               "--metrics_host", HOST, "--enable_http_metadata_server", "--http_metadata_server_port",
               str(self.meta), "--rpc_address", HOST, "--rpc_thread_num", str(self.args.up_rpc_threads),
               "--logtostderr"]
        self.cmd = " ".join(cmd)
        log("$ " + self.cmd)
        self.master = subprocess.Popen(cmd, stdout=open(os.path.join(self.workdir, "upstream-master.log"), "w"),
                                       stderr=subprocess.STDOUT, env=self.env)
        for p in (self.rpc, self.admin, self.meta):
            if not wait_port(p, 30, self.master):
                raise RuntimeError("upstream master port %d did not open; see upstream-master.log" % p)
        cfg = {
            "local_hostname": HOST,
            "metadata_server": "http://%s:%d/metadata" % (HOST, self.meta),
            "global_segment_size": parse_size(self.args.segment_size),
            "local_buffer_size": 256 * MIB,
            "protocol": "tcp",
            "device_name": "",
            "master_server_address": "%s:%d" % (HOST, self.rpc),
        }
        cfg_path = os.path.join(self.workdir, "upstream-store.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2)
        cmd = [self.py, "-m", "mooncake.mooncake_store_service", "--config", cfg_path, "--port", str(self.rest)]
        self.store_cmd = " ".join(cmd)
        log("$ " + self.store_cmd)
        self.store = subprocess.Popen(cmd, stdout=open(os.path.join(self.workdir, "upstream-store.log"), "w"),
                                      stderr=subprocess.STDOUT, env=self.env)
        if not wait_port(self.rest, 90, self.store):
            raise RuntimeError("upstream store REST port did not open; see upstream-store.log")

    def stop(self):
        stop(self.store)
        stop(self.master)

    def pids(self):
        return {"master": self.master.pid, "store service": self.store.pid}

    def url(self, kind):
        return "http://%s:%d" % (HOST, self.admin if kind == "admin" else self.rest)

    def preload(self, prefix, first, count, value_len, fmt="%07d"):
        cmd = [self.py, os.path.join(HERE, "upstream_loader.py"), "%s:%d" % (HOST, self.rpc),
               "http://%s:%d/metadata" % (HOST, self.meta), prefix, str(first), str(count), str(value_len), fmt]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env, text=True)
        if r.returncode != 0:
            raise RuntimeError("upstream preload failed:\n" + r.stdout[-2000:])


def parse_size(s):
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)(i?B)?", s.strip(), re.I)
    if not m:
        raise ValueError("bad size %r" % s)
    return int(m.group(1)) << (10 * " KMGT".index((m.group(2) or " ").upper()))


# ---------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def run_wrk(args, base, path, env, threads, conns, duration, workdir, tag, pids):
    """wrk against base+path: plain wrk for a fixed request, requests.lua when env sets BENCH_MODE.
    Also accounts the CPU used meanwhile by the processes `pids` ({name: pid}, the server) and
    by wrk (see cpu_account)."""
    cmd = [args.wrk, "-t%d" % threads, "-c%d" % conns, "-d%s" % duration, "--latency", "--timeout", args.wrk_timeout]
    e = dict(os.environ)
    if "BENCH_MODE" in env:
        cmd += ["-s", LUA]
        e.update(BENCH_RUN=RUN_TAG + tag.replace(":", "-"), BENCH_KEYS=str(args.keys), BENCH_PATH=path)
        e.update(env)
        url = base + "/"
    else:
        url = base + path
    cmd.append(url)
    before = cpu_sample(pids)
    with tempfile.TemporaryFile() as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=e)
        # wait4 instead of p.wait(): it gives wrk's own rusage, i.e. its exact CPU time
        _, status, rusage = os.wait4(p.pid, 0)
        after = cpu_sample(pids)
        p.returncode = os.waitstatus_to_exitcode(status)
        f.seek(0)
        out = f.read().decode(errors="replace")
    with open(os.path.join(workdir, "wrk.log"), "a") as f:
        f.write("\n### %s %s %s\n$ %s\n%s" % (tag, url, json.dumps(env)[:200], " ".join(cmd), out))
    res = {"rps": None, "p99_ms": None, "requests": 0, "errors": 0, "non2xx": 0, "timeouts": 0, "seconds": None}
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"^\s*99%\s+(\S+)", out, re.M)
    if m:
        res["p99_ms"] = to_ms(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if m:
        res["requests"] = int(m.group(1))
        res["seconds"] = to_ms(m.group(2) + m.group(3)) / 1e3
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] = sum(int(x) for x in m.groups()[:3])
        res["timeouts"] = int(m.group(4))
    cpu_account(res, before, after, rusage)
    if res["rps"] is None:
        log("wrk gave no result for %s (%s): %s" % (tag, url, out.strip()[-300:]))
    return res


# ---------------------------------------------------------------------------------------
# one system, start to stop
# ---------------------------------------------------------------------------------------
def bench_all(args, systems, workdir):
    """Runs every phase on every system. All systems run at once (idle but for the one being
    measured), and each endpoint is measured on each system back to back, starting with a
    different system each time, so that the load of other processes on the machine, which
    drifts over minutes, weighs on every system alike."""
    runs = [{"name": s.name, "results": {}} for s in systems]
    loads = [loadavg()]
    for s in systems:
        for p in s.ports():
            if not port_free(p):
                raise RuntimeError("port %d is busy; pick other ports (see --help)" % p)
    for s, out in zip(systems, runs):
        s.start()
        out["command"] = s.cmd
        if isinstance(s, Upstream):
            out["store_command"] = s.store_cmd
    time.sleep(2)

    def rss(key):
        for s, out in zip(systems, runs):
            out[key] = {k: rss_kib(p) for k, p in s.pids().items()}

    rss("rss_idle_kib")
    for s in systems:
        t0 = time.time()
        s.preload("key-", 0, args.keys, 64)
        log("%s: preloaded %d keys in %.1f s" % (s.name, args.keys, time.time() - t0))
        status, body = http_get(s.port if isinstance(s, McMaster) else s.admin, "/query_key?key=key-0000001")
        if status != 200:
            raise RuntimeError("%s: query_key after preload: %d %r" % (s.name, status, body[:200]))
    time.sleep(1)
    rss("rss_loaded_kib")

    names = {"small": fmt_count(args.keys), "large": fmt_count(args.keys_large)}
    rounds = [0]

    def each(ep, conns=None, duration=None, only_mc=False):
        """Measures `ep` on every system, rotating which one goes first."""
        eid, label, kind, path, env = ep
        k = rounds[0]
        rounds[0] += 1
        order = list(range(len(systems)))
        order = order[k % len(order):] + order[:k % len(order)]
        for i in order:
            s, out = systems[i], runs[i]
            if only_mc and not isinstance(s, McMaster):
                continue
            res = run_wrk(args, s.url(kind), path, env, args.threads, conns or args.connections,
                          duration or args.duration, workdir, "%s:%s" % (s.short, eid), s.pids())
            res["label"] = label.format(**names)
            res["loadavg"] = loadavg()
            out["results"][eid] = res
            log("%-20s %-42s %10s req/s  p99 %s ms  errors %d/%d/%d  (load %s)  cpu us/req: server %s "
                "wrk %s  cores: server %s wrk %s machine %s  server run-queue wait %s us/req" % (
                    s.name, res["label"], "%.0f" % res["rps"] if res["rps"] is not None else "-",
                    res["p99_ms"], res["non2xx"], res["errors"], res["timeouts"], res["loadavg"],
                    fmt_us(res["server_us_per_req"]), fmt_us(res["wrk_us_per_req"]),
                    fmt_cores(res["server_cores"]), fmt_cores(res["wrk_cores"]),
                    fmt_cores(res["machine_busy_cores"]), fmt_us(res["server_runq_us_per_req"])))
        loads.append(loadavg())

    for ep in ENDPOINTS:
        if not args.only or ep[0] in args.only:
            each(ep)

    big = not args.only or any(x in args.only for x in ("big_get", "big_put", "big_put_raw"))
    if big:
        for s in systems:
            s.preload("big-", 0, args.big_keys, MIB, "%05d")
        each(BIG_GET[:4] + (dict(BIG_GET[4], BENCH_BIG=str(args.big_keys)),), args.big_connections, args.big_duration)

    if (not args.only or "all_keys_large" in args.only) and args.keys_large > args.keys:
        for s in systems:
            t0 = time.time()
            s.preload("key-", args.keys, args.keys_large - args.keys, 64)
            log("%s: topped up to %d keys in %.1f s" % (s.name, args.keys_large, time.time() - t0))
        each(ALL_KEYS_LARGE)

    if not args.only or "rest_put" in args.only:
        each(REST_PUT)
    if big:
        each(BIG_PUT, args.threads, args.big_duration)
        each(BIG_PUT_RAW, args.threads, args.big_duration, only_mc=True)
    rss("rss_end_kib")
    for s in systems:
        s.stop()
    return runs, loads


def fmt_count(n):
    return "%dk" % (n // 1000) if n % 1000 == 0 else str(n)


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
ORDER = [e[0] for e in ENDPOINTS] + ["all_keys_large", "rest_put"]
BIG = ["big_get", "big_put", "big_put_raw"]


def fmt_rps(r):
    if r is None or r.get("rps") is None:
        return "-"
    s = "%.0f" % r["rps"] if r["rps"] >= 100 else "%.1f" % r["rps"]
    bad = r.get("non2xx", 0) + r.get("errors", 0) + r.get("timeouts", 0)
    return s + (" (!%d)" % bad if bad else "")


def fmt_ms(v):
    if v is None:
        return "-"
    return "%.2f" % v if v < 10 else "%.0f" % v


def fmt_us(v):
    if v is None:
        return "-"
    return "%.2f" % v if v < 10 else "%.1f" % v if v < 100 else "%.0f" % v


def fmt_cores(v):
    return "-" if v is None else "%.2f" % v


def cpu_ratios(runs):
    """Adds to every mc-master result that upstream also has: cost_ratio = upstream server
    us/req / mc-master server us/req, and ceiling = (upstream server + upstream wrk us/req) /
    mc-master wrk us/req, the ratio mc-master would reach if its own CPU per request were zero
    while wrk and the server share the cores (throughput = cores / CPU per request)."""
    up = next((r for r in runs if r["name"] == "upstream"), None)
    if not up:
        return
    for m in runs:
        if m is up:
            continue
        for eid, x in m["results"].items():
            u = up["results"].get(eid)
            if not u:
                continue
            us, uw = u.get("server_us_per_req"), u.get("wrk_us_per_req")
            ms, mw = x.get("server_us_per_req"), x.get("wrk_us_per_req")
            x["cost_ratio"] = us / ms if us and ms else None
            x["ceiling"] = (us + uw) / mw if us is not None and uw is not None and mw else None


def mbps(r, eid):
    """MB/s (10^6) of successful 1 MiB transfers; put rows count only the puts (every other request)."""
    if not r or not r.get("seconds"):
        return None
    ok = r["requests"] - r.get("non2xx", 0)
    if eid != "big_get":
        ok = (r["requests"] + 1) // 2 - r.get("non2xx", 0)
    return ok * MIB / r["seconds"] / 1e6


def report(runs, args, meta):
    up = next((r for r in runs if r["name"] == "upstream"), None)
    mcs = [r for r in runs if r["name"] != "upstream"]
    lines = []
    lines.append("wrk -t%d -c%d -d%s --timeout %s on 127.0.0.1; %d preloaded 64-byte values (%s keys for the large "
                 "/get_all_keys); 1 MiB GET: -c%d -d%s; 1 MiB PUT: -c%d -d%s, each PUT followed by a DELETE of its "
                 "key" % (args.threads, args.connections, args.duration, args.wrk_timeout, args.keys,
                          fmt_count(args.keys_large), args.big_connections, args.big_duration, args.threads,
                          args.big_duration))
    lines.append("machine: %s" % meta["machine"])
    ones = [float(x.split()[0]) for x in meta.get("loadavg", [])]
    if ones:
        lines.append("1-minute load average during the run: %.2f to %.2f (sampled after each endpoint)" % (
            min(ones), max(ones)))
    lines.append("")
    head = ["endpoint"]
    if up:
        head += ["upstream req/s", "upstream p99 ms"]
    for m in mcs:
        head += ["%s req/s" % m["name"], "p99 ms"] + (["ratio"] if up else [])
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for eid in ORDER:
        label = next((r["results"][eid]["label"] for r in runs if eid in r["results"]), None)
        if label is None:
            continue
        row = [label]
        u = up["results"].get(eid) if up else None
        if up:
            row += [fmt_rps(u), fmt_ms(u and u["p99_ms"])]
        for m in mcs:
            x = m["results"].get(eid)
            row += [fmt_rps(x), fmt_ms(x and x["p99_ms"])]
            if up:
                ratio = x["rps"] / u["rps"] if x and u and x.get("rps") and u.get("rps") else None
                row.append("%.1fx" % ratio if ratio else "-")
        lines.append("| " + " | ".join(row) + " |")
    # throughput rows
    for eid in BIG:
        label = next((r["results"][eid]["label"] for r in runs if eid in r["results"]), None)
        if label is None:
            continue
        row = [label + " MB/s"]
        u = up["results"].get(eid) if up else None
        uv = mbps(u, eid)
        if up:
            row += ["%.0f MB/s" % uv if uv is not None else "-", fmt_ms(u and u["p99_ms"])]
        for m in mcs:
            x = m["results"].get(eid)
            v = mbps(x, eid)
            row += ["%.0f MB/s" % v if v is not None else "-", fmt_ms(x and x["p99_ms"])]
            if up:
                row.append("%.1fx" % (v / uv) if v and uv else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += cpu_table(runs)
    lines.append("")
    lines.append("Resident memory (VmRSS, MiB): idle / after preloading %d keys / at the end" % args.keys)
    for r in runs:
        parts = []
        for k in r.get("rss_idle_kib", {}):
            vals = [r.get(s, {}).get(k) for s in ("rss_idle_kib", "rss_loaded_kib", "rss_end_kib")]
            parts.append("%s %s" % (k, " / ".join("%.1f" % (v / 1024) if v else "-" for v in vals)))
        lines.append("- %s: %s" % (r["name"], "; ".join(parts)))
    lines.append("")
    lines.append("(!N) = N responses that were not 2xx, socket errors or time-outs during that run.")
    return "\n".join(lines)


def cpu_table(runs):
    """CPU per request of the server and of wrk, per endpoint and system (see cpu_account)."""
    up = next((r for r in runs if r["name"] == "upstream"), None)
    mcs = [r for r in runs if r["name"] != "upstream"]
    lines = ["CPU per request, from /proc: server = utime+stime of the server process(es) during the wrk "
             "run (upstream: master and store service summed), wrk = wrk's own rusage; cores = CPU s / "
             "wall s of the run."]
    head = ["endpoint"]
    if up:
        head += ["upstream server µs/req", "wrk µs/req", "server cores"]
    for m in mcs:
        head += ["%s server µs/req" % m["name"], "wrk µs/req", "server cores"] + (["cost ratio", "ceiling"] if up else [])
    lines.append("")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for eid in ORDER + BIG:
        label = next((r["results"][eid]["label"] for r in runs if eid in r["results"]), None)
        if label is None:
            continue
        row = [label + (" (PUT+DELETE)" if eid in ("big_put", "big_put_raw") else "")]
        for r in ([up] if up else []) + mcs:
            x = r["results"].get(eid) or {}
            row += [fmt_us(x.get("server_us_per_req")), fmt_us(x.get("wrk_us_per_req")), fmt_cores(x.get("server_cores"))]
            if up and r is not up:
                row.append("%.1fx" % x["cost_ratio"] if x.get("cost_ratio") else "-")
                row.append("%.1fx" % x["ceiling"] if x.get("ceiling") else "-")
        lines.append("| " + " | ".join(row) + " |")
    if up:
        lines.append("")
        lines.append("cost ratio = upstream server µs/req / mc-master server µs/req. ceiling = (upstream server + "
                     "upstream wrk µs/req) / mc-master wrk µs/req: the req/s ratio mc-master would reach if its own "
                     "CPU per request were zero, when wrk and the server saturate the same cores.")
    if any(eid in r["results"] for r in runs for eid in BIG):
        lines.append("1 MiB rows: per wrk request; the PUT rows count the PUT and the DELETE that follows it as two requests.")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mc-bin", default="target/release/mc-master")
    ap.add_argument("--venv", default="target/bench-venv")
    ap.add_argument("--wrk", default="wrk")
    ap.add_argument("--runtimes", default="mio", help="comma-separated mc-master runtimes")
    ap.add_argument("--mc-threads", default="2,4",
                    help="comma-separated mc-master --threads values (default: the cores of this machine kind, and the 4 HTTP threads of upstream)")
    ap.add_argument("--no-upstream", action="store_true")
    ap.add_argument("--no-mc", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections")
    ap.add_argument("--duration", default="10s", help="wrk duration per endpoint")
    ap.add_argument("--wrk-timeout", default="10s")
    ap.add_argument("--big-connections", type=int, default=8, help="wrk connections for 1 MiB values")
    ap.add_argument("--big-duration", default="5s")
    ap.add_argument("--keys", type=int, default=10000)
    ap.add_argument("--keys-large", type=int, default=100000)
    ap.add_argument("--big-keys", type=int, default=64)
    ap.add_argument("--segment-size", default="1GiB")
    ap.add_argument("--up-rpc-threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated endpoint ids (health, metrics, query_key, ...)")
    ap.add_argument("--mc-port", type=int, default=18080, help="first mc-master port (one per instance)")
    ap.add_argument("--up-rpc-port", type=int, default=50251)
    ap.add_argument("--up-admin-port", type=int, default=19003)
    ap.add_argument("--up-meta-port", type=int, default=18190)
    ap.add_argument("--up-rest-port", type=int, default=18180)
    ap.add_argument("--out", default="target/bench-load")
    args = ap.parse_args()
    args.only = [x for x in args.only.split(",") if x]
    if shutil.which(args.wrk) is None:
        sys.exit("wrk not found")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = os.path.join(args.out, stamp)
    os.makedirs(workdir, exist_ok=True)
    meta = {
        "machine": "%d CPUs (%s), %s; load average at start %s" % (
            os.cpu_count(), cpu_model(), mem_total(), loadavg()),
        "started": stamp,
    }
    log("results and logs in %s" % workdir)

    systems = []
    if not args.no_upstream:
        up = Upstream(args, workdir)
        meta["upstream"] = up.version()
        systems.append(up)
    if not args.no_mc:
        for rt in [x for x in args.runtimes.split(",") if x]:
            for t in [int(x) for x in args.mc_threads.split(",") if x]:
                systems.append(McMaster(args, rt, t, workdir, args.mc_port + len(systems)))

    t_start = time.time()
    try:
        runs, loads = bench_all(args, systems, workdir)
    finally:
        for s in systems:
            s.stop()
    meta["loadavg"] = loads
    cpu_ratios(runs)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"meta": meta, "args": vars(args), "runs": runs}, f, indent=2)
    text = report(runs, args, meta)
    text += "\nupstream: %s\ntotal time: %.0f s\n" % (meta.get("upstream", "-"), time.time() - t_start)
    with open(os.path.join(workdir, "report.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def mem_total():
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            return "%.0f GiB RAM" % (kib / (1 << 20))
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
