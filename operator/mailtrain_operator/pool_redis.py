"""Where a SenderPool's Redis is, seen from the operator: the one answer both kinds' handlers use.

- `redis.url`: that URL, without a password.
- `redis.urlSecretRef`: the Secret key's value, password included (read with `get`, never logged).
- `redis.enabled: false`: the private Redis beside the pool's single sender. It is reached through
  the EndpointSlices of the pool's Service (port `redis`), which works with or without cluster
  DNS, and its password is in the Secret the operator generated for the pool.

Nothing here caches: a caller that keeps a Redis client keys it by the `RedisTarget` it got.

The pool's name in Redis (`redis_pool_name`, the senders' `worker.pool`) is `<namespace>/<pool>`,
so pools of different namespaces can share one Redis without sharing their keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis

from mailtrain_operator import kube
from mailtrain_operator.api.senderpool import SenderPoolSpec

# The names the pool's child objects use for the private Redis (the builders use the same).
PRIVATE_REDIS_PORT_NAME = "redis"
PRIVATE_REDIS_PASSWORD_KEY = "password"  # noqa: S105 - a key name, not a password


def service_name(pool: str) -> str:
    return f"{pool}-sender"


def redis_pool_name(namespace: str, pool: str) -> str:
    """The pool's name in the Redis layout (PoolKeys, CampaignWire.pool, the senders' worker.pool)."""
    return f"{namespace}/{pool}"


def private_redis_secret_name(pool: str) -> str:
    return f"{pool}-sender-redis"


@dataclass(frozen=True)
class RedisTarget:
    url: str  # from a Secret, it may hold a password: repr() leaves that out
    password: str | None = field(default=None, repr=False)  # never printed

    def __repr__(self) -> str:
        parts, shown = urlsplit(self.url), self.url
        if parts.password:
            host = parts.netloc.rpartition("@")[2]
            shown = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
        return f"RedisTarget(url={shown!r})"


class PoolRedisUnavailable(Exception):
    """The pool's Redis cannot be located yet; `reason` is CamelCase for a condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _ready_address(slices: list[Any]) -> tuple[str, int] | None:
    for endpoint_slice in slices:
        port = next((p.port for p in endpoint_slice.ports or () if p.name == PRIVATE_REDIS_PORT_NAME), None)
        if port is None:
            continue
        for endpoint in endpoint_slice.endpoints or ():
            ready = endpoint.conditions is None or endpoint.conditions.ready is not False
            if ready and endpoint.addresses:
                return endpoint.addresses[0], port
    return None


async def resolve(namespace: str, pool: str, spec: SenderPoolSpec) -> RedisTarget:
    redis = spec.redis
    if redis.url is not None:
        return RedisTarget(redis.url)
    if redis.url_secret_ref is not None:
        ref = redis.url_secret_ref
        try:
            url = await kube.read_secret_key(namespace, ref.name, ref.key, purpose="redis.urlSecretRef")
        except kube.MissingReference as exc:
            raise PoolRedisUnavailable(exc.reason, exc.message) from None
        return RedisTarget(url.strip())
    if redis.enabled:
        raise PoolRedisUnavailable(
            "RedisNotConfigured",
            f"SenderPool {namespace}/{pool} names no Redis: set redis.url or redis.urlSecretRef, "
            "or redis.enabled: false for a single process with a private Redis",
        )
    selector = f"kubernetes.io/service-name={service_name(pool)}"
    slices = await kube.call(
        kube.discovery().list_namespaced_endpoint_slice, namespace, label_selector=selector
    )
    found = _ready_address(slices.items)
    if found is None:
        raise PoolRedisUnavailable(
            "RedisNotReady", f"the private Redis of SenderPool {namespace}/{pool} has no ready endpoint yet"
        )
    try:
        password = await kube.read_secret_key(
            namespace,
            private_redis_secret_name(pool),
            PRIVATE_REDIS_PASSWORD_KEY,
            purpose="the pool's private Redis",
        )
    except kube.MissingReference as exc:
        raise PoolRedisUnavailable(exc.reason, exc.message) from None
    host, port = found
    host = f"[{host}]" if ":" in host else host
    return RedisTarget(f"redis://{host}:{port}/0", password)


def open_client(target: RedisTarget, *, timeout: float = 5.0) -> Redis:
    """A client of the target (it connects on first use). ValueError, with a message that never quotes
    the URL, when the URL cannot be used: one from a Secret may hold a password."""
    try:
        return Redis.from_url(
            target.url,
            password=target.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
    except ValueError:
        raise ValueError("the Redis URL is not a usable redis://, rediss:// or unix:// URL") from None
