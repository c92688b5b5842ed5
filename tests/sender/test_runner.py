"""CampaignRunner in-process, against a real Redis, with the test playing the SMTP connections.

The runner needs only its RunnerContext, so these tests drive it directly: take
jobs as a connection would, finish them with any outcome, renew its leases, stop
it, and look at what it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mailtrain_sender.acks import AckBuffer
from mailtrain_sender.campaigns import CampaignRunner, RunnerContext, RunnerSettings
from mailtrain_sender.chunks import SendJob
from mailtrain_sender.dispatch import Dispatcher
from mailtrain_sender.layout import CampaignWire, ChunkClaim, Outcomes, Recipient, Store
from mailtrain_sender.metrics import Metrics
from mailtrain_sender.outage import RedisOutage
from mailtrain_sender.publisher import Publisher
from mailtrain_sender.renderer import RenderPool
from mailtrain_sender.smtp_pool import Outcome
from tests.sender.conftest import POOL, PublishFn, campaign_wire, wait_progress, wait_until

WORKER = "in-process"


class Process:
    """The parts of a Worker a runner talks to, wired as the Worker wires them."""

    def __init__(self, store: Store, settings: RunnerSettings) -> None:
        self.settings = settings
        self.store = store
        self.metrics = Metrics(POOL)
        self.outage = RedisOutage(self.metrics)
        self.acks = AckBuffer(store, WORKER, self.outage, lambda: 0.005)
        self.renderer = RenderPool()
        self.dispatcher = Dispatcher()
        self.ended: list[CampaignRunner] = []
        self.context = RunnerContext(
            worker_id=WORKER,
            store=store,
            acks=self.acks,
            renderer=self.renderer,
            outage=self.outage,
            metrics=self.metrics,
            settings=lambda: self.settings,
            relay_wait=lambda: 0.0,
            jobs_ready=self.dispatcher.notify,
            ended=self.ended.append,
        )
        self._writer: asyncio.Task[None] | None = None

    def start(self, wire: CampaignWire) -> CampaignRunner:
        runner = CampaignRunner(self.context, wire.id)
        self.dispatcher.add(runner)
        runner.start()
        if self._writer is None:
            self._writer = asyncio.create_task(self.acks.run())
        return runner

    async def next_job(self, timeout: float = 10) -> SendJob:
        job = await asyncio.wait_for(self.dispatcher.get(), timeout)
        assert isinstance(job, SendJob)
        return job

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        self.renderer.close()


SETTINGS = RunnerSettings(lease_ttl=10, max_attempts=3, backoff=30, max_backoff=60, ready_cap=32)


@pytest.fixture
async def process(store: Store) -> AsyncIterator[Process]:
    proc = Process(store, SETTINGS)
    yield proc
    await proc.close()


async def test_the_dispatcher_gives_each_campaign_its_turn(process: Process, publish: PublishFn) -> None:
    big = await publish("big", 2000, chunk_size=512)
    process.start(big)
    first = [await process.next_job() for _ in range(100)]  # the big campaign alone, its chunks queued
    small = await publish("small", 40, chunk_size=512)
    process.start(small)
    runners = [r for r in process.dispatcher._sources if isinstance(r, CampaignRunner)]
    await wait_until(lambda: any(r.id == small.id and r._ready for r in runners), "the small campaign ready")
    taken = [await process.next_job() for _ in range(40)]
    shares = Counter(job.runner.id for job in taken)
    assert shares == {big.id: 20, small.id: 20}  # strictly in turn from the first message on
    for job in first + taken:
        job.finish(Outcome.SENT, "250 ok")


async def test_a_retry_later_does_not_hold_up_the_next_chunks(
    process: Process, publish: PublishFn, publisher: Publisher
) -> None:
    wire = await publish("retrying", 64, chunk_size=8)  # 8 chunks
    process.start(wire)
    waiting = 0
    for _ in range(64):
        job = await process.next_job()
        if job.index % 8 == 0:  # the first recipient of every chunk: "try again in 30 s"
            job.finish(Outcome.RETRY, "451 greylisted")
            waiting += 1
        else:
            job.finish(Outcome.SENT, "250 ok")
    assert waiting == 8  # every chunk was worked on although each holds a recipient for later

    async def all_but_the_retries_written() -> bool:
        return (await publisher.progress(wire.id)).sent == 56

    await wait_until(all_but_the_retries_written, "outcomes written")
    runner = next(iter(process.dispatcher._sources))
    assert isinstance(runner, CampaignRunner) and len(runner.leases()) == 8  # still held, still renewed


async def test_no_message_starts_once_the_lease_deadline_passed(process: Process, publish: PublishFn) -> None:
    wire = await publish("deadline", 16, chunk_size=8)
    runner = process.start(wire)
    job = await process.next_job()
    assert job.begin()
    job.chunk.deadline = time.monotonic() - 0.001  # a renewal that did not come back in time
    assert not job.begin()  # checked right before MAIL FROM
    job.finish(Outcome.DROP, "no longer ours to send")
    assert runner.take() is None or runner.take() is None  # suspended, not handed out
    leases = runner.leases()
    [(state, lost)] = await process.store.renew_leases(WORKER, 10_000, [(runner.id, leases)])
    runner.renewed(time.monotonic(), 10, state, lost, leases)
    again = await process.next_job()
    assert again.begin()  # the renewal confirmed the lease: it goes out after all


async def test_a_stopped_runner_records_what_was_in_flight_and_releases_only_idle_chunks(
    process: Process, publish: PublishFn, publisher: Publisher
) -> None:
    wire = await publish("stopping", 16, chunk_size=8)
    runner = process.start(wire)
    in_flight = await process.next_job()
    runner.stop()
    assert not in_flight.begin()  # not started yet: it will not start now
    busy = in_flight.chunk.chunk
    assert busy not in {lease[0] for lease in runner.releasable()}  # in a connection's hands
    in_flight.finish(Outcome.SENT, "250 ok")  # as if it had been under way: it ends after the stop
    await runner.drained()
    held = {lease[0] for lease in runner.leases()}
    assert busy in held
    assert await process.acks.flush()
    assert {lease[0] for lease in runner.releasable()} == held
    assert await process.store.release_chunks(runner.id, WORKER, runner.releasable()) == len(held)
    progress = await publisher.progress(wire.id)
    assert progress.sent == 1  # recorded although the runner had stopped


async def test_a_campaign_that_cannot_be_rendered_fails_once_with_its_reason(
    process: Process, publish: PublishFn, publisher: Publisher
) -> None:
    wire = await publish("broken", 10, subject="{% if %}")
    runner = process.start(wire)
    progress = await wait_progress(publisher, wire.id, state="failed", timeout=10)
    assert "template" in progress.reason and progress.pending == 10
    assert process.ended == [runner] and runner.state == "failed" and not runner.crashed


async def test_a_template_that_fails_for_some_recipients_fails_only_them(
    process: Process, publisher: Publisher
) -> None:
    wire = campaign_wire("divide", chunk_size=64, subject="{{ 100 // vars.d }} percent")
    people = [Recipient(f"d{i}@example.org", None, {"d": 0 if i % 7 == 3 else 1}) for i in range(40)]
    await publisher.publish(wire, people)
    process.start(wire)
    for _ in range(40 - 6):  # indexes 3, 10, 17, 24, 31, 38 fail to render
        (await process.next_job()).finish(Outcome.SENT, "250 ok")
    done = await wait_progress(publisher, wire.id, timeout=10)
    assert (done.sent, done.failed) == (34, 6)
    assert set(await publisher.failures(wire.id)) == {3, 10, 17, 24, 31, 38}


async def test_a_template_that_fails_for_everyone_is_the_campaigns_error(
    process: Process, publisher: Publisher
) -> None:
    wire = campaign_wire("undefined", chunk_size=8, subject="{{ vars.nothing.deeper }}")
    await publisher.publish(wire, [Recipient(f"u{i}@example.org") for i in range(30)])
    process.start(wire)
    failed = await wait_progress(publisher, wire.id, state="failed", timeout=10)
    assert "the templates fail for each of the first" in failed.reason and failed.pending == 30


async def test_a_small_campaign_whose_template_fails_for_everyone_ends_failed(
    process: Process, publisher: Publisher
) -> None:
    # Fewer recipients than the threshold: the runner runs out of work and must decide.
    wire = campaign_wire("typo", chunk_size=8, subject="{{ 100 // vars.d }}")
    await publisher.publish(wire, [Recipient(f"t{i}@example.org", None, {"d": 0}) for i in range(3)])
    process.start(wire)
    failed = await wait_progress(publisher, wire.id, state="failed", timeout=10)
    assert "the first 3 recipients" in failed.reason and failed.pending == 3


async def test_template_failures_after_others_were_sent_are_the_recipients_own(
    process: Process, publisher: Publisher, store: Store
) -> None:
    # Another process sent chunk 0; this runner takes chunks 1 and 2, whose every row fails.
    wire = campaign_wire("takeover", chunk_size=8, subject="{{ 100 // vars.d }}")
    people = [Recipient(f"p{i}@example.org", None, {"d": 1 if i < 8 else 0}) for i in range(24)]
    published = await publisher.publish(wire, people)
    elsewhere = await store.claim_chunk(wire.id, "elsewhere", 60_000, 8)
    assert isinstance(elsewhere, ChunkClaim) and elsewhere.chunk == 0
    await store.record_outcomes(
        "elsewhere", {wire.id: (Outcomes(list(range(8)), complete=[(0, elsewhere.token)]), published.chunks)}
    )
    process.start(wire)
    done = await wait_progress(publisher, wire.id, timeout=10)
    assert (done.sent, done.failed) == (8, 16)


async def test_slow_templates_take_at_most_half_of_the_loop(process: Process, publisher: Publisher) -> None:
    # Each message takes some 25-50 ms to render (urlize over a long text): over the 20 ms batch budget,
    # and under the watchdog's 0.5 s even when a busy machine makes it ten times slower.
    text = "see https://acme.example/page and more words " * 1500
    wire = campaign_wire("slow", chunk_size=64, text="{{ vars.t|urlize }}")
    await publisher.publish(wire, [Recipient(f"s{i}@example.org", None, {"t": text}) for i in range(12)])
    # Judged from the renders themselves, not from wall-clock gaps alone: on a busy machine every gap
    # grows, but a batch of two messages is still two, and the loop's share still about half.
    renders: list[tuple[float, float, int]] = []  # (start, end, messages rendered)
    render = process.renderer.render

    def timed_render(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        results = render(*args, **kwargs)
        renders.append((started, time.monotonic(), len(results)))
        return results

    process.renderer.render = timed_render  # type: ignore[method-assign]
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        process.start(wire)
        for _ in range(12):
            (await process.next_job(timeout=30)).finish(Outcome.SENT, "250 ok")
    finally:
        tick.cancel()
    assert [n for _, _, n in renders] == [1] * 12  # one message at a time, never a batch of them
    longest = max(end - start for start, end, _ in renders)
    assert max(gaps) < 2 * longest + 0.2, (max(gaps), longest)  # the loop ran between two renders
    rendering = sum(end - start for start, end, _ in renders)
    span = renders[-1][1] - renders[0][0]
    assert rendering < 0.75 * span, (rendering, span)  # it slept as long as each render took


async def test_a_renewal_answers_only_for_the_leases_it_named(process: Process, publish: PublishFn) -> None:
    wire = await publish("snapshot", 16, chunk_size=8)
    runner = process.start(wire)
    job = await process.next_job()
    chunk = job.chunk
    before = chunk.deadline
    stale = (chunk.chunk, chunk.token - 1)  # an answer about an older claim of the same chunk
    runner.renewed(time.monotonic() + 100, 10, "active", {chunk.chunk}, [stale])
    assert not chunk.lost and chunk.deadline == before  # neither lost nor extended by it
    runner.renewed(time.monotonic(), 10, "active", {chunk.chunk}, [chunk.lease])
    assert chunk.lost  # an answer about this claim is
    job.finish(Outcome.DROP, "no longer ours")


async def test_messages_waiting_for_a_lease_confirmation_count_against_the_cap(
    process: Process, publish: PublishFn
) -> None:
    wire = await publish("suspended", 512, chunk_size=256)
    runner = process.start(wire)
    await wait_until(lambda: len(runner._ready) >= SETTINGS.ready_cap, "the ready queue full")
    for chunk in runner.chunks.values():
        chunk.deadline = time.monotonic() - 1  # Redis away: no renewal confirms the leases
    assert runner.take() is None  # everything goes to the suspended list
    await asyncio.sleep(0.3)  # the producer had every chance to render more
    assert len(runner._ready) + len(runner._suspended) <= SETTINGS.ready_cap


async def test_compiling_large_templates_does_not_stall_the_loop(
    process: Process, publisher: Publisher
) -> None:
    wire = campaign_wire("large", text="{{ name|upper|lower }} " * 4000, html="<p>{{ email|e }}</p>" * 4000)
    await publisher.publish(wire, [Recipient("x@example.org", "X")])
    started, gaps = time.monotonic(), []
    process.start(wire)
    job = None
    while job is None:
        tick = time.monotonic()
        await asyncio.sleep(0.01)
        gaps.append(time.monotonic() - tick)
        with contextlib.suppress(TimeoutError):
            job = await asyncio.wait_for(process.dispatcher.get(), 0.01)
    assert isinstance(job, SendJob)
    job.finish(Outcome.SENT, "250 ok")
    elapsed = time.monotonic() - started
    assert elapsed > 1.0  # it took seconds to compile (3 s here on an idle machine) ...
    # ... and the loop went on meanwhile, but for the moment Python's own compile() of the generated
    # code holds the GIL (0.4 s of the 3 s for these 8,000 tags): a thread cannot avoid that one.
    # A share of the whole rather than seconds, since a busy machine stretches both alike.
    assert max(gaps) < 0.5 * elapsed, (max(gaps), elapsed)
