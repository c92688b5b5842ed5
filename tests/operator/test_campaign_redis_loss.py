"""Redis loses a sending campaign (FLUSHALL, with senders running): the operator publishes it again
from the checkpoint in its status, once every lease a sender held has run out. Every recipient reaches
the sink; a recipient is sent twice only if it was sent before the republish and its chunk was not in
the checkpoint the republish used, and then at most twice."""

from __future__ import annotations

import re
import time

import redis

from mailtrain_operator.api import parse_ranges
from mailtrain_operator.campaigns.lifecycle import REPUBLISH_AFTER
from mailtrain_operator.pool_redis import redis_pool_name
from mailtrain_sender.layout import CampaignKeys, PoolKeys
from mailtrain_sender.publisher import from_ranges
from tests.cluster.helpers import eventually
from tests.operator.campaign_rig import CampaignRig, inline, origin, rig, wait_for  # noqa: F401 - the fixture

CHUNK = 16
TOTAL = 480


def test_a_flushed_campaign_is_republished_minus_its_checkpoint(rig: CampaignRig) -> None:  # noqa: F811
    rig.create_pool("default")
    rig.senders("default", 2, smtp={"throttling": {"messagesPerSecond": 60}})
    rig.operator(progress_interval=1, chunk_size=CHUNK)
    uid = rig.create_campaign("fragile", recipients={"inline": inline(TOTAL)})["metadata"]["uid"]
    before = rig.wait_status(
        "fragile", lambda s: len((s.get("checkpoint") or {}).get("completedChunks") or "") > 2, "a checkpoint"
    )
    with redis.Redis.from_url(rig.redis_url) as client:
        client.flushall()
        # Only a republish writes the state key again (last, before the campaign is registered and
        # can be claimed): polled closely, it dates the republish better than the Event can.
        state = CampaignKeys(uid).state
        eventually(
            lambda: client.exists(state), timeout=REPUBLISH_AFTER + 15, what="the republish", interval=0.01
        )
        republished = time.time()
    event = rig.wait_event("fragile", "Republished", timeout=15)
    assert event["type"] == "Warning"
    found = re.search(r"without the completed chunks of the checkpoint \(([-0-9,]*|none)\)", event["message"])
    assert found is not None, event["message"]
    used = set() if found.group(1) == "none" else from_ranges(parse_ranges(found.group(1)))
    assert from_ranges(parse_ranges(before["checkpoint"]["completedChunks"])) <= used  # it only grows
    first_after = rig.sink.messages()[-1].received_at  # every copy after this one is of the republish
    rig.wait_phase("fragile", "Completed", timeout=90)

    copies = rig.received(uid)
    assert sorted(copies) == list(range(TOTAL)), "a recipient never reached the sink"
    twice = {index for index, count in copies.items() if count > 1}
    assert max(copies.values()) <= 2
    assert not {index // CHUNK for index in twice} & used, "a checkpointed chunk was sent again"
    # The bound: what is sent again lies in chunks outside the checkpoint that had started before the
    # republish (seen at the sink by the time its Event was), at most a chunk's worth each.
    started_before = {
        origin(message)[1] // CHUNK
        for message in rig.sink.messages()
        if message.received_at <= first_after and origin(message)[0] == uid
    }
    assert len(twice) <= CHUNK * len(started_before - used)
    # And every recipient sent twice was first sent before the republish: the operator waits until
    # every lease held at the loss has run out, so no old holder sends a chunk that is claimed again.
    first_copy: dict[int, float] = {}
    for message in sorted(rig.sink.messages(), key=lambda m: m.received_at):
        if origin(message)[0] == uid:
            first_copy.setdefault(origin(message)[1], message.received_at)
    assert all(first_copy[index] <= republished for index in twice), "an old holder sent after the republish"
    status = rig.status("fragile")
    assert (status["total"], status["sent"], status["pending"]) == (TOTAL, TOTAL, 0)
    assert status["checkpoint"]["completedChunks"] == f"0-{TOTAL // CHUNK - 1}"
    print(
        f"checkpoint used: {len(used)} of {TOTAL // CHUNK} chunks; sent twice: {len(twice)} recipients "
        f"in {len({i // CHUNK for i in twice})} chunks (bound {CHUNK * len(started_before - used)})"
    )


def test_an_active_campaign_taken_out_of_the_registry_is_put_back_in_its_place(
    rig: CampaignRig,  # noqa: F811
) -> None:
    """A sender that found a campaign's keys gone retires it from the pool's registry; if that lands
    after the republish registered it again, no sender would ever claim it. The driver repairs it."""
    rig.create_pool("default")
    rig.operator(progress_interval=1)  # no senders: the campaign stays Sending
    uid = rig.create_campaign("orphan", recipients={"inline": inline(20)})["metadata"]["uid"]
    rig.wait_phase("orphan", "Sending")
    registry = PoolKeys(redis_pool_name(rig.namespace, "default")).registry
    with redis.Redis.from_url(rig.redis_url) as client:
        score = wait_for(lambda: client.zscore(registry, uid), "the campaign registered")
        client.zrem(registry, uid)  # what the late retire does
        wait_for(lambda: client.zscore(registry, uid) == score, "the campaign back in its place", timeout=15)
