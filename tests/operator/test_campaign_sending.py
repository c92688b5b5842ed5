"""A MailCampaign end to end: the operator (a real process) publishes it to the pool's Redis, real
sender processes send it to the recording sink, and the status says so, written sparingly."""

from __future__ import annotations

import time

from tests.operator.campaign_rig import CampaignRig, inline, rig  # noqa: F401 - the fixture


def test_a_campaign_is_sent_to_every_recipient_and_completes(rig: CampaignRig) -> None:  # noqa: F811
    rig.create_pool("default")
    rig.senders("default", 2)
    rig.operator(progress_interval=1)
    applied = time.monotonic()
    created = rig.create_campaign("hello", recipients={"inline": inline(200)}, listId="news.acme.example")
    uid = created["metadata"]["uid"]
    rig.wait_received(uid, 1)
    first_message = time.monotonic() - applied
    rig.controlplane.kubectl(
        "wait", "--for=condition=Complete", "mc/hello", "-n", rig.namespace, "--timeout=60s"
    )
    received = rig.received(uid)
    assert sorted(received) == list(range(200)) and set(received.values()) == {1}
    status = rig.status("hello")
    assert status["phase"] == "Completed"
    assert (status["total"], status["sent"], status["failed"], status["invalid"], status["pending"]) == (
        200,
        200,
        0,
        0,
        0,
    )
    assert status["progress"] == "100%" and status["rate"] == 0
    assert status["startedAt"] <= status["completedAt"]
    assert status["checkpoint"]["completedChunks"] == "0" and status["checkpoint"]["chunks"] == 1
    assert status["checkpoint"]["recipientsDigest"].startswith("sha256:")
    assert status["observedGeneration"] == created["metadata"]["generation"]
    rig.wait_event("hello", "Completed")  # kopf posts Events from its own queue, in order
    reasons = [e["reason"] for e in rig.events("hello")]
    assert reasons[0] == "Started" and reasons.count("Completed") == 1
    message = next(m for m in rig.sink.messages() if m.rcpt_tos == ["r7@example.org"]).message
    assert message["Subject"] == "[hello] Hello User 7" and message["List-ID"] == "<news.acme.example>"
    print(f"apply to first message: {first_message:.2f} s")
