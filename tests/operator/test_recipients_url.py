"""URL sources against a local HTTP server: answers that fail, servers that stall or crawl, gzip,
redirects, limits, and a million rows published to a real Redis in bounded memory."""

from __future__ import annotations

import asyncio
import gc
import gzip
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from mailtrain_operator.api.mailcampaign import Recipients, UrlSource
from mailtrain_operator.recipients import SourceError, open_source
from mailtrain_operator.settings import OperatorSettings
from mailtrain_sender.layout import CampaignKeys, CampaignWire, decode_chunk
from mailtrain_sender.publisher import Publisher
from tests.harness.list_server import ListServer
from tests.harness.loop_monitor import LoopMonitor
from tests.harness.net import free_port

LIST = b"email,name\nann@example.org,Ann\nbob@example.org,Bob\nANN@EXAMPLE.ORG,Ann again\n"
MILLION = 1_000_000


def million_row(i: int) -> bytes:
    """Every thousand rows: 998 recipients, one bad address, one duplicate (in capitals)."""
    if i % 1000 == 998:
        return b"not-an-address-%d,Nobody,X\n" % i
    if i % 1000 == 999:
        return million_row(i - 500).upper()
    return b"reader%d@example%d.org,Reader %d,A%07d\n" % (i, i % 100, i, i)


