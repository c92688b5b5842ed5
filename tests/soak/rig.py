"""The real components a soak runs: redis-server, the recording relay and the sender fleet.

Redis runs with `appendonly yes` and `appendfsync always`: every write is on disk before Redis
answers it, so a restart (even after SIGKILL) comes back with everything any sender or the
publisher was told had been written. The soak restarts Redis to test the senders' reconnecting,
not a Redis that forgets: a Redis that loses data is recovered by `Publisher.republish`, which
tests/sender/test_failover.py covers, and its duplicates are not the engine's to prevent.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mailtrain_sender.publisher import Publisher
from tests.harness.redis_server import RedisServer
from tests.harness.senders import DEFAULTS, SenderFleet, SenderProcess, merge
from tests.harness.smtp_sink import RecordingSink
from tests.soak import options as opt
from tests.soak.ledger import Ledger


@dataclass
class SoakRig:
    workdir: Path
    options: opt.SoakOptions
    ledger: Ledger
    redis: RedisServer = field(init=False)
    relay: RecordingSink = field(init=False)
    fleet: SenderFleet = field(init=False)
    client: Redis = field(init=False)  # the operator's: retries across Redis restarts
    sampling_client: Redis = field(init=False)  # the samplers': fails fast, a missed sample is skipped
    publisher: Publisher = field(init=False)
    redis_state: str = "up"  # up | paused | down: what the fault schedule did to it

    def start(self) -> None:
        self.redis = RedisServer(self.workdir / "redis", appendonly=True, appendfsync="always").start()
        self.relay = RecordingSink(self.workdir / "relay", record_raw=False, chaos=True).start()
        defaults = merge(DEFAULTS, opt.sender_settings(self.options.rate, self.options.cap))
        self.fleet = SenderFleet(
            self.workdir / "senders", self.redis.url, self.relay.port, opt.POOL, defaults=defaults
        )
        self.client = Redis.from_url(
            self.redis.url,
            socket_timeout=10,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), retries=30),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self.sampling_client = Redis.from_url(self.redis.url, socket_timeout=1, socket_connect_timeout=1)
        self.publisher = Publisher(self.client)
        self.ledger.throttle.append((time.time(), self.options.rate, opt.BURST))

    def next_worker_id(self) -> str:
        return f"sender-{len(self.fleet.processes)}"  # how SenderFleet numbers them

    def start_sender(self) -> SenderProcess:
        """One more sender with the pool's current settings (blocking: run it in a thread)."""
        # Recorded first: the process joins the pool before start() returns, and a rewrite of its
        # sender.toml may come while it starts.
        self.ledger.set_cap(self.next_worker_id(), int(self.fleet.defaults["queue"]["maxParallelCampaigns"]))
        [process] = self.fleet.start(1)
        return process

    def pool_settings(self) -> dict[str, Any]:
        return copy.deepcopy(self.fleet.defaults)

    def rewrite_config(self, change: dict[str, Any], only: SenderProcess | None = None) -> None:
        """A sender.toml change for one process, or for the pool: every process, also those starting
        (whose file is written again when they start) and those started later."""
        if only is None:
            self.fleet.defaults = merge(self.fleet.defaults, change)
            targets = [p for p in self.fleet.processes if p.process is None or p.process.poll() is None]
        else:
            targets = [only]
        now = time.time()
        for process in targets:
            process.write_config(merge(process.settings, change))
            if "queue" in change:
                self.ledger.set_cap(process.worker_id, int(change["queue"]["maxParallelCampaigns"]), at=now)

    async def stop(self) -> None:
        """Stop whatever was started, senders first (they leave the pool through Redis)."""
        for client in (getattr(self, "client", None), getattr(self, "sampling_client", None)):
            if client is not None:
                await client.aclose()
        if hasattr(self, "fleet"):
            self.fleet.stop_all()
        if hasattr(self, "relay"):
            self.relay.stop()
        if hasattr(self, "redis"):
            self.redis.stop()
