#!/usr/bin/env python3
"""Scale benchmark: what a master does with millions of keys (issue 16, point 2).

Run through benches/scale.sh (which installs what is missing and builds mc-master and the
client, benches/scale_client.rs). Every server listens on 127.0.0.1 and every process this
script starts is stopped by its PID. See docs/benchmarks.md, "Scale".

For each key count N (--keys) and each path, two masters of the same kind run side by side:
the measured one ("big", N keys) and a reference one ("ref", --ref-keys keys, 10k), so that
lookups at N and at 10k are measured back to back, in alternating rounds, by the same client.

RPC path (mc-master and upstream's mooncake_master; upstream up to --upstream-max-keys):
  the client (scale_client, one upstream-protocol RPC client with a heartbeat) mounts
  segments of fake address space sized so that N values of --value-len bytes fill them to
  --fill (below the --high-watermark), loads the keys with pipelined BatchPutStart +
  BatchPutEnd, then: RSS, lookups (GetReplicaList and GET /query_key), GET /get_all_keys with
  the master's VmRSS sampled, eviction of 10 % (a write that crosses the watermark, with
  --eviction-ratio 0.1), RemoveAll(force), each of the last two with a 1 ms lookup probe.
REST path (mc-master only; upstream's REST path is its Python store service, far too slow
  for a million keys): the same through PUT /api/put/{key} (raw body) into mc-master's own
  start-up segment, DELETE /api/remove_all at the end.
"""

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import time

HOST = "127.0.0.1"
MIB = 1 << 20
# /get_all_keys counts as streamed in bounded memory when the master's RSS grows by less than
# this while it lists (whatever the key count).
GAK_BOUND_MIB = 16


