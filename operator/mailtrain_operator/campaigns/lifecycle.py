"""One campaign's driver: from spec to Redis, and from Redis to status, one step at a time.

Each step reads the object as kopf last saw it (a live view), decides, acts on Redis through the
Publisher, and writes the status only if it changed (`status.write_delay`). Then it waits: for
its progress interval while published, until `startAt`, or until woken (its spec changed, its
pool appeared). A Completed campaign, or one a sender failed, needs nothing more: its driver ends.

Before publishing, in this order: the content is checked the way the sender checks it (Failed,
until an edit fixes it), `suspend` (Paused), `startAt` (Scheduled), the pool (Pending,
PoolNotFound), its Redis (Pending), then the recipients (Failed on a source error, retried).
After publishing: a campaign whose keys vanished is republished minus its checkpoint; `suspend`
and `priority` are applied; content edits are not (ContentLocked).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from mailtrain_operator import conditions
from mailtrain_operator.api import MailCampaignSpec, MailCampaignStatus, SenderPoolSpec, to_status
from mailtrain_operator.campaigns import objects, publish, status, steering, wire
from mailtrain_operator.campaigns.runtime import CampaignRuntime
from mailtrain_operator.campaigns.sources import SourceError, open_source
from mailtrain_operator.campaigns.status import Note, Waiting
from mailtrain_operator.metrics import METRICS
from mailtrain_operator.pool_redis import PoolRedisUnavailable, RedisTarget, resolve
from mailtrain_sender.config import WorkerSection
from mailtrain_sender.layout import ACTIVE, MISSING, PAUSED
from mailtrain_sender.publisher import Progress, Publisher

# Seconds. A missing pool is noticed at once through the SenderPool watch; this is the fallback.
POOL_RECHECK = 30.0
BACKOFF = (1.0, 60.0)  # first and longest wait after a failure; doubled each time
# After a campaign's keys vanish, a sender that held a chunk goes on sending it from memory until its
# lease runs out (it checks the lease's deadline before every MAIL FROM, and cannot renew a lease Redis
# forgot). Republishing only once every such lease has run out (plus 5 s of slack) means no old holder
# *starts* a transaction after the republish: what goes out twice was started before it. A transaction
# already started may still be finishing (up to smtp.timeout), which does not change the bound: at most
# once more each. The operator writes no leaseTtl, so senders use the default.
REPUBLISH_AFTER = float(WorkerSection.model_fields["lease_ttl"].default) + 5.0


@dataclass(frozen=True)
class Next:
    seconds: float | None  # until the next step; None: until woken
    finished: bool = False


LoggerLike = logging.Logger | logging.LoggerAdapter[Any]


class CampaignDriver:
    def __init__(
        self,
        runtime: CampaignRuntime,
        body: Mapping[str, Any],
        *,
        pool_spec: Callable[[str, str], Mapping[str, Any] | None],
        post: Callable[[Note], None],
        logger: LoggerLike,
    ) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.body = body  # kopf's live view: always the latest version of the object it saw
        self.pool_spec = pool_spec
        self._post_event = post
        self.logger = logger
        meta = body["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.label = f"{self.namespace}/{self.name}"  # in metrics, as the senders name it
        self.written: MailCampaignStatus | None = None  # what this driver wrote last
        self.written_at = float("-inf")
        self.sample: tuple[int, float] | None = None  # (sent, monotonic time) for the rate
        self.applied: tuple[bool, int] | None = None  # (suspend, priority) applied to Redis
        self.failures = 0
        self.last_error = ""
        self.resolved: tuple[str, RedisTarget] | None = None  # (the pool's spec, its Redis)
        self.missing_since: float | None = None  # monotonic time this driver found the keys gone

    # -- the loop --------------------------------------------------------------------------------

    async def run(
        self, is_stopped: Callable[[], bool], until_stopped: Callable[[], Awaitable[object]]
    ) -> None:
        """Steps until the campaign is finished, deleted, or the operator stops.

        is_stopped/until_stopped: kopf's stop flag, read and awaited. The driver ends on its own
        while it waits, so kopf cancels it only in the middle of a step (a cancelled publish is
        redone in full by the next operator, so that is safe too).
        """
        wake = self.runtime.wakers.register(self.uid)
        stop = asyncio.ensure_future(until_stopped())
        try:
            while not self._ending(is_stopped):
                wake.clear()  # a wake-up during the step makes the next one start at once
                try:
                    async with self.runtime.lock(self.uid):
                        # Checked under the lock: once the deletion removed the keys, a step would
                        # take their absence for a Redis loss and publish the campaign again.
                        if self._ending(is_stopped):
                            return
                        after = await self.step()
                except Exception as exc:  # a driver survives anything, and says so once
                    after = self._failed_step(exc)
                if after.finished:
                    return
                woken = asyncio.ensure_future(wake.wait())
                await asyncio.wait({woken, stop}, timeout=after.seconds, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
        finally:
            stop.cancel()
            # Whatever ended the driver (finished, deleted, the operator paused or stopping), nobody
            # in this process moves the campaign's clock any more: a series left behind would stall.
            self.runtime.progress.forget(self.uid)

    def _ending(self, is_stopped: Callable[[], bool]) -> bool:
        return is_stopped() or self.body["metadata"].get("deletionTimestamp") is not None

    def _failed_step(self, exc: Exception) -> Next:
        self.failures += 1
        METRICS.reconcile_errors.labels("MailCampaign").inc()
        delay = min(BACKOFF[1], BACKOFF[0] * 2.0 ** (self.failures - 1))
        described = f"{type(exc).__name__}: {exc}"
        if described != self.last_error:  # a traceback once, then one line per retry
            self.logger.exception("campaign step failed; retrying in %.0f s", delay)
        else:
            self.logger.warning("campaign step failed again (%s); retrying in %.0f s", described, delay)
        self.last_error = described
        return Next(delay)

    def post(self, note: Note) -> None:
        """An Event on the campaign, and the same decision once in the log."""
        level = logging.INFO if note.type == "Normal" else logging.WARNING
        self.logger.log(level, "%s: %s", note.reason, note.message)
        self._post_event(note)

    def _backoff(self) -> float:
        self.failures += 1
        return min(BACKOFF[1], BACKOFF[0] * 2.0 ** (self.failures - 1))

    # -- one step --------------------------------------------------------------------------------

    def _current(self) -> MailCampaignStatus:
        return self.written if self.written is not None else status.parse(self.body.get("status"))

    @property
    def _generation(self) -> int:
        return int(self.body["metadata"].get("generation") or 0)

    async def step(self) -> Next:
        current = self._current()
        self.runtime.census.record(self.uid, self.namespace, current.phase)
        self.runtime.progress.observe(self.uid, self.label, current.phase)
        if status.is_finished(current):
            return Next(None, finished=True)
        try:
            spec = MailCampaignSpec.model_validate(self.body["spec"])
        except ValidationError as exc:  # the CRD lets nothing else through; an older operator, say
            message = f"the spec cannot be read: {exc.errors()[0]['msg']}; fix the spec"
            return await self._wait(Waiting("Failed", "InvalidSpec", message), None)
        if status.is_published(current):
            return await self._published(spec, current)
        return await self._unpublished(spec, current)

    async def _wait(self, waiting: Waiting, after: float | None) -> Next:
        current = self._current()
        desired = status.waiting_status(current, waiting, generation=self._generation, now=_now())
        await self._write(current, desired)
        return Next(after)

    async def _unpublished(self, spec: MailCampaignSpec, current: MailCampaignStatus) -> Next:
        meta = self.body["metadata"]
        candidate = wire.build_wire(meta, spec, chunk_size=self.settings.chunk_size)
        try:
            wire.check(candidate)
        except wire.InvalidCampaign as exc:
            return await self._wait(Waiting("Failed", exc.reason, exc.message), None)
        if spec.suspend:
            message = "spec.suspend is true: nothing is published until it is false"
            return await self._wait(Waiting("Paused", "Suspended", message), None)
        now = _now()
        if spec.start_at is not None and spec.start_at > now:
            message = f"sending starts at {spec.start_at.isoformat()} (spec.startAt)"
            return await self._wait(
                Waiting("Scheduled", "Scheduled", message), (spec.start_at - now).total_seconds()
            )
        target = await self._target(spec)
        if isinstance(target, Waiting):
            return await self._wait(
                target, POOL_RECHECK if target.reason == "PoolNotFound" else self._backoff()
            )
        try:
            source = open_source(self.namespace, spec.recipients, self.settings)
            done = await publish.publish(Publisher(self.runtime.clients.get(target)), candidate, source)
        except SourceError as exc:
            return await self._wait(Waiting("Failed", exc.reason, exc.message), self._backoff())
        except RedisError as exc:
            return await self._wait(self._redis_down(spec, exc, "publish"), self._backoff())
        desired = status.started_status(
            current,
            total=done.wire.total,
            chunks=done.wire.chunks,
            chunk_size=done.wire.chunk_size,
            source_invalid=done.invalid,
            digest=done.digest,
            generation=self._generation,
            now=_now(),
        )
        await self._write(current, desired)
        self.post(status.started_note(done.wire, spec.sender_pool, done.duplicates, done.invalid))
        self.sample = (0, time.monotonic())
        self.failures = 0
        return Next(self.settings.progress_interval)

    async def _target(self, spec: MailCampaignSpec) -> RedisTarget | Waiting:
        """The pool's Redis, resolved again only when the pool's spec changed or Redis failed (a
        urlSecretRef costs a Secret read, and a private Redis an EndpointSlice list)."""
        found = self.pool_spec(self.namespace, spec.sender_pool)
        if found is None:
            message = (
                f"SenderPool {self.namespace}/{spec.sender_pool} does not exist; the campaign starts by "
                "itself once it does"
            )
            return Waiting("Pending", "PoolNotFound", message)
        key = json.dumps(found, sort_keys=True, default=str)
        if self.resolved is not None and self.resolved[0] == key:
            return self.resolved[1]
        try:
            target = await resolve(self.namespace, spec.sender_pool, SenderPoolSpec.model_validate(found))
        except PoolRedisUnavailable as exc:
            return Waiting("Pending", exc.reason, exc.message)
        except ValidationError:
            message = f"SenderPool {self.namespace}/{spec.sender_pool} has a spec this operator cannot read"
            return Waiting("Pending", "PoolInvalid", message)
        self.resolved = (key, target)
        return target

    def _redis_down(self, spec: MailCampaignSpec, exc: RedisError, operation: str) -> Waiting:
        METRICS.redis_errors.labels(operation).inc()
        self.resolved = None  # a private Redis may have moved to another address
        # The exception's text names host and port at most; the URL (and a password) never.
        message = (
            f"the Redis of SenderPool {self.namespace}/{spec.sender_pool} cannot be reached "
            f"({type(exc).__name__}); retrying with backoff"
        )
        return Waiting("Pending", "RedisUnavailable", message)

    async def _published(self, spec: MailCampaignSpec, current: MailCampaignStatus) -> Next:
        target = await self._target(spec)
        if isinstance(target, Waiting):
            return await self._problem(target.reason, target.message, POOL_RECHECK)
        publisher = Publisher(self.runtime.clients.get(target))
        try:
            with METRICS.harvest_seconds.time():
                progress = await publisher.progress(self.uid)
            if progress.state == MISSING:
                wait = self._until_republish()
                if wait > 0:
                    return Next(wait)
                republished = await self._republish(spec, current, publisher)
                if republished is not None:
                    return republished
                self.missing_since = None
                progress = await publisher.progress(self.uid)
            else:
                self.missing_since = None
            progress = await self._apply(spec, progress, publisher)
        except RedisError as exc:
            waiting = self._redis_down(spec, exc, "progress")
            return await self._problem(waiting.reason, waiting.message, self._backoff())
        return await self._harvested(spec, current, progress)

    async def _problem(self, reason: str, message: str, after: float) -> Next:
        current = self._current()
        desired = status.problem_status(current, reason, message, generation=self._generation, now=_now())
        await self._write(current, desired)
        return Next(after)

    def _until_republish(self) -> float:
        """Seconds until the keys have been gone for REPUBLISH_AFTER (counted from this driver's first
        sight of the loss: an operator restart counts again, which only waits longer)."""
        now = time.monotonic()
        if self.missing_since is None:
            self.missing_since = now
            self.logger.warning(
                "the campaign's keys vanished from Redis: publishing it again from the checkpoint in "
                "%.0f s, once every lease a sender held has run out",
                REPUBLISH_AFTER,
            )
        return self.missing_since + REPUBLISH_AFTER - now

    async def _republish(
        self, spec: MailCampaignSpec, current: MailCampaignStatus, publisher: Publisher
    ) -> Next | None:
        """The keys vanished while the status says published: publish again minus the checkpoint."""
        checkpoint = current.checkpoint
        assert checkpoint is not None
        assert checkpoint.chunk_size is not None
        candidate = wire.build_wire(self.body["metadata"], spec, chunk_size=checkpoint.chunk_size)
        try:
            wire.check(candidate)
            source = open_source(self.namespace, spec.recipients, self.settings)
            done = await publish.publish(publisher, candidate, source, checkpoint=checkpoint)
        except (wire.InvalidCampaign, SourceError) as exc:
            failed = Waiting(
                "Failed",
                exc.reason,
                f"the campaign's keys vanished from Redis and it cannot be published again: {exc.message}",
            )
            after = None if isinstance(exc, wire.InvalidCampaign) else self._backoff()
            return await self._wait(failed, after)
        ranges = checkpoint.completed_chunks or "none"
        edited = conditions.is_true(current.conditions, status.CONTENT_LOCKED)
        self.post(status.republished_note(done.wire, ranges, edited))
        self.sample = None
        return None

    async def _apply(self, spec: MailCampaignSpec, progress: Progress, publisher: Publisher) -> Progress:
        """suspend and priority from the spec onto Redis (`steering.steer`)."""
        if progress.state not in (ACTIVE, PAUSED):
            return progress
        steer = wire.build_wire(
            self.body["metadata"],
            spec,
            chunk_size=self.settings.chunk_size,
            token_key="unused",  # noqa: S106 - steering needs id, pool, priority
        )
        self.applied, changed = await steering.steer(publisher, steer, spec, progress.state, self.applied)
        return await publisher.progress(self.uid) if changed else progress

    async def _harvested(
        self, spec: MailCampaignSpec, current: MailCampaignStatus, progress: Progress
    ) -> Next:
        now, at = _now(), time.monotonic()
        edited: list[str] = []
        if progress.campaign is not None:
            candidate = wire.build_wire(self.body["metadata"], spec, chunk_size=progress.campaign.chunk_size)
            edited = wire.edited_fields(progress.campaign, candidate)
        rate = status.rate(self.sample, progress.sent, at)
        desired = status.progress_status(
            current, progress, rate=rate, edited=edited, generation=self._generation, now=now
        )
        if progress.state == ACTIVE:
            self.sample = (progress.sent, at)
        done = progress.sent + progress.failed + progress.invalid
        self.runtime.progress.observe(self.uid, self.label, desired.phase, done)
        held_back = await self._write(current, desired)
        self.failures = 0
        if status.is_finished(desired):
            return Next(None, finished=True)
        # A tick that came a moment before the write interval was over (a timer may fire a little
        # early) writes that moment later, not a whole interval later.
        return Next(held_back or self.settings.progress_interval)

    # -- writing ---------------------------------------------------------------------------------

    async def _write(self, current: MailCampaignStatus, desired: MailCampaignStatus) -> float:
        """Write `desired` if it changed and may be written now; returns the seconds until a change
        held back by the write interval may be written (0 when nothing is held back)."""
        since = time.monotonic() - self.written_at
        delay = status.write_delay(
            current, desired, since_last_write=since, interval=self.settings.progress_interval
        )
        if delay is None:
            return 0.0
        if delay > 0:
            return delay
        patch = objects.merge_patch(to_status(current), to_status(desired))
        if not await objects.patch_status(self.namespace, self.name, patch):
            return 0.0  # deleted meanwhile: the driver ends at its next check
        self.written, self.written_at = desired, time.monotonic()
        self.runtime.census.record(self.uid, self.namespace, desired.phase)
        self.runtime.progress.observe(self.uid, self.label, desired.phase)
        for note in status.transition_notes(current, desired):
            self.post(note)
        return 0.0


def _now() -> datetime:
    return datetime.now(UTC)