def routes(app: web.Application, released: asyncio.Event) -> None:
    async def plain(request: web.Request) -> web.Response:
        return web.Response(body=LIST, content_type="text/csv")

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(LIST), headers={"Content-Encoding": "gzip"})

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    async def redirect(request: web.Request) -> web.Response:
        targets = {"ok": "/list.csv", "loop": "/redirect/loop", "ftp": "ftp://127.0.0.1/list.csv"}
        raise web.HTTPFound(targets[request.match_info["to"]])

    async def stall_before_answer(request: web.Request) -> web.Response:
        await released.wait()
        return web.Response(body=LIST)

    async def stall_in_body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(LIST[:30])
        await released.wait()
        return response

    async def slow(request: web.Request) -> web.StreamResponse:
        """Five pieces 0.4 s apart: longer in all than the 1 s timeout, never silent for 1 s."""
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(LIST), 20):
            await response.write(LIST[start : start + 20])
            await asyncio.sleep(0.4)  # the slowness under test
        return response

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"email\n")
        for i in range(10_000):
            await response.write(b"r%d@example.org\n" % i * 100)
        return response

    async def million(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/csv"})
        await response.prepare(request)
        await response.write(b"email,name,order\n")
        for start in range(0, MILLION, 2000):
            await response.write(b"".join(million_row(i) for i in range(start, start + 2000)))
        return response

    app.router.add_get("/list.csv", plain)
    app.router.add_get("/list.csv.gz", gzipped)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect/{to}", redirect)
    app.router.add_get("/stall-before-answer", stall_before_answer)
    app.router.add_get("/stall-in-body", stall_in_body)
    app.router.add_get("/slow", slow)
    app.router.add_get("/endless", endless)
    app.router.add_get("/million.csv", million)


@pytest.fixture
def server() -> Iterator[ListServer]:
    started = ListServer(routes).start()
    yield started
    started.stop()


def spec(href: str) -> Recipients:
    return Recipients(url=UrlSource(href=href))


async def load(href: str, **settings: Any) -> list[str]:
    async with open_source("any", spec(href), OperatorSettings(**settings)) as stream:
        return [r.email async for r in stream]


async def failure(href: str, **settings: Any) -> SourceError:
    with pytest.raises(SourceError) as caught:
        await load(href, **settings)
    return caught.value


async def test_a_list_is_read_plain_gzipped_or_through_a_redirect(server: ListServer) -> None:
    for path in ("/list.csv", "/list.csv.gz", "/redirect/ok"):
        assert await load(server.url(path)) == ["ann@example.org", "bob@example.org"], path


@pytest.mark.parametrize(
    ("path", "message", "temporary"),
    [
        ("/status/404", "{url} answered 404 Not Found", False),
        ("/status/403", "{url} answered 403 Forbidden", False),
        ("/status/503", "{url} answered 503 Service Unavailable", True),
        ("/status/429", "{url} answered 429 Too Many Requests", True),
        ("/redirect/loop", "{url} redirects more than 10 times", True),
        ("/redirect/ftp", "{url} redirects to a URL that is not http(s)", True),
    ],
)
async def test_an_answer_that_is_not_a_list_says_what_happened(
    server: ListServer, path: str, message: str, temporary: bool
) -> None:
    error = await failure(server.url(path) + "?token=s3cr3t#frag")
    assert (error.reason, error.message, error.temporary) == (
        "UrlUnreachable",
        message.format(url=server.url(path)),
        temporary,
    )


async def test_a_refused_connection_names_host_and_port() -> None:
    port = free_port()  # nothing listens there
    error = await failure(f"http://user:pw@127.0.0.1:{port}/l.csv")
    assert (error.reason, error.message, error.temporary) == (
        "UrlUnreachable",
        f"cannot connect to 127.0.0.1:{port}: connection refused",
        True,
    )


@pytest.mark.parametrize("path", ["/stall-before-answer", "/stall-in-body"])
async def test_a_server_that_stalls_is_given_up_after_the_timeout(server: ListServer, path: str) -> None:
    started = time.monotonic()
    error = await failure(server.url(path), recipients_url_timeout=0.5)
    took = time.monotonic() - started
    assert (error.reason, error.message, error.temporary) == (
        "UrlUnreachable",
        f"{server.url(path)} sent nothing for 0.5 s (MAILTRAIN_OPERATOR_RECIPIENTS_URL_TIMEOUT)",
        True,
    )
    assert 0.5 <= took < 5, took


async def test_a_slow_server_that_keeps_sending_is_waited_for(server: ListServer) -> None:
    started = time.monotonic()
    assert await load(server.url("/slow"), recipients_url_timeout=1.0) == [
        "ann@example.org",
        "bob@example.org",
    ]
    assert time.monotonic() - started > 1.0  # longer than the timeout in all


async def test_a_list_larger_than_the_limit_is_refused_before_or_while_reading(server: ListServer) -> None:
    declared = await failure(server.url("/list.csv"), recipients_max_bytes=len(LIST) - 1)
    assert (declared.reason, declared.message) == (
        "SourceTooLarge",
        f"{server.url('/list.csv')} is {len(LIST)} bytes, more than the {len(LIST) - 1} a list may have",
    )
    streamed = await failure(server.url("/endless"), recipients_max_bytes=1_000_000)
    assert (streamed.reason, streamed.message) == (
        "SourceTooLarge",
        "the list is larger than 1,000,000 bytes (MAILTRAIN_OPERATOR_RECIPIENTS_MAX_BYTES); split it into "
        "several campaigns",
    )


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM (the peak) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


async def _chunks(stream: AsyncIterator[Any]) -> int:
    return sum([1 async for _ in stream])


async def test_a_million_rows_are_published_in_bounded_memory_without_holding_the_loop(
    server: ListServer, redis_url: str
) -> None:
    client = Redis.from_url(redis_url)
    wire = CampaignWire.model_validate(
        {"id": "million", "name": "t/million", "pool": "p", "from": {"address": "news@acme.example"},
         "subject": "Hi", "text": "Hi", "createdMs": 1, "tokenKey": "k", "chunkSize": 512}
    )  # fmt: skip
    # The heap that exists before the load is frozen, as a long-running process does after its
    # imports: otherwise every full garbage collection walks all of pytest's and the harness's
    # objects (40-80 ms here), however little the load itself keeps alive. The load's own
    # objects are still collected as usual.
    gc.collect()
    gc.freeze()
    try:
        _reset_peak_rss()
        before = _status_kib("VmRSS")
        started = time.monotonic()
        async with (
            LoopMonitor() as monitor,
            open_source("any", spec(server.url("/million.csv")), OperatorSettings()) as stream,
        ):
            published = await Publisher(client).publish(wire, stream)
        took = time.monotonic() - started
    finally:
        gc.unfreeze()
    grew_mib = (_status_kib("VmHWM") - before) / 1024
    print(
        f"{MILLION:,} rows in {took:.1f} s ({MILLION / took:,.0f} rows/s); peak RSS +{grew_mib:.1f} MiB; "
        f"loop held at most {monitor.worst_cpu * 1000:.1f} ms CPU ({monitor.worst_wall * 1000:.1f} ms wall), "
        f"longest GC {monitor.worst_gc * 1000:.1f} ms, {monitor.turns} turns"
    )
    counts = stream.counts
    assert (counts.rows, counts.recipients, counts.invalid, counts.duplicates) == (
        MILLION,
        998_000,
        1000,
        1000,
    )
    assert (published.total, published.chunks) == (998_000, -(-998_000 // 512))
    keys = CampaignKeys("million")
    first = decode_chunk(await client.hget(keys.rcpt, "0"))  # type: ignore[misc]
    assert [r.email for r in first[:3]] == [
        "reader0@example0.org",
        "reader1@example1.org",
        "reader2@example2.org",
    ]
    last = decode_chunk(await client.hget(keys.rcpt, str(published.chunks - 1)))  # type: ignore[misc]
    assert (last[-1].email, last[-1].name, last[-1].vars) == (
        "reader999997@example97.org",
        "Reader 999997",
        {"order": "A0999997"},
    )
    await client.aclose()
    # Holding the rows would take hundreds of MiB; the dedup table is 16 MiB of this.
    assert grew_mib < 64
    assert monitor.worst_cpu < 0.050
