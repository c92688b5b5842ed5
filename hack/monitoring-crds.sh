#!/usr/bin/env bash
# Fetches the Prometheus Operator's CustomResourceDefinitions (group monitoring.coreos.com) from its
# Go module, the only place the module proxy serves them, and caches them outside the checkout,
# keyed by version (hack/controlplane/versions.env). The tests install them on the test apiserver,
# so the chart's ServiceMonitor and PodMonitor are validated by the real schemas.
#
# Prints the directory of the CRD files on stdout (everything else goes to stderr):
#   dir=$(hack/monitoring-crds.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=controlplane/versions.env
. "$here/controlplane/versions.env"

version=$PROMETHEUS_OPERATOR_VERSION
cache_root=${MAILTRAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mailtrain-operator}
dir="$cache_root/crds/prometheus-operator-${version}"
if [ -f "$dir/.complete" ]; then
  echo "$dir"
  exit 0
fi

command -v go >/dev/null || { echo "monitoring-crds.sh: go is required to download the CRDs" >&2; exit 1; }
module="github.com/prometheus-operator/prometheus-operator@v${version}"
# Outside any module, so nothing of the checkout's go.mod or go.sum is touched.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
src=$(cd "$scratch" && GO111MODULE=on GOFLAGS=-mod=mod go mod download -json "$module" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
crds="$src/example/prometheus-operator-crd"
[ -d "$crds" ] || { echo "monitoring-crds.sh: no $crds in $module" >&2; exit 1; }

partial="$dir.partial"
rm -rf "$partial"
mkdir -p "$partial"
cp "$crds"/monitoring.coreos.com_*.yaml "$partial/"
chmod u+w "$partial"/*.yaml   # the module cache's files are read-only
touch "$partial/.complete"
rm -rf "$dir"
mv "$partial" "$dir"   # atomic: an interrupted fetch never leaves half a directory
echo "monitoring-crds.sh: prometheus-operator v${version} CRDs in $dir" >&2
echo "$dir"
