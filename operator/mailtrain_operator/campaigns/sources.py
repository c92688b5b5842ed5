"""Where a campaign's recipients come from: the one place where the campaign code meets the loader.

`mailtrain_operator.recipients` reads the list (inline, ConfigMap, Secret or URL; csv or jsonl),
checks every row as the sender would, drops repeated addresses and counts what it dropped. Its
`open_source` is a context manager (a URL source holds an HTTP session); the campaign code wants
a source it can iterate whenever it needs the list, once per publish or republish. `LoadedSource`
is that: each iteration opens the list afresh, reads it in order, and closes it.

The publisher reads a source once per publish, in order; a republish reads it again and expects
the same list (the checkpoint's recipientsDigest says whether it is).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from mailtrain_operator import recipients
from mailtrain_operator.api import Recipients
from mailtrain_operator.recipients import SourceError
from mailtrain_operator.settings import OperatorSettings
from mailtrain_sender.layout import Recipient

__all__ = ["LoadedSource", "RecipientSource", "SourceError", "open_source"]


class RecipientSource(Protocol):
    """Recipients in a stable order, deduplicated; the counters are final once iteration ends."""

    @property
    def invalid(self) -> int:
        """Rows that could not become a recipient (not published; counted in status.invalid)."""

    @property
    def duplicates(self) -> int:
        """Rows dropped because their address came earlier in the list."""

    def __aiter__(self) -> AsyncIterator[Recipient]: ...


class LoadedSource:
    """A campaign's list, read through `recipients.open_source` each time it is iterated."""

    def __init__(self, namespace: str, spec: Recipients, settings: OperatorSettings) -> None:
        self._namespace = namespace
        self._spec = spec
        self._settings = settings
        self._counts = recipients.Counts()

    @property
    def invalid(self) -> int:
        return self._counts.invalid

    @property
    def duplicates(self) -> int:
        return self._counts.duplicates

    async def __aiter__(self) -> AsyncIterator[Recipient]:
        async with recipients.open_source(self._namespace, self._spec, self._settings) as stream:
            self._counts = stream.counts  # live: final once the loop below ends
            async for recipient in stream:
                yield recipient


def open_source(namespace: str, spec: Recipients, settings: OperatorSettings) -> RecipientSource:
    """The campaign's recipient source; nothing is read until it is iterated."""
    return LoadedSource(namespace, spec, settings)
