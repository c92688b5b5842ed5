"""Background loops that talk to Redis stop when they are told to, every time.

redis-py swallows an asyncio cancellation that arrives while a command waits for
its reply under a socket timeout (7.x with `socket_timeout` set, which the sender
needs; 8.0 and 8.1 even without one, and they also leak the connection). A
sender's coordinator once survived its own shutdown that way and kept sending for
20 s after SIGTERM (found by the soak). Loops now notice the cancellation at
their next report to RedisOutage, and `Supervisor.stop` cancels again until the
loop has ended. This test stops a real Worker's coordinator, made to call Redis
without pause, 30 times.
"""

from __future__ import annotations

import asyncio
import random
import time

from mailtrain_sender.config import Secrets, parse_config
from mailtrain_sender.worker import Worker


async def test_the_coordinator_stops_when_told_however_busy_with_redis(redis_url: str) -> None:
    config = parse_config(
        f'[redis]\nurl = "{redis_url}"\n[smtp]\nhost = "relay.example"\n'
        '[worker]\nrebalanceInterval = 0.0001\npool = "cancel-pool"\n'
    )
    worker = Worker(config, Secrets())
    rnd = random.Random(5)
    try:
        slowest = 0.0
        for _ in range(30):
            worker.supervisor.keep("coordinator", worker._coordinate)
            await asyncio.sleep(rnd.uniform(0.001, 0.01))
            started = time.monotonic()
            await asyncio.wait_for(worker.supervisor.stop("coordinator"), 10)
            slowest = max(slowest, time.monotonic() - started)
        # Each stop takes one cancellation: a re-cancel (after 1 s) would show here.
        assert slowest < 0.5, slowest
    finally:
        worker.renderer.close()
        await worker.client.aclose()
