"""A campaign's status as pure functions: of why it waits, or of its progress in Redis.

Every builder takes the previous status and returns the next one; `conditions.set_condition`
keeps a condition's lastTransitionTime while its status stays, and every time is whole seconds
(what the apiserver stores), so an unchanged campaign gives an equal status and no write.

Conditions of a MailCampaign:
- Complete: True once every recipient is sent, failed or invalid; while False its reason says
  what the campaign waits for (PoolNotFound, Scheduled, Sending, Paused, RedisUnavailable ...).
- Failed: True when the campaign cannot be sent; the reason says why and the message what to do.
  Present only once it has been True (then False again after a fix).
- ContentLocked: True while the spec's content differs from the published one (edits after
  publishing are not applied); present only once content was edited after publishing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from mailtrain_operator import conditions
from mailtrain_operator.api import Checkpoint, Condition, MailCampaignStatus, Phase, format_ranges, to_status
from mailtrain_sender.layout import ACTIVE, COMPLETED, FAILED, PAUSED, CampaignWire
from mailtrain_sender.publisher import Progress

CONTENT_LOCKED = "ContentLocked"
# The reason of the Failed condition when a sender failed the campaign in Redis: the one failure
# that no edit or retry can undo (the campaign's messages may be partly sent).
SENDING_FAILED = "SendingFailed"
_PHASES: dict[str, Phase] = {ACTIVE: "Sending", PAUSED: "Paused", COMPLETED: "Completed", FAILED: "Failed"}


@dataclass(frozen=True)
class Waiting:
    """Why a campaign that was not published yet is not sending: its phase, a reason and what to do."""

    phase: Literal["Pending", "Scheduled", "Paused", "Failed"]
    reason: str
    message: str


@dataclass(frozen=True)
class Note:
    """An Event to post: Normal or Warning, a CamelCase reason, a message for people."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def whole_seconds(now: datetime) -> datetime:
    return now.replace(microsecond=0)


def parse(raw: object) -> MailCampaignStatus:
    """The status as the object carries it; anything unreadable counts as no status at all."""
    try:
        return MailCampaignStatus.model_validate(raw or {})
    except ValueError:
        return MailCampaignStatus()


def is_published(status: MailCampaignStatus) -> bool:
    return status.checkpoint is not None and status.checkpoint.chunks is not None


def is_finished(status: MailCampaignStatus) -> bool:
    """Completed, or failed by a sender: nothing more to do for it but delete it."""
    failed = conditions.find(status.conditions, conditions.FAILED)
    return status.phase == "Completed" or (
        status.phase == "Failed" and failed is not None and failed.reason == SENDING_FAILED
    )


