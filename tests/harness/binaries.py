"""Where the harness finds the programs it runs.

The control-plane binaries are built by `hack/controlplane/build.sh`, Prometheus and promtool by
`hack/prometheus.sh`, both cached outside the checkout; the rest come from Debian packages installed
by `hack/install-system-packages.sh`. A missing program is an error with the fix in
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
PROMETHEUS_BUILD_SCRIPT = REPO_ROOT / "hack" / "prometheus.sh"

_DEBIAN_PACKAGE = {
    "redis-server": "redis-server",
    "smtp-sink": "postfix",
    # The node agent's: pod routes, and mount namespaces, users and nsenter for each container.
    "ip": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "setpriv": "util-linux",
}


class MissingBinaryError(RuntimeError):
    """A program the tests need is not installed and could not be provided."""


def _built_dir(script: Path, what: str) -> Path:
    """The cache directory a build script prints last (building first if needed)."""
    try:
        out = subprocess.run([str(script)], check=True, stdout=subprocess.PIPE, text=True)
    except subprocess.CalledProcessError as exc:
        raise MissingBinaryError(
            f"{script} failed with exit code {exc.returncode}; it builds {what} "
            "from the Go module proxy and needs `go` on PATH"
        ) from exc
    return Path(out.stdout.strip().splitlines()[-1])


def _executable(directory: Path, name: str, script: Path) -> Path:
    path = directory / name
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(f"{path} is missing; run {script}")
    return path


@functools.cache
def controlplane_bin_dir() -> Path:
    """The cached directory with kube-apiserver, kubectl, etcd and helm (built on first use)."""
    override = os.environ.get("MAILTRAIN_BIN_DIR")
    return Path(override) if override else _built_dir(BUILD_SCRIPT, "the control plane")


def controlplane_binary(name: str) -> Path:
    return _executable(controlplane_bin_dir(), name, BUILD_SCRIPT)


@functools.cache
def prometheus_bin_dir() -> Path:
    """The cached directory with upstream `prometheus` and `promtool` (built on first use)."""
    override = os.environ.get("MAILTRAIN_PROMETHEUS_DIR")
    return Path(override) if override else _built_dir(PROMETHEUS_BUILD_SCRIPT, "Prometheus")


def prometheus_binary(name: str) -> Path:
    """`prometheus` or `promtool`, the upstream build: Debian's has no Kubernetes discovery."""
    return _executable(prometheus_bin_dir(), name, PROMETHEUS_BUILD_SCRIPT)


def system_binary(name: str) -> Path:
    """A program from a Debian package (redis-server, smtp-sink, ip, unshare ...)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        package = _DEBIAN_PACKAGE.get(name, name)
        raise MissingBinaryError(
            f"{name} is not installed; install the Debian package {package!r} "
            "(hack/install-system-packages.sh, or `make setup`)"
        )
    return Path(found)
