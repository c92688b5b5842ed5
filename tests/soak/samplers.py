"""Who works on what, sampled every ~50 ms while the soak runs, and each process's cap checked.

A sample is one MULTI: Redis's clock, the pool's `assign` hash, and for each campaign still at
work its state, chunk `owners` and lease expiries. A chunk is held by a process while the owner
field names it and its lease has not expired on that clock; the owner field may carry a fencing
token (`worker|token`), of which only the worker counts here.

Two rules per live process and sample (dead processes keep stale entries until they expire):

    assigned  campaigns in its `assign` entry <= its cap
    working   assigned campaigns + campaigns it holds live leases on <= its cap, where a leased
              campaign that was in its assignment within CAP_WIND_DOWN does not count (it is being
              wound down: transactions in flight finish, leases are released or run out)

The cap is maxParallelCampaigns as written into that process's sender.toml, and both the old and
the new cap during CAP_RELOAD_TRANSITION after a rewrite, not counting time Redis was paused or down
(0 = unlimited). A missed sample (Redis
paused or down) is counted as skipped, not judged.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from mailtrain_sender.layout import CampaignKeys, PoolKeys
from tests.soak import options as opt
from tests.soak.rig import SoakRig

INTERVAL = 0.05
_FINAL_STATES = {"completed", "failed"}


@dataclass
class Episode:
    """Consecutive samples in which one process broke one rule."""

    worker: str
    rule: str
    first_at: float
    last_at: float
    samples: int = 1
    worst: int = 0
    cap: float = 0
    campaigns: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WorkSample:
    at: float  # Redis's clock, seconds
    assigned: dict[str, set[str]]
    leasing: dict[str, set[str]]  # worker -> campaigns it holds a live lease on
    finished: set[str]  # campaigns seen in a final state


class WorkSampler:
    def __init__(self, rig: SoakRig) -> None:
        self.rig = rig
        self.ledger = rig.ledger
        self.samples = 0
        self.skipped = 0
        self.checks = 0
        self.episodes: list[Episode] = []
        self._open: dict[tuple[str, str], Episode] = {}
        self._last_assigned: dict[tuple[str, str], float] = {}
        self._finished: set[str] = set()

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                sample = await self.snapshot()
            except (RedisError, OSError):
                self.skipped += 1
            else:
                self.samples += 1
                self.judge(sample)
            await asyncio.sleep(max(0.0, INTERVAL - (time.monotonic() - started)))

    async def snapshot(self) -> WorkSample:
        campaigns = [c.wire.id for c in self.ledger.live_campaigns() if c.wire.id not in self._finished]
        pipe = self.rig.sampling_client.pipeline(transaction=True)
        pipe.time()
        pipe.hgetall(PoolKeys(opt.POOL).assign)
        for campaign in campaigns:
            keys = CampaignKeys(campaign)
            pipe.get(keys.state)
            pipe.hgetall(keys.owners)
            pipe.zrange(keys.leases, 0, -1, withscores=True)
        (seconds, micros), assign_raw, *per_campaign = await pipe.execute()
        now = seconds + micros / 1e6
        assigned = {_text(w): set(_text(v).split(",")) - {""} for w, v in assign_raw.items()}
        leasing: dict[str, set[str]] = {}
        finished = set()
        for i, campaign in enumerate(campaigns):
            state, owners, leases = per_campaign[3 * i : 3 * i + 3]
            if state is not None and _text(state) in _FINAL_STATES:
                finished.add(campaign)
            expiries = {_text(chunk): score for chunk, score in leases}
            for chunk, owner in owners.items():
                if expiries.get(_text(chunk), 0.0) > now * 1000:
                    leasing.setdefault(_text(owner).partition("|")[0], set()).add(campaign)
        self._finished |= finished
        return WorkSample(now, assigned, leasing, finished)

    def judge(self, sample: WorkSample) -> None:
        for worker in (set(sample.assigned) | set(sample.leasing)) - self.ledger.dead:
            assigned = sample.assigned.get(worker, set())
            for campaign in assigned:
                self._last_assigned[(worker, campaign)] = sample.at
            winding_down = {
                c
                for c in sample.leasing.get(worker, set()) - assigned
                if sample.at - self._last_assigned.get((worker, c), -math.inf) <= opt.CAP_WIND_DOWN
            }
            working = assigned | (sample.leasing.get(worker, set()) - winding_down)
            cap = self.ledger.cap_allowed(worker, sample.at, opt.CAP_RELOAD_TRANSITION)
            self._rule(worker, "assigned", assigned, cap, sample.at)
            self._rule(worker, "working", working, cap, sample.at)

    def _rule(self, worker: str, rule: str, campaigns: set[str], cap: float, at: float) -> None:
        self.checks += 1
        key = (worker, rule)
        episode = self._open.get(key)
        if len(campaigns) <= cap:
            if episode is not None:
                del self._open[key]
            return
        if episode is None:
            episode = self._open[key] = Episode(worker, rule, at, at, 0, 0, cap)
            self.episodes.append(episode)
        episode.last_at, episode.samples = at, episode.samples + 1
        if len(campaigns) > episode.worst:
            episode.worst, episode.cap, episode.campaigns = len(campaigns), cap, sorted(campaigns)

    def violations(self) -> list[dict[str, Any]]:
        return [
            {
                "worker": e.worker,
                "rule": e.rule,
                "from": self.ledger.relative(e.first_at),
                "to": self.ledger.relative(e.last_at),
                "samples": e.samples,
                "campaigns": e.worst,
                "cap": e.cap,
                "which": e.campaigns,
            }
            for e in self.episodes
        ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
