"""Edits after a campaign started: content is locked (a condition and an Event say so, and every
recipient gets the published message); priority moves the campaign in line; before publishing,
every edit applies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis

from mailtrain_operator.campaigns.wire import created_ms
from mailtrain_operator.pool_redis import redis_pool_name
from mailtrain_sender.layout import PoolKeys, registry_score
from tests.cluster.helpers import eventually
from tests.operator.campaign_rig import CampaignRig, inline, rig  # noqa: F401 - the fixture


def condition(status: dict[str, object], type_: str) -> dict[str, str] | None:
    return next((dict(c) for c in status.get("conditions") or [] if c["type"] == type_), None)  # type: ignore[attr-defined]


def test_content_edits_after_publishing_are_refused_and_every_recipient_gets_the_published_message(
    rig: CampaignRig,  # noqa: F811
) -> None:
    rig.create_pool("default")
    rig.operator(progress_interval=1)
    uid = rig.create_campaign("locked", subject="First {{ name }}", recipients={"inline": inline(30)})[
        "metadata"
    ]["uid"]
    rig.wait_phase("locked", "Sending")  # published; no sender runs yet
    rig.patch_spec("locked", subject="Second {{ name }}", html="<p>new</p>")
    status = rig.wait_status("locked", lambda s: condition(s, "ContentLocked") is not None, "ContentLocked")
    locked = condition(status, "ContentLocked")
    assert locked is not None and (locked["status"], locked["reason"]) == ("True", "EditedAfterPublish")
    assert locked["message"].startswith(
        "subject, html changed after the campaign was published; the change is"
    )
    assert "create a new MailCampaign" in locked["message"]
    event = rig.wait_event("locked", "EditRefused")
    assert event["type"] == "Warning" and event["message"] == locked["message"]
    rig.senders("default", 2)
    rig.wait_phase("locked", "Completed")
    subjects = {m.message["Subject"] for m in rig.sink.messages()}
    assert subjects == {f"First User {i}" for i in range(30)}
    assert sorted(rig.received(uid)) == list(range(30))


def test_reverting_an_edit_clears_the_lock(rig: CampaignRig) -> None:  # noqa: F811
    rig.create_pool("default")
    rig.operator(progress_interval=1)
    rig.create_campaign("undo", subject="Same {{ name }}", recipients={"inline": inline(3)})
    rig.wait_phase("undo", "Sending")
    rig.patch_spec("undo", subject="Other {{ name }}")
    rig.wait_status("undo", lambda s: (condition(s, "ContentLocked") or {}).get("status") == "True", "locked")
    rig.patch_spec("undo", subject="Same {{ name }}")
    status = rig.wait_status(
        "undo", lambda s: (condition(s, "ContentLocked") or {}).get("status") == "False", "unlocked"
    )
    unlocked = condition(status, "ContentLocked")
    assert unlocked is not None and unlocked["reason"] == "Unedited"


def test_a_priority_edit_moves_the_campaign_in_the_pool_s_line(rig: CampaignRig) -> None:  # noqa: F811
    rig.create_pool("default")
    rig.operator(progress_interval=1)
    created = rig.create_campaign("urgent", recipients={"inline": inline(3)})
    uid = created["metadata"]["uid"]
    rig.wait_phase("urgent", "Sending")
    since = created_ms(created["metadata"]["creationTimestamp"])

    def score() -> float | None:
        with redis.Redis.from_url(rig.redis_url) as client:
            found = client.zscore(PoolKeys(redis_pool_name(rig.namespace, "default")).registry, uid)
            return None if found is None else float(found)

    assert score() == registry_score(0, since)
    rig.patch_spec("urgent", priority=500)
    eventually(lambda: score() == registry_score(500, since), timeout=10, what="the new priority in Redis")
    status = rig.wait_status("urgent", lambda s: s["observedGeneration"] == 2, "the edit observed")
    assert condition(status, "ContentLocked") is None  # priority is no content


def test_edits_before_publishing_all_apply(rig: CampaignRig) -> None:  # noqa: F811
    rig.create_pool("default")
    rig.senders("default", 1)
    rig.operator(progress_interval=1)
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    uid = rig.create_campaign(
        "draft", subject="Draft {{ name }}", startAt=later, recipients={"inline": inline(4)}
    )["metadata"]["uid"]
    rig.wait_phase("draft", "Scheduled")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rig.patch_spec("draft", subject="Final {{ name }}", startAt=now)
    rig.wait_phase("draft", "Completed", timeout=30)
    assert {m.message["Subject"] for m in rig.sink.messages()} == {f"Final User {i}" for i in range(4)}
    assert sorted(rig.received(uid)) == list(range(4))
