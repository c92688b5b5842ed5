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

# Prometheus 3.x.y is the Go module version v0.3xx.y (3.16.0 -> v0.316.0).
IFS=. read -r major minor patch <<<"$PROMETHEUS_VERSION"
module_version=$(printf 'v0.%d%02d.%d' "$major" "$minor" "$patch")

cache_root=${MAILTRAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mailtrain-operator}
bin="$cache_root/bin/prometheus-${PROMETHEUS_VERSION}"
if [ -x "$bin/prometheus" ] && [ -x "$bin/promtool" ]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "prometheus.sh: go is required to build prometheus" >&2; exit 1; }
mkdir -p "$bin"
echo "build: prometheus: downloading github.com/prometheus/prometheus@${module_version}, 0s" >&2
src=$(go_module_dir github.com/prometheus/prometheus "$module_version")
version_pkg=github.com/prometheus/common/version
ldflags="-s -w -X $version_pkg.Version=${PROMETHEUS_VERSION} -X $version_pkg.Branch=module-${module_version}"
# The module ships the go.work of its repository, naming directories the module leaves out.
export GOWORK=off
for program in prometheus promtool; do
  go_build_progress "$program" "$bin/.$program.partial" "$src" "./cmd/$program" -trimpath \
    -tags remove_all_sd,enable_kubernetes_sd -ldflags "$ldflags"
  mv "$bin/.$program.partial" "$bin/$program"   # atomic: an interrupted build never leaves half a binary
done
echo "$bin"
