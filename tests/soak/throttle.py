"""The pool-wide throttle, judged from the relay's side: transactions per window of T seconds.

A sender takes one token per transaction, right before it writes MAIL FROM, so the relay's MAIL
times (every transaction, accepted or refused) are the token use as the relay sees it. Delivery
times would not do: a slow RCPT reply moves a message's arrival by seconds.

Bound for a window [a, a+T): the integral of the rate over it + burst + THROTTLE_JITTER x rate,
with the highest rate and burst in force. A rewritten rate is in force from the moment the file
is written, and the previous one until THROTTLE_RELOAD_TRANSITION later (both hold meanwhile).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from tests.soak import options as opt


@dataclass
class ThrottleVerdict:
    window: float
    checked: int = 0
    exceeded: int = 0
    worst: dict[str, Any] = field(default_factory=dict)


class RateSchedule:
    """The highest (rate, burst) in force at any moment, as a step function."""

    def __init__(self, changes: list[tuple[float, float, int]], transition: float) -> None:
        changes = sorted(changes)
        # Each setting holds from when it was written until the next one has had time to take over.
        spans = [
            (written, changes[i + 1][0] + transition if i + 1 < len(changes) else math.inf, rate, burst)
            for i, (written, rate, burst) in enumerate(changes)
        ]
        points = sorted({s[0] for s in spans} | {s[1] for s in spans if s[1] != math.inf})
        self.points = points
        self.rates: list[float] = []
        self.bursts: list[int] = []
        for start in points:
            live = [(rate, burst) for a, b, rate, burst in spans if a <= start < b]
            self.rates.append(max((r for r, _ in live), default=0.0))
            self.bursts.append(max((b for _, b in live), default=0))

    def _segments(self, a: float, b: float) -> list[tuple[float, float, int]]:
        """(seconds, rate, burst) pieces of [a, b)."""
        i = max(0, bisect.bisect_right(self.points, a) - 1)
        out = []
        while i < len(self.points) and self.points[i] < b:
            start = max(a, self.points[i])
            end = min(b, self.points[i + 1]) if i + 1 < len(self.points) else b
            if end > start:
                out.append((end - start, self.rates[i], self.bursts[i]))
            i += 1
        return out

    def bound(self, a: float, b: float) -> float:
        pieces = self._segments(a, b)
        if not pieces:
            return math.inf
        top_rate = max(rate for _, rate, _ in pieces)
        if top_rate <= 0:  # throttling off: no bound
            return math.inf
        return (
            sum(seconds * rate for seconds, rate, _ in pieces)
            + max(burst for _, _, burst in pieces)
            + opt.THROTTLE_JITTER * top_rate
        )


def check_throttle(
    transactions: list[tuple[float, str]], changes: list[tuple[float, float, int]], started_at: float
) -> list[ThrottleVerdict]:
    schedule = RateSchedule(changes, opt.THROTTLE_RELOAD_TRANSITION)
    times = sorted(at for at, _ in transactions)
    floor_rate = min(rate for _, rate, _ in changes)
    floor_burst = min(burst for _, _, burst in changes)
    verdicts = []
    for window in opt.THROTTLE_WINDOWS:
        verdict = ThrottleVerdict(window)
        cheap = floor_rate * window + floor_burst  # no window under this can break any bound
        j = 0
        for i, start in enumerate(times):
            j = max(j, i)
            while j < len(times) and times[j] < start + window:
                j += 1
            count = j - i
            verdict.checked += 1
            if count <= cheap:
                continue
            bound = schedule.bound(start, start + window)
            if count > bound:
                verdict.exceeded += 1
                excess = count - bound
                if excess > verdict.worst.get("excess", 0):
                    senders: dict[str, int] = {}
                    for at, helo in transactions:
                        if start <= at < start + window:
                            senders[helo] = senders.get(helo, 0) + 1
                    verdict.worst = {
                        "from": round(start - started_at, 3),
                        "transactions": count,
                        "bound": round(bound, 1),
                        "excess": round(excess, 1),
                        "by_sender": senders,
                    }
        verdicts.append(verdict)
    return verdicts
