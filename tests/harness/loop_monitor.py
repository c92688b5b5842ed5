"""How long other code held the event loop: what every other reconcile would have waited.

A task wakes every millisecond and measures, between two of its turns, the wall-clock time
(what a waiting coroutine feels) and the CPU time of the loop's own thread (what the code on the
loop spent). On a shared machine the wall-clock figure includes the moments the OS ran other
processes and the waits for the GIL; the CPU figure does not, so it is the one to hold code to.
The longest garbage collection is kept too: it holds the loop wherever it strikes, and its
length depends on every object of the process, not only on the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from types import TracebackType


class LoopMonitor:
    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.worst_wall = 0.0  # seconds between two turns beyond the interval
        self.worst_cpu = 0.0  # CPU seconds of the loop's thread between two turns
        self.worst_gc = 0.0  # seconds of the longest garbage collection
        self.turns = 0
        self._task: asyncio.Task[None] | None = None
        self._gc_started = 0.0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.worst_gc = max(self.worst_gc, time.perf_counter() - self._gc_started)

    async def _watch(self) -> None:
        wall, cpu = time.monotonic(), time.thread_time()
        while True:
            await asyncio.sleep(self.interval)
            now_wall, now_cpu = time.monotonic(), time.thread_time()
            self.worst_wall = max(self.worst_wall, now_wall - wall - self.interval)
            self.worst_cpu = max(self.worst_cpu, now_cpu - cpu)
            self.turns += 1
            wall, cpu = now_wall, now_cpu

    async def __aenter__(self) -> LoopMonitor:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.create_task(self._watch())
        await asyncio.sleep(0)  # let it take its first reading
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        gc.callbacks.remove(self._on_gc)
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