def _set(
    status: MailCampaignStatus,
    type_: str,
    value: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    return conditions.set_condition(
        status.conditions, type_, value, reason, message, generation=generation, now=now
    )


def _failed(
    status: MailCampaignStatus, failure: tuple[str, str] | None, generation: int, now: datetime
) -> list[Condition] | None:
    """The conditions with Failed set from `failure` (None: not failed; left out if never failed)."""
    if failure is not None:
        return _set(status, conditions.FAILED, True, *failure, generation, now)
    if conditions.find(status.conditions, conditions.FAILED) is None:
        return status.conditions
    return _set(status, conditions.FAILED, False, "Recovered", "the campaign can be sent", generation, now)


def waiting_status(
    previous: MailCampaignStatus, waiting: Waiting, *, generation: int, now: datetime
) -> MailCampaignStatus:
    """The status of a campaign not published yet (Pending, Scheduled, Paused or Failed before sending)."""
    now = whole_seconds(now)
    failure = (waiting.reason, waiting.message) if waiting.phase == "Failed" else None
    status = previous.model_copy(update={"conditions": _failed(previous, failure, generation, now)})
    complete_reason = "Failed" if failure else waiting.reason
    found = _set(status, conditions.COMPLETE, False, complete_reason, waiting.message, generation, now)
    completed_at = (previous.completed_at or now) if failure else None
    return status.model_copy(
        update={
            "phase": waiting.phase,
            "conditions": found,
            "observed_generation": generation,
            "completed_at": completed_at,
        }
    )


def started_status(
    previous: MailCampaignStatus,
    *,
    total: int,
    chunks: int,
    chunk_size: int,
    source_invalid: int,
    digest: str,
    generation: int,
    now: datetime,
) -> MailCampaignStatus:
    """Right after the first publish: every recipient pending, and the checkpoint's fixed part."""
    now = whole_seconds(now)
    checkpoint = Checkpoint(
        chunk_size=chunk_size,
        chunks=chunks,
        completed_chunks="",
        failed=0,
        invalid=0,
        recipients_digest=digest,
    )
    status = previous.model_copy(
        update={
            "total": total + source_invalid,
            "sent": 0,
            "failed": 0,
            "invalid": source_invalid,
            "pending": total,
            "progress": percent(source_invalid, total + source_invalid),
            "rate": 0.0,
            "started_at": previous.started_at or now,
            "checkpoint": checkpoint,
            "conditions": _failed(previous, None, generation, now),
        }
    )
    return status.model_copy(
        update={
            "phase": "Sending",
            "observed_generation": generation,
            "completed_at": None,
            "conditions": _set(status, conditions.COMPLETE, False, "Sending", _SENDING, generation, now),
        }
    )


_SENDING = "published; the pool's senders are working on it"
# Reasons of Complete=False that are a phase of their own (its Event is the phase's); any other
# reason is something the campaign waits for, worth a Warning Event.
_PHASE_REASONS = frozenset({"Sending", "Paused", "Suspended", "Scheduled", "Failed", "Completed"})


def percent(done: int, total: int) -> str:
    """Rounded down, so 100% means done (an empty campaign is done)."""
    return "100%" if total == 0 else f"{done * 100 // total}%"


def source_invalid_of(previous: MailCampaignStatus, progress: Progress) -> int:
    """Rows the source could not turn into recipients. They were never published, so they are the
    difference between the total written at publish time and the recipients in Redis."""
    return max(0, (previous.total or progress.total) - progress.total)


def progress_status(
    previous: MailCampaignStatus,
    progress: Progress,
    *,
    rate: float | None,
    edited: list[str],
    generation: int,
    now: datetime,
) -> MailCampaignStatus:
    """The status of a published campaign from its progress in Redis (state active, paused, done).

    rate: messages per second since the previous reading, or None to keep the last one.
    edited: content fields whose edit after publishing is not applied.
    """
    now = whole_seconds(now)
    phase = _PHASES[progress.state]
    source_invalid = source_invalid_of(previous, progress)
    total = progress.total + source_invalid
    invalid = progress.invalid + source_invalid
    done = progress.sent + progress.failed + invalid
    counts = f"{progress.sent} sent, {progress.failed} failed, {invalid} invalid of {total}"
    failure = (SENDING_FAILED, f"{progress.reason}; {counts}") if phase == "Failed" else None
    status = previous.model_copy(update={"conditions": _failed(previous, failure, generation, now)})
    complete: tuple[bool, str, str] = {
        "Sending": (False, "Sending", _SENDING),
        "Paused": (False, "Paused", "spec.suspend is true; set it to false to resume where it stopped"),
        "Completed": (True, "Completed", counts),
        "Failed": (False, "Failed", "a sender failed the campaign; see the Failed condition"),
    }[phase]
    with_complete = _set(status, conditions.COMPLETE, *complete, generation, now)
    found = _content_locked(status.model_copy(update={"conditions": with_complete}), edited, generation, now)
    checkpoint = (previous.checkpoint or Checkpoint()).model_copy(
        update={
            "chunk_size": progress.campaign.chunk_size if progress.campaign else None,
            "chunks": progress.chunks,
            "completed_chunks": format_ranges(progress.completed_chunks),
            "failed": progress.completed_failed,
            "invalid": progress.completed_invalid,
        }
    )
    terminal = phase in ("Completed", "Failed")
    return status.model_copy(
        update={
            "phase": phase,
            "total": total,
            "sent": progress.sent,
            "failed": progress.failed,
            "invalid": invalid,
            "pending": max(0, total - done),
            "progress": percent(done, total),
            "rate": (previous.rate or 0.0 if rate is None else rate) if phase == "Sending" else 0.0,
            "started_at": previous.started_at or now,
            "completed_at": (previous.completed_at or now) if terminal else None,
            "observed_generation": generation,
            "checkpoint": checkpoint,
            "conditions": found,
        }
    )


def _content_locked(
    status: MailCampaignStatus, edited: list[str], generation: int, now: datetime
) -> list[Condition] | None:
    if edited:
        message = (
            f"{', '.join(edited)} changed after the campaign was published; the change is not applied "
            "(every recipient gets the published message). Revert it, or create a new MailCampaign"
        )
        return _set(status, CONTENT_LOCKED, True, "EditedAfterPublish", message, generation, now)
    if conditions.find(status.conditions, CONTENT_LOCKED) is None:
        return status.conditions
    message = "the spec's content is the published content"
    return _set(status, CONTENT_LOCKED, False, "Unedited", message, generation, now)


def problem_status(
    previous: MailCampaignStatus, reason: str, message: str, *, generation: int, now: datetime
) -> MailCampaignStatus:
    """A published campaign whose Redis cannot be reached: the phase stays, Complete says why."""
    now = whole_seconds(now)
    found = _set(previous, conditions.COMPLETE, False, reason, message, generation, now)
    return previous.model_copy(update={"conditions": found, "rate": 0.0})


def rate(previous: tuple[int, float] | None, sent: int, at: float) -> float | None:
    """Messages per second from the previous (sent, monotonic time) sample; None without one."""
    if previous is None or at <= previous[1]:
        return None
    return round(max(0, sent - previous[0]) / (at - previous[1]), 1)


def _key_conditions(status: MailCampaignStatus) -> list[tuple[str, str, str, str]]:
    return [(c.type, c.status, c.reason, c.message) for c in status.conditions or ()]


def write_delay(
    current: MailCampaignStatus, desired: MailCampaignStatus, *, since_last_write: float, interval: float
) -> float | None:
    """When to write `desired`: None when nothing changed; 0 (now) when the phase, a condition or
    the spec generation changed; progress alone at most once per interval, so the seconds left."""
    if to_status(desired) == to_status(current):
        return None
    moved = (
        desired.phase != current.phase
        or _key_conditions(desired) != _key_conditions(current)
        or desired.observed_generation != current.observed_generation
        or is_published(desired) != is_published(current)
    )
    return 0.0 if moved else max(0.0, interval - since_last_write)


def transition_notes(before: MailCampaignStatus, after: MailCampaignStatus) -> list[Note]:
    """The Events a status change calls for (Started and Republished come from the publish itself)."""
    notes: list[Note] = []
    complete = conditions.find(after.conditions, conditions.COMPLETE)
    was = conditions.find(before.conditions, conditions.COMPLETE)
    message = complete.message if complete else ""
    if after.phase != before.phase:
        if after.phase == "Scheduled":
            notes.append(Note("Normal", "Scheduled", message))
        elif after.phase == "Paused":
            notes.append(Note("Normal", "Paused", message))
        elif after.phase == "Sending" and before.phase == "Paused" and is_published(before):
            notes.append(Note("Normal", "Resumed", "sending again where it stopped"))
        elif after.phase == "Completed":
            notes.append(Note("Normal", "Completed", message))
    failed = conditions.find(after.conditions, conditions.FAILED)
    failed_before = conditions.find(before.conditions, conditions.FAILED)
    if (
        failed is not None
        and failed.status == "True"
        and (
            failed_before is None or (failed_before.status, failed_before.message) != ("True", failed.message)
        )
    ):
        notes.append(Note("Warning", "Failed", f"{failed.reason}: {failed.message}"))
    if (
        complete is not None
        and complete.reason not in _PHASE_REASONS
        and (was is None or (was.reason, was.message) != (complete.reason, complete.message))
    ):
        notes.append(Note("Warning", complete.reason, complete.message))  # PoolNotFound, RedisUnavailable ...
    locked = conditions.find(after.conditions, CONTENT_LOCKED)
    locked_before = conditions.find(before.conditions, CONTENT_LOCKED)
    if (
        locked is not None
        and locked.status == "True"
        and (
            locked_before is None or (locked_before.status, locked_before.message) != ("True", locked.message)
        )
    ):
        notes.append(Note("Warning", "EditRefused", locked.message))
    return notes


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def started_note(published: CampaignWire, pool: str, duplicates: int, invalid: int) -> Note:
    dropped = f"; {_plural(duplicates, 'duplicate')} dropped, {_plural(invalid, 'invalid row')}"
    return Note(
        "Normal",
        "Started",
        f"published {_plural(published.total, 'recipient')} in {_plural(published.chunks, 'chunk')} to "
        f"SenderPool {pool}" + (dropped if duplicates or invalid else ""),
    )


def republished_note(published: CampaignWire, completed_chunks: str, edited: bool) -> Note:
    return Note(
        "Warning",
        "Republished",
        "the campaign's keys vanished from Redis; published again without the completed chunks of the "
        f"checkpoint ({completed_chunks}): {_plural(published.total, 'recipient')} in "
        f"{_plural(published.chunks, 'chunk')}, of which the chunks not in the checkpoint are sent again"
        + ("; they get the edited content, since the published one was lost with Redis" if edited else ""),
    )
