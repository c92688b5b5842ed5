#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd and
# helm from the Go module proxy and caches them outside the checkout, keyed by
# version. A warm cache returns at once; a cache from before the controller-manager
# and scheduler were added gains just those two.
#
# Prints the bin directory on stdout (everything else goes to stderr), so callers
# can do: bin=$(hack/controlplane/build.sh). While a binary builds, a line on stderr
# says which, how many of its packages are compiled and the time so far
# (hack/go-progress.sh): a cold build takes minutes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
# shellcheck source=../go-progress.sh
. "$here/../go-progress.sh"

cache_root=${MAILTRAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mailtrain-operator}
bin="$cache_root/bin/k8s-${KUBE_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}"
tools=(kube-apiserver kubectl etcd helm kube-controller-manager kube-scheduler)

missing=()
for t in "${tools[@]}"; do [ -x "$bin/$t" ] || missing+=("$t"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is required to build ${missing[*]}" >&2; exit 1; }
mkdir -p "$bin"
lock_build "$bin" control-plane   # a second build waits, then builds only what is still missing
missing=()
for t in "${tools[@]}"; do [ -x "$bin/$t" ] || missing+=("$t"); done
tmp="$bin/.partial"
mkdir -p "$tmp"
minor=${KUBE_VERSION#*.}; minor=${minor%%.*}
kube_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v${KUBE_VERSION}
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor}
  -X k8s.io/component-base/version.gitTreeState=clean"

build() {  # name, ldflags, package: built inside the wrapper module
  go_build_progress "$1" "$tmp/$1" "$here" "$3" -trimpath -ldflags "$2"
  mv "$tmp/$1" "$bin/$1"   # atomic: an interrupted build never leaves a half binary
}

for t in "${missing[@]}"; do
  case $t in
    kube-apiserver) build kube-apiserver "$kube_ldflags" k8s.io/kubernetes/cmd/kube-apiserver ;;
    kubectl)        build kubectl "$kube_ldflags" k8s.io/kubernetes/cmd/kubectl ;;
    kube-controller-manager)
      build kube-controller-manager "$kube_ldflags" k8s.io/kubernetes/cmd/kube-controller-manager ;;
    kube-scheduler) build kube-scheduler "$kube_ldflags" k8s.io/kubernetes/cmd/kube-scheduler ;;
    etcd)           build etcd "-s -w" go.etcd.io/etcd/server/v3 ;;
    helm)  # what `go install helm.sh/helm/v4/cmd/helm@v<version>` does, built in the module's own source
      src=$(go_module_dir helm.sh/helm/v4 "v${HELM_VERSION}")
      go_build_progress helm "$tmp/helm" "$src" ./cmd/helm -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=v${HELM_VERSION}"
      mv "$tmp/helm" "$bin/helm" ;;
  esac
done
rmdir "$tmp" 2>/dev/null || true
echo "$bin"
