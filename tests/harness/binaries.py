"""Where the harness finds the programs it runs.

The control-plane binaries are built by `hack/controlplane/build.sh` and cached
outside the checkout; the rest come from Debian packages installed by
`hack/install-system-packages.sh`. A missing program is an error with the fix in
its message, never a skipped test.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "controlplane" / "build.sh"

_DEBIAN_PACKAGE = {
    "redis-server": "redis-server",
    "smtp-sink": "postfix",
    "promtool": "prometheus",
    "prometheus": "prometheus",
    # The node agent's: pod routes, and mount namespaces, users and nsenter for each container.
    "ip": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "setpriv": "util-linux",
}


class MissingBinaryError(RuntimeError):
    """A program the tests need is not installed and could not be provided."""


@functools.cache
def controlplane_bin_dir() -> Path:
    """The cached directory with kube-apiserver, kubectl, etcd and helm (built on first use)."""
    override = os.environ.get("MAILTRAIN_BIN_DIR")
    if override:
        return Path(override)
    try:
        out = subprocess.run([str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    except subprocess.CalledProcessError as exc:
        raise MissingBinaryError(
            f"{BUILD_SCRIPT} failed with exit code {exc.returncode}; it builds the control plane "
            "from the Go module proxy and needs `go` on PATH"
        ) from exc
    return Path(out.stdout.strip().splitlines()[-1])


def controlplane_binary(name: str) -> Path:
    path = controlplane_bin_dir() / name
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(f"{path} is missing; run {BUILD_SCRIPT}")
    return path


def system_binary(name: str) -> Path:
    """A program from a Debian package (redis-server, smtp-sink, promtool, ip, unshare ...)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        package = _DEBIAN_PACKAGE.get(name, name)
        raise MissingBinaryError(
            f"{name} is not installed; install the Debian package {package!r} "
            "(hack/install-system-packages.sh, or `make setup`)"
        )
    return Path(found)
