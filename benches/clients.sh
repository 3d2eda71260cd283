#!/usr/bin/env bash
# Many-clients benchmark: N simulated upstream store clients (benches/clients.rs) against
# mc-master and upstream's mooncake_master over the master RPC protocol, on loopback.
#
#   bash benches/clients.sh                          # mc-master at 1k and 10k, upstream at 1k
#   bash benches/clients.sh --clients 1000 --secs 10 --no-upstream
#   bash benches/clients.sh --upstream-clients 1000,10000 --ops-per-sec 5000
#   bash benches/clients.sh -- --fetch-tasks --threads 2   # after --: flags of the tool
#
# Flags: --clients LIST (mc-master client counts, default 1000,10000), --upstream-clients LIST
# (default 1000), --no-upstream, --no-mc, --ops-per-sec R (the loaded window's aggregate
# rate, default 2000; the first window is always heartbeats only), --secs S (each window,
# default 30), --mc-threads N and --upstream-threads N (the masters' worker threads, default
# 2), --setup-timeout S (default 900), --out DIR (default target/bench-clients), --venv DIR;
# --report DIR only rewrites DIR/report.md and results.json from the JSON files of a run.
#
# It installs what is missing for upstream (libibverbs1 from Debian, upstream's wheel
# mooncake-transfer-engine-non-cuda into a venv, as benches/setup.sh), builds mc-master and
# the tool in release, raises the open-file limit for N connections (and says so when the
# hard limit is too low), then per system and N: starts the master on 127.0.0.1 (a copy of
# the binary, so that a rebuild meanwhile changes nothing), runs the tool (set-up, a window
# of heartbeats only, a window with the operation mix), stops the master by its PID. Prints
# a markdown table and writes target/bench-clients/<date>/report.md, results.json and the
# logs. See docs/benchmarks.md, "Many clients".
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[clients.sh] %s\n' "$*" >&2; }

MC_CLIENTS=1000,10000
UP_CLIENTS=1000
OPS=2000
SECS=30
MC_THREADS=2
UP_THREADS=2
SETUP_TIMEOUT=900
OUT=target/bench-clients
VENV=
REPORT_ONLY=
TOOL_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) MC_CLIENTS=$2; shift 2 ;;
    --upstream-clients) UP_CLIENTS=$2; shift 2 ;;
    --no-upstream) UP_CLIENTS=; shift ;;
    --no-mc) MC_CLIENTS=; shift ;;
    --ops-per-sec) OPS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --mc-threads) MC_THREADS=$2; shift 2 ;;
    --upstream-threads) UP_THREADS=$2; shift 2 ;;
    --setup-timeout) SETUP_TIMEOUT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --venv) VENV=$2; shift 2 ;;
    --report) REPORT_ONLY=$2; shift 2 ;;
    --) shift; TOOL_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) say "unknown flag $1 (--help)"; exit 2 ;;
  esac
done

