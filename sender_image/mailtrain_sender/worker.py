"""One sender process: the loops that tie Redis, the campaigns and the SMTP pool together.

    coordinator   every rebalanceInterval: heartbeat + assignment (rebalance.lua);
                  starts a CampaignRunner for each campaign given to this process,
                  winds down those taken away (or that ended on their own)
    leases        every leaseTtl/3: renews, in one round trip, every chunk held by a
                  running runner or one winding down
    acks          group commit of outcomes (acks.py)
    dispatcher    hands the SMTP connections the campaigns' messages in turn (dispatch.py)
    SMTP pool     maxConnections connections (smtp_pool.py)
    renderer      a watchdog thread that interrupts a message rendering for too long (renderer.py)
    config        sender.toml re-read when it changes (reload.py)

A runner taken away stops handing out messages at once; its transactions in
flight finish while its leases are still renewed; then its outcomes are written
and its chunks released, so the next holder starts at once and skips nobody.

SIGTERM: stop claiming; let transactions in flight finish (at most
shutdownGrace, renewing their leases meanwhile); cut off what is left; write the
outcomes; release the chunks; leave the pool; exit 0.
"""

from __future__ import annotations

import asyncio
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
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mailtrain_sender.acks import AckBuffer
from mailtrain_sender.campaigns import CampaignRunner, RunnerContext, RunnerSettings
from mailtrain_sender.config import Secrets, SenderConfig, restart_settings
from mailtrain_sender.dispatch import Dispatcher
from mailtrain_sender.layout import MISSING, TERMINAL, Store
from mailtrain_sender.metrics import Metrics
from mailtrain_sender.outage import RedisOutage
from mailtrain_sender.renderer import RenderPool
from mailtrain_sender.smtp_pool import SmtpPool
from mailtrain_sender.supervisor import Supervisor
from mailtrain_sender.throttle import Throttle

log = logging.getLogger(__name__)
_FORGET_METRICS_AFTER = 600.0  # seconds a finished campaign's series stay on /metrics
_RESTART_BACKOFF = (0.5, 30.0)  # a campaign whose runner ended but that is still assigned waits this long
_FLUSH_AT_SHUTDOWN = 5.0  # seconds after shutdownGrace for the last outcomes and releases
_LEAVE_TIMEOUT = 2.0


class FatalError(Exception):
    """The process cannot work with this Redis (one line for the log; exit code 2)."""


