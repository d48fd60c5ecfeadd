#!/usr/bin/env bash
# Installs noida-db, a self-contained broker that speaks the Kafka protocol with transaction
# markers and producer fencing, into a virtual environment under target/tools/noida-venv
# (idempotent), checks that it really starts and accepts Kafka connections, and prints the
# directory that holds the `noida-db` binary on its last line.
#
# The PyPI package (pinned: noida-db==0.2.3) ships the binary at site-packages/noida_db/noida-db
# next to a Python wrapper script; tests run the binary itself, so that killing the process they
# started stops the broker:
#   noida-db start --only kafka --host 127.0.0.1 --kafka-port PORT --data-dir DIR
# On Debian bookworm it prints a harmless `GLIBC_2.39` weak-version warning.
#
# A rerun with the binary in place takes about a second (version check + smoke test).
#
# Usage: .ci/tools/noida.sh            # prints the binary's directory on success
# Env:   NOIDA_TOOLS_DIR (default: <repo>/target/tools), NOIDA_SKIP_SMOKE=1 (install only)
set -euo pipefail

version=0.2.3
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools_dir="${NOIDA_TOOLS_DIR:-$repo_root/target/tools}"
venv="$tools_dir/noida-venv"

# The binary's directory inside the venv, or nothing when the package is not installed.
find_bin_dir() {
  local dir
  dir="$("$venv/bin/python" -c 'import noida_db, os; print(os.path.dirname(noida_db.__file__))' \
    2>/dev/null)" || return 0
  if [[ -x "$dir/noida-db" ]]; then echo "$dir"; fi
}

installed_version() {
  "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("noida-db"))' \
    2>/dev/null || true
}

if [[ -x "$venv/bin/python" && "$(installed_version)" == "$version" && -n "$(find_bin_dir)" ]]; then
  echo "noida-db $version already installed in $venv" >&2
else
  echo "installing noida-db==$version into $venv" >&2
  mkdir -p "$tools_dir"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "noida-db==$version" >&2
fi

bin_dir="$(find_bin_dir)"
if [[ -z "$bin_dir" ]]; then
  echo "noida-db $version installed but no executable noida_db/noida-db in $venv" >&2
  exit 1
fi

if [[ "${NOIDA_SKIP_SMOKE:-0}" != "1" ]]; then
  # A free port: bind port 0, read it back, release it (a tiny race is acceptable in CI).
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
  data="$(mktemp -d)"
  log="$data/noida.log"
  "$bin_dir/noida-db" start --only kafka --host 127.0.0.1 --kafka-port "$port" \
    --data-dir "$data/data" >"$log" 2>&1 &
  broker_pid=$!
  trap 'kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; rm -rf "$data"' EXIT
  up=0
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
    if ! kill -0 "$broker_pid" 2>/dev/null; then
      echo "noida-db exited early; log:" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.1
  done
  if [[ "$up" != 1 ]]; then
    echo "noida-db not listening on 127.0.0.1:$port after 20 s; log:" >&2; cat "$log" >&2; exit 1
  fi
  echo "noida-db Kafka listener up on 127.0.0.1:$port" >&2
fi

echo "$bin_dir"
