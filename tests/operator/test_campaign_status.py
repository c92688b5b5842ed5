"""The pure core of the campaign status: from why it waits or from its Progress, to status and Events."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from mailtrain_operator.api import MailCampaignStatus, to_status
from mailtrain_operator.campaigns import status
from mailtrain_operator.campaigns.objects import merge_patch
from mailtrain_operator.campaigns.status import Waiting
from mailtrain_sender.publisher import Progress
from tests.sender.conftest import campaign_wire

T0 = datetime(2026, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)
WIRE = campaign_wire("unit", chunk_size=16)


def progress(
    state: str = "active", sent: int = 0, failed: int = 0, invalid: int = 0, **more: object
) -> Progress:
    fields: dict[str, object] = {
        "state": state,
        "total": 100,
        "chunks": 7,
        "sent": sent,
        "failed": failed,
        "invalid": invalid,
        "deferred": 0,
        "campaign": WIRE,
    } | more
    return Progress(**fields)  # type: ignore[arg-type]


def started(source_invalid: int = 0) -> MailCampaignStatus:
    return status.started_status(
        MailCampaignStatus(),
        total=100,
        chunks=7,
        chunk_size=16,
        source_invalid=source_invalid,
        digest="sha256:abc",
        generation=1,
        now=T0,
    )


def kinds(notes: list[status.Note]) -> list[tuple[str, str]]:
    return [(n.type, n.reason) for n in notes]


def test_times_are_whole_seconds_so_an_unchanged_campaign_compares_equal_after_a_round_trip() -> None:
    first = started()
    assert first.started_at == T0.replace(microsecond=0)
    again = MailCampaignStatus.model_validate(to_status(first))  # as the apiserver gives it back
    later = status.progress_status(
        again, progress(), rate=0.0, edited=[], generation=1, now=T0 + timedelta(1)
    )
    assert to_status(later) == to_status(first) | {"checkpoint": to_status(later)["checkpoint"]}
    assert status.write_delay(again, later, since_last_write=0, interval=5) is None


def test_progress_counts_source_invalid_rows_in_total_and_invalid() -> None:
    first = started(source_invalid=3)
    assert (first.total, first.invalid, first.pending, first.progress) == (103, 3, 100, "2%")
    now = status.progress_status(
        first, progress(sent=50, failed=2, invalid=1), rate=12.5, edited=[], generation=1, now=T0
    )
    assert (now.total, now.sent, now.failed, now.invalid, now.pending) == (103, 50, 2, 4, 47)
    assert now.progress == "54%" and now.rate == 12.5 and now.phase == "Sending"


def test_progress_is_rounded_down_so_100_means_done() -> None:
    assert status.percent(999, 1000) == "99%" and status.percent(1000, 1000) == "100%"
    assert status.percent(0, 0) == "100%"


def test_completion_sets_the_condition_time_and_an_event_once() -> None:
    sending = status.progress_status(started(), progress(sent=60), rate=3.0, edited=[], generation=1, now=T0)
    done = status.progress_status(
        sending,
        progress(state="completed", sent=98, failed=1, invalid=1, completed_chunks=[(0, 6)]),
        rate=None,
        edited=[],
        generation=1,
        now=T0 + timedelta(minutes=3),
    )
    assert done.phase == "Completed" and done.rate == 0 and done.pending == 0
    assert done.completed_at == (T0 + timedelta(minutes=3)).replace(microsecond=0)
    [complete] = done.conditions or []
    assert (complete.type, complete.status, complete.reason) == ("Complete", "True", "Completed")
    assert complete.message == "98 sent, 1 failed, 1 invalid of 100"
    assert done.checkpoint is not None and done.checkpoint.completed_chunks == "0-6"
    assert status.is_finished(done)
    assert kinds(status.transition_notes(sending, done)) == [("Normal", "Completed")]
    assert status.transition_notes(done, done) == []


def test_a_sender_failure_is_final_and_a_waiting_failure_is_not() -> None:
    failed = status.progress_status(
        started(),
        progress(state="failed", reason="text: undefined is not allowed"),
        rate=None,
        edited=[],
        generation=1,
        now=T0,
    )
    condition = next(c for c in failed.conditions or [] if c.type == "Failed")
    assert (condition.status, condition.reason) == ("True", status.SENDING_FAILED)
    assert condition.message.startswith("text: undefined is not allowed; 0 sent")
    assert status.is_finished(failed)
    assert kinds(status.transition_notes(started(), failed)) == [("Warning", "Failed")]
    broken = status.waiting_status(
        MailCampaignStatus(), Waiting("Failed", "InvalidTemplate", "subject: ..."), generation=1, now=T0
    )
    assert broken.phase == "Failed" and not status.is_finished(broken) and broken.completed_at is not None
    fixed = status.waiting_status(broken, Waiting("Pending", "PoolNotFound", "no pool"), generation=2, now=T0)
    recovered = next(c for c in fixed.conditions or [] if c.type == "Failed")
    assert (recovered.status, recovered.reason) == ("False", "Recovered") and fixed.completed_at is None
    assert kinds(status.transition_notes(broken, fixed)) == [("Warning", "PoolNotFound")]


def test_waiting_reasons_give_one_event_per_change_not_per_step() -> None:
    pending = status.waiting_status(
        MailCampaignStatus(), Waiting("Pending", "RedisNotReady", "not yet"), generation=1, now=T0
    )
    assert kinds(status.transition_notes(MailCampaignStatus(), pending)) == [("Warning", "RedisNotReady")]
    same = status.waiting_status(
        pending, Waiting("Pending", "RedisNotReady", "not yet"), generation=1, now=T0
    )
    assert status.transition_notes(pending, same) == [] and to_status(same) == to_status(pending)
    scheduled = status.waiting_status(
        pending, Waiting("Scheduled", "Scheduled", "at 9"), generation=1, now=T0
    )
    assert kinds(status.transition_notes(pending, scheduled)) == [("Normal", "Scheduled")]
    paused = status.waiting_status(
        scheduled, Waiting("Paused", "Suspended", "suspended"), generation=2, now=T0
    )
    assert kinds(status.transition_notes(scheduled, paused)) == [("Normal", "Paused")]


def test_resumed_only_for_a_published_campaign() -> None:
    sending = started()
    paused = status.progress_status(
        sending, progress(state="paused"), rate=None, edited=[], generation=2, now=T0
    )
    resumed = status.progress_status(
        paused, progress(state="active"), rate=None, edited=[], generation=3, now=T0
    )
    assert kinds(status.transition_notes(sending, paused)) == [("Normal", "Paused")]
    assert kinds(status.transition_notes(paused, resumed)) == [("Normal", "Resumed")]
    never_published = status.waiting_status(
        MailCampaignStatus(), Waiting("Paused", "Suspended", "s"), generation=1, now=T0
    )
    assert status.transition_notes(never_published, started()) == []  # Started comes from the publish


def test_content_lock_is_set_with_an_event_and_cleared_when_reverted() -> None:
    sending = started()
    locked = status.progress_status(
        sending, progress(), rate=None, edited=["subject", "html"], generation=2, now=T0
    )
    condition = next(c for c in locked.conditions or [] if c.type == status.CONTENT_LOCKED)
    assert (condition.status, condition.reason) == ("True", "EditedAfterPublish")
    assert kinds(status.transition_notes(sending, locked)) == [("Warning", "EditRefused")]
    reverted = status.progress_status(locked, progress(), rate=None, edited=[], generation=3, now=T0)
    condition = next(c for c in reverted.conditions or [] if c.type == status.CONTENT_LOCKED)
    assert (condition.status, condition.reason) == ("False", "Unedited")
    plain = status.progress_status(sending, progress(), rate=None, edited=[], generation=1, now=T0)
    assert status.CONTENT_LOCKED not in {c.type for c in plain.conditions or []}


def test_checkpoint_carries_the_counts_of_completed_chunks_only() -> None:
    now = status.progress_status(
        started(),
        progress(
            sent=40,
            failed=5,
            invalid=2,
            completed_chunks=[(0, 1), (3, 3)],
            completed_failed=3,
            completed_invalid=1,
        ),
        rate=None,
        edited=[],
        generation=1,
        now=T0,
    )
    assert now.checkpoint is not None
    assert (now.checkpoint.completed_chunks, now.checkpoint.failed, now.checkpoint.invalid) == ("0-1,3", 3, 1)
    assert (now.checkpoint.chunk_size, now.checkpoint.chunks, now.checkpoint.recipients_digest) == (
        16,
        7,
        "sha256:abc",
    )


def test_writes_wait_for_the_interval_unless_something_a_person_waits_for_changed() -> None:
    sending = started()
    more = status.progress_status(sending, progress(sent=10), rate=2.0, edited=[], generation=1, now=T0)
    assert status.write_delay(sending, more, since_last_write=4.75, interval=5) == 0.25
    assert status.write_delay(sending, more, since_last_write=5.0, interval=5) == 0
    paused = status.progress_status(
        sending, progress(state="paused"), rate=None, edited=[], generation=2, now=T0
    )
    assert status.write_delay(sending, paused, since_last_write=0.1, interval=5) == 0
    edited = sending.model_copy(update={"observed_generation": 2})
    assert status.write_delay(sending, edited, since_last_write=0.1, interval=5) == 0


def test_rate_is_messages_per_second_between_two_readings() -> None:
    assert status.rate(None, 10, 5.0) is None
    assert status.rate((10, 5.0), 60, 10.0) == 10.0
    assert status.rate((10, 5.0), 10, 5.0) is None  # no time passed
    assert status.rate((60, 5.0), 10, 9.0) == 0.0  # a republish may count fewer


def test_merge_patch_turns_one_status_into_the_other_on_random_statuses() -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)

    def random_value(depth: int) -> object:
        if depth < 2 and rng.random() < 0.3:
            return {rng.choice("abcde"): random_value(depth + 1) for _ in range(rng.randrange(4))}
        return rng.choice([1, 2, "x", "y", [1, 2], [], True, 0.5])

    def apply(target: dict[str, object], patch: dict[str, object]) -> dict[str, object]:  # RFC 7386
        result = dict(target)
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            elif isinstance(value, dict):
                old = result.get(key)
                result[key] = apply(old if isinstance(old, dict) else {}, value)
            else:
                result[key] = value
        return result

    for _ in range(500):
        current = {rng.choice("pqrst"): random_value(0) for _ in range(rng.randrange(5))}
        desired = {rng.choice("pqrst"): random_value(0) for _ in range(rng.randrange(5))}
        assert apply(current, merge_patch(current, desired)) == desired
        assert merge_patch(desired, desired) == {}
