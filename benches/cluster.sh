#!/usr/bin/env bash
# Store-node benchmark: mc-master's store node (--master) beside upstream's Python store
# service, each against upstream's mooncake_master and against mc-master as master, on
# loopback, with wrk.
#
#   bash benches/cluster.sh                          # everything (about 4 minutes)
#   CLUSTER_DURATION=3 bash benches/cluster.sh       # shorter runs (seconds per wrk run)
#   bash benches/cluster.sh --only get64,get1m --combos mc-mc,up-up
#   python3 benches/cluster/cluster.py --help        # every flag (and its CLUSTER_* variable)
#
# It installs what is missing (wrk and libibverbs1 from Debian, upstream's wheel
# mooncake-transfer-engine-non-cuda into a venv: target/tmp/rpc-upstream-venv when it
# already has it, else target/bench-venv; CLUSTER_VENV picks another), builds mc-master in
# release, then runs benches/cluster/cluster.py: four clusters (master x node kind), REST
# GET / exist / PUT of 64-byte values on a node holding them, and of 1 MiB values through a
# node whose replica is on the other node; req/s, p99, GB/s, CPU per request, idle RSS, and
# the ratios mc-master / upstream of the same run. Results and logs go to
# target/bench-cluster/<date>/ (report.md, results.json, wrk.log, every process's log).
# Every server listens on 127.0.0.1 and is stopped by its PID. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[cluster.sh] %s\n' "$*" >&2; }

# shellcheck source=benches/setup.sh
. benches/setup.sh "${CLUSTER_VENV:-}"

say "cargo build --release"
cargo build --release --quiet --bin mc-master
MC_BIN=${CARGO_TARGET_DIR:-target}/release/mc-master

exec python3 benches/cluster/cluster.py --mc-bin "$MC_BIN" --venv "$VENV" "$@"
