"""The demo's pure part: snapshots in, the live view's model and the summary's checks out."""

from __future__ import annotations

from tests.harness.demo.model import (
    CampaignState,
    PodState,
    Snapshot,
    Timeline,
    is_fair_split,
    rate,
    split_label,
    summarize,
    view_model,
)

PODS = (PodState("p1", True), PodState("p2", True), PodState("p3", True))
UIDS = [f"u{i}" for i in range(5)]


def _campaigns(sent: list[int], total: int = 10, phase: str = "Sending") -> tuple[CampaignState, ...]:
    return tuple(
        CampaignState(f"c{i}", UIDS[i], phase if n < total else "Completed", total, n, 0, 0)
        for i, n in enumerate(sent)
    )


SPLIT_221 = {"p1": frozenset({"u0", "u1"}), "p2": frozenset({"u2", "u3"}), "p3": frozenset({"u4"})}


def _run(steps: list[tuple[float, list[int], dict[str, frozenset[str]]]], mode: str = "parallel") -> Timeline:
    timeline = Timeline()
    for at, sent, assignment in steps:
        timeline.add(Snapshot(at, _campaigns(sent), PODS, assignment, throttle=40))
    return timeline


def test_the_fair_split_is_2_2_1_for_five_campaigns_on_three_processes() -> None:
    campaigns = set(UIDS)
    assert is_fair_split(SPLIT_221, campaigns, 3)
    lopsided = {"p1": frozenset({"u0", "u1", "u2"}), "p2": frozenset({"u3"}), "p3": frozenset({"u4"})}
    assert not is_fair_split(lopsided, campaigns, 3)
    missing_one = {"p1": frozenset({"u0", "u1"}), "p2": frozenset({"u2", "u3"}), "p3": frozenset()}
    assert not is_fair_split(missing_one, campaigns, 3)
    shared = {"p1": frozenset({"u0", "u1"}), "p2": frozenset({"u1", "u2"}), "p3": frozenset({"u3", "u4"})}
    assert not is_fair_split(shared, campaigns, 3)  # a campaign on two processes: 6 holdings, not 5
    assert split_label({"a": ("x", "y"), "b": ("z",), "c": ("v", "w")}) == "2/2/1"


def test_rate_is_messages_per_second_over_the_window() -> None:
    assert rate([(0.0, 0), (2.0, 80)]) == 40.0
    assert rate([(1.0, 5)]) == 0.0
    assert rate([(0.0, 10), (1.0, 5)]) == 0.0  # a count that went back (a republish) is not a rate


def test_a_parallel_run_where_all_five_overlap_passes_every_check() -> None:
    timeline = _run(
        [
            (0.0, [0, 0, 0, 0, 0], {}),
            (1.0, [1, 1, 1, 1, 1], SPLIT_221),
            (2.0, [4, 4, 4, 4, 10], SPLIT_221),
            (3.0, [10, 10, 10, 10, 10], {}),
        ]
    )
    model = view_model(timeline)
    assert model is not None
    assert [p.campaigns for p in model.pods] == [(), (), ()]  # the last snapshot: nothing assigned
    assert model.seed_split_seen == "2/2/1 at 1.0 s"
    assert model.pool_rate == (50 - 5) / 2.0  # over the last 2 s: 5 sent at t=1, 50 at t=3
    summary = summarize(timeline, "parallel")
    assert summary.problems() == []
    assert summary.all_completed and summary.counts_match
    assert summary.seed_split == {"p1": ("c0", "c1"), "p2": ("c2", "c3"), "p3": ("c4",)}
    assert summary.overlap == 1.0  # all started at 1.0; c4 was done first, at 2.0
    assert summary.first_delivery == 1.0
    assert summary.total_time == 2.0 and summary.last_start == 0.0


def test_the_checks_fail_when_the_split_is_not_seen_or_campaigns_do_not_overlap() -> None:
    timeline = _run(
        [
            (1.0, [10, 1, 0, 0, 0], {"p1": frozenset({"u0", "u1", "u2"})}),
            (2.0, [10, 10, 5, 5, 5], {}),
            (3.0, [10, 10, 10, 10, 10], {}),
        ]
    )
    summary = summarize(timeline, "parallel")
    assert summary.overlap is None and not summary.all_at_once
    assert summary.most_per_worker == 3
    problems = summary.problems()
    assert any("never seen" in p for p in problems), problems
    assert any("same time" in p for p in problems), problems
    # In serial mode neither is expected, but more than one campaign per process is a failure.
    serial = summarize(timeline, "serial").problems()
    assert serial == ["a process held 3 campaigns with maxParallelCampaigns 1"]


def test_a_campaign_not_completed_or_short_of_its_total_fails() -> None:
    timeline = Timeline()
    short = CampaignState("c0", "u0", "Completed", 10, 8, 1, 0)  # 9 of 10 accounted
    sending = CampaignState("c1", "u1", "Sending", 10, 10, 0, 0)
    timeline.add(Snapshot(1.0, (short, sending), PODS, {}, throttle=0))
    problems = summarize(timeline, "serial").problems()
    assert len(problems) == 2
    assert "not all Completed" in problems[0] and "c1" in problems[0]
    assert "('c0', 8, 1, 0, 10)" in problems[1]
    assert summarize(Timeline(), "parallel").problems()[0].startswith("not all Completed")
