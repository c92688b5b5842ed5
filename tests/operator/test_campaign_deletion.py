"""Deleting a campaign: sending stops within seconds and its Redis keys go; a missing pool does not
block it, an unreachable Redis does (with a condition) until Redis is back."""

from __future__ import annotations

import time

import redis

from tests.cluster.helpers import eventually
from tests.harness import net
from tests.operator.campaign_rig import POOLS, CampaignRig, inline, rig  # noqa: F401 - the fixture


def keys_of(redis_url: str, uid: str) -> list[bytes]:
    with redis.Redis.from_url(redis_url) as client:
        return list(client.keys(f"*{uid}*"))


def registered(redis_url: str, uid: str) -> bool:
    with redis.Redis.from_url(redis_url) as client:
        return any(uid.encode() in client.zrange(key, 0, -1) for key in client.keys("mt:{p:*}:registry"))


def test_deleting_a_sending_campaign_stops_it_and_removes_its_keys(rig: CampaignRig) -> None:  # noqa: F811
    rig.create_pool("default")
    rig.senders("default", 2, smtp={"throttling": {"messagesPerSecond": 40}})
    rig.operator(progress_interval=1, chunk_size=16)
    uid = rig.create_campaign("doomed", recipients={"inline": inline(400)})["metadata"]["uid"]
    rig.wait_received(uid, 40)
    deleted = time.time()
    rig.delete_campaign("doomed")
    eventually(
        lambda: rig.campaign("doomed") is None, timeout=15, what="the object gone (finalizer released)"
    )
    gone = time.time() - deleted
    assert keys_of(rig.redis_url, uid) == [] and not registered(rig.redis_url, uid)

    # Sending stops: wait until nothing new arrived for two lease renewals of the senders (1 s each).
    def quiet() -> bool:
        last = max(m.received_at for m in rig.sink.messages())
        return time.time() - last > 2

    eventually(quiet, timeout=20, what="the sink quiet")
    received = rig.received(uid)
    stopped = max(m.received_at for m in rig.sink.messages()) - deleted
    assert stopped < 3, f"messages kept coming for {stopped:.1f} s after the delete"
    assert len(received) < 400 and set(received.values()) == {1}
    print(f"delete to object gone: {gone:.2f} s; to the last message: {stopped:.2f} s")


def test_a_campaign_whose_pool_is_gone_can_still_be_deleted(rig: CampaignRig) -> None:  # noqa: F811
    rig.create_pool("default")
    rig.operator(progress_interval=1)
    uid = rig.create_campaign("orphan", recipients={"inline": inline(10)})["metadata"]["uid"]
    rig.wait_phase("orphan", "Sending")  # published; no senders, so it stays there
    rig.delete_pool("default")
    complete = rig.wait_status(
        "orphan",
        lambda s: any(c["reason"] == "PoolNotFound" for c in s.get("conditions", [])),
        "PoolNotFound while sending",
    )
    assert complete["phase"] == "Sending"
    rig.delete_campaign("orphan")
    eventually(lambda: rig.campaign("orphan") is None, timeout=10, what="deleted without its pool")
    assert keys_of(rig.redis_url, uid) != []  # documented: nothing can find that Redis any more
    assert "no Redis keys to remove" in rig.operators[0].log_text()


def test_an_unreachable_redis_blocks_the_deletion_with_a_condition_until_it_is_back(rig: CampaignRig) -> None:  # noqa: F811
    rig.create_pool("default")
    rig.operator(progress_interval=1)
    uid = rig.create_campaign("stuck", recipients={"inline": inline(10)})["metadata"]["uid"]
    rig.wait_phase("stuck", "Sending")
    pool = f"{POOLS.format(ns=rig.namespace)}/default"
    dead = f"redis://{net.LOOPBACK}:{net.free_port()}/0"
    rig.controlplane.api.patch(pool, {"spec": {"redis": {"url": dead}}})
    # Delete only once the operator uses the new URL: before, the deletion could still reach the old Redis.
    rig.wait_status(
        "stuck",
        lambda s: any(c.get("reason") == "RedisUnavailable" for c in s.get("conditions", [])),
        "the campaign sees its pool's Redis unreachable",
        timeout=20,
    )
    rig.delete_campaign("stuck")
    status = rig.wait_status(
        "stuck",
        lambda s: any(c["type"] == "DeletionBlocked" for c in s.get("conditions", [])),
        "DeletionBlocked",
        timeout=20,
    )
    blocked = next(c for c in status["conditions"] if c["type"] == "DeletionBlocked")
    assert (blocked["status"], blocked["reason"]) == ("True", "RedisUnavailable")
    assert blocked["message"].startswith(
        f"the campaign's Redis keys cannot be removed yet: the Redis of SenderPool {rig.namespace}/default "
        "cannot be reached (ConnectionError); retrying with backoff."
    )
    assert "remove the finalizer mailtrain.dev/finalizer" in blocked["message"]
    assert rig.campaign("stuck") is not None and keys_of(rig.redis_url, uid) != []
    rig.controlplane.api.patch(pool, {"spec": {"redis": {"url": rig.redis_url}}})
    eventually(lambda: rig.campaign("stuck") is None, timeout=30, what="deleted once Redis is back")
    assert keys_of(rig.redis_url, uid) == []
