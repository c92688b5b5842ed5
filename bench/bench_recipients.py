"""make bench-recipients: a million csv rows from a local HTTP server through the operator's loader.

Prints one JSON line per figure. Every figure is measured in a fresh process (so that its peak
RSS is its own), against a baseline measured in the same invocation, alternating round by round:

  raw       the body read with aiohttp and its lines counted, nothing parsed (baseline of 1)
  load      the same body through recipients.open_source: parsed, checked, deduplicated
  publish   open_source straight into Publisher.publish on a real redis-server
  inline    Publisher.publish of the same recipients from a Python list (baseline of 2: the
            publisher's own cost, and what holding a million recipients in memory costs)

Each process imports kopf and the operator's framework first, so its heap is an operator's.
Peak RSS is VmHWM after the run minus VmRSS before it (the peak reset through clear_refs).
The worst loop stall is the most CPU the loop's thread spent between two turns of a task that
wakes every millisecond (tests/harness/loop_monitor.py); `load` and `publish` run twice, with
and without the heap from before the load frozen (gc.freeze), because a full garbage collection
walks every unfrozen object of the process whoever triggers it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kopf  # noqa: F401 - imported for the heap it brings: each run's process is an operator's
from aiohttp import web
from redis.asyncio import Redis

import mailtrain_operator.framework  # noqa: F401 - the same
from mailtrain_operator.api.mailcampaign import Recipients, UrlSource
from mailtrain_operator.recipients import open_source
from mailtrain_operator.settings import OperatorSettings
from mailtrain_sender.layout import CampaignWire, Recipient
from mailtrain_sender.publisher import Publisher
from tests.harness import net
from tests.harness.loop_monitor import LoopMonitor
from tests.harness.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
ROWS = 1_000_000


def row(i: int) -> bytes:
    """Every thousand rows: 998 recipients, one bad address, one duplicate (in capitals)."""
    if i % 1000 == 998:
        return b"not-an-address-%d,Nobody,X\n" % i
    if i % 1000 == 999:
        return row(i - 500).upper()
    return b"reader%d@example%d.org,Reader %d,A%07d\n" % (i, i % 100, i, i)


def rows(count: int) -> Iterator[bytes]:
    yield b"email,name,order\n"
    for start in range(0, count, 2000):
        yield b"".join(row(i) for i in range(start, min(count, start + 2000)))


# -- the list server (its own process) ---------------------------------------------------------


def serve(port: int, count: int) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/csv"})
        await response.prepare(request)
        for piece in rows(count):
            await response.write(piece)
        return response

    app = web.Application()
    app.router.add_get("/list.csv", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- one measured run (its own process) --------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # Linux: VmHWM := VmRSS


async def _raw(url: str, redis_url: str, recipients: Any) -> int:
    lines = 0
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        async for piece in response.content.iter_chunked(65_536):
            lines += piece.count(b"\n")
    return lines - 1  # the header


async def _load(url: str, redis_url: str, recipients: Any) -> int:
    spec = Recipients(url=UrlSource(href=url))
    async with open_source("bench", spec, OperatorSettings()) as stream:
        return sum([len(batch) async for batch in stream.batches()])


def _wire(name: str) -> CampaignWire:
    return CampaignWire.model_validate(
        {"id": f"{name}-{time.time_ns()}", "name": f"bench/{name}", "pool": "bench",
         "from": {"address": "news@acme.example"}, "subject": "Hi {{ name }}", "text": "Order {{ order }}",
         "createdMs": 1, "tokenKey": "bench", "chunkSize": 512}
    )  # fmt: skip


async def _publish(url: str, redis_url: str, recipients: Any) -> int:
    client = Redis.from_url(redis_url)
    async with open_source("bench", Recipients(url=UrlSource(href=url)), OperatorSettings()) as stream:
        published = await Publisher(client).publish(_wire("publish"), stream)
    await client.aclose()
    return published.total


async def _inline(url: str, redis_url: str, recipients: Any) -> int:
    client = Redis.from_url(redis_url)
    published = await Publisher(client).publish(_wire("inline"), recipients)
    await client.aclose()
    return published.total


def _held_list() -> list[Recipient]:
    """The recipients already checked and deduplicated: what a loader holding the list would keep."""
    return [
        Recipient(f"reader{i}@example{i % 100}.org", f"Reader {i}", {"order": f"A{i:07d}"})
        for i in range(ROWS)
        if i % 1000 < 998
    ]


RUNS = {"raw": _raw, "load": _load, "publish": _publish, "inline": _inline}


async def measure(kind: str, url: str, redis_url: str, freeze: bool) -> dict[str, Any]:
    """Peak RSS over everything the run holds (the inline list too); time and stalls of the run only."""
    client = Redis.from_url(redis_url)
    await client.flushall()
    gc.collect()
    if freeze:
        gc.freeze()
    _reset_peak_rss()
    before = _status_kib("VmRSS")
    recipients = _held_list() if kind == "inline" else None
    started, cpu_started = time.perf_counter(), time.process_time()
    async with LoopMonitor() as monitor:
        count = await RUNS[kind](url, redis_url, recipients)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    peak = _status_kib("VmHWM")
    await client.flushall()
    await client.aclose()
    return {
        "kind": kind,
        "freeze": freeze,
        "items": count,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),  # the process's, its threads' too (the loop monitor's is idle)
        "rows_per_second": round(ROWS / seconds),
        "peak_rss_mib": round((peak - before) / 1024, 1),
        "worst_stall_cpu_ms": round(monitor.worst_cpu * 1000, 1),
        "worst_stall_wall_ms": round(monitor.worst_wall * 1000, 1),
        "longest_gc_ms": round(monitor.worst_gc * 1000, 1),
    }


# -- the orchestration ------------------------------------------------------------------------


def emit(figure: str, **values: Any) -> None:
    print(json.dumps({"figure": figure, **values}), flush=True)


def run(kind: str, url: str, redis_url: str, freeze: bool = False) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.bench_recipients", "measure", kind, url, redis_url]
    out = subprocess.run(
        [*command, *(["--freeze"] if freeze else [])], check=True, capture_output=True, text=True, cwd=ROOT
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def median_of(results: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in results))


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("rows_per_second", "peak_rss_mib", "worst_stall_cpu_ms", "worst_stall_wall_ms", "longest_gc_ms")
    return {key: median_of(results, key) for key in keys} | {"items": results[0]["items"]}


def main(rounds: int) -> None:
    emit("machine", cpus=os.cpu_count(), python=platform.python_version(), platform=platform.platform(),
         rows=ROWS, rounds=rounds)  # fmt: skip
    redis = RedisServer(Path(tempfile.mkdtemp(prefix="bench-recipients-"))).start()
    port = net.free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_recipients", "serve", "--port", str(port)], cwd=ROOT
    )
    try:
        net.wait_until(lambda: net.port_accepts(port), what="list server", timeout=30, process=server)
        url = f"http://127.0.0.1:{port}/list.csv"
        found: dict[str, list[dict[str, Any]]] = {}
        for _ in range(rounds):  # baseline and candidate alternate: drift hits both alike
            for kind, freeze in (("raw", False), ("load", False), ("load", True), ("inline", False),
                                 ("publish", False), ("publish", True)):  # fmt: skip
                found.setdefault(f"{kind}{'-frozen' if freeze else ''}", []).append(
                    run(kind, url, redis.url, freeze)
                )
        figures = {name: summary(results) for name, results in found.items()}
        for name, figure in figures.items():
            emit(name, **figure)
        ratio = median_of(found["load"], "rows_per_second") / median_of(found["raw"], "rows_per_second")
        emit("load-vs-raw-read", ratio=round(ratio, 3))
        ratio = median_of(found["publish"], "rows_per_second") / median_of(found["inline"], "rows_per_second")
        emit("publish-from-url-vs-from-list", ratio=round(ratio, 3))
    finally:
        server.terminate()
        server.wait()
        redis.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    serve_args = sub.add_parser("serve", help="the list server (started by the benchmark)")
    serve_args.add_argument("--port", type=int, required=True)
    serve_args.add_argument("--rows", type=int, default=ROWS)
    measure_args = sub.add_parser("measure", help="one measured run (started by the benchmark)")
    measure_args.add_argument("kind", choices=sorted(RUNS))
    measure_args.add_argument("url")
    measure_args.add_argument("redis_url")
    measure_args.add_argument("--freeze", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="alternating repeats; medians are reported")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port, args.rows)
    elif args.command == "measure":
        print(json.dumps(asyncio.run(measure(args.kind, args.url, args.redis_url, args.freeze))))
    else:
        main(args.rounds)
