"""The client side of the pool-wide token bucket (throttling.messagesPerSecond).

Mailtrain and listmonk throttle each process on its own, so N processes send N
times the relay's limit. Here every process reserves its tokens from one bucket
in Redis (`take_tokens.lua`), which answers with the moment each token may be
used; a connection waits for its moment and sends. One round trip reserves a
batch: 50 ms of the rate (at most half the burst), or as many as there are
connections waiting if that is more. So the cost is a round trip per batch, not
per message, and no process polls.

A reserved token that nobody used within `_STALE` of its moment is dropped, and
the bucket given to Redis is smaller than `burst` by what could be used that
late, so no window of T seconds ever carries more than rate x T + burst.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque

from redis.exceptions import RedisError

from mailtrain_sender.config import ThrottlingSection
from mailtrain_sender.layout import Store
from mailtrain_sender.metrics import Metrics
from mailtrain_sender.outage import RedisOutage

log = logging.getLogger(__name__)

_BATCH_SECONDS = 0.05  # reserve this much of the rate per round trip (at most half the burst)
_STALE = 0.01  # seconds a reserved token stays usable after its moment
_REDIS_RETRY = 0.5


class Throttle:
    def __init__(
        self, store: Store, pool: str, settings: ThrottlingSection, metrics: Metrics, outage: RedisOutage
    ) -> None:
        self._store = store
        self._pool = pool
        self._metrics = metrics
        self._outage = outage
        self._slots: deque[float] = deque()  # loop times at which reserved tokens become usable
        self._waiting = 0
        self._lock = asyncio.Lock()
        self.update(settings)

    def update(self, settings: ThrottlingSection) -> None:
        self.rate = settings.messages_per_second
        self.burst = settings.effective_burst
        self._bucket = max(1, self.burst - math.ceil(self.rate * _STALE))
        self._batch = max(1, min(self.burst // 2, math.ceil(self.rate * _BATCH_SECONDS)))
        self._slots.clear()  # reserved under the old rate; the bucket itself carries on

    async def acquire(self) -> None:
        """Wait until this connection may send one message (at once when throttling is off)."""
        if self.rate <= 0:
            return
        self._waiting += 1
        try:
            slot = await self._next_slot()
        finally:
            self._waiting -= 1
        delay = slot - asyncio.get_running_loop().time()
        if delay > 0:
            self._metrics.throttle_wait.inc(delay)
            await asyncio.sleep(delay)

    async def _next_slot(self) -> float:
        loop = asyncio.get_running_loop()
        while True:
            while self._slots and self._slots[0] < loop.time() - _STALE:
                self._slots.popleft()
            if self._slots:
                return self._slots.popleft()
            async with self._lock:  # one reservation at a time, for everyone waiting
                if not self._slots and self.rate > 0:
                    await self._reserve(max(self._waiting, self._batch))
            if self.rate <= 0:
                return loop.time()

    async def _reserve(self, want: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            delays = await self._store.take_tokens(self._pool, self.rate, self._bucket, want)
        except RedisError as exc:  # messages wait for their tokens until Redis answers
            self._outage.failed("throttle", exc)
            await asyncio.sleep(_REDIS_RETRY)
            return
        self._outage.ok()
        self._metrics.throttle_requests.inc()
        # Counted from when the answer arrived: a token may be used a little late, never early.
        received = loop.time()
        self._slots.extend(received + delay for delay in delays)
