"""Redis is down: say so once, count every failed call, and say once when it is back.

Every loop that talks to Redis (coordinator, leases, acknowledgements, claims,
throttle) reports here, so an outage is one warning and one recovery line in the
log rather than one line per loop per retry.
"""

from __future__ import annotations

import logging
import time

from mailtrain_sender.metrics import Metrics

log = logging.getLogger(__name__)


class RedisOutage:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._since: float | None = None  # monotonic time of the first failure of this outage

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, operation: str, exc: Exception) -> None:
        self._metrics.redis_error(operation)
        if self._since is None:
            self._since = time.monotonic()
            log.warning("Redis unavailable (%s during %s); retrying", exc, operation)

    def ok(self) -> None:
        if self._since is not None:
            log.info("Redis available again after %.1fs", time.monotonic() - self._since)
            self._since = None
