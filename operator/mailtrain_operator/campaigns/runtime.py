"""What every campaign's driver shares in one operator process: Redis clients, wake-ups, locks, census,
and the progress clock.

One `CampaignRuntime` is made at startup and put into kopf's memo (every handler gets a shallow
copy of the memo, so all of them see this same object).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
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
class _Moving:
    campaign: str  # the gauge's label, `<namespace>/<name>`
    done: int | None  # recipients sent, failed or invalid when last seen; None: not read yet


class ProgressClock:
    """When each Sending campaign last made progress: the
    `mailtrain_operator_campaign_last_progress_timestamp_seconds` gauge, which the stall alert reads.

    The clock starts when a campaign is first seen Sending (by this process: an operator restart or a
    takeover starts it again) and moves whenever its count of recipients done changes, down included:
    a republish after a Redis loss starts the count lower, and is not a stall. A campaign that leaves
    Sending loses its series, so finished campaigns leave nothing behind.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._moving: dict[str, _Moving] = {}  # campaign uid -> what was seen

    def observe(self, uid: str, campaign: str, phase: str | None, done: int | None = None) -> None:
        """`done` None: the phase is known, the count is not (the step had no progress read)."""
        if phase != "Sending":
            self.forget(uid)
            return
        seen = self._moving.get(uid)
        if seen is None:
            self._moving[uid] = _Moving(campaign, done)
            METRICS.campaign_last_progress.labels(campaign).set(self._clock())
        elif done is not None and done != seen.done:
            if seen.done is not None:  # the first count read is where the clock started, not a move
                METRICS.campaign_last_progress.labels(campaign).set(self._clock())
            seen.done = done

    def forget(self, uid: str) -> None:
        seen = self._moving.pop(uid, None)
        if seen is not None:
            with contextlib.suppress(KeyError):
                METRICS.campaign_last_progress.remove(seen.campaign)


@dataclass
class CampaignRuntime:
    settings: OperatorSettings
    clients: RedisClients = field(default_factory=RedisClients)
    wakers: Wakers = field(default_factory=Wakers)
    census: PhaseCensus = field(default_factory=PhaseCensus)
    progress: ProgressClock = field(default_factory=ProgressClock)
    # Held by a campaign's driver while it acts on Redis, and by its deletion: a delete never runs
    # beside a publish, which would write the keys again.
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        self.wakers.forget(uid)
        self.census.forget(uid)
        self.progress.forget(uid)
        self.locks.pop(uid, None)
