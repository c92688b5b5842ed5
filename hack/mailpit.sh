#!/usr/bin/env bash
# Builds Mailpit (the relay `make demo` sends to) from the Go module proxy, as
# `go install github.com/axllent/mailpit@v<version>` would, and caches it beside the
# control-plane binaries, keyed by version. Progress on stderr (hack/go-progress.sh).
#
# Prints the binary's path on stdout: mailpit=$(hack/mailpit.sh).
#
# Its SMTP side and REST API work. Its web UI does not: the module ships the UI's source, not
# the built server/ui/dist, so the demo reads messages through the REST API.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=controlplane/versions.env
. "$here/controlplane/versions.env"
# shellcheck source=go-progress.sh
. "$here/go-progress.sh"

cache_root=${MAILTRAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mailtrain-operator}
bin="$cache_root/bin/mailpit-${MAILPIT_VERSION}"
if [ -x "$bin/mailpit" ]; then
  echo "$bin/mailpit"
  exit 0
fi
command -v go >/dev/null || { echo "mailpit.sh: go is required to build mailpit" >&2; exit 1; }
mkdir -p "$bin"
lock_build "$bin" mailpit
if [ -x "$bin/mailpit" ]; then   # built by the build this one waited for
  echo "$bin/mailpit"
  exit 0
fi
echo "build: mailpit: downloading github.com/axllent/mailpit@v${MAILPIT_VERSION}, 0s" >&2
src=$(go_module_dir github.com/axllent/mailpit "v${MAILPIT_VERSION}")
go_build_progress mailpit "$bin/.mailpit.partial" "$src" . -trimpath \
  -ldflags "-s -w -X github.com/axllent/mailpit/config.Version=v${MAILPIT_VERSION}"
mv "$bin/.mailpit.partial" "$bin/mailpit"   # atomic: an interrupted build never leaves half a binary
echo "$bin/mailpit"
