#!/usr/bin/env python3
"""The UNCHANGED upstream client (wheel mooncake-transfer-engine-non-cuda,
`mooncake.store.MooncakeDistributedStore`) against a master found through etcd, for the
high-availability tests and benches/ha. Run it with the wheel's Python.

  client.py --master etcd://127.0.0.1:2379 write N
  client.py --master etcd://127.0.0.1:2379 failover N      # then "KILLED <time>" on stdin
  client.py --master 127.0.0.1:50051 throughput SECONDS

--master is what setup() takes as master_server_addr: `etcd://HOST:PORT[;HOST:PORT...]`
(the client reads mooncake-store/<MC_STORE_CLUSTER_ID or mooncake_cluster>/master_view and
follows it) or a master's `HOST:PORT` directly. The client runs with metadata
"P2PHANDSHAKE", protocol "tcp", local hostname 127.0.0.1, a global segment of
--segment-mib (default 64) that it mounts itself and a local buffer of --buffer-mib (16).
--cluster-id sets MC_STORE_CLUSTER_ID (default: leave it as the environment has it);
MC_TCP_BIND_ADDRESS defaults to 127.0.0.1.

Modes (one JSON object per line on stdout; upstream's own log goes to stderr):
  write N       puts ha-key-0 .. ha-key-(N-1), each --value-size bytes (default 4096),
                deterministic and distinct per key; progress lines every 50 keys, then
                {"event":"written",...}. Then reads them back ({"event":"verified",...}).
  failover N    writes N keys as above, prints the plain line READY, then puts a fresh key
                (ha-fresh-J) every --interval-ms (20). When a line "KILLED T" arrives on stdin
                (the harness SIGKILLed the leader at T: time.monotonic() of this machine, or
                time.time() when T > 1e9), it goes on until the first put that started after T
                succeeds, then reads back the N keys (again every 0.2 s
                for up to --remount-timeout, 15 s, while restored replicas are hidden): {"event":"failover", "recovery_s": ...,
                "kept": K, "n": N, ...}. Gives up after --recovery-timeout (120 s).
  throughput S  single-threaded puts of --small-size (64) byte values under fresh keys for S
                seconds: {"event":"throughput","puts_per_s":...}. With --wait-go it prints
                {"event":"tp_ready"} after its warm-up and starts when a line "go" arrives on
                stdin, so a harness can start several clients' timed windows together (keys
                carry the process id, so concurrent clients never collide).
The process ends with os._exit after close(): upstream's client otherwise waits up to 30 s
in its leader-monitor thread (an etcd watch) before the interpreter can exit.
"""

import argparse
import hashlib
import json
import os
import sys
import threading
import time


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def value_of(i, size):
    """Deterministic, distinct bytes for key i: SHA-256 blocks of (i, block number)."""
    out = bytearray()
    block = 0
    while len(out) < size:
        out += hashlib.sha256(b"ha-key-%d/%d" % (i, block)).digest()
        block += 1
    return bytes(out[:size])


def key_of(i):
    return "ha-key-%d" % i


def setup(a):
    from mooncake.store import MooncakeDistributedStore

    s = MooncakeDistributedStore()
    t0 = time.monotonic()
    deadline = t0 + a.setup_timeout
    tries = 0
    while True:
        tries += 1
        rc = s.setup("127.0.0.1", "P2PHANDSHAKE", a.segment_mib << 20, a.buffer_mib << 20, "tcp", "",
                     a.master)
        if rc == 0 or time.monotonic() >= deadline:
            break
        time.sleep(0.5)   # e.g. no master_view published yet (the leader is still warming up)
    emit({"event": "setup", "rc": rc, "tries": tries, "seconds": round(time.monotonic() - t0, 3),
          "master": a.master})
    if rc != 0:
        finish(None, 2)
    return s


