"""The invariants checked once the faults stopped and the pool went quiet.

For every campaign not deleted:
    terminal_state       it is `completed` or `failed` by the deadline
    progress             completed: nothing pending, every chunk in `completed`
    accounting           each recipient is delivered once and marked sent, or marked failed, or marked
                         invalid (and then never sent, and only if its address was made invalid); a
                         recipient marked sent that the relay never received is lost; a chunk in
                         `completed` has every recipient marked, whatever the campaign's state
    duplicates           a delivery the sender did not account for (every delivery of a failed one,
                         all but the last of a sent one) must be explained: (a) its sender was
                         SIGKILLed while it was in flight or within ACK_WINDOW after the relay's
                         reply, or while Redis was unavailable since then (its outcome could not be
                         written), or (b) the relay cut the connection after the dot or held its
                         reply for the SMTP timeout. A Redis restart or pause alone is no excuse.
For every deleted campaign:
    deleted_silence      nothing arrives later than DELETE_GRACE after Publisher.delete returned
    deleted_keys_gone    none of its keys exist any more (late acknowledgements must not re-create them)
For every message:
    known_message_ids    its Message-ID names a campaign of this run and a recipient index
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from mailtrain_sender.layout import bit_is_set
from mailtrain_sender.publisher import Progress, to_ranges
from tests.harness.smtp_sink import ReceivedMessage
from tests.soak import options as opt
from tests.soak.ledger import CampaignRecord, Event, Ledger

TERMINAL = ("completed", "failed")
EXAMPLES = 10  # explained duplicates listed in the report; every unexplained one is listed


@dataclass(frozen=True)
class CampaignEvidence:
    progress: Progress
    done: bytes
    failed: bytes
    invalid: bytes
    leftover_keys: list[str]  # deleted campaigns only


@dataclass
class Tally:
    checked: int = 0
    violations: int = 0


@dataclass
class RecipientIssue:
    """Recipients of one campaign that broke one invariant the same way: reported together."""

    invariant: str
    campaign: str
    what: str
    sender: str = ""  # duplicates: the process whose delivery went unaccounted
    indexes: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # absolute
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Duplicates:
    needing_explanation: int = 0
    explained: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)
    each: list[str] = field(default_factory=list)  # "campaign[index] reason", every explained one
    per_kill: dict[str, int] = field(default_factory=dict)  # "worker@time" -> duplicates it explains


def origin(message_id: str) -> tuple[str, int] | None:
    """(campaign, recipient index) from <campaign.index@domain>."""
    local, at, _ = message_id.rpartition("@")
    campaign, dot, index = local.rpartition(".")
    return (campaign, int(index)) if at and dot and index.isdigit() else None


class Judge:
    def __init__(
        self,
        ledger: Ledger,
        messages: list[ReceivedMessage],
        relay_faults: list[dict[str, Any]],
        evidence: dict[str, CampaignEvidence],
    ) -> None:
        self.ledger = ledger
        self.evidence = evidence
        self.relay_faults = relay_faults
        self.tallies: dict[str, Tally] = defaultdict(Tally)
        self.duplicates = Duplicates()
        self.after_delete_within_grace = 0  # arrived after a delete returned, within DELETE_GRACE
        self._issues: dict[tuple[str, str, str], RecipientIssue] = {}
        self.deliveries: dict[tuple[str, int], list[ReceivedMessage]] = defaultdict(list)
        self.by_campaign: dict[str, list[ReceivedMessage]] = defaultdict(list)
        for message in messages:
            self.tallies["known_message_ids"].checked += 1
            found = origin(message.message_id)
            if found is None or found[0] not in ledger.campaigns:
                self._violate("known_message_ids", f"a message nobody published: {message.message_id!r}")
                continue
            self.deliveries[found].append(message)
            self.by_campaign[found[0]].append(message)
        for delivered in self.deliveries.values():
            delivered.sort(key=lambda m: m.received_at)

    def _violate(self, invariant: str, message: str, **detail: Any) -> None:
        self.tallies[invariant].violations += 1
        self.ledger.violate(invariant, message, **detail)

    def judge(self) -> None:
        for record in self.ledger.campaigns.values():
            if record.deleted_at is None:
                self._live(record, self.evidence[record.wire.id])
            else:
                self._deleted(record, self.evidence[record.wire.id])
        for issue in self._issues.values():
            context: dict[str, Any] = {}
            at = ""
            if issue.times:
                first, last = self.ledger.relative(min(issue.times)), self.ledger.relative(max(issue.times))
                at = f" between {first:.1f}s and {last:.1f}s"
            if issue.sender and issue.times:
                context["relay_faults_on_sender_before"] = self._sender_faults(issue.sender, min(issue.times))
            self.ledger.violate(
                issue.invariant,
                f"{issue.campaign}: {len(issue.indexes)} recipients {issue.what}{at}",
                campaign=issue.campaign,
                recipients=_ranges(issue.indexes),
                examples=issue.examples,
                **context,
            )

    def _issue(
        self,
        invariant: str,
        campaign: str,
        what: str,
        index: int,
        at: float | None = None,
        sender: str = "",
        **example: Any,
    ) -> None:
        """One recipient's violation, reported with the others of its campaign that broke it the same way."""
        self.tallies[invariant].violations += 1
        issue = self._issues.setdefault(
            (invariant, campaign, what), RecipientIssue(invariant, campaign, what, sender)
        )
        issue.indexes.append(index)
        if at is not None:
            issue.times.append(at)
        if len(issue.examples) < 3:
            issue.examples.append({"index": index, **example})

    # -- campaigns that must finish --------------------------------------------------------------------------

    def _live(self, record: CampaignRecord, evidence: CampaignEvidence) -> None:
        campaign, progress = record.wire.id, evidence.progress
        self.tallies["terminal_state"].checked += 1
        done_chunks = sum(last - first + 1 for first, last in progress.completed_chunks)
        if progress.state not in TERMINAL:
            self._violate(
                "terminal_state",
                f"{campaign} is {progress.state} after the deadline ({progress.pending} of "
                f"{progress.total} recipients pending, {done_chunks} of {progress.chunks} chunks complete)",
                campaign=campaign,
                progress=progress.__dict__,
            )
        if progress.state == "completed":
            self.tallies["progress"].checked += 1
            if progress.pending or done_chunks != progress.chunks:
                self._violate(
                    "progress",
                    f"{campaign} completed with {progress.pending} pending and {done_chunks} of "
                    f"{progress.chunks} chunks complete",
                    campaign=campaign,
                )
        completed_chunks = {n for first, last in progress.completed_chunks for n in range(first, last + 1)}
        for index in range(record.wire.total):
            self._recipient(record, evidence, index, index // record.wire.chunk_size in completed_chunks)

    def _recipient(
        self, record: CampaignRecord, evidence: CampaignEvidence, index: int, chunk_completed: bool
    ) -> None:
        campaign = record.wire.id
        self.tallies["accounting"].checked += 1
        delivered = self.deliveries.get((campaign, index), [])
        done, failed = bit_is_set(evidence.done, index), bit_is_set(evidence.failed, index)
        invalid = bit_is_set(evidence.invalid, index)
        seen: dict[str, Any] = {"deliveries": self._describe(delivered)}
        if invalid != (index in record.invalid):
            self._issue("accounting", campaign, f"with the invalid bit {invalid}", index, **seen)
        if invalid:
            if delivered:
                self._issue("accounting", campaign, "marked invalid but sent", index, **seen)
            return
        if not done:
            if chunk_completed:
                self._issue("accounting", campaign, "unaccounted in a completed chunk", index, **seen)
            unaccounted = delivered[:-1]  # can't tell: the last delivery gets the benefit of the doubt
        elif failed:
            unaccounted = delivered  # the sender believes nothing arrived
        elif not delivered:
            self._issue("accounting", campaign, "marked sent but never received", index)
            return
        else:
            unaccounted = delivered[:-1]
        for message in unaccounted:
            self._explain(record, index, message, delivered, "failed" if failed else "sent")

    def _explain(
        self,
        record: CampaignRecord,
        index: int,
        message: ReceivedMessage,
        delivered: list[ReceivedMessage],
        accounted: str,
    ) -> None:
        self.duplicates.needing_explanation += 1
        self.tallies["duplicates"].checked += 1
        reason = self._reason(message)
        if reason is not None:
            self.duplicates.explained[reason.partition(" ")[0]] += 1
            self.duplicates.each.append(f"{record.wire.id}[{index}] {reason}")
            if reason.startswith("sigkill"):
                self.duplicates.per_kill[reason.partition(" ")[2]] = (
                    self.duplicates.per_kill.get(reason.partition(" ")[2], 0) + 1
                )
            if len(self.duplicates.examples) < EXAMPLES:
                self.duplicates.examples.append(
                    {"campaign": record.wire.id, "index": index, "explained_by": reason}
                )
            return
        self._issue(
            "duplicates",
            record.wire.id,
            f"delivered again after {message.helo} delivered them (accounted {accounted}), unexplained",
            index,
            message.received_at,
            message.helo,
            recipient=message.rcpt_tos[0] if message.rcpt_tos else "",
            deliveries=self._describe(delivered),
            nearest_events=self._nearest(message.received_at),
            relay_faults_for_recipient=[
                {**f, "at": self.ledger.relative(f["at"])}
                for f in self.relay_faults
                if set(f.get("rcpt_tos", [])) & set(message.rcpt_tos)
            ],
        )

    def _reason(self, message: ReceivedMessage) -> str | None:
        if message.after_dot_drop:
            return "after_dot_drop"
        if message.reply_delay >= opt.SMTP_TIMEOUT - opt.SLOW_REPLY_SLACK:
            return "slow_reply"
        # When the sender could have learnt that the relay took it: after the relay's (possibly slow) reply.
        replied = message.received_at + message.reply_delay
        for killed_at, worker in self.ledger.kills:
            if worker != message.helo or killed_at < message.received_at - opt.KILL_SKEW:
                continue
            if killed_at <= replied + opt.ACK_WINDOW:
                return f"sigkill {worker}@{self.ledger.relative(killed_at)}s"
            if self._unwritable(replied, killed_at):
                return f"sigkill_during_redis_outage {worker}@{self.ledger.relative(killed_at)}s"
        return None

    def _unwritable(self, replied: float, killed_at: float) -> bool:
        """Redis was paused or down from (about) the reply until the kill, or back for less than the
        writer's longest retry gap: the outcome was not written yet. Outages closer together than that
        gap count as one: the writer may not have tried in between (seen: up for 0.15 s between a
        restart and a crash, then a SIGKILL)."""
        return any(
            start <= replied + opt.ACK_WINDOW and killed_at <= until + opt.WRITE_RETRY_MAX + opt.ACK_WINDOW
            for start, until in chained_outages(
                self.ledger.redis_outages, opt.WRITE_RETRY_MAX + opt.ACK_WINDOW
            )
        )

    def _sender_faults(self, sender: str, before: float, count: int = 5) -> list[dict[str, Any]]:
        """The last relay faults injected on a process's connections before a moment."""
        faults = [f for f in self.relay_faults if f.get("helo") == sender and f["at"] <= before]
        return [{**f, "at": self.ledger.relative(f["at"])} for f in faults[-count:]]

    def _describe(self, delivered: list[ReceivedMessage]) -> list[dict[str, Any]]:
        return [
            {
                "at": self.ledger.relative(m.received_at),
                "by": m.helo,
                **({"after_dot_drop": True} if m.after_dot_drop else {}),
                **({"reply_delay": round(m.reply_delay, 2)} if m.reply_delay else {}),
            }
            for m in delivered
        ]

    def _nearest(self, at: float, count: int = 3) -> list[dict[str, Any]]:
        events: list[Event] = sorted(self.ledger.events, key=lambda e: abs(e.at - at))[:count]
        return [
            {
                "kind": e.kind,
                "target": e.target,
                "at": self.ledger.relative(e.at),
                "delta": round(e.at - at, 3),
            }
            for e in events
        ]

    # -- deleted campaigns ---------------------------------------------------------------------------------

    def _deleted(self, record: CampaignRecord, evidence: CampaignEvidence) -> None:
        assert record.deleted_at is not None
        campaign, limit = record.wire.id, record.deleted_at + opt.DELETE_GRACE
        late = [m for m in self.by_campaign.get(campaign, []) if m.received_at > record.deleted_at]
        self.tallies["deleted_silence"].checked += 1
        too_late = [m for m in late if m.received_at > limit]
        self.after_delete_within_grace += len(late) - len(too_late)
        if too_late:
            self._violate(
                "deleted_silence",
                f"{campaign}: {len(too_late)} messages arrived over {opt.DELETE_GRACE}s after its delete",
                campaign=campaign,
                deleted_at=self.ledger.relative(record.deleted_at),
                deliveries=self._describe(too_late[:20]),
            )
        self.tallies["deleted_keys_gone"].checked += 1
        if evidence.leftover_keys:
            self._violate(
                "deleted_keys_gone",
                f"{campaign}: keys exist after its delete: {evidence.leftover_keys}",
                campaign=campaign,
            )


def _ranges(indexes: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3,7"."""
    out: list[str] = []
    for first, last in to_ranges(indexes):
        out.append(str(first) if first == last else f"{first}-{last}")
    return ",".join(out)


def chained_outages(outages: list[list[float]], gap: float) -> list[tuple[float, float]]:
    """The outages, with those that begin less than `gap` after the previous one ended merged into it."""
    merged: list[tuple[float, float]] = []
    for start, until in sorted(outages):
        if merged and start < merged[-1][1] + gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], until))
        else:
            merged.append((start, until))
    return merged
