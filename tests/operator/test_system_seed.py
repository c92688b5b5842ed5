"""The seed's example through the Kubernetes API, end to end: the operator as a process, a SenderPool of
three sender pods on the local node (the test's redis-server, a recording SMTP sink that knows which
process sent each message by its EHLO name), and five MailCampaigns applied with kubectl.

Figures (printed with `-s`): seconds from `kubectl apply` to each campaign's first message at the sink,
the sample of the pool's assignment that shows 2/2/1, and the 1-second window in which all five sent.
"""

from __future__ import annotations

import bisect
import math
import os
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from mailtrain_operator.pool_redis import redis_pool_name
from mailtrain_sender.layout import PoolKeys
from tests.cluster.helpers import eventually
from tests.harness import net
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json
from tests.harness.local_node import LocalNode
from tests.harness.operator_process import OperatorProcess
from tests.harness.smtp_sink import RecordingSink
from tests.operator.pool_support import create_pool, pods, ready_pool, sender_pool
from tests.operator.system_support import (
    apply_campaigns,
    by_campaign,
    gone,
    origin,
    sender_pid,
    wait_complete,
)

CAMPAIGNS = 5
PROCESSES = 3
FAIR_SHARE = math.ceil(CAMPAIGNS / PROCESSES)  # 2
RATE = 150  # messages per second, the whole pool: five campaigns keep sending for several seconds
MAX_CONNECTIONS = 2
SAMPLE_EVERY = 0.05


@dataclass
class AssignmentSampler:
    """The pool's `assign` hash (worker -> campaigns), read every ~50 ms in a thread until stopped."""

    redis_url: str
    pool: str
    samples: list[tuple[float, dict[str, frozenset[str]]]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> AssignmentSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        key = PoolKeys(self.pool).assign
        try:
            with redis.Redis.from_url(self.redis_url, socket_timeout=5) as client:
                while not self._stop.is_set():
                    raw = client.hgetall(key)
                    at = time.time()
                    assigned = {
                        w.decode(): frozenset(c for c in v.decode().split(",") if c) for w, v in raw.items()
                    }
                    self.samples.append((at, assigned))
                    self._stop.wait(SAMPLE_EVERY)
        except BaseException as error:  # reported by stop()
            self.errors.append(error)

    def stop(self) -> list[tuple[float, dict[str, frozenset[str]]]]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=10)
        assert not self.errors, self.errors
        return self.samples


def _seed_pool(kube_create: Callable[[Json], Json], sink: RecordingSink, redis_url: str) -> None:
    smtp = {
        "host": net.LOOPBACK,
        "port": sink.port,
        "security": "none",
        "maxConnections": MAX_CONNECTIONS,
        "throttling": {"messagesPerSecond": RATE},
    }
    kube_create(
        sender_pool("seed", sink.port, queue={"processes": PROCESSES}, redis={"url": redis_url}, smtp=smtp)
    )


def _moves(
    samples: list[tuple[float, dict[str, frozenset[str]]]],
) -> list[tuple[float, str, list[str], list[str]]]:
    """(time, campaign, processes before, processes after) whenever the processes a campaign is assigned
    to change (a campaign fewer than the processes is shared; a finished one leaves every entry)."""
    holders: dict[str, list[str]] = {}
    changes = []
    for at, assignment in samples:
        now: dict[str, list[str]] = defaultdict(list)
        for worker, campaigns in sorted(assignment.items()):
            for campaign in campaigns:
                now[campaign].append(worker[-5:])
        for campaign in sorted(set(holders) | set(now)):
            if holders.get(campaign, []) != now.get(campaign, []):
                changes.append((at, campaign, holders.get(campaign, []), now.get(campaign, [])))
        holders = dict(now)
    return changes


def _window_with_all(times: list[list[float]]) -> float | None:
    """The start of a 1-second window in which every list has a time, or None."""
    for start in sorted(t for each in times for t in each):
        if all(bisect.bisect_left(each, start) < bisect.bisect_left(each, start + 1.0) for each in times):
            return start
    return None


