"""Redis is down: say so once, count every failed call, and say once when it is back.

Every loop that talks to Redis (coordinator, leases, acknowledgements, claims,
throttle) reports here after each call, so an outage is one warning and one
recovery line in the log rather than one line per loop per retry.

It is also where a loop notices that it was cancelled: redis-py swallows a
cancellation that arrives while a command waits for its reply under a socket
timeout, returning normally or raising a Redis error instead. A loop that then
went on would survive its process's shutdown (tests/sender/test_redis_client.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from mailtrain_sender.metrics import Metrics

log = logging.getLogger(__name__)


def _honour_cancellation() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError("cancelled during a Redis call")


class RedisOutage:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._since: float | None = None  # monotonic time of the first failure of this outage

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, operation: str, exc: Exception) -> None:
        _honour_cancellation()
        self._metrics.redis_error(operation)
        if self._since is None:
            self._since = time.monotonic()
            log.warning("Redis unavailable (%s during %s); retrying", exc, operation)

    def ok(self) -> None:
        _honour_cancellation()
        if self._since is not None:
            log.info("Redis available again after %.1fs", time.monotonic() - self._since)
            self._since = None