report() { # DIR: report.md and results.json from DIR/meta.json and the runs' JSON files
python3 - "$1" <<'EOF'
import glob, json, os, platform, sys

d = sys.argv[1]
with open(os.path.join(d, "meta.json")) as f:
    meta = json.load(f)
stamp, commit, dirty = meta["started"], meta["commit"], meta["uncommitted_files"]
mc_threads, up_threads, up_version = meta["mc_threads"], meta["upstream_threads"], meta["upstream_version"]
runs = []
for path in sorted(glob.glob(os.path.join(d, "*.json"))):
    if os.path.basename(path) in ("results.json", "meta.json"):
        continue
    try:
        with open(path) as f:
            runs.append(json.load(f))
    except (OSError, ValueError):
        print("[clients.sh] %s: no result" % path, file=sys.stderr)
order = {"upstream": 0, "mc-master": 1}
runs.sort(key=lambda r: (r["clients"], order.get(r["label"].rsplit("-", 1)[0], 2)))

def system(r):
    return r["label"].rsplit("-", 1)[0]

def ms(x):
    return "–" if x is None else ("%.2f" % (x / 1000.0))

def num(x, fmt="%.1f"):
    return "–" if x is None else fmt % x

def kfmt(n):
    return "%dk" % (n // 1000) if n % 1000 == 0 else str(n)

def model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()

def lost(r, w):
    return w["pings"]["lost_clients"]

def expected_active(r):
    before = r["end"]["active_clients_before"] or 0
    return before + r["setup"]["ready"]

lines = []
out = lines.append
out("# Many clients, %s" % stamp.replace("T", " ").replace("Z", " UTC"))
out("")
out("Machine: %d CPUs (%s), shared with other work; master, tool and everything else on the same cores. "
    "Loopback. mc-master `--threads %s` (commit %s%s), upstream `mooncake_master` %s `--rpc_thread_num %s`, "
    "both with a 10 s client TTL." % (os.cpu_count(), model(), mc_threads, commit,
                                       " + %s uncommitted files" % dirty if dirty else "",
                                       up_version or "–", up_threads))
out("")
def wname(w):
    return "heartbeats" if w["ops_per_sec_target"] == 0 else "+ %g ops/s" % w["ops_per_sec_target"]

def worst(w):
    return max(((v["p99_us"], m) for m, v in w["methods"].items()), default=(None, ""))

out("CPU (utime + stime over the window; 100 = one core):")
out("")
out("| system | clients | window | master CPU (%) | master threads (%) | master CPU per answered RPC (µs) | tool CPU (%) | machine busy (cores) | RPCs answered/s | ops/s sent (dropped: client busy) |")
out("|---|---|---|---|---|---|---|---|---|---|")
for r in runs:
    for w in r["windows"]:
        rpcs = w["all_rpcs"]["count"]
        cpu = w["master_cpu_pct"]
        per = cpu / 100.0 * w["secs"] / rpcs * 1e6 if cpu is not None and rpcs else None
        th = sorted(w.get("master_threads_cpu_pct", {}).items())
        names = [k.split("/")[0] for k, _ in th]
        thr = ", ".join("%s %.0f" % (k if names.count(k.split("/")[0]) > 1 else k.split("/")[0], v) for k, v in th)
        out("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s (%d) |" % (
            system(r), kfmt(r["clients"]), wname(w), num(cpu), thr or "–", num(per), num(w["tool_cpu_pct"]),
            num(w["machine_busy_cores"], "%.2f"), num(rpcs / w["secs"], "%.0f"), num(w["ops_per_sec"], "%.0f"),
            w.get("ops_dropped_busy", 0)))
out("")
out("Liveness and latency (latency from send to reply in the tool; a heartbeat gap is the time between "
    "two answered heartbeats of a client, or from the last one to the end of the window):")
out("")
out("| system | clients | window | Ping p50 / p99 / max (ms) | all RPCs p99 / max (ms) | worst method p99 (ms) | unanswered calls | Pings skipped (previous unanswered) | max heartbeat gap (s) | clients with a gap ≥ TTL | clients lost (NEED_REMOUNT after OK) | expired (metric) | active clients min–max (expected) |")
out("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in runs:
    for w in r["windows"]:
        ping = w["methods"].get("Ping", {})
        wst = worst(w)
        exp = w["expired_clients_increase"]
        out("| %s | %s | %s | %s / %s / %s | %s / %s | %s (%s) | %d | %d | %s | %d | %d | %s | %s–%s (%d) |" % (
            system(r), kfmt(r["clients"]), wname(w),
            ms(ping.get("p50_us")), ms(ping.get("p99_us")), ms(ping.get("max_us")),
            ms(w["all_rpcs"]["p99_us"]), ms(w["all_rpcs"]["max_us"]), ms(wst[0]), wst[1] or "–",
            w.get("unanswered_calls", 0), w["pings"]["skipped_previous_unanswered"],
            num(w.get("max_heartbeat_gap_s"), "%.2f"), w.get("clients_gap_over_ttl", 0),
            lost(r, w), "–" if exp is None else "%d" % exp,
            num(w["active_clients_min"], "%.0f"), num(w["active_clients_max"], "%.0f"), expected_active(r)))
out("")
out("Latency per method in the loaded window, from send to reply in the tool (ms, p50 / p99 / max):")
out("")
meths = ["Ping", "PutStart", "PutEnd", "GetReplicaList", "ExistKey"]
out("| system | clients | " + " | ".join(meths) + " |")
out("|---|---|" + "---|" * len(meths))
for r in runs:
    w = r["windows"][-1]
    cells = []
    for m in meths:
        v = w["methods"].get(m)
        cells.append("–" if not v else "%s / %s / %s" % (ms(v["p50_us"]), ms(v["p99_us"]), ms(v["max_us"])))
    out("| %s | %s | %s |" % (system(r), kfmt(r["clients"]), " | ".join(cells)))
out("")
out("Set-up (connect, ServiceReady, MountSegment, first Ping, ReMountSegment of every client, %s at a time):"
    % (runs[0].get("ramp", "–") if runs else "–"))
out("")
out("| system | clients | set-up (s) | clients ready / failed | master CPU in set-up (%) | MountSegment p50 / p99 (ms) | master idle CPU (%) | master RSS before / after (MiB) |")
out("|---|---|---|---|---|---|---|---|")
for r in runs:
    s = r["setup"]
    mnt = s["methods"].get("MountSegment", {})
    rss = lambda k: "–" if r[k] is None else "%.1f" % (r[k] / 1024.0)
    out("| %s | %s | %.1f | %d / %d | %s | %s / %s | %s | %s / %s |" % (
        system(r), kfmt(r["clients"]), s["secs"], s["ready"], s["failed"], num(s["master_cpu_pct"]),
        ms(mnt.get("p50_us")), ms(mnt.get("p99_us")), num(r["master_idle_cpu_pct"]),
        rss("master_rss_kib_before"), rss("master_rss_kib_after")))
out("")

# Targets.
out("Targets:")
out("")
for r in runs:
    if system(r) == "mc-master" and r["clients"] >= 10000:
        w = r["windows"][0]
        cpu = w["master_cpu_pct"]
        ok = cpu is not None and cpu < 10
        sat = w["pings"]["skipped_previous_unanswered"]
        out("- %s clients' heartbeats under 10%% of one core (%s): %s%%%s — **%s**" % (
            kfmt(r["clients"]), system(r), num(cpu),
            " while answering only %s of %s Pings/s (%d skipped: the previous one unanswered)" % (
                num(w["pings"]["ok"] / w["secs"], "%.0f"), kfmt(r["clients"]), sat) if sat else "",
            "met" if ok else "missed"))
for r in runs:
    w = r["windows"][-1]
    exp = w["expired_clients_increase"]
    act = w["active_clients_min"]
    bad = []
    if lost(r, w):
        bad.append("%d clients got NEED_REMOUNT after OK" % lost(r, w))
    if exp:
        bad.append("master_expired_clients_total +%d" % exp)
    if act is not None and act < expected_active(r):
        bad.append("master_active_clients down to %.0f of %d" % (act, expected_active(r)))
    if w.get("clients_gap_over_ttl", 0):
        bad.append("%d clients without an answered heartbeat for ≥ %g s (max gap %.1f s)" % (
            w["clients_gap_over_ttl"], r.get("ttl", 10), w.get("max_heartbeat_gap_s") or 0))
    if w["disconnects"]:
        bad.append("%d disconnected" % w["disconnects"])
    if r["setup"]["failed"]:
        bad.append("%d set-ups failed" % r["setup"]["failed"])
    unknown = " (metrics not scraped)" if act is None and exp is None and system(r) == "mc-master" else ""
    gap = w.get("max_heartbeat_gap_s") or 0
    risk = not bad and gap >= r.get("ttl", 10) / 2
    ping = w["methods"].get("Ping", {})
    out("- no client expires while loaded (%s, %s clients, %s): %s%s — **%s**" % (
        system(r), kfmt(r["clients"]), wname(w), "; ".join(bad) if bad else
        "0 lost, max heartbeat gap %.2f s (Ping p99 %s ms), active min %s of %d" % (
            gap, ms(ping.get("p99_us")), num(act, "%.0f"), expected_active(r)),
        unknown, "missed" if bad else ("met, at risk: a heartbeat gap over half the TTL" if risk else "met")))
for r in runs:
    if r["clients"] == 1000:
        for w in r["windows"]:
            wst = worst(w)
            un = w.get("unanswered_calls", 0)
            ok = wst[0] is not None and wst[0] < 2000 and un == 0
            out("- RPC p99 under 2 ms at 1k clients (%s, %s): all RPCs %s ms, worst method %s %s ms%s — **%s**" % (
                system(r), wname(w), ms(w["all_rpcs"]["p99_us"]), wst[1], ms(wst[0]),
                ", %d unanswered" % un if un else "", "met" if ok else "missed"))
report = "\n".join(lines) + "\n"
with open(os.path.join(d, "report.md"), "w") as f:
    f.write(report)
with open(os.path.join(d, "results.json"), "w") as f:
    json.dump(dict(meta, cpus=os.cpu_count(), cpu_model=model(), runs=runs), f, indent=1)
print(report)
EOF
}
if [ -n "$REPORT_ONLY" ]; then
  report "$REPORT_ONLY"
  exit 0
fi

# ---- what upstream needs (benches/setup.sh; this benchmark does not use wrk) ----
if [ -n "$UP_CLIENTS" ]; then
  # shellcheck source=benches/setup.sh
  SETUP_NO_WRK=1 . benches/setup.sh "$VENV"
  UP_BIN=$("$VENV/bin/python" -c 'import mooncake, os; print(os.path.join(os.path.dirname(mooncake.__file__), "mooncake_master"))')
  [ -x "$UP_BIN" ] || { say "no mooncake_master in $VENV"; exit 1; }
  say "upstream: $UP_BIN"
fi

# ---- build ----
say "cargo build --release (mc-master, clients)"
cargo build --release --quiet --bin mc-master
TOOL=$(cargo build --release --quiet --bench clients --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "clients" and m.get("executable"):
        print(m["executable"])')
[ -x "$TOOL" ] || { say "could not find the clients binary"; exit 1; }

STAMP=$(date -u +%Y-%m-%dT%H-%M-%SZ)
DIR=$OUT/$STAMP
mkdir -p "$DIR"
# Copies: a rebuild by someone else during the run neither changes nor deletes them.
cp "${CARGO_TARGET_DIR:-target}/release/mc-master" "$DIR/mc-master"
cp "$TOOL" "$DIR/clients"
MC_BIN=$DIR/mc-master
TOOL=$DIR/clients
UP_VERSION=
[ -n "$UP_CLIENTS" ] && UP_VERSION=$("$VENV/bin/pip" show mooncake-transfer-engine-non-cuda 2>/dev/null | sed -n 's/^Version: //p')
python3 - "$DIR/meta.json" "$STAMP" "$(git rev-parse --short HEAD 2>/dev/null)" \
  "$(git status --porcelain 2>/dev/null | grep -c . || true)" "$MC_THREADS" "$UP_THREADS" "$UP_VERSION" "$OPS" "$SECS" \
  "${TOOL_ARGS[@]}" <<'EOF'
import json, sys
a = sys.argv[1:]
with open(a[0], "w") as f:
    json.dump({"started": a[1], "commit": a[2], "uncommitted_files": int(a[3] or 0), "mc_threads": int(a[4]),
               "upstream_threads": int(a[5]), "upstream_version": a[6], "ops_per_sec": float(a[7]),
               "secs": float(a[8]), "tool_args": a[9:]}, f, indent=1)
EOF
say "results in $DIR"

# ---- limits ----
max=0
for n in ${MC_CLIENTS//,/ } ${UP_CLIENTS//,/ }; do [ "$n" -gt "$max" ] && max=$n; done
need=$((max + 256))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
  if ! ulimit -Hn "$need" 2>/dev/null; then
    say "$max clients need $need open files in the master and in the tool; the hard limit is $hard (ulimit -Hn)."
    say "raise it (as root: ulimit -Hn $need; LimitNOFILE= of a systemd unit; nofile in /etc/security/limits.conf) or use fewer clients"
    exit 1
  fi
fi
ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
if [ $((hi - lo + 1)) -lt "$max" ]; then
  say "net.ipv4.ip_local_port_range ($lo-$hi) has fewer ports than $max connections; widen it or use fewer clients"
  exit 1
fi

# ---- processes ----
STARTED=()
stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() { for p in "${STARTED[@]}"; do stop_pid "$p"; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port pid
  for _ in $(seq 1 300); do
    port_open "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

MC_PORT=18580
MC_RPC=50651
UP_RPC=50751
UP_METRICS=19751

run() { # system clients
  local sys=$1 n=$2 label pid metrics rpc
  label="$sys-$n"
  if [ "$sys" = mc-master ]; then
    rpc=$MC_RPC
    for p in $MC_PORT $MC_RPC; do port_open $p && { say "port $p is in use"; exit 1; }; done
    say "\$ mc-master --host 127.0.0.1 --port $MC_PORT --rpc-port $MC_RPC --threads $MC_THREADS --te-port off"
    RUST_LOG=warn "$MC_BIN" --host 127.0.0.1 --port $MC_PORT --rpc-port $MC_RPC --threads "$MC_THREADS" \
      --te-port off >"$DIR/$label.master.log" 2>&1 &
    pid=$!
    metrics=http://127.0.0.1:$MC_PORT/metrics
  else
    rpc=$UP_RPC
    for p in $UP_RPC $UP_METRICS; do port_open $p && { say "port $p is in use"; exit 1; }; done
    # --client_ttl 10 as mc-master's default --client-ttl 10s; no HA, no HTTP metadata server.
    say "\$ mooncake_master --rpc_port $UP_RPC --rpc_address 127.0.0.1 --rpc_thread_num $UP_THREADS --metrics_port $UP_METRICS --metrics_host 127.0.0.1 --client_ttl 10 --logtostderr"
    "$UP_BIN" --rpc_port $UP_RPC --rpc_address 127.0.0.1 --rpc_thread_num "$UP_THREADS" \
      --metrics_port $UP_METRICS --metrics_host 127.0.0.1 --client_ttl 10 --logtostderr \
      >"$DIR/$label.master.log" 2>&1 &
    pid=$!
    metrics=http://127.0.0.1:$UP_METRICS/metrics
  fi
  STARTED+=("$pid")
  local mport=${metrics#http://127.0.0.1:}
  mport=${mport%%/*}
  for p in "$rpc" "$mport"; do
    wait_port "$p" "$pid" || { say "$sys did not open port $p; see $DIR/$label.master.log"; exit 1; }
  done
  say "$label: master pid $pid; tool: $n clients, windows of ${SECS}s at 0 and $OPS ops/s"
  "$TOOL" --addr "127.0.0.1:$rpc" --clients "$n" --ops-per-sec "0,$OPS" --secs "$SECS" \
    --setup-timeout "$SETUP_TIMEOUT" --pid "$pid" --metrics "$metrics" --label "$label" \
    "${TOOL_ARGS[@]}" >"$DIR/$label.json" 2> >(tee "$DIR/$label.log" >&2) || {
    say "$label: the tool failed (exit $?); see $DIR/$label.log"
  }
  stop_pid "$pid"
}

[ -n "$UP_CLIENTS" ] && for n in ${UP_CLIENTS//,/ }; do run upstream "$n"; done
[ -n "$MC_CLIENTS" ] && for n in ${MC_CLIENTS//,/ }; do run mc-master "$n"; done

# ---- report ----
report "$DIR"
say "report: $DIR/report.md, results: $DIR/results.json"
