"""One campaign as one process works on it: lease chunks, queue their recipients, account for each.

A `CampaignRunner` exists while the pool's assignment gives the campaign to this
process. It holds at most `_CHUNKS_AHEAD` chunks at a time, puts their recipients
(minus those already done, after a takeover) on the process's shared queue, and
records each outcome. A chunk is complete when every recipient in it is
acknowledged; then it is marked complete in Redis and the next one is claimed.

Safety against double sending rests on one rule: a job is sent only while its
chunk's lease is known to be valid locally (`deadline`, taken from the clock
*before* the claim or renewal was sent, minus a margin). Another process can
take the chunk over only after the lease expired in Redis, by which time this
one has stopped sending from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from mailtrain_sender import addresses
from mailtrain_sender.acks import Completion
from mailtrain_sender.layout import ChunkClaim, Inactive, Recipient, bit_is_set
from mailtrain_sender.render import CampaignError, CompiledCampaign, RecipientError, message_date
from mailtrain_sender.smtp_pool import Envelope, Job, Outcome

if TYPE_CHECKING:
    from mailtrain_sender.worker import Worker

log = logging.getLogger(__name__)

_CHUNKS_AHEAD = 2  # the chunk being sent and the next one, so the queue never runs dry between chunks
_IDLE_POLL = 0.5  # no chunk free right now: others hold the rest, or leases are about to expire


def lease_margin(ttl: float) -> float:
    """Stop sending from a chunk this long before its lease would expire in Redis."""
    return min(2.0, ttl / 4)


@dataclass(eq=False, slots=True)
class ChunkState:
    chunk: int
    outstanding: int
    deadline: float  # time.monotonic() after which this process must not send from the chunk
    lost: bool = False


class SendJob(Job):
    __slots__ = ("attempts", "chunk", "index", "recipient", "runner")

    def __init__(self, runner: CampaignRunner, chunk: ChunkState, index: int, recipient: Recipient) -> None:
        self.runner = runner
        self.chunk = chunk
        self.index = index
        self.recipient = recipient
        self.attempts = 0

    def prepare(self) -> Envelope | tuple[Outcome, str]:
        return self.runner.prepare(self)

    def finish(self, outcome: Outcome, reply: str) -> None:
        self.runner.finish(self, outcome, reply)


class CampaignRunner:
    def __init__(self, worker: Worker, campaign: str) -> None:
        self.worker = worker
        self.id = campaign
        self.name = campaign
        self.active = True
        self.chunks: dict[int, ChunkState] = {}
        self.in_flight = 0  # jobs taken off the queue and not finished yet
        self._idle = asyncio.Event()  # set while in_flight == 0
        self._idle.set()
        self._compiled: CompiledCampaign | None = None
        self._campaign_error: str | None = None
        self._total_chunks = 0
        self._chunk_size = 0
        self._chunk_freed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.log = logging.LoggerAdapter(log, {"campaign": campaign})

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"campaign-{self.id}")

    # -- claiming ----------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            if await self._load():
                await self._claim_loop()
        except asyncio.CancelledError:
            raise
        except Exception:  # keep the process alive; the coordinator will start the campaign again
            self.log.exception("campaign runner failed")
            self.active = False

    async def _load(self) -> bool:
        while self.active:
            try:
                wire = await self.worker.store.load_campaign(self.id)
            except RedisError as exc:
                self.worker.redis_error("load", exc)
                await asyncio.sleep(_IDLE_POLL)
                continue
            if wire is None:
                self.log.info("campaign has no data in Redis; skipping it")
                self.active = False
                return False
            self.name, self._total_chunks, self._chunk_size = wire.name, wire.chunks, wire.chunk_size
            self.log = logging.LoggerAdapter(log, {"campaign": wire.name})
            try:
                self._compiled = CompiledCampaign(wire)
            except CampaignError as exc:
                # Every recipient fails with this reason: visible in progress, nothing silently skipped.
                self._campaign_error = str(exc)
                self.log.error("campaign cannot be rendered: %s", exc)
            return True
        return False

    async def _claim_loop(self) -> None:
        cfg = self.worker.config.worker
        while self.active:
            if sum(1 for c in self.chunks.values() if c.outstanding) >= _CHUNKS_AHEAD:
                self._chunk_freed.clear()
                await self._chunk_freed.wait()
                continue
            started = time.monotonic()
            ttl = cfg.lease_ttl
            try:
                claim = await self.worker.store.claim_chunk(
                    self.id, self.worker.id, int(ttl * 1000), self._chunk_size
                )
            except RedisError as exc:
                self.worker.redis_error("claim", exc)
                await asyncio.sleep(_IDLE_POLL)
                continue
            if isinstance(claim, Inactive):
                self.log.info("campaign is %s; stopping work on it", claim.state)
                self.active = False
                if claim.state == "completed":
                    await self.worker.retire(self.id)
                return
            if not isinstance(claim, ChunkClaim):
                await asyncio.sleep(_IDLE_POLL)
                continue
            await self._queue_chunk(claim, started + ttl - lease_margin(ttl))

    async def _queue_chunk(self, claim: ChunkClaim, deadline: float) -> None:
        if claim.chunk in self.chunks:  # our own expired lease, claimed back: just refresh it
            self.chunks[claim.chunk].deadline = deadline
            return
        if claim.previous_owner and claim.previous_owner != self.worker.id:
            self.worker.metrics.takeovers.inc()
            self.log.info("took chunk %d over from %s", claim.chunk, claim.previous_owner)
        first = claim.chunk * self._chunk_size
        todo = [(i, r) for i, r in enumerate(claim.recipients) if not bit_is_set(claim.done_bits, i)]
        state = ChunkState(claim.chunk, len(todo), deadline)
        self.chunks[claim.chunk] = state
        if not todo:
            self._complete(state)
            return
        for offset, recipient in todo:
            if not self.may_send(state):
                return
            await self.worker.queue.put(SendJob(self, state, first + offset, recipient))

    def may_send(self, chunk: ChunkState) -> bool:
        """Whether a job of this chunk may still be sent. A chunk whose lease could not be
        renewed in time (Redis unreachable) is abandoned: its lease expires in Redis and
        whoever claims it next, this process included, skips the recipients already done."""
        if self.active and not chunk.lost and time.monotonic() < chunk.deadline:
            return True
        if self.active and not chunk.lost:
            chunk.lost = True
            self.chunks.pop(chunk.chunk, None)
            self.worker.metrics.lease_expiries.inc()
            self.log.warning("lease on chunk %d not renewed in time; leaving the chunk", chunk.chunk)
            self._chunk_freed.set()
        return False

    # -- sending -----------------------------------------------------------------------------------------

    def prepare(self, job: SendJob) -> Envelope | tuple[Outcome, str]:
        if not self.may_send(job.chunk):
            return Outcome.DROP, "no longer ours to send"
        self.in_flight += 1
        self._idle.clear()
        if self._campaign_error is not None or self._compiled is None:
            return Outcome.FAILED, self._campaign_error or "campaign not loaded"
        try:
            address = addresses.normalize(job.recipient.email)
        except addresses.InvalidAddressError as exc:
            return Outcome.INVALID, str(exc)
        recipient = Recipient(address, job.recipient.name, job.recipient.vars)
        try:
            rendered = self._compiled.render(recipient, job.index)
        except RecipientError as exc:
            return Outcome.FAILED, str(exc)
        message = self._compiled.build(rendered, message_date())
        return Envelope(self._compiled.wire.sender.address, recipient.email, message)

    def finish(self, job: SendJob, outcome: Outcome, reply: str) -> None:
        if outcome is not Outcome.DROP:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()
        acks, metrics = self.worker.acks, self.worker.metrics
        retry = self.worker.config.smtp.retry
        if outcome is Outcome.RETRY:
            job.attempts += 1
            if job.attempts >= retry.max_attempts:
                outcome, reply = Outcome.FAILED, f"{reply} (after {job.attempts} attempts)"
            else:
                delay = min(retry.max_backoff, retry.backoff * 2 ** (job.attempts - 1))
                self.worker.requeue_later(job, delay)
                return
        if outcome is Outcome.DEFER:
            acks.deferred(self.id)
            metrics.outcome(self.name, "deferred").inc()
            self.worker.requeue_later(job, max(1.0, self.worker.relay_wait()))
            return
        if outcome is Outcome.DROP:
            return
        if outcome is Outcome.SENT:
            acks.sent(self.id, job.index)
        elif outcome is Outcome.INVALID:
            acks.invalid(self.id, job.index)
        else:
            acks.failed(self.id, job.index, reply)
            self.log.info("recipient %d failed: %s", job.index, reply)
        metrics.outcome(self.name, outcome.value).inc()
        job.chunk.outstanding -= 1
        if job.chunk.outstanding == 0:
            self._complete(job.chunk)

    def _complete(self, chunk: ChunkState) -> None:
        def done(owned: bool, completed: int) -> None:
            self.chunks.pop(chunk.chunk, None)
            self._chunk_freed.set()
            if completed >= self._total_chunks:
                self.worker.spawn(self.worker.retire(self.id))

        self.worker.acks.complete(Completion(self.id, chunk.chunk, self._total_chunks, done))

    # -- leases and stopping ------------------------------------------------------------------------------

    def held_chunks(self) -> list[int]:
        return [c.chunk for c in self.chunks.values() if not c.lost]

    def renewed(self, started: float, ttl: float, state: str, lost: set[int]) -> None:
        for chunk in self.chunks.values():
            if chunk.chunk in lost:
                if not chunk.lost:
                    self.worker.metrics.lease_expiries.inc()
                    self.log.warning("lease on chunk %d expired and was taken over; dropping it", chunk.chunk)
                chunk.lost = True
            else:
                chunk.deadline = started + ttl - lease_margin(ttl)
        for chunk in [c for c in self.chunks.values() if c.lost]:
            self.chunks.pop(chunk.chunk, None)
        if state != "active":
            self.log.info("campaign is %s; stopping work on it", state)
            self.active = False
        self._chunk_freed.set()

    async def stop(self, grace: float) -> None:
        """Stop sending: queued jobs drop themselves, jobs in flight finish (up to `grace`)."""
        self.active = False
        self._chunk_freed.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done() and not self.active
