#!/usr/bin/env python3
"""Drive the UNCHANGED upstream Python client (wheel mooncake-transfer-engine-non-cuda)
against a running mc-master and check what a user observes.

  driver.py --python VENV_PY --master HOST:RPCPORT --http HOST:HTTPPORT --ttl SECONDS
            [--upstream-master PATH] [--bench N] [--workdir DIR]

Sections (each check prints `ok` or `FAIL`; exit status 0 iff none failed):
  direct   MooncakeDistributedStore: setup, put, duplicate put, get, is_exist, put_batch,
           get_batch, batch_is_exist, 300-key batch, 300-byte key, upsert, remove (leased ->
           -706), remove(force), batch_remove, remove_by_regex, remove_all, close, with the
           admin endpoints' view of the client while it is alive.
  http-md  the same client with metadata_server = mc-master's /metadata (HTTP metadata server).
  rest     python -m mooncake.mooncake_store_service against the master: /api/mount, put, get,
           exist, remove (leased -> 500), /api/unmount, graceful /api/unmount (the segment is
           gone before the client's QuerySegmentStatusById poll), remove_all, SIGTERM.
  expiry   a client that mounted and wrote is SIGKILLed: its segment and key disappear within
           the client TTL and master_active_clients drops.
  bench    put/get round trips per second with N small values, against mc-master and (with
           --upstream-master) against upstream's mooncake_master in the same run.
Only processes started here are stopped (by PID).
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

FAILS = []


def check(label, got, want):
    ok = got == want
    print("%-4s %-34s got=%s%s" % ("ok" if ok else "FAIL", label, json.dumps(got)[:120],
                                    "" if ok else "  want=%s" % json.dumps(want)[:120]), flush=True)
    if not ok:
        FAILS.append(label)
    return ok


def http(addr, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request("http://%s%s" % (addr, path), data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(addr, name):
    _, body = http(addr, "GET", "/metrics")
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def wait_for(pred, timeout, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


DIRECT = r'''
import json, sys, time, urllib.request
from mooncake.store import MooncakeDistributedStore
master, meta, http = sys.argv[1], sys.argv[2], sys.argv[3]
def get(path):
    with urllib.request.urlopen("http://%s%s" % (http, path), timeout=30) as r:
        return r.read().decode()
out = {}
s = MooncakeDistributedStore()
out["setup"] = s.setup("127.0.0.1", meta, 16777216, 16777216, "tcp", "", master)
time.sleep(2.5)   # first Ping -> NEED_REMOUNT -> ReMountSegment
out["put"] = s.put("k1", b"hello")
out["put_dup"] = s.put("k1", b"other")
out["exist"] = [s.is_exist("k1"), s.is_exist("nope")]
out["get"] = s.get("k1").decode()
out["get_missing"] = s.get("nope").decode()
out["admin_segments"] = len(get("/get_all_segments").splitlines())
detail = json.loads(get("/get_segments_detail"))
out["admin_detail"] = [detail["total_segments"], detail["segments"][0]["size_bytes"],
                       detail["segments"][0]["status"]]
qk = json.loads(get("/query_key?key=k1"))
out["admin_query_key"] = [qk["success"], qk["data"][0]["size_"],
                          qk["data"][0]["transport_endpoint_"] == detail["segments"][0]["te_endpoint"]]
out["admin_all_keys"] = get("/get_all_keys").splitlines()
out["put_batch"] = s.put_batch(["b1", "b2"], [b"one", b"two"])
out["get_batch"] = [x.decode() for x in s.get_batch(["b1", "b2", "nope"])]
out["batch_is_exist"] = s.batch_is_exist(["b1", "nope"])
keys = ["bulk-%03d" % i for i in range(300)]
out["put_batch_300"] = s.put_batch(keys, [b"v%03d" % i for i in range(300)])
out["get_batch_300"] = s.get_batch(keys) == [b"v%03d" % i for i in range(300)]
out["long_key"] = [s.put("L" * 300, b"long"), s.get("L" * 300).decode()]
out["upsert"] = [s.upsert("k1", b"HELLO!"), s.get("k1").decode()]
out["remove_leased"] = s.remove("k1")
out["remove_force"] = s.remove("k1", True)
out["batch_remove"] = s.batch_remove(["b1", "nope"], True)
out["remove_by_regex"] = s.remove_by_regex("^bulk-", True)
out["remove_all"] = s.remove_all(True)
out["close"] = s.close()
print("RESULT " + json.dumps(out), flush=True)
'''

EXPECT_DIRECT = {
    "setup": 0, "put": 0, "put_dup": 0, "exist": [1, 0], "get": "hello", "get_missing": "",
    "admin_segments": 1, "admin_detail": [1, 16777216, "MOUNTED"],
    "admin_query_key": [True, 5, True], "admin_all_keys": ["k1"],
    "put_batch": 0, "get_batch": ["one", "two", ""], "batch_is_exist": [1, 0],
    "put_batch_300": 0, "get_batch_300": True, "long_key": [0, "long"],
    "upsert": [0, "HELLO!"], "remove_leased": -706, "remove_force": 0,
    "batch_remove": [0, -704], "remove_by_regex": 300, "remove_all": 2, "close": 0,
}

VICTIM = r'''
import sys, time
from mooncake.store import MooncakeDistributedStore
s = MooncakeDistributedStore()
rc = s.setup("127.0.0.1", sys.argv[2], 16777216, 16777216, "tcp", "", sys.argv[1])
time.sleep(2.5)
print("READY", rc, s.put("victim-key", b"v" * 100), flush=True)
time.sleep(600)
'''

BENCH = r'''
import sys, time, json
from mooncake.store import MooncakeDistributedStore
s = MooncakeDistributedStore()
rc = s.setup("127.0.0.1", "P2PHANDSHAKE", 67108864, 16777216, "tcp", "", sys.argv[1])
n = int(sys.argv[2])
time.sleep(2.5)
v = b"x" * 1024
t = time.perf_counter()
bad = sum(1 for i in range(n) if s.put("bench-%d" % i, v) != 0)
tp = time.perf_counter() - t
t = time.perf_counter()
bad += sum(1 for i in range(n) if s.get("bench-%d" % i) != v)
tg = time.perf_counter() - t
s.remove_all(True)
s.close()
print("RESULT " + json.dumps({"setup": rc, "bad": bad, "put_per_s": n / tp, "get_per_s": n / tg}), flush=True)
'''

STORE_WRAPPER = r'''
import sys
import aiohttp.web as web
_Orig = web.TCPSite
class _LocalSite(_Orig):
    def __init__(self, runner, host=None, port=None, **kw):
        super().__init__(runner, "127.0.0.1", port, **kw)
web.TCPSite = _LocalSite
from mooncake import mooncake_store_service as m
sys.argv = ["mooncake_store_service", "--config", sys.argv[1], "--port", sys.argv[2]]
m.sync_main()
'''


def run_script(py, script, args, timeout):
    p = subprocess.Popen([py, "-c", script] + args, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return None
    for ln in out.splitlines():
        if ln.startswith("RESULT "):
            return json.loads(ln[7:])
    return None


def direct(a, meta, label):
    print("== direct client (%s)" % label, flush=True)
    res = run_script(a.python, DIRECT, [a.master, meta, a.http], 240)
    if res is None:
        check(label + ": result", None, "a result")
        return
    for k, v in EXPECT_DIRECT.items():
        check("%s: %s" % (label, k), res.get(k), v)


def rest(a):
    print("== store REST service", flush=True)
    os.makedirs(a.workdir, exist_ok=True)
    port = free_port()
    cfg = {"local_hostname": "127.0.0.1", "metadata_server": "P2PHANDSHAKE",
           "global_segment_size": 16777216, "local_buffer_size": 16777216,
           "protocol": "tcp", "device_name": "", "master_server_address": a.master}
    cfg_path = os.path.join(a.workdir, "store_config.json")
    json.dump(cfg, open(cfg_path, "w"))
    wrapper = os.path.join(a.workdir, "store_wrapper.py")
    open(wrapper, "w").write(STORE_WRAPPER)
    log = open(os.path.join(a.workdir, "store.log"), "w")
    st = subprocess.Popen([a.python, wrapper, cfg_path, str(port)], stdout=log, stderr=subprocess.STDOUT)
    S = "127.0.0.1:%d" % port
    try:
        if not check("rest: service started", wait_port(port, 90), True):
            return
        time.sleep(2.5)
        code, b = http(S, "POST", "/api/mount", {"size": 16777216})
        check("rest: mount", code, 200)
        seg = json.loads(b).get("segment_ids", [""])[0] if code == 200 else ""
        check("rest: put", http(S, "PUT", "/api/put", {"key": "k1", "value": "hello"})[0], 200)
        check("rest: get", list(http(S, "GET", "/api/get/k1")), [200, "hello"])
        check("rest: exist", list(http(S, "GET", "/api/exist/k1")), [200, '{"exists": true}'])
        check("rest: exist missing", list(http(S, "GET", "/api/exist/nope")), [200, '{"exists": false}'])
        check("rest: remove leased", http(S, "DELETE", "/api/remove/k1")[0], 500)
        segs_before = metric(a.http, "master_total_capacity_bytes")
        check("rest: unmount", http(S, "POST", "/api/unmount", {"segment_ids": [seg]})[0], 200)
        check("rest: capacity after unmount", metric(a.http, "master_total_capacity_bytes"),
              segs_before - 16777216 if segs_before is not None else None)
        code, b = http(S, "POST", "/api/mount", {"size": 16777216})
        check("rest: mount 2", code, 200)
        seg2 = json.loads(b).get("segment_ids", [""])[0] if code == 200 else ""
        check("rest: put 2", http(S, "PUT", "/api/put", {"key": "k2", "value": "x" * 300})[0], 200)
        cap = metric(a.http, "master_total_capacity_bytes")
        t0 = time.time()
        check("rest: graceful unmount", http(S, "POST", "/api/unmount",
                                             {"segment_ids": [seg2], "grace_period_seconds": 1})[0], 200)
        gone = wait_for(lambda: metric(a.http, "master_total_capacity_bytes") == cap - 16777216, 5)
        check("rest: graceful segment gone at the deadline", [gone, time.time() - t0 < 5], [True, True])
        print("     (waiting 12 s for the client's QuerySegmentStatusById poll)", flush=True)
        time.sleep(12)
        code, b = http(S, "DELETE", "/api/remove_all")
        check("rest: remove_all", code, 200)
    finally:
        st.send_signal(signal.SIGTERM)
        try:
            rc = st.wait(timeout=30)
        except subprocess.TimeoutExpired:
            st.kill()
            rc = "killed"
        check("rest: service exit", rc, 0)


def expiry(a):
    print("== killed client expires", flush=True)
    v = subprocess.Popen([a.python, "-c", VICTIM, a.master, "P2PHANDSHAKE"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        line = v.stdout.readline().split()
        check("expiry: victim setup and put", line[1:], ["0", "0"])
        active = metric(a.http, "master_active_clients")
        check("expiry: victim key listed", "victim-key" in http(a.http, "GET", "/get_all_keys")[1], True)
        nsegs = len(http(a.http, "GET", "/get_segments_detail")[1].split('"segment_id"')) - 1
        v.send_signal(signal.SIGKILL)
        v.wait()
        t0 = time.time()
        gone = wait_for(lambda: "victim-key" not in http(a.http, "GET", "/get_all_keys")[1], a.ttl + 5)
        took = time.time() - t0
        check("expiry: key dropped", gone, True)
        check("expiry: within the TTL (+2 s)", took <= a.ttl + 2, True)
        print("     expired %.1f s after SIGKILL (--client-ttl %ss)" % (took, a.ttl), flush=True)
        check("expiry: active clients", metric(a.http, "master_active_clients"), active - 1)
        after = len(http(a.http, "GET", "/get_segments_detail")[1].split('"segment_id"')) - 1
        check("expiry: segment unmounted", after, nsegs - 1)
    finally:
        if v.poll() is None:
            v.kill()
            v.wait()


def bench(a, master, label):
    res = run_script(a.python, BENCH, [master, str(a.bench)], 300)
    if res is None or res.get("setup") != 0 or res.get("bad"):
        check("bench %s" % label, res, "a clean run")
        return None
    print("BENCH %-14s put %8.0f/s  get %8.0f/s  (%d x 1 KiB, one client)" % (
        label, res["put_per_s"], res["get_per_s"], a.bench), flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", required=True)
    ap.add_argument("--master", required=True)
    ap.add_argument("--http", required=True)
    ap.add_argument("--ttl", type=float, default=10)
    ap.add_argument("--upstream-master")
    ap.add_argument("--bench", type=int, default=0)
    ap.add_argument("--workdir", default="/tmp/mc-rpc-upstream")
    ap.add_argument("--sections", default="direct,http-md,rest,expiry,bench")
    a = ap.parse_args()
    sections = a.sections.split(",")
    if "direct" in sections:
        direct(a, "P2PHANDSHAKE", "p2p")
    if "http-md" in sections:
        direct(a, "http://%s/metadata" % a.http, "http-metadata")
    if "rest" in sections:
        rest(a)
    if "expiry" in sections:
        expiry(a)
    if "bench" in sections and a.bench > 0:
        print("== bench", flush=True)
        bench(a, a.master, "mc-master")
        if a.upstream_master:
            port, mport = free_port(), free_port()
            um = subprocess.Popen([a.upstream_master, "--rpc_port=%d" % port, "--metrics_port=%d" % mport,
                                   "--enable_http_metadata_server=false"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                if wait_port(port, 30):
                    bench(a, "127.0.0.1:%d" % port, "mooncake_master")
                else:
                    print("BENCH mooncake_master did not start", flush=True)
            finally:
                um.terminate()
                try:
                    um.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    um.kill()
                    um.wait()
    print("UPSTREAM %s (%d failed: %s)" % ("PASS" if not FAILS else "FAIL", len(FAILS), ", ".join(FAILS)),
          flush=True)
    return 0 if not FAILS else 1


if __name__ == "__main__":
    sys.exit(main())
