"""What the operator does to a running pool, at random: campaigns published, paused, resumed,
re-prioritized and deleted through `Publisher`, and sender.toml rewritten (caps, connections,
throttle).
"""

from __future__ import annotations

import math
import random
import time
import uuid
from typing import Any

from mailtrain_sender.layout import CampaignKeys, CampaignWire, Recipient, text
from tests.soak import options as opt
from tests.soak.ledger import CampaignRecord, Ledger
from tests.soak.rig import SoakRig

CHUNK_SIZES = (8, 16, 32, 64, 128, 256, 512)
PRIORITIES = (-5, 0, 0, 0, 3, 10)
INVALID_SHARE = 0.01  # recipients with an address the sender must refuse without sending
SIZE_RANGE = (16, 2500)


def campaign_recipients(campaign: str, count: int, rng: random.Random) -> tuple[list[Recipient], set[int]]:
    """Addresses that say whose they are; some invalid (a space in the local part), some names non-ASCII."""
    recipients, invalid = [], set()
    for i in range(count):
        if rng.random() < INVALID_SHARE:
            invalid.add(i)
            recipients.append(Recipient(f"broken address {i}@example.org", None))
        else:
            name = f"Jürgen {i}" if rng.random() < 0.1 else f"Reader {i}"
            recipients.append(Recipient(f"r{i}.{campaign}@example.org", name))
    return recipients, invalid


class CampaignOperations:
    def __init__(self, rig: SoakRig) -> None:
        self.rig = rig
        self.published_recipients = 0
        self.budget = int(rig.options.load * rig.options.rate * max(rig.options.duration, 30.0))
        self._serial = 0

    @property
    def ledger(self) -> Ledger:
        return self.rig.ledger

    async def publish(self, rng: random.Random) -> None:
        low, high = SIZE_RANGE
        size = int(math.exp(rng.uniform(math.log(low), math.log(high))))
        chunk, priority = rng.choice(CHUNK_SIZES), rng.choice(PRIORITIES)
        if self.published_recipients + size > self.budget:
            return  # the backlog is as large as the run can drain
        self._serial += 1
        campaign = f"soak{self._serial:03d}-{uuid.UUID(int=rng.getrandbits(128)).hex[:6]}"
        wire = CampaignWire.model_validate(
            {
                "id": campaign,
                "name": f"soak/{campaign}",
                "pool": opt.POOL,
                "from": {"address": f"news@{opt.SENDER_DOMAIN}", "name": "Acme News"},
                "subject": "Hello {{ name }}",
                "text": "Hello {{ name }}, this is " + campaign + ".\n",
                "priority": priority,
                "createdMs": int(time.time() * 1000),
                "chunkSize": chunk,
                "tokenKey": "soak-key",
                "listId": f"<{campaign}.soak.mailtrain.dev>",
            }
        )
        recipients, invalid = campaign_recipients(campaign, size, rng)
        published = await self.rig.publisher.publish(wire, recipients)
        self.published_recipients += size
        self.ledger.campaigns[campaign] = CampaignRecord(published, time.time(), frozenset(invalid))
        self.ledger.record("campaign_publish", campaign, size=size, chunk=chunk, priority=priority)

    async def _state(self, record: CampaignRecord) -> str:
        raw = await self.rig.client.get(CampaignKeys(record.wire.id).state)
        return text(raw) if raw else "missing"

    async def _pick(self, rng: random.Random, states: tuple[str, ...]) -> CampaignRecord | None:
        candidates = [c for c in self.ledger.live_campaigns() if await self._state(c) in states]
        return rng.choice(candidates) if candidates else None

    async def pause(self, rng: random.Random) -> None:
        record = await self._pick(rng, ("active",))
        if record is not None and await self.rig.publisher.pause(record.wire):
            self.ledger.record("campaign_pause", record.wire.id)

    async def resume(self, rng: random.Random) -> None:
        record = await self._pick(rng, ("paused",))
        if record is not None and await self.rig.publisher.resume(record.wire):
            self.ledger.record("campaign_resume", record.wire.id)

    async def reprioritize(self, rng: random.Random) -> None:
        record = await self._pick(rng, ("active",))
        if record is None:
            return
        priority = rng.choice([p for p in PRIORITIES if p != record.wire.priority] or [1])
        if await self.rig.publisher.reprioritize(record.wire, priority):
            self.ledger.record("campaign_priority", record.wire.id, priority=priority)

    async def resume_all(self) -> None:
        """End of the fault phase: a paused campaign would never finish."""
        for record in self.ledger.live_campaigns():
            if await self._state(record) == "paused" and await self.rig.publisher.resume(record.wire):
                self.ledger.note("campaign_resume", record.wire.id, why="faults over")

    async def delete(self, rng: random.Random) -> None:
        # Mostly campaigns still at work: deleting a finished one is routine clean-up.
        states = ("active", "paused") if rng.random() < 0.8 else ("completed", "failed")
        record = await self._pick(rng, states)
        if record is None:
            return
        await self.rig.publisher.delete(record.wire.id, opt.POOL)
        record.deleted_at = time.time()
        self.ledger.record("campaign_delete", record.wire.id)

    def reload_config(self, rng: random.Random) -> None:
        """Rewrite sender.toml: the whole pool (a ConfigMap update), or one process (a rollout caught
        half-way). The throttle is a pool-wide figure, so it only ever changes for the whole pool."""
        what = rng.choice(("cap", "connections", "throttle", "cap+connections"))
        cap, connections = rng.choice((0, 1, 2, 3)), rng.choice((2, 4, 6))
        rate, burst = rng.choice((80.0, 120.0, 160.0)), rng.choice((5, 10, 20))
        pool_wide = what == "throttle" or rng.random() < 0.5
        alive = self.rig.fleet.alive()
        if not alive:
            return
        only = None if pool_wide else rng.choice(alive)
        change: dict[str, Any] = {}
        if "cap" in what:
            change["queue"] = {"maxParallelCampaigns": cap}
        if "connections" in what:
            change["smtp"] = {"maxConnections": connections}
        if what == "throttle":
            change["smtp"] = {"throttling": {"messagesPerSecond": rate, "burst": burst}}
            self.ledger.throttle.append((time.time(), rate, burst))
        self.rig.rewrite_config(change, only)
        target = "pool" if only is None else only.worker_id
        self.ledger.record(f"config_reload_{what}", target, change=change)
