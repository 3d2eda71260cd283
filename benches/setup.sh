# Shared set-up of the benchmark scripts that run upstream beside mc-master (te.sh,
# cluster.sh); sourced, not run. Installs what is missing: wrk and libibverbs1 from Debian,
# upstream's wheel mooncake-transfer-engine-non-cuda into a venv. Sets VENV: $1 when given,
# else target/tmp/rpc-upstream-venv when the upstream tests already filled it, else
# target/bench-venv. Needs say() and the repository root as the current directory.
# SETUP_NO_WRK=1: wrk is not needed (clients.sh).

need_pkgs=()
[ -n "${SETUP_NO_WRK:-}" ] || command -v wrk >/dev/null || need_pkgs+=(wrk)
ldconfig -p 2>/dev/null | grep -q 'libibverbs.so.1' || need_pkgs+=(libibverbs1)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    say "missing Debian packages: ${need_pkgs[*]}; install them (sudo apt-get install ${need_pkgs[*]}) and rerun"
    exit 1
  fi
  say "apt-get install ${need_pkgs[*]}"
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null 2>&1
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  }
fi

VENV=${1:-}
if [ -z "$VENV" ]; then
  if target/tmp/rpc-upstream-venv/bin/python -c 'import mooncake.store' 2>/dev/null; then
    VENV=target/tmp/rpc-upstream-venv
  else
    VENV=target/bench-venv
  fi
fi
if ! "$VENV/bin/python" -c 'import mooncake.store' 2>/dev/null; then
  say "installing upstream's wheel into $VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check mooncake-transfer-engine-non-cuda
fi
say "venv: $VENV"
