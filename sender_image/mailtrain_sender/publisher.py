"""The operator's side of the Redis layout: publish campaigns, steer them, read progress.

A campaign becomes visible to senders only when it enters the pool's registry,
which is the last step of `publish`; a publish interrupted half-way is simply
done again (every write is idempotent).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field

from redis.asyncio import Redis

from mailtrain_sender.layout import (
    CampaignKeys,
    CampaignWire,
    PoolKeys,
    Recipient,
    encode_chunk,
    registry_score,
    text,
)

# Chunks per pipeline round trip while publishing: large enough that the network
# is not the limit, small enough to keep each reply short.
_CHUNKS_PER_ROUND_TRIP = 64


@dataclass(frozen=True)
class Progress:
    state: str  # active | paused | completed | missing (deleted, or lost with Redis)
    total: int
    chunks: int
    sent: int
    failed: int
    invalid: int
    deferred: int
    completed_chunks: list[tuple[int, int]] = field(default_factory=list)  # inclusive ranges

    @property
    def pending(self) -> int:
        return max(0, self.total - self.sent - self.failed - self.invalid)


def to_ranges(numbers: Iterable[int]) -> list[tuple[int, int]]:
    """[0, 1, 2, 5, 6] -> [(0, 2), (5, 6)]"""
    ranges: list[tuple[int, int]] = []
    for n in sorted(set(numbers)):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], n)
        else:
            ranges.append((n, n))
    return ranges


def from_ranges(ranges: Iterable[tuple[int, int]]) -> set[int]:
    return {n for first, last in ranges for n in range(first, last + 1)}


def _done_bytes(count: int) -> bytes:
    """Bitmap bytes with the first `count` bits set."""
    full, rest = divmod(count, 8)
    return b"\xff" * full + (bytes([(0xFF << (8 - rest)) & 0xFF]) if rest else b"")


async def _batches(
    recipients: Iterable[Recipient] | AsyncIterable[Recipient], size: int
) -> AsyncIterable[list[Recipient]]:
    if isinstance(recipients, AsyncIterable):
        batch: list[Recipient] = []
        async for r in recipients:
            batch.append(r)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch
    else:
        iterator = iter(recipients)
        while batch := list(itertools.islice(iterator, size)):
            yield batch


class Publisher:
    def __init__(self, client: Redis) -> None:
        self.client = client

    async def publish(
        self,
        campaign: CampaignWire,
        recipients: Iterable[Recipient] | AsyncIterable[Recipient],
        *,
        completed_chunks: Iterable[tuple[int, int]] = (),
        carried: dict[str, int] | None = None,
    ) -> CampaignWire:
        """Stream the recipients into chunks, then register the campaign. Returns it with total and chunks.

        completed_chunks and carried are for `republish`: those chunks are stored
        as already sent (their done bits set) and not queued again.
        """
        existing = await self.client.get(CampaignKeys(campaign.id).meta)
        if existing is not None:
            return CampaignWire.model_validate_json(existing)
        size = campaign.chunk_size
        if size <= 0 or size % 8:
            raise ValueError("chunk_size must be a positive multiple of 8")
        skip = from_ranges(completed_chunks)
        k = CampaignKeys(campaign.id)
        pipe = self.client.pipeline(transaction=False)
        total = chunk = 0
        async for batch in _batches(recipients, size):
            pipe.hset(k.rcpt, str(chunk), encode_chunk(batch))
            if chunk in skip:
                pipe.setrange(k.done, chunk * size // 8, _done_bytes(len(batch)))
                pipe.zadd(k.completed, {str(chunk): chunk})
            else:
                pipe.zadd(k.todo, {str(chunk): chunk})
            total += len(batch)
            chunk += 1
            if chunk % _CHUNKS_PER_ROUND_TRIP == 0:
                await pipe.execute()
        published = campaign.model_copy(update={"total": total, "chunks": chunk})
        pipe.set(k.meta, published.dumps())
        if carried:
            pipe.hset(k.counts, mapping={f"carried_{name}": n for name, n in carried.items()})
        # An empty campaign is complete at once; it never enters the registry.
        pipe.set(k.state, "active" if chunk > len(skip) else "completed")
        await pipe.execute()
        if chunk > len(skip):
            await self._register(published)
        return published

    async def republish(
        self,
        campaign: CampaignWire,
        recipients: Iterable[Recipient] | AsyncIterable[Recipient],
        completed_chunks: Iterable[tuple[int, int]],
        carried: dict[str, int] | None = None,
    ) -> CampaignWire:
        """Publish again after Redis lost the keys, minus the chunks the checkpoint says are complete.

        carried: counts (failed, invalid) of those chunks, so progress stays true.
        """
        return await self.publish(campaign, recipients, completed_chunks=completed_chunks, carried=carried)

    async def _register(self, campaign: CampaignWire) -> None:
        score = registry_score(campaign.priority, campaign.created_ms)
        await self.client.zadd(PoolKeys(campaign.pool).registry, {campaign.id: score})

    async def pause(self, campaign: CampaignWire) -> bool:
        """Stop handing out chunks; senders drop what they queued and release their leases."""
        k = CampaignKeys(campaign.id)
        if await self.client.get(k.state) != b"active":
            return False
        await self.client.set(k.state, "paused")
        await self.client.zrem(PoolKeys(campaign.pool).registry, campaign.id)
        return True

    async def resume(self, campaign: CampaignWire) -> bool:
        k = CampaignKeys(campaign.id)
        if await self.client.get(k.state) != b"paused":
            return False
        await self.client.set(k.state, "active")
        await self._register(campaign)  # the same score: it keeps its place in the order
        return True

    async def delete(self, campaign_id: str, pool: str) -> None:
        """Cancel and remove every key of the campaign. Senders notice at their next lease renewal."""
        await self.client.zrem(PoolKeys(pool).registry, campaign_id)
        await self.client.delete(*CampaignKeys(campaign_id).all())

    cancel = delete

    async def failures(self, campaign_id: str) -> dict[int, str]:
        """The last SMTP reply (or reason) for each recipient that failed, by recipient index."""
        raw = await self.client.hgetall(CampaignKeys(campaign_id).replies)
        return {int(index): text(reply) for index, reply in raw.items()}

    async def progress(self, campaign_id: str) -> Progress:
        k = CampaignKeys(campaign_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.get(k.meta)
        pipe.get(k.state)
        pipe.bitcount(k.done)
        pipe.bitcount(k.failed)
        pipe.bitcount(k.invalid)
        pipe.hgetall(k.counts)
        pipe.zrange(k.completed, 0, -1)
        meta, state, done, failed, invalid, counts, completed = await pipe.execute()
        if meta is None:
            return Progress("missing", 0, 0, 0, 0, 0, 0)
        wire = CampaignWire.model_validate_json(meta)
        count = {key.decode(): int(value) for key, value in counts.items()}
        failed += count.get("carried_failed", 0)
        invalid += count.get("carried_invalid", 0)
        return Progress(
            state=state.decode() if state else "missing",
            total=wire.total,
            chunks=wire.chunks,
            sent=max(0, done - failed - invalid),
            failed=failed,
            invalid=invalid,
            deferred=count.get("deferred", 0),
            completed_chunks=to_ranges(int(c) for c in completed),
        )
