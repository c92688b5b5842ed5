#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd and
# helm from the Go module proxy and caches them outside the checkout, keyed by
# version. A warm cache returns at once; a cache from before the controller-manager
# and scheduler were added gains just those two.
#
# Prints the bin directory on stdout (everything else goes to stderr), so callers
# can do: bin=$(hack/controlplane/build.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

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
tmp="$bin/.partial"
mkdir -p "$tmp"
minor=${KUBE_VERSION#*.}; minor=${minor%%.*}
kube_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v${KUBE_VERSION}
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor}
  -X k8s.io/component-base/version.gitTreeState=clean"

build() {  # name, then the go build arguments
  local name=$1; shift
  local start=$SECONDS
  echo "build.sh: building $name ..." >&2
  (cd "$here" && go build -trimpath -o "$tmp/$name" "$@") 2> >(grep -v '^go: downloading' >&2)
  mv "$tmp/$name" "$bin/$name"   # atomic: an interrupted build never leaves a half binary
  echo "build.sh: $name built in $((SECONDS - start))s" >&2
}

for t in "${missing[@]}"; do
  case $t in
    kube-apiserver) build kube-apiserver -ldflags "$kube_ldflags" k8s.io/kubernetes/cmd/kube-apiserver ;;
    kubectl)        build kubectl -ldflags "$kube_ldflags" k8s.io/kubernetes/cmd/kubectl ;;
    kube-controller-manager)
      build kube-controller-manager -ldflags "$kube_ldflags" k8s.io/kubernetes/cmd/kube-controller-manager ;;
    kube-scheduler) build kube-scheduler -ldflags "$kube_ldflags" k8s.io/kubernetes/cmd/kube-scheduler ;;
    etcd)           build etcd -ldflags "-s -w" go.etcd.io/etcd/server/v3 ;;
    helm)
      start=$SECONDS
      echo "build.sh: installing helm v${HELM_VERSION} ..." >&2
      GOBIN="$tmp" go install -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=v${HELM_VERSION}" \
        "helm.sh/helm/v4/cmd/helm@v${HELM_VERSION}" 2> >(grep -v '^go: downloading' >&2)
      mv "$tmp/helm" "$bin/helm"
      echo "build.sh: helm built in $((SECONDS - start))s" >&2 ;;
  esac
done
rmdir "$tmp" 2>/dev/null || true
echo "$bin"
