#!/usr/bin/env bash
# TE TCP data-plane benchmark: mc-master's TE target beside upstream's, on loopback.
#
#   bash benches/te.sh                       # everything (about 5 minutes)
#   bash benches/te.sh --repeat 2 --secs 3   # any flag of benches/te/te.py (--help lists them)
#   bash benches/te.sh --skip rest --lanes 1 --blocks 1048576
#
# It installs what is missing (wrk and libibverbs1 from Debian, upstream's wheel
# mooncake-transfer-engine-non-cuda into a venv: target/tmp/rpc-upstream-venv when it
# already has it, else target/bench-venv), builds mc-master and the client
# (benches/te_client.rs) in release, then runs benches/te/te.py: upstream's
# transfer_engine_bench target and mc-master's target side by side, the same client against
# both, upstream's initiator against both, and REST GET of a 1 MiB value held by another
# node. Results and logs go to target/bench-te/<date>/ (report.md, results.json, logs).
# Every server listens on 127.0.0.1 and is stopped by its PID. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[te.sh] %s\n' "$*" >&2; }

# shellcheck source=benches/setup.sh
. benches/setup.sh "${TE_BENCH_VENV:-}"

say "cargo build --release (mc-master, te_client)"
cargo build --release --quiet --bin mc-master
CLIENT=$(cargo build --release --quiet --bench te_client --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "te_client" and m.get("executable"):
        print(m["executable"])')
[ -x "$CLIENT" ] || { say "could not find the te_client binary"; exit 1; }
MC_BIN=${CARGO_TARGET_DIR:-target}/release/mc-master

exec python3 benches/te/te.py --mc-bin "$MC_BIN" --client "$CLIENT" --venv "$VENV" "$@"
