"""What the drivers share: wake-ups that ignore our own status writes, and the phase census behind the
`mailtrain_operator_campaigns` gauge."""

from __future__ import annotations

import asyncio

from mailtrain_operator.campaigns.runtime import PhaseCensus, Wakers
from mailtrain_operator.metrics import METRICS


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
