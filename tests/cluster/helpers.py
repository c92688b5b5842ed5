"""Polling with deadlines, and the objects the cluster tests share. API objects are plain dicts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.harness.kubeapi import Json, KubeApi
from tests.harness.local_node import TEST_PYTHON_IMAGE

PROGRAMS = Path(__file__).parent / "programs"
T = TypeVar("T")


def eventually(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """Polls until `check` returns something truthy, and returns it; fails with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not within {timeout:g}s: {what} (last seen: {last!r})")


def program(name: str, *args: str, **container: Any) -> Json:
    """A container that runs one of tests/cluster/programs from the test image."""
    argv = [str(PROGRAMS / args[0]), *args[1:]]
    return {"name": name, "image": TEST_PYTHON_IMAGE, "args": argv, **container}


def pod_ip_env() -> Json:
    return {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def redis_container(**extra: Any) -> Json:
    """redis from the Debian package, listening on its pod's own address, ready once it accepts."""
    return {
        "name": "redis",
        "image": "redis:7.0",
        "args": ["--bind", "$(POD_IP)", "--port", "6379", "--save", ""],
        "env": [pod_ip_env()],
        "ports": [{"name": "redis", "containerPort": 6379}],
        "readinessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 1},
        **extra,
    }


def deployment(name: str, replicas: int, containers: list[Json], **pod_spec: Any) -> Json:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": containers, "terminationGracePeriodSeconds": 5, **pod_spec},
            },
        },
    }


def pod(name: str, containers: list[Json], **spec: Any) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": containers, "terminationGracePeriodSeconds": 5, **spec},
    }


def pods_of(kube: KubeApi, namespace: str, app: str) -> list[Json]:
    return kube.list(f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"app={app}")


def ready(pod_obj: Json) -> bool:
    conditions = (pod_obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def container_status(pod_obj: Json, name: str) -> Json:
    statuses = (pod_obj.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if s["name"] == name), {})


def deployment_ready(kube: KubeApi, namespace: str, name: str, replicas: int) -> Json | None:
    """The Deployment once its controllers report exactly `replicas` ready and available pods."""
    found = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}") or {}
    status = found.get("status") or {}
    counts = (status.get("replicas"), status.get("readyReplicas"), status.get("availableReplicas"))
    return found if counts == (replicas, replicas, replicas) else None


def ready_pod(kube: KubeApi, namespace: str, name: str) -> Json | None:
    """The pod once it is Ready, else None (for eventually)."""
    found = kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    return found if found and ready(found) else None
