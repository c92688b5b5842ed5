"""A randomized fault-injection soak of the sender pool: real processes, real Redis, a recording relay.

    python -m tests.soak.run_soak --duration 90 --seed 1234 --processes 3

1. Prints the seed and the command that replays it.
2. Starts redis-server (append-only, fsync always), the recording relay and the senders.
3. Fault phase (--duration seconds): faults.py's schedule; the relay's random faults on; the
   work sampler (samplers.py) checks caps every ~50 ms.
4. Heals: relay behaves, Redis up, senders replaced, paused campaigns resumed; waits until every
   campaign is terminal and the relay is quiet, with a deadline from the backlog.
5. Judges (invariants.py, throttle.py), prints the JSON report, exits 0 if every invariant held.

Import `run_soak_sync(SoakOptions(...))` to run it from a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from mailtrain_sender.layout import CampaignKeys
from tests.soak import options as opt
from tests.soak.faults import KIND_WEIGHTS, FaultSchedule
from tests.soak.invariants import TERMINAL, CampaignEvidence, Judge
from tests.soak.ledger import Ledger
from tests.soak.operations import CampaignOperations
from tests.soak.report import SoakReport, build_report
from tests.soak.rig import SoakRig
from tests.soak.samplers import WorkSampler
from tests.soak.throttle import check_throttle

INITIAL_CAMPAIGNS = 3  # so the first faults meet work in progress


async def run_soak(options: opt.SoakOptions) -> SoakReport:
    print(f"soak: seed {options.seed}", flush=True)
    print(f"soak: replay with: {options.command()}", flush=True)
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix=f"soak-{options.seed}-"))
    print(f"soak: logs, records and report in {workdir}", flush=True)
    ledger = Ledger()
    rig = SoakRig(workdir, options, ledger)
    seconds: dict[str, float] = {}
    sampler_task: asyncio.Task[None] | None = None
    began = phase = time.monotonic()
    main_task = asyncio.current_task()
    if main_task is not None:  # SIGTERM (a timeout, a CI cancel) stops every process, as Ctrl-C does
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        await asyncio.to_thread(rig.start)
        for _ in range(options.processes):
            await asyncio.to_thread(rig.start_sender)
        seconds["setup"] = time.monotonic() - phase
        rng = random.Random(options.seed)
        operations = CampaignOperations(rig)
        schedule = FaultSchedule(rig, operations, rng)
        sampler = WorkSampler(rig)
        sampler_task = asyncio.create_task(sampler.run())
        for _ in range(INITIAL_CAMPAIGNS):
            await operations.publish(random.Random(rng.getrandbits(64)))
        phase = time.monotonic()
        await schedule.run(options.duration)
        seconds["faults"] = time.monotonic() - phase
        phase = time.monotonic()
        await schedule.heal()
        quiesced = await wait_quiescent(rig, options.quiesce_timeout)
        seconds["quiescence"] = time.monotonic() - phase
        sampler_task.cancel()
        evidence = await collect(rig)
        messages = rig.relay.messages()
        transactions = rig.relay.transaction_times()
        relay_faults = rig.relay.injected_faults()
    finally:
        if sampler_task is not None:
            sampler_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler_task
        await rig.stop()
    judge = Judge(ledger, messages, relay_faults, evidence)
    judge.judge()
    throttle = check_throttle(transactions, ledger.throttle, ledger.started_at)
    seconds["total"] = time.monotonic() - began
    report = build_report(
        options=options,
        ledger=ledger,
        judge=judge,
        sampler=sampler,
        throttle=throttle,
        transactions=len(transactions),
        quiesced=quiesced,
        workdir=workdir,
        seconds=seconds,
    )
    (workdir / "report.json").write_text(report.to_json())
    if report.passed and options.cleanup:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


async def wait_quiescent(rig: SoakRig, timeout: float | None) -> bool:
    """Every campaign not deleted terminal, then the relay quiet for SETTLE seconds; False at the deadline."""
    ledger = rig.ledger
    if timeout is None:
        pending = 0
        for record in ledger.live_campaigns():
            pending += (await rig.publisher.progress(record.wire.id)).pending
        rate = float(rig.pool_settings()["smtp"]["throttling"]["messagesPerSecond"])
        timeout = 60.0 + 3.0 * pending / rate
    ledger.note("quiescence", deadline_s=round(timeout))
    deadline = time.monotonic() + timeout
    while True:
        states = [(await rig.publisher.progress(r.wire.id)).state for r in ledger.live_campaigns()]
        if all(state in TERMINAL for state in states):
            break
        if time.monotonic() > deadline:
            ledger.note("quiescence_deadline_passed", unfinished=sum(s not in TERMINAL for s in states))
            return False
        await asyncio.sleep(0.5)
    count, quiet_since = len(rig.relay.messages()), time.monotonic()
    while time.monotonic() - quiet_since < opt.SETTLE:
        if time.monotonic() > deadline + opt.SETTLE * 4:
            return False
        await asyncio.sleep(0.25)
        now_count = len(rig.relay.messages())
        if now_count != count:
            count, quiet_since = now_count, time.monotonic()
    ledger.note("quiet")
    return True


async def collect(rig: SoakRig) -> dict[str, CampaignEvidence]:
    """Progress and bitmaps of every campaign; for deleted ones, whatever keys are left."""
    evidence = {}
    for campaign, record in rig.ledger.campaigns.items():
        keys = CampaignKeys(campaign)
        progress = await rig.publisher.progress(campaign)
        done, failed, invalid = [
            _bytes(v) for v in await rig.client.mget([keys.done, keys.failed, keys.invalid])
        ]
        leftover: list[str] = []
        if record.deleted_at is not None:
            pattern = f"mt:{{c:{campaign}}}:*"
            leftover = [k.decode() async for k in rig.client.scan_iter(match=pattern)]
        evidence[campaign] = CampaignEvidence(progress, done, failed, invalid, leftover)
    return evidence


def _bytes(value: bytes | str | None) -> bytes:
    """A bitmap as Redis stores it (the client does not decode replies; absent = all zero)."""
    return value.encode("latin-1") if isinstance(value, str) else (value or b"")


def run_soak_sync(options: opt.SoakOptions) -> SoakReport:
    return asyncio.run(run_soak(options))


def parse_args(argv: list[str] | None = None) -> opt.SoakOptions:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of faults (default 90)")
    parser.add_argument("--seed", type=int, help="the schedule's seed (default: a random one, printed)")
    parser.add_argument("--processes", type=int, default=3, help="sender processes (default 3)")
    parser.add_argument("--rate", type=float, default=120.0, help="the pool's throttle at the start")
    parser.add_argument("--cap", type=int, default=2, help="maxParallelCampaigns at the start")
    parser.add_argument("--mean-gap", type=float, default=2.0, help="mean seconds between faults")
    parser.add_argument("--load", type=float, default=0.5, help="recipients ~ load x rate x duration")
    parser.add_argument("--quiesce-timeout", type=float, help="seconds to wait for campaigns to finish")
    parser.add_argument("--workdir", type=Path, help="where logs and records go (default: a temp dir)")
    parser.add_argument("--cleanup", action="store_true", help="remove the workdir if every invariant held")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=sorted([*KIND_WEIGHTS, *opt.RELAY_RATES]),
        help="leave out a fault kind (repeatable), e.g. to look past a known bug",
    )
    args = parser.parse_args(argv)
    return opt.SoakOptions(
        seed=args.seed if args.seed is not None else secrets.randbelow(2**31),
        duration=args.duration,
        processes=args.processes,
        rate=args.rate,
        cap=args.cap,
        mean_gap=args.mean_gap,
        load=args.load,
        quiesce_timeout=args.quiesce_timeout,
        workdir=args.workdir,
        cleanup=args.cleanup,
        skip=tuple(args.skip),
    )


def main(argv: list[str] | None = None) -> int:
    try:
        report = run_soak_sync(parse_args(argv))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("soak: interrupted; every process it started is stopped", flush=True)
        return 2
    print(report.to_json(brief=True))
    print(report.summary(), flush=True)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
