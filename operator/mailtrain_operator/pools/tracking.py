"""Per pool, in this operator process's memory: what the last reconcile did, and a way to wake the
pool's status loop at once (after a reconcile, or when its Deployment changed) instead of at its next
interval. Keyed by the pool's uid, so a pool deleted and created again under the same name starts
afresh. Lost on restart, by design: the resume handler reconciles every pool again first.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from mailtrain_operator.pools.status import Problem


@dataclass
class PoolTrack:
    handled_generation: int | None = None  # None until this process has reconciled the pool
    refusal: Problem | None = None  # why that generation was not applied (the spec, for good)
    failure: Problem | None = None  # why applying it failed (for now: it is being retried)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def handled(self, generation: int, refusal: Problem | None) -> None:
        self.handled_generation, self.refusal, self.failure = generation, refusal, None
        self.wake.set()

    def failed(self, generation: int, failure: Problem) -> None:
        self.handled_generation, self.refusal, self.failure = generation, None, failure
        self.wake.set()

    async def sleep(self, seconds: float) -> None:
        """Until woken, or `seconds` passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)
        self.wake.clear()


class PoolTracks:
    def __init__(self) -> None:
        self._by_uid: dict[str, PoolTrack] = {}

    def get(self, uid: str) -> PoolTrack:
        return self._by_uid.setdefault(uid, PoolTrack())

    def wake(self, uid: str) -> None:
        track = self._by_uid.get(uid)
        if track is not None:
            track.wake.set()

    def forget(self, uid: str) -> None:
        self._by_uid.pop(uid, None)
