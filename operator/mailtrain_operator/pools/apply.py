"""Applying a pool's children: server-side apply with one field manager, owner references on all.

`reconcile` builds every child (builders.py, pure) and applies them in order, or applies nothing
when the spec is refused. `repair_deployment` puts the Deployment back when it drifted from what
was applied (a hand edit of its replicas, or its deletion). The private Redis's Secret is created
once with a random password and never applied again, so the password stays what the running Redis
was started with; the password is neither logged nor kept.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from mailtrain_operator import kube
from mailtrain_operator.api.senderpool import SenderPoolSpec
from mailtrain_operator.pools import builders, drift
from mailtrain_operator.pools.builders import PoolRef
from mailtrain_operator.pools.sender_toml import PoolSpecRejected
from mailtrain_operator.pools.status import INVALID_SPEC, Problem
from mailtrain_operator.settings import OperatorSettings

CHILD_OBJECT_REJECTED = "ChildObjectRejected"


@dataclass(frozen=True)
class PoolSnapshot:
    """A pool as the handlers of its Deployment see it (kopf's index of pools holds these)."""

    ref: PoolRef
    spec: dict[str, Any]
    deleting: bool

    @classmethod
    def from_body(cls, body: Any) -> PoolSnapshot:
        deleting = body["metadata"].get("deletionTimestamp") is not None
        return cls(PoolRef.from_body(body), dict(body.get("spec") or {}), deleting)


def parse_spec(spec: Any) -> SenderPoolSpec:
    """The spec as the model reads it; PoolSpecRejected if it does not (the CRD should prevent that)."""
    try:
        return SenderPoolSpec.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise PoolSpecRejected(INVALID_SPEC, f"spec.{where}: {first['msg']}") from None


def desired_children(pool: PoolRef, spec: Any, settings: OperatorSettings) -> builders.Children:
    return builders.children(pool, parse_spec(spec), settings)


async def ensure_private_redis_secret(pool: PoolRef) -> None:
    """Create the Secret with a new random password unless it exists (create, never read or apply)."""
    password = secrets.token_hex(32)  # hex: safe inside redis.conf's quotes
    secret = builders.private_redis_secret(pool, password)
    try:
        await kube.request("POST", kube.collection_path("v1", "Secret", pool.namespace), secret)
    except ApiException as exc:
        if exc.status != 409:  # 409: it exists already, with the password the Redis runs with
            raise


async def _apply(obj: dict[str, Any]) -> dict[str, Any]:
    try:
        return await kube.apply(obj)
    except ApiException as exc:
        if exc.status in (400, 422):  # the object itself is refused: retrying cannot help
            what = f"{obj['kind']} {obj['metadata']['name']}"
            raise PoolSpecRejected(
                CHILD_OBJECT_REJECTED, f"the apiserver refused {what}: {kube.refusal(exc)}"
            ) from None
        raise


async def reconcile(pool: PoolRef, spec: Any, settings: OperatorSettings) -> Problem | None:
    """Apply every child of the pool; the refusal, if the spec cannot be applied (then nothing of the
    refused spec is applied, unless the apiserver refused an object after the ones before it).
    ApiException for anything a retry may fix."""
    try:
        children = desired_children(pool, spec, settings)
        if children.private_redis:
            await ensure_private_redis_secret(pool)
        for obj in children.in_apply_order():
            await _apply(obj)
    except PoolSpecRejected as exc:
        return Problem(exc.reason, exc.message)
    return None


async def repair_deployment(
    pool: PoolSnapshot, actual: dict[str, Any] | None, settings: OperatorSettings
) -> bool:
    """Apply the pool's Deployment again if `actual` (None: deleted) no longer holds it. True if it did."""
    try:
        desired = desired_children(pool.ref, pool.spec, settings).deployment
        if actual is not None and not drift.drifted(actual, desired):
            return False
        await _apply(desired)
    except PoolSpecRejected:
        return False  # nothing is applied for a refused spec, and the reconcile has said why
    return True
