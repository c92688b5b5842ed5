"""Fixtures for the sender: a publisher on the test's Redis, campaigns, and fleets of sender processes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from mailtrain_sender.layout import CampaignKeys, CampaignWire, PoolKeys, Recipient, Store, lease_holder
from mailtrain_sender.publisher import Publisher
from tests.harness.senders import SenderFleet
from tests.harness.smtp_sink import ReceivedMessage, RecordingSink

POOL = "test-pool"


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def publisher(redis_client: Redis) -> Publisher:
    return Publisher(redis_client)


@pytest.fixture
def store(redis_client: Redis) -> Store:
    return Store(redis_client)


def campaign_wire(
    name: str,
    *,
    pool: str = POOL,
    priority: int = 0,
    created_ms: int | None = None,
    chunk_size: int = 64,
    **content: Any,
) -> CampaignWire:
    fields: dict[str, Any] = {
        "id": f"{name}-{uuid.uuid4().hex[:8]}",
        "name": f"test/{name}",
        "pool": pool,
        "from": {"address": "news@acme.example", "name": "Acme News"},
        "subject": f"[{name}] Hello {{{{ name }}}}",
        "text": "Hello {{ name }}, this is " + name + ".\n",
        "priority": priority,
        "createdMs": created_ms if created_ms is not None else int(time.time() * 1000),
        "chunkSize": chunk_size,
        "tokenKey": "test-key",
        "listId": f"<{name}.test.mailtrain.dev>",
    }
    fields.update(content)
    return CampaignWire.model_validate(fields)


def recipients(name: str, count: int, start: int = 0) -> list[Recipient]:
    return [Recipient(f"{name}.{i}@example.org", f"User {i}") for i in range(start, start + count)]


PublishFn = Callable[..., Any]


@pytest.fixture
def publish(publisher: Publisher) -> PublishFn:
    """publish(name, count, **wire fields) -> the published CampaignWire."""

    async def publish(name: str, count: int, **kwargs: Any) -> CampaignWire:
        wire = campaign_wire(name, **kwargs)
        return await publisher.publish(wire, recipients(name, count))

    return publish


@pytest.fixture
def make_fleet(tmp_path: Path) -> Iterator[Callable[[str, int], SenderFleet]]:
    """make_fleet(redis_url, smtp_port): sender processes on any Redis and relay, all stopped at the end."""
    fleets: list[SenderFleet] = []

    def make(redis_url: str, smtp_port: int) -> SenderFleet:
        fleets.append(SenderFleet(tmp_path / f"senders-{len(fleets)}", redis_url, smtp_port, POOL))
        return fleets[-1]

    yield make
    for senders in fleets:
        senders.stop_all()


@pytest.fixture
def fleet(
    make_fleet: Callable[[str, int], SenderFleet], redis_url: str, smtp_sink: RecordingSink
) -> SenderFleet:
    """Sender processes on the test's Redis and recording sink."""
    return make_fleet(redis_url, smtp_sink.port)


async def wait_progress(
    publisher: Publisher, campaign: str, *, state: str = "completed", timeout: float = 60
) -> Any:
    """Poll the campaign's progress until it reaches `state`; return it."""
    deadline = time.monotonic() + timeout
    while True:
        progress = await publisher.progress(campaign)
        if progress.state == state:
            return progress
        if time.monotonic() > deadline:
            raise AssertionError(f"campaign {campaign} still {progress} after {timeout}s")
        await asyncio.sleep(0.1)


async def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 30) -> None:
    """Await an async or plain predicate until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


def message_origin(message: ReceivedMessage) -> tuple[str, int]:
    """(campaign id, recipient index) from the Message-ID the sender writes: <campaign.index@domain>."""
    local = str(message.message["Message-ID"]).strip("<>").rpartition("@")[0]
    campaign, _, index = local.rpartition(".")
    return campaign, int(index)


@dataclass(frozen=True)
class WorkSnapshot:
    assigned: dict[str, set[str]]  # worker -> campaigns the pool's assignment gives it
    leasing: dict[str, set[str]]  # worker -> campaigns it holds chunk leases on
    runnable: set[str]  # campaigns in the registry (published, not paused, not complete)


async def work_snapshot(client: Redis, campaigns: list[str]) -> WorkSnapshot:
    """One atomic read of who works on what."""
    pipe = client.pipeline(transaction=True)
    pipe.hgetall(PoolKeys(POOL).assign)
    pipe.zrange(PoolKeys(POOL).registry, 0, -1)
    for campaign in campaigns:
        pipe.hgetall(CampaignKeys(campaign).owners)
    assign_raw, registry, *owners = await pipe.execute()
    assigned = {w.decode(): set(v.decode().split(",")) - {""} for w, v in assign_raw.items()}
    leasing: dict[str, set[str]] = {}
    for campaign, chunk_owners in zip(campaigns, owners, strict=True):
        for worker in chunk_owners.values():  # each value: worker|fencing token
            leasing.setdefault(lease_holder(worker.decode()), set()).add(campaign)
    return WorkSnapshot(assigned, leasing, {c.decode() for c in registry})
