"""The chart as the tests use it: `helm` itself (lint, template), its renderings as API objects, the
Prometheus Operator's CRDs from their Go module, and a server-side dry-run of a rendering against the
test's real apiserver, whose warnings are the result.

`helm` comes from hack/controlplane/build.sh and the CRDs from hack/monitoring-crds.sh, both cached
outside the checkout; a missing one fails with the reason (tests.harness.binaries), never skips.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.harness import binaries
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json

CHART = binaries.REPO_ROOT / "helm" / "mailtrain-operator"
MONITORING_CRDS_SCRIPT = binaries.REPO_ROOT / "hack" / "monitoring-crds.sh"
# The monitoring.coreos.com kinds the chart renders (the PrometheusRule comes with the alerts).
MONITORING_KINDS = ("servicemonitors", "podmonitors", "prometheusrules")


@functools.cache
def monitoring_crds_dir() -> Path:
    """The directory of the Prometheus Operator's CRD files (fetched with `go mod download` on first use)."""
    try:
        out = subprocess.run(
            [str(MONITORING_CRDS_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True, timeout=600
        )
    except subprocess.CalledProcessError as exc:
        raise binaries.MissingBinaryError(
            f"{MONITORING_CRDS_SCRIPT} failed with exit code {exc.returncode}; it downloads the "
            "Prometheus Operator's Go module and needs `go` on PATH and the Go module proxy"
        ) from exc
    return Path(out.stdout.strip().splitlines()[-1])


def monitoring_crd_files() -> list[Path]:
    return [monitoring_crds_dir() / f"monitoring.coreos.com_{kind}.yaml" for kind in MONITORING_KINDS]


def helm(*args: str, directory: Path) -> subprocess.CompletedProcess[str]:
    """helm with a HOME of its own (no repositories, no plugins, no cache from the person's)."""
    env = {"HOME": str(directory), "PATH": "/usr/bin:/bin"}
    command = [str(binaries.controlplane_binary("helm")), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def values_file(values: dict[str, Any], directory: Path, name: str = "values") -> Path:
    path = directory / f"{name}.json"
    path.write_text(json.dumps(values))
    return path


def template(
    values: dict[str, Any], directory: Path, release: str = "mt", namespace: str = "mail", *more: str
) -> subprocess.CompletedProcess[str]:
    return helm(
        "template",
        release,
        str(CHART),
        "-n",
        namespace,
        "-f",
        str(values_file(values, directory)),
        *more,
        directory=directory,
    )


def render(
    values: dict[str, Any], directory: Path, release: str = "mt", namespace: str = "mail"
) -> list[Json]:
    """The objects `helm template` renders (without the CRDs of crds/)."""
    result = template(values, directory, release, namespace)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def refusal(values: dict[str, Any], directory: Path) -> str:
    """What `helm template` says when it refuses the values (it must)."""
    result = template(values, directory)
    assert result.returncode != 0, f"accepted: {values}"
    return result.stderr


def kinds(documents: Iterable[Json]) -> list[str]:
    return sorted(str(doc["kind"]) for doc in documents)


def one(documents: Iterable[Json], kind: str, name: str | None = None) -> Json:
    [found] = [d for d in documents if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return found


@dataclass(frozen=True)
class DryRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def warnings(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("Warning:")]


def dry_run(plane: ControlPlane, documents: list[Json]) -> DryRun:
    """`kubectl apply --server-side --dry-run=server` of the rendering: the apiserver validates every
    object (schemas, CEL rules, admission with Pod Security) without storing any."""
    manifest = "\n---\n".join(json.dumps(doc) for doc in documents)
    result = plane.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=helm",
        "-f",
        "-",
        input=manifest,
        check=False,
    )
    return DryRun(result.returncode, result.stdout, result.stderr)


def crd_names(path: Path) -> list[str]:
    return [doc["metadata"]["name"] for doc in yaml.safe_load_all(path.read_text()) if doc]
