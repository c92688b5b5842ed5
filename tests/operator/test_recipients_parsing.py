"""Recipient lists in, recipients out: random csv and jsonl lists checked against what they hold.

The random tests print their seed; RECIPIENTS_SEED=<seed> repeats a run. Each list is read
whole and in random pieces (cut through multi-byte characters and line breaks), and both must
give exactly the list's valid addresses, each once, first row first, in order, with the
invalid and duplicate rows counted and the first invalid rows' lines reported.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mailtrain_operator.api.mailcampaign import InlineRecipient, ListFormat, Recipients
from mailtrain_operator.recipients import Counts, SourceError, open_source
from mailtrain_operator.recipients.errors import BAD_HEADER, NOT_UTF8
from mailtrain_operator.recipients.sources import parser
from mailtrain_operator.recipients.stream import MAX_EXAMPLES, Limits, RecipientStream, in_chunks, parse_bytes
from mailtrain_operator.settings import OperatorSettings
from mailtrain_sender.addresses import InvalidAddressError, normalize
from tests.harness.loop_monitor import LoopMonitor
from tests.operator.recipient_lists import BAD_ADDRESSES, CsvList, JsonlList, pieces

SEED = int(os.environ.get("RECIPIENTS_SEED") or random.SystemRandom().getrandbits(40))
NO_LIMIT = Limits(1 << 62, 1 << 62)


def announce_seed() -> random.Random:
    print(f"seed {SEED}: RECIPIENTS_SEED={SEED} repeats this run")
    return random.Random(SEED)


async def _yield_pieces(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def stream_of(parts: list[bytes], list_format: ListFormat, limits: Limits = NO_LIMIT) -> RecipientStream:
    rows = parse_bytes(_yield_pieces(parts), parser(list_format), limits.max_bytes, "MAX_BYTES")
    return RecipientStream(rows, limits, "MAX_COUNT")


async def load(parts: list[bytes], list_format: ListFormat) -> tuple[list[tuple[str, Any, Any]], Counts]:
    stream = stream_of(parts, list_format)
    got = [(r.email, r.name, r.vars) async for r in stream]
    return got, stream.counts


async def _check_random_lists(list_type: type[CsvList | JsonlList], list_format: ListFormat) -> None:
    rng = announce_seed()
    totals = {"recipients": 0, "invalid": 0, "duplicates": 0}
    for case in range(150):
        made = list_type(rng, rng.choice([0, 1, 5, 40, 150]))
        expected = made.expected
        for parts in ([made.data], pieces(rng, made.data)):
            got, counts = await load(parts, list_format)
            where = f"seed {SEED}, list {case}, {len(parts)} pieces"
            assert got == expected.recipients, where
            assert counts.invalid == len(expected.invalid_lines), where
            assert counts.duplicates == expected.duplicates, where
            assert counts.recipients == len(got), where
            assert counts.rows == counts.recipients + counts.invalid + counts.duplicates, where
            assert [e.line for e in counts.examples] == expected.invalid_lines[:MAX_EXAMPLES], where
        totals["recipients"] += counts.recipients
        totals["invalid"] += counts.invalid
        totals["duplicates"] += counts.duplicates
    # The lists must have exercised every outcome, or the test proves less than it says.
    assert all(totals.values()), totals


async def test_random_csv_lists_give_each_valid_address_once_in_order() -> None:
    await _check_random_lists(CsvList, "csv")


async def test_random_jsonl_lists_give_each_valid_address_once_in_order() -> None:
    await _check_random_lists(JsonlList, "jsonl")


def test_the_generators_bad_addresses_are_refused_by_the_sender() -> None:
    for address in BAD_ADDRESSES:
        with pytest.raises(InvalidAddressError):
            normalize(address)


async def test_bytes_that_are_not_utf8_name_their_line_however_the_list_is_cut() -> None:
    rng = announce_seed()
    for case in range(60):
        made = CsvList(rng, 30)
        data = made.data.removeprefix(b"\xef\xbb\xbf")
        starts = [0] + [i + 1 for i, byte in enumerate(data) if byte == 0x0A and i + 1 < len(data)]
        line = rng.randrange(len(starts))
        spoiled = data[: starts[line]] + b"\xe9" + data[starts[line] :]  # é in Latin-1
        for parts in ([spoiled], pieces(rng, spoiled)):
            with pytest.raises(SourceError) as caught:
                await load(parts, "csv")
            assert caught.value.reason == NOT_UTF8
            assert caught.value.message == (
                f"line {line + 1} is not UTF-8 text (byte 0xE9); save the list as UTF-8 (in Excel: CSV UTF-8)"
            ), f"seed {SEED}, list {case}"


async def _error(data: bytes, list_format: ListFormat = "csv", limits: Limits = NO_LIMIT) -> SourceError:
    with pytest.raises(SourceError) as caught:
        async for _ in stream_of([data], list_format, limits):
            pass
    return caught.value


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"name,mail\nBob,bob@example.org\n",
            "the csv header (line 1) has no email column; the first row "
            "must name the columns, e.g. email,name (a var column may follow)",
        ),
        (
            b"email;name\nbob@example.org;Bob\n",
            "the csv header (line 1) has no email column; columns must be "
            "separated by commas, not semicolons or tabs",
        ),
        (
            b"<!DOCTYPE html>\n<html>\n",
            "the csv header (line 1) has no email column; the list looks like HTML, not csv",
        ),
        (
            b"\n\nEmail,name,EMAIL\n",
            "the csv header (line 3) names column 3 like column 1; give every column its own name",
        ),
        (
            b"",
            "the csv list has no header row; the first row must name the columns, e.g. email,name (a var "
            "column may follow)",
        ),
        (
            b'email,"name\nb@example.org,B\n',
            'the csv header (line 1) has a quoted value that is not closed (a " is missing)',
        ),
        (
            b"email,name\rb@example.org,B\r",
            "the csv header (line 1) has a carriage return (CR) outside double "
            "quotes; lines must end with LF or CRLF",
        ),
        (b"\xff\xfee\x00m\x00", "the list is UTF-16 text; save it as UTF-8 (in Excel: CSV UTF-8)"),
        (
            "email,name\n".encode("utf-16-le"),
            "the csv header (line 1) has no email column; the list looks like UTF-16 text; save it as UTF-8 "
            "(in Excel: CSV UTF-8)",
        ),
    ],
)
async def test_a_list_that_cannot_be_read_says_what_to_fix(data: bytes, message: str) -> None:
    error = await _error(data)
    assert (error.message, error.temporary) == (message, False)
    assert error.reason in (BAD_HEADER, NOT_UTF8)


async def test_invalid_rows_are_reported_by_line_and_reason() -> None:
    data = (
        b"email,name,city\n"
        b"ok@example.org,Ok,Berlin\n"
        b"no-at-sign,No,Paris\n"
        b'"Doe, John"@example.org,John,Rome\n'
        b"b@example.org,Doe, Jane,Oslo\n"
        b'c@example.org,"Bell\x07",Bern\n'
        b'd@example.org,"D",Lima\n'
        b'"e@example.org,E,Quito\n'
        b"f@example.org,F,Kyiv\n"
    )
    stream = stream_of([data], "csv")
    got = [r.email async for r in stream]
    assert got == ["ok@example.org", "d@example.org"]
    assert [str(e) for e in stream.counts.examples] == [
        "line 3: An email address must have an @-sign.",
        "line 4: The email address contains invalid characters before the @-sign: ',', SPACE.",
        "line 5: the row has 4 fields where the header has 3 (a value with a comma needs double quotes)",
        "line 6: the name contains a control character (U+0007)",
        'line 8: the row has a quoted value that is not closed (a " is missing)',
    ]
    assert stream.counts.invalid == 5  # the open quote took the last row with it, as any csv reader would


async def test_jsonl_rows_say_what_is_wrong() -> None:
    data = b"\n".join(
        [
            b'{"email": "a@example.org", "name": "A", "city": "Oslo", '
            b'"vars": {"plan": "pro", "city": "Rome"}}',
            b'{"email": "a@example.org"',
            b'{"email": "x@example.org" "name": "X"}',
            b'["b@example.org"]',
            b'{"name": "B"}',
            b'{"email": 42}',
            b'{"email": "c@example.org", "vars": [1]}',
            b'{"email": "d@example.org", "name": "\\ud800"}',
        ]
    )
    stream = stream_of([data], "jsonl")
    got = [(r.email, r.name, r.vars) async for r in stream]
    assert got == [("a@example.org", "A", {"city": "Rome", "plan": "pro"})]  # vars wins a clash
    assert [str(e) for e in stream.counts.examples] == [
        "line 2: not JSON: Expecting ',' delimiter at the end of the line",
        "line 3: not JSON: Expecting ',' delimiter at character 27",
        "line 4: a JSON list, not an object",
        "line 5: no email",
        "line 6: email is a number, not text",
    ]
    assert stream.counts.invalid == 7


async def test_limits_on_size_and_count_name_their_setting() -> None:
    data = b"email\n" + b"".join(b"r%d@example.org\n" % i for i in range(100))
    too_big = await _error(data, limits=Limits(len(data) - 1, 1000))
    assert (too_big.reason, too_big.message) == (
        "SourceTooLarge",
        f"the list is larger than {len(data) - 1:,} bytes (MAX_BYTES); split it into several campaigns",
    )
    too_many = await _error(data, limits=Limits(len(data), 99))
    assert (too_many.reason, too_many.message) == (
        "TooManyRecipients",
        "the list has more than 99 recipients (MAX_COUNT); split it into several campaigns",
    )


async def test_inline_recipients_are_checked_and_deduplicated_like_any_list() -> None:
    spec = Recipients(
        inline=[
            InlineRecipient(email="Ann@Example.org", name=" Ann ", vars={"n": 1}),
            InlineRecipient(email="bob@example", name="Bob"),
            InlineRecipient(email="ann@EXAMPLE.org", name="Ann again"),
            InlineRecipient(email="cy@example.org"),
        ]
    )
    async with open_source("any", spec, OperatorSettings()) as stream:
        got = [(r.email, r.name, r.vars) async for r in stream]
    assert got == [("Ann@Example.org", "Ann", {"n": 1}), ("cy@example.org", None, None)]
    assert (stream.counts.invalid, stream.counts.duplicates, stream.counts.rows) == (1, 1, 4)
    assert [str(e) for e in stream.counts.examples] == [
        "line 2: The part after the @-sign is not valid. It should have a period."
    ]


async def test_a_stream_is_read_once() -> None:
    stream = stream_of([b"email\na@example.org\n"], "csv")
    assert [r.email async for r in stream] == ["a@example.org"]
    with pytest.raises(RuntimeError, match="iterated once"):
        async for _ in stream:
            pass


async def test_a_large_list_in_memory_leaves_the_loop_to_others() -> None:
    """A ConfigMap's megabyte is parsed without another task waiting more than 50 ms for a turn."""
    data = b"email,name,order\n" + b"".join(
        b"reader%d@example%d.org,Reader %d,A%07d\n" % (i, i % 50, i, i) for i in range(60_000)
    )
    stream = RecipientStream(parse_bytes(in_chunks(data), parser("csv"), len(data), "B"), NO_LIMIT, "C")
    async with LoopMonitor() as monitor:
        count = sum([len(batch) async for batch in stream.batches()])
    assert count == 60_000
    print(f"worst hold of the loop: {monitor.worst_cpu * 1000:.1f} ms CPU, {monitor.turns} turns")
    assert monitor.worst_cpu < 0.050
    assert monitor.turns > 20
