"""The chart's operator Deployment, as rendered, runs on the local node: both replicas start under
Pod Security "restricted" with the chart's ServiceAccount, projected token and probes, become Ready,
and exactly one of them is the active operator; the metrics Service reaches both. So does the bundled
Redis, without its volume.

This applies the rendering with kubectl (not `helm install`): the objects are Helm's, the release
machinery is not under test here.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from tests.chart import chart
from tests.cluster.helpers import deployment_ready, eventually, ready_pod
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json
from tests.harness.local_node import TEST_PYTHON_IMAGE, LocalNode
from tests.harness.operator_process import RESUMED

APPLIED_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
APPLIED_KINDS |= {"Deployment", "Service", "PodDisruptionBudget", "KopfPeering", "ClusterKopfPeering"}


@pytest.fixture
def applied(chart_crds: ControlPlane, local_node: LocalNode) -> Iterator[list[list[Json]]]:
    """Renderings applied by the test; their Deployments are deleted (and their pods gone) afterwards,
    then their cluster-scoped objects."""
    renderings: list[list[Json]] = []
    yield renderings
    for documents in renderings:
        for doc in documents:
            if doc["kind"] == "Deployment":
                meta = doc["metadata"]
                chart_crds.kubectl(
                    "delete", "deployment", meta["name"], "-n", meta["namespace"], "--wait=false"
                )
    for documents in renderings:
        namespace = chart.one(documents, "Deployment")["metadata"]["namespace"]
        _wait_gone(chart_crds, namespace)
        for doc in documents:
            if doc["kind"] in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
                chart_crds.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], check=False)


def _wait_gone(plane: ControlPlane, namespace: str) -> None:
    eventually(
        lambda: not _operator_pods(plane, namespace),
        timeout=60,
        what=f"the operator pods of {namespace} gone",
    )


def _operator_pods(plane: ControlPlane, namespace: str) -> list[Json]:
    return plane.api.list(
        f"/api/v1/namespaces/{namespace}/pods", labelSelector="app.kubernetes.io/component=operator"
    )


def test_the_rendered_operator_runs_two_replicas_on_the_node_and_one_is_active(
    chart_crds: ControlPlane,
    local_node: LocalNode,
    restricted_namespaces: Callable[[], str],
    applied: list[list[Json]],
    tmp_path: Path,
) -> None:
    namespace = restricted_namespaces()
    release = f"r{uuid.uuid4().hex[:6]}"
    values = {"watchNamespaces": [namespace], "peering": {"lifetime": 10}}
    documents = [d for d in chart.render(values, tmp_path, release, namespace) if d["kind"] in APPLIED_KINDS]
    applied.append(documents)
    manifest = "\n---\n".join(json.dumps(doc) for doc in documents)
    result = chart_crds.kubectl("apply", "--server-side", "--field-manager=helm", "-f", "-", input=manifest)
    assert "Warning" not in result.stderr, result.stderr
    name = chart.one(documents, "Deployment")["metadata"]["name"]

    def logs() -> dict[str, str]:
        pods = _operator_pods(chart_crds, namespace)
        return {
            p["metadata"]["name"]: local_node.container_log(namespace, p["metadata"]["name"], "operator")
            for p in pods
        }

    def report() -> str:
        return "\n".join(f"--- {pod}\n{log[-2000:]}" for pod, log in logs().items())

    try:
        eventually(
            lambda: deployment_ready(chart_crds.api, namespace, name, 2), timeout=120, what="2 replicas ready"
        )
        eventually(
            lambda: any(RESUMED in log for log in logs().values()), timeout=30, what="one replica active"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{report()}") from exc
    found = logs()
    assert len(found) == 2
    assert sum(RESUMED in log for log in found.values()) == 1, report()  # the other stands by
    for pod, log in found.items():
        for refusal in ("403", "Forbidden", "forbidden", "Traceback"):
            assert refusal not in log, f"{pod}:\n{log}"

    pods = _operator_pods(chart_crds, namespace)
    for pod_object in pods:
        [status] = pod_object["status"]["containerStatuses"]
        assert status["restartCount"] == 0, report()
        volumes = pod_object["spec"]["volumes"]
        assert [v for v in volumes if v["name"] == "kube-api-access"], (
            volumes
        )  # ours, not one the admission plugin added
    peering = chart_crds.api.get(f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/mailtrain-operator")
    assert peering is not None
    assert {p["metadata"]["name"] for p in pods} <= set(peering.get("status") or {})

    # The metrics Service's endpoints: both replicas, ready (a standby serves /metrics too).
    service = chart.one(documents, "Service")["metadata"]["name"]

    def endpoints() -> list[Json]:
        slices = chart_crds.api.list(
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            labelSelector=f"kubernetes.io/service-name={service}",
        )
        ready = [
            e for s in slices for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")
        ]
        return ready if len(ready) == 2 else []

    eventually(endpoints, timeout=30, what="two ready endpoints of the metrics Service")


def test_the_bundled_redis_runs_on_the_node_with_its_password_and_an_append_only_file(
    chart_crds: ControlPlane,
    local_node: LocalNode,
    restricted_namespaces: Callable[[], str],
    tmp_path: Path,
) -> None:
    """Without a volume (the local node mounts no PersistentVolumeClaim): the StatefulSet's pod is Ready
    under restricted Pod Security, answers only with the generated password, and appends every write.
    A pod reaches it by the URL the chart gives pools, through the Service's name."""
    namespace = restricted_namespaces()
    values = {"redis": {"enabled": True, "persistence": {"enabled": False}}}
    documents = [
        d
        for d in chart.render(values, tmp_path, "rr", namespace)
        if d["kind"] in ("Secret", "Service", "StatefulSet", "NetworkPolicy")
    ]
    manifest = "\n---\n".join(json.dumps(doc) for doc in documents)
    result = chart_crds.kubectl("apply", "--server-side", "--field-manager=helm", "-f", "-", input=manifest)
    assert "Warning" not in result.stderr, result.stderr
    name = chart.one(documents, "StatefulSet")["metadata"]["name"]
    try:
        pod = eventually(
            lambda: ready_pod(chart_crds.api, namespace, f"{name}-0"), timeout=60, what="the Redis pod ready"
        )
        secret = chart.one(documents, "Secret", name)
        password = base64.b64decode(secret["data"]["password"]).decode()
        address = pod["status"]["podIP"]
        with redis.Redis(host=address, port=6379, password=password, socket_timeout=5) as client:
            client.set("mt:probe", "1")
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        anonymous = redis.Redis(host=address, port=6379, socket_timeout=5)
        with anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        log = local_node.container_log(namespace, f"{name}-0", "redis")
        assert password not in log
        url = base64.b64decode(chart.one(documents, "Secret", f"{name}-url")["data"]["url"]).decode()
        assert urlsplit(url).hostname == f"{name}.{namespace}.svc"
        assert _ping_from_a_pod(chart_crds, local_node, namespace, f"{name}-url") == "PONG"
    finally:
        chart_crds.kubectl("delete", "statefulset", name, "-n", namespace, "--wait=false")
        eventually(
            lambda: chart_crds.api.get(f"/api/v1/namespaces/{namespace}/pods/{name}-0") is None,
            timeout=60,
            what="the Redis pod gone",
        )


