"""The client side of the pool-wide token bucket (throttling.messagesPerSecond).

Mailtrain and listmonk throttle each process on its own, so N processes send N
times the relay's limit. Here every process takes its tokens from one bucket in
Redis (`take_tokens.lua`). A process asks only for as many tokens as it has
connections waiting right now, in one round trip, so it never hoards tokens that
another process could use and the pool never exceeds rate + burst in any window.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from mailtrain_sender.config import ThrottlingSection
from mailtrain_sender.layout import Store
from mailtrain_sender.metrics import Metrics

log = logging.getLogger(__name__)

_MAX_SLEEP = 0.25  # re-ask at least this often, so a raised limit takes effect quickly
_REDIS_RETRY = 0.5


class Throttle:
    def __init__(self, store: Store, pool: str, settings: ThrottlingSection, metrics: Metrics) -> None:
        self._store = store
        self._pool = pool
        self._metrics = metrics
        self._tokens = 0
        self._waiting = 0
        self._lock = asyncio.Lock()
        self.update(settings)

    def update(self, settings: ThrottlingSection) -> None:
        self.rate = settings.messages_per_second
        self.burst = settings.effective_burst

    async def acquire(self) -> None:
        """Wait for one token (at once when throttling is off)."""
        if self.rate <= 0:
            return
        self._waiting += 1
        try:
            # One request to Redis at a time per process; it asks for every waiter at once.
            async with self._lock:
                started = time.monotonic()
                while self._tokens == 0 and self.rate > 0:
                    await self._refill()
                waited = time.monotonic() - started
                if waited > 0.001:
                    self._metrics.throttle_wait.inc(waited)
                if self._tokens > 0:
                    self._tokens -= 1
        finally:
            self._waiting -= 1

    async def _refill(self) -> None:
        try:
            granted, wait = await self._store.take_tokens(
                self._pool, self.rate, self.burst, max(1, self._waiting)
            )
        except RedisError as exc:
            self._metrics.redis_error("throttle")
            log.warning("throttle: Redis unavailable (%s); holding messages until it answers", exc)
            await asyncio.sleep(_REDIS_RETRY)
            return
        self._tokens += granted
        if granted == 0:
            await asyncio.sleep(min(max(wait, 0.001), _MAX_SLEEP))
