#!/usr/bin/env bash
# Installs the Tansu Kafka-compatible broker into target/tools/bin/ (idempotent) and checks that
# it really starts and serves the Kafka protocol (a broker on a free loopback port + one topic).
#
# Tansu is a single static binary built from crates.io:
#   cargo install tansu --locked --features dynostore --root target/tools
# The build is slow: 18 min on 2 shared cores (measured 2026-11-25, tansu 0.6.0, 1.4 GB of build
# files). Its target directory is kept under target/tools/cache/tansu-build while building, so a
# rerun after a failure resumes instead of restarting, and deleted once the binary is installed.
# A rerun with the binary in place takes about 0.3 s (version check + smoke test).
#
# CLI used here (tansu 0.6.0, checked against `tansu --help`, `tansu broker --help`,
# `tansu topic create --help`; `broker` is also the default command, `--storage-engine` defaults
# to memory://tansu/, `--partitions` to 3, `--broker` to tcp://localhost:9092):
#   tansu broker --listener-url tcp://127.0.0.1:PORT --advertised-listener-url tcp://127.0.0.1:PORT \
#                --storage-engine memory://tansu/
#   tansu topic create NAME --partitions N --broker tcp://127.0.0.1:PORT
#
# Usage: .ci/tools/tansu.sh            # prints the bin directory on success
# Env:   TANSU_TOOLS_DIR (default: <repo>/target/tools), TANSU_VERSION (cargo --version spec),
#        TANSU_SKIP_SMOKE=1 (install only)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools_dir="${TANSU_TOOLS_DIR:-$repo_root/target/tools}"
bin_dir="$tools_dir/bin"
tansu="$bin_dir/tansu"

if [[ -x "$tansu" ]] && "$tansu" --version >/dev/null 2>&1; then
  echo "tansu already installed: $("$tansu" --version)" >&2
else
  mkdir -p "$bin_dir" "$tools_dir/cache"
  version_args=()
  if [[ -n "${TANSU_VERSION:-}" ]]; then version_args=(--version "$TANSU_VERSION"); fi
  echo "building tansu from crates.io (slow: many minutes)" >&2
  started=$(date +%s)
  cargo install tansu --locked --features dynostore --root "$tools_dir" \
    --target-dir "$tools_dir/cache/tansu-build" "${version_args[@]}"
  echo "tansu built in $(( $(date +%s) - started ))s" >&2
  "$tansu" --version >&2
  rm -rf "$tools_dir/cache/tansu-build"
fi

if [[ "${TANSU_SKIP_SMOKE:-0}" != "1" ]]; then
  # A free port: bind port 0, read it back, release it (a tiny race is acceptable in CI).
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
  url="tcp://127.0.0.1:$port"
  log="$tools_dir/cache/tansu-smoke.log"
  "$tansu" broker --listener-url "$url" --advertised-listener-url "$url" \
    --storage-engine memory://tansu/ >"$log" 2>&1 &
  broker_pid=$!
  trap 'kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    if ! kill -0 "$broker_pid" 2>/dev/null; then
      echo "tansu broker exited early; log:" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.1
  done
  if ! "$tansu" topic create tidemark-smoke --partitions 2 --broker "$url" >&2; then
    echo "tansu topic create failed; broker log:" >&2; cat "$log" >&2; exit 1
  fi
  echo "tansu broker on $url created topic tidemark-smoke" >&2
fi

echo "$bin_dir"