# redis-py's asyncio client, as the sender and the operator make it (Redis.from_url): it resolves the
# URL's host through getaddrinfo, so the node agent's /etc/hosts answers for cluster DNS.
_PING = """
import asyncio, os
from redis.asyncio import Redis
async def main():
    async with Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=5) as client:
        print("PONG" if await client.ping() else "no answer", flush=True)
asyncio.run(main())
"""


def _ping_from_a_pod(plane: ControlPlane, node: LocalNode, namespace: str, url_secret: str) -> str:
    """Runs a restricted pod with the URL Secret as MAILTRAIN_REDIS_URL's sender pods get it, labelled
    as a sender so that the chart's NetworkPolicy would admit it; returns what it printed."""
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    url = {"secretKeyRef": {"name": url_secret, "key": "url"}}
    container = {
        "name": "ping",
        "image": TEST_PYTHON_IMAGE,
        "args": ["-c", _PING],
        "env": [{"name": "REDIS_URL", "valueFrom": url}],
        "securityContext": restricted,
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ping", "labels": {"app.kubernetes.io/name": "mailtrain-sender"}},
        "spec": {"containers": [container], "restartPolicy": "Never", "automountServiceAccountToken": False},
    }
    plane.api.create(f"/api/v1/namespaces/{namespace}/pods", pod)

    def finished() -> str | None:
        found = plane.api.get(f"/api/v1/namespaces/{namespace}/pods/ping") or {}
        phase = (found.get("status") or {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = eventually(finished, timeout=30, what="the ping pod finished")
    output = node.container_log(namespace, "ping", "ping").strip()
    assert phase == "Succeeded", output
    return output
