"""The Lua scripts against a real Redis: who works on what, chunk leases, the token bucket."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter

import pytest
from redis.asyncio import Redis

from mailtrain_sender.layout import Inactive, PoolKeys, Store, registry_score
from mailtrain_sender.publisher import Publisher
from tests.sender.conftest import POOL, PublishFn

TTL = 60_000


async def _register(client: Redis, campaigns: dict[str, int]) -> None:
    """Put campaigns (name -> priority) in the registry, in this creation order."""
    for order, (name, priority) in enumerate(campaigns.items()):
        await client.zadd(
            PoolKeys(POOL).registry, {name: registry_score(priority, 1_800_000_000_000 + order)}
        )


async def _round(store: Store, workers: list[str], cap: int = 0) -> dict[str, tuple[str, ...]]:
    """Every worker heartbeats once; returns the resulting assignment."""
    for worker in workers:
        await store.rebalance(POOL, worker, cap, TTL)
    return await store.assignments(POOL)


async def test_seed_example_three_processes_five_campaigns(store: Store, redis_client: Redis) -> None:
    await _register(redis_client, {f"c{i}": 0 for i in range(1, 6)})
    assignment = await _round(store, ["w1", "w2", "w3"])
    assert sorted(len(c) for c in assignment.values()) == [1, 2, 2]
    assert sorted(c for cs in assignment.values() for c in cs) == ["c1", "c2", "c3", "c4", "c5"]
    assert await _round(store, ["w1", "w2", "w3"]) == assignment  # a fixed point: nothing moves


async def test_spare_processes_join_running_campaigns(store: Store, redis_client: Redis) -> None:
    await _register(redis_client, {"big": 5, "small": 0})
    assignment = await _round(store, [f"w{i}" for i in range(5)])
    assert all(len(c) == 1 for c in assignment.values()) and len(assignment) == 5
    assert Counter(c for cs in assignment.values() for c in cs) == {"big": 3, "small": 2}


async def test_over_capacity_waits_in_priority_order_without_preemption(
    store: Store, redis_client: Redis
) -> None:
    await _register(redis_client, {"low": 0, "high": 9, "mid": 5})
    assignment = await _round(store, ["w1", "w2"], cap=1)
    assert sorted(c for cs in assignment.values() for c in cs) == ["high", "mid"]
    await _register(redis_client, {"urgent": 100})  # arrives while both slots are busy
    assignment = await _round(store, ["w1", "w2"], cap=1)
    assert sorted(c for cs in assignment.values() for c in cs) == ["high", "mid"]
    await store.retire(POOL, "mid")
    assignment = await _round(store, ["w1", "w2"], cap=1)
    assert sorted(c for cs in assignment.values() for c in cs) == ["high", "urgent"]


async def test_one_process_one_campaign_goes_in_priority_then_creation_order(
    store: Store, redis_client: Redis
) -> None:
    await _register(redis_client, {"first": 0, "second": 0, "vip": 3})
    order = []
    for _ in range(3):
        (running,) = (await _round(store, ["only"], cap=1))["only"]
        order.append(running)
        await store.retire(POOL, running)
    assert order == ["vip", "first", "second"]


async def test_dead_worker_campaigns_move_to_the_living(store: Store, redis_client: Redis) -> None:
    await _register(redis_client, {f"c{i}": 0 for i in range(4)})
    alone = await store.rebalance(POOL, "doomed", 0, 1)  # a heartbeat that expires after 1 ms
    assert len(alone.campaigns) == 4
    await asyncio.sleep(0.01)
    result = await store.rebalance(POOL, "w1", 0, TTL)
    assert result.expired == 1 and result.workers == 1
    assert sorted(result.campaigns) == ["c0", "c1", "c2", "c3"]
    assert await store.assignments(POOL) == {"w1": ("c0", "c1", "c2", "c3")}


async def test_leaving_hands_campaigns_over_at_once(store: Store, redis_client: Redis) -> None:
    await _register(redis_client, {f"c{i}": 0 for i in range(4)})
    await _round(store, ["w1", "w2"])
    await store.rebalance(POOL, "w2", 0, TTL, leaving=True)
    assert set((await store.assignments(POOL))["w1"]) == {"c0", "c1", "c2", "c3"}


async def test_random_histories_keep_every_invariant(store: Store, redis_client: Redis) -> None:
    rnd = random.Random(7)
    workers: list[str] = []
    campaigns: dict[str, int] = {}
    for step in range(150):
        action = rnd.random()
        if action < 0.25 or not workers:
            workers.append(f"w{step}")
        elif action < 0.4 and len(workers) > 1:
            await store.rebalance(POOL, workers.pop(rnd.randrange(len(workers))), 0, TTL, leaving=True)
        elif action < 0.75:
            campaigns[f"c{step}"] = rnd.randint(-3, 3)
            await _register(redis_client, {f"c{step}": campaigns[f"c{step}"]})
        elif campaigns:
            gone = rnd.choice(sorted(campaigns))
            del campaigns[gone]
            await store.retire(POOL, gone)
        cap = rnd.choice([0, 1, 2, 3])
        assignment = await _round(store, workers, cap)
        loads = [len(assignment.get(w, ())) for w in workers]
        held = Counter(c for cs in assignment.values() for c in cs)
        runnable, live = len(campaigns), len(workers)
        capacity = live * cap if cap else runnable
        assert set(held) <= set(campaigns)
        if cap:
            assert max(loads) <= cap
        if runnable >= live:
            assert all(n == 1 for n in held.values())  # one owner per campaign
            assert len(held) == min(runnable, capacity)
            if not cap:
                assert max(loads) - min(loads) <= 1  # floor or ceiling of C / P
        elif runnable:
            assert loads == [1] * live  # spare processes join
            assert max(held.values()) - min(held.values()) <= 1
        assert all(len(set(cs)) == len(cs) for cs in assignment.values())  # never twice on one worker


async def test_paused_campaign_hands_out_no_chunks(
    publish: PublishFn, publisher: Publisher, store: Store
) -> None:
    wire = await publish("paused", 10, chunk_size=8)
    assert await publisher.pause(wire)
    assert await store.claim_chunk(wire.id, "a", TTL, 8) == Inactive("paused")
    [(state, lost)] = await store.renew_leases("a", TTL, [(wire.id, [])])
    assert (state, lost) == ("paused", set())


async def test_finding_17_unequal_caps_leave_no_campaign_waiting_while_a_worker_has_room(
    store: Store, redis_client: Redis
) -> None:
    # A rolling config change: one worker already runs with cap 1, the other with 5.
    await _register(redis_client, {f"c{i}": 0 for i in range(6)})
    for _ in range(2):
        await store.rebalance(POOL, "w-old", 5, TTL)
        await store.rebalance(POOL, "w-new", 1, TTL)
    assignment = await store.assignments(POOL)
    assert len(assignment["w-new"]) == 1 and len(assignment["w-old"]) == 5
    await _register(redis_client, {"c6": 0})  # over capacity now: it waits, nothing moves
    await store.rebalance(POOL, "w-old", 5, TTL)
    assert await store.assignments(POOL) == assignment


async def test_random_caps_fill_every_slot_they_can(store: Store, redis_client: Redis) -> None:
    rnd = random.Random(11)
    for round_ in range(40):
        await redis_client.flushall()
        caps = {f"w{i}": rnd.choice([0, 1, 1, 2, 3, 5]) for i in range(rnd.randint(1, 5))}
        count = rnd.randint(0, 12)
        await _register(redis_client, {f"c{i}": rnd.randint(-2, 2) for i in range(count)})
        for _ in range(2):
            for worker, cap in caps.items():
                await store.rebalance(POOL, worker, cap, TTL)
        assignment = await store.assignments(POOL)
        loads = {w: len(assignment.get(w, ())) for w in caps}
        assert all(cap == 0 or loads[w] <= cap for w, cap in caps.items()), (round_, caps, loads)
        held = {c for cs in assignment.values() for c in cs}
        capacity = count if 0 in caps.values() else sum(caps.values())
        assert len(held) == min(count, capacity), (round_, caps, count, assignment)


async def test_token_bucket_reserves_tokens_on_the_release_schedule(store: Store) -> None:
    delays = await store.take_tokens(POOL, 100, 10, 12)
    assert delays[:10] == [0.0] * 10  # the bucket starts full: the burst is usable at once
    assert delays[10:] == pytest.approx([0.01, 0.02], abs=0.002)  # then one token per 1/rate
    later = await store.take_tokens(POOL, 100, 10, 3)  # the bucket is in debt: these queue behind
    assert 0 < later[0] <= 0.03  # behind the two borrowed above (less whatever refilled meanwhile)
    assert [b - a for a, b in itertools.pairwise(later)] == pytest.approx([0.01, 0.01])
    await asyncio.sleep(0.3)
    refilled = await store.take_tokens(POOL, 100, 10, 20)
    assert refilled[:10] == [0.0] * 10  # refilled at 100/s, capped at the burst
    assert refilled[10] > 0