def finish(store, code=0):
    if store is not None:
        try:
            store.close()
        except Exception as e:  # noqa: BLE001 - only reported
            emit({"event": "close_error", "error": repr(e)})
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def write_keys(s, n, size):
    t0 = time.monotonic()
    failed = {}
    for i in range(n):
        rc = s.put(key_of(i), value_of(i, size))
        if rc != 0:
            # One retry after a short pause (e.g. the segment is still being mounted).
            time.sleep(0.2)
            rc = s.put(key_of(i), value_of(i, size))
        if rc != 0:
            failed[key_of(i)] = rc
        if (i + 1) % 50 == 0 or i + 1 == n:
            emit({"event": "progress", "written": i + 1, "failed": len(failed)})
    emit({"event": "written", "n": n, "failed": len(failed), "errors": sorted(set(failed.values())),
          "seconds": round(time.monotonic() - t0, 3)})
    return failed


def verify_keys(s, n, size):
    kept = wrong = missing = 0
    for i in range(n):
        got = s.get(key_of(i))
        if got is None or len(got) == 0:
            missing += 1
        elif bytes(got) == value_of(i, size):
            kept += 1
        else:
            wrong += 1
    return {"kept": kept, "wrong": wrong, "missing": missing}


def verify_until(s, n, size, timeout):
    """verify_keys, again for the missing keys every 0.2 s until none is missing or `timeout`
    passes: after a failover the restored replicas stay hidden (-703) until their owner has
    remounted, which the client does on its next heartbeat (about 1 s). Returns the counts
    and how long it took."""
    t0 = time.monotonic()
    missing = list(range(n))
    kept = wrong = 0
    while True:
        still = []
        for i in missing:
            got = s.get(key_of(i))
            if got is None or len(got) == 0:
                still.append(i)
            elif bytes(got) == value_of(i, size):
                kept += 1
            else:
                wrong += 1
        missing = still
        if not missing or time.monotonic() - t0 >= timeout:
            break
        time.sleep(0.2)
    return {"kept": kept, "wrong": wrong, "missing": len(missing),
            "readable_after_s": round(time.monotonic() - t0, 3)}


def mode_write(a, s):
    write_keys(s, a.n, a.value_size)
    emit(dict({"event": "verified", "n": a.n}, **verify_keys(s, a.n, a.value_size)))


def mode_failover(a, s):
    failed = write_keys(s, a.n, a.value_size)
    before = verify_keys(s, a.n, a.value_size)
    emit(dict({"event": "verified", "n": a.n}, **before))
    killed = {}

    def reader():
        for line in sys.stdin:
            parts = line.split()
            if len(parts) == 2 and parts[0] == "KILLED":
                t = float(parts[1])
                # A wall-clock time is turned into this process's monotonic clock.
                if t > 1e9:
                    t = time.monotonic() - (time.time() - t)
                killed["t"] = t
                killed["read_at"] = time.monotonic()
                return

    threading.Thread(target=reader, daemon=True).start()
    sys.stdout.write("READY\n")
    sys.stdout.flush()

    log = []            # (start, end, rc) of every fresh put
    j = 0
    interval = a.interval_ms / 1000.0
    ok_after = None
    while True:
        start = time.monotonic()
        rc = s.put("ha-fresh-%d" % j, value_of(1_000_000 + j, a.value_size))
        end = time.monotonic()
        log.append((start, end, rc))
        j += 1
        if "t" in killed:
            t_kill = killed["t"]
            ok_after = next((e for (st, e, r) in log if st >= t_kill and r == 0), None)
            if ok_after is not None or end - t_kill > a.recovery_timeout:
                break
        elif end - log[0][0] > a.ready_timeout:
            emit({"event": "error", "error": "no KILLED line within %s s" % a.ready_timeout})
            finish(s, 3)
        left = interval - (time.monotonic() - start)
        if left > 0:
            time.sleep(left)

    t_kill = killed["t"]
    before_kill = [x for x in log if x[0] < t_kill]
    after_kill = [x for x in log if x[0] >= t_kill]
    fails = [x for x in after_kill if x[2] != 0]
    last_ok_before = max((e for (st, e, r) in before_kill if r == 0), default=None)
    first_fail = min((st for (st, e, r) in log if r != 0 and e >= t_kill), default=None)
    longest = max((e - st for (st, e, r) in after_kill), default=0.0)
    after = verify_until(s, a.n, a.value_size, a.remount_timeout)
    # Are the fresh keys put after the failover readable?
    fresh_after_ok = [k for k, (st, e, r) in enumerate(log) if st >= t_kill and r == 0]
    fresh_readable = sum(1 for k in fresh_after_ok if bytes(s.get("ha-fresh-%d" % k) or b"")
                         == value_of(1_000_000 + k, a.value_size))
    emit({
        "event": "failover",
        "n": a.n,
        "written": a.n - len(failed),
        "kept_before_kill": before["kept"],
        "recovery_s": None if ok_after is None else round(ok_after - t_kill, 3),
        "recovered": ok_after is not None,
        "kept": after["kept"],
        "wrong": after["wrong"],
        "missing": after["missing"],
        "readable_after_s": after["readable_after_s"],
        "puts_before_kill": len(before_kill),
        "puts_failed_after_kill": len(fails),
        "errors_after_kill": sorted(set(x[2] for x in fails)),
        "first_failure_after_kill_s": None if first_fail is None else round(first_fail - t_kill, 3),
        "last_ok_before_kill_s": None if last_ok_before is None else round(last_ok_before - t_kill, 3),
        "longest_put_after_kill_s": round(longest, 3),
        "kill_line_delay_s": round(killed["read_at"] - t_kill, 3),
        "fresh_after_kill_readable": fresh_readable,
        "fresh_after_kill_ok": len(fresh_after_ok),
    })


