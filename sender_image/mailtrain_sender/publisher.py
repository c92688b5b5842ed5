"""The operator's side of the Redis layout: publish campaigns, steer them, read progress.

A campaign becomes visible to senders only once its state key exists (written
after every recipient) and it is in the pool's registry (the last step). So a
publish interrupted anywhere is redone in full, and one that finished only
misses its registration, which the next call adds. Pause and resume are
compare-and-set on the state, so neither can overwrite a completion; each also
repairs the registry when a previous call was interrupted half-way.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field

from redis.asyncio import Redis

from mailtrain_sender.layout import (
    ACTIVE,
    COMPLETED,
    MISSING,
    PAUSED,
    CampaignKeys,
    CampaignWire,
    PoolKeys,
    Recipient,
    Store,
    encode_chunk,
    hgetall,
    registry_score,
    text,
)

# Chunks per pipeline round trip while publishing: large enough that the network
# is not the limit, small enough to keep each reply short.
_CHUNKS_PER_ROUND_TRIP = 64


@dataclass(frozen=True)
class Progress:
    state: str  # active | paused | completed | failed | missing (deleted, or lost with Redis)
    total: int
    chunks: int
    sent: int
    failed: int
    invalid: int
    deferred: int
    completed_chunks: list[tuple[int, int]] = field(default_factory=list)  # inclusive ranges
    reason: str = ""  # why the campaign failed (state "failed")
    ambiguous: int = 0  # transactions whose final reply never came: each may have been delivered twice
    # Failed and invalid recipients within the completed chunks, counts carried by a republish
    # included: what a checkpoint records, so that a later republish carries them over again.
    completed_failed: int = 0
    completed_invalid: int = 0
    campaign: CampaignWire | None = None  # the campaign as published (its content, priority, chunk size)

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


def in_ranges(n: int, ranges: list[tuple[int, int]]) -> bool:
    """Membership without expanding the ranges: a checkpoint's ranges come from outside."""
    return any(first <= n <= last for first, last in ranges)


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
        self._store = Store(client)

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
        k = CampaignKeys(campaign.id)
        state, meta = await self.client.mget([k.state, k.meta])
        if state is not None:  # published before: at most its registration is missing
            published = campaign if meta is None else CampaignWire.model_validate_json(meta)
            if text(state) == ACTIVE:
                await self._register(published, only_if_missing=True)
            return published
        size = campaign.chunk_size
        if size <= 0 or size % 8:
            raise ValueError("chunk_size must be a positive multiple of 8")
        skip = [(first, last) for first, last in completed_chunks if first <= last]
        # No state yet: nothing was sent, so whatever an interrupted publish left is rewritten.
        await self.client.delete(*k.all())
        pipe = self.client.pipeline(transaction=False)
        total = chunk = skipped = 0
        async for batch in _batches(recipients, size):
            pipe.hset(k.rcpt, str(chunk), encode_chunk(batch))
            if in_ranges(chunk, skip):
                pipe.setrange(k.done, chunk * size // 8, _done_bytes(len(batch)))
                pipe.zadd(k.completed, {str(chunk): chunk})
                skipped += 1
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
        # The state comes last: senders ignore a campaign without one. An empty campaign
        # (or one whose checkpoint covers every chunk) is complete at once and never registered.
        pipe.set(k.state, ACTIVE if chunk > skipped else COMPLETED)
        await pipe.execute()
        if chunk > skipped:
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
        Checkpoint ranges beyond the recipients are ignored.
        """
        return await self.publish(campaign, recipients, completed_chunks=completed_chunks, carried=carried)

    async def register_if_missing(self, campaign: CampaignWire) -> None:
        """Puts an active campaign back in its pool's registry if it is not there (one ZADD NX)."""
        await self._register(campaign, only_if_missing=True)

    async def _register(self, campaign: CampaignWire, *, only_if_missing: bool = False) -> None:
        score = registry_score(campaign.priority, campaign.created_ms)
        await self.client.zadd(PoolKeys(campaign.pool).registry, {campaign.id: score}, nx=only_if_missing)

    async def pause(self, campaign: CampaignWire) -> bool:
        """Stop handing out chunks; senders drop what they queued and release their leases.

        True if this call paused it. Calling it again on a paused campaign finishes an
        interrupted pause (the registry entry), and never touches a finished one.
        """
        found = await self._store.swap_state(campaign.id, ACTIVE, PAUSED)
        if found in (ACTIVE, PAUSED):
            await self.client.zrem(PoolKeys(campaign.pool).registry, campaign.id)
        return found == ACTIVE

    async def resume(self, campaign: CampaignWire) -> bool:
        """True if this call resumed it; on an active campaign it only repairs the registry."""
        found = await self._store.swap_state(campaign.id, PAUSED, ACTIVE)
        if found in (PAUSED, ACTIVE):
            await self._register(campaign, only_if_missing=True)  # the same score: its place in line
        return found == PAUSED

    async def reprioritize(self, campaign: CampaignWire, priority: int) -> bool:
        """Move a waiting or running campaign in the order; no effect on a paused or finished one."""
        score = registry_score(priority, campaign.created_ms)
        changed = await self.client.zadd(
            PoolKeys(campaign.pool).registry, {campaign.id: score}, xx=True, ch=True
        )
        return bool(changed)

    async def delete(self, campaign_id: str, pool: str) -> None:
        """Cancel and remove every key of the campaign. Senders notice at their next lease renewal,
        and nothing they write afterwards brings a key back."""
        await self.client.zrem(PoolKeys(pool).registry, campaign_id)
        await self.client.delete(*CampaignKeys(campaign_id).all())

    cancel = delete

    async def failures(self, campaign_id: str) -> dict[int, str]:
        """The last SMTP reply (or reason) for each recipient that failed or was invalid, by index."""
        raw = await hgetall(self.client, CampaignKeys(campaign_id).replies)
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
        pipe.get(k.reason)
        meta, state, done, failed, invalid, counts, completed, reason = await pipe.execute()
        if meta is None:
            return Progress(MISSING if state is None else text(state), 0, 0, 0, 0, 0, 0)
        wire = CampaignWire.model_validate_json(meta)
        count = {text(key): int(value) for key, value in counts.items()}
        carried_failed, carried_invalid = count.get("carried_failed", 0), count.get("carried_invalid", 0)
        failed += carried_failed
        invalid += carried_invalid
        completed_ranges = to_ranges(int(c) for c in completed)
        in_completed = await self._count_within(campaign_id, wire.chunk_size, completed_ranges)
        return Progress(
            state=MISSING if state is None else text(state),
            total=wire.total,
            chunks=wire.chunks,
            sent=max(0, done - failed - invalid),
            failed=failed,
            invalid=invalid,
            deferred=count.get("deferred", 0),
            completed_chunks=completed_ranges,
            reason="" if reason is None else text(reason),
            ambiguous=count.get("ambiguous", 0),
            completed_failed=carried_failed + in_completed[0],
            completed_invalid=carried_invalid + in_completed[1],
            campaign=wire,
        )

    async def _count_within(
        self, campaign_id: str, chunk_size: int, ranges: list[tuple[int, int]]
    ) -> tuple[int, int]:
        """(failed, invalid) bits within the chunk ranges. A completed chunk's bits no longer change,
        and a chunk is whole bytes of each bitmap (chunk_size is a multiple of 8)."""
        if not ranges:
            return 0, 0
        k = CampaignKeys(campaign_id)
        pipe = self.client.pipeline(transaction=False)
        for bitmap in (k.failed, k.invalid):
            for first, last in ranges:
                pipe.bitcount(bitmap, first * chunk_size // 8, (last + 1) * chunk_size // 8 - 1)
        counts = [int(n) for n in await pipe.execute()]
        return sum(counts[: len(ranges)]), sum(counts[len(ranges) :])
