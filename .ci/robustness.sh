#!/usr/bin/env bash
# Robustness checks (docs/robustness.md), called from .ci/run:
#   1. every cargo-fuzz target of fuzz/ for a bounded time (stable Rust, no sanitizer);
#   2. the schema-driven API fuzzer (schemathesis) against the live server, driven by
#      docs/openapi.yaml.
# The abuse tests (tests/abuse.rs) are not run here: they are part of `cargo test --workspace`.
#
# Knobs (environment): FUZZ_SECONDS (time cap per target, default 90), FUZZ_RUNS (inputs per
# target, default 300000), FUZZ_SEED (default 1), FUZZ_TARGETS (default: all),
# ST_MAX_EXAMPLES (per operation, default 50), ST_SEED (default 1; `random` for a new one),
#
# CI runs are reproducible: libFuzzer with a fixed seed, a fixed number of runs and an empty
# scratch corpus explores the same inputs every time, and schemathesis gets a fixed seed, so a
# submission that passed here passes in CI. Explore with FUZZ_SEED=0 (random) and longer runs
# (docs/robustness.md); commit what a crash teaches as a seed and a regression test.
# ROBUSTNESS_WORK (scratch folder, default target/robustness).
# Budget on 2 cores: about 2-3 min of installs and builds (less when cached) + 4 x 45 s of
# fuzzing + about 1 min of schemathesis.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

FUZZ_SECONDS=${FUZZ_SECONDS:-90}
FUZZ_RUNS=${FUZZ_RUNS:-300000}
FUZZ_SEED=${FUZZ_SEED:-1}
ST_SEED=${ST_SEED:-1}
if [ "$ST_SEED" = random ]; then ST_SEED=; fi
FUZZ_TARGETS=${FUZZ_TARGETS:-"http_conn http_split store_ops json_api rpc_codec rpc_conn te_codec node_client zmtp_pub"}
ST_MAX_EXAMPLES=${ST_MAX_EXAMPLES:-50}
CARGO_FUZZ_VERSION=0.13.2
SCHEMATHESIS_VERSION=4.32.5
WORK=${ROBUSTNESS_WORK:-target/robustness}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

step() { printf '\n=== %s ===\n' "$*"; }
started=$(date +%s)
declare -a FIGURES=()

# ---------------------------------------------------------------------------------------------
step "cargo-fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
cargo fuzz --version

step "fuzz crate: formatting and clippy (it is outside the workspace)"
rustfmt --check --edition 2021 --config-path rustfmt.toml fuzz/src/lib.rs fuzz/fuzz_targets/*.rs
(cd fuzz && cargo clippy --all-targets -- -D warnings)

step "build fuzz targets (release, debug assertions, no sanitizer)"
cargo fuzz build --sanitizer none

for t in $FUZZ_TARGETS; do
  step "fuzz $t: $FUZZ_RUNS runs, seed $FUZZ_SEED, at most ${FUZZ_SECONDS}s"
  # New inputs go to a scratch corpus; the committed seeds in fuzz/corpus/$t are only read.
  mkdir -p "$WORK/corpus/$t"
  log="$WORK/fuzz-$t.log"
  set +e
  cargo fuzz run --sanitizer none "$t" "$WORK/corpus/$t" "fuzz/corpus/$t" -- \
    -runs="$FUZZ_RUNS" -seed="$FUZZ_SEED" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  if [ $rc -ne 0 ]; then
    tail -n 60 "$log"
    echo "fuzz target $t failed (exit $rc); the crashing input is in fuzz/artifacts/$t/." >&2
    echo "Reproduce: cargo fuzz run --sanitizer none $t fuzz/artifacts/$t/<file>" >&2
    exit 1
  fi
  execs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 execs in \2 s/p' "$log" | tail -n 1)
  cov=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' || true)
  line="fuzz $t: ${execs:-? execs}, ${cov:-no stats}, no crash"
  echo "$line"
  FIGURES+=("$line")
done

# ---------------------------------------------------------------------------------------------
step "schemathesis $SCHEMATHESIS_VERSION"
VENV="$WORK/venv"
if [ ! -x "$VENV/bin/schemathesis" ] || ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$VENV/bin/schemathesis" --version

step "schema fuzzing against the live server"
cargo build --bin mc-master
RUST_LOG=warn target/debug/mc-master --port 0 --rpc-port off --global-segment-size 64MiB \
  >"$WORK/server.out" 2>"$WORK/server.err" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
url=""
for _ in $(seq 1 100); do
  url=$(sed -n '1s/^listening on //p' "$WORK/server.out")
  [ -n "$url" ] && break
  sleep 0.1
done
if [ -z "$url" ]; then
  cat "$WORK/server.err" >&2
  echo "the server did not start" >&2
  exit 1
fi
echo "server at $url (pid $server)"
seed_args=()
if [ -n "${ST_SEED:-}" ]; then seed_args=(--seed "$ST_SEED"); fi
set +e
"$VENV/bin/schemathesis" --config-file .ci/schemathesis.toml run docs/openapi.yaml \
  --url "$url" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$ST_MAX_EXAMPLES" \
  --request-timeout 10 \
  "${seed_args[@]}" >"$WORK/schemathesis.log" 2>&1
st=$?
set -e
if [ $st -ne 0 ]; then
  tail -n 200 "$WORK/schemathesis.log"
else
  sed -n '/SUMMARY/,$p' "$WORK/schemathesis.log"
fi
if ! kill -0 "$server" 2>/dev/null; then
  cat "$WORK/server.err" >&2
  echo "the server died during schema fuzzing" >&2
  exit 1
fi
if grep -q 'panicked' "$WORK/server.err"; then
  cat "$WORK/server.err" >&2
  echo "the server panicked during schema fuzzing" >&2
  exit 1
fi
rss=$(awk '/VmRSS/ {print $2 " " $3}' "/proc/$server/status")
served=$("$VENV/bin/python" - "$url" <<'PY' || echo "?"
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1] + "/metrics", timeout=10).read().decode()
print(sum(int(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("http_requests_total{")))
PY
)
kill "$server" 2>/dev/null || true
trap - EXIT
if [ $st -ne 0 ]; then
  echo "schemathesis found failures (exit $st); full log: $WORK/schemathesis.log" >&2
  exit 1
fi
cases=$(grep -oE '[0-9]+ generated, [0-9]+ passed' "$WORK/schemathesis.log" | tail -n 1)
seed=$(sed -n 's/^Seed: //p' "$WORK/schemathesis.log" | tail -n 1)
line="schemathesis: ${cases:-? cases} (seed $seed, max $ST_MAX_EXAMPLES examples per operation); server answered $served requests, RSS $rss"
echo "$line"
FIGURES+=("$line")

# ---------------------------------------------------------------------------------------------
step "robustness figures"
for f in "${FIGURES[@]}"; do echo "$f"; done
echo "robustness checks passed in $(($(date +%s) - started)) s"
