"""The seed's scenario as `make demo` and its headless test run it: the chart installed with `helm install`
(bundled Redis without persistence: there is no volume provisioner), then examples/seed/ applied: the
SenderPool, the recipients' ConfigMaps and five MailCampaigns.

The YAML is the example's, changed in two places only when asked: `maxParallelCampaigns: 1` for
MODE=serial (the seed's old behaviour), and the relay's address for a test that brings its own.
"""

from __future__ import annotations

import copy
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.harness import binaries
from tests.harness.kubeapi import Json

EXAMPLE = binaries.REPO_ROOT / "examples" / "seed"
CHART = binaries.REPO_ROOT / "helm" / "mailtrain-operator"
RELEASE = "mailtrain-operator"  # so its Redis URL Secret is mailtrain-operator-redis-url, as pool.yaml says
RELEASE_NAMESPACE = "mailtrain-system"
NAMESPACE = "mail"
POOL = "seed"
MODES = ("parallel", "serial")


def chart_values(namespace: str) -> Json:
    """One operator replica (a 2-core machine), the bundled Redis on an emptyDir, status every second
    and chunks small enough that a campaign is shared between processes."""
    return {
        "replicaCount": 1,
        "watchNamespaces": [namespace],
        "peering": {"lifetime": 10},
        "redis": {"enabled": True, "persistence": {"enabled": False}},
        "settings": {"progressInterval": 1, "chunkSize": 32},
    }


@dataclass(frozen=True)
class Scenario:
    pool: Json
    recipients: list[Json]  # ConfigMaps
    campaigns: list[Json]

    @property
    def names(self) -> list[str]:
        return [c["metadata"]["name"] for c in self.campaigns]

    def documents(self) -> list[Json]:
        """In the order they are applied: the campaigns last, so their lists are there when they come."""
        return [self.pool, *self.recipients, *self.campaigns]


def _load(name: str) -> list[Json]:
    return [d for d in yaml.safe_load_all((EXAMPLE / name).read_text()) if d]


def load(mode: str = "parallel", relay: tuple[str, int] | None = None) -> Scenario:
    if mode not in MODES:
        raise ValueError(f"MODE must be one of {MODES}, not {mode!r}")
    [pool] = _load("pool.yaml")
    pool = copy.deepcopy(pool)
    if mode == "serial":
        pool["spec"]["queue"]["maxParallelCampaigns"] = 1
    if relay is not None:
        pool["spec"]["smtp"]["host"], pool["spec"]["smtp"]["port"] = relay
    return Scenario(pool, _load("recipients.yaml"), _load("campaigns.yaml"))


@dataclass(frozen=True)
class Cluster:
    """What the scenario needs of a cluster: its kubeconfig, for kubectl and helm."""

    kubeconfig: Path
    workdir: Path  # helm's HOME and the values file

    def _run(self, tool: str, *args: str, stdin: str | None = None) -> str:
        env = {
            "HOME": str(self.workdir),
            "PATH": "/usr/bin:/bin",
            "KUBECONFIG": str(self.kubeconfig),
            "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1",
        }
        command = [str(binaries.controlplane_binary(tool)), *args]
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stderr.strip()}"
            )
        return result.stdout

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self._run("kubectl", *args, stdin=stdin)

    def helm(self, *args: str) -> str:
        return self._run("helm", *args)


def install_chart(
    cluster: Cluster, namespace: str, release_namespace: str = RELEASE_NAMESPACE, extra: Json | None = None
) -> None:
    """`helm install` without --wait (the demo watches the pods itself, and starts the rest meanwhile)."""
    cluster.workdir.mkdir(parents=True, exist_ok=True)
    values = cluster.workdir / "values.json"
    values.write_text(json.dumps(chart_values(namespace) | (extra or {})))
    for ns in (namespace, release_namespace):
        cluster.kubectl("apply", "-f", "-", stdin=_namespace(ns))
    cluster.helm(
        "install", RELEASE, str(CHART), "-n", release_namespace, "-f", str(values), "--timeout", "2m"
    )


def _namespace(name: str) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def apply(cluster: Cluster, namespace: str, documents: list[Json]) -> None:
    manifest = yaml.safe_dump_all(documents)
    cluster.kubectl("apply", "-n", namespace, "--server-side", "-f", "-", stdin=manifest)
