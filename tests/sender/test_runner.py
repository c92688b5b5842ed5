"""CampaignRunner in-process, against a real Redis, with the test playing the SMTP connections.

The runner needs only its RunnerContext, so these tests drive it directly: take
jobs as a connection would, finish them with any outcome, renew its leases, stop
it, and look at what it wrote.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from mailtrain_sender.acks import AckBuffer
from mailtrain_sender.campaigns import CampaignRunner, RunnerContext, RunnerSettings
from mailtrain_sender.chunks import SendJob
from mailtrain_sender.dispatch import Dispatcher
from mailtrain_sender.layout import CampaignWire, Recipient, Store
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
    [(state, lost)] = await process.store.renew_leases(WORKER, 10_000, [(runner.id, runner.leases())])
    runner.renewed(time.monotonic(), 10, state, lost)
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
