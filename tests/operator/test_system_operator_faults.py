"""Faults on the operator's side, end to end with sender pods: the operator SIGKILLed mid-campaign and
started again, and two peered operators whose active one is SIGKILLed mid-campaign. The senders
never depend on the operator while they send, so neither fault may cost a recipient or send one
twice; the campaigns' status must carry on where it was, written by whichever operator is left.

Every recipient of every campaign is checked at the sink. When the fault strikes is drawn from a
seeded RNG (`system_support.fault_rng`); `-s` prints the seed and the figures (seconds to takeover).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.helpers import eventually
from tests.harness.controlplane import ControlPlane
from tests.harness.local_node import LocalNode
from tests.harness.operator_process import OperatorProcess
from tests.harness.smtp_sink import RecordingSink
from tests.operator.pool_support import ready_pool
from tests.operator.system_support import (
    CAMPAIGNS_PATH,
    SystemRig,
    assert_counts_complete,
    assert_everyone_once,
    campaign_events,
    campaign_status,
    fault_rng,
    kill_operator,
    open_system,
    wait_complete,
    wait_sent,
)

CHUNK = 16
RESUMED = "Resuming operations after the pause"  # kopf, when peering lets a replica work
PEERING_LIFETIME = 10  # seconds, the shortest the operator allows: the bound on a takeover


@pytest.fixture
def system(
    crds: ControlPlane,
    kopf_peering_crds: ControlPlane,
    local_node: LocalNode,
    namespace: str,
    redis_url: str,
    make_recording_sink: Callable[..., RecordingSink],
    tmp_path: Path,
) -> Iterator[SystemRig]:
    yield from open_system(crds, namespace, redis_url, make_recording_sink(record_raw=False), tmp_path)


def _noted(operator: OperatorProcess, reason: str) -> set[str]:
    """The campaigns whose note `reason` the operator logged (it logs every Event it posts); the log is
    JSON lines, which name the object each line is about."""
    names = set()
    for line in operator.log_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if str(record.get("message", "")).startswith(f"{reason}: "):
            names.add(str((record.get("object") or {}).get("name")))
    return names


def _objects_logged(operator: OperatorProcess) -> set[str]:
    """Every object the operator logged a line about."""
    found = set()
    for line in operator.log_text().splitlines():
        try:
            found.add(str(json.loads(line)["object"]["name"]))
        except (ValueError, KeyError, TypeError):
            continue
    return found


def _versions(system: SystemRig) -> dict[str, str]:
    found = system.kube.list(CAMPAIGNS_PATH.format(ns=system.namespace))
    return {c["metadata"]["name"]: c["metadata"]["resourceVersion"] for c in found}


def _reasons(system: SystemRig, name: str) -> list[str]:
    return [e["reason"] for e in campaign_events(system.kube, system.namespace, name)]


def _started_once_never_republished(system: SystemRig, names: list[str]) -> None:
    def completed_noted(name: str) -> list[str] | None:
        reasons = _reasons(system, name)
        return reasons if "Completed" in reasons else None

    for name in names:
        # Completed is the last Event, and kopf posts them in order: once it is in, so is every other.
        reasons = eventually(partial(completed_noted, name), timeout=30, what=f"{name}: the Completed Event")
        assert reasons.count("Started") == 1 and "Republished" not in reasons, (name, reasons)


def test_an_operator_killed_mid_campaign_and_started_again_carries_the_status_on(
    system: SystemRig, request: pytest.FixtureRequest
) -> None:
    rng = fault_rng(request.node.nodeid)
    kube, ns, sink = system.kube, system.namespace, system.sink
    campaigns, recipients = 3, 300
    total = campaigns * recipients
    settings: dict[str, Any] = {"progress_interval": 1, "chunk_size": CHUNK, "log_format": "json"}
    first = system.operator(**settings)
    system.pool("restart", processes=2, rate=60)  # about 15 s of sending
    ready_pool(kube, ns, "restart", 2)
    names = [f"restart-{i}" for i in range(campaigns)]
    uids = system.apply("restart", names, recipients)

    fraction = rng.uniform(0.15, 0.45)
    wait_sent(sink, int(total * fraction))
    before = {name: campaign_status(kube, ns, name) for name in names}
    assert {s.get("phase") for s in before.values()} == {"Sending"}, before
    kill_operator(first)
    killed_at = time.time()
    out_at_kill = len(sink.messages())
    # No operator runs: the senders go on by themselves for a drawn number of messages.
    gap = rng.randint(20, 120)
    wait_sent(sink, out_at_kill + gap)
    second = system.operator(**settings)
    restarted_at = time.time()
    wait_complete(system.controlplane, ns, names)

    messages = sink.messages()
    alone = sum(1 for m in messages if killed_at < m.received_at < restarted_at)
    print(
        f"FIGURE killed at {out_at_kill / total:.2f} of the mail; {restarted_at - killed_at:.1f} s "
        f"without an operator, in which {alone} messages went out"
    )
    assert alone >= gap
    again = assert_everyone_once(messages, uids, recipients)
    duplicates = sum(len(indexes) for indexes in again.values())
    print(f"FIGURE {duplicates} duplicates of {len(messages)} messages")
    assert duplicates == 0, again
    assert_counts_complete(kube, ns, names, recipients)
    for name in names:
        after = campaign_status(kube, ns, name)
        assert after["startedAt"] == before[name]["startedAt"], name  # the same campaign, not a new start
        assert after["sent"] >= before[name]["sent"], name
    assert _noted(second, "Completed") == set(names) and not _noted(first, "Completed")
    _started_once_never_republished(system, names)
    assert "Traceback" not in first.log_text() + second.log_text()


def _peers(system: SystemRig) -> dict[str, Any]:
    path = f"/apis/kopf.dev/v1/namespaces/{system.namespace}/kopfpeerings/mailtrain-operator"
    return dict((system.kube.get(path) or {}).get("status") or {})


def _identity(system: SystemRig, operator: OperatorProcess) -> str | None:
    """The operator's key in the peering object: its $POD_ID, the harness's name for it."""
    return operator.name if operator.name in _peers(system) else None


def test_a_standby_operator_takes_over_a_campaign_when_the_active_one_dies(
    system: SystemRig, request: pytest.FixtureRequest
) -> None:
    rng = fault_rng(request.node.nodeid)
    kube, ns, sink = system.kube, system.namespace, system.sink
    settings: dict[str, Any] = {
        "standalone": "false",
        "peering_lifetime": PEERING_LIFETIME,
        "progress_interval": 1,
        "chunk_size": CHUNK,
        "log_format": "json",
    }
    active = system.operator(**settings)
    eventually(lambda: RESUMED in active.log_text(), timeout=60, what="the first operator active")
    standby = system.operator(**settings)
    ids = eventually(
        lambda: (a, b) if (a := _identity(system, active)) and (b := _identity(system, standby)) else None,
        timeout=30,
        what="both operators in the peering object",
    )
    peers = _peers(system)
    assert peers[ids[0]]["priority"] > peers[ids[1]]["priority"], peers  # the older one leads

    campaigns, recipients = 3, 300
    total = campaigns * recipients
    system.pool("standby", processes=2, rate=45)  # about 20 s of sending: it outlasts the takeover
    ready_pool(kube, ns, "standby", 2)
    names = [f"standby-{i}" for i in range(campaigns)]
    uids = system.apply("standby", names, recipients)
    wait_sent(sink, int(total * rng.uniform(0.1, 0.3)))
    for name in names:
        assert campaign_status(kube, ns, name).get("phase") == "Sending", name
    assert _noted(active, "Started") == set(names)
    assert RESUMED not in standby.log_text() and not _objects_logged(standby)  # it stood by

    kill_operator(active)
    killed = time.monotonic()
    out_at_kill = len(sink.messages())
    versions = _versions(system)
    eventually(lambda: RESUMED in standby.log_text(), timeout=PEERING_LIFETIME + 20, what="standby active")
    resumed = time.monotonic() - killed
    eventually(
        lambda: any(v != versions[n] for n, v in _versions(system).items()),
        timeout=20,
        what="a status written after the takeover",
    )
    first_write = time.monotonic() - killed
    print(
        f"FIGURE active operator killed at {out_at_kill / total:.2f} of the mail; the standby resumed "
        f"after {resumed:.1f} s, wrote its first status after {first_write:.1f} s "
        f"(peering lifetime {PEERING_LIFETIME} s)"
    )
    assert resumed <= PEERING_LIFETIME + 5
    wait_complete(system.controlplane, ns, names)

    messages = sink.messages()
    again = assert_everyone_once(messages, uids, recipients)
    duplicates = sum(len(indexes) for indexes in again.values())
    print(f"FIGURE {duplicates} duplicates of {len(messages)} messages")
    assert duplicates == 0, again
    assert_counts_complete(kube, ns, names, recipients)
    # The dead operator finished nothing; the standby finished every campaign.
    assert _noted(standby, "Completed") == set(names) and not _noted(active, "Completed")
    _started_once_never_republished(system, names)
    # kopf drops the dead replica's entry once it runs out; the one left is the standby.
    eventually(lambda: set(_peers(system)) == {ids[1]}, timeout=PEERING_LIFETIME + 10, what="one peer left")
    assert "Traceback" not in active.log_text() + standby.log_text()
