"""The operator's API on the layout: publish, steer, read progress, republish after a loss."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import cast

from redis.asyncio import Redis

from mailtrain_sender.layout import (
    CampaignKeys,
    ChunkClaim,
    Outcomes,
    PoolKeys,
    Recipient,
    Store,
    decode_chunk,
)
from mailtrain_sender.publisher import Publisher, from_ranges, to_ranges
from tests.sender.conftest import POOL, PublishFn, campaign_wire, recipients

TTL = 60_000


def test_ranges_round_trip() -> None:
    assert to_ranges([5, 0, 1, 2, 6, 9]) == [(0, 2), (5, 6), (9, 9)]
    assert from_ranges([(0, 2), (5, 6)]) == {0, 1, 2, 5, 6}
    assert to_ranges([]) == []


async def test_publish_streams_chunks_then_registers(publisher: Publisher, redis_client: Redis) -> None:
    async def stream() -> AsyncIterator[Recipient]:
        for r in recipients("stream", 1000):
            yield r

    wire = await publisher.publish(campaign_wire("stream", chunk_size=128), stream())
    assert (wire.total, wire.chunks) == (1000, 8)
    assert await redis_client.zscore(PoolKeys(POOL).registry, wire.id) is not None
    progress = await publisher.progress(wire.id)
    assert (progress.state, progress.total, progress.pending, progress.sent) == ("active", 1000, 1000, 0)
    raw = await cast("Awaitable[bytes | None]", redis_client.hget(CampaignKeys(wire.id).rcpt, "7"))
    assert raw is not None and decode_chunk(raw)[-1] == Recipient("stream.999@example.org", "User 999")


async def test_publish_twice_is_harmless(publisher: Publisher) -> None:
    wire = campaign_wire("twice")
    first = await publisher.publish(wire, recipients("twice", 10))
    second = await publisher.publish(wire, recipients("twice", 99))
    assert first == second and second.total == 10


async def test_empty_campaign_is_complete_at_once(publisher: Publisher, redis_client: Redis) -> None:
    wire = await publisher.publish(campaign_wire("empty"), [])
    assert (await publisher.progress(wire.id)).state == "completed"
    assert await redis_client.zcard(PoolKeys(POOL).registry) == 0


async def test_pause_resume_keeps_the_place_in_line(
    publish: PublishFn, publisher: Publisher, redis_client: Redis
) -> None:
    wire = await publish("steady", 10)
    registry = PoolKeys(POOL).registry
    score = await redis_client.zscore(registry, wire.id)
    assert await publisher.pause(wire)
    assert not await publisher.pause(wire)  # already paused
    assert await redis_client.zscore(registry, wire.id) is None
    assert (await publisher.progress(wire.id)).state == "paused"
    assert await publisher.resume(wire)
    assert await redis_client.zscore(registry, wire.id) == score


async def test_delete_removes_every_key(
    publish: PublishFn, publisher: Publisher, redis_client: Redis
) -> None:
    wire = await publish("gone", 100)
    await publisher.delete(wire.id, wire.pool)
    assert await redis_client.keys(f"*{wire.id}*") == []
    assert (await publisher.progress(wire.id)).state == "missing"


async def test_finding_6_an_interrupted_publish_is_redone(publisher: Publisher, redis_client: Redis) -> None:
    wire = campaign_wire("interrupted", chunk_size=8)
    k = CampaignKeys(wire.id)
    # A publish that died after writing the description, before the state and the registry.
    await redis_client.set(k.meta, wire.model_copy(update={"total": 3, "chunks": 1}).dumps())
    await cast("Awaitable[int]", redis_client.hset(k.rcpt, "0", "[]"))
    published = await publisher.publish(wire, recipients("interrupted", 20))
    assert (published.total, published.chunks) == (20, 3)
    assert await redis_client.zscore(PoolKeys(POOL).registry, wire.id) is not None
    progress = await publisher.progress(wire.id)
    assert (progress.state, progress.total, progress.pending) == ("active", 20, 20)
    # One that died after the state but before the registry only misses the registration.
    await redis_client.zrem(PoolKeys(POOL).registry, wire.id)
    assert await publisher.publish(wire, recipients("interrupted", 20)) == published
    assert await redis_client.zscore(PoolKeys(POOL).registry, wire.id) is not None


async def test_finding_8_a_bad_checkpoint_cannot_complete_a_partly_sent_campaign(
    publisher: Publisher, redis_client: Redis
) -> None:
    wire = campaign_wire("checkpoint", chunk_size=8)
    # 3 chunks; the checkpoint claims chunk 1 and a pile of chunks that do not exist.
    bad = [(1, 1), (5, 10**12), (-4, -1), (7, 3)]
    republished = await publisher.republish(wire, recipients("checkpoint", 20), bad)
    progress = await publisher.progress(republished.id)
    assert progress.state == "active" and progress.completed_chunks == [(1, 1)]
    assert progress.pending == 12
    assert await redis_client.zscore(PoolKeys(POOL).registry, wire.id) is not None


async def test_reprioritize_moves_a_waiting_campaign_only(
    publish: PublishFn, publisher: Publisher, redis_client: Redis
) -> None:
    wire = await publish("moving", 8)
    registry = PoolKeys(POOL).registry
    before = await redis_client.zscore(registry, wire.id)
    assert await publisher.reprioritize(wire, 7)
    after = await redis_client.zscore(registry, wire.id)
    assert before is not None and after is not None and after < before  # higher priority: claimed sooner
    assert await publisher.pause(wire)
    assert not await publisher.reprioritize(wire, 9)  # paused: stays out of the registry
    assert await redis_client.zscore(registry, wire.id) is None


async def test_republish_skips_completed_chunks_and_keeps_counts(publisher: Publisher, store: Store) -> None:
    wire = campaign_wire("lost", chunk_size=8)
    await publisher.republish(wire, recipients("lost", 20), [(0, 0), (2, 2)], {"failed": 1, "invalid": 2})
    progress = await publisher.progress(wire.id)
    assert progress.completed_chunks == [(0, 0), (2, 2)]
    assert (progress.sent, progress.failed, progress.invalid, progress.pending) == (9, 1, 2, 8)
    claim = await store.claim_chunk(wire.id, "w", TTL, 8)
    assert isinstance(claim, ChunkClaim) and claim.chunk == 1  # only chunk 1 is left to send
    assert await store.claim_chunk(wire.id, "w", TTL, 8) != claim


async def test_progress_counts_failures_within_completed_chunks_for_the_checkpoint(
    publisher: Publisher, store: Store
) -> None:
    """What a checkpoint records: failed and invalid recipients of completed chunks only (the bits
    of a chunk still in work would be sent again by a republish, so they must not be carried)."""
    wire = await publisher.republish(
        campaign_wire("checkpoint", chunk_size=8), recipients("checkpoint", 32), [(3, 3)], {"failed": 1}
    )
    first = await store.claim_chunk(wire.id, "w", TTL, 8)
    second = await store.claim_chunk(wire.id, "w", TTL, 8)
    assert isinstance(first, ChunkClaim) and isinstance(second, ChunkClaim)
    # The first chunk completes with one failure and two invalid; the second gets one failure, no completion.
    done = Outcomes(sent=[0, 1, 2, 3, 4], failed={5: "550 no"}, invalid={6: "bad", 7: "bad"})
    done.complete.append((first.chunk, first.token))
    await store.record_outcomes("w", {wire.id: (done, wire.chunks)})
    await store.record_outcomes("w", {wire.id: (Outcomes(failed={8: "550 no"}), wire.chunks)})
    progress = await publisher.progress(wire.id)
    assert progress.completed_chunks == [(0, 0), (3, 3)]
    assert (progress.failed, progress.invalid) == (3, 2)
    assert (progress.completed_failed, progress.completed_invalid) == (2, 2)  # chunk 1's failure is left out
    assert progress.campaign == wire
