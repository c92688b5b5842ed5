"""Status conditions as the Kubernetes API conventions want them, set without needless writes.

Where it sits: the status builders of both kinds (pure) call `set_condition`; handlers patch the
list they get back. The list is a map keyed by type (the CRDs say `x-kubernetes-list-type: map`),
so a patch of the whole list replaces it. `lastTransitionTime` moves only when the status does,
so an unchanged condition gives an unchanged list, and a caller can skip the write.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from mailtrain_operator.api import Condition

# MailCampaign: `kubectl wait --for=condition=Complete mc/x` waits for the end of a campaign.
COMPLETE = "Complete"
FAILED = "Failed"
# SenderPool.
READY = "Ready"
DEGRADED = "Degraded"


def find(conditions: Sequence[Condition] | None, type_: str) -> Condition | None:
    return next((c for c in conditions or () if c.type == type_), None)


def is_true(conditions: Sequence[Condition] | None, type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.status == "True"


def set_condition(
    conditions: Sequence[Condition] | None,
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    *,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """The list with condition `type_` set (status None = Unknown); the others are kept, in order."""
    text: Literal["True", "False", "Unknown"] = "Unknown" if status is None else "True" if status else "False"
    previous = find(conditions, type_)
    since = previous.last_transition_time if previous is not None and previous.status == text else now
    new = Condition(
        type=type_,
        status=text,
        observed_generation=generation,
        last_transition_time=since,
        reason=reason,
        message=message,
    )
    kept = [c for c in conditions or () if c.type != type_]
    index = next((i for i, c in enumerate(conditions or ()) if c.type == type_), len(kept))
    return [*kept[:index], new, *kept[index:]]
