"""Acknowledgements, written to Redis in batches every `ackInterval`.

A message counts as done only once its bit is set in Redis. Writing each bit
on its own would cost a Redis command per message; here one tick writes every
acknowledgement gathered since the last one, one BITFIELD per campaign and
bitmap, in one round trip. The price is bounded and stated: after a crash, only
messages the relay accepted within the last `ackInterval` can go out again.

Chunk completions ride on the same tick, after the bits they depend on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from mailtrain_sender.layout import Store
from mailtrain_sender.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class _CampaignAcks:
    sent: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    invalid: list[int] = field(default_factory=list)
    deferred: int = 0

    def merge(self, other: _CampaignAcks) -> None:
        self.sent += other.sent
        self.failed.update(other.failed)
        self.invalid += other.invalid
        self.deferred += other.deferred


@dataclass(frozen=True)
class Completion:
    campaign: str
    chunk: int
    chunks: int
    # Called with (we still owned the chunk, completed chunks of the campaign).
    done: Callable[[bool, int], None]


class AckBuffer:
    def __init__(self, store: Store, worker: str, metrics: Metrics) -> None:
        self._store = store
        self._worker = worker
        self._metrics = metrics
        self._acks: dict[str, _CampaignAcks] = {}
        self._completions: list[Completion] = []
        self._lock = asyncio.Lock()
        self._failing = False  # log a Redis outage once, and its end once, not every tick

    def _for(self, campaign: str) -> _CampaignAcks:
        acks = self._acks.get(campaign)
        if acks is None:
            acks = self._acks[campaign] = _CampaignAcks()
        return acks

    def sent(self, campaign: str, index: int) -> None:
        self._for(campaign).sent.append(index)

    def failed(self, campaign: str, index: int, reply: str) -> None:
        self._for(campaign).failed[index] = reply[:500]

    def invalid(self, campaign: str, index: int) -> None:
        self._for(campaign).invalid.append(index)

    def deferred(self, campaign: str) -> None:
        self._for(campaign).deferred += 1

    def complete(self, completion: Completion) -> None:
        self._completions.append(completion)

    @property
    def pending(self) -> bool:
        return bool(self._acks or self._completions)

    async def flush(self) -> bool:
        """Write everything gathered so far. False (and kept for the next try) if Redis failed."""
        async with self._lock:
            if not self.pending:
                return True
            acks, self._acks = self._acks, {}
            completions, self._completions = self._completions, []
            try:
                # shield: a shutdown that cancels the flusher must not lose acknowledgements half-written.
                await asyncio.shield(self._write(acks))
            except RedisError as exc:
                self._restore(acks, completions)
                self._metrics.redis_error("ack")
                if not self._failing:
                    log.warning("acknowledgements not written yet (%s); keeping them and retrying", exc)
                self._failing = True
                return False
            if self._failing:
                log.info("acknowledgements written again")
                self._failing = False
            for i, completion in enumerate(completions):
                try:
                    owned, completed = await asyncio.shield(
                        self._store.complete_chunk(
                            completion.campaign, self._worker, completion.chunk, completion.chunks
                        )
                    )
                except RedisError as exc:
                    self._completions[:0] = completions[i:]
                    self._metrics.redis_error("complete")
                    log.warning("chunk completion not written yet (%s); retrying", exc)
                    return False
                completion.done(owned, completed)
            return True

    async def _write(self, acks: dict[str, _CampaignAcks]) -> None:
        pipe = self._store.client.pipeline(transaction=False)
        for campaign, a in acks.items():
            Store.queue_acks(pipe, campaign, a.sent, a.failed, a.invalid, a.deferred)
        await pipe.execute()

    def _restore(self, acks: dict[str, _CampaignAcks], completions: list[Completion]) -> None:
        for campaign, a in acks.items():
            newer = self._acks.get(campaign)
            self._acks[campaign] = a
            if newer is not None:
                a.merge(newer)
        self._completions[:0] = completions

    async def run(self, interval: Callable[[], float]) -> None:
        while True:
            await asyncio.sleep(interval())
            await self.flush()
