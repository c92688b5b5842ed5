"""What the SenderPool tests share: pools, their children's paths, and waiting for what the operator does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.cluster.helpers import eventually
from tests.harness import net
from tests.harness.kubeapi import Json, KubeApi
from tests.operator import examples

GROUP_PATH = "/apis/mailtrain.dev/v1alpha1"
SELECTOR = "app.kubernetes.io/name=mailtrain-sender,mailtrain.dev/pool={pool}"


def pools_path(namespace: str) -> str:
    return f"{GROUP_PATH}/namespaces/{namespace}/senderpools"


def pool_path(namespace: str, name: str) -> str:
    return f"{pools_path(namespace)}/{name}"


def deployment_path(namespace: str, pool: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{pool}-sender"


def config_map_path(namespace: str, pool: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps/{pool}-sender-config"


def service_path(namespace: str, pool: str) -> str:
    return f"/api/v1/namespaces/{namespace}/services/{pool}-sender"


def secret_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets/{name}"


def existing(kube: KubeApi, path: str) -> Json:
    """The object, which must exist."""
    found = kube.get(path)
    assert found is not None, f"{path} does not exist"
    return found


def sender_pool(name: str, smtp_port: int, **spec: Any) -> Json:
    """A pool of the test's relay (plain SMTP on loopback); `spec` replaces whole sections."""
    body = examples.pool(name)
    body["spec"] = {"smtp": {"host": net.LOOPBACK, "port": smtp_port, "security": "none"}} | spec
    return body


def create_pool(kube: KubeApi, namespace: str, body: Json) -> Json:
    return kube.create(pools_path(namespace), body)


def patch_pool(kube: KubeApi, namespace: str, name: str, spec: Json) -> Json:
    return kube.patch(pool_path(namespace, name), {"spec": spec})


def pods(kube: KubeApi, namespace: str, pool: str) -> list[Json]:
    """The pool's pods that are not being deleted."""
    found = kube.list(f"/api/v1/namespaces/{namespace}/pods", labelSelector=SELECTOR.format(pool=pool))
    return [p for p in found if "deletionTimestamp" not in p["metadata"]]


def condition(pool: Json | None, type_: str) -> Json:
    conditions = ((pool or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), {})


def pool_when(
    kube: KubeApi, namespace: str, name: str, check: Callable[[Json], bool], *, timeout: float, what: str
) -> Json:
    """The pool once `check(pool)` holds."""

    def found() -> Json | None:
        pool = kube.get(pool_path(namespace, name))
        return pool if pool is not None and check(pool) else None

    return eventually(found, timeout=timeout, what=what, interval=0.2)


def ready_pool(kube: KubeApi, namespace: str, name: str, replicas: int, *, timeout: float = 90) -> Json:
    """The pool once its status says every one of `replicas` processes is ready, for this generation."""

    def ready(pool: Json) -> bool:
        status = pool.get("status") or {}
        return (
            condition(pool, "Ready").get("status") == "True"
            and status.get("observedGeneration") == pool["metadata"]["generation"]
            and status.get("readyReplicas") == replicas
            and len(pods(kube, namespace, name)) == replicas
        )

    return pool_when(kube, namespace, name, ready, timeout=timeout, what=f"{name}: {replicas} ready")


def seconds_until(
    kube: KubeApi, path: str, resource_version: str, check: Callable[[Json], bool], *, timeout: float
) -> float | None:
    """Watch one object from `resource_version`: seconds from now until `check` holds, or None."""
    collection, _, name = path.rpartition("/")
    started = time.monotonic()
    deadline = started + timeout
    while (left := deadline - time.monotonic()) > 0:
        events = kube.watch(
            collection,
            timeout=left,
            resourceVersion=resource_version,
            fieldSelector=f"metadata.name={name}",
            allowWatchBookmarks="true",
        )
        for event in events:
            obj = event["object"]
            resource_version = obj["metadata"]["resourceVersion"]
            if event["type"] in ("ADDED", "MODIFIED") and check(obj):
                return time.monotonic() - started
            if time.monotonic() >= deadline:
                return None
    return None


def warning_events(kube: KubeApi, namespace: str, name: str) -> list[Json]:
    events = kube.list(
        f"/api/v1/namespaces/{namespace}/events",
        fieldSelector=f"involvedObject.kind=SenderPool,involvedObject.name={name},type=Warning",
    )
    return sorted(events, key=lambda e: e["metadata"]["creationTimestamp"])


def warning_event(kube: KubeApi, namespace: str, name: str, reason: str, *, timeout: float = 30) -> Json:
    """The pool's latest Warning Event for `reason`, waited for: kopf posts Events from a queue of its
    own, so one may land a moment after the status that called for it."""

    def found() -> Json | None:
        return next(
            (e for e in reversed(warning_events(kube, namespace, name)) if e["reason"] == reason), None
        )

    return eventually(
        found,
        timeout=timeout,
        what=f"{name}: a Warning Event {reason}",
        interval=0.2,
    )


def unchanged_for(kube: KubeApi, path: str, resource_version: str, *, seconds: float) -> list[Json]:
    """Watch one object for `seconds` from `resource_version`: every write to it meanwhile (none, if
    nothing changed it)."""
    collection, _, name = path.rpartition("/")
    writes: list[Json] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0.5:
        events = kube.watch(
            collection, timeout=left, resourceVersion=resource_version, fieldSelector=f"metadata.name={name}"
        )
        for event in events:
            resource_version = event["object"]["metadata"]["resourceVersion"]
            if event["type"] != "BOOKMARK":
                writes.append(event)
    return writes
