#!/usr/bin/env bash
# Prints the path of a pinned uv, installing it from PyPI into the cache on first use.
# uv installs the locked Python dependencies (uv.lock) into .venv.
set -euo pipefail
version=0.13.9
cache_root=${MAILTRAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mailtrain-operator}
home="$cache_root/uv-$version"
if [ ! -x "$home/bin/uv" ]; then
  echo "ensure-uv.sh: installing uv $version into $home" >&2
  rm -rf "$home"
  python3 -m venv "$home"
  "$home/bin/pip" install --quiet --disable-pip-version-check "uv==$version" >&2
fi
echo "$home/bin/uv"
