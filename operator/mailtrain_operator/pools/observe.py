"""What a pool's status is made of, read from the apiserver and the pool's Redis.

- The Deployment: replicas, readiness, rollout (status.py judges them).
- Its pods, when not all are ready: the first one that cannot start, and the kubelet's reason (a
  missing Secret is `CreateContainerConfigError` with `secret "x" not found`). The operator never
  reads the SMTP Secret: the pods say whether it is there.
- The pool's Redis, through `pool_redis.resolve`: how many campaigns its registry holds. A Redis that
  cannot be reached is a Problem for a condition, never an exception.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from mailtrain_operator import kube, pool_redis
from mailtrain_operator.api.senderpool import SenderPoolSpec
from mailtrain_operator.pools import names
from mailtrain_operator.pools.builders import PoolRef
from mailtrain_operator.pools.status import Problem
from mailtrain_sender.layout import PoolKeys

Json = dict[str, Any]
REDIS_TIMEOUT = 2.0  # seconds; the status loop must not hang on a Redis that does not answer
# Waiting reasons of a container that is on its way, not stuck.
_STARTING = frozenset({"ContainerCreating", "PodInitializing"})


async def deployment(pool: PoolRef) -> Json | None:
    path = kube.collection_path("apps/v1", "Deployment", pool.namespace)
    return await kube.get(f"{path}/{names.deployment_name(pool.name)}")


def _pod_problem(pod: Json) -> Problem | None:
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    for condition in status.get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            return Problem("Unschedulable", f"pod {name} cannot be scheduled: {condition.get('message', '')}")
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason and reason not in _STARTING:
            why = waiting.get("message") or reason
            return Problem(reason, f"pod {name}, container {container['name']}: {why}")
    return None


async def pod_problem(pool: PoolRef) -> Problem | None:
    """The first pod of the pool that cannot start, and why (pods being deleted are left out)."""
    path = f"/api/v1/namespaces/{pool.namespace}/pods"
    listed = await kube.request("GET", path, query={"labelSelector": names.selector_text(pool.name)})
    for pod in sorted(listed.get("items") or (), key=lambda p: p["metadata"]["name"]):
        if pod["metadata"].get("deletionTimestamp") is None and (problem := _pod_problem(pod)):
            return problem
    return None


async def active_campaigns(pool: PoolRef, spec: SenderPoolSpec) -> int | Problem:
    """Campaigns in the pool's registry (runnable: sending, or waiting for room), or why unknown."""
    try:
        target = await pool_redis.resolve(pool.namespace, pool.name, spec)
    except pool_redis.PoolRedisUnavailable as exc:
        return Problem(exc.reason, exc.message)
    try:
        client = pool_redis.open_client(target, timeout=REDIS_TIMEOUT)
    except ValueError as exc:  # its message never holds the URL, which may hold a password
        return Problem("RedisUrlInvalid", f"the pool's Redis: {exc}")
    registry = PoolKeys(pool_redis.redis_pool_name(pool.namespace, pool.name)).registry
    try:
        return int(await client.zcard(registry))
    except RedisError as exc:
        # redis-py's messages name the host and port, never the password.
        return Problem("RedisUnreachable", f"the pool's Redis cannot be read: {type(exc).__name__}: {exc}")
    finally:
        await client.aclose()
