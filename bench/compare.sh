#!/usr/bin/env bash
# Tidemark against DuckDB, side by side, on one core: the quickstart job (clicks and purchases
# per user and window, joined) over generated JSON-lines files of several shapes, and DuckDB's
# single-threaded answer to the same query over the same files in the same run. Prints a
# Markdown table (events/s of both, their ratio) and fails if the answers differ.
#
# Usage: bench/compare.sh [compare.py options]     e.g. --users 100000 --ids short --runs 3
# Env:   TIDEMARK_BIN   a tidemark binary to use instead of building the release one
#        BENCH_CPU      the core both engines are pinned to (default 0)
#        CARGO_TARGET_DIR  where cargo builds (default <repo>/target)
# Generated files are cached in <repo>/target/bench/compare/ (≈ 0.1–0.15 GB per 1 M events).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

bin="${TIDEMARK_BIN:-}"
if [[ -z "$bin" ]]; then
  cargo build --release --quiet -p tidemark-worker --bin tidemark
  bin="${CARGO_TARGET_DIR:-$repo_root/target}/release/tidemark"
fi
python="$(.ci/tools/duckdb.sh)"

echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(nproc) CPUs; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "binary: $bin; repository at $(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
exec taskset -c "${BENCH_CPU:-0}" "$python" bench/compare.py \
  --bin "$bin" --repo "$repo_root" --dir "$repo_root/target/bench/compare" "$@"
