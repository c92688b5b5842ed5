"""The loop that keeps one pool's status true: observe, build (status.py), write only what changed.

It runs for as long as the pool exists (a kopf daemon starts and stops it), every POOL_STATUS_INTERVAL
seconds, and at once when woken: after a reconcile, and whenever the pool's Deployment changes, so
readyReplicas follows the pods within about a second. It is the only writer of the pool's status.
A failed read or write is logged and tried again at the next round; the loop itself never fails.
Each round also sets the pool's desired and ready processes in the metrics; they go with the loop.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from mailtrain_operator import kube
from mailtrain_operator.api import GROUP, VERSION, SenderPoolStatus
from mailtrain_operator.conditions import DEGRADED, find
from mailtrain_operator.metrics import METRICS
from mailtrain_operator.pool_redis import redis_pool_name
from mailtrain_operator.pools import builders, observe, status
from mailtrain_operator.pools.apply import parse_spec
from mailtrain_operator.pools.builders import PoolRef
from mailtrain_operator.pools.sender_toml import PoolSpecRejected
from mailtrain_operator.pools.status import Observation, Problem
from mailtrain_operator.pools.tracking import PoolTrack

POOL_STATUS_INTERVAL = 5.0
Warn = Callable[[str, str], None]  # (reason, message) -> a Warning Event on the pool


def status_path(pool: PoolRef) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{pool.namespace}/senderpools/{pool.name}/status"


def _ready_replicas(deployment: Mapping[str, Any] | None) -> int:
    return int(((deployment or {}).get("status") or {}).get("readyReplicas", 0))


async def observe_pool(pool: PoolRef, spec: Any, track: PoolTrack) -> Observation:
    assert track.handled_generation is not None
    deployment = await observe.deployment(pool)
    try:
        parsed = parse_spec(spec)
    except PoolSpecRejected:
        parsed = None  # the reconcile refused it, and track.refusal says why
    running = int(((deployment or {}).get("spec") or {}).get("replicas", 0))
    desired = builders.replicas(parsed) if parsed else running
    # The pods are listed only when some are missing or a rollout is under way: a healthy pool costs
    # one read per round.
    pods = await observe.pod_problem(pool) if status.pods_worth_listing(deployment, desired) else None
    active: int | Problem | None = await observe.active_campaigns(pool, parsed) if parsed else None
    return Observation(
        generation=track.handled_generation,
        refusal=track.refusal,
        failure=track.failure,
        desired_replicas=desired,
        deployment=deployment,
        pod_problem=pods,
        active_campaigns=active if isinstance(active, int) else None,
        redis_problem=active if isinstance(active, Problem) else None,
    )


def _parse_status(body: Mapping[str, Any]) -> SenderPoolStatus | None:
    try:
        return SenderPoolStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return None  # written by someone else in a shape of its own: ours replaces it


def _newly_degraded(new: SenderPoolStatus, previous: SenderPoolStatus | None) -> tuple[str, str] | None:
    now = find(new.conditions, DEGRADED)
    before = find(previous.conditions if previous else None, DEGRADED)
    if now is None or now.status != "True":
        return None
    if before is not None and before.status == "True" and before.reason == now.reason:
        return None
    return now.reason, now.message


async def refresh(
    pool: PoolRef, body: Mapping[str, Any], track: PoolTrack, previous: SenderPoolStatus | None, warn: Warn
) -> SenderPoolStatus | None:
    """One round: the status as written (or as it was, when unchanged)."""
    observed = await observe_pool(pool, body.get("spec"), track)
    METRICS.pool_processes(
        redis_pool_name(pool.namespace, pool.name),
        desired=observed.desired_replicas,
        ready=_ready_replicas(observed.deployment),
    )
    new = status.pool_status(pool.name, observed, previous, datetime.datetime.now(datetime.UTC))
    if new == previous:
        return previous
    patch = status.status_patch(new, previous)
    await kube.request("PATCH", status_path(pool), patch, content_type=kube.MERGE_PATCH)
    degraded = _newly_degraded(new, previous)
    if degraded is not None and observed.refusal is None and observed.failure is None:
        warn(*degraded)  # a refusal has its Event from the reconcile, a failure its retries in the log
    return new


async def keep_status(
    pool: PoolRef,
    body: Mapping[str, Any],
    track: PoolTrack,
    *,
    stopped: Callable[[], bool],
    warn: Warn,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    interval: float = POOL_STATUS_INTERVAL,
) -> None:
    """Until `stopped()` (checked whenever the track wakes), or the pool is gone. `body` is kopf's live
    view of the pool. The pool's process gauges end with the loop: on this replica nobody keeps them
    true any more (the pool was deleted, or the replica stands by or stops)."""
    try:
        await _keep_status(pool, body, track, stopped=stopped, warn=warn, logger=logger, interval=interval)
    finally:
        METRICS.forget_pool(redis_pool_name(pool.namespace, pool.name))


async def _keep_status(
    pool: PoolRef,
    body: Mapping[str, Any],
    track: PoolTrack,
    *,
    stopped: Callable[[], bool],
    warn: Warn,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    interval: float,
) -> None:
    previous = _parse_status(body)
    failing = False
    while not stopped():
        if track.handled_generation is not None:  # nothing to say before the first reconcile
            try:
                previous = await refresh(pool, body, track, previous, warn)
                if failing:
                    logger.info("the status of the pool is written again")
                failing = False
            except ApiException as exc:
                if exc.status == 404:
                    return  # the pool is gone; kopf stops this loop too
                if not failing:
                    logger.warning("cannot write the pool's status, trying again: %s", kube.refusal(exc))
                failing = True
            except (HTTPError, OSError) as exc:
                if not failing:
                    logger.warning("cannot reach the apiserver for the pool's status, trying again: %s", exc)
                failing = True
        await track.sleep(interval)