def log(msg):
    print("[scale %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def status_kib(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out.get("VmRSS"), out.get("VmHWM")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


# Port and process helpers shared with the load benchmark (same directory layout: benches/).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "load"))
from load import port_free, stop, wait_port  # noqa: E402


def fmt_keys(n):
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return "%dM" % (n // 1_000_000)
    if n >= 1000 and n % 1000 == 0:
        return "%dk" % (n // 1000)
    return str(n)


# ---------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------
class Client:
    """One scale_client session: a command per line in, a JSON object per line out."""

    def __init__(self, path, logf):
        self.proc = subprocess.Popen([path, "session"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=logf, text=True, bufsize=1)

    def cmd(self, line, check=True):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        if not out:
            raise RuntimeError("scale_client exited during: %s" % line)
        r = json.loads(out)
        if check and isinstance(r, dict) and "error" in r:
            raise RuntimeError("scale_client %s: %s" % (line.split()[0], r["error"]))
        return r

    def close(self):
        hb = None
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                hb = json.loads(self.proc.stdout.readline() or "null")
                self.proc.wait(timeout=10)
            except Exception:
                pass
        stop(self.proc, wait=20)
        return hb


class Master:
    """A master process: mc-master or upstream's mooncake_master."""

    def __init__(self, kind, args, workdir, tag, http_port, rpc_port, segment_size=0, rpc=True):
        self.kind, self.args, self.workdir, self.tag = kind, args, workdir, tag
        self.http_port, self.rpc_port = http_port, rpc_port
        for p in (http_port, rpc_port):
            if p and not port_free(p):
                raise RuntimeError("port %d is in use (pick others with --base-port)" % p)
        lease = str(args.lease_ttl_ms)
        if kind == "mc":
            cmd = [args.mc_bin, "--host", HOST, "--port", str(http_port),
                   "--rpc-port", str(rpc_port) if rpc else "off",
                   "--threads", str(args.mc_threads), "--global-segment-size", str(segment_size),
                   "--eviction-high-watermark-ratio", str(args.high_watermark),
                   "--eviction-ratio", str(args.eviction_ratio),
                   "--default-kv-lease-ttl", lease, "--client-ttl", str(args.client_ttl)]
            env = dict(os.environ, RUST_LOG="warn")
        else:
            cmd = [args.up_bin, "--rpc_port", str(rpc_port), "--rpc_address", HOST,
                   "--metrics_port", str(http_port), "--metrics_host", HOST,
                   "--rpc_thread_num", str(args.up_rpc_threads),
                   "--eviction_high_watermark_ratio", str(args.high_watermark),
                   "--eviction_ratio", str(args.eviction_ratio),
                   "--default_kv_lease_ttl", lease, "--client_ttl", str(args.client_ttl), "--logtostderr"]
            env = dict(os.environ, MC_TCP_BIND_ADDRESS=HOST)
        self.cmd = " ".join(cmd)
        log("$ " + self.cmd)
        self.logf = open(os.path.join(workdir, "%s.log" % tag), "w")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        for p in (http_port, rpc_port if rpc else None):
            if p and not wait_port(p, 30, self.proc):
                raise RuntimeError("%s did not open port %d; see %s.log" % (kind, p, tag))
        self.pid = self.proc.pid

    @property
    def http(self):
        return "%s:%d" % (HOST, self.http_port)

    @property
    def rpc(self):
        return "%s:%d" % (HOST, self.rpc_port)

    def stop(self):
        stop(self.proc, wait=20)
        self.logf.close()


def pin(pid, cpus):
    """Sets the CPU affinity of every thread of a process."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return
    for t in tids:
        try:
            os.sched_setaffinity(int(t), cpus)
        except OSError:
            pass  # the thread just ended


def rss_mib(pid):
    rss, hwm = status_kib(pid)
    return (rss / 1024 if rss is not None else None), (hwm / 1024 if hwm is not None else None)


# ---------------------------------------------------------------------------------------
# one run: a system, a path, a key count
# ---------------------------------------------------------------------------------------
def load_chunks(client, what, first, count, step, argv_fn, pid):
    """Loads [first, first+count) in chunks of `step` (progress in the log); returns totals."""
    tot = {"keys": 0, "errors": 0, "secs": 0.0, "client_cpu_s": 0.0, "first_error": None}
    cpu0 = cpu_s(pid)
    done = 0
    while done < count:
        n = min(step, count - done)
        r = client.cmd(argv_fn(first + done, n))
        tot["keys"] += r["keys"]
        tot["errors"] += r.get("errors", 0) + r.get("start_errors", 0) + r.get("end_errors", 0)
        tot["secs"] += r["secs"]
        tot["client_cpu_s"] += r["client_cpu_s"]
        tot["first_error"] = tot["first_error"] or r.get("first_error")
        done += n
        if count > step:
            log("  %s: %s of %s keys, %.0f keys/s" % (what, fmt_keys(first + done), fmt_keys(first + count),
                                                     r["keys"] / max(r["secs"], 1e-9)))
    cpu1 = cpu_s(pid)
    tot["keys_per_s"] = tot["keys"] / tot["secs"] if tot["secs"] else None
    tot["master_cpu_s"] = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
    if tot["errors"]:
        raise RuntimeError("%s: %d keys failed, first: %s" % (what, tot["errors"], tot["first_error"]))
    return tot


def run_one(args, kind, path, n, workdir):
    name = "%s-%s-%s" % (kind, path, fmt_keys(n))
    log("== %s (%s keys, path %s)" % ("mc-master" if kind == "mc" else "upstream", fmt_keys(n), path))
    res = {"system": kind, "path": path, "keys": n, "value_len": args.value_len, "loadavg_start": loadavg()}
    v = args.value_len
    bp = args.base_port
    ports = {("big", "http"): bp, ("big", "rpc"): bp + 1, ("ref", "http"): bp + 10, ("ref", "rpc"): bp + 11}
    masters, clients = [], []
    try:
        def size_for(keys):
            return int(math.ceil(keys * v / args.fill))

        if path == "rpc":
            big = Master(kind, args, workdir, name + "-big", ports["big", "http"], ports["big", "rpc"])
            ref = Master(kind, args, workdir, name + "-ref", ports["ref", "http"], ports["ref", "rpc"])
        else:
            def seg(keys):
                return int(math.ceil(size_for(keys) / 4096)) * 4096
            big = Master(kind, args, workdir, name + "-big", ports["big", "http"], None, seg(n), rpc=False)
            ref = Master(kind, args, workdir, name + "-ref", ports["ref", "http"], None, seg(args.ref_keys), rpc=False)
        masters += [big, ref]
        res["command"] = big.cmd
        cl_log = open(os.path.join(workdir, name + "-client.log"), "w")
        c = Client(args.client, cl_log)
        clients.append(c)
        if path == "rpc":
            cref = Client(args.client, cl_log)
            clients.append(cref)
            res["rpc_version"] = c.cmd("connect " + big.rpc)["version"]
            cref.cmd("connect " + ref.rpc)
            # Segments of fake address space, N values filling them to --fill. Upstream's
            # offset allocator takes at most max(size/1024, 2^20) allocations per segment, so
            # at least one segment per ~1M keys.
            segs = max(2, math.ceil(n * 1.05 / 1_000_000))
            seg_size = int(math.ceil(size_for(n) / segs / 4096)) * 4096
            res["segments"] = {"count": segs, "size": seg_size}
            c.cmd("mount %d %d %s:%d" % (segs, seg_size, HOST, 19990))
            cref.cmd("mount 2 %d %s:%d" % (int(math.ceil(size_for(args.ref_keys) / 2 / 4096)) * 4096, HOST, 19991))

            def load(cl, first, count):
                return "load-rpc %d %d %d %d %d" % (first, count, v, args.batch, args.depth)
            load_fn, loader, ref_loader = load, c, cref
        else:
            res["segments"] = {"count": 1, "size": c.cmd("metrics " + big.http)["master_total_capacity_bytes"]}

            def load(_cl, first, count, m=None):
                return "load-http %s %d %d %d %d %d" % (m, first, count, v, args.http_conns, args.http_depth)
            load_fn, loader, ref_loader = None, c, c

        time.sleep(args.settle)
        res["rss_before_mib"], res["hwm_before_mib"] = rss_mib(big.pid)

        # Load: the reference master's 10k keys, then N keys into the big one.
        if path == "rpc":
            load_chunks(ref_loader, "ref load", 0, args.ref_keys, args.ref_keys, lambda f, k: load_fn(None, f, k), ref.pid)
            res["load"] = load_chunks(loader, "load", 0, n, args.chunk, lambda f, k: load_fn(None, f, k), big.pid)
        else:
            load_chunks(c, "ref load", 0, args.ref_keys, args.ref_keys, lambda f, k: load(None, f, k, ref.http), ref.pid)
            res["load"] = load_chunks(c, "load", 0, n, args.chunk, lambda f, k: load(None, f, k, big.http), big.pid)
        log("  loaded %s keys in %.1f s (%.0f keys/s)" % (fmt_keys(n), res["load"]["secs"], res["load"]["keys_per_s"]))
        time.sleep(args.settle)
        res["rss_after_mib"], res["hwm_after_mib"] = rss_mib(big.pid)
        m = c.cmd("metrics " + big.http)
        res["metrics_after_load"] = {k: m.get(k) for k in ("master_key_count", "master_allocated_bytes",
                                                            "master_total_capacity_bytes")}
        if m.get("master_key_count") != n:
            raise RuntimeError("master_key_count %s after loading %d keys" % (m.get("master_key_count"), n))
        delta = (res["rss_after_mib"] - res["rss_before_mib"]) * MIB
        res["bytes_per_key"] = delta / n
        res["value_bytes_in_rss"] = n * v if path == "rest" else 0
        res["bytes_per_key_beyond_values"] = (delta - res["value_bytes_in_rss"]) / n
        log("  RSS %.1f -> %.1f MiB: %.1f bytes/key beyond the values" % (
            res["rss_before_mib"], res["rss_after_mib"], res["bytes_per_key_beyond_values"]))

        # Lookups at N against 10k, alternating rounds: first with both masters and the client
        # on one CPU (--pin-cpu), then free. On this VM a request that wakes a thread on the
        # other, idle vCPU costs ~40 µs more than one that does not, and which connection gets
        # which placement changes from run to run: unpinned figures move 5x between runs.
        kinds = [("rpc", big.rpc, ref.rpc)] if path == "rpc" else []
        kinds.append(("http", big.http, ref.http))
        res["lookups"], res["lookups_unpinned"] = {}, {}
        modes = [("pinned", args.pin_cpu), ("unpinned", None)] if args.pin_cpu >= 0 else [("unpinned", None)]
        for mode, cpu in modes:
            if cpu is not None:
                for pid in (big.pid, ref.pid, c.proc.pid):
                    pin(pid, {cpu})
            try:
                for k, a, b in kinds:
                    r = c.cmd("lookups %s %s %d %s %d %d %d" % (k, b, args.ref_keys, a, n, args.lookup_samples,
                                                               args.lookup_rounds))
                    res["lookups" if mode == "pinned" or len(modes) == 1 else "lookups_unpinned"][k] = {
                        "ref": r["a"], "big": r["b"], "mode": mode, "cpu": cpu}
                    log("  %s lookups (%s) p50/p99: %.1f/%.1f µs at %s, %.1f/%.1f µs at %s" % (
                        "GetReplicaList" if k == "rpc" else "/query_key", mode, r["a"]["p50_us"], r["a"]["p99_us"],
                        fmt_keys(args.ref_keys), r["b"]["p50_us"], r["b"]["p99_us"], fmt_keys(n)))
            finally:
                if cpu is not None:
                    for pid in (big.pid, ref.pid, c.proc.pid):
                        pin(pid, set(range(os.cpu_count())))

        # /get_all_keys, VmRSS sampled.
        r = c.cmd("get-all-keys %s %d %d" % (big.http, big.pid, args.rss_sample_ms))
        res["get_all_keys"] = r
        log("  /get_all_keys: %d keys, %.1f MB in %.2f s; RSS %.1f MiB before, peak %.1f MiB" % (
            r["keys"], r["bytes"] / 1e6, r["secs"], r["rss_before_kib"] / 1024, r["rss_peak_kib"] / 1024))
        if r["keys"] != n:
            raise RuntimeError("/get_all_keys listed %d keys, expected %d" % (r["keys"], n))

        # Eviction: fill to just below the watermark, then one write of --trigger keys crosses it.
        time.sleep(args.lease_ttl_ms / 1000 + 0.3)
        m = c.cmd("metrics " + big.http)
        cap, alloc = m["master_total_capacity_bytes"], m["master_allocated_bytes"]
        pre = max(0, int((args.high_watermark * cap - alloc) // v) - args.trigger // 2)
        first = n
        if pre:
            log("  filling to the watermark: %d more keys" % pre)
            if path == "rpc":
                load_chunks(c, "fill", first, pre, args.chunk, lambda f, k: load_fn(None, f, k), big.pid)
            else:
                load_chunks(c, "fill", first, pre, args.chunk, lambda f, k: load(None, f, k, big.http), big.pid)
            first += pre
        m = c.cmd("metrics " + big.http)
        res["eviction_setup"] = {"capacity": cap, "fill_keys": pre, "used_before_trigger": m["master_allocated_bytes"] / cap,
                                 "keys_before": m.get("master_key_count"), "trigger_keys": args.trigger}
        time.sleep(args.lease_ttl_ms / 1000 + 0.3)
        cpu0 = cpu_s(big.pid)
        r = c.cmd("evict %s %s %d %d %d %d" % (path if path == "rpc" else "http", big.http, first, args.trigger, v, n))
        cpu1 = cpu_s(big.pid)
        r["master_cpu_s"] = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
        res["eviction"] = r
        d = r["counters_delta"]
        log("  eviction: %d keys in %d pass(es), last seen %.3f s after the trigger; probe p99 %.2f ms, max %.2f ms" % (
            d["master_evicted_key_count"], d["master_successful_evictions_total"], r["last_eviction_seen_s"] or -1,
            (r["probe"]["during"]["p99_us"] or 0) / 1000, (r["probe"]["during"]["max_us"] or 0) / 1000))
        first += args.trigger

        # remove_all.
        time.sleep(args.lease_ttl_ms / 1000 + 0.3)
        m = c.cmd("metrics " + big.http)
        res["keys_before_remove_all"] = m.get("master_key_count")
        cpu0 = cpu_s(big.pid)
        r = c.cmd("remove-all %s %s %d" % ("rpc" if path == "rpc" else "http", big.http, n))
        cpu1 = cpu_s(big.pid)
        r["master_cpu_s"] = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
        m = c.cmd("metrics " + big.http)
        r["keys_after"] = m.get("master_key_count")
        # An operation that holds the master's lock longer than --client-ttl can expire the
        # RPC clients whose heartbeats wait behind it.
        r["expired_clients_total"] = m.get("master_expired_clients_total")
        r["active_clients_after"] = m.get("master_active_clients")
        res["remove_all"] = r
        log("  remove_all: %s in %.3f s; probe p99 %.2f ms, max %.2f ms" % (
            r["removed"], r["secs"], (r["probe"]["during"]["p99_us"] or 0) / 1000,
            (r["probe"]["during"]["max_us"] or 0) / 1000))
        time.sleep(args.settle)
        res["rss_end_mib"], res["hwm_end_mib"] = rss_mib(big.pid)
        res["heartbeats"] = [cl.close() for cl in clients]
        res["loadavg_end"] = loadavg()
        res["ok"] = True
    except Exception as e:  # a failed run is reported, the others go on
        log("  FAILED: %s" % e)
        res["ok"] = False
        res["error"] = str(e)
    finally:
        for cl in clients:
            cl.close()
        for mm in masters:
            mm.stop()
    return res


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def f(x, digits=1, unit=""):
    if x is None:
        return "–"
    if isinstance(x, float) and abs(x) >= 1000:
        return "{:,.0f}{}".format(x, unit)
    return ("{:,.%df}{}" % digits).format(x, unit)


def ms(us):
    return None if us is None else us / 1000


def ratio(a, b):
    return None if not a or b is None else b / a


def column(r, args):
    """The figures of one run, as {row: text}."""
    if not r.get("ok"):
        return {"error": r.get("error", "failed")}
    n = r["keys"]
    out = {}
    out["rss"] = "%s → %s MiB" % (f(r["rss_before_mib"]), f(r["rss_after_mib"]))
    out["bpk"] = f(r["bytes_per_key_beyond_values"])
    ld = r["load"]
    out["load"] = "%s s, %s keys/s" % (f(ld["secs"], 2), f(ld["keys_per_s"], 0))
    out["load_cpu"] = "%s / %s" % (f(ld["master_cpu_s"], 2), f(ld["client_cpu_s"], 2))
    for k, label in (("rpc", "getreplicalist"), ("http", "query_key")):
        lk = r["lookups"].get(k)
        if not lk:
            continue
        a, b = lk["ref"], lk["big"]
        out[label + "_ref"] = "%s / %s" % (f(a["p50_us"]), f(a["p99_us"]))
        out[label + "_big"] = "%s / %s" % (f(b["p50_us"]), f(b["p99_us"]))
        out[label + "_ratio"] = "%sx / %sx" % (f(ratio(a["p50_us"], b["p50_us"]), 2), f(ratio(a["p99_us"], b["p99_us"]), 2))
        lu = r.get("lookups_unpinned", {}).get(k)
        if lu:
            out[label + "_free"] = "%s / %s → %s / %s" % (f(lu["ref"]["p50_us"]), f(lu["ref"]["p99_us"]),
                                                          f(lu["big"]["p50_us"]), f(lu["big"]["p99_us"]))
    g = r["get_all_keys"]
    out["gak"] = "%s s (%s MB, %s keys)" % (f(g["secs"], 2), f(g["bytes"] / 1e6), f(float(g["keys"]), 0))
    out["gak_rss"] = "%s → peak %s MiB (+%s)" % (f(g["rss_before_kib"] / 1024), f(g["rss_peak_kib"] / 1024),
                                                f((g["rss_peak_kib"] - g["rss_before_kib"]) / 1024))
    e = r["eviction"]
    d = e["counters_delta"]
    ek = d["master_evicted_key_count"]
    keys_before = r["eviction_setup"]["keys_before"] or n
    out["evict"] = "%s keys (%s%%) in %s pass(es), %s s" % (
        f(ek, 0), f(100 * ek / keys_before), f(d["master_successful_evictions_total"], 0),
        f(e["last_eviction_seen_s"], 3))
    out["evict_per_key"] = f(e["last_eviction_seen_s"] * 1e6 / ek, 2) if ek and e["last_eviction_seen_s"] else "–"
    pd = e["probe"]["during"]
    out["evict_probe"] = "%s / %s / %s ms" % (f(ms(pd["p99_us"]), 2), f(ms(pd["max_us"]), 1), f(e["probe"]["longest_gap_ms"], 1))
    ra = r["remove_all"]
    removed = r["keys_before_remove_all"] or 0
    out["remove"] = "%s keys, %s s" % (f(removed, 0), f(ra["secs"], 3))
    out["remove_per_key"] = f(ra["secs"] * 1e6 / removed, 2) if removed else "–"
    pd = ra["probe"]["during"]
    out["remove_probe"] = "%s / %s / %s ms" % (f(ms(pd["p99_us"]), 2), f(ms(pd["max_us"]), 1), f(ra["probe"]["longest_gap_ms"], 1))
    pb = ra["probe"]["before"]
    out["probe_idle"] = "%s / %s ms" % (f(ms(pb["p99_us"]), 3), f(ms(pb["max_us"]), 2))
    out["rss_end"] = f(r["rss_end_mib"])
    return out


ROWS = [
    ("rss", "master RSS before → after the load", ""),
    ("bpk", "master bytes per key beyond the values", "≤ 150"),
    ("load", "time to load", ""),
    ("load_cpu", "CPU s during the load: master / client", ""),
    ("getreplicalist_ref", "GetReplicaList p50 / p99 µs at {ref}", ""),
    ("getreplicalist_big", "GetReplicaList p50 / p99 µs at N", ""),
    ("getreplicalist_ratio", "GetReplicaList at N ÷ at {ref} (p50 / p99)", "≤ 1.5x"),
    ("getreplicalist_free", "GetReplicaList unpinned, p50 / p99 µs at {ref} → at N", ""),
    ("query_key_ref", "GET /query_key p50 / p99 µs at {ref}", ""),
    ("query_key_big", "GET /query_key p50 / p99 µs at N", ""),
    ("query_key_ratio", "GET /query_key at N ÷ at {ref} (p50 / p99)", "≤ 1.5x"),
    ("query_key_free", "GET /query_key unpinned, p50 / p99 µs at {ref} → at N", ""),
    ("gak", "GET /get_all_keys, whole listing", ""),
    ("gak_rss", "master RSS during /get_all_keys", "bounded"),
    ("evict", "eviction of 10%: keys, passes, time", "∝ evicted"),
    ("evict_per_key", "eviction µs per evicted key", ""),
    ("evict_probe", "probe during eviction: p99 / max / longest gap", "no stall > 1 ms"),
    ("remove", "remove_all: keys, time", "∝ removed"),
    ("remove_per_key", "remove_all µs per removed key", ""),
    ("remove_probe", "probe during remove_all: p99 / max / longest gap", "no stall > 1 ms"),
    ("probe_idle", "probe before remove_all (idle): p99 / max", ""),
    ("rss_end", "master RSS at the end (MiB)", ""),
]


def table(results, path, args):
    runs = [r for r in results if r["path"] == path]
    if not runs:
        return ""
    head = ["", *("%s, %s keys" % ("mc-master" if r["system"] == "mc" else "upstream", fmt_keys(r["keys"])) for r in runs),
            "target"]
    cols = [column(r, args) for r in runs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, target in ROWS:
        if all(key not in c for c in cols) and not any("error" in c for c in cols):
            continue
        cells = [c.get(key, c.get("error", "–") if key == "rss" else "–") for c in cols]
        lines.append("| %s | %s | %s |" % (label.format(ref=fmt_keys(args.ref_keys)), " | ".join(cells), target))
    return "\n".join(lines)


def verdicts(results, args):
    """Each target against each run: (target, run, figure, met)."""
    out = []
    for r in results:
        if not r.get("ok"):
            continue
        who = "%s %s %s" % ("mc-master" if r["system"] == "mc" else "upstream", r["path"].upper(), fmt_keys(r["keys"]))
        b = r["bytes_per_key_beyond_values"]
        out.append(("≤ 150 B of master memory per key beyond the values", who, "%.1f B" % b, b <= 150))
        for k, label in (("rpc", "GetReplicaList"), ("http", "GET /query_key")):
            lk = r["lookups"].get(k)
            if lk:
                p50 = ratio(lk["ref"]["p50_us"], lk["big"]["p50_us"])
                p99 = ratio(lk["ref"]["p99_us"], lk["big"]["p99_us"])
                out.append(("%s at N within 1.5x of at %s" % (label, fmt_keys(args.ref_keys)), who,
                            "p50 %.2fx, p99 %.2fx" % (p50, p99), p50 <= 1.5 and p99 <= 1.5))
        g = r["get_all_keys"]
        grow = (g["rss_peak_kib"] - g["rss_before_kib"]) / 1024
        out.append(("/get_all_keys streamed in bounded memory (peak RSS growth < %d MiB)" % GAK_BOUND_MIB, who,
                    "peak RSS +%.1f MiB while listing %.1f MB" % (grow, g["bytes"] / 1e6), grow < GAK_BOUND_MIB))
        for op in ("eviction", "remove_all"):
            p = r[op]["probe"]
            mx = (p["during"]["max_us"] or 0) / 1000
            out.append(("no lookup stalled > 1 ms during %s (probe max)" % op, who,
                        "probe max %.1f ms (p99 %.2f ms)" % (mx, (p["during"]["p99_us"] or 0) / 1000), mx <= 1.0))
    for sysname, path, op, vals in proportionality(results):
        vals = [(n, k, t) for n, k, t in vals if k and t]
        if len(vals) >= 2:
            (n0, k0, t0), (n1, k1, t1) = vals[0], vals[-1]
            r = (t1 / k1) / (t0 / k0)
            who = "%s %s %s vs %s" % ("mc-master" if sysname == "mc" else "upstream", path.upper(), fmt_keys(n1),
                                      fmt_keys(n0))
            out.append(("%s cost per removed key at the largest N ÷ at the smallest (≤ 1.5x)" % op, who,
                        "%.2f µs vs %.2f µs per key: %.2fx" % (t1 * 1e6 / k1, t0 * 1e6 / k0, r), r <= 1.5))
    return out


def proportionality(results):
    """µs per evicted/removed key across key counts of one system and path."""
    out = []
    by = {}
    for r in results:
        if r.get("ok"):
            by.setdefault((r["system"], r["path"]), []).append(r)
    for (sysname, path), rs in sorted(by.items()):
        if len(rs) < 2:
            continue
        rs.sort(key=lambda r: r["keys"])
        for op in ("eviction", "remove_all"):
            vals = []
            for r in rs:
                if op == "eviction":
                    k = r["eviction"]["counters_delta"]["master_evicted_key_count"]
                    t = r["eviction"]["last_eviction_seen_s"]
                else:
                    k = r["keys_before_remove_all"]
                    t = r["remove_all"]["secs"]
                vals.append((r["keys"], k, t))
            out.append((sysname, path, op, vals))
    return out


def report(results, args, meta):
    lines = ["# Scale benchmark, %s" % meta["date"], "",
             "Machine: %s; load average at the start %.2f. Commit %s. Keys of 64 bytes, values of %d bytes." % (
                 meta["machine"], meta["loadavg"], meta["commit"], args.value_len), "",
             "Command: `%s`" % meta["argv"], ""]
    for path, title in (("rpc", "RPC path (metadata created over upstream's master RPC; values in the client's "
                                 "fake segments)"),
                        ("rest", "REST path (PUT /api/put/{key} into mc-master's own segment; upstream's REST path "
                                 "is its Python store service, not measured)")):
        t = table(results, path, args)
        if t:
            lines += ["## " + title, "", t, ""]
    v = verdicts(results, args)
    if v:
        lines += ["## Targets", "", "| target | run | figure | |", "|---|---|---|---|"]
        lines += ["| %s | %s | %s | %s |" % (t, who, fig, "met" if ok else "**missed**") for t, who, fig, ok in v]
        lines.append("")
    p = proportionality(results)
    if p:
        lines += ["## Cost against what is removed", "", "| system | path | operation | per key count: removed keys, s, µs per key |",
                  "|---|---|---|---|"]
        for sysname, path, op, vals in p:
            cells = "; ".join("%s: %s keys, %.3f s, %.2f µs" % (fmt_keys(n), f(k, 0), t, t * 1e6 / k)
                              for n, k, t in vals if k and t)
            lines.append("| %s | %s | %s | %s |" % (sysname, path, op, cells))
        lines.append("")
    lines += ["Lookups: sequential requests of a random key, one connection per master, %d rounds of %d per "
              "master alternating between the master at N and the one at %s, with both masters and the client "
              "pinned to CPU %d; the \"unpinned\" rows repeat them without pinning, where a request that wakes a "
              "thread on the other, idle vCPU of this VM costs ~40 µs more and which connection gets that "
              "placement changes from run to run." % (args.lookup_rounds, args.lookup_samples,
                                                      fmt_keys(args.ref_keys), args.pin_cpu), "",
              "Probe: `GET /query_key` of a random key every 1 ms on its own connection (latency p99 / max of the "
              "requests overlapping the operation, and the longest time without an answer). Eviction time: from "
              "the trigger write (%d keys crossing the watermark) to the last change of "
              "`master_evicted_key_count` seen polling /metrics every 2 ms." % args.trigger, ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mc-bin", required=True)
    ap.add_argument("--client", required=True, help="the scale_client binary")
    ap.add_argument("--venv", default="target/bench-venv", help="venv with upstream's wheel")
    ap.add_argument("--keys", default="1000000,10000000", help="key counts, comma-separated")
    ap.add_argument("--systems", default="mc,upstream", help="mc, upstream")
    ap.add_argument("--paths", default="rpc,rest", help="rpc, rest (rest: mc-master only)")
    ap.add_argument("--upstream-max-keys", type=int, default=1_000_000,
                    help="upstream runs only at key counts up to this")
    ap.add_argument("--ref-keys", type=int, default=10_000, help="keys of the reference master")
    ap.add_argument("--value-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1000, help="keys per BatchPutStart")
    ap.add_argument("--depth", type=int, default=4, help="BatchPutStarts in flight")
    ap.add_argument("--http-conns", type=int, default=2)
    ap.add_argument("--http-depth", type=int, default=128, help="pipelined PUTs per connection")
    ap.add_argument("--chunk", type=int, default=1_000_000, help="keys per load command (progress)")
    ap.add_argument("--lookup-samples", type=int, default=1000, help="lookups per master per round")
    ap.add_argument("--lookup-rounds", type=int, default=6)
    ap.add_argument("--pin-cpu", type=int, default=(os.cpu_count() or 1) - 1,
                    help="CPU both masters and the client share while lookups are measured (-1: no pinning)")
    ap.add_argument("--rss-sample-ms", type=int, default=2)
    ap.add_argument("--fill", type=float, default=0.93, help="used/capacity after N keys")
    ap.add_argument("--high-watermark", type=float, default=0.95)
    ap.add_argument("--eviction-ratio", type=float, default=0.1)
    ap.add_argument("--trigger", type=int, default=1000, help="keys of the write that crosses the watermark")
    ap.add_argument("--lease-ttl-ms", type=int, default=1000)
    ap.add_argument("--client-ttl", type=int, default=60, help="seconds")
    ap.add_argument("--mc-threads", type=int, default=2)
    ap.add_argument("--up-rpc-threads", type=int, default=2)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds before each RSS reading")
    ap.add_argument("--base-port", type=int, default=18700)
    ap.add_argument("--out", default=None, help="default: target/bench-scale/<date>")
    args = ap.parse_args()
    if not args.fill < args.high_watermark:
        ap.error("--fill must be below --high-watermark")
    keys = [int(k) for k in args.keys.split(",") if k]
    systems = [s for s in args.systems.split(",") if s]
    paths = [p for p in args.paths.split(",") if p]
    args.up_bin = None
    if "upstream" in systems:
        py = os.path.join(args.venv, "bin", "python")
        pkg = subprocess.check_output([py, "-c", "import mooncake,os;print(os.path.dirname(mooncake.__file__))"],
                                      text=True).strip()
        args.up_bin = os.path.join(pkg, "mooncake_master")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M%S")
    workdir = args.out or os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "bench-scale", date)
    os.makedirs(workdir, exist_ok=True)
    log("results and logs: %s" % workdir)
    try:
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
        if subprocess.run(["git", "diff", "--quiet", "HEAD"]).returncode != 0:
            commit += " (with uncommitted changes)"
    except Exception:
        commit = "?"
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except Exception:
        pass
    meta = {"date": date, "commit": commit, "argv": " ".join(sys.argv), "loadavg": loadavg(),
            "machine": "%d CPUs (%s), %.0f GiB RAM" % (os.cpu_count(), cpu,
                                                       os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)}
    results = []
    t0 = time.time()
    for n in keys:
        for path in paths:
            for s in systems:
                if s == "upstream" and (path == "rest" or n > args.upstream_max_keys):
                    continue
                results.append(run_one(args, s, path, n, workdir))
                with open(os.path.join(workdir, "results.json"), "w") as fh:
                    json.dump({"meta": meta, "args": vars(args), "results": results}, fh, indent=1)
    meta["secs"] = time.time() - t0
    text = report(results, args, meta)
    with open(os.path.join(workdir, "report.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(workdir, "results.json"), "w") as fh:
        json.dump({"meta": meta, "args": vars(args), "results": results}, fh, indent=1)
    print(text)
    log("done in %.0f s; %s/report.md" % (meta["secs"], workdir))
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
