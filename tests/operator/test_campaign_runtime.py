"""What the drivers share: wake-ups that ignore our own status writes, the phase census behind the
`mailtrain_operator_campaigns` gauge, and the progress clock behind the stall alert's gauge."""

from __future__ import annotations

import asyncio

from mailtrain_operator.campaigns.runtime import CampaignRuntime, PhaseCensus, ProgressClock, Wakers
from mailtrain_operator.metrics import METRICS
from mailtrain_operator.settings import OperatorSettings


def gauge(namespace: str, phase: str) -> float:
    value = METRICS.registry.get_sample_value(
        "mailtrain_operator_campaigns", {"namespace": namespace, "phase": phase}
    )
    return 0.0 if value is None else value


async def test_a_driver_is_woken_by_a_new_generation_or_the_deletion_only() -> None:
    wakers = Wakers()
    event = wakers.register("uid-1")
    assert not wakers.changed("uid-1", 1, None)  # first sight: the driver reads the body anyway
    assert not wakers.changed("uid-1", 1, None)  # a status write: same generation
    assert wakers.changed("uid-1", 2, None)  # a spec edit
    assert wakers.changed("uid-1", 2, "2026-01-01T00:00:00Z")  # the deletion began
    wakers.wake("uid-1")
    await asyncio.wait_for(event.wait(), 1)
    wakers.forget("uid-1")
    wakers.wake("uid-1")  # a campaign without a driver any more: nothing to do


def test_the_census_counts_campaigns_by_namespace_and_phase() -> None:
    census = PhaseCensus()
    census.record("a", "census-ns", "Sending")
    census.record("b", "census-ns", "Sending")
    census.record("c", "census-other", "Paused")
    assert (gauge("census-ns", "Sending"), gauge("census-other", "Paused")) == (2, 1)
    census.record("a", "census-ns", "Completed")
    assert (gauge("census-ns", "Sending"), gauge("census-ns", "Completed")) == (1, 1)
    census.forget("b")
    census.forget("c")
    assert gauge("census-ns", "Sending") == 0 and gauge("census-other", "Paused") == 0
    census.record("a", "census-ns", None)  # no phase yet counts nowhere
    assert gauge("census-ns", "Completed") == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def last_progress(campaign: str) -> float | None:
    return METRICS.registry.get_sample_value(
        "mailtrain_operator_campaign_last_progress_timestamp_seconds", {"campaign": campaign}
    )


def test_the_progress_clock_moves_with_the_count_done_and_only_while_sending() -> None:
    clock = FakeClock()
    progress = ProgressClock(clock)
    progress.observe("u1", "clock-ns/news", "Pending")
    assert last_progress("clock-ns/news") is None  # only Sending campaigns have a series
    progress.observe("u1", "clock-ns/news", "Sending")  # seen Sending before its first count
    assert last_progress("clock-ns/news") == 1_000
    clock.now = 1_010
    progress.observe("u1", "clock-ns/news", "Sending", done=40)  # the first count: where it started
    assert last_progress("clock-ns/news") == 1_000
    clock.now = 1_020
    progress.observe("u1", "clock-ns/news", "Sending", done=40)
    progress.observe("u1", "clock-ns/news", "Sending")  # a step without a progress read
    assert last_progress("clock-ns/news") == 1_000  # no progress: the clock stands
    clock.now = 1_030
    progress.observe("u1", "clock-ns/news", "Sending", done=41)
    assert last_progress("clock-ns/news") == 1_030
    clock.now = 1_040
    progress.observe("u1", "clock-ns/news", "Sending", done=8)  # republished after a Redis loss
    assert last_progress("clock-ns/news") == 1_040
    progress.observe("u1", "clock-ns/news", "Paused", done=8)
    assert last_progress("clock-ns/news") is None
    clock.now = 1_050
    progress.observe("u1", "clock-ns/news", "Sending", done=8)  # resumed: a new start
    assert last_progress("clock-ns/news") == 1_050
    progress.forget("u1")  # the driver ended (deleted, or this replica stopped)
    assert last_progress("clock-ns/news") is None
    progress.forget("u1")  # twice is harmless


def test_the_runtime_forgets_a_campaigns_clock_with_the_rest_of_it() -> None:
    runtime = CampaignRuntime(OperatorSettings())
    runtime.progress.observe("u2", "clock-ns/digest", "Sending", done=0)
    assert last_progress("clock-ns/digest") is not None
    runtime.forget("u2")
    assert last_progress("clock-ns/digest") is None
