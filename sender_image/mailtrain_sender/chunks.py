"""A leased chunk of recipients, and one recipient's message on its way through the SMTP pool.

The rule that keeps a takeover from overlapping live sending: a message is sent
only while its chunk's lease is known to be valid locally (`deadline`, taken
from the clock *before* the claim or renewal was sent, minus a margin), and the
check is made right before MAIL FROM. A chunk keeps being renewed while any of
its messages is in a connection's hands, and is released only when none is.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailtrain_sender.layout import Lease, Recipient
from mailtrain_sender.smtp_pool import Envelope, Outcome

if TYPE_CHECKING:
    from mailtrain_sender.campaigns import CampaignRunner


def lease_margin(ttl: float) -> float:
    """Stop starting transactions from a chunk this long before its lease would expire in Redis."""
    return min(2.0, ttl / 4)


@dataclass(eq=False, slots=True)
class ChunkState:
    chunk: int
    token: int  # the fencing token of our claim
    deadline: float  # time.monotonic() after which no transaction may start from this chunk
    pending: deque[tuple[int, Recipient]] = field(default_factory=deque)  # not rendered yet
    outstanding: int = 0  # recipients without a final outcome yet
    in_hand: int = 0  # jobs a connection has taken and not finished
    waiting: int = 0  # recipients waiting for a retry later
    lost: bool = False  # the lease was taken over, or the campaign is gone: send nothing more from it
    completing: bool = False  # every outcome is in; the completion is on its way to Redis

    @property
    def lease(self) -> Lease:
        return (self.chunk, self.token)

    @property
    def busy(self) -> bool:
        """Work to do now: a chunk whose only recipients left wait for a retry later holds up nothing."""
        return not self.lost and self.outstanding > self.waiting


class SendJob:
    """One recipient's rendered message (smtp_pool.Job)."""

    __slots__ = ("attempts", "chunk", "envelope", "index", "runner")

    def __init__(self, runner: CampaignRunner, chunk: ChunkState, index: int, envelope: Envelope) -> None:
        self.runner = runner
        self.chunk = chunk
        self.index = index
        self.envelope = envelope
        self.attempts = 0

    def begin(self) -> bool:
        return self.runner.may_send(self.chunk)

    def finish(self, outcome: Outcome, reply: str, *, ambiguous: bool = False) -> None:
        self.runner.finish(self, outcome, reply, ambiguous)
