#!/usr/bin/env bash
# The whole test suite, as the README gives it: idempotent tool installs (cached under target/),
# formatting and lints, every crate's tests, and the operator's chart/CRD/kubectl checks.
#
#   bash .ci/test.sh
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "--- installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

echo "--- real parts for the tests" >&2
# Prometheus (Debian package) for the worker's scrape test; the test fails instead of skipping.
prometheus_dir="$(bash .ci/tools/prometheus.sh | tail -n1)"
export PATH="$prometheus_dir:$PATH"
export TIDEMARK_REQUIRE_PROMETHEUS=1
# Tansu, a Kafka-compatible broker (built from crates.io into target/tools/bin: about 18 min the
# first time, seconds once cached), for the worker tests against a real broker
# (worker/tests/tansu_workers.rs); they fail instead of skipping.
tansu_dir="$(bash .ci/tools/tansu.sh | tail -n1)"
export TIDEMARK_TANSU_BIN="$tansu_dir/tansu"
export TIDEMARK_REQUIRE_TANSU=1
# noida-db, a Kafka broker with transaction markers and producer fencing (PyPI, pinned, in a venv
# under target/tools: seconds), for the exactly-once tests (worker/tests/exactly_once*.rs and the
# visibility and fencing tests of worker/tests/kafka_sink.rs); they fail instead of skipping.
noida_dir="$(bash .ci/tools/noida.sh | tail -n1)"
export TIDEMARK_NOIDA_BIN="$noida_dir/noida-db"
export TIDEMARK_REQUIRE_NOIDA=1

echo "--- formatting and lints" >&2
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# No import cycles between the top-level modules of a crate.
python3 .ci/modules.py api/src worker/src operator/src tests/kube-emulator/src

echo "--- api, worker and emulator tests" >&2
cargo nextest run --workspace --exclude tidemark-operator --exclude tidemark-e2e

# Installs kubectl and helm, checks that crds/ is fresh, lints and renders the chart, then runs
# the operator and end-to-end tests with the real kubectl and helm against the API emulator.
bash .ci/operator.sh
