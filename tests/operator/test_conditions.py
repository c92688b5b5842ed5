"""Conditions: set by type, with lastTransitionTime moving only when the status does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailtrain_operator import conditions

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_a_new_condition_starts_now() -> None:
    [ready] = conditions.set_condition(None, "Ready", True, "AllReady", "3 of 3 ready", generation=2, now=T0)
    assert (ready.type, ready.status, ready.reason, ready.observed_generation) == (
        "Ready",
        "True",
        "AllReady",
        2,
    )
    assert ready.last_transition_time == T0


def test_the_transition_time_stays_while_the_status_does() -> None:
    first = conditions.set_condition(None, "Ready", True, "AllReady", "3 of 3 ready", generation=1, now=T0)
    again = conditions.set_condition(first, "Ready", True, "AllReady", "3 of 3 ready", generation=1, now=T1)
    assert again == first  # nothing changed, so there is nothing to write
    reworded = conditions.set_condition(
        first, "Ready", True, "AllReady", "4 of 4 ready", generation=2, now=T1
    )
    assert reworded[0].last_transition_time == T0 and reworded[0].message == "4 of 4 ready"
    flipped = conditions.set_condition(
        first, "Ready", False, "NotReady", "1 of 3 ready", generation=2, now=T1
    )
    assert flipped[0].last_transition_time == T1 and flipped[0].status == "False"


def test_other_conditions_keep_their_place() -> None:
    both = conditions.set_condition(None, "Ready", True, "AllReady", "ok", generation=1, now=T0)
    both = conditions.set_condition(both, "Degraded", False, "AsSpecified", "ok", generation=1, now=T0)
    updated = conditions.set_condition(both, "Ready", None, "Unknown", "no pods yet", generation=1, now=T1)
    assert [c.type for c in updated] == ["Ready", "Degraded"]
    assert updated[0].status == "Unknown" and updated[1] == both[1]
    assert conditions.is_true(updated, "Degraded") is False and conditions.find(updated, "Complete") is None