def mode_throughput(a, s):
    value = b"v" * a.small_size
    # Warm-up: the first puts may wait for the mount to be known.
    tag = os.getpid()
    for i in range(20):
        s.put("tp-warm-%d-%d" % (tag, i), value)
    if a.wait_go:
        emit({"event": "tp_ready"})
        if sys.stdin.readline().strip() != "go":
            emit({"event": "error", "error": "no go line on stdin"})
            return
    n = fails = 0
    t0 = time.monotonic()
    end = t0 + a.seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if s.put("tp-%d-%d" % (tag, n), value) != 0:
            fails += 1
        n += 1
    took = time.monotonic() - t0
    emit({"event": "throughput", "puts": n, "failed": fails, "seconds": round(took, 3),
          "puts_per_s": round((n - fails) / took, 1), "value_size": a.small_size,
          "master": a.master})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--master", required=True, help="etcd://HOST:PORT or HOST:PORT")
    p.add_argument("--cluster-id", help="sets MC_STORE_CLUSTER_ID")
    p.add_argument("--segment-mib", type=int, default=64)
    p.add_argument("--buffer-mib", type=int, default=16)
    p.add_argument("--value-size", type=int, default=4096)
    p.add_argument("--small-size", type=int, default=64)
    p.add_argument("--interval-ms", type=float, default=20)
    p.add_argument("--setup-timeout", type=float, default=30)
    p.add_argument("--ready-timeout", type=float, default=300, help="failover: wait for KILLED")
    p.add_argument("--recovery-timeout", type=float, default=120)
    p.add_argument("--remount-timeout", type=float, default=15,
                   help="failover: how long to wait for the restored keys to become readable")
    sub = p.add_subparsers(dest="mode", required=True)
    w = sub.add_parser("write")
    w.add_argument("n", type=int)
    f = sub.add_parser("failover")
    f.add_argument("n", type=int)
    t = sub.add_parser("throughput")
    t.add_argument("seconds", type=float)
    t.add_argument("--wait-go", action="store_true", help="print tp_ready, start on a 'go' line")
    a = p.parse_args()

    os.environ.setdefault("MC_TCP_BIND_ADDRESS", "127.0.0.1")
    if a.cluster_id:
        os.environ["MC_STORE_CLUSTER_ID"] = a.cluster_id
    s = setup(a)
    try:
        {"write": mode_write, "failover": mode_failover, "throughput": mode_throughput}[a.mode](a, s)
    except Exception as e:  # noqa: BLE001 - reported as a result line
        emit({"event": "error", "error": repr(e)})
        finish(s, 1)
    finish(s, 0)


if __name__ == "__main__":
    main()
