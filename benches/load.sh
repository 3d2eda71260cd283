#!/usr/bin/env bash
# Load benchmark: mc-master next to upstream Mooncake, on loopback, with wrk.
#
#   bash benches/load.sh                    # everything, defaults (wrk -t2 -c64 -d10s)
#   bash benches/load.sh --duration 5s      # any flag of benches/load/load.py (--help lists them)
#   bash benches/load.sh --no-upstream --mc-threads 1 --only health,metrics
#
# It builds mc-master in release, installs what is missing (wrk and libibverbs1 from
# Debian, upstream's wheel mooncake-transfer-engine-non-cuda into target/bench-venv), then
# runs benches/load/load.py, which starts every server on 127.0.0.1, preloads the same
# keys in each, runs wrk against each endpoint of each and prints a table of req/s and one
# of CPU per request (server and wrk). Results and logs go to target/bench-load/<date>/
# (mc-master from $CARGO_TARGET_DIR when set; --venv picks another venv). Takes about 11
# minutes with both runtimes. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[load.sh] %s\n' "$*" >&2; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    say "missing Debian packages: $*; install them (sudo apt-get install $*) and rerun"
    exit 1
  fi
  say "apt-get install $*"
  if ! apt-get install -y -qq "$@" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1
    apt-get install -y -qq "$@" >/dev/null
  fi
}

need_pkgs=()
command -v wrk >/dev/null || need_pkgs+=(wrk)
if ! ldconfig -p 2>/dev/null | grep -q 'libibverbs.so.1'; then
  need_pkgs+=(libibverbs1)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  apt_install "${need_pkgs[@]}"
fi

upstream=1
VENV=target/bench-venv
prev=
for a in "$@"; do
  [ "$a" = "--no-upstream" ] && upstream=0
  [ "$prev" = "--venv" ] && VENV=$a
  case "$a" in --venv=*) VENV=${a#--venv=} ;; esac
  prev=$a
done
if [ $upstream = 1 ] && ! "$VENV/bin/python" -c 'import mooncake.store' 2>/dev/null; then
  say "installing upstream's wheel into $VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check mooncake-transfer-engine-non-cuda
fi

say "cargo build --release"
cargo build --release --quiet --bin mc-master
MC_BIN=${CARGO_TARGET_DIR:-target}/release/mc-master

# Every runtime this binary accepts (glommio only where the build has it).
runtimes=mio
probe_log=$(mktemp)
"$MC_BIN" --runtime glommio --host 127.0.0.1 --port 0 --rpc-port off --threads 1 >"$probe_log" 2>&1 &
probe=$!
for _ in $(seq 1 30); do
  grep -q 'listening on' "$probe_log" && break
  kill -0 $probe 2>/dev/null || break
  sleep 0.1
done
grep -q 'listening on' "$probe_log" && runtimes=mio,glommio
kill $probe 2>/dev/null || true
wait $probe 2>/dev/null || true
rm -f "$probe_log"
say "runtimes: $runtimes"

exec python3 benches/load/load.py --mc-bin "$MC_BIN" --runtimes "$runtimes" "$@"
