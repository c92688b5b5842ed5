"""Deleting a campaign: its Redis keys go, which stops its senders within a lease renewal.

A campaign whose pool no longer exists is let go at once: its senders went with the pool (the
pool owns their Deployment), so nothing sends its keys, and nothing could find that Redis again.
A pool that exists but whose Redis cannot be reached blocks the deletion, retried with backoff,
and the condition DeletionBlocked says why: the keys would otherwise stay, and a sender that can
reach that Redis would keep sending a campaign nobody can see any more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from mailtrain_operator import conditions, pool_redis
from mailtrain_operator.api import SenderPoolSpec, to_status
from mailtrain_operator.campaigns import objects, status
from mailtrain_operator.campaigns.runtime import CampaignRuntime
from mailtrain_operator.metrics import METRICS
from mailtrain_operator.pool_redis import PoolRedisUnavailable, resolve
from mailtrain_sender.publisher import Publisher

DELETION_BLOCKED = "DeletionBlocked"


@dataclass(frozen=True)
class Blocked:
    """The keys cannot be removed yet; the deletion is retried."""

    reason: str
    message: str


async def remove_keys(
    runtime: CampaignRuntime,
    body: Mapping[str, Any],
    pool_spec: Callable[[str, str], Mapping[str, Any] | None],
) -> str | Blocked:
    """Remove the campaign's Redis keys; returns what was done, for the log, or why it cannot yet."""
    meta = body["metadata"]
    uid, namespace = str(meta["uid"]), str(meta["namespace"])
    pool = str(body["spec"].get("senderPool", "default"))
    found = pool_spec(namespace, pool)
    if found is None:
        runtime.forget(uid)
        return f"SenderPool {namespace}/{pool} no longer exists: no Redis keys to remove"
    try:
        target = await resolve(namespace, pool, SenderPoolSpec.model_validate(found))
    except PoolRedisUnavailable as exc:
        if exc.reason == "RedisNotConfigured":  # then nothing was ever published there
            runtime.forget(uid)
            return f"SenderPool {namespace}/{pool} names no Redis: no keys to remove"
        return Blocked(exc.reason, _blocked(exc.message))
    except ValidationError:
        runtime.forget(uid)
        return f"SenderPool {namespace}/{pool} has a spec this operator cannot read: keys left as they are"
    async with runtime.lock(uid):  # a publish of this campaign's driver is over (cancelled) first
        try:
            await Publisher(runtime.clients.get(target)).delete(
                uid, pool_redis.redis_pool_name(namespace, pool)
            )
        except RedisError as exc:
            METRICS.redis_errors.labels("delete").inc()
            reason = f"the Redis of SenderPool {namespace}/{pool} cannot be reached ({type(exc).__name__})"
            return Blocked("RedisUnavailable", _blocked(reason))
    runtime.forget(uid)
    return "removed the campaign's Redis keys: its senders stop at their next lease renewal"


def _blocked(why: str) -> str:
    return (
        f"the campaign's Redis keys cannot be removed yet: {why}; retrying with backoff. To delete the "
        "object without removing them, remove the finalizer mailtrain.dev/finalizer"
    )


async def report_blocked(body: Mapping[str, Any], blocked: Blocked) -> None:
    """The DeletionBlocked condition, written only when it changed."""
    current = status.parse(body.get("status"))
    generation = int(body["metadata"].get("generation") or 0)
    now = status.whole_seconds(datetime.now(UTC))
    found = conditions.set_condition(
        current.conditions,
        DELETION_BLOCKED,
        True,
        blocked.reason,
        blocked.message,
        generation=generation,
        now=now,
    )
    desired = current.model_copy(update={"conditions": found})
    patch = objects.merge_patch(to_status(current), to_status(desired))
    if patch:
        await objects.patch_status(str(body["metadata"]["namespace"]), str(body["metadata"]["name"]), patch)