def test_five_campaigns_on_three_processes_are_assigned_2_2_1_send_at_once_and_complete(
    operator: OperatorProcess,
    controlplane: ControlPlane,
    local_node: LocalNode,
    pool_namespace: str,
    redis_url: str,
    make_recording_sink: Callable[..., RecordingSink],
    tmp_path: Path,
) -> None:
    kube, ns = controlplane.api, pool_namespace
    sink = make_recording_sink(record_raw=True)
    _seed_pool(lambda body: create_pool(kube, ns, body), sink, redis_url)
    ready_pool(kube, ns, "seed", PROCESSES)
    workers = {p["metadata"]["name"] for p in pods(kube, ns, "seed")}

    names = [f"seed-{i}" for i in range(CAMPAIGNS)]
    recipients = 300
    sampler = AssignmentSampler(redis_url, redis_pool_name(ns, "seed")).start()
    applied_at = time.time()
    try:
        uids = apply_campaigns(controlplane, ns, "seed", names, recipients, tmp_path)
        wait_complete(controlplane, ns, names)
    finally:
        samples = sampler.stop()
    done_at = time.time()
    by_uid = {uid: name for name, uid in uids.items()}

    # (3) every recipient reached the sink exactly once, from one of the pool's processes.
    messages = sink.messages()
    delivered = by_campaign(messages)
    assert set(delivered) == set(by_uid), set(delivered) ^ set(by_uid)
    for uid, got in delivered.items():
        counts = Counter(origin(m)[1] for m in got)
        assert sorted(counts) == list(range(recipients)), by_uid[uid]
        assert set(counts.values()) == {1}, f"{by_uid[uid]}: {[i for i, n in counts.items() if n > 1]} twice"
    assert {m.helo for m in messages} <= workers, {m.helo for m in messages} - workers

    # (1) assignment: never more than the fair share per process; at some sample 2/2/1 of all five.
    ours = set(by_uid)
    assert len(samples) > 50, f"only {len(samples)} samples"
    over = [(at, w, sorted(c)) for at, a in samples for w, c in a.items() if len(c & ours) > FAIR_SHARE]
    assert not over, f"a process held more than {FAIR_SHARE} campaigns: {over[:3]}"
    full = [
        (at, a)
        for at, a in samples
        if set().union(*a.values()) >= ours and sorted(len(c) for c in a.values() if c) == [1, 2, 2]
    ]
    assert full, f"no sample with all {CAMPAIGNS} assigned 2/2/1; last: {samples[-1]}"
    at, assignment = full[0]
    print(f"\nFIGURE 2/2/1 first sampled {at - applied_at:.2f} s after apply", end=" ")
    print(f"({len(full)} of {len(samples)} samples, every {SAMPLE_EVERY} s):")
    for worker, campaigns in sorted(assignment.items()):
        print(f"FIGURE   {worker}: {sorted(by_uid[c] for c in campaigns)}")
    for moved_at, uid, before, after in _moves(samples):
        print(f"FIGURE   {moved_at - applied_at:5.2f} s: {by_uid.get(uid, uid)} on {before} -> {after}")
    # Each campaign went out from the process it was assigned to, in that sample.
    holder = {c: w for w, cs in assignment.items() for c in cs}
    for uid, got in delivered.items():
        assert holder[uid] in {m.helo for m in got}, by_uid[uid]

    # (2) all five sent at once: a 1-second window with deliveries of every campaign.
    window = _window_with_all([[m.received_at for m in delivered[uid]] for uid in by_uid])
    assert window is not None, "no 1-second window in which all five campaigns had deliveries"
    for name, uid in sorted(uids.items()):
        got = delivered[uid]
        senders = sorted(Counter(m.helo for m in got).values(), reverse=True)
        print(
            f"FIGURE {name}: first message {got[0].received_at - applied_at:.2f} s after apply, "
            f"last {got[-1].received_at - applied_at:.2f} s, messages per sender {senders}"
        )
    overlap = (
        max(delivered[u][0].received_at for u in by_uid) - applied_at,
        min(delivered[u][-1].received_at for u in by_uid) - applied_at,
    )
    print(f"FIGURE all five sending between {overlap[0]:.2f} s and {overlap[1]:.2f} s after apply")
    print(f"FIGURE {len(messages)} messages; apply to all Complete {done_at - applied_at:.2f} s")
    assert "Traceback" not in operator.log_text()


