#!/usr/bin/env bash
# Scale benchmark (issue 16, point 2): a master with millions of 64-byte keys, mc-master
# beside upstream's mooncake_master, on loopback.
#
#   bash benches/scale.sh                                # 1M and 10M keys (upstream: 1M only)
#   bash benches/scale.sh --keys 100000                  # any flag of benches/scale/scale.py
#   bash benches/scale.sh --keys 1000000 --systems mc --paths rpc
#   python3 benches/scale/scale.py --help                # every flag
#
# It installs what is missing (wrk and libibverbs1 from Debian, upstream's wheel
# mooncake-transfer-engine-non-cuda into a venv: target/tmp/rpc-upstream-venv when it already
# has it, else target/bench-venv; SCALE_BENCH_VENV picks another), builds mc-master and the
# client (benches/scale_client.rs) in release, then runs benches/scale/scale.py: per key
# count and path, RSS per key, load rate, lookup latency against a 10k-key master,
# /get_all_keys with the master's RSS sampled, eviction of 10% and remove_all with a 1 ms
# lookup probe. Results and logs go to target/bench-scale/<date>/ (report.md, results.json).
# Every server listens on 127.0.0.1 and is stopped by its PID. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[scale.sh] %s\n' "$*" >&2; }

# Upstream's wheel is needed unless --systems leaves upstream out.
upstream=1
prev=
for a in "$@"; do
  if [ "$prev" = --systems ]; then [[ $a == *upstream* ]] || upstream=0; fi
  case "$a" in --systems=*) [[ $a == *upstream* ]] || upstream=0 ;; esac
  prev=$a
done

if [ $upstream = 1 ]; then
  # shellcheck source=benches/setup.sh
  . benches/setup.sh "${SCALE_BENCH_VENV:-}"
else
  VENV=${SCALE_BENCH_VENV:-target/bench-venv}
fi

say "cargo build --release (mc-master, scale_client)"
cargo build --release --quiet --bin mc-master
CLIENT=$(cargo build --release --quiet --bench scale_client --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "scale_client" and m.get("executable"):
        print(m["executable"])')
[ -x "$CLIENT" ] || { say "could not find the scale_client binary"; exit 1; }
MC_BIN=${CARGO_TARGET_DIR:-target}/release/mc-master

exec python3 benches/scale/scale.py --mc-bin "$MC_BIN" --client "$CLIENT" --venv "$VENV" "$@"
