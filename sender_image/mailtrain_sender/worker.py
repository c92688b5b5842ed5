"""One sender process: the loops that tie Redis, the campaigns and the SMTP pool together.

    coordinator   every rebalanceInterval: heartbeat + assignment (rebalance.lua);
                  starts a CampaignRunner for each campaign given to this process,
                  stops those taken away
    lease renewer every leaseTtl/3: extends the leases of the chunks held
    ack flusher   every ackInterval: writes acknowledgements (acks.py)
    SMTP pool     maxConnections tasks taking jobs from one bounded queue
    config        sender.toml re-read when it changes (reload.py)

SIGTERM: stop claiming, drop what is queued, let transactions in flight finish
(at most shutdownGrace), write the last acknowledgements, release every lease so
other processes take the chunks over at once, leave the pool, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mailtrain_sender.acks import AckBuffer
from mailtrain_sender.campaigns import CampaignRunner, SendJob
from mailtrain_sender.config import Secrets, SenderConfig
from mailtrain_sender.layout import Store
from mailtrain_sender.metrics import Metrics
from mailtrain_sender.smtp_pool import Job, SmtpPool
from mailtrain_sender.throttle import Throttle

log = logging.getLogger(__name__)
_FORGET_METRICS_AFTER = 600.0  # seconds a finished campaign's series stay on /metrics


def redis_client(config: SenderConfig, secrets: Secrets) -> Redis:
    password = secrets.redis_password.get_secret_value() if secrets.redis_password else None
    url = config.redis.url
    if config.redis.db is not None:
        url = urlunsplit(urlsplit(url)._replace(path=f"/{config.redis.db}"))
    return Redis.from_url(
        url,
        password=password,
        socket_timeout=5,
        socket_connect_timeout=5,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


class Worker:
    def __init__(self, config: SenderConfig, secrets: Secrets, client: Redis | None = None) -> None:
        self.config = config
        self.id = config.worker_id
        self.pool = config.worker.pool
        self.client = client or redis_client(config, secrets)
        self.store = Store(self.client)
        self.metrics = Metrics(self.pool)
        self.queue: asyncio.Queue[Job] = asyncio.Queue(config.worker.queue_size)
        self.acks = AckBuffer(self.store, self.id, self.metrics)
        self.throttle = Throttle(self.store, self.pool, config.smtp.throttling, self.metrics)
        self.smtp = SmtpPool(config.smtp, secrets, self.id, self.queue, self.throttle, self.metrics)
        self.runners: dict[str, CampaignRunner] = {}
        self.last_heartbeat = 0.0  # monotonic time of the last successful rebalance
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._redis_failing = False
        self._health_written = 0.0  # monotonic time of the last heartbeat key and health file
        self._background: set[asyncio.Task[None]] = set()  # held here: asyncio keeps only weak references

    # -- wiring ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `stopping` is set, then shut down gracefully."""
        log.info("sender %s joining pool %s", self.id, self.pool)
        self.smtp.start()
        loops = (
            self._coordinate(),
            self._renew_leases(),
            self.acks.run(lambda: self.config.worker.ack_interval),
        )
        self._tasks = [asyncio.create_task(loop) for loop in loops]
        await self.stopping.wait()
        await self._shutdown()

    def apply_config(self, new: SenderConfig) -> None:
        """A reloaded sender.toml: limits, throttle and pool size change now; transactions in flight don't."""
        restart_needed = [
            name
            for name, old, fresh in (
                ("redis", self.config.redis, new.redis),
                ("worker.pool", self.pool, new.worker.pool),
                ("worker.listen", self.config.worker.listen, new.worker.listen),
            )
            if old != fresh
        ]
        if restart_needed:
            log.warning("changes to %s take effect at the next restart", ", ".join(restart_needed))
        self.config = new.model_copy(update={"redis": self.config.redis})
        self.throttle.update(new.smtp.throttling)
        self.smtp.update(new.smtp)
        log.info(
            "configuration reloaded: maxParallelCampaigns=%d maxConnections=%d messagesPerSecond=%g",
            new.queue.max_parallel_campaigns,
            new.smtp.max_connections,
            new.smtp.throttling.messages_per_second,
        )

    def redis_error(self, operation: str, exc: Exception) -> None:
        self.metrics.redis_error(operation)
        if not self._redis_failing:
            log.warning("Redis unavailable during %s (%s); retrying", operation, exc)
        self._redis_failing = True

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run in the background; shutdown waits for it."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def relay_wait(self) -> float:
        return self.smtp.relay_retry_in

    def requeue_later(self, job: SendJob, delay: float) -> None:
        def put() -> None:
            self._timers.discard(handle)
            if not job.runner.may_send(job.chunk):
                return
            try:
                self.queue.put_nowait(job)
            except asyncio.QueueFull:
                self.spawn(self.queue.put(job))

        handle = asyncio.get_running_loop().call_later(delay, put)
        self._timers.add(handle)

    # -- coordinator ---------------------------------------------------------------------------------------

    async def _coordinate(self) -> None:
        while True:
            try:
                await self._rebalance()
            except RedisError as exc:
                self.redis_error("rebalance", exc)
            await asyncio.sleep(self.config.worker.rebalance_interval)

    async def _rebalance(self) -> None:
        cfg = self.config
        ttl_ms = int(cfg.worker.lease_ttl * 1000)
        assignment = await self.store.rebalance(self.pool, self.id, cfg.queue.max_parallel_campaigns, ttl_ms)
        if self._redis_failing:
            log.info("Redis available again")
            self._redis_failing = False
        self.last_heartbeat = time.monotonic()
        self.metrics.worker_expiries.inc(assignment.expired)
        self.metrics.live_workers.set(assignment.workers)
        wanted = set(assignment.campaigns)
        for campaign in [c for c, r in self.runners.items() if c not in wanted or r.done]:
            # In the background: waiting for a slow transaction must not delay the heartbeat.
            self.spawn(self._stop_runner(campaign, self.config.smtp.timeout))
        for campaign in assignment.campaigns:
            if campaign not in self.runners:
                runner = self.runners[campaign] = CampaignRunner(self, campaign)
                runner.start()
                self.metrics.campaign_claims.inc()
        self.metrics.campaigns.set(len(self.runners))
        if time.monotonic() - self._health_written > cfg.worker.lease_ttl / 3:
            await self._write_health(assignment.campaigns)

    async def _stop_runner(self, campaign: str, grace: float) -> None:
        # Its chunks stay leased to this process until released below, so a new runner for the
        # same campaign (assigned back meanwhile) cannot be holding any of them.
        runner = self.runners.pop(campaign)
        await runner.stop(grace)
        # The last acknowledgements go first, so whoever takes the chunks over skips them.
        await self.acks.flush()
        try:
            await self.store.release_chunks(campaign, self.id, runner.held_chunks())
        except RedisError as exc:
            self.redis_error("release", exc)  # the leases expire on their own
        asyncio.get_running_loop().call_later(_FORGET_METRICS_AFTER, self._forget, runner.name)

    def _forget(self, name: str) -> None:
        if all(r.name != name for r in self.runners.values()):
            self.metrics.forget_campaign(name)

    async def retire(self, campaign: str) -> None:
        """The campaign is complete: take it out of the pool's registry (idempotent)."""
        try:
            await self.store.retire(self.pool, campaign)
        except RedisError as exc:
            self.redis_error("retire", exc)

    async def _write_health(self, campaigns: tuple[str, ...]) -> None:
        payload = {
            "worker": self.id,
            "pool": self.pool,
            "pid": os.getpid(),
            "campaigns": list(campaigns),
            "time": time.time(),
        }
        await self.store.set_heartbeat(self.pool, self.id, payload, self.config.worker.lease_ttl)
        self._health_written = time.monotonic()
        path = Path(self.config.worker.health_file)
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):  # the probe then reports the stale file
            tmp.write_text(json.dumps(payload))
            tmp.replace(path)

    # -- leases --------------------------------------------------------------------------------------------

    async def _renew_leases(self) -> None:
        while True:
            ttl = self.config.worker.lease_ttl
            await asyncio.sleep(ttl / 3)
            for runner in list(self.runners.values()):
                held = runner.held_chunks()
                if not held and runner.active:
                    continue
                started = time.monotonic()
                try:
                    state, lost = await self.store.renew_leases(runner.id, self.id, int(ttl * 1000), held)
                except RedisError as exc:
                    self.redis_error("renew", exc)
                    continue
                runner.renewed(started, ttl, state, lost)

    # -- shutdown ------------------------------------------------------------------------------------------

    def ready(self) -> bool:
        return (
            not self.stopping.is_set()
            and time.monotonic() - self.last_heartbeat < self.config.worker.lease_ttl
        )

    async def _shutdown(self) -> None:
        grace = self.config.worker.shutdown_grace
        started = time.monotonic()
        log.info("shutting down: finishing messages in flight (at most %.0fs)", grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for handle in self._timers:
            handle.cancel()
        for runner in self.runners.values():
            runner.active = False
        while not self.queue.empty():  # queued, never started: they stay pending for whoever comes next
            self.queue.get_nowait()
        await self.smtp.close(grace)
        await self.acks.flush()
        for campaign in list(self.runners):
            await self._stop_runner(campaign, 0)
        if self._background:  # runners still winding down, retirements, requeues
            _, late = await asyncio.wait(self._background, timeout=grace)
            for task in late:
                task.cancel()
        try:
            await self.store.rebalance(self.pool, self.id, 0, 0, leaving=True)
        except RedisError as exc:
            self.redis_error("leave", exc)
        await self.client.aclose()
        log.info("stopped after %.1fs", time.monotonic() - started)
