#!/usr/bin/env bash
# Installs the Debian packages the tests run for real, when they are missing:
#   redis-server (Redis), postfix (for smtp-sink), iproute2 (`ip`: the node agent routes the pod
#   network on loopback). Prometheus and promtool are built from upstream by hack/prometheus.sh:
#   Debian's prometheus has no Kubernetes service discovery.
# Needs root (or sudo) for apt-get. Does nothing when everything is present.
set -euo pipefail

declare -A wanted=(
  [redis-server]=redis-server
  [smtp-sink]=postfix
  [ip]=iproute2
)
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

packages=()
for cmd in "${!wanted[@]}"; do have "$cmd" || packages+=("${wanted[$cmd]}"); done
[ ${#packages[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-system-packages.sh: need root or sudo to install: ${packages[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-system-packages.sh: installing ${packages[*]}" >&2
# postfix asks how to configure itself; we only want its smtp-sink binary.
echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
# The packages start their daemons where an init system runs; the tests start
# their own instances on free ports, so stop any that came up.
# (prometheus: a machine set up before the tests built their own may still run Debian's on :9090.)
for svc in redis-server postfix prometheus; do
  $sudo service "$svc" stop >/dev/null 2>&1 || true
done
for cmd in "${!wanted[@]}"; do
  have "$cmd" || { echo "install-system-packages.sh: $cmd still missing after installing ${wanted[$cmd]}" >&2; exit 1; }
done
