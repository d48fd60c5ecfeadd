#!/usr/bin/env bash
# CI steps of the operator, the CRD and the Helm chart (idempotent; exits non-zero on failure).
#
#   .ci/operator.sh
#
# 1. installs the real kubectl and helm (.ci/tools/kube.sh, cached in target/tools/bin) and the
#    real Prometheus (.ci/tools/prometheus.sh);
# 2. checks that crds/ and the chart's crds/ match the API types;
# 3. helm lint --strict and helm template with the default and the full value sets;
# 4. runs the operator and end-to-end tests with TIDEMARK_KUBECTL_TESTS=1, so the kubectl and
#    helm tests run against the API emulator instead of being skipped.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

bin_dir="$(.ci/tools/kube.sh | tail -n1)"
export PATH="$bin_dir:$PATH"
# The real Prometheus (Debian package) for the alert-rule test (tests/tests/quality_alert.rs)
# and the autoscaler tests; they fail instead of skipping.
prometheus_dir="$(bash .ci/tools/prometheus.sh | tail -n1)"
export PATH="$prometheus_dir:$PATH"
export TIDEMARK_REQUIRE_PROMETHEUS=1

echo "--- CRD freshness" >&2
expected="$(cargo run --quiet -p tidemark-operator -- crd)"
for copy in crds/marketingpipelines.tidemark.dev.yaml charts/tidemark/crds/marketingpipelines.tidemark.dev.yaml; do
  if [[ "$expected" != "$(cat "$copy")" ]]; then
    echo "$copy is stale: run 'cargo run -p tidemark-operator -- crd > $copy'" >&2
    exit 1
  fi
done

echo "--- helm lint / template" >&2
helm lint --strict charts/tidemark
helm template tidemark charts/tidemark --namespace tidemark-system --include-crds >/dev/null
helm template tidemark charts/tidemark --namespace tidemark-system \
  --set 'watchNamespaces={shop,ads}' \
  --set metrics.serviceMonitor.enabled=true \
  --set metrics.workerPodMonitor.enabled=true \
  --set prometheusRules.enabled=true >/dev/null

echo "--- kustomize" >&2
kubectl kustomize examples/gitops/base >/dev/null
kubectl kustomize examples/gitops/overlays/production >/dev/null

echo "--- operator and end-to-end tests (with kubectl and helm)" >&2
# The Argo CD health check (Lua) runs in a real Lua interpreter, installed here if missing
# (Debian package; a second run finds it and costs nothing).
if ! command -v lua5.4 >/dev/null && ! command -v lua >/dev/null; then
  echo "--- installing lua5.4" >&2
  if ! apt-get install -y -qq lua5.4 >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq lua5.4 >/dev/null
  fi
fi
export TIDEMARK_LUA_TESTS=1
if cargo nextest --version >/dev/null 2>&1; then
  TIDEMARK_KUBECTL_TESTS=1 cargo nextest run -p tidemark-operator -p tidemark-e2e
else
  TIDEMARK_KUBECTL_TESTS=1 cargo test -p tidemark-operator -p tidemark-e2e
fi
