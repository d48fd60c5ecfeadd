#!/usr/bin/env bash
# Installs DuckDB's Python package from PyPI into a cached virtual environment (idempotent) and
# prints the environment's python. DuckDB is the benchmark peer of bench/compare.sh: the same
# query over the same JSON-lines file, single-threaded, pinned to the same core.
#
# The JSON reader (`read_json`) is built into the PyPI wheel, so no extension is downloaded at
# run time. A rerun with the environment in place takes about 0.2 s (an import check).
#
# Usage: .ci/tools/duckdb.sh            # prints the python of the virtual environment
# Env:   DUCKDB_TOOLS_DIR (default: <repo>/target/tools), DUCKDB_VERSION (pip spec suffix,
#        e.g. "==2.0.0"; default: the newest release)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools_dir="${DUCKDB_TOOLS_DIR:-$repo_root/target/tools}"
venv="$tools_dir/duckdb-venv"
python="$venv/bin/python"

if [[ -x "$python" ]] && "$python" -c 'import duckdb' >/dev/null 2>&1; then
  echo "duckdb already installed: $("$python" -c 'import duckdb; print(duckdb.__version__)')" >&2
  echo "$python"
  exit 0
fi

mkdir -p "$tools_dir"
system_python="$(command -v python3 || command -v python)"
# A half-made environment from an interrupted run is replaced, not patched.
rm -rf "$venv"
"$system_python" -m venv "$venv"
echo "installing duckdb${DUCKDB_VERSION:-} from PyPI into $venv" >&2
"$python" -m pip install --quiet --disable-pip-version-check "duckdb${DUCKDB_VERSION:-}" >&2
"$python" -c 'import duckdb; duckdb.sql("select 1").fetchall(); print("duckdb", duckdb.__version__)' >&2
echo "$python"
