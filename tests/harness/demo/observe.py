"""Reads what the demo shows: the campaigns' status from the API, the pool's pods, and from the pool's
Redis the live counts and the `assign` hash (which worker works on which campaigns right now).

The bundled Redis is reached from this machine at its pod's address with the chart's password, both
read through the API; the senders reach the same Redis by the Service name in the URL Secret.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from mailtrain_sender.layout import CampaignKeys, PoolKeys
from tests.harness.demo.model import CampaignState, PodState, Snapshot
from tests.harness.kubeapi import Json, KubeApi

GROUP = "/apis/mailtrain.dev/v1alpha1"
REDIS_ERRORS = (redis.RedisError, OSError)


def bundled_redis_url(api: KubeApi, namespace: str, fullname: str) -> str | None:
    """redis://:<password>@<pod IP>:6379/0 of the chart's Redis, once its pod has an address."""
    pod = api.get(f"/api/v1/namespaces/{namespace}/pods/{fullname}-redis-0")
    secret = api.get(f"/api/v1/namespaces/{namespace}/secrets/{fullname}-redis")
    address = ((pod or {}).get("status") or {}).get("podIP")
    if not address or not secret:
        return None
    password = base64.b64decode(secret["data"]["password"]).decode()
    return f"redis://:{password}@{address}:6379/0"


def _ready(pod: Json) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@dataclass
class Observer:
    api: KubeApi
    namespace: str
    pool: str
    redis_url: Callable[[], str | None]  # asked again until it answers
    delivered: Callable[[], int] = lambda: -1  # messages at the relay
    _client: redis.Redis | None = field(default=None, repr=False)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def snapshot(self, at: float) -> Snapshot:
        items = self.api.list(f"{GROUP}/namespaces/{self.namespace}/mailcampaigns")
        pool = self.api.get(f"{GROUP}/namespaces/{self.namespace}/senderpools/{self.pool}") or {}
        pods = self.api.list(
            f"/api/v1/namespaces/{self.namespace}/pods",
            labelSelector=f"app.kubernetes.io/name=mailtrain-sender,mailtrain.dev/pool={self.pool}",
        )
        uids = [c["metadata"]["uid"] for c in items]
        counts, assignment = self._redis(uids)
        campaigns = []
        for item in sorted(items, key=lambda c: c["metadata"]["creationTimestamp"] + c["metadata"]["name"]):
            status, uid = item.get("status") or {}, item["metadata"]["uid"]
            done, failed, invalid = counts.get(uid, (0, 0, 0))
            campaigns.append(
                CampaignState(
                    name=item["metadata"]["name"],
                    uid=uid,
                    phase=str(status.get("phase", "")),
                    total=int(status.get("total") or 0),
                    # Redis is ahead of the status; the status outlives Redis's keys.
                    sent=max(int(status.get("sent") or 0), done - failed - invalid),
                    failed=max(int(status.get("failed") or 0), failed),
                    invalid=max(int(status.get("invalid") or 0), invalid),
                )
            )
        throttle = ((pool.get("spec") or {}).get("smtp") or {}).get("throttling") or {}
        return Snapshot(
            at=at,
            campaigns=tuple(campaigns),
            pods=tuple(
                PodState(p["metadata"]["name"], _ready(p))
                for p in sorted(pods, key=lambda p: str(p["metadata"]["name"]))
                if "deletionTimestamp" not in p["metadata"]
            ),
            assignment=assignment,
            throttle=float(throttle.get("messagesPerSecond") or 0),
            delivered=self.delivered(),
        )

    def _redis(self, uids: list[str]) -> tuple[dict[str, tuple[int, int, int]], dict[str, frozenset[str]]]:
        client = self._connect()
        if client is None:
            return {}, {}
        try:
            pipe = client.pipeline(transaction=False)
            pipe.hgetall(PoolKeys(f"{self.namespace}/{self.pool}").assign)
            for uid in uids:
                keys = CampaignKeys(uid)
                pipe.bitcount(keys.done)
                pipe.bitcount(keys.failed)
                pipe.bitcount(keys.invalid)
            replies = pipe.execute()
        except REDIS_ERRORS:
            self.close()  # a Redis that restarted comes back with a new address: ask again
            return {}, {}
        raw, rest = replies[0], replies[1:]
        assignment = {w.decode(): frozenset(c for c in v.decode().split(",") if c) for w, v in raw.items()}
        counts = {
            uid: (int(rest[3 * i]), int(rest[3 * i + 1]), int(rest[3 * i + 2])) for i, uid in enumerate(uids)
        }
        return counts, assignment

    def _connect(self) -> redis.Redis | None:
        if self._client is None:
            url = self.redis_url()
            if url is None:
                return None
            self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        return self._client


def quietly(read: Callable[[], int]) -> Callable[[], int]:
    """A count that is -1 (unknown) while its source does not answer."""

    def wrapped() -> int:
        with contextlib.suppress(OSError, ValueError):
            return read()
        return -1

    return wrapped
