"""The fault schedule: a `random.Random(seed)` decides what goes wrong, to whom, and when.

One fault at a time, an exponential gap between them. Each step draws its kind and a seed of its
own from the run's generator, so the sequence of kinds and gaps replays exactly whatever a step
finds (which campaigns are active, which senders are alive) on a timing-dependent system.

Some faults end later on their own: a killed or stopped sender is replaced after a random delay
(a new worker id, as a Deployment replaces a pod), a paused Redis gets SIGCONT, a stopped one is
started, a relay storm calms down. Those follow-ups run between steps, on time; a replacement
waits while Redis is not up, since it could not become ready.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from tests.harness.senders import SenderProcess
from tests.soak import options as opt
from tests.soak.operations import CampaignOperations
from tests.soak.rig import SoakRig

KIND_WEIGHTS = {
    "sigkill": 2.0,
    "sigterm": 1.2,
    "redis_restart": 0.4,
    "redis_crash": 0.4,
    "redis_pause": 0.8,
    "relay_storm": 0.6,
    "config_reload": 1.6,
    "publish": 2.5,
    "pause": 1.0,
    "resume": 1.0,
    "reprioritize": 0.8,
    "delete": 0.7,
}
_NEEDS_REDIS = {
    "publish",
    "pause",
    "resume",
    "reprioritize",
    "delete",
    "redis_restart",
    "redis_crash",
    "redis_pause",
}
_TICK = 0.1

FollowUp = Callable[[], Awaitable[bool]]  # True when done; False: try again a moment later


class FaultSchedule:
    def __init__(self, rig: SoakRig, operations: CampaignOperations, rng: random.Random) -> None:
        self.rig = rig
        self.ledger = rig.ledger
        self.operations = operations
        self.rng = rng
        self.relay_seed = rng.getrandbits(32)
        self._followups: list[tuple[float, str, FollowUp]] = []
        self._background: set[asyncio.Task[None]] = set()  # exits awaited, replacements starting
        self._expected_exit: set[str] = set()
        self._starting: set[str] = set()  # worker ids not ready yet: no fault picks them
        self._start_lock = asyncio.Lock()

    # -- the loop ------------------------------------------------------------------------------------------

    async def run(self, seconds: float) -> None:
        await self._relay_calm()
        self.ledger.note("relay_chaos_on", seed=self.relay_seed)
        end = time.monotonic() + seconds
        # Skipped kinds keep their draw, so that the rest of the schedule stays the same.
        kinds, weights = list(KIND_WEIGHTS), list(KIND_WEIGHTS.values())
        while True:
            gap = self.rng.expovariate(1 / self.rig.options.mean_gap)
            [kind] = self.rng.choices(kinds, weights)
            step = random.Random(self.rng.getrandbits(64))
            await self._wait(min(gap, end - time.monotonic()))
            if time.monotonic() >= end:
                return
            if kind in self.rig.options.skip:
                continue
            if kind in _NEEDS_REDIS and self.rig.redis_state != "up":
                continue  # one Redis fault at a time; the operator's calls would only block
            await self._apply(kind, step)

    async def _apply(self, kind: str, rng: random.Random) -> None:
        ops = self.operations
        if kind == "config_reload":
            ops.reload_config(rng)
            return
        actions: dict[str, Callable[[random.Random], Awaitable[None]]] = {
            "sigkill": self._sigkill,
            "sigterm": self._sigterm,
            "redis_restart": self._redis_restart,
            "redis_crash": self._redis_crash,
            "redis_pause": self._redis_pause,
            "relay_storm": self._relay_storm,
            "publish": ops.publish,
            "pause": ops.pause,
            "resume": ops.resume,
            "reprioritize": ops.reprioritize,
            "delete": ops.delete,
        }
        await actions[kind](rng)

    def later(self, delay: float, what: str, action: FollowUp) -> None:
        self._followups.append((time.monotonic() + delay, what, action))

    async def _wait(self, seconds: float) -> None:
        """Wait, running follow-ups as they fall due and noticing senders that died on their own."""
        until = time.monotonic() + max(0.0, seconds)
        while True:
            self._notice_unexpected_exits()
            now = time.monotonic()
            due = [f for f in self._followups if f[0] <= now]
            for item in due:
                self._followups.remove(item)
                if not await item[2]():
                    self.later(0.25, item[1], item[2])
            if now >= until:
                return
            await asyncio.sleep(min(_TICK, until - now))

    def _notice_unexpected_exits(self) -> None:
        for process in list(self.rig.fleet.processes):
            if process.worker_id in self._expected_exit or process.process is None:
                continue
            code = process.process.poll()
            if code is not None:
                self._expected_exit.add(process.worker_id)
                self.ledger.dead.add(process.worker_id)
                self.ledger.violate(
                    "no_unexpected_exit",
                    f"{process.worker_id} exited with code {code} without being told to",
                    worker=process.worker_id,
                    code=code,
                    log=str(process.log),
                )
                self.later(0.5, "replace crashed sender", self._replace)

    # -- senders -------------------------------------------------------------------------------------------

    def _victim(self, rng: random.Random) -> SenderProcess | None:
        alive = [
            p
            for p in self.rig.fleet.alive()
            if p.worker_id not in self._expected_exit and p.worker_id not in self._starting
        ]
        return rng.choice(alive) if alive else None

    async def _sigkill(self, rng: random.Random) -> None:
        victim = self._victim(rng)
        if victim is None:
            return
        self._expected_exit.add(victim.worker_id)
        at = time.time()
        victim.kill()
        self.ledger.kills.append((at, victim.worker_id))
        self.ledger.dead.add(victim.worker_id)
        self.ledger.record("sigkill", victim.worker_id)
        self.later(rng.uniform(0.5, 5.0), "replace killed sender", self._replace)

    async def _sigterm(self, rng: random.Random) -> None:
        victim = self._victim(rng)
        if victim is None:
            return
        self._expected_exit.add(victim.worker_id)
        victim.send_signal(signal.SIGTERM)
        self.ledger.record("sigterm", victim.worker_id)
        self._spawn(self._await_exit(victim, time.time(), rng.uniform(0.5, 5.0)))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _await_exit(self, process: SenderProcess, since: float, replace_after: float) -> None:
        """SIGTERM: exit 0 within shutdownGrace (plus slack), else it is killed and that is a violation."""
        assert process.process is not None
        bound = opt.SHUTDOWN_GRACE + opt.SIGTERM_EXIT_SLACK
        try:
            code = await asyncio.to_thread(process.process.wait, bound)
        except subprocess.TimeoutExpired:
            process.process.send_signal(signal.SIGUSR1)  # its log then says where it was stuck
            await asyncio.sleep(0.5)
            self.ledger.kills.append((time.time(), process.worker_id))
            process.kill()
            code = None
        self.ledger.dead.add(process.worker_id)
        self.ledger.sigterms_checked += 1
        took = round(time.time() - since, 2)
        if code != 0:
            self.ledger.violate(
                "graceful_exit",
                f"{process.worker_id} after SIGTERM: exit code {code} after {took}s (bound {bound}s)",
                worker=process.worker_id,
                code=code,
                seconds=took,
                log=str(process.log),
            )
        self.later(replace_after, "replace stopped sender", self._replace)

    async def _replace(self) -> bool:
        if self.rig.redis_state != "up":
            return False  # it could not become ready
        self._spawn(self._start_replacement())  # in the background: faults go on meanwhile
        return True

    async def _start_replacement(self) -> None:
        async with self._start_lock:  # worker ids are numbered: one start at a time
            worker_id = self.rig.next_worker_id()
            self._starting.add(worker_id)
            try:
                await asyncio.to_thread(self.rig.start_sender)
            except (TimeoutError, RuntimeError) as exc:
                failed = self.rig.fleet.processes[-1]
                self._expected_exit.add(failed.worker_id)
                self.ledger.dead.add(failed.worker_id)
                self.ledger.kills.append((time.time(), failed.worker_id))
                failed.kill()
                self.ledger.violate("sender_ready", f"{failed.worker_id} did not become ready: {exc}")
                return  # the pool carries on with one process fewer
            finally:
                self._starting.discard(worker_id)
        self.ledger.note("sender_started", worker_id)

    async def wait_for_background(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background))

    # -- Redis ---------------------------------------------------------------------------------------------

    async def _redis_crash(self, rng: random.Random) -> None:
        await self._redis_restart(rng, crash=True)

    async def _redis_restart(self, rng: random.Random, crash: bool = False) -> None:
        down_for = rng.uniform(0.2, 3.0)
        self.rig.redis_state = "down"
        self.ledger.redis_down(time.time())
        if crash:
            await asyncio.to_thread(self.rig.redis.kill)
        else:
            await asyncio.to_thread(self.rig.redis.stop)
        self.ledger.record("redis_crash" if crash else "redis_restart", down_for=round(down_for, 2))
        self.later(down_for, "start Redis", self._redis_start)

    async def _redis_start(self) -> bool:
        await asyncio.to_thread(self.rig.redis.start)
        self.rig.redis_state = "up"
        self.ledger.redis_up(time.time())
        self.ledger.note("redis_started")
        return True

    async def _redis_pause(self, rng: random.Random) -> None:
        # Half of them outlast a lease: every lease in the pool has expired when Redis wakes up.
        long = rng.random() < 0.5
        seconds = rng.uniform(opt.LEASE_TTL + 0.5, 2 * opt.LEASE_TTL) if long else rng.uniform(0.5, 2.0)
        self.ledger.redis_down(time.time())
        self.rig.redis.pause()
        self.rig.redis_state = "paused"
        self.ledger.record("redis_pause_long" if long else "redis_pause_short", seconds=round(seconds, 2))
        self.later(seconds, "resume Redis", self._redis_resume)

    async def _redis_resume(self) -> bool:
        self.rig.redis.resume()
        self.rig.redis_state = "up"
        self.ledger.redis_up(time.time())
        self.ledger.note("redis_resumed")
        return True

    # -- relay ---------------------------------------------------------------------------------------------

    async def _relay_storm(self, rng: random.Random) -> None:
        seconds = rng.uniform(2.0, 6.0)
        storm = opt.relay_chaos(self.relay_seed, factor=10, skip=self.rig.options.skip)
        await asyncio.to_thread(self.rig.relay.set_chaos, storm)
        self.ledger.record("relay_storm", seconds=round(seconds, 2))
        self.later(seconds, "calm the relay", self._relay_calm)

    async def _relay_calm(self) -> bool:
        calm = opt.relay_chaos(self.relay_seed, skip=self.rig.options.skip)
        await asyncio.to_thread(self.rig.relay.set_chaos, calm)
        return True

    # -- the end of the fault phase ------------------------------------------------------------------------

    async def heal(self) -> None:
        """Stop injecting: the relay behaves, Redis is up, every sender is back, nothing is paused."""
        await asyncio.to_thread(self.rig.relay.set_chaos, None)
        self.ledger.note("relay_chaos_off")
        for what in ("resume Redis", "start Redis"):
            for item in [f for f in self._followups if f[1] == what]:
                self._followups.remove(item)
                await item[2]()
        await self.wait_for_background()  # SIGTERMed senders exit, and their replacements are due
        self._followups = [f for f in self._followups if f[1] != "calm the relay"]
        while self._followups:  # replacements: no more delay
            self._followups = [(0.0, what, action) for _, what, action in self._followups]
            await self._wait(0)
        await self.wait_for_background()
        await self.operations.resume_all()
