"""An aiohttp web server on loopback, in a thread with its own event loop, serving recipient lists.

Its own thread, so that the code under test has the test's event loop to itself: a loop monitor
there measures the loader, not the server. Handlers that stall wait for `stop()`, never for a
sleep that a slow machine could outlast.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from aiohttp import web

from tests.harness.net import LOOPBACK

Setup = Callable[[web.Application, asyncio.Event], None]


class ListServer:
    def __init__(self, setup: Setup) -> None:
        self._setup = setup
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="list-server", daemon=True)
        self._released: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    async def _start(self) -> None:
        self._released = asyncio.Event()
        app = web.Application()
        self._setup(app, self._released)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _stop(self) -> None:
        assert self._released is not None and self._runner is not None
        self._released.set()
        await self._runner.cleanup()

    def start(self) -> ListServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
