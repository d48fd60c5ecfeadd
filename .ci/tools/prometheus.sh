#!/usr/bin/env bash
# Installs the Prometheus server from the Debian package `prometheus` (idempotent) and prints the
# directory of the `prometheus` binary. Tests start their own server on a loopback port with a
# generated config; this script never starts or enables the packaged service.
#
# Usage: .ci/tools/prometheus.sh       # prints the bin directory on success
# Needs: root (or sudo) for apt-get when the package is missing.
set -euo pipefail

if prometheus --version >/dev/null 2>&1; then
  echo "prometheus already installed: $(prometheus --version 2>&1 | head -n1)" >&2
  dirname "$(command -v prometheus)"
  exit 0
fi

sudo=()
if [[ "$(id -u)" != "0" ]]; then
  command -v sudo >/dev/null || { echo "installing prometheus needs root or sudo" >&2; exit 1; }
  sudo=(sudo)
fi

echo "installing the Debian package prometheus" >&2
export DEBIAN_FRONTEND=noninteractive
# Package post-install scripts try to start the service; policy-rc.d exit code 101 forbids it
# (on machines without systemd the attempt would only print errors).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  created_policy=1
fi
cleanup() { if [[ "$created_policy" == 1 ]]; then "${sudo[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends prometheus >&2

prometheus --version >&2
dirname "$(command -v prometheus)"
