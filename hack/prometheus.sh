#!/usr/bin/env bash
# Builds Prometheus and promtool (upstream, from the Go module proxy, as `go install
# github.com/prometheus/prometheus/cmd/...@v0.<major><minor>.<patch>` would) and caches them beside the
# control-plane binaries, keyed by version. Progress on stderr (hack/go-progress.sh).
#
# Prints the directory with both binaries on stdout: bin=$(hack/prometheus.sh).
#
# Why not Debian's: its prometheus (2.42+ds) is built without Kubernetes service discovery, and the
# tests find the chart's targets the way a cluster's Prometheus does, through kubernetes_sd_configs.
# Of the service discovery plugins only Kubernetes is built in (the upstream build tags
# remove_all_sd and enable_kubernetes_sd; file, HTTP and static discovery are always there): the
# cloud providers' SDKs would double the build time for nothing the tests use. The web UI is not
# built in either (the module ships its source, not the built assets); the HTTP API is complete.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=controlplane/versions.env
. "$here/controlplane/versions.env"
# shellcheck source=go-progress.sh
. "$here/go-progress.sh"

# Prometheus 3.x.y is the Go module version v0.3xx.y (3.16.0 -> v0.316.0, 3.5.2 -> v0.305.2).
if [[ ! $PROMETHEUS_VERSION =~ ^3\.([0-9]{1,2})\.([0-9]+)$ ]]; then
  echo "prometheus.sh: PROMETHEUS_VERSION must be 3.<minor>.<patch>, not '$PROMETHEUS_VERSION'" >&2
  exit 1
fi
module_version=$(printf 'v0.3%02d.%d' "$((10#${BASH_REMATCH[1]}))" "$((10#${BASH_REMATCH[2]}))")
tags=remove_all_sd,enable_kubernetes_sd

cache_root=${MAILTRAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mailtrain-operator}
bin="$cache_root/bin/prometheus-${PROMETHEUS_VERSION}"   # the tags are part of the recipe, not the key
built() { [ -x "$bin/prometheus" ] && [ -x "$bin/promtool" ]; }
if built; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "prometheus.sh: go is required to build prometheus" >&2; exit 1; }
mkdir -p "$bin"
lock_build "$bin" prometheus   # a second build waits, then finds the binaries built
if built; then
  echo "$bin"
  exit 0
fi
echo "build: prometheus: downloading github.com/prometheus/prometheus@${module_version}, 0s" >&2
src=$(go_module_dir github.com/prometheus/prometheus "$module_version")
needed=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$src/go.mod")
have=$(go env GOVERSION)
if [ "$(go env GOTOOLCHAIN)" = local ] \
    && [ "$(printf '%s\n%s\n' "go$needed" "$have" | sort -V | head -n1)" != "go$needed" ]; then
  echo "prometheus.sh: github.com/prometheus/prometheus@${module_version} needs Go >= $needed, and" \
    "this is $have: install a newer Go, or let the go command fetch it (GOTOOLCHAIN=auto)" >&2
  exit 1
fi
version_pkg=github.com/prometheus/common/version
ldflags="-s -w -X $version_pkg.Version=${PROMETHEUS_VERSION} -X $version_pkg.Branch=module-${module_version}"
# The module ships the go.work of its repository, naming directories the module leaves out.
export GOWORK=off
for program in prometheus promtool; do
  partial="$bin/.$program.partial"
  go_build_progress "$program" "$partial" "$src" "./cmd/$program" -trimpath -tags "$tags" -ldflags "$ldflags"
  mv -f "$partial" "$bin/$program"   # atomic: an interrupted build never leaves half a binary
done
echo "$bin"
