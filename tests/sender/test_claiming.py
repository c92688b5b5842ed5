"""Who sends what, with real sender processes: the seed's 2/2/1, limits, spare processes, order."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from redis.asyncio import Redis

from mailtrain_sender.layout import CampaignWire, Store
from mailtrain_sender.publisher import Publisher
from tests.harness.senders import SenderFleet
from tests.harness.smtp_sink import ReceivedMessage, RecordingSink
from tests.sender.conftest import POOL, PublishFn, message_origin, wait_progress, wait_until, work_snapshot


def _by_campaign(messages: list[ReceivedMessage]) -> dict[str, list[ReceivedMessage]]:
    grouped: dict[str, list[ReceivedMessage]] = defaultdict(list)
    for message in messages:
        grouped[message_origin(message)[0]].append(message)
    return grouped


async def _all_live(store: Store, count: int) -> None:
    async def live() -> bool:
        result = await store.rebalance(POOL, "probe", 0, 1, leaving=True)
        return result.workers == count

    await wait_until(live, f"{count} sender processes in the pool")


async def test_seed_example_three_processes_five_campaigns_send_2_2_1_at_once(
    fleet: SenderFleet, smtp_sink: RecordingSink, publish: PublishFn, publisher: Publisher, store: Store
) -> None:
    fleet.start(3, queue={"processes": 3}, smtp={"throttling": {"messagesPerSecond": 400}})
    await _all_live(store, 3)
    campaigns = [await publish(f"seed{i}", 600) for i in range(1, 6)]
    ids = [c.id for c in campaigns]

    async def spread_2_2_1() -> bool:
        snap = await work_snapshot(store.client, ids)
        return sorted(len(c) for c in snap.assigned.values()) == [1, 2, 2]

    await wait_until(spread_2_2_1, "assignment 2/2/1")
    steady = time.time()
    for campaign in campaigns:
        await wait_progress(publisher, campaign.id, timeout=60)

    everything = _by_campaign(smtp_sink.messages())
    # Judge the spread while all five run: once one finishes, the rest are rebalanced on purpose.
    first_done = min(max(m.received_at for m in msgs) for msgs in everything.values())
    window = [m for m in smtp_sink.messages() if steady + 0.5 < m.received_at < first_done - 0.5]
    grouped = _by_campaign(window)
    assert set(grouped) == set(ids), "every campaign was sending once the spread settled"
    senders_of = {c: {m.helo for m in msgs} for c, msgs in grouped.items()}
    assert all(len(s) == 1 for s in senders_of.values()), senders_of  # one process per campaign
    per_process: dict[str, set[str]] = defaultdict(set)
    for campaign, (helo,) in senders_of.items():
        per_process[helo].add(campaign)
    assert sorted(len(c) for c in per_process.values()) == [1, 2, 2]
    # All five at once: every campaign's sending overlaps every other's.
    assert max(min(m.received_at for m in g) for g in grouped.values()) < min(
        max(m.received_at for m in g) for g in grouped.values()
    )
    delivered = {message_origin(m) for m in smtp_sink.messages()}
    assert len(delivered) == 5 * 600  # and nobody was skipped


async def test_limit_per_process_and_priority_order_over_capacity(
    fleet: SenderFleet, publish: PublishFn, publisher: Publisher, redis_client: Redis
) -> None:
    # Published before any sender runs, so what starts when is decided by the registry alone.
    priority = {(await publish(f"prio{p}", 300, priority=p)).id: p for p in (0, 1, 2, 3, 4)}
    ids = list(priority)
    # Slow enough that sending outlasts starting the second process by far.
    fleet.start(
        2, queue={"processes": 2, "maxParallelCampaigns": 1}, smtp={"throttling": {"messagesPerSecond": 120}}
    )

    most: dict[str, int] = defaultdict(int)
    samples = 0
    while [(await publisher.progress(c)).state for c in ids] != ["completed"] * len(ids):
        snap = await work_snapshot(redis_client, ids)
        for worker, held in [*snap.assigned.items(), *snap.leasing.items()]:
            most[worker] = max(most[worker], len(held))
        running = set().union(*snap.assigned.values()) if snap.assigned else set()
        waiting = snap.runnable - running
        if running and waiting:
            # Over capacity, nobody jumps the queue: all that run outrank all that wait.
            assert min(priority[c] for c in running) > max(priority[c] for c in waiting), snap
        samples += 1
        await asyncio.sleep(0.02)
    assert samples > 20
    assert set(most) == {"sender-0", "sender-1"}
    assert max(most.values()) == 1, most  # never two campaigns on one process


async def test_spare_processes_share_one_large_campaign(
    fleet: SenderFleet, smtp_sink: RecordingSink, publish: PublishFn, publisher: Publisher, store: Store
) -> None:
    fleet.start(3, queue={"processes": 3}, smtp={"throttling": {"messagesPerSecond": 300}})
    await _all_live(store, 3)
    campaign = await publish("large", 1500, chunk_size=64)
    await wait_progress(publisher, campaign.id, timeout=60)
    helos = {m.helo for m in smtp_sink.messages()}
    assert helos == {"sender-0", "sender-1", "sender-2"}
    assert len({message_origin(m) for m in smtp_sink.messages()}) == 1500


async def test_a_new_campaign_starts_within_two_seconds(
    fleet: SenderFleet, smtp_sink: RecordingSink, publish: PublishFn, store: Store
) -> None:
    fleet.start(2, queue={"processes": 2}, worker={"rebalanceInterval": 0.5})  # the shipped default
    await _all_live(store, 2)
    published = time.time()
    await publish("prompt", 5)
    first = smtp_sink.wait_for(1, timeout=10)[0]
    assert first.received_at - published < 2.0


async def test_one_process_one_campaign_is_the_old_behaviour(
    fleet: SenderFleet, smtp_sink: RecordingSink, publish: PublishFn, publisher: Publisher
) -> None:
    now = int(time.time() * 1000)
    first: CampaignWire = await publish("first", 120, created_ms=now)
    second = await publish("second", 120, created_ms=now + 1)
    vip = await publish("vip", 120, priority=5, created_ms=now + 2)
    fleet.start(1, queue={"processes": 1, "maxParallelCampaigns": 1})
    await wait_progress(publisher, second.id, timeout=60)
    order = [message_origin(m)[0] for m in sorted(smtp_sink.messages(), key=lambda m: m.received_at)]
    runs = [c for i, c in enumerate(order) if i == 0 or order[i - 1] != c]
    assert runs == [vip.id, first.id, second.id]  # one at a time: no interleaving, priority then age
