"""The campaign scripts against a real Redis: fencing tokens, completion, deletion, pause, lost data.

Each test names the finding it pins down (issue 6's numbering).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from mailtrain_sender.layout import (
    CampaignKeys,
    CampaignWire,
    ChunkClaim,
    Inactive,
    Outcomes,
    Recorded,
    Store,
    decode_chunk,
)
from mailtrain_sender.publisher import Publisher
from tests.sender.conftest import PublishFn

TTL = 60_000


async def claim(store: Store, wire: CampaignWire, worker: str, ttl: int = TTL) -> ChunkClaim:
    result = await store.claim_chunk(wire.id, worker, ttl, wire.chunk_size)
    assert isinstance(result, ChunkClaim), result
    return result


async def record(
    store: Store,
    wire: CampaignWire,
    worker: str,
    *,
    sent: Iterable[int] = (),
    failed: dict[int, str] | None = None,
    invalid: dict[int, str] | None = None,
    complete: Iterable[tuple[int, int]] = (),
) -> Recorded:
    outcomes = Outcomes(list(sent), dict(failed or {}), dict(invalid or {}), complete=list(complete))
    result = (await store.record_outcomes(worker, {wire.id: (outcomes, wire.chunks)}))[wire.id]
    assert isinstance(result, Recorded), result
    return result


async def test_claims_take_expired_leases_first_and_skip_what_is_done(
    publish: PublishFn, store: Store
) -> None:
    wire = await publish("leases", 20, chunk_size=8)  # chunks 0..2
    first = await claim(store, wire, "a", ttl=300)
    assert first.chunk == 0 and len(decode_chunk(first.payload)) == 8 and first.previous_owner == ""
    assert (await claim(store, wire, "b")).chunk == 1
    await record(store, wire, "a", sent=[0, 1, 2])
    await asyncio.sleep(0.35)  # a's lease (300 ms) expires
    takeover = await claim(store, wire, "b")
    assert takeover.chunk == 0 and takeover.previous_owner == "a"
    assert takeover.done_bits[:1] == b"\xe0"  # recipients 0, 1, 2 already done: skipped
    assert takeover.token > first.token


async def test_finding_2_a_stale_claim_of_the_same_worker_cannot_touch_the_new_one(
    publish: PublishFn, store: Store
) -> None:
    # One process, two runners of the same campaign: the old one is winding down while
    # the new one has claimed the same chunk back. Only the token tells them apart.
    wire = await publish("fenced", 16, chunk_size=8)
    old = await claim(store, wire, "w", ttl=200)
    await asyncio.sleep(0.25)
    new = await claim(store, wire, "w")
    assert (new.chunk, new.previous_owner) == (old.chunk, "w") and new.token != old.token

    assert await store.release_chunks(wire.id, "w", [(old.chunk, old.token)]) == 0
    (state, lost), (_, kept) = await store.renew_leases(
        "w", TTL, [(wire.id, [(old.chunk, old.token)]), (wire.id, [(new.chunk, new.token)])]
    )
    assert (state, lost, kept) == ("active", {old.chunk}, set())
    done = await record(store, wire, "w", complete=[(old.chunk, old.token)])
    assert done.owned == (False,) and done.completed == 0
    done = await record(store, wire, "w", complete=[(new.chunk, new.token)])
    assert done.owned == (True,) and done.completed == 1


async def test_finding_4_a_campaign_completed_while_paused_is_completed(
    publish: PublishFn, publisher: Publisher, store: Store
) -> None:
    wire = await publish("pausing", 8, chunk_size=8)
    only = await claim(store, wire, "w")
    assert await publisher.pause(wire)  # the last chunk is still in flight
    result = await record(store, wire, "w", sent=range(8), complete=[(only.chunk, only.token)])
    assert (result.state, result.completed) == ("completed", 1)
    assert not await publisher.resume(wire)  # nothing to resume: it stays completed, out of the registry
    assert (await publisher.progress(wire.id)).state == "completed"
    assert not await publisher.pause(wire)  # and a late pause cannot overwrite the completion
    assert (await publisher.progress(wire.id)).state == "completed"


async def test_finding_4_pause_and_resume_repair_an_interrupted_call(
    publish: PublishFn, publisher: Publisher, redis_client: Redis, store: Store
) -> None:
    wire = await publish("interrupted", 8)
    registry = f"mt:{{p:{wire.pool}}}:registry"
    await store.swap_state(wire.id, "active", "paused")  # a pause that died before leaving the registry
    assert not await publisher.pause(wire)
    assert await redis_client.zscore(registry, wire.id) is None
    await store.swap_state(wire.id, "paused", "active")  # a resume that died before registering
    assert not await publisher.resume(wire)
    assert await redis_client.zscore(registry, wire.id) is not None


async def test_finding_5_a_chunk_with_missing_recipients_fails_the_campaign(
    publish: PublishFn, publisher: Publisher, redis_client: Redis, store: Store
) -> None:
    wire = await publish("evicted", 16, chunk_size=8)
    await cast("Awaitable[int]", redis_client.hdel(CampaignKeys(wire.id).rcpt, "0"))  # as an eviction would
    assert await store.claim_chunk(wire.id, "w", TTL, 8) == Inactive("failed")
    progress = await publisher.progress(wire.id)
    assert progress.state == "failed" and "chunk 0" in progress.reason and "noeviction" in progress.reason
    assert progress.sent == 0 and progress.completed_chunks == []  # nothing counts as sent


async def test_finding_7_nothing_written_after_a_delete_brings_keys_back(
    publish: PublishFn, publisher: Publisher, redis_client: Redis, store: Store
) -> None:
    wire = await publish("deleted", 16, chunk_size=8)
    held = await claim(store, wire, "w")
    await publisher.delete(wire.id, wire.pool)
    result = await record(store, wire, "w", sent=[0, 1], failed={2: "550 no"}, complete=[(0, held.token)])
    assert result.state == "missing" and result.owned == ()
    assert await store.release_chunks(wire.id, "w", [(held.chunk, held.token)]) == 0
    [(state, lost)] = await store.renew_leases("w", TTL, [(wire.id, [(held.chunk, held.token)])])
    assert (state, lost) == ("missing", None)
    assert await store.claim_chunk(wire.id, "w", TTL, 8) == Inactive("missing")
    assert await store.fail_campaign(wire.id, "late") == "missing"
    assert await redis_client.keys(f"*{wire.id}*") == []


async def test_leases_survive_a_redis_pause_longer_than_their_ttl(publish: PublishFn, store: Store) -> None:
    # Redis's clock runs on while it is paused; a holder that could not renew must not find its
    # chunk taken over the moment Redis answers again (its outcomes may still be unwritten).
    wire = await publish("frozen", 16, chunk_size=8)
    ttl = 400
    held = await claim(store, wire, "holder", ttl=ttl)
    await asyncio.sleep(0.6)  # nothing touches the campaign: as if Redis were stopped (gap > ttl/2)
    assert (await claim(store, wire, "other", ttl=ttl)).chunk != held.chunk
    lease = await store.client.zscore(CampaignKeys(wire.id).leases, str(held.chunk))
    now_ms = time.time() * 1000
    assert lease is not None and lease > now_ms + ttl / 2 - 50  # extended, not taken over
    [(state, lost)] = await store.renew_leases("holder", ttl, [(wire.id, [(held.chunk, held.token)])])
    assert (state, lost) == ("active", set())


async def test_a_lease_that_expired_while_others_were_active_is_taken_over_at_once(
    publish: PublishFn, store: Store
) -> None:
    wire = await publish("dead", 24, chunk_size=8)
    dead = await claim(store, wire, "dead", ttl=300)
    alive = await claim(store, wire, "alive", ttl=300)
    for _ in range(8):  # the live holder renews, which keeps the campaign's clock going
        await asyncio.sleep(0.05)
        [(_, lost)] = await store.renew_leases("alive", 300, [(wire.id, [(alive.chunk, alive.token)])])
        assert lost == set()
    taken = await claim(store, wire, "alive", ttl=300)
    assert (taken.chunk, taken.previous_owner) == (dead.chunk, "dead")  # no pause: taken over at once


async def test_outcomes_set_the_bits_and_keep_the_replies(
    publish: PublishFn, publisher: Publisher, store: Store
) -> None:
    wire = await publish("counts", 20, chunk_size=8)
    held = await claim(store, wire, "w")
    outcomes = Outcomes([0, 1, 2, 3, 4], {5: "550 5.1.1 no such user"}, {6: "bad", 7: "worse"}, 3, 1)
    outcomes.complete.append((held.chunk, held.token))
    result = (await store.record_outcomes("w", {wire.id: (outcomes, wire.chunks)}))[wire.id]
    assert result == Recorded("active", 1, (True,))
    progress = await publisher.progress(wire.id)
    assert (progress.sent, progress.failed, progress.invalid, progress.deferred) == (5, 1, 2, 3)
    assert (progress.pending, progress.ambiguous, progress.completed_chunks) == (12, 1, [(0, 0)])
    assert await publisher.failures(wire.id) == {5: "550 5.1.1 no such user", 6: "bad", 7: "worse"}


async def test_a_campaign_whose_write_redis_refuses_does_not_hold_up_the_others(
    publish: PublishFn, store: Store, redis_client: Redis
) -> None:
    damaged, healthy = await publish("damaged", 8, chunk_size=8), await publish("healthy", 8, chunk_size=8)
    await redis_client.delete(CampaignKeys(damaged.id).done)
    await cast("Awaitable[int]", redis_client.lpush(CampaignKeys(damaged.id).done, "x"))  # WRONGTYPE now
    results = await store.record_outcomes(
        "w", {c.id: (Outcomes([0, 1]), c.chunks) for c in (damaged, healthy)}
    )
    assert isinstance(results[damaged.id], ResponseError)
    assert isinstance(results[healthy.id], Recorded)
    assert await store.sent(healthy.id) == 2