def redis_client(config: SenderConfig, secrets: Secrets) -> Redis:
    password = secrets.redis_password.get_secret_value() if secrets.redis_password else None
    # A password in MAILTRAIN_REDIS_URL wins over MAILTRAIN_REDIS_PASSWORD (redis-py's rule).
    url = secrets.redis_url.get_secret_value() if secrets.redis_url else config.redis.url
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
        self.outage = RedisOutage(self.metrics)
        self.supervisor = Supervisor(self.metrics)
        self.dispatcher = Dispatcher()
        self.renderer = RenderPool()
        self.acks = AckBuffer(
            self.store,
            self.id,
            self.outage,
            lambda: self.config.worker.ack_interval,
        )
        self.throttle = Throttle(self.store, self.pool, config.smtp.throttling, self.metrics, self.outage)
        self.smtp = SmtpPool(
            config.smtp, secrets, self.id, self.dispatcher, self.throttle, self.metrics, self.acks.room
        )
        self.context = RunnerContext(
            worker_id=self.id,
            store=self.store,
            acks=self.acks,
            renderer=self.renderer,
            outage=self.outage,
            metrics=self.metrics,
            settings=self._runner_settings,
            relay_wait=lambda: self.smtp.relay_retry_in,
            jobs_ready=self.dispatcher.notify,
            ended=self._runner_ended,
        )
        self.runners: dict[str, CampaignRunner] = {}  # working on the campaigns assigned to us
        self.winding_down: set[CampaignRunner] = set()  # stopped; in flight, outcomes or leases left
        self._not_before: dict[str, tuple[int, float]] = {}  # campaign -> (restarts, monotonic time)
        self.last_heartbeat = 0.0  # monotonic time of the last successful rebalance
        self._health_written = 0.0  # monotonic time of the last heartbeat key and health file
        self.stopping = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()  # held here: asyncio keeps only weak references

    def _runner_settings(self) -> RunnerSettings:
        cfg = self.config
        share = cfg.worker.queue_size // max(1, len(self.runners))
        return RunnerSettings(
            lease_ttl=cfg.worker.lease_ttl,
            max_attempts=cfg.smtp.retry.max_attempts,
            backoff=cfg.smtp.retry.backoff,
            max_backoff=cfg.smtp.retry.max_backoff,
            ready_cap=max(16, min(256, share)),
        )

    # -- wiring ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `stopping` is set, then shut down gracefully. FatalError: this Redis cannot be used."""
        log.info("sender %s joining pool %s", self.id, self.pool)
        await self._check_redis()
        self.smtp.start()
        self.supervisor.keep("coordinator", self._coordinate)
        self.supervisor.keep("leases", self._renew_leases)
        self.supervisor.keep("acks", self.acks.run)
        await self.stopping.wait()
        await self._shutdown()

    async def _check_redis(self) -> None:
        """An evicted key loses recipients: refuse any eviction policy but noeviction."""
        while not self.stopping.is_set():
            try:
                policy = await self.store.eviction_policy()
            except ResponseError as exc:  # CONFIG is disabled on some managed services
                log.warning("cannot read Redis's maxmemory-policy (%s); it must be noeviction", exc)
                return
            except RedisError as exc:
                self.outage.failed("start", exc)
                await asyncio.sleep(1.0)
                continue
            self.outage.ok()
            if policy is not None and policy != "noeviction":
                raise FatalError(
                    f"Redis evicts keys (maxmemory-policy {policy}), which would lose recipients; "
                    "set maxmemory-policy noeviction on the Redis the pool uses"
                )
            return

    def apply_config(self, new: SenderConfig) -> None:
        """A reloaded sender.toml: limits, throttle and pool size change now; transactions in flight don't."""
        old = self.config
        before, after = restart_settings(old), restart_settings(new)
        restart_needed = [name for name in before if before[name] != after[name]]
        if restart_needed:
            log.warning("changes to %s take effect at the next restart", ", ".join(restart_needed))
        self.config = new.model_copy(update={"redis": old.redis})
        self.throttle.update(new.smtp.throttling)
        self.smtp.update(new.smtp)
        log.info(
            "configuration reloaded: maxParallelCampaigns=%d maxConnections=%d messagesPerSecond=%g",
            new.queue.max_parallel_campaigns,
            new.smtp.max_connections,
            new.smtp.throttling.messages_per_second,
        )

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run in the background; shutdown waits for it (bounded). A failure is logged, not lost."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    # -- coordinator ---------------------------------------------------------------------------------------

    async def _coordinate(self) -> None:
        while True:
            try:
                await self._rebalance()
            except RedisError as exc:
                self.outage.failed("rebalance", exc)
            await asyncio.sleep(self.config.worker.rebalance_interval)

    async def _rebalance(self) -> None:
        cfg = self.config
        ttl_ms = int(cfg.worker.lease_ttl * 1000)
        assignment = await self.store.rebalance(self.pool, self.id, cfg.queue.max_parallel_campaigns, ttl_ms)
        self.outage.ok()
        self.last_heartbeat = time.monotonic()
        self.metrics.worker_expiries.inc(assignment.expired)
        self.metrics.live_workers.set(assignment.workers)
        wanted = set(assignment.campaigns)
        for campaign in [c for c in self.runners if c not in wanted]:
            self._wind_down(self.runners.pop(campaign))
        now = time.monotonic()
        for campaign in assignment.campaigns:
            if campaign not in self.runners and self._not_before.get(campaign, (0, 0.0))[1] <= now:
                runner = self.runners[campaign] = CampaignRunner(self.context, campaign)
                self.dispatcher.add(runner)
                runner.start()
                self.metrics.campaign_claims.inc()
        for campaign in [c for c in self._not_before if c not in wanted]:
            del self._not_before[campaign]
        self.metrics.campaigns.set(len(self.runners))
        if time.monotonic() - self._health_written > cfg.worker.lease_ttl / 3:
            await self._write_health(tuple(self.runners))

    def _runner_ended(self, runner: CampaignRunner) -> None:
        """A runner stopped on its own: the campaign finished, paused, failed or vanished, or it crashed."""
        if self.runners.get(runner.id) is runner:
            del self.runners[runner.id]
            self.metrics.campaigns.set(len(self.runners))
        self._wind_down(runner)
        if runner.state in TERMINAL or runner.state == MISSING:
            self.spawn(self._retire(runner.id))
        else:  # paused (an interrupted pause leaves it in the registry), or crashed: not again at once
            restarts, _ = self._not_before.get(runner.id, (0, 0.0))
            delay = min(_RESTART_BACKOFF[1], _RESTART_BACKOFF[0] * 2**restarts)
            self._not_before[runner.id] = (restarts + 1, time.monotonic() + delay)

    def _wind_down(self, runner: CampaignRunner) -> None:
        runner.stop()
        self.dispatcher.remove(runner)
        self.winding_down.add(runner)
        self.spawn(self._release(runner))

    async def _release(self, runner: CampaignRunner) -> None:
        # Order matters: transactions in flight end (their leases renewed meanwhile), their
        # outcomes are written, and only then do the chunks go back, so the next holder skips them.
        try:
            await runner.drained()
            if not await self.acks.flush_until(asyncio.get_running_loop().time() + 3600):
                return  # the leases expire on their own
            try:
                await self.store.release_chunks(runner.id, self.id, runner.releasable())
            except RedisError as exc:
                self.outage.failed("release", exc)  # the leases expire on their own
        finally:
            self.winding_down.discard(runner)
            asyncio.get_running_loop().call_later(_FORGET_METRICS_AFTER, self._forget, runner.name)

    def _forget(self, name: str) -> None:
        if all(r.name != name for r in self.runners.values()):
            self.metrics.forget_campaign(name)

    async def _retire(self, campaign: str) -> None:
        """Finished or deleted: out of the pool's registry (idempotent)."""
        try:
            await self.store.retire(self.pool, campaign)
        except RedisError as exc:
            self.outage.failed("retire", exc)  # the next runner for it ends at once and retries this

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
        try:  # the probe then reports the stale file
            tmp.write_text(json.dumps(payload))
            tmp.replace(path)
        except OSError:
            pass

    # -- leases --------------------------------------------------------------------------------------------

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.config.worker.lease_ttl / 3)
            await self.renew_once()

    async def renew_once(self) -> None:
        """One round trip for every chunk held by a runner, running or winding down."""
        ttl = self.config.worker.lease_ttl
        held = [(r, r.leases()) for r in (*self.runners.values(), *self.winding_down)]
        held = [(runner, leases) for runner, leases in held if leases]
        if not held:
            return
        started = time.monotonic()
        try:
            replies = await self.store.renew_leases(
                self.id, int(ttl * 1000), [(runner.id, leases) for runner, leases in held]
            )
        except RedisError as exc:
            self.outage.failed("renew", exc)
            return
        self.outage.ok()
        for (runner, leases), (state, lost) in zip(held, replies, strict=True):
            runner.renewed(started, ttl, state, lost, leases)

    # -- shutdown ------------------------------------------------------------------------------------------

    def ready(self) -> bool:
        return (
            not self.stopping.is_set()
            and time.monotonic() - self.last_heartbeat < self.config.worker.lease_ttl
            and self.supervisor.healthy
        )

    async def _shutdown(self) -> None:
        grace = self.config.worker.shutdown_grace
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.info("shutting down: finishing messages in flight (at most %.0fs)", grace)
        await self.supervisor.stop("coordinator")
        for runner in list(self.runners.values()):
            self._wind_down(runner)
        self.runners.clear()
        # The lease renewer and the acknowledgement writer keep running through all this.
        cut_off = await self.smtp.close(grace)
        if cut_off:
            log.warning("shutdown: %d transactions still in flight after %.0fs were cut off", cut_off, grace)
        # What is left (outcomes, releases, leaving the pool) gets a few seconds, whatever the grace used.
        deadline = loop.time() + _FLUSH_AT_SHUTDOWN
        if not await self.acks.flush_until(deadline):
            log.warning("shutdown: the last outcomes could not be written; their recipients may go out again")
        if self._background:  # releases, retirements
            _, late = await asyncio.wait(self._background, timeout=max(0.1, deadline - loop.time()))
            for task in late:
                task.cancel()
        await self.supervisor.stop()
        # Leaving hands our campaigns over at once; if Redis does not answer soon, our heartbeat expires.
        leave = asyncio.create_task(self.store.rebalance(self.pool, self.id, 0, 0, leaving=True))
        await asyncio.wait({leave}, timeout=_LEAVE_TIMEOUT)
        if not leave.done():
            leave.cancel()
        elif not leave.cancelled() and isinstance(leave.exception(), RedisError):
            log.info("could not leave the pool (%s); our heartbeat expires on its own", leave.exception())
        self.renderer.close()
        await self.client.aclose()
        log.info("stopped after %.1fs", loop.time() - started)
