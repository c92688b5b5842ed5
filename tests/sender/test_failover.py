"""Crashes and restarts with real processes: nobody skipped, duplicates only from what was in flight."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from mailtrain_sender.publisher import Publisher
from tests.harness.redis_server import RedisServer
from tests.harness.senders import SenderFleet
from tests.harness.smtp_sink import RecordingSink
from tests.sender.conftest import (
    campaign_wire,
    message_origin,
    recipients,
    wait_progress,
    wait_until,
    work_snapshot,
)

# A message may go out twice only if it was in flight at the crash, or the relay had
# accepted it but its outcome was not written yet: within one ackInterval (5 ms) plus
# one Redis round trip. Allow for a loaded machine's event-loop delays and clock reads.
IN_FLIGHT_WINDOW = 0.1


def _deliveries(sink: RecordingSink, campaign: str) -> Counter[int]:
    return Counter(index for c, index in map(message_origin, sink.messages()) if c == campaign)


async def test_sigkill_mid_campaign_loses_nobody_and_duplicates_only_in_flight(
    fleet: SenderFleet, smtp_sink: RecordingSink, publisher: Publisher
) -> None:
    senders = fleet.start(2, queue={"processes": 2}, smtp={"throttling": {"messagesPerSecond": 500}})
    wire = await publisher.publish(campaign_wire("crash", chunk_size=64), recipients("crash", 3000))
    smtp_sink.wait_for(1000, timeout=30)
    senders[0].kill()
    killed_at = time.time()
    await wait_progress(publisher, wire.id, timeout=60)

    counts = _deliveries(smtp_sink, wire.id)
    assert set(counts) == set(range(3000)), "every recipient arrived"
    first_seen: dict[int, float] = {}
    for message in smtp_sink.messages():
        first_seen.setdefault(message_origin(message)[1], message.received_at)
    duplicates = {i for i, n in counts.items() if n > 1}
    assert all(n <= 2 for n in counts.values())
    assert all(killed_at - IN_FLIGHT_WINDOW <= first_seen[i] <= killed_at + 0.05 for i in duplicates), sorted(
        killed_at - first_seen[i] for i in duplicates
    )
    max_connections = 4  # tests.harness.senders.DEFAULTS: at most this many were in flight
    assert len(duplicates) <= max_connections + 500 * IN_FLIGHT_WINDOW
    assert senders[1].metric("mailtrain_sender_lease_takeovers_total") >= 1


async def test_redis_restart_mid_campaign_senders_reconnect_and_finish(
    tmp_path: Path, smtp_sink: RecordingSink, make_fleet: Callable[[str, int], SenderFleet]
) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    # The test's own client reconnects too: it reads progress across the restart.
    client = Redis.from_url(
        server.url, retry=Retry(ConstantBackoff(0.2), 20), retry_on_error=[RedisConnectionError]
    )
    try:
        publisher = Publisher(client)
        fleet = make_fleet(server.url, smtp_sink.port)
        fleet.start(2, queue={"processes": 2}, smtp={"throttling": {"messagesPerSecond": 400}})
        wire = await publisher.publish(campaign_wire("restart", chunk_size=64), recipients("restart", 2000))
        smtp_sink.wait_for(500, timeout=30)
        run_id = (await client.info("server"))["run_id"]
        server.stop()  # SIGTERM writes the append-only file; the new server loads it
        await wait_until(
            lambda: any(p.metric("mailtrain_sender_redis_errors_total") > 0 for p in fleet.processes),
            "senders notice Redis is gone",
        )
        server.start()
        restarted = len(smtp_sink.messages())
        await wait_progress(publisher, wire.id, timeout=60)
        counts = _deliveries(smtp_sink, wire.id)
        assert set(counts) == set(range(2000))
        assert len(smtp_sink.messages()) > restarted  # sending went on after the restart
        assert max(counts.values()) == 1
        assert (await client.info("server"))["run_id"] != run_id  # it really was a new server
        assert all(p.process is not None and p.process.poll() is None for p in fleet.processes)
    finally:
        await client.aclose()
        server.stop()


async def test_redis_losing_everything_is_recovered_by_republishing(
    fleet: SenderFleet, smtp_sink: RecordingSink, publisher: Publisher, redis_client: Redis
) -> None:
    fleet.start(1, smtp={"throttling": {"messagesPerSecond": 300}})
    wire = campaign_wire("amnesia", chunk_size=64)
    await publisher.publish(wire, recipients("amnesia", 1200))
    await wait_until(lambda: len(smtp_sink.messages()) >= 400, "400 messages sent")
    checkpoint = await publisher.progress(wire.id)  # what the operator keeps in the resource's status
    await redis_client.flushall()  # a Redis without persistence restarts empty
    await publisher.republish(wire, recipients("amnesia", 1200), checkpoint.completed_chunks)
    await wait_progress(publisher, wire.id, timeout=60)
    counts = _deliveries(smtp_sink, wire.id)
    assert set(counts) == set(range(1200))
    done_before = {
        i for first, last in checkpoint.completed_chunks for i in range(first * 64, last * 64 + 64)
    }
    assert all(counts[i] == 1 for i in done_before)  # the checkpoint's chunks were not sent again


async def test_sigterm_finishes_in_flight_releases_leases_and_exits_zero(
    fleet: SenderFleet, smtp_sink: RecordingSink, publisher: Publisher
) -> None:
    # Leases far longer than the test: only a release on shutdown can hand the chunks over in time.
    settings: dict[str, Any] = {
        "queue": {"processes": 2},
        "smtp": {"throttling": {"messagesPerSecond": 400}},
        "worker": {"leaseTtl": 120},
    }
    senders = fleet.start(2, **settings)
    wire = await publisher.publish(campaign_wire("drain", chunk_size=64), recipients("drain", 2000))
    smtp_sink.wait_for(400, timeout=30)
    assert senders[0].terminate(timeout=30) == 0
    assert "stopped after" in senders[0].log_text()
    await wait_progress(publisher, wire.id, timeout=30)
    counts = _deliveries(smtp_sink, wire.id)
    assert set(counts) == set(range(2000))
    assert max(counts.values()) == 1  # a graceful stop sends nothing twice


async def test_pause_stops_sending_and_resume_continues_where_it_stopped(
    fleet: SenderFleet, smtp_sink: RecordingSink, publisher: Publisher
) -> None:
    senders = fleet.start(2, queue={"processes": 2}, smtp={"throttling": {"messagesPerSecond": 300}})
    wire = await publisher.publish(campaign_wire("pausing", chunk_size=64), recipients("pausing", 1500))
    smtp_sink.wait_for(300, timeout=30)
    assert await publisher.pause(wire)

    async def let_go() -> bool:
        # Chunks are released only after the transactions in flight have landed and been acknowledged.
        snap = await work_snapshot(publisher.client, [wire.id])
        return not snap.leasing and all(s.metric("mailtrain_sender_campaigns_claimed") == 0 for s in senders)

    await wait_until(let_go, "senders let go of the paused campaign")
    paused_count = len(smtp_sink.messages())
    await asyncio.sleep(1.5)  # an observation period: the count must not move during it
    assert len(smtp_sink.messages()) == paused_count, "nothing is sent while paused"
    assert (await publisher.progress(wire.id)).state == "paused"
    assert await publisher.resume(wire)
    await wait_progress(publisher, wire.id, timeout=60)
    counts = _deliveries(smtp_sink, wire.id)
    assert set(counts) == set(range(1500))
    assert max(counts.values()) == 1
