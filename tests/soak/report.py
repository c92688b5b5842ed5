"""The soak's verdict as JSON: what was injected, what was checked, what broke.

seed, command          how to run exactly this schedule again
faults                 injected by kind, with counts (the runner's and the relay's)
invariants             for each: how many things were checked, how many violated, the tolerance
duplicates             deliveries the senders did not account for, explained by kind, examples
violations             every one, with what is needed to start a diagnosis
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.soak import options as opt
from tests.soak.invariants import Judge
from tests.soak.ledger import Ledger
from tests.soak.samplers import WorkSampler
from tests.soak.throttle import ThrottleVerdict

NOTES = [
    "Relay faults are drawn from the relay's own Random(seed): a replay repeats their rates, not which "
    "message meets which fault, since that depends on timing.",
]
MAX_LISTED = 200  # violations printed in full; the rest are counted
MAX_EXPLAINED = 20_000  # explained duplicates listed one by one in report.json


@dataclass
class SoakReport:
    passed: bool
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self, brief: bool = False) -> str:
        """brief: without the list of every explained duplicate (report.json has it)."""
        data = self.data
        if brief:
            data = {**data, "duplicates": {k: v for k, v in data["duplicates"].items() if k != "each"}}
        return json.dumps(data, indent=2, default=str)

    def summary(self) -> str:
        kinds = Counter(v["invariant"] for v in self.data.get("violations", []))
        verdict = "every invariant held" if self.passed else f"violations: {dict(kinds)}"
        return f"soak seed {self.data.get('seed')}: {verdict}; replay: {self.data.get('command')}"


def build_report(
    *,
    options: opt.SoakOptions,
    ledger: Ledger,
    judge: Judge,
    sampler: WorkSampler,
    throttle: list[ThrottleVerdict],
    transactions: int,
    quiesced: bool,
    workdir: Path,
    seconds: dict[str, float],
) -> SoakReport:
    relay_kinds = Counter(f"relay_{f['kind']}" for f in judge.relay_faults)
    cap_episodes = sampler.violations()
    tallies = {name: asdict(t) for name, t in sorted(judge.tallies.items())}
    tallies["process_cap"] = {
        "checked": sampler.checks,
        "violations": len(cap_episodes),
        "samples": sampler.samples,
        "samples_skipped": sampler.skipped,
    }
    for verdict in throttle:
        tallies[f"throttle_{verdict.window:g}s"] = {
            "checked": verdict.checked,
            "violations": verdict.exceeded,
        }
    tallies["graceful_exit"] = {
        "checked": ledger.sigterms_checked,
        "violations": sum(v.invariant == "graceful_exit" for v in ledger.violations),
    }
    tallies["no_unexpected_exit"] = {
        "checked": len(ledger.caps),
        "violations": sum(v.invariant == "no_unexpected_exit" for v in ledger.violations),
    }
    violations = [asdict(v) for v in ledger.violations]
    violations += [
        {"invariant": "process_cap", "message": _cap_message(e), "detail": e} for e in cap_episodes
    ]
    violations += [
        {
            "invariant": f"throttle_{v.window:g}s",
            "message": f"{v.exceeded} windows of {v.window:g}s exceeded the bound",
            "detail": v.worst,
        }
        for v in throttle
        if v.exceeded
    ]
    if not quiesced:
        violations.append({"invariant": "quiescence", "message": "not quiet by the deadline", "detail": {}})
    live = ledger.live_campaigns()
    data: dict[str, Any] = {
        "seed": options.seed,
        "command": options.command(),
        "passed": not violations,
        "workdir": str(workdir),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "processes": options.processes,
        "senders_started": len(ledger.caps),
        "tolerances": opt.TOLERANCES,
        "faults": {**ledger.fault_counts(), **dict(sorted(relay_kinds.items()))},
        "campaigns": {
            "published": len(ledger.campaigns),
            "deleted": len(ledger.campaigns) - len(live),
            "recipients": sum(c.wire.total for c in ledger.campaigns.values()),
            "final_states": dict(Counter(judge.evidence[c.wire.id].progress.state for c in live)),
        },
        "relay": {
            "transactions": transactions,
            "deliveries": tallies.get("known_message_ids", {}).get("checked", 0),
            "after_delete_within_grace": judge.after_delete_within_grace,
        },
        "invariants": tallies,
        "duplicates": {
            "needing_explanation": judge.duplicates.needing_explanation,
            "explained": dict(judge.duplicates.explained),
            "unexplained": tallies.get("duplicates", {}).get("violations", 0),
            "per_sigkill": judge.duplicates.per_kill,
            "examples": judge.duplicates.examples,
            "each": judge.duplicates.each[:MAX_EXPLAINED],
        },
        "violation_count": len(violations),
        "violations": violations[:MAX_LISTED],
        "notes": NOTES,
    }
    return SoakReport(not violations, data)


def _cap_message(episode: dict[str, Any]) -> str:
    return (
        f"{episode['worker']} {episode['rule']} {episode['campaigns']} campaigns with cap {episode['cap']:g} "
        f"from {episode['from']}s to {episode['to']}s ({episode['samples']} samples)"
    )
