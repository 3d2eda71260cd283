#!/usr/bin/env python3
"""KV event publisher under a put flood: mc-master (release) with --enable-kv-events, one real
ZMQ subscriber (tests/kv_events/subscriber.py in summary mode), wrk sending PUT /api/put/<unique
key> flat out for --duration. Prints the put rate, the events the subscriber decoded, sequence
and event-id gaps and the publisher's dropped_events. Everything on 127.0.0.1.

  python3 benches/kv_events/flood.py --mc-bin target/release/mc-master \
      --python target/tmp/kv-events-venv/bin/python [--duration 10s] [--connections 64]

The venv needs pyzmq and msgpack (`cargo test --test kv_events` creates it). See
docs/kv-events.md, "Figures".
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LUA = r"""
local counter = 0
local tid = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  tid = wrk.thread:get("tid")
end
function request()
  counter = counter + 1
  return wrk.format("PUT", "/api/put/f" .. tid .. "-" .. counter, nil, "01234567")
end
"""


def wrk_rate(a, http):
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA)
        lua = f.name
    out = subprocess.run(["wrk", "-t", str(a.wrk_threads), "-c", str(a.connections), "-d", a.duration, "-s", lua,
                          "http://%s" % http], capture_output=True, text=True, check=True).stdout
    os.unlink(lua)
    return out


def baseline(a):
    mc = subprocess.Popen([a.mc_bin, "--port", "0", "--threads", str(a.mc_threads), "--global-segment-size", "2GiB"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        http = mc.stdout.readline().split("http://", 1)[1].strip()
        out = wrk_rate(a, http)
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    finally:
        mc.terminate()
        mc.wait()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mc-bin", default=os.path.join(ROOT, "target/release/mc-master"))
    p.add_argument("--python", default=os.path.join(ROOT, "target/tmp/kv-events-venv/bin/python"))
    p.add_argument("--duration", default="10s")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--mc-threads", type=int, default=1)
    p.add_argument("--baseline", action="store_true", help="also measure the same flood without --enable-kv-events")
    a = p.parse_args()
    if a.baseline:
        print("puts/s without KV events: %.0f" % baseline(a))
    mc = subprocess.Popen(
        [a.mc_bin, "--port", "0", "--threads", str(a.mc_threads), "--global-segment-size", "2GiB",
         "--enable-kv-events", "--kv-events-bind-endpoint", "tcp://127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        http = endpoint = None
        while endpoint is None:
            line = mc.stdout.readline()
            if not line:
                sys.exit("mc-master exited")
            if line.startswith("listening on http://"):
                http = line.split("http://", 1)[1].strip()
            if line.startswith("kv events listening on "):
                endpoint = line.split("on ", 1)[1].strip()
        sub = subprocess.Popen([a.python, os.path.join(ROOT, "tests/kv_events/subscriber.py"), endpoint, "--summary",
                                "--timeout-ms", "120000"], stdout=subprocess.PIPE, text=True)
        assert sub.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # the subscription reaches the publisher
        out = wrk_rate(a, http)
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        total = int(re.search(r"(\d+) requests in", out).group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        ok = total - (int(non2xx.group(1)) if non2xx else 0)
        req = urllib.request.Request("http://%s/api/put/__end__" % http, data=b"e", method="PUT")
        urllib.request.urlopen(req).read()
        summary = json.loads(sub.stdout.readline())
        status = json.loads(urllib.request.urlopen("http://%s/kv_events/status" % http).read())
        metrics = urllib.request.urlopen("http://%s/metrics" % http).read().decode()
        completed = int(re.search(r"^master_put_end_requests_total (\d+)$", metrics, re.M).group(1))
        print("puts/s (wrk, %d connections): %.0f" % (a.connections, rate))
        print("puts completed (server): %d (wrk counted %d answered 200); stored events decoded: %d" % (
            completed, ok, summary["stored"]))
        print("lost: %d; sequence gaps: %d; event id gaps: %d; dropped_events: %d; bad messages: %d" % (
            completed - summary["stored"], summary["seq_gaps"], summary["id_gaps"], status["dropped_events"],
            summary["bad"]))
        print("batches: %d (%.1f events per batch)" % (summary["batches"], summary["events"] / max(1, summary["batches"])))
    finally:
        mc.terminate()
        mc.wait()


if __name__ == "__main__":
    main()
