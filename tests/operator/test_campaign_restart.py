"""The operator killed (SIGKILL) in the middle of a publish, then started again, with senders running:
every recipient reaches the sink exactly once. The cut falls at a random byte of the publish
(seeded), held there by a proxy between the operator and Redis until the kill."""

from __future__ import annotations

import os
import random

import redis

from mailtrain_sender.layout import CampaignKeys, Recipient, encode_chunk
from tests.operator.campaign_rig import CampaignRig, rig  # noqa: F401 - the fixture
from tests.operator.holding_proxy import HoldingProxy

CHUNK = 8
TOTAL = 1000  # the most recipients.inline takes


def recipients(prefix: str) -> list[dict[str, object]]:
    note = "a line of personal text to make the publish long enough to cut anywhere " * 2
    return [
        {"email": f"{prefix}{i}@example.org", "name": f"User {i}", "vars": {"note": note, "n": i}}
        for i in range(TOTAL)
    ]


def chunk_bytes(rows: list[dict[str, object]]) -> int:
    """The recipients' bytes as the Publisher writes them: a publish sends at least this much before
    the campaign's state, which comes last."""
    as_recipients = [Recipient(str(r["email"]), str(r["name"]), dict(r["vars"])) for r in rows]  # type: ignore[call-overload]
    return sum(len(encode_chunk(as_recipients[i : i + CHUNK]).encode()) for i in range(0, TOTAL, CHUNK))


def test_an_operator_killed_mid_publish_neither_loses_nor_duplicates(rig: CampaignRig) -> None:  # noqa: F811
    seed = int(os.environ.get("MAILTRAIN_TEST_SEED", random.randrange(2**32)))
    print(f"seed {seed} (MAILTRAIN_TEST_SEED={seed} replays the cut points)")
    rng = random.Random(seed)
    port = int(rig.redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = HoldingProxy(port).start()
    try:
        rig.create_pool("default", redis_url=proxy.url)
        rig.senders("default", 2)
        for round_ in range(2):
            name = f"killed-{round_}"
            rows = recipients(f"k{round_}-")
            cut = rng.randrange(1, chunk_bytes(rows))
            proxy.budget, proxy.exhausted = cut, type(proxy.exhausted)()
            operator = rig.operator(chunk_size=CHUNK, progress_interval=1)
            uid = rig.create_campaign(name, recipients={"inline": rows})["metadata"]["uid"]
            assert proxy.exhausted.wait(30), "the publish never reached the cut"
            with redis.Redis.from_url(rig.redis_url) as client:
                assert client.get(CampaignKeys(uid).state) is None, "the cut came after the publish"
                written = client.hlen(CampaignKeys(uid).rcpt)
            operator.kill()
            proxy.unlimit()
            operator.start()  # the same settings, ports and log, as a pod's container restarts
            rig.wait_phase(name, "Completed", timeout=60)
            copies = rig.received(uid)
            assert sorted(copies) == list(range(TOTAL)), f"{name}: recipients lost"
            assert set(copies.values()) == {1}, f"{name}: recipients sent twice"
            assert rig.status(name)["total"] == TOTAL
            print(f"round {round_}: cut at byte {cut}, {written} chunks in Redis at the kill")
            assert operator.stop() == 0
    finally:
        proxy.stop()
