"""Deployments run for real: the controllers make the pods, the node agent runs them, status comes back.

Each redis pod can carry a sidecar that records the signals it gets, so a scale-down shows which
process got SIGTERM.
"""

from __future__ import annotations

import os
import signal

import redis

from tests.cluster.helpers import (
    container_status,
    deployment,
    deployment_ready,
    eventually,
    pods_of,
    program,
    ready,
    redis_container,
)
from tests.harness.kubeapi import Json, KubeApi
from tests.harness.local_node import LocalNode
from tests.harness.net import process_running


def _redis_with_recorder(replicas: int) -> Json:
    return deployment("redis", replicas, [redis_container(), program("recorder", "signals.py")])


def _scale(kube: KubeApi, namespace: str, replicas: int) -> None:
    kube.patch(
        f"/apis/apps/v1/namespaces/{namespace}/deployments/redis/scale", {"spec": {"replicas": replicas}}
    )


def test_redis_deployment_becomes_ready_and_serves_on_pod_ips(kube: KubeApi, namespace: str) -> None:
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", _redis_with_recorder(2))
    eventually(lambda: deployment_ready(kube, namespace, "redis", 2), timeout=30, what="redis 2/2 ready")

    addresses = sorted(p["status"]["podIP"] for p in pods_of(kube, namespace, "redis"))
    assert len(set(addresses)) == 2
    for address in addresses:  # both listen on 6379, each on its own address
        with redis.Redis(host=address, port=6379, socket_timeout=2) as connection:
            assert connection.ping() is True

    service = {
        "metadata": {"name": "redis"},
        "spec": {"selector": {"app": "redis"}, "ports": [{"name": "redis", "port": 6379}]},
    }
    kube.create(f"/api/v1/namespaces/{namespace}/services", service)

    def published() -> list[str] | None:
        slices = kube.list(
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            labelSelector="kubernetes.io/service-name=redis",
        )
        found = sorted(
            address
            for item in slices
            for endpoint in item.get("endpoints") or []
            if endpoint["conditions"].get("ready")
            for address in endpoint["addresses"]
        )
        return found if found == addresses else None

    eventually(published, timeout=15, what="the EndpointSlice lists both ready pod IPs")


def test_scale_up_and_down_sends_sigterm_to_removed_pods(
    kube: KubeApi, namespace: str, local_node: LocalNode
) -> None:
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", _redis_with_recorder(1))
    eventually(lambda: deployment_ready(kube, namespace, "redis", 1), timeout=30, what="1/1 ready")
    _scale(kube, namespace, 3)
    eventually(lambda: deployment_ready(kube, namespace, "redis", 3), timeout=30, what="3/3 ready")
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods_of(kube, namespace, "redis")}
    pids = local_node.container_pids()

    _scale(kube, namespace, 1)
    eventually(lambda: len(pods_of(kube, namespace, "redis")) == 1, timeout=30, what="2 pods deleted")
    [kept] = pods_of(kube, namespace, "redis")
    removed = {name: uid for name, uid in before.items() if name != kept["metadata"]["name"]}
    assert len(removed) == 2
    for name, uid in removed.items():
        log = local_node.container_log(namespace, name, "recorder")
        assert log.splitlines() == ["started", "SIGTERM"], log
        for container in ("redis", "recorder"):
            assert not process_running(pids[(uid, container)]), f"{name}/{container} still runs"
    assert "SIGTERM" not in local_node.container_log(namespace, kept["metadata"]["name"], "recorder")


def test_killed_container_is_restarted_and_ready_again(
    kube: KubeApi, namespace: str, local_node: LocalNode
) -> None:
    kube.create(
        f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("redis", 1, [redis_container()])
    )
    eventually(lambda: deployment_ready(kube, namespace, "redis", 1), timeout=30, what="1/1 ready")
    [pod] = pods_of(kube, namespace, "redis")
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    os.kill(local_node.container_pids()[(uid, "redis")], signal.SIGKILL)

    def restarted_and_ready() -> Json | None:
        current = kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}") or {}
        restarts = container_status(current, "redis").get("restartCount")
        return current if restarts == 1 and ready(current) else None

    restarted = container_status(
        eventually(restarted_and_ready, timeout=30, what="restarted, Ready"), "redis"
    )
    assert restarted["lastState"]["terminated"]["exitCode"] == 137
    assert restarted["lastState"]["terminated"]["reason"] == "Error"
    assert "running" in restarted["state"]
    assert "Redis is starting" in local_node.container_log(namespace, name, "redis", previous=True)
    assert eventually(lambda: deployment_ready(kube, namespace, "redis", 1), timeout=10, what="1/1 again")
