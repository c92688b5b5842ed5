"""Random relay faults for the recording sink: seeded, a probability per kind, switched at runtime.

The soak (tests/soak) turns them on for its fault phase and off before it waits for the
campaigns to finish, without restarting the relay: `RecordingSink.set_chaos` writes a control
file, the sink process polls it every `POLL_SECONDS` and writes back the generation it applied,
so the caller knows when the switch took effect. Where the sink asks:

    RCPT           rcpt_4xx, rcpt_5xx, rcpt_non_utf8 (a 4xx or 5xx reply with bytes that are not
                   UTF-8), rcpt_slow (the 250 comes late)
    DATA command   disconnect_mid_data: 354, then the connection is cut after the first line of
                   the body, before the final dot; nothing was received
    final dot      data_4xx, data_5xx (not received); drop_after_dot (received and recorded, then
                   the connection is cut without a reply); slow_reply (received, the 250 comes
                   late); data_non_utf8 (received, a 250 with non-UTF-8 bytes)

The dice are a `random.Random(seed)`. Which message meets which fault still depends on timing,
so a replay with the same seed has the same fault rates, not the same victims; every injected
fault is logged (JSON lines: time, kind, EHLO name, recipients) so a report can name them.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.1

STAGE_KINDS: dict[str, tuple[str, ...]] = {
    "rcpt": ("rcpt_4xx", "rcpt_5xx", "rcpt_non_utf8", "rcpt_slow"),
    "data_start": ("disconnect_mid_data",),
    "data_end": ("data_4xx", "data_5xx", "drop_after_dot", "slow_reply", "data_non_utf8"),
}
ALL_KINDS = tuple(kind for kinds in STAGE_KINDS.values() for kind in kinds)

# Replies with bytes that are not UTF-8 (a Latin-1 relay, a broken proxy): what the sender must
# survive when it logs, stores or compares them.
NON_UTF8_4XX = b"451 4.3.0 Zur\xfcck: try again later \xff\xfe"
NON_UTF8_5XX = b"550 5.1.1 Unbekannter Empf\xe4nger \xc3("
NON_UTF8_250 = b"250 2.0.0 Nachricht \xfcbernommen \xff"


@dataclass(frozen=True)
class ChaosSettings:
    """What the relay does wrong, and how often. `rates`: kind -> probability per command."""

    seed: int
    rates: dict[str, float] = field(default_factory=dict)
    # Delays of slow replies: a range is picked at random, then a delay within it. Give one below
    # and one beyond the sender's SMTP timeout to exercise both paths.
    slow_seconds: tuple[tuple[float, float], ...] = ((0.2, 1.0),)

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(ALL_KINDS)
        if unknown:
            raise ValueError(f"unknown relay fault kinds: {sorted(unknown)}")

    def to_json(self, generation: int, enabled: bool) -> str:
        return json.dumps(
            {
                "generation": generation,
                "enabled": enabled,
                "seed": self.seed,
                "rates": self.rates,
                "slow_seconds": [list(r) for r in self.slow_seconds],
            }
        )

    @staticmethod
    def from_json(data: dict[str, Any]) -> ChaosSettings:
        return ChaosSettings(
            int(data["seed"]),
            {str(k): float(v) for k, v in data["rates"].items()},
            tuple((float(a), float(b)) for a, b in data["slow_seconds"]),
        )


@dataclass(frozen=True)
class AfterDot:
    """The relay's answer to a complete message: refused (not received), or received and then
    dropped without a reply, replied to late, or replied to with non-UTF-8 bytes."""

    refusal: str | None = None
    drop: bool = False
    delay: float = 0.0
    non_utf8: bool = False

    async def reply(self, transport: asyncio.BaseTransport) -> str | bytes:
        if self.drop:
            transport.abort()  # type: ignore[attr-defined]
        elif self.delay:
            await asyncio.sleep(self.delay)
        return NON_UTF8_250 if self.non_utf8 else "250 OK queued"


class RelayChaos:
    """The sink's side: follows the control file and rolls the dice for each command."""

    def __init__(self, control: Path, applied: Path, fault_log: Path) -> None:
        self._control = control
        self._applied = applied
        self._log = fault_log.open("a", buffering=1)
        self._settings: ChaosSettings | None = None
        self._rng = random.Random(0)
        self._seed: int | None = None
        self._raw = b""

    async def watch(self) -> None:
        while True:
            self._reload()
            await asyncio.sleep(POLL_SECONDS)

    def _reload(self) -> None:
        try:
            raw = self._control.read_bytes()
        except OSError:
            return
        if raw == self._raw:
            return
        self._raw = raw
        data = json.loads(raw)
        settings = ChaosSettings.from_json(data)
        if settings.seed != self._seed:  # a new seed restarts the sequence; a new rate does not
            self._rng, self._seed = random.Random(settings.seed), settings.seed
        self._settings = settings if data["enabled"] else None
        tmp = self._applied.with_suffix(".tmp")
        tmp.write_text(str(data["generation"]))
        tmp.replace(self._applied)

    def pick(self, stage: str) -> str | None:
        """The fault to inject at this stage of this transaction, if any."""
        if self._settings is None:
            return None
        roll = self._rng.random()
        for kind in STAGE_KINDS[stage]:
            roll -= self._settings.rates.get(kind, 0.0)
            if roll < 0:
                return kind
        return None

    def slow_delay(self) -> float:
        ranges = self._settings.slow_seconds if self._settings else ((0.2, 1.0),)
        low, high = self._rng.choice(ranges)
        return self._rng.uniform(low, high)

    async def at_rcpt(self, helo: str, address: str) -> str | bytes | None:
        """The reply that refuses this recipient, or None to accept it (perhaps late)."""
        kind = self.pick("rcpt")
        if kind is None:
            return None
        delay = self.slow_delay() if kind == "rcpt_slow" else 0.0
        self.log(kind, helo, [address], delay=delay)
        if kind == "rcpt_4xx":
            return "451 4.3.0 injected: try again later"
        if kind == "rcpt_5xx":
            return "550 5.1.1 injected: no such user"
        if kind == "rcpt_non_utf8":
            return NON_UTF8_4XX if self._rng.random() < 0.5 else NON_UTF8_5XX
        await asyncio.sleep(delay)
        return None

    def after_dot(self, helo: str, recipients: list[str]) -> AfterDot:
        """What happens once the relay has the whole message."""
        kind = self.pick("data_end")
        delay = self.slow_delay() if kind == "slow_reply" else 0.0
        if kind is not None:
            self.log(kind, helo, list(recipients), delay=delay)
        if kind == "data_4xx":
            return AfterDot(refusal="451 4.3.0 injected: try again")
        if kind == "data_5xx":
            return AfterDot(refusal="554 5.6.0 injected: refused")
        return AfterDot(drop=kind == "drop_after_dot", delay=delay, non_utf8=kind == "data_non_utf8")

    def log(self, kind: str, helo: str, recipients: list[str], **extra: Any) -> None:
        record = {"at": time.time(), "kind": kind, "helo": helo, "rcpt_tos": recipients, **extra}
        self._log.write(json.dumps(record) + "\n")


def chaos_smtp_class(base: Any) -> Any:
    """aiosmtpd's SMTP with a DATA command that can cut the connection before the final dot.

    aiosmtpd reads the whole body before any handler hook runs, so this is the only place a
    disconnect in the middle of DATA can be injected.
    """
    from aiosmtpd.smtp import syntax

    class ChaosSMTP(base):  # type: ignore[misc]
        @syntax("DATA")
        async def smtp_DATA(self, arg: str) -> None:
            chaos: RelayChaos | None = getattr(self.event_handler, "chaos", None)
            if (
                chaos is None
                or arg
                or self.envelope is None
                or not self.envelope.rcpt_tos
                or chaos.pick("data_start") is None
            ):
                await super().smtp_DATA(arg)
                return
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            try:
                async with asyncio.timeout(10):  # the client has started the body: it is mid-DATA
                    await self._reader.readuntil(b"\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            chaos.log("disconnect_mid_data", self.session.host_name or "", list(self.envelope.rcpt_tos))
            self.transport.abort()
            # End this session's task now, as a reset connection does: else aiosmtpd would read the
            # rest of the body already buffered as if it were commands.
            raise asyncio.CancelledError

    return ChaosSMTP
