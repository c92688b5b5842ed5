"""What the soak did and when: the record the invariants are judged against.

Times are `time.time()` seconds, the clock the relay stamps messages with and, on one machine,
the clock Redis answers TIME with.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mailtrain_sender.layout import CampaignWire


@dataclass(frozen=True)
class Event:
    at: float
    kind: str
    target: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    fault: bool = True  # False: something the soak did that is not a fault (a replacement, healing)


@dataclass
class CampaignRecord:
    wire: CampaignWire
    published_at: float
    invalid: frozenset[int]  # recipients published with an address that must be refused
    deleted_at: float | None = None  # when Publisher.delete returned


@dataclass
class Violation:
    invariant: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ledger:
    started_at: float = field(default_factory=time.time)
    events: list[Event] = field(default_factory=list)
    campaigns: dict[str, CampaignRecord] = field(default_factory=dict)
    kills: list[tuple[float, str]] = field(default_factory=list)  # (when, worker): every SIGKILL
    dead: set[str] = field(default_factory=set)  # workers that exited or were told to
    caps: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # worker -> (written, cap)
    throttle: list[tuple[float, float, int]] = field(default_factory=list)  # (written, rate, burst)
    redis_outages: list[list[float]] = field(default_factory=list)  # [from, until]: paused or down
    violations: list[Violation] = field(default_factory=list)
    sigterms_checked: int = 0

    def record(self, kind: str, target: str = "", **detail: Any) -> Event:
        """A fault injected (counted in the report by kind)."""
        return self._add(Event(time.time(), kind, target, detail))

    def note(self, kind: str, target: str = "", **detail: Any) -> Event:
        """Something else worth a line in the log and a place on the timeline."""
        return self._add(Event(time.time(), kind, target, detail, fault=False))

    def _add(self, event: Event) -> Event:
        self.events.append(event)
        extra = " ".join(f"{k}={v}" for k, v in event.detail.items())
        mark = "" if event.fault else "  . "
        print(
            f"[{event.at - self.started_at:7.1f}s] {mark}{event.kind} {event.target} {extra}".rstrip(),
            flush=True,
        )
        return event

    def violate(self, invariant: str, message: str, **detail: Any) -> None:
        self.violations.append(Violation(invariant, message, detail))
        print(f"[{time.time() - self.started_at:7.1f}s] VIOLATION {invariant}: {message}", flush=True)

    def fault_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(e.kind for e in self.events if e.fault).items()))

    def live_campaigns(self) -> list[CampaignRecord]:
        return [c for c in self.campaigns.values() if c.deleted_at is None]

    def set_cap(self, worker: str, cap: int, at: float | None = None) -> None:
        self.caps.setdefault(worker, []).append((time.time() if at is None else at, cap))

    def redis_down(self, at: float) -> None:
        self.redis_outages.append([at, math.inf])

    def redis_up(self, at: float) -> None:
        if self.redis_outages and self.redis_outages[-1][1] == math.inf:
            self.redis_outages[-1][1] = at

    def transition_end(self, written: float, transition: float) -> float:
        """`transition` seconds of Redis being up after `written`: a new cap reaches the pool's
        assignment only through Redis, so time Redis was paused or down does not count."""
        end = written + transition
        for start, until in sorted(self.redis_outages):
            if start < end and until > written:
                end += until - max(start, written)  # inf while the outage lasts
        return end

    def cap_allowed(self, worker: str, at: float, transition: float) -> float:
        """The highest cap the worker may be holding to at `at` (inf = unlimited, cap 0)."""
        allowed = -1.0
        history = self.caps.get(worker, [])
        for i, (written, cap) in enumerate(history):
            value = math.inf if cap == 0 else float(cap)
            next_end = (
                self.transition_end(history[i + 1][0], transition) if i + 1 < len(history) else math.inf
            )
            # In force from when it was written until the next one has had time to take over.
            if written <= at < next_end:
                allowed = max(allowed, value)
        return allowed if allowed >= 0 else math.inf

    def relative(self, at: float) -> float:
        return round(at - self.started_at, 3)
