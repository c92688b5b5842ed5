"""A source's bytes → checked, deduplicated recipients, counted, without holding the event loop.

Every other reconcile and timer of the operator runs on the same event loop, and parsing a
million rows is seconds of work. Data that is already there (a ConfigMap value, a download's
buffer) is read without the loop ever getting a turn, so the stream gives it one itself, at
least every SLICE_SECONDS of its own and its consumer's work (`asyncio.sleep(0)`). The rows go
through in slices of SLICE_LINES lines, so no single step runs long either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from mailtrain_operator.recipients.errors import SOURCE_TOO_LARGE, TOO_MANY_RECIPIENTS, SourceError
from mailtrain_operator.recipients.lines import Line, LineSplitter
from mailtrain_operator.recipients.rows import Invalid, Row
from mailtrain_operator.recipients.seen import SeenAddresses
from mailtrain_sender.layout import Recipient

SLICE_LINES = 128
SLICE_SECONDS = 0.005
MAX_EXAMPLES = 5
CHUNK_BYTES = 65_536  # how a value already in memory is cut, like a download's pieces


class Limits(NamedTuple):
    max_bytes: int  # the source's size (after any Content-Encoding is undone)
    max_recipients: int  # recipients after checks and deduplication


@dataclass
class Counts:
    """How the rows of a source were sorted; rows == recipients + invalid + duplicates throughout.

    - recipients: yielded; valid, each address once (its first row).
    - invalid: dropped as unusable: not csv or JSON, a wrong number of fields, an address or a
      name the sender would refuse, an over-long row. Never published, so Redis never counts
      them: see the package's docstring for what the caller does with them.
    - duplicates: valid rows whose address an earlier row had (compared case-insensitively).
    - examples: the first MAX_EXAMPLES invalid rows, with their line and reason.

    Blank lines, rows of empty fields and the csv header are not rows.
    """

    rows: int = 0
    recipients: int = 0
    invalid: int = 0
    duplicates: int = 0
    examples: list[Invalid] = field(default_factory=list)


class Parser(Protocol):
    def push(self, lines: Iterable[Line], *, final: bool = False) -> list[Row]: ...


async def parse_bytes(
    chunks: AsyncIterable[bytes], parser: Parser, max_bytes: int, limit_name: str
) -> AsyncGenerator[list[Row], None]:
    """The rows of a byte stream, a slice of lines at a time."""
    splitter = LineSplitter()
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise SourceError(
                SOURCE_TOO_LARGE,
                f"the list is larger than {max_bytes:,} bytes ({limit_name}); split it into several "
                "campaigns",
            )
        lines = splitter.feed(chunk)
        for start in range(0, len(lines), SLICE_LINES):
            yield parser.push(lines[start : start + SLICE_LINES])
    yield parser.push(splitter.finish(), final=True)


async def in_chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK_BYTES):
        yield data[start : start + CHUNK_BYTES]


async def rows_once(rows: list[Row]) -> AsyncGenerator[list[Row], None]:
    for start in range(0, len(rows), SLICE_LINES):
        yield rows[start : start + SLICE_LINES]


class RecipientStream:
    """The recipients of one source, in the source's order, each address once: iterate it once,
    one recipient at a time (`async for`) or in lists (`batches()`). `counts` grows as it goes
    and is final when the iteration ends. SourceError may come from any step of the iteration."""

    def __init__(self, row_batches: AsyncGenerator[list[Row], None], limits: Limits, limit_name: str) -> None:
        self._row_batches = row_batches
        self._limits = limits
        self._limit_name = limit_name
        self._seen = SeenAddresses()
        self._started = False
        self.counts = Counts()

    async def batches(self) -> AsyncIterator[list[Recipient]]:
        if self._started:
            raise RuntimeError("a RecipientStream can be iterated once; open the source again")
        self._started = True
        counts, seen, limit = self.counts, self._seen, self._limits.max_recipients
        turn = time.monotonic()
        async for rows in self._row_batches:
            batch: list[Recipient] = []
            for row in rows:
                if isinstance(row, Invalid):
                    counts.invalid += 1
                    if len(counts.examples) < MAX_EXAMPLES:
                        counts.examples.append(row)
                elif seen.add(row.key):
                    batch.append(row.recipient)
                else:
                    counts.duplicates += 1
            counts.rows += len(rows)
            counts.recipients += len(batch)
            if counts.recipients > limit:
                raise SourceError(
                    TOO_MANY_RECIPIENTS,
                    f"the list has more than {limit:,} recipients ({self._limit_name}); split it into "
                    "several campaigns",
                )
            if time.monotonic() - turn > SLICE_SECONDS:
                await asyncio.sleep(0)  # the other reconciles' turn
                turn = time.monotonic()
            if batch:
                yield batch

    async def __aiter__(self) -> AsyncIterator[Recipient]:
        async for batch in self.batches():
            for recipient in batch:
                yield recipient

    async def aclose(self) -> None:
        """Stop reading the source (the context manager of open_source does it)."""
        await self._row_batches.aclose()
