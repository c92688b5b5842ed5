"""Faults on the senders' side, end to end with sender pods: the pool scaled down while it sends, and
the pool's Redis flushed while it sends. The operator is a process, the senders are pods of the
SenderPool on the local node, the relay is the recording sink, which knows which pod sent each
message (the EHLO name is the pod's name).

Every recipient of every campaign is checked at the sink. When the fault strikes is drawn from a
seeded RNG (`system_support.fault_rng`); `-s` prints the seed and the figures.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from mailtrain_operator.api import parse_ranges
from mailtrain_operator.campaigns.lifecycle import REPUBLISH_AFTER
from mailtrain_sender.layout import CampaignKeys
from mailtrain_sender.publisher import from_ranges
from tests.cluster.helpers import eventually
from tests.harness.controlplane import ControlPlane
from tests.harness.local_node import LocalNode
from tests.harness.smtp_sink import RecordingSink
from tests.operator.pool_support import pods, ready_pool
from tests.operator.system_support import (
    PodWatcher,
    SystemRig,
    assert_counts_complete,
    assert_everyone_once,
    campaign_events,
    campaign_status,
    copies,
    fault_rng,
    gone,
    open_system,
    origin,
    sender_pid,
    wait_complete,
    wait_sent,
)

REPUBLISHED = re.compile(r"without the completed chunks of the checkpoint \(([-0-9,]*|none)\)")
CHUNK = 16  # small chunks: every campaign has many, and the checkpoint moves every progress interval


@pytest.fixture
def system(
    crds: ControlPlane,
    local_node: LocalNode,
    namespace: str,
    redis_url: str,
    make_recording_sink: Callable[..., RecordingSink],
    tmp_path: Path,
) -> Iterator[SystemRig]:
    yield from open_system(crds, namespace, redis_url, make_recording_sink(record_raw=False), tmp_path)


def test_scaling_a_pool_down_mid_campaign_drains_the_removed_pods_and_sends_nobody_twice(
    system: SystemRig, local_node: LocalNode, request: pytest.FixtureRequest
) -> None:
    rng = fault_rng(request.node.nodeid)
    kube, ns, sink = system.kube, system.namespace, system.sink
    campaigns, recipients, processes = 4, 240, 3
    total = campaigns * recipients
    system.operator(progress_interval=1, chunk_size=CHUNK)
    system.pool("shrink", processes=processes, rate=80)  # about 12 s of sending
    ready_pool(kube, ns, "shrink", processes)
    before = {p["metadata"]["name"]: sender_pid(local_node, p) for p in pods(kube, ns, "shrink")}
    watcher = PodWatcher(kube, ns, "shrink").start()

    names = [f"shrink-{i}" for i in range(campaigns)]
    uids = system.apply("shrink", names, recipients)
    fraction = rng.uniform(0.2, 0.5)
    wait_sent(sink, int(total * fraction))
    scaled_at = time.time()
    system.controlplane.kubectl("scale", "-n", ns, "sp/shrink", "--replicas=1")
    ready_pool(kube, ns, "shrink", 1)
    kept = {p["metadata"]["name"] for p in pods(kube, ns, "shrink")}
    removed = sorted(set(before) - kept)
    assert len(kept) == 1 and kept <= set(before) and len(removed) == processes - 1, (kept, removed)
    eventually(lambda: all(gone(before[n]) for n in removed), timeout=60, what="the removed senders ended")
    eventually(
        lambda: all(watcher.pods[n].terminated for n in removed), timeout=30, what="the removed pods' ends"
    )
    wait_complete(system.controlplane, ns, names)
    ends = watcher.stop()

    messages = sink.messages()
    print(f"FIGURE scaled 3 -> 1 at {fraction:.2f} of the mail; removed {removed}")
    for name in removed:
        end = ends[name]
        assert end.terminated is not None and end.deleting_at is not None and end.ended_at is not None, end
        assert end.grace is not None
        drain = end.ended_at - end.deleting_at
        sent_before = sum(1 for m in messages if m.helo == name and m.received_at < scaled_at)
        sent_after = sum(1 for m in messages if m.helo == name and m.received_at >= scaled_at)
        print(
            f"FIGURE {name}: drained in {drain:.2f} s (grace {end.grace} s), exit "
            f"{end.terminated['exitCode']}; {sent_before} messages before the scale, {sent_after} after"
        )
        assert (end.terminated["exitCode"], end.terminated.get("reason")) == (0, "Completed"), end.terminated
        assert drain < end.grace, f"{name} took {drain:.1f} s, its grace is {end.grace} s"
        assert sent_before > 0, f"{name} had nothing to drain"
        log = local_node.container_log(ns, name, "sender")
        assert "shutting down" in log and "stopped after" in log, log[-3000:]
        assert "cut off" not in log and "may go out again" not in log, log[-3000:]
    # Once the removed pods ended, only the kept one sends.
    last_end = max(ends[name].ended_at or 0.0 for name in removed)
    late = {m.helo for m in messages if m.received_at > last_end}
    assert late <= kept, late

    again = assert_everyone_once(messages, uids, recipients)
    duplicates = sum(len(indexes) for indexes in again.values())
    print(f"FIGURE {duplicates} duplicates of {len(messages)} messages ({total} recipients)")
    assert duplicates == 0, again
    assert {m.helo for m in messages} <= set(before), {m.helo for m in messages} - set(before)
    assert_counts_complete(kube, ns, names, recipients)


def _checkpointed(status: dict[str, object]) -> set[int]:
    checkpoint = status.get("checkpoint") or {}
    assert isinstance(checkpoint, dict)
    return from_ranges(parse_ranges(checkpoint.get("completedChunks") or ""))


def test_a_redis_flush_mid_campaign_is_republished_and_only_unrecorded_chunks_go_out_again(
    system: SystemRig, request: pytest.FixtureRequest
) -> None:
    rng = fault_rng(request.node.nodeid)
    kube, ns, sink = system.kube, system.namespace, system.sink
    campaigns, recipients, processes = 4, 240, 2
    total = campaigns * recipients
    system.operator(progress_interval=1, chunk_size=CHUNK)
    system.pool("flush", processes=processes, rate=60)  # about 16 s of sending
    ready_pool(kube, ns, "flush", processes)
    names = [f"flush-{i}" for i in range(campaigns)]
    uids = system.apply("flush", names, recipients)

    # Mid-campaign: every campaign has a checkpoint, and a drawn share of the mail is out.
    fraction = rng.uniform(0.25, 0.55)
    wait_sent(sink, int(total * fraction))
    eventually(
        lambda: all(_checkpointed(campaign_status(kube, ns, n)) for n in names),
        timeout=30,
        what="a checkpoint in every campaign's status",
    )
    checkpoints = {name: _checkpointed(campaign_status(kube, ns, name)) for name in names}
    with redis.Redis.from_url(system.redis_url) as client, client.pipeline(transaction=True) as flush:
        for uid in uids.values():  # the chunks leased at the moment of the flush, in the same MULTI
            flush.hkeys(CampaignKeys(uid).owners)
        flush.flushall()
        *leased, _ = flush.execute()
    held = {name: {int(c) for c in chunks} for name, chunks in zip(uids, leased, strict=True)}
    flushed_at = time.time()
    at_flush = copies(sink.messages(), uids)
    unfinished = [name for name in names if len(at_flush[name]) < recipients]
    assert unfinished, "every campaign was out before the flush: nothing to republish"

    # Only a republish writes a campaign's state key again (last, before it can be claimed): polled
    # closely, it dates each republish better than its Event can.
    republished_at: dict[str, float] = {}
    with redis.Redis.from_url(system.redis_url) as client:

        def republished() -> bool:
            for name in unfinished:
                if name not in republished_at and client.exists(CampaignKeys(uids[name]).state):
                    republished_at[name] = time.time()
            return len(republished_at) == len(unfinished)

        eventually(republished, timeout=REPUBLISH_AFTER + 20, what="every republish", interval=0.01)
    for name in unfinished:
        [event] = eventually(
            functools.partial(campaign_events, kube, ns, name, "Republished"),
            timeout=20,
            what=f"{name}: a Republished Event",
        )
        assert event["type"] == "Warning"
        found = REPUBLISHED.search(event["message"])
        assert found is not None, event["message"]
        used = set() if found.group(1) == "none" else from_ranges(parse_ranges(found.group(1)))
        assert checkpoints[name] <= used, (name, checkpoints[name] - used)  # it only grows
    wait_complete(system.controlplane, ns, names, timeout=60)

    messages = sink.messages()
    again = assert_everyone_once(messages, uids, recipients)
    first_copy: dict[tuple[str, int], float] = {}
    for message in sorted(messages, key=lambda m: m.received_at):
        first_copy.setdefault(origin(message), message.received_at)
    delivered = copies(messages, uids)
    duplicates = 0
    for name, uid in uids.items():
        assert max(delivered[name].values()) <= 2, f"{name}: a recipient came three times"
        resent_chunks = {index // CHUNK for index in again[name]}
        # Only what the status had not recorded when Redis forgot it may go out again...
        assert not resent_chunks & checkpoints[name], (name, resent_chunks & checkpoints[name])
        # ... from chunks that had started by the republish (or the flush, if there was none to
        # see), or that a sender held at the flush: a chunk's worth for each chunk started since
        # the checkpoint was written.
        before = republished_at.get(name, flushed_at)
        started = {i // CHUNK for i in delivered[name] if first_copy[uid, i] <= before} | held[name]
        assert resent_chunks <= started - checkpoints[name], (name, resent_chunks - started)
        # A sender that held a chunk at the flush may go on sending it until its lease runs out; the
        # operator republishes only after that, so nothing sent twice was first sent after it.
        late = [i for i in again[name] if first_copy[uid, i] > before]
        assert late == [], (name, late)
        duplicates += len(again[name])
        print(
            f"FIGURE {name}: {len(checkpoints[name])} of {recipients // CHUNK} chunks in the checkpoint "
            f"at the flush, {len(held[name])} leased, {len(at_flush[name])} recipients out; sent twice "
            f"{len(again[name])} in "
            f"{len(resent_chunks)} chunks, {len(late)} of them first sent after the republish"
        )
    out = sum(len(c) for c in at_flush.values()) / total
    print(f"FIGURE flush at {out:.2f} of the mail: {duplicates} duplicates of {len(messages)} messages")
    assert_counts_complete(kube, ns, names, recipients)
    for name in names:
        final = campaign_status(kube, ns, name)["checkpoint"]
        assert final["completedChunks"] == f"0-{recipients // CHUNK - 1}", (name, final)
