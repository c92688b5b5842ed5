"""What a SenderPool says when it cannot run as specified, end to end: a condition and a Warning Event,
never a crash-looping pod or a traceback loop; and the pods are admitted where Pod Security is enforced.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis

from mailtrain_operator.api import SenderPoolSpec
from mailtrain_operator.pool_redis import redis_pool_name
from mailtrain_operator.pools.builders import PoolRef, children
from mailtrain_operator.settings import OperatorSettings
from mailtrain_sender.publisher import Publisher
from tests.harness import net
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json, KubeApiError
from tests.harness.operator_process import OperatorProcess
from tests.harness.smtp_sink import RecordingSink
from tests.operator.pool_support import (
    condition,
    config_map_path,
    create_pool,
    deployment_path,
    existing,
    patch_pool,
    pool_when,
    ready_pool,
    sender_pool,
    warning_event,
    warning_events,
)
from tests.sender.conftest import campaign_wire, recipients

SMTP_USER, SMTP_PASSWORD = "mailer", "smtp-pw-never-read"


def _degraded(reason: str) -> Any:
    return lambda pool: condition(pool, "Degraded").get("reason") == reason


def test_a_missing_smtp_secret_is_a_condition_until_it_exists_then_mail_goes_out_with_it(
    operator: OperatorProcess,
    controlplane: ControlPlane,
    pool_namespace: str,
    redis_url: str,
    make_recording_sink: Any,
) -> None:
    kube, ns = controlplane.api, pool_namespace
    sink: RecordingSink = make_recording_sink(auth=(SMTP_USER, SMTP_PASSWORD))
    body = sender_pool("auth", sink.port, redis={"url": redis_url})
    body["spec"]["smtp"]["credentialsSecretRef"] = {"name": "smtp-auth"}
    create_pool(kube, ns, body)

    pool = pool_when(
        kube, ns, "auth", _degraded("CreateContainerConfigError"), timeout=60, what="Degraded: the Secret"
    )
    assert 'secret "smtp-auth" not found' in condition(pool, "Degraded")["message"]
    assert condition(pool, "Ready")["status"] == "False"
    assert "smtp-auth" in warning_event(kube, ns, "auth", "CreateContainerConfigError")["message"]

    kube.create(
        f"/api/v1/namespaces/{ns}/secrets",
        {"metadata": {"name": "smtp-auth"}, "stringData": {"username": SMTP_USER, "password": SMTP_PASSWORD}},
    )
    pool = ready_pool(kube, ns, "auth", 1)
    assert condition(pool, "Degraded")["status"] == "False"

    async def publish() -> None:
        client = AsyncRedis.from_url(redis_url)
        try:
            await Publisher(client).publish(
                campaign_wire("hello", pool=redis_pool_name(ns, "auth")), recipients("hello", 2)
            )
        finally:
            await client.aclose()

    asyncio.run(publish())
    received = sink.wait_for(2, timeout=60)  # the relay wants AUTH: the pod's credentials are right
    assert sorted(m.rcpt_tos[0] for m in received) == ["hello.0@example.org", "hello.1@example.org"]
    assert SMTP_PASSWORD not in operator.log_text()


def test_a_spec_the_sender_refuses_is_a_condition_and_an_event_and_changes_nothing(
    operator: OperatorProcess, controlplane: ControlPlane, pool_namespace: str, redis_url: str
) -> None:
    kube, ns = controlplane.api, pool_namespace
    create_pool(kube, ns, sender_pool("picky", net.free_port(), redis={"url": redis_url}))
    ready_pool(kube, ns, "picky", 1)
    deployment = existing(kube, deployment_path(ns, "picky"))
    config_map = existing(kube, config_map_path(ns, "picky"))

    # The CRD lets this through (it checks the scheme and for a password); the sender cannot parse it.
    patched = patch_pool(kube, ns, "picky", {"redis": {"url": "redis://[::1/0"}})
    pool = pool_when(
        kube,
        ns,
        "picky",
        _degraded("SenderConfigRejected"),
        timeout=30,
        what="Degraded: SenderConfigRejected",
    )
    message = "sender.toml: redis.url: Invalid IPv6 URL"
    assert condition(pool, "Degraded")["message"] == message
    ready = condition(pool, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert pool["status"]["observedGeneration"] == patched["metadata"]["generation"]
    assert warning_event(kube, ns, "picky", "SenderConfigRejected")["message"] == message
    assert [e["reason"] for e in warning_events(kube, ns, "picky")].count("SenderConfigRejected") == 1
    # Nothing was applied: the pods run on as they were.
    assert (
        existing(kube, deployment_path(ns, "picky"))["metadata"]["generation"]
        == deployment["metadata"]["generation"]
    )
    assert existing(kube, config_map_path(ns, "picky"))["data"] == config_map["data"]

    patch_pool(kube, ns, "picky", {"redis": {"url": redis_url}})
    pool = ready_pool(kube, ns, "picky", 1)
    assert condition(pool, "Degraded")["reason"] == "AsExpected"
    assert "Traceback" not in operator.log_text()


def test_a_pool_without_a_redis_is_refused_before_anything_is_applied(
    operator: OperatorProcess, controlplane: ControlPlane, pool_namespace: str
) -> None:
    kube, ns = controlplane.api, pool_namespace
    create_pool(kube, ns, sender_pool("nowhere", net.free_port()))  # redis: enabled, no url, no Secret
    pool = pool_when(
        kube, ns, "nowhere", _degraded("RedisNotConfigured"), timeout=30, what="RedisNotConfigured"
    )
    assert "set redis.url or redis.urlSecretRef" in condition(pool, "Degraded")["message"]
    assert kube.get(deployment_path(ns, "nowhere")) is None
    assert kube.get(config_map_path(ns, "nowhere")) is None


def test_an_unreachable_redis_is_a_condition(
    operator: OperatorProcess, controlplane: ControlPlane, pool_namespace: str
) -> None:
    kube, ns = controlplane.api, pool_namespace
    port = net.free_port()  # nothing listens there
    create_pool(
        kube, ns, sender_pool("cut", net.free_port(), redis={"url": f"redis://{net.LOOPBACK}:{port}/0"})
    )
    pool = pool_when(kube, ns, "cut", _degraded("RedisUnreachable"), timeout=60, what="RedisUnreachable")
    message = condition(pool, "Degraded")["message"]
    assert message.startswith("the pool's Redis cannot be read: "), message
    assert f"{net.LOOPBACK}:{port}" in message, message
    assert "activeCampaigns" not in pool["status"]
    # The senders cannot reach it either, once their pod runs.
    pool_when(
        kube,
        ns,
        "cut",
        lambda p: condition(p, "Ready").get("reason") == "NoReadyReplicas",
        timeout=30,
        what="Ready: NoReadyReplicas",
    )
    assert f"{net.LOOPBACK}:{port}" in warning_event(kube, ns, "cut", "RedisUnreachable")["message"]


def _pod(template: Json, name: str) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **template["metadata"]},
        "spec": template["spec"],
    }


@pytest.mark.parametrize(
    "redis", [{"url": "redis://redis:6379/0"}, {"enabled": False}], ids=["shared", "private"]
)
def test_the_sender_pods_are_admitted_where_pod_security_is_restricted(
    crds: ControlPlane, pool_namespace: str, redis: Json
) -> None:
    spec = SenderPoolSpec.model_validate(
        {
            "redis": redis,
            "smtp": {"host": "smtp.example.com", "credentialsSecretRef": {"name": "smtp-auth"}},
            "template": {"resources": {"limits": {"memory": "256Mi"}}, "podLabels": {"team": "mail"}},
        }
    )
    built = children(PoolRef(pool_namespace, "strict", "0"), spec, OperatorSettings())
    template = built.deployment["spec"]["template"]
    pods = f"/api/v1/namespaces/{pool_namespace}/pods"
    crds.api.request("POST", pods, _pod(template, "strict"), {"dryRun": "All"})  # admitted

    # The plugin is on: the same pod without its security settings is refused.
    loose = {**template, "spec": {**template["spec"], "securityContext": {}}}
    with pytest.raises(KubeApiError) as refused:
        crds.api.request("POST", pods, _pod(loose, "loose"), {"dryRun": "All"})
    assert refused.value.status == 403 and 'violates PodSecurity "restricted' in refused.value.message
