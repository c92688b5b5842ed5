"""What the demo shows, computed from what it observed: pure functions and plain data, no I/O.

observe.py turns the cluster and Redis into a `Snapshot` a few times a second; `Timeline` keeps what
the view and the summary need from the snapshots (when each campaign first and last sent, whether the
seed's 2/2/1 was seen); `view_model` and `summarize` build what view.py draws. The unit tests feed them
made-up snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RATE_WINDOW = 2.0  # seconds of history a rate is measured over


@dataclass(frozen=True)
class CampaignState:
    """One MailCampaign: its status from the API, and its live counts from Redis."""

    name: str
    uid: str
    phase: str  # status.phase ("" before the operator wrote one)
    total: int  # recipients (0 until published)
    sent: int
    failed: int
    invalid: int


@dataclass(frozen=True)
class PodState:
    name: str
    ready: bool


@dataclass(frozen=True)
class Snapshot:
    at: float  # seconds since the campaigns were applied
    campaigns: tuple[CampaignState, ...]
    pods: tuple[PodState, ...]  # the pool's sender pods
    assignment: dict[str, frozenset[str]]  # worker (pod name) -> campaign uids, the pool's `assign` hash
    throttle: float  # the pool's messagesPerSecond (0: none)
    delivered: int = 0  # messages the relay holds (-1: unknown)


@dataclass
class CampaignTimes:
    first_sent: float | None = None  # first snapshot with sent > 0
    last_sent: float | None = None  # first snapshot with every recipient done
    history: list[tuple[float, int]] = field(default_factory=list)  # (at, sent) within RATE_WINDOW


@dataclass
class Timeline:
    """Folds snapshots, oldest first."""

    last: Snapshot | None = None
    times: dict[str, CampaignTimes] = field(default_factory=dict)  # by campaign name
    pool_history: list[tuple[float, int]] = field(default_factory=list)
    first_delivery: float | None = None  # first snapshot in which a message had been sent
    seed_split_at: float | None = None  # first snapshot with all campaigns spread as the seed says
    seed_split: dict[str, tuple[str, ...]] = field(default_factory=dict)  # worker -> campaign names, then
    most_per_worker: int = 0  # the most campaigns one worker held in any snapshot

    def add(self, snap: Snapshot) -> None:
        self.last = snap
        for c in snap.campaigns:
            times = self.times.setdefault(c.name, CampaignTimes())
            if c.sent > 0 and times.first_sent is None:
                times.first_sent = snap.at
            if c.total > 0 and _done(c) >= c.total and times.last_sent is None:
                times.last_sent = snap.at
            _keep(times.history, snap.at, c.sent)
        total_sent = sum(c.sent for c in snap.campaigns)
        _keep(self.pool_history, snap.at, total_sent)
        if total_sent > 0 and self.first_delivery is None:
            self.first_delivery = snap.at
        names = {c.uid: c.name for c in snap.campaigns}
        held = [len(cs & names.keys()) for cs in snap.assignment.values()]
        self.most_per_worker = max([self.most_per_worker, *held])
        if self.seed_split_at is None and is_fair_split(snap.assignment, set(names), len(snap.pods)):
            self.seed_split_at = snap.at
            self.seed_split = {
                w: tuple(sorted(names[c] for c in cs & names.keys()))
                for w, cs in sorted(snap.assignment.items())
            }


def _done(c: CampaignState) -> int:
    return c.sent + c.failed + c.invalid


def _keep(history: list[tuple[float, int]], at: float, value: int) -> None:
    history.append((at, value))
    while len(history) > 2 and history[1][0] <= at - RATE_WINDOW:
        history.pop(0)


def rate(history: list[tuple[float, int]]) -> float:
    """Per second, over the history kept (RATE_WINDOW)."""
    if len(history) < 2 or history[-1][0] <= history[0][0]:
        return 0.0
    return max(0.0, (history[-1][1] - history[0][1]) / (history[-1][0] - history[0][0]))


def is_fair_split(assignment: dict[str, frozenset[str]], campaigns: set[str], processes: int) -> bool:
    """Every campaign assigned, and each of `processes` workers holds ⌊C/P⌋ or ⌈C/P⌉ of them, each
    campaign on one worker: 3 processes and 5 campaigns give 2/2/1."""
    if not campaigns or processes <= 0:
        return False
    held = [cs & campaigns for cs in assignment.values() if cs & campaigns]
    if len(held) != min(processes, len(campaigns)) or sum(len(h) for h in held) != len(campaigns):
        return False
    low, high = len(campaigns) // processes, -(-len(campaigns) // processes)
    return set().union(*held) == campaigns and all(low <= len(h) <= high for h in held)


def split_label(split: dict[str, tuple[str, ...]]) -> str:
    """'2/2/1' from worker -> campaigns."""
    return "/".join(str(n) for n in sorted((len(cs) for cs in split.values() if cs), reverse=True))


# -- the live view ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignRow:
    name: str
    phase: str
    done: int
    total: int
    sent: int
    failed: int
    rate: float


@dataclass(frozen=True)
class PodRow:
    name: str
    ready: bool
    campaigns: tuple[str, ...]


@dataclass(frozen=True)
class ViewModel:
    at: float
    campaigns: tuple[CampaignRow, ...]
    pods: tuple[PodRow, ...]
    split: str  # e.g. "2/2/1" right now ("" when nothing is assigned)
    pool_rate: float
    throttle: float
    delivered: int
    seed_split_seen: str  # "2/2/1 at 3.2 s", or ""


def view_model(timeline: Timeline) -> ViewModel | None:
    snap = timeline.last
    if snap is None:
        return None
    names = {c.uid: c.name for c in snap.campaigns}
    rows = tuple(
        CampaignRow(
            c.name,
            c.phase or "Pending",
            _done(c),
            c.total,
            c.sent,
            c.failed,
            rate(timeline.times[c.name].history),
        )
        for c in snap.campaigns
    )
    pods = tuple(
        PodRow(p.name, p.ready, tuple(sorted(names.get(u, u[:8]) for u in snap.assignment.get(p.name, ()))))
        for p in snap.pods
    )
    split = split_label({p.name: p.campaigns for p in pods})
    seen = ""
    if timeline.seed_split_at is not None:
        seen = f"{split_label(timeline.seed_split)} at {timeline.seed_split_at:.1f} s"
    return ViewModel(
        snap.at, rows, pods, split, rate(timeline.pool_history), snap.throttle, snap.delivered, seen
    )


# -- the summary --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignResult:
    name: str
    phase: str
    total: int
    sent: int
    failed: int
    invalid: int
    first_sent: float | None
    last_sent: float | None


@dataclass(frozen=True)
class Summary:
    mode: str  # parallel | serial
    campaigns: tuple[CampaignResult, ...]
    all_completed: bool
    counts_match: bool  # every campaign: sent + failed + invalid == total > 0
    seed_split: dict[str, tuple[str, ...]]  # worker -> campaigns, when the fair split was first seen
    most_per_worker: int
    overlap: float | None  # seconds all campaigns were sending at once; None if they never were
    first_delivery: float | None  # seconds from apply to the first message sent
    # Both from the first message on, so that a run whose operator was still starting compares fairly:
    total_time: float | None  # seconds until the last campaign was done
    last_start: float | None  # seconds until the last campaign to start sent its first message

    @property
    def all_at_once(self) -> bool:
        return self.overlap is not None and self.overlap > 0

    def problems(self) -> list[str]:
        """What the headless test asserts, one line per check that failed (empty: all held)."""
        found = []
        if not self.all_completed:
            found.append(f"not all Completed: {[(c.name, c.phase) for c in self.campaigns]}")
        if not self.counts_match:
            counts = [(c.name, c.sent, c.failed, c.invalid, c.total) for c in self.campaigns]
            found.append(
                f"sent + failed + invalid is not the total (name, sent, failed, invalid, total): {counts}"
            )
        if self.mode == "parallel":
            if not self.seed_split:
                found.append("the fair split (2/2/1 for 5 campaigns on 3 processes) was never seen")
            if not self.all_at_once:
                found.append("the campaigns never all sent at the same time")
        elif self.most_per_worker > 1:
            found.append(f"a process held {self.most_per_worker} campaigns with maxParallelCampaigns 1")
        return found


def summarize(timeline: Timeline, mode: str) -> Summary:
    snap = timeline.last
    campaigns = snap.campaigns if snap is not None else ()
    results = tuple(
        CampaignResult(
            c.name,
            c.phase,
            c.total,
            c.sent,
            c.failed,
            c.invalid,
            timeline.times[c.name].first_sent,
            timeline.times[c.name].last_sent,
        )
        for c in campaigns
    )
    firsts = [r.first_sent for r in results]
    lasts = [r.last_sent for r in results]
    overlap = None
    if results and None not in firsts and None not in lasts:
        start, end = max(f for f in firsts if f is not None), min(x for x in lasts if x is not None)
        overlap = end - start if end > start else None
    return Summary(
        mode=mode,
        campaigns=results,
        all_completed=bool(results) and all(r.phase == "Completed" for r in results),
        counts_match=bool(results) and all(0 < r.total == r.sent + r.failed + r.invalid for r in results),
        seed_split=dict(timeline.seed_split),
        most_per_worker=timeline.most_per_worker,
        overlap=overlap,
        first_delivery=timeline.first_delivery,
        total_time=None if None in lasts or None in firsts else _spread(lasts, firsts),
        last_start=None if None in firsts else _spread(firsts, firsts),
    )


def _spread(ends: list[float | None], starts: list[float | None]) -> float | None:
    """The latest of `ends` minus the earliest of `starts`."""
    known_ends = [x for x in ends if x is not None]
    known_starts = [x for x in starts if x is not None]
    if not known_ends or not known_starts:
        return None
    return max(known_ends) - min(known_starts)
