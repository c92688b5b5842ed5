"""A campaign example's recipients, read from the objects beside it, the way the operator reads them.

`source_text` finds the list a campaign names among the example objects of its namespace group (an
inline list, or the ConfigMap or Secret key), and `load` reads it with the operator's own loader
(csv/jsonl parsing, the sender's address checks, deduplication). `count_rows` counts the rows
without the loader, for an expectation that does not come from the code under test.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from mailtrain_operator.api.mailcampaign import ListFormat
from mailtrain_operator.recipients.rows import Row, inline_rows
from mailtrain_operator.recipients.sources import parser
from mailtrain_operator.recipients.stream import (
    Counts,
    Limits,
    RecipientStream,
    in_chunks,
    parse_bytes,
    rows_once,
)
from mailtrain_sender.layout import Recipient

Json = dict[str, Any]
LIMITS = Limits(max_bytes=1 << 30, max_recipients=5_000_000)


@dataclass(frozen=True)
class ListSource:
    format: ListFormat | None  # None: inline
    inline: list[Json] | None = None
    text: str | None = None


def source_text(campaign: Json, neighbours: list[Json]) -> ListSource | None:
    """The campaign's list from the objects of its group; None for a URL (or a list not among them)."""
    recipients = campaign["spec"]["recipients"]
    if "inline" in recipients:
        return ListSource(None, inline=recipients["inline"])
    for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
        ref = recipients.get(field)
        if ref is None:
            continue
        for obj in neighbours:
            if obj["kind"] != kind or obj["metadata"]["name"] != ref["name"]:
                continue
            text = (obj.get("stringData") or {}).get(ref["key"]) or (obj.get("data") or {}).get(ref["key"])
            if text is not None and kind == "Secret" and ref["key"] not in (obj.get("stringData") or {}):
                text = base64.b64decode(text).decode()
            if text is not None:
                return ListSource(ref.get("format", "csv"), text=text)
    return None


async def load(source: ListSource) -> tuple[list[Recipient], Counts]:
    """The recipients the operator would publish from the source, and its counts."""
    batches: AsyncGenerator[list[Row], None]
    if source.inline is not None:
        items = [(item.get("email"), item.get("name"), item.get("vars")) for item in source.inline]
        batches = rows_once(inline_rows(items))
    else:
        assert source.text is not None and source.format is not None
        batches = parse_bytes(in_chunks(source.text.encode()), parser(source.format), LIMITS.max_bytes, "x")
    stream = RecipientStream(batches, LIMITS, "x")
    found = [recipient async for recipient in stream]
    return found, stream.counts


def count_rows(source: ListSource) -> int:
    """Rows of the list, counted plainly: inline items, or non-blank lines (minus a csv header). Good
    for lists without quoted line breaks, which is what the docs' examples are."""
    if source.inline is not None:
        return len(source.inline)
    assert source.text is not None
    lines = [line for line in source.text.splitlines() if line.strip()]
    return len(lines) - 1 if source.format == "csv" else len(lines)
