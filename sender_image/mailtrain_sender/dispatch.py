"""Which message goes out next: the campaigns of a process take turns.

Every SMTP connection asks the dispatcher for its next job; the dispatcher goes
round the process's campaigns and takes one ready message from the next campaign
that has one. So each campaign a process works on gets an equal share of its
connections, whatever its backlog, its chunk size or the order in which the
campaigns arrived: a campaign assigned a moment ago sends its first message at
the next free connection. (Priority decides which campaigns run when there are
more than the pool's capacity, in rebalance.lua; among those running, turns are
equal.)
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from mailtrain_sender.smtp_pool import Job


class JobSource(Protocol):
    def take(self) -> Job | None:
        """The next ready job, or None when there is none right now."""


class Dispatcher:
    def __init__(self) -> None:
        self._sources: list[JobSource] = []
        self._turn = 0
        self._ready = asyncio.Event()

    def add(self, source: JobSource) -> None:
        self._sources.append(source)
        self._ready.set()

    def remove(self, source: JobSource) -> None:
        if source not in self._sources:
            return
        index = self._sources.index(source)
        del self._sources[index]
        if index < self._turn:
            self._turn -= 1

    def notify(self) -> None:
        """A source has new jobs."""
        self._ready.set()

    def _take(self) -> Job | None:
        count = len(self._sources)
        for step in range(count):
            index = (self._turn + step) % count
            job = self._sources[index].take()
            if job is not None:
                self._turn = (index + 1) % count
                return job
        return None

    async def get(self) -> Job:
        while True:
            job = self._take()
            if job is not None:
                return job
            self._ready.clear()
            job = self._take()  # a source may have filled up between the two
            if job is not None:
                return job
            await self._ready.wait()
