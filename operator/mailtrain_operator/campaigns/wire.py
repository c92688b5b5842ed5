"""A MailCampaign as the senders see it: spec → CampaignWire, checked the way the sender checks it.

Pure functions. The campaign id is the object's uid (unique, and never reused by a new object
of the same name); its place in line is its creation time, so a republish keeps it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jinja2

from mailtrain_operator import pool_redis
from mailtrain_operator.api import MailCampaignSpec
from mailtrain_sender.layout import CampaignWire
from mailtrain_sender.render import CampaignError, CompiledCampaign

# The wire fields a person writes in the spec; an edit of any of them after publishing is refused.
CONTENT_FIELDS = ("sender", "subject", "text", "html", "headers", "list_unsubscribe", "list_id")
# Their names in the spec, for messages.
_SPEC_NAMES = {"sender": "from", "list_unsubscribe": "listUnsubscribe", "list_id": "listId"}


class InvalidCampaign(Exception):
    """The campaign cannot be sent as written: the sender's own reason, and what to fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def created_ms(creation_timestamp: str | datetime) -> int:
    if isinstance(creation_timestamp, str):
        creation_timestamp = datetime.fromisoformat(creation_timestamp.replace("Z", "+00:00"))
    return int(creation_timestamp.timestamp() * 1000)


def build_wire(
    meta: Mapping[str, Any],
    spec: MailCampaignSpec,
    *,
    chunk_size: int,
    token_key: str | None = None,
) -> CampaignWire:
    """The campaign's wire format from its metadata and spec (total and chunks are the publisher's).

    token_key: keys the recipients' unsubscribe tokens; a fresh random one unless given.
    """
    unsubscribe = spec.list_unsubscribe
    return CampaignWire.model_validate(
        {
            "id": meta["uid"],
            "name": f"{meta['namespace']}/{meta['name']}",
            "pool": pool_redis.redis_pool_name(meta["namespace"], spec.sender_pool),
            "from": spec.sender.model_dump(exclude_none=True),
            "subject": spec.subject,
            "text": spec.text,
            "html": spec.html,
            "headers": dict(spec.headers or {}),
            "listUnsubscribe": None if unsubscribe is None else unsubscribe.model_dump(by_alias=True),
            # The CRD takes the list id without < > (RFC 2919's brackets are the header's syntax).
            "listId": None if spec.list_id is None else f"<{spec.list_id}>",
            "priority": spec.priority,
            "createdMs": created_ms(meta["creationTimestamp"]),
            "chunkSize": chunk_size,
            "tokenKey": token_key or secrets.token_urlsafe(32),
        }
    )


def check(wire: CampaignWire) -> None:
    """Raise InvalidCampaign with the sender's reason if the sender would refuse the campaign."""
    try:
        CompiledCampaign(wire)
    except CampaignError as exc:
        cause = exc.__cause__
        reason = (
            "InvalidTemplate"
            if isinstance(cause, jinja2.TemplateError | RecursionError)
            else "InvalidCampaign"
        )
        why = str(exc).rstrip(". ")
        raise InvalidCampaign(reason, f"{why}; fix the spec and the campaign is checked again") from None


def edited_fields(published: CampaignWire, current: CampaignWire) -> list[str]:
    """The content fields (spec names) in which `current` differs from the published campaign."""
    return [
        _SPEC_NAMES.get(name, name)
        for name in CONTENT_FIELDS
        if getattr(published, name) != getattr(current, name)
    ]