@pytest.mark.parametrize("how", ["sigkill", "force-delete"])
def test_a_sender_killed_mid_campaign_is_replaced_and_every_recipient_arrives(
    how: str,
    operator: OperatorProcess,
    controlplane: ControlPlane,
    local_node: LocalNode,
    pool_namespace: str,
    redis_url: str,
    make_recording_sink: Callable[..., RecordingSink],
    tmp_path: Path,
) -> None:
    kube, ns = controlplane.api, pool_namespace
    sink = make_recording_sink(record_raw=True)
    _seed_pool(lambda body: create_pool(kube, ns, body), sink, redis_url)
    ready_pool(kube, ns, "seed", PROCESSES)

    names = [f"{how}-{i}" for i in range(CAMPAIGNS)]  # campaigns outlive the module's pools
    recipients = 300
    uids = apply_campaigns(controlplane, ns, "seed", names, recipients, tmp_path)
    by_uid = {uid: name for name, uid in uids.items()}
    # Mid-campaign: a fifth of the mail is out.
    eventually(lambda: len(sink.messages()) >= CAMPAIGNS * recipients // 5, timeout=60, what="a fifth sent")
    with redis.Redis.from_url(redis_url) as client:
        assign = client.hgetall(PoolKeys(redis_pool_name(ns, "seed")).assign)
    assigned = {w.decode(): v.decode() for w, v in assign.items()}
    victim = next(p for p in pods(kube, ns, "seed") if assigned.get(p["metadata"]["name"]))
    name = victim["metadata"]["name"]
    pid = sender_pid(local_node, victim)
    held = sorted(by_uid[c] for c in assigned[name].split(","))
    kill_started = time.time()
    if how == "sigkill":
        os.kill(pid, signal.SIGKILL)
    else:
        controlplane.kubectl("delete", "pod", "-n", ns, name, "--grace-period=0", "--force")
    eventually(lambda: gone(pid), timeout=30, what=f"{name}'s sender process ended", interval=0.01)
    killed_at = time.time()
    print(
        f"\nFIGURE {how}: {name} (holding {held}) ended {killed_at - kill_started:.3f} s after the kill began"
    )

    if how == "sigkill":  # the node agent starts the container again, in the same pod

        def restarted() -> bool:
            found = kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")
            statuses = ((found or {}).get("status") or {}).get("containerStatuses") or []
            return any(s["name"] == "sender" and s["restartCount"] >= 1 and s["ready"] for s in statuses)

        eventually(restarted, timeout=60, what=f"{name}'s sender restarted and ready")
    ready_pool(kube, ns, "seed", PROCESSES)
    replaced = {p["metadata"]["name"] for p in pods(kube, ns, "seed")}
    assert (name in replaced) == (how == "sigkill"), replaced
    print(f"FIGURE the pool had {PROCESSES} ready processes again {time.time() - killed_at:.2f} s later")
    wait_complete(controlplane, ns, names)

    messages = sink.messages()
    delivered = by_campaign(messages)
    duplicates = 0
    for campaign, got in delivered.items():
        counts = Counter(origin(m)[1] for m in got)
        assert sorted(counts) == list(range(recipients)), by_uid[campaign]
        duplicates += sum(n - 1 for n in counts.values())
    # What the process delivered from 0.1 s before the kill began until it was seen gone.
    just_before = sum(
        1 for m in messages if m.helo == name and kill_started - 0.1 <= m.received_at <= killed_at
    )
    bound = MAX_CONNECTIONS + just_before
    print(f"FIGURE {duplicates} duplicates of {len(messages)} messages;", end=" ")
    print(f"bound {bound} ({MAX_CONNECTIONS} connections + {just_before} delivered in the last 0.1 s)")
    assert duplicates <= bound
    assert "Traceback" not in operator.log_text()
