"""A campaign's spec steering its state in Redis: `suspend` pauses and resumes, `priority` moves it in line.

One call per driver step. A driver applies the spec once, and again when it changes; each time, the
calls are idempotent, so an interrupted pause or resume of an earlier operator (its registry entry) is
repaired. Between changes, an active campaign is put back in its pool's registry if it is missing.
"""

from __future__ import annotations

from mailtrain_operator.api import MailCampaignSpec
from mailtrain_sender.layout import ACTIVE, CampaignWire
from mailtrain_sender.publisher import Publisher

Applied = tuple[bool, int]  # (suspend, priority) applied to Redis


async def steer(
    publisher: Publisher, campaign: CampaignWire, spec: MailCampaignSpec, state: str, applied: Applied | None
) -> tuple[Applied | None, bool]:
    """Brings Redis in line with the spec; returns what is applied now, and whether Redis changed.
    `state` is the campaign's state in Redis, active or paused."""
    wanted = (spec.suspend, spec.priority)
    mismatch = (state == ACTIVE) == spec.suspend
    if applied == wanted and not mismatch:
        if state == ACTIVE:
            # A sender that found the keys gone takes the campaign out of the pool's registry; if that
            # lands after a republish put it back, no sender would claim it again. So every step puts
            # an active campaign back (an entry that is there keeps its place in line).
            await publisher.register_if_missing(campaign)
        return applied, False
    if spec.suspend:
        await publisher.pause(campaign)
    else:
        await publisher.resume(campaign)  # on an active campaign: only puts it back in line if missing
        await publisher.reprioritize(campaign, spec.priority)
    return wanted, True
