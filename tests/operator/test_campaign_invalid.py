"""Campaigns that cannot be sent as they are: a condition and an Event a person can act on, nothing
sent, and the campaign carries on by itself once the problem is fixed."""

from __future__ import annotations

import time

import redis

from tests.cluster.helpers import eventually
from tests.operator.campaign_rig import CampaignRig, inline, rig  # noqa: F401 - the fixture


def condition(status: dict[str, object], type_: str) -> dict[str, str]:
    found = next((c for c in status.get("conditions") or [] if c["type"] == type_), None)  # type: ignore[attr-defined]
    assert found is not None, f"no {type_} condition in {status}"
    return dict(found)


def keys_of(redis_url: str, uid: str) -> list[bytes]:
    with redis.Redis.from_url(redis_url) as client:
        return list(client.keys(f"*{uid}*"))


def test_a_template_that_does_not_compile_fails_until_the_spec_is_fixed(rig: CampaignRig) -> None:  # noqa: F811
    rig.create_pool("default")
    rig.senders("default", 1)
    rig.operator(progress_interval=1)
    uid = rig.create_campaign("broken", subject="Hello {{ name", recipients={"inline": inline(5)})[
        "metadata"
    ]["uid"]
    status = rig.wait_phase("broken", "Failed")
    failed = condition(status, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "InvalidTemplate")
    assert failed["message"].startswith("subject: template does not compile: TemplateSyntaxError")
    assert "fix the spec" in failed["message"]
    assert condition(status, "Complete")["status"] == "False"
    event = rig.wait_event("broken", "Failed")
    assert event["type"] == "Warning" and "subject: template does not compile" in event["message"]
    assert keys_of(rig.redis_url, uid) == [] and rig.received(uid) == {}
    # The person fixes the subject: checked again at once, published, sent.
    rig.patch_spec("broken", subject="Hello {{ name }}")
    rig.wait_phase("broken", "Completed")
    assert sorted(rig.received(uid)) == list(range(5))
    recovered = condition(rig.status("broken"), "Failed")
    assert (recovered["status"], recovered["reason"]) == ("False", "Recovered")
    rig.wait_event("broken", "Completed")  # kopf posts Events in order: every earlier one is in
    assert [e["reason"] for e in rig.events("broken")].count("Failed") == 1  # one Event, not one per retry


def test_the_sender_s_own_checks_refuse_what_the_schema_lets_through(rig: CampaignRig) -> None:  # noqa: F811
    """A template tag count over the sender's limit passes the CRD (it cannot count tags)."""
    rig.create_pool("default")
    rig.operator(progress_interval=1)
    rig.create_campaign("tags", text="{{ x }}" * 5001, recipients={"inline": inline(1)})
    failed = condition(rig.wait_phase("tags", "Failed"), "Failed")
    assert failed["reason"] == "InvalidCampaign"
    assert failed["message"].startswith("text has 5001 template tags; at most 5000 are allowed")


def test_a_source_that_cannot_be_read_fails_with_the_reason_and_sends_nothing(rig: CampaignRig) -> None:  # noqa: F811
    rig.create_pool("default")
    rig.senders("default", 1)
    rig.operator(progress_interval=1)
    source = {"configMapRef": {"name": "subscribers", "key": "list.csv"}}
    uid = rig.create_campaign("elsewhere", recipients=source)["metadata"]["uid"]
    failed = condition(rig.wait_phase("elsewhere", "Failed"), "Failed")
    assert failed["reason"] == "ConfigMapNotFound" and "subscribers" in failed["message"], failed
    assert rig.wait_event("elsewhere", "Failed")["type"] == "Warning"
    assert keys_of(rig.redis_url, uid) == []


def test_a_missing_pool_waits_and_the_campaign_starts_once_the_pool_exists(rig: CampaignRig) -> None:  # noqa: F811
    rig.senders("late", 1)
    rig.operator(progress_interval=1)
    uid = rig.create_campaign("waiting", senderPool="late", recipients={"inline": inline(20)})["metadata"][
        "uid"
    ]
    status = rig.wait_phase("waiting", "Pending")
    complete = condition(status, "Complete")
    assert (complete["status"], complete["reason"]) == ("False", "PoolNotFound")
    assert complete["message"] == (
        f"SenderPool {rig.namespace}/late does not exist; the campaign starts by itself once it does"
    )
    event = rig.wait_event("waiting", "PoolNotFound")
    assert event["type"] == "Warning" and event["message"] == complete["message"]
    assert "Failed" not in {c["type"] for c in status["conditions"]}
    created = time.monotonic()
    rig.create_pool("late")
    rig.wait_phase("waiting", "Sending", timeout=10)
    started = time.monotonic() - created
    assert started < 2.5, f"the campaign noticed its new pool after {started:.1f} s"
    rig.wait_phase("waiting", "Completed")
    assert sorted(rig.received(uid)) == list(range(20))
    print(f"pool created to Sending: {started:.2f} s")


def test_a_pool_whose_redis_is_a_missing_secret_says_which(rig: CampaignRig) -> None:  # noqa: F811
    rig.controlplane.api.create(
        f"/apis/mailtrain.dev/v1alpha1/namespaces/{rig.namespace}/senderpools",
        {
            "apiVersion": "mailtrain.dev/v1alpha1",
            "kind": "SenderPool",
            "metadata": {"name": "secretive"},
            "spec": {
                "redis": {"urlSecretRef": {"name": "redis-url", "key": "url"}},
                "smtp": {"host": "127.0.0.1", "port": rig.sink.port, "security": "none"},
            },
        },
    )
    rig.operator(progress_interval=1)
    rig.create_campaign("hidden", senderPool="secretive", recipients={"inline": inline(3)})
    complete = condition(rig.wait_phase("hidden", "Pending"), "Complete")
    assert complete["reason"] == "SecretNotFound"
    assert complete["message"] == f"Secret {rig.namespace}/redis-url (redis.urlSecretRef) does not exist"
    rig.wait_event("hidden", "SecretNotFound")
    # The Secret appears (with the URL, a password could be in it): the campaign is published.
    rig.controlplane.api.create(
        f"/api/v1/namespaces/{rig.namespace}/secrets",
        {"metadata": {"name": "redis-url"}, "stringData": {"url": rig.redis_url}},
    )
    eventually(
        lambda: rig.status("hidden").get("phase") == "Sending", timeout=30, what="published after the Secret"
    )
    operator_log = rig.operators[0].log_text()
    assert rig.redis_url not in operator_log  # a URL from a Secret is never logged
