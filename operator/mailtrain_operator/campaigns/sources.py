"""Where a campaign's recipients come from: the one place where the recipients loader plugs in.

`open_source` is the only call site. The loader of `mailtrain_operator.recipients` (inline,
ConfigMap, Secret or URL; csv or jsonl; deduplication; invalid rows counted) replaces its body:
it returns an async iterable of `Recipient` whose `invalid` and `duplicates` counters are final
once the iteration ends, and raises `SourceError(reason, message)` (while opening or while
iterating) when the whole source cannot be read. Until then only `recipients.inline` is read, here.

The publisher reads a source once per publish, in order; a republish reads it again and expects
the same list (the checkpoint's recipientsDigest says whether it is).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from mailtrain_operator.api import InlineRecipient, Recipients
from mailtrain_operator.settings import OperatorSettings
from mailtrain_sender.layout import Recipient


class SourceError(Exception):
    """The whole source cannot be read (missing ConfigMap, unreachable URL ...): what to fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # CamelCase, for a condition
        self.message = message


class RecipientSource(Protocol):
    """Recipients in a stable order, deduplicated; the counters are final once iteration ends."""

    @property
    def invalid(self) -> int:
        """Rows that could not become a recipient (not published; counted in status.invalid)."""

    @property
    def duplicates(self) -> int:
        """Rows dropped because their address came earlier in the list."""

    def __aiter__(self) -> AsyncIterator[Recipient]: ...


class InlineSource:
    """`recipients.inline`: at most 1,000 rows the apiserver has already checked against the schema.

    A repeated address (compared without case, as mailbox providers do) is dropped; whether an
    address can be sent to is the sender's judgement (it counts invalid ones), not ours.
    """

    def __init__(self, rows: list[InlineRecipient]) -> None:
        self._rows = rows
        self.invalid = 0
        self.duplicates = 0

    async def __aiter__(self) -> AsyncIterator[Recipient]:
        self.duplicates = 0
        seen: set[str] = set()
        for row in self._rows:
            key = row.email.strip().lower()
            if key in seen:
                self.duplicates += 1
                continue
            seen.add(key)
            yield Recipient(row.email, row.name, row.vars or None)


def open_source(namespace: str, recipients: Recipients, settings: OperatorSettings) -> RecipientSource:
    """The campaign's recipient source. THE call site for the recipients loader (see above)."""
    del namespace, settings  # for the loader: ConfigMaps and Secrets are read in the campaign's namespace
    kind, value = recipients.source
    if kind == "inline":
        assert isinstance(value, list)
        return InlineSource(value)
    raise SourceError(
        "SourceNotSupported",
        f"recipients.{kind} is not supported by this operator version yet; list the recipients in "
        "recipients.inline (at most 1,000)",
    )
