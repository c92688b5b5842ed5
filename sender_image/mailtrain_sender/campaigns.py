"""One campaign as one process works on it: lease chunks, render their messages, account for each.

A `CampaignRunner` exists while the pool's assignment gives the campaign to this
process. It leases chunks (at most `_CHUNKS_AHEAD` with work to do at once; a
chunk whose only recipients left wait for a retry does not count), renders their
messages a batch at a time (under a watchdog, renderer.py), and keeps a few ready for the
dispatcher, which takes them in turn with the process's other campaigns. It
records each outcome; a chunk whose recipients all have one is completed in
Redis. A recipient to retry later waits in the runner while its chunk's lease is
renewed, and nothing else waits for it.

Anything wrong with the campaign as a whole (a template that does not compile, a
sender address that cannot be used, missing or corrupt data) fails the campaign
in Redis with the reason, once: it is never a restart loop, and it never burns
the recipients one by one.

The runner talks to its process only through `RunnerContext`: plain values and
callables, so it can be built and tested on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from mailtrain_sender.acks import AckBuffer
from mailtrain_sender.chunks import ChunkState, SendJob, lease_margin
from mailtrain_sender.layout import (
    ACTIVE,
    FAILED,
    CampaignWire,
    ChunkClaim,
    ChunkFormatError,
    Inactive,
    Recipient,
    Store,
    bit_is_set,
    decode_chunk,
)
from mailtrain_sender.metrics import Metrics
from mailtrain_sender.outage import RedisOutage
from mailtrain_sender.render import CampaignError, CompiledCampaign
from mailtrain_sender.renderer import TIMED_OUT, RenderPool
from mailtrain_sender.smtp_pool import Envelope, Outcome

log = logging.getLogger(__name__)

_CHUNKS_AHEAD = 2  # chunks with work to do held at once: the one being sent and the next
_BATCH = 32  # messages per hand-over to a render thread
_READY_BYTES = 8 << 20  # rendered bytes held per campaign, whatever the message size
_IDLE_POLL = 0.5  # no chunk free right now (others hold the rest), or Redis failed: look again after this
_RENDER_TIMEOUTS = 3  # messages in a row that take too long to render: the templates are the problem
_FAILING_TEMPLATES = 10  # template failures before any message rendered: judge whose error it is
_RENDER_BUDGET = 0.02  # seconds of rendering per batch; beyond it the runner yields as long again


@dataclass(frozen=True)
class RunnerSettings:
    lease_ttl: float
    max_attempts: int
    backoff: float
    max_backoff: float
    ready_cap: int  # rendered messages held ready


@dataclass(frozen=True)
class RunnerContext:
    """What a runner needs from its process."""

    worker_id: str
    store: Store
    acks: AckBuffer
    renderer: RenderPool
    outage: RedisOutage
    metrics: Metrics
    settings: Callable[[], RunnerSettings]
    relay_wait: Callable[[], float]  # seconds until the relay is tried again, while it is unreachable
    jobs_ready: Callable[[], None]  # tell the dispatcher there are jobs
    ended: Callable[[CampaignRunner], None]  # the runner stopped on its own (a state, a failure, a crash)


class CampaignRunner:
    def __init__(self, ctx: RunnerContext, campaign: str) -> None:
        self.ctx = ctx
        self.id = campaign
        self.name = campaign
        self.active = True
        self.state = ACTIVE  # the campaign's state as last seen: why the runner ended
        self.crashed = False
        self.chunks: dict[int, ChunkState] = {}
        self._ready: deque[SendJob] = deque()
        self._ready_bytes = 0
        self._suspended: list[SendJob] = []  # taken while their lease was unconfirmed; back once renewed
        self._retries: list[tuple[float, int, SendJob]] = []  # (due, tie-breaker, job)
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while no job is in a connection's hands
        self._idle.set()
        self._in_hand = 0
        self._no_chunk_until = 0.0
        self._compiled: CompiledCampaign | None = None
        self._render_timeouts = 0  # in a row
        # Template failures held back (not counted yet) until a first message renders.
        self._held: list[tuple[ChunkState, int, str]] | None = []
        self._total_chunks = 0
        self._chunk_size = 0
        self._task: asyncio.Task[None] | None = None
        self.log = logging.LoggerAdapter(log, {"campaign": campaign})

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"campaign-{self.id}")

    async def _run(self) -> None:
        try:
            if await self._load():
                await self._produce()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: the process lives on, and the coordinator starts the campaign again later
            self.log.exception("campaign runner failed")
            self.crashed = True
            self._end(self.state)

    def _end(self, state: str) -> None:
        self.state = state
        if self.active:
            self.stop()
            self.ctx.ended(self)

    # -- loading -----------------------------------------------------------------------------------------

    async def _load(self) -> bool:
        while self.active:
            try:
                state, meta = await self.ctx.store.load_campaign(self.id)
            except RedisError as exc:
                self.ctx.outage.failed("load", exc)
                await asyncio.sleep(_IDLE_POLL)
                continue
            self.ctx.outage.ok()
            if state != ACTIVE:
                self.log.info("campaign is %s; not working on it", state)
                self._end(state)
                return False
            if meta is None:
                await self._fail("the campaign's description (meta) is missing from Redis")
                return False
            return await self._prepare(meta)
        return False

    async def _prepare(self, meta: bytes) -> bool:
        try:
            wire = CampaignWire.model_validate_json(meta)
            self.name, self._total_chunks, self._chunk_size = wire.name, wire.chunks, wire.chunk_size
            self.log = logging.LoggerAdapter(log, {"campaign": wire.name})
            if wire.chunk_size <= 0 or wire.chunk_size % 8:
                raise CampaignError(f"chunkSize {wire.chunk_size} is not a positive multiple of 8")
            self._compiled = await asyncio.to_thread(self.ctx.renderer.compile, wire)
        except CampaignError as exc:
            await self._fail(str(exc))
            return False
        except Exception as exc:  # whatever else is wrong with it, it is the campaign's problem, once
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            await self._fail(f"the campaign cannot be prepared: {type(exc).__name__}: {first_line}")
            return False
        return True

    async def _fail(self, reason: str) -> None:
        self.log.error("campaign failed: %s", reason)
        self.ctx.metrics.campaign_failures.inc()
        while self.active:
            try:
                await self.ctx.store.fail_campaign(self.id, reason)
                break
            except RedisError as exc:
                self.ctx.outage.failed("fail", exc)
                await asyncio.sleep(_IDLE_POLL)
        self._end(FAILED)

    # -- producing jobs ------------------------------------------------------------------------------------

    async def _produce(self) -> None:
        while self.active:
            now = time.monotonic()
            self._promote_retries(now)
            batch = self._next_batch()
            if batch:
                await self._render(batch)
                continue
            busy = sum(c.busy for c in self.chunks.values())
            if now >= self._no_chunk_until and busy < _CHUNKS_AHEAD:
                await self._claim()
                continue
            if self._held:  # nothing more to render here, and only failures so far: decide now
                await self._judge_held()
                continue
            self._wake.clear()
            wait = self._no_chunk_until - now if self._no_chunk_until > now else _IDLE_POLL
            if self._retries:
                wait = min(wait, self._retries[0][0] - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.001, wait))

    def _next_batch(self) -> list[tuple[ChunkState, int, Recipient]]:
        # Jobs suspended on an unconfirmed lease count too: while Redis is away nothing piles up.
        room = self.ctx.settings().ready_cap - len(self._ready) - len(self._suspended)
        if room <= 0 or self._ready_bytes >= _READY_BYTES:
            return []
        batch: list[tuple[ChunkState, int, Recipient]] = []
        for chunk in self.chunks.values():
            while chunk.pending and len(batch) < min(room, _BATCH):
                index, recipient = chunk.pending.popleft()
                batch.append((chunk, index, recipient))
        return batch

    async def _render(self, batch: list[tuple[ChunkState, int, Recipient]]) -> None:
        assert self._compiled is not None
        started = time.monotonic()
        try:
            results = self.ctx.renderer.render(self._compiled, [(i, r) for _, i, r in batch], _RENDER_BUDGET)
        except CampaignError as exc:
            await self._fail(str(exc))
            return
        took = time.monotonic() - started
        for chunk, index, recipient in reversed(batch[len(results) :]):  # over budget, or timed out: later
            chunk.pending.appendleft((index, recipient))
        for (chunk, index, _), result in zip(batch, results, strict=False):
            if chunk.lost or not self.active:
                continue  # left unacknowledged: whoever has the chunk next sends it
            if isinstance(result, Envelope):
                self._ready.append(SendJob(self, chunk, index, result))
                self._ready_bytes += len(result.message)
                self._first_message_rendered()
            elif result[0] is Outcome.FAILED and self._held is not None:
                self._held.append((chunk, index, result[1]))
            else:
                self._record(chunk, index, *result)
        self.ctx.jobs_ready()
        timed_out = bool(results) and results[-1] == (Outcome.FAILED, TIMED_OUT)
        self._render_timeouts = self._render_timeouts + 1 if timed_out else 0
        if self._render_timeouts >= _RENDER_TIMEOUTS:
            await self._fail(
                f"{TIMED_OUT} for {self._render_timeouts} recipients in a row; simplify the templates"
            )
        elif self._held is not None and len(self._held) >= _FAILING_TEMPLATES:
            await self._judge_held()
        # Slow templates take at most half of the loop's time: yield as long as the batch took.
        await asyncio.sleep(took if took > _RENDER_BUDGET else 0)

    def _first_message_rendered(self) -> None:
        """Once one message renders, a template failure is the recipient's own: record those held back."""
        held, self._held = self._held, None
        for chunk, index, reason in held or ():
            if not chunk.lost:
                self._record(chunk, index, Outcome.FAILED, reason)

    async def _judge_held(self) -> None:
        """Only template failures so far, and no more to render for now (or enough of them to judge):
        if the campaign has sent nobody yet, the templates are the campaign's error; otherwise these
        recipients' data is (another process, or an earlier runner, sent the others)."""
        assert self._held
        try:
            sent = await self.ctx.store.sent(self.id)
        except RedisError as exc:
            self.ctx.outage.failed("judge", exc)
            await asyncio.sleep(_IDLE_POLL)
            return
        self.ctx.outage.ok()
        if sent > 0:
            self._first_message_rendered()
            return
        example = self._held[-1][2]
        await self._fail(f"the templates fail for each of the first {len(self._held)} recipients: {example}")

    async def _claim(self) -> None:
        s = self.ctx.settings()
        started = time.monotonic()
        try:
            claim = await self.ctx.store.claim_chunk(
                self.id, self.ctx.worker_id, int(s.lease_ttl * 1000), self._chunk_size
            )
        except RedisError as exc:
            self.ctx.outage.failed("claim", exc)
            self._no_chunk_until = time.monotonic() + _IDLE_POLL
            return
        self.ctx.outage.ok()
        if isinstance(claim, Inactive):
            self.log.info("campaign is %s; stopping work on it", claim.state)
            self._end(claim.state)
        elif not isinstance(claim, ChunkClaim):
            self._no_chunk_until = time.monotonic() + _IDLE_POLL
        else:
            await self._take_chunk(claim, started + s.lease_ttl - lease_margin(s.lease_ttl))

    async def _take_chunk(self, claim: ChunkClaim, deadline: float) -> None:
        known = self.chunks.get(claim.chunk)
        if known is not None and not known.lost:
            # Our own lease expired unrenewed and we claimed it back: what we know in memory
            # (outcomes not yet written) is newer than Redis's bits, so keep it.
            known.token, known.deadline = claim.token, deadline
            return
        try:
            recipients = decode_chunk(claim.payload)
        except ChunkFormatError as exc:
            await self._fail(f"chunk {claim.chunk} is corrupt: {exc}")
            return
        if claim.previous_owner and claim.previous_owner != self.ctx.worker_id:
            self.ctx.metrics.takeovers.inc()
            self.log.info("took chunk %d over from %s", claim.chunk, claim.previous_owner)
        first = claim.chunk * self._chunk_size
        todo = deque((first + i, r) for i, r in enumerate(recipients) if not bit_is_set(claim.done_bits, i))
        chunk = ChunkState(claim.chunk, claim.token, deadline, todo, outstanding=len(todo))
        self.chunks[claim.chunk] = chunk
        if not todo:
            self._complete(chunk)

    # -- the SMTP pool's side ------------------------------------------------------------------------------

    def take(self) -> SendJob | None:
        """The dispatcher's turn for this campaign: its next ready job, if any."""
        if not self.active:
            return None
        now = time.monotonic()
        while self._ready:
            job = self._ready.popleft()
            if job.chunk.lost:
                self._ready_bytes -= len(job.envelope.message)
                continue  # the chunk is someone else's now
            if now >= job.chunk.deadline:
                self._suspended.append(job)  # until a renewal confirms the lease (its bytes still count)
                continue
            self._ready_bytes -= len(job.envelope.message)
            job.chunk.in_hand += 1
            self._in_hand += 1
            self._idle.clear()
            if len(self._ready) <= self.ctx.settings().ready_cap // 2:
                self._wake.set()
            return job
        self._wake.set()
        return None

    def may_send(self, chunk: ChunkState) -> bool:
        """Right before MAIL FROM."""
        return self.active and not chunk.lost and time.monotonic() < chunk.deadline

    def finish(self, job: SendJob, outcome: Outcome, reply: str, ambiguous: bool) -> None:
        chunk = job.chunk
        chunk.in_hand -= 1
        self._in_hand -= 1
        if self._in_hand == 0:
            self._idle.set()
        if ambiguous:
            self.ctx.acks.ambiguous(self.id, self._total_chunks)
        if outcome is Outcome.DROP:
            if self.active and not chunk.lost:
                self._ready.appendleft(job)
                self._ready_bytes += len(job.envelope.message)
                self.ctx.jobs_ready()
            return
        if outcome is Outcome.RETRY:
            s = self.ctx.settings()
            job.attempts += 1
            if job.attempts < s.max_attempts:
                self._retry_later(job, min(s.max_backoff, s.backoff * 2 ** (job.attempts - 1)))
                return
            outcome, reply = Outcome.FAILED, f"{reply} (after {job.attempts} attempts)"
        elif outcome is Outcome.DEFER:
            self.ctx.acks.deferred(self.id, self._total_chunks)
            self.ctx.metrics.outcome(self.name, "deferred").inc()
            self._retry_later(job, max(1.0, self.ctx.relay_wait()))
            return
        self._record(chunk, job.index, outcome, reply)

    def _retry_later(self, job: SendJob, delay: float) -> None:
        if not self.active or job.chunk.lost:
            return  # unacknowledged: whoever has the chunk next tries it
        job.chunk.waiting += 1
        heapq.heappush(self._retries, (time.monotonic() + delay, next(self._order), job))
        self._wake.set()

    def _promote_retries(self, now: float) -> None:
        while self._retries and self._retries[0][0] <= now:
            job = heapq.heappop(self._retries)[2]
            job.chunk.waiting -= 1
            if not job.chunk.lost:
                self._ready.appendleft(job)
                self._ready_bytes += len(job.envelope.message)
                self.ctx.jobs_ready()

    def _record(self, chunk: ChunkState, index: int, outcome: Outcome, reason: str) -> None:
        """A final outcome. Recorded even when the chunk was lost or the runner stopped: it is true."""
        acks, chunks = self.ctx.acks, self._total_chunks
        if outcome is Outcome.SENT:
            acks.sent(self.id, chunks, index)
        elif outcome is Outcome.INVALID:
            acks.invalid(self.id, chunks, index, reason)
        else:
            acks.failed(self.id, chunks, index, reason)
            self.log.debug("recipient %d failed: %s", index, reason)
        self.ctx.metrics.outcome(self.name, outcome.value).inc()
        chunk.outstanding -= 1
        if chunk.outstanding == 0 and not chunk.lost:
            self._complete(chunk)

    def _complete(self, chunk: ChunkState) -> None:
        chunk.completing = True

        def done(owned: bool, state: str) -> None:
            if self.chunks.get(chunk.chunk) is chunk:
                del self.chunks[chunk.chunk]
            if state != ACTIVE:  # completed by this write, or paused, failed, deleted meanwhile
                self._end(state)
            self._wake.set()

        self.ctx.acks.complete(self.id, self._total_chunks, chunk.lease, done)

    # -- leases and stopping ------------------------------------------------------------------------------

    def leases(self) -> list[tuple[int, int]]:
        return [c.lease for c in self.chunks.values() if not c.lost]

    def renewed(
        self, started: float, ttl: float, state: str, lost: set[int] | None, sent: list[tuple[int, int]]
    ) -> None:
        """A renewal's answer about the leases it named (`sent`): confirm those still ours, drop those
        lost. A chunk claimed (or claimed back with a new token) after the renewal left is not touched:
        the answer is not about it."""
        deadline = started + ttl - lease_margin(ttl)
        named = set(sent)
        for chunk in list(self.chunks.values()):
            if chunk.lost or chunk.lease not in named:
                continue
            if lost is not None and chunk.chunk not in lost:
                chunk.deadline = max(chunk.deadline, deadline)
            elif not chunk.completing:  # a completion just written also removes the lease
                chunk.lost = True
                chunk.pending.clear()
                del self.chunks[chunk.chunk]
                self.ctx.metrics.lease_expiries.inc()
                self.log.warning("lease on chunk %d was taken over or ended; leaving the chunk", chunk.chunk)
        now = time.monotonic()
        still, self._suspended = self._suspended, []
        for job in still:
            if job.chunk.lost:
                self._ready_bytes -= len(job.envelope.message)
            elif now < job.chunk.deadline:
                self._ready.appendleft(job)
            else:
                self._suspended.append(job)
        if state != ACTIVE:
            self.log.info("campaign is %s; stopping work on it", state)
            self._end(state)
        self._wake.set()
        self.ctx.jobs_ready()

    def stop(self) -> None:
        """Stop sending (moved to another process, paused, shutting down): jobs not begun are dropped
        and stay unacknowledged; jobs in flight finish and are recorded."""
        self.active = False
        self._ready.clear()
        self._ready_bytes = 0
        self._suspended.clear()
        for _, _, job in self._retries:
            job.chunk.waiting -= 1
        self._retries.clear()
        self._wake.set()  # the producer sees `active` and ends; a claim under way still registers its chunk

    async def drained(self) -> None:
        """Wait until the producer has ended and no job of this runner is in a connection's hands."""
        if self._task is not None and self._task is not asyncio.current_task():
            await asyncio.wait({self._task})
        await self._idle.wait()

    def releasable(self) -> list[tuple[int, int]]:
        """Leases that may go back to the pool: no transaction in flight, no completion pending."""
        return [c.lease for c in self.chunks.values() if not c.lost and not c.in_hand and not c.completing]
