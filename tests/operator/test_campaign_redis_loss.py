"""Redis loses a sending campaign (FLUSHALL, with senders running): the operator publishes it again
from the checkpoint in its status. Every recipient reaches the sink; a recipient is sent twice only
if its chunk was not in the checkpoint the republish used, and then at most twice."""

from __future__ import annotations

import re

import redis

from mailtrain_operator.api import parse_ranges
from mailtrain_sender.publisher import from_ranges
from tests.operator.campaign_rig import CampaignRig, inline, origin, rig  # noqa: F401 - the fixture

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
    status = rig.status("fragile")
    assert (status["total"], status["sent"], status["pending"]) == (TOTAL, TOTAL, 0)
    assert status["checkpoint"]["completedChunks"] == f"0-{TOTAL // CHUNK - 1}"
    print(
        f"checkpoint used: {len(used)} of {TOTAL // CHUNK} chunks; sent twice: {len(twice)} recipients "
        f"in {len({i // CHUNK for i in twice})} chunks (bound {CHUNK * len(started_before - used)})"
    )
