"""Publish a campaign through the sender's Publisher, and republish it after a Redis loss.

Both are idempotent: the Publisher writes a campaign's state last, so a publish interrupted
anywhere (an operator killed mid-way) is redone in full, and senders see nothing before.

The recipients are hashed on their way to Redis. The digest goes into the checkpoint; a republish
checks that its source still gives the same list (same recipients, same order, so the same
chunks) and fails before the state is written if not, so nothing of a different list is sent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from mailtrain_operator.api import Checkpoint
from mailtrain_operator.campaigns.sources import RecipientSource, SourceError
from mailtrain_operator.metrics import METRICS
from mailtrain_sender.layout import CampaignWire, Recipient
from mailtrain_sender.publisher import Publisher


@dataclass(frozen=True)
class Published:
    wire: CampaignWire  # as published: total and chunks set
    digest: str  # of the recipients, "sha256:<hex>"
    invalid: int  # rows of the source that could not become recipients (not published)
    duplicates: int  # rows dropped as repeats


def _row(recipient: Recipient) -> bytes:
    row = [recipient.email, recipient.name, recipient.vars]
    return json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode() + b"\n"


class DigestingStream:
    """The source's recipients, passed through and hashed; at the end checked against `expected`."""

    def __init__(self, source: RecipientSource, expected: str | None) -> None:
        self._source = source
        self._expected = expected
        self._hash = hashlib.sha256()
        self.started = False
        self.count = 0
        self.digest: str | None = None

    async def __aiter__(self) -> AsyncIterator[Recipient]:
        self.started = True
        async for recipient in self._source:
            self._hash.update(_row(recipient))
            self.count += 1
            yield recipient
        self.digest = "sha256:" + self._hash.hexdigest()
        if self._expected is not None and self.digest != self._expected:
            # Raised inside the Publisher's loop: before the state, so no sender sees the campaign.
            raise SourceError(
                "RecipientsChanged",
                f"the recipients source no longer gives the list that was published ({self.count} "
                f"recipients now, digest {self.digest[:19]}… instead of {self._expected[:19]}…), so the "
                "campaign cannot be published again without the chunks already sent; restore the list, "
                "or delete the campaign and create a new one",
            )

    async def finish(self) -> str:
        """The digest; reads the whole source if the Publisher did not need it (already published)."""
        if not self.started:
            async for _ in self:
                pass
        assert self.digest is not None, "the publisher stopped reading the recipients half-way"
        return self.digest


async def publish(
    publisher: Publisher, wire: CampaignWire, source: RecipientSource, *, checkpoint: Checkpoint | None = None
) -> Published:
    """Publish the campaign, or with a checkpoint republish it minus the completed chunks.

    Raises SourceError (the source, or RecipientsChanged) and redis errors; either leaves nothing
    a sender would send.
    """
    stream = DigestingStream(source, None if checkpoint is None else checkpoint.recipients_digest)
    with METRICS.publish_seconds.time():
        if checkpoint is None:
            published = await publisher.publish(wire, stream)
        else:
            carried = {"failed": checkpoint.failed or 0, "invalid": checkpoint.invalid or 0}
            published = await publisher.republish(wire, stream, checkpoint.completed_ranges, carried)
        wrote = stream.started
        digest = await stream.finish()
    if wrote:
        METRICS.recipients_loaded.labels("published").inc(stream.count)
        METRICS.recipients_loaded.labels("invalid").inc(source.invalid)
        METRICS.recipients_loaded.labels("duplicate").inc(source.duplicates)
    return Published(published, digest, source.invalid, source.duplicates)
