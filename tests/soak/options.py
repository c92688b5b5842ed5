"""What a soak run does, the senders' settings it runs with, and every tolerance its invariants allow.

The tolerances live here, in one place, because the report quotes them and a reader judging a
failure needs them all together. Each says which promise of the engine it measures.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailtrain_sender import acks
from tests.harness.relay_faults import ChaosSettings

# -- the senders' settings ----------------------------------------------------------------------------------
# Production proportions (leaseTtl 10 s, smtp.timeout 30 s, shutdownGrace 20 s) scaled down so that
# a soak of minutes sees many leases expire: the SMTP timeout is longer than a lease, as in production.
LEASE_TTL = 3.0
REBALANCE_INTERVAL = 0.2
ACK_INTERVAL = 0.05
SMTP_TIMEOUT = 4.0
SHUTDOWN_GRACE = 10.0
CONFIG_POLL = 1.0  # mailtrain_sender.reload.POLL_INTERVAL: how late a sender notices a rewritten file

BURST = 10  # the throttle's burst at the start
POOL = "soak"
SENDER_DOMAIN = "acme.example"  # Message-IDs are <campaign.index@SENDER_DOMAIN>


def sender_settings(rate: float, cap: int) -> dict[str, Any]:
    return {
        "queue": {"maxParallelCampaigns": cap},
        "smtp": {
            "maxConnections": 4,
            "timeout": SMTP_TIMEOUT,
            "throttling": {"messagesPerSecond": rate, "burst": BURST},
            # Enough attempts that the relay's random 4xx rarely exhaust them; short backoffs so a
            # retried recipient does not hold a campaign open past the soak's deadline.
            "retry": {"maxAttempts": 8, "backoff": 0.2, "maxBackoff": 2.0},
        },
        "worker": {
            "leaseTtl": LEASE_TTL,
            "rebalanceInterval": REBALANCE_INTERVAL,
            "ackInterval": ACK_INTERVAL,
            "shutdownGrace": SHUTDOWN_GRACE,
            "queueSize": 400,
        },
    }


# -- tolerances -------------------------------------------------------------------------------------------
# (a) A delivery may be repeated if its sender was SIGKILLed while the transaction was in flight (the relay
# had the message but its reply had not reached the sender: up to the reply's delay after receiving it), or
# within ACK_WINDOW after that, before its outcome was written (or up to KILL_SKEW before: the relay can take
# a dot that was on the wire as the process died). The engine writes outcomes at most ackInterval (5 ms, the
# soak runs 50 ms) plus one Redis round trip after the reply; 0.1 s allows for a loaded machine's event loop
# (the figure tests/sender/test_failover.py uses).
# (a') While Redis is paused or down, outcomes cannot be written: a SIGKILL then also explains deliveries
# accepted from ACK_WINDOW before the outage began until it ended, if the kill came before the first write
# attempt after the outage: the writer retries every WRITE_RETRY_MAX at most, then needs ACK_WINDOW
# (docs/sender.md, "Delivery guarantees"). An outage that begins within that gap after another ended
# continues it: the writer may not have tried in between.
ACK_WINDOW = 0.1
WRITE_RETRY_MAX = acks.WRITE_RETRY_MAX
KILL_SKEW = 0.05
# (b) A delivery may be repeated if the relay dropped the connection after the dot, or held its reply
# for at least the sender's SMTP timeout (less this slack: the timer starts a moment before the relay
# has the dot).
SLOW_REPLY_SLACK = 0.25
# A deleted campaign's last message may still arrive this long after Publisher.delete returned: a sender
# learns of the delete at its next lease renewal or rebalance, or, with Redis unreachable, stops when its
# lease runs out (leaseTtl), and a transaction already started may take up to smtp.timeout.
DELETE_GRACE = LEASE_TTL + SMTP_TIMEOUT + 1.0
# Caps: after a rewritten sender.toml the old cap holds until the sender reads the file and its next
# rebalance; both caps are allowed meanwhile, a time that does not count while Redis is paused or down
# (the new cap reaches the assignment only through Redis).
CAP_RELOAD_TRANSITION = CONFIG_POLL + 2 * REBALANCE_INTERVAL + 0.5
# A campaign taken from a process may still carry its live leases while the process winds it down:
# transactions in flight finish (smtp.timeout), and a lease whose release failed runs out (leaseTtl).
CAP_WIND_DOWN = SMTP_TIMEOUT + LEASE_TTL + 1.0
# Throttle: no window of T seconds carries more than integral(rate) + burst transactions, plus
# THROTTLE_JITTER seconds of the rate (the relay stamps MAIL commands from one busy event loop).
# After a rewritten rate, both the old and the new one hold for THROTTLE_RELOAD_TRANSITION.
THROTTLE_WINDOWS = (1.0, 5.0)
THROTTLE_JITTER = 0.1
THROTTLE_RELOAD_TRANSITION = CONFIG_POLL + 0.5
# SIGTERM: the process exits 0 within shutdownGrace plus this (its last Redis writes and leaving).
SIGTERM_EXIT_SLACK = 10.0
# Quiescence: once every campaign is terminal, the relay must be quiet this long before counting.
SETTLE = SMTP_TIMEOUT + 1.0

TOLERANCES = {
    "ack_window_s": ACK_WINDOW,
    "write_retry_max_s": WRITE_RETRY_MAX,
    "kill_skew_s": KILL_SKEW,
    "slow_reply_counts_from_s": SMTP_TIMEOUT - SLOW_REPLY_SLACK,
    "delete_grace_s": DELETE_GRACE,
    "cap_reload_transition_s": CAP_RELOAD_TRANSITION,
    "cap_wind_down_s": CAP_WIND_DOWN,
    "throttle_windows_s": list(THROTTLE_WINDOWS),
    "throttle_jitter_s": THROTTLE_JITTER,
    "throttle_reload_transition_s": THROTTLE_RELOAD_TRANSITION,
    "sigterm_exit_within_s": SHUTDOWN_GRACE + SIGTERM_EXIT_SLACK,
    "settle_s": SETTLE,
}

# Relay faults per command at their stage, about 4 % of transactions in all during the fault phase.
RELAY_RATES = {
    "rcpt_4xx": 0.01,
    "rcpt_5xx": 0.003,
    "rcpt_non_utf8": 0.002,
    "rcpt_slow": 0.002,
    "disconnect_mid_data": 0.004,
    "data_4xx": 0.008,
    "data_5xx": 0.003,
    "drop_after_dot": 0.003,
    "slow_reply": 0.003,
    "data_non_utf8": 0.002,
}
# Slow replies: some well within the timeout, some beyond a lease and around or past the timeout.
SLOW_RANGES = ((0.2, 1.0), (LEASE_TTL, SMTP_TIMEOUT + 2.0))


def relay_chaos(seed: int, factor: float = 1.0, skip: tuple[str, ...] = ()) -> ChaosSettings:
    rates = {k: min(0.2, v * factor) for k, v in RELAY_RATES.items() if k not in skip}
    return ChaosSettings(seed, rates, SLOW_RANGES)


@dataclass(frozen=True)
class SoakOptions:
    seed: int
    duration: float = 90.0  # seconds of faults; quiescence and checks come after
    processes: int = 3
    rate: float = 120.0  # the pool's throttle at the start (messages per second)
    cap: int = 2  # maxParallelCampaigns at the start
    mean_gap: float = 2.0  # seconds between scheduled faults, on average (exponential)
    load: float = 0.5  # recipients published ~ load x rate x duration
    quiesce_timeout: float | None = None  # default: from the backlog when the faults stop
    workdir: Path | None = None
    cleanup: bool = False  # remove the workdir when every invariant held
    # Fault kinds left out (schedule kinds such as "redis_pause", relay kinds such as "rcpt_non_utf8"):
    # to look past a known bug to the next one, or to bisect a failure.
    skip: tuple[str, ...] = ()

    def command(self) -> str:
        args = ["python", "-m", "tests.soak.run_soak", "--seed", str(self.seed)]
        args += ["--duration", f"{self.duration:g}", "--processes", str(self.processes)]
        defaults = SoakOptions(seed=0)
        for kind in self.skip:
            args += ["--skip", kind]
        for flag, value, default in (
            ("--rate", self.rate, defaults.rate),
            ("--cap", self.cap, defaults.cap),
            ("--mean-gap", self.mean_gap, defaults.mean_gap),
            ("--load", self.load, defaults.load),
        ):
            if value != default:
                args += [flag, f"{value:g}"]
        return shlex.join(args)
