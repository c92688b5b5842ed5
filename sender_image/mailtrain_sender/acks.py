"""Acknowledgements: outcomes gathered in memory, written to Redis by group commit.

A message counts as done only once its bit is set in Redis. Writing each bit on
its own would cost a Redis call per message; here the writer flushes whatever
has gathered as soon as its previous write returned, but no more often than
every `ackInterval` (5 ms by default). One write is one round trip: one
`record_outcomes.lua` call per campaign, pipelined. So the window in which a
crash can duplicate a message the relay already accepted is one interval plus
one round trip, at most a few milliseconds, while a busy process makes at most
200 writes a second, however many messages it sends.

Chunk completions ride on the same write, after the bits they depend on. If
Redis cannot be reached, everything is kept and written when it can be; the
amount kept is bounded, because connections stop taking jobs (`room()`) while
more than `MAX_UNWRITTEN` outcomes wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from mailtrain_sender.layout import Lease, Outcomes, Recorded, Store
from mailtrain_sender.outage import RedisOutage

log = logging.getLogger(__name__)

MAX_UNWRITTEN = 50_000
# Seconds between write attempts while Redis fails. The longest gap is also how long after Redis is
# back the outcomes of the outage may still be unwritten, and so how much a crash then sends twice
# (docs/sender.md, "Delivery guarantees"): kept short, since a failing attempt costs next to nothing.
_RETRY_MIN, WRITE_RETRY_MAX = 0.05, 0.25

# Called once the completion is written: (the claim still owned the chunk, the campaign's state).
CompletionDone = Callable[[bool, str], None]


@dataclass
class _Campaign:
    chunks: int
    outcomes: Outcomes = field(default_factory=Outcomes)
    callbacks: list[CompletionDone] = field(default_factory=list)

    def merge(self, newer: _Campaign) -> None:
        self.outcomes.merge(newer.outcomes)
        self.callbacks += newer.callbacks


class AckBuffer:
    def __init__(
        self,
        store: Store,
        worker: str,
        outage: RedisOutage,
        interval: Callable[[], float],
    ) -> None:
        self._store = store
        self._worker = worker
        self._outage = outage
        self._interval = interval
        self._pending: dict[str, _Campaign] = {}
        self._count = 0
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()  # something waits to be written
        self._room = asyncio.Event()  # fewer than MAX_UNWRITTEN outcomes wait
        self._room.set()
        self._refused: set[str] = set()  # campaigns whose last write Redis refused (logged once)

    def _for(self, campaign: str, chunks: int) -> Outcomes:
        entry = self._pending.get(campaign)
        if entry is None:
            entry = self._pending[campaign] = _Campaign(chunks)
        self._count += 1
        if self._count >= MAX_UNWRITTEN:
            self._room.clear()
        self._wanted.set()
        return entry.outcomes

    def sent(self, campaign: str, chunks: int, index: int) -> None:
        self._for(campaign, chunks).sent.append(index)

    def failed(self, campaign: str, chunks: int, index: int, reply: str) -> None:
        self._for(campaign, chunks).failed[index] = reply

    def invalid(self, campaign: str, chunks: int, index: int, reason: str) -> None:
        self._for(campaign, chunks).invalid[index] = reason

    def deferred(self, campaign: str, chunks: int) -> None:
        self._for(campaign, chunks).deferred += 1

    def ambiguous(self, campaign: str, chunks: int) -> None:
        self._for(campaign, chunks).ambiguous += 1

    def complete(self, campaign: str, chunks: int, lease: Lease, done: CompletionDone) -> None:
        self._for(campaign, chunks).complete.append(lease)
        self._pending[campaign].callbacks.append(done)

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    async def room(self) -> None:
        """Wait while too many outcomes are unwritten (Redis down): backpressure on sending."""
        await self._room.wait()

    async def flush(self) -> bool:
        """Write everything gathered so far. False (and all kept for the next try) if Redis failed."""
        async with self._lock:
            if not self._pending:
                return True
            batch, self._pending = self._pending, {}
            count, self._count = self._count, 0
            try:
                # shield: a shutdown that cancels the writer must not lose a write half-way.
                recorded = await asyncio.shield(
                    self._store.record_outcomes(
                        self._worker, {c: (entry.outcomes, entry.chunks) for c, entry in batch.items()}
                    )
                )
            except BaseException as exc:
                self._restore(batch, count)
                if isinstance(exc, RedisError):
                    self._outage.failed("ack", exc)
                    return False
                raise  # a bug: the supervisor logs it and starts the writer again
            self._outage.ok()
            if self._count < MAX_UNWRITTEN:
                self._room.set()
        refused = {c: r for c, r in recorded.items() if not isinstance(r, Recorded)}
        if refused:  # kept for the next write; the other campaigns' outcomes went through
            kept = {c: batch.pop(c) for c in refused}
            async with self._lock:
                self._restore(kept, sum(len(e.outcomes) for e in kept.values()))
            for campaign, error in refused.items():
                if campaign not in self._refused:
                    log.error("Redis refuses the outcomes of campaign %s (%s); keeping them", campaign, error)
                self._refused.add(campaign)
        self._refused -= set(batch)
        for campaign, entry in batch.items():
            result = recorded[campaign]
            assert isinstance(result, Recorded)
            owned = result.owned or (False,) * len(entry.callbacks)
            for done, was_owned in zip(entry.callbacks, owned, strict=True):
                done(was_owned, result.state)
        return bool(batch) or not refused  # all refused: the writer backs off as for an outage

    def _restore(self, batch: dict[str, _Campaign], count: int) -> None:
        for campaign, entry in batch.items():
            newer = self._pending.get(campaign)
            self._pending[campaign] = entry
            if newer is not None:
                entry.merge(newer)
        self._count += count
        self._wanted.set()

    async def flush_until(self, deadline: float) -> bool:
        """Keep trying until written or `deadline` (loop time) passes (shutdown, a campaign handed over)."""
        loop = asyncio.get_running_loop()
        delay = _RETRY_MIN
        while not await self.flush():
            if loop.time() + delay > deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(WRITE_RETRY_MAX, delay * 2)
        return True

    async def run(self) -> None:
        """Group commit: write as soon as the previous write returned, at most every `ackInterval`."""
        loop = asyncio.get_running_loop()
        delay = _RETRY_MIN
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            started = loop.time()
            if not await self.flush():
                await asyncio.sleep(delay)
                delay = min(WRITE_RETRY_MAX, delay * 2)
                continue
            delay = _RETRY_MIN
            spacing = self._interval() - (loop.time() - started)
            if spacing > 0:
                await asyncio.sleep(spacing)
