"""Background loops that never die silently.

Each loop of a sender process (coordinator, lease renewer, acknowledgement
writer, render watchdog) runs under `Supervisor.keep`: an exception is logged with
its traceback, counted, and the loop starts again after a back-off. A process
whose loops keep failing is not ready (`/readyz` answers 503), so Kubernetes
takes it out of service and a person sees why in its log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from mailtrain_sender.metrics import Metrics

log = logging.getLogger(__name__)

_FIRST_BACKOFF, _MAX_BACKOFF = 0.1, 5.0
_UNHEALTHY_CRASHES, _UNHEALTHY_WINDOW = 3, 60.0  # this many crashes within this many seconds: not ready
_CANCEL_AGAIN = 1.0  # seconds after which a loop that ignored its cancellation is cancelled again


class Supervisor:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._crashes: deque[float] = deque(maxlen=_UNHEALTHY_CRASHES)

    def keep(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._tasks[name] = asyncio.create_task(self._keep(name, loop), name=name)

    async def _keep(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        backoff = _FIRST_BACKOFF
        while True:
            started = time.monotonic()
            try:
                await loop()
                log.error("background loop %s ended on its own; starting it again", name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background loop %s failed; starting it again in %.1fs", name, backoff)
            self._metrics.loop_restarts.labels(self._metrics.pool, name).inc()
            self._crashes.append(time.monotonic())
            if time.monotonic() - started > _UNHEALTHY_WINDOW:
                backoff = _FIRST_BACKOFF  # it had been running fine for a while
            await asyncio.sleep(backoff)
            backoff = min(_MAX_BACKOFF, backoff * 2)

    @property
    def healthy(self) -> bool:
        return not (
            len(self._crashes) == _UNHEALTHY_CRASHES
            and time.monotonic() - self._crashes[0] < _UNHEALTHY_WINDOW
        )

    async def stop(self, *names: str) -> None:
        """Cancel the named loops (all of them if none is named) and wait for them to end.

        A library that swallows a cancellation (redis-py 8 did) would keep a loop running
        through shutdown, so a loop still running after a moment is cancelled again.
        """
        tasks = [self._tasks.pop(n) for n in (names or list(self._tasks)) if n in self._tasks]
        while tasks:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=_CANCEL_AGAIN)
            tasks = [t for t in tasks if not t.done()]
