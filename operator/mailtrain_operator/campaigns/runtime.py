"""What every campaign's driver shares in one operator process: Redis clients, wake-ups, locks, census.

One `CampaignRuntime` is made at startup and put into kopf's memo (every handler gets a shallow
copy of the memo, so all of them see this same object).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from mailtrain_operator.campaigns.redis_clients import RedisClients
from mailtrain_operator.metrics import METRICS, PHASES
from mailtrain_operator.settings import OperatorSettings


class Wakers:
    """Wakes a campaign's driver at once, instead of at its next timed step: when its spec changed
    or it is being deleted, and when its SenderPool appeared, changed or went away. Called on the
    event loop only (asyncio.Event is not thread-safe: handlers that wake are async)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._seen: dict[str, tuple[int, bool]] = {}  # campaign uid -> (generation, being deleted)

    def changed(self, uid: str, generation: int, deletion: object) -> bool:
        """Whether a watch event brings a new spec (or the deletion), rather than our own status."""
        seen = (generation, deletion is not None)
        before, self._seen[uid] = self._seen.get(uid), seen
        return before is not None and before != seen

    def register(self, uid: str) -> asyncio.Event:
        return self._events.setdefault(uid, asyncio.Event())

    def forget(self, uid: str) -> None:
        self._events.pop(uid, None)
        self._seen.pop(uid, None)

    def wake(self, uid: str) -> None:
        event = self._events.get(uid)
        if event is not None:
            event.set()


class PhaseCensus:
    """Campaigns by namespace and phase, for the `mailtrain_operator_campaigns` gauge."""

    def __init__(self) -> None:
        self._phases: dict[str, tuple[str, str]] = {}

    def record(self, uid: str, namespace: str, phase: str | None) -> None:
        before = self._phases.get(uid)
        if phase is None:
            self._phases.pop(uid, None)
        else:
            self._phases[uid] = (namespace, phase)
        if before != self._phases.get(uid):
            self._publish({namespace} | ({before[0]} if before else set()))

    def forget(self, uid: str) -> None:
        before = self._phases.get(uid)
        if before is not None:
            self.record(uid, before[0], None)

    def _publish(self, namespaces: set[str]) -> None:
        counts = Counter(self._phases.values())
        for namespace in namespaces:
            for phase in PHASES:
                METRICS.campaigns.labels(namespace, phase).set(counts[(namespace, phase)])


@dataclass
class CampaignRuntime:
    settings: OperatorSettings
    clients: RedisClients = field(default_factory=RedisClients)
    wakers: Wakers = field(default_factory=Wakers)
    census: PhaseCensus = field(default_factory=PhaseCensus)
    # Held by a campaign's driver while it acts on Redis, and by its deletion: a delete never runs
    # beside a publish, which would write the keys again.
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        self.wakers.forget(uid)
        self.census.forget(uid)
        self.locks.pop(uid, None)
