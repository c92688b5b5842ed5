"""A Helm release of the chart on the test cluster: `helm install`, `upgrade` and `uninstall` as a
person runs them (helm v4: server-side apply), the objects of the release, and what is left of it
afterwards.

The apiserver's warnings reach helm's stderr; `Release.warnings` keeps those of every command.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.chart import chart
from tests.cluster.helpers import eventually
from tests.harness import binaries
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json
from tests.harness.local_node import LocalNode
from tests.operator import examples

INSTANCE = "app.kubernetes.io/instance"
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"
# Left in a namespace by anyone, not by a release: each namespace's own, and the Events.
NAMESPACE_OWN = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}


@dataclass
class Release:
    plane: ControlPlane
    name: str
    namespace: str
    directory: Path
    warnings: list[str] = field(default_factory=list)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"HOME": str(self.directory), "PATH": "/usr/bin:/bin", "NO_PROXY": "127.0.0.1"}
        env["KUBECONFIG"] = str(self.plane.kubeconfig)
        command = [str(binaries.controlplane_binary("helm")), *args, "-n", self.namespace]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        self.warnings += [line for line in result.stderr.splitlines() if "warning" in line.lower()]
        if check:
            assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
        return result

    def install(self, values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        path = chart.values_file(values, self.directory, "install")
        return self.helm("install", self.name, str(chart.CHART), "-f", str(path))

    def upgrade(self, values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        path = chart.values_file(values, self.directory, "upgrade")
        return self.helm("upgrade", self.name, str(chart.CHART), "-f", str(path))

    def uninstall(self) -> subprocess.CompletedProcess[str]:
        return self.helm("uninstall", self.name)

    def manifest(self) -> list[Json]:
        """The objects of the release's current revision, as helm recorded them."""
        result = self.helm("get", "manifest", self.name)
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def exists(self) -> bool:
        return self.helm("status", self.name, check=False).returncode == 0


def operator_deployment_ready(plane: ControlPlane, namespace: str, name: str, replicas: int) -> Json | None:
    """The operator's Deployment once its rollout is complete: every replica of the current template
    ready and no old one left."""
    found = plane.api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    if found is None:
        return None
    status = found.get("status") or {}
    done = (
        status.get("observedGeneration") == found["metadata"]["generation"]
        and status.get("updatedReplicas") == replicas
        and status.get("readyReplicas") == replicas
        and status.get("replicas") == replicas
    )
    return found if done else None


def seconds_to_ready(plane: ControlPlane, namespace: str, name: str, replicas: int, started: float) -> float:
    eventually(
        lambda: operator_deployment_ready(plane, namespace, name, replicas),
        timeout=180,
        what=f"{replicas} ready replicas of {name}",
        interval=0.1,
    )
    return time.monotonic() - started


def namespaced_resources(plane: ControlPlane) -> list[str]:
    """Every kind that can be listed in a namespace, by its full name (e.g. deployments.apps)."""
    result = plane.kubectl("api-resources", "--namespaced=true", "--verbs=list", "-o", "name")
    return [name for name in result.stdout.split() if name not in ("events", "events.events.k8s.io")]


def left_in(plane: ControlPlane, namespace: str, keep: set[tuple[str, str]]) -> list[str]:
    """Every object of the namespace, but its own and those in `keep` ((kind, name)), as kind/name."""
    kinds = ",".join(namespaced_resources(plane))
    result = plane.kubectl("get", kinds, "-n", namespace, "-o", "json", "--ignore-not-found")
    items = json.loads(result.stdout or '{"items": []}')["items"]
    found = [(i["kind"], i["metadata"]["name"]) for i in items]
    return sorted(f"{k}/{n}" for k, n in found if (k, n) not in NAMESPACE_OWN | keep)


def labelled_anywhere(plane: ControlPlane, release: str) -> list[str]:
    """Every object of any kind, in any namespace or cluster-scoped, labelled as the release's."""
    result = plane.kubectl("api-resources", "--verbs=list", "-o", "name")
    kinds = ",".join(n for n in result.stdout.split() if n not in ("events", "events.events.k8s.io"))
    listed = plane.kubectl("get", kinds, "-A", "-l", f"{INSTANCE}={release}", "-o", "json")
    items = json.loads(listed.stdout or '{"items": []}')["items"]
    return sorted(f"{i['kind']}/{i['metadata'].get('namespace', '')}/{i['metadata']['name']}" for i in items)


def running_containers(node: LocalNode, pod_uids: set[str]) -> list[tuple[str, str]]:
    """(pod uid, container) of the given pods whose processes still run on the node."""
    return sorted(key for key in node.container_pids() if key[0] in pod_uids)


# -- what the release's pools and campaigns need -------------------------------------------------------

REDIS_SECRET = "test-redis-url"  # the test's redis-server, for pools' spec.redis.urlSecretRef
CAMPAIGNS = "/apis/mailtrain.dev/v1alpha1/namespaces/{namespace}/mailcampaigns"


def redis_url_secret(plane: ControlPlane, namespace: str, url: str) -> None:
    plane.kubectl("create", "secret", "generic", REDIS_SECRET, "-n", namespace, f"--from-literal=url={url}")


def pool_value(name: str, smtp_port: int, *, processes: int, rate: int) -> Json:
    """An entry of the chart's `pools`: plain SMTP to the test's relay on loopback, the test's Redis."""
    smtp = {
        "host": "127.0.0.1",
        "port": smtp_port,
        "security": "none",
        "throttling": {"messagesPerSecond": rate},
    }
    redis = {"urlSecretRef": {"name": REDIS_SECRET, "key": "url"}}
    return {"name": name, "spec": {"smtp": smtp, "queue": {"processes": processes}, "redis": redis}}


def create_campaign(plane: ControlPlane, namespace: str, name: str, pool: str, recipients: int) -> Json:
    inline = [{"email": f"{name}-{i}@example.org", "name": f"U{i}"} for i in range(recipients)]
    body = examples.campaign(name, senderPool=pool, recipients={"inline": inline})
    return plane.api.create(CAMPAIGNS.format(namespace=namespace), body)


def campaign(plane: ControlPlane, namespace: str, name: str) -> Json:
    found = plane.api.get(f"{CAMPAIGNS.format(namespace=namespace)}/{name}")
    assert found is not None, f"MailCampaign {namespace}/{name} is gone"
    return found


def completed(plane: ControlPlane, namespace: str, name: str) -> Json | None:
    found = campaign(plane, namespace, name)
    return found if (found.get("status") or {}).get("phase") == "Completed" else None
