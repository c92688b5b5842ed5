"""The pure builders of a SenderPool's children: every field, Pod Security "restricted", and a spec the
sender refuses. No I/O: these run in milliseconds (the apiserver's own verdict is in test_pool_conditions).
"""

from __future__ import annotations

import base64
import tomllib
from typing import Any

import pytest

from mailtrain_operator.api import SenderPoolSpec
from mailtrain_operator.pools import builders, names
from mailtrain_operator.pools.builders import Children, PoolRef, children
from mailtrain_operator.pools.sender_toml import (
    REDIS_NOT_CONFIGURED,
    SENDER_CONFIG_REJECTED,
    PoolSpecRejected,
    render,
    toml_text,
)
from mailtrain_operator.settings import OperatorSettings
from mailtrain_sender.config import parse_config

POOL = PoolRef("mail", "news", "6a1c0d6e-0000-4000-8000-000000000001")
SETTINGS = OperatorSettings(
    sender_image="registry.example/sender:1.2.3", private_redis_image="mirror/redis:7"
)
Json = dict[str, Any]


def _spec(**fields: Any) -> SenderPoolSpec:
    return SenderPoolSpec.model_validate({"smtp": {"host": "smtp.example.com"}} | fields)


def _build(**fields: Any) -> Children:
    return children(POOL, _spec(**fields), SETTINGS)


def _container(built: Children, name: str = "sender") -> Json:
    containers = built.deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def _env(container: Json) -> dict[str, Json]:
    return {var["name"]: var.get("valueFrom") or {"value": var["value"]} for var in container["env"]}


def test_every_child_is_owned_by_the_pool_and_labelled() -> None:
    built = _build(redis={"url": "redis://redis:6379/0"})
    owner = {
        "apiVersion": "mailtrain.dev/v1alpha1",
        "kind": "SenderPool",
        "name": "news",
        "uid": POOL.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    secret = builders.private_redis_secret(POOL, "x")
    for obj in (built.config_map, built.service, built.deployment, secret):
        assert obj["metadata"]["namespace"] == "mail"
        assert obj["metadata"]["ownerReferences"] == [owner]
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mailtrain-operator"
        assert obj["metadata"]["labels"]["mailtrain.dev/pool"] == "news"
    assert [o["metadata"]["name"] for o in built.in_apply_order()] == [
        "news-sender-config",
        "news-sender",
        "news-sender",
    ]
    assert [o["kind"] for o in built.in_apply_order()] == ["ConfigMap", "Service", "Deployment"]


def test_the_deployment() -> None:
    built = _build(queue={"processes": 7}, redis={"url": "redis://redis:6379/0"})
    spec = built.deployment["spec"]
    selector = {"app.kubernetes.io/name": "mailtrain-sender", "mailtrain.dev/pool": "news"}
    assert spec["replicas"] == 7
    assert spec["selector"] == {"matchLabels": selector}
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
    }
    template = spec["template"]
    assert template["metadata"]["labels"].items() >= selector.items()
    assert template["metadata"]["annotations"] == {names.RESTART_HASH_ANNOTATION: built.toml.restart_hash}
    pod = template["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["terminationGracePeriodSeconds"] > built.toml.config.worker.shutdown_grace
    assert pod["volumes"] == [
        {"name": "config", "configMap": {"name": "news-sender-config"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    assert names.selector_text("news") == "app.kubernetes.io/name=mailtrain-sender,mailtrain.dev/pool=news"


def test_the_sender_container() -> None:
    sender = _container(_build(redis={"url": "redis://redis:6379/0"}))
    assert sender["image"] == "registry.example/sender:1.2.3"  # the operator's setting
    assert sender["args"] == ["--config", "/etc/mailtrain/sender.toml", "--listen", "$(POD_IP):9090"]
    assert sender["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    assert sender["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert sender["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # A directory mount: a subPath mount would never see the ConfigMap's updates.
    assert sender["volumeMounts"][0] == {"name": "config", "mountPath": "/etc/mailtrain", "readOnly": True}
    assert all("subPath" not in mount for mount in sender["volumeMounts"])
    env = _env(sender)
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["MAILTRAIN_WORKER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert not {"MAILTRAIN_SMTP_USERNAME", "MAILTRAIN_REDIS_URL", "MAILTRAIN_REDIS_PASSWORD"} & env.keys()
    assert "imagePullPolicy" not in sender and "resources" not in sender


def test_secrets_reach_the_sender_as_references_never_as_values() -> None:
    sender = _container(
        _build(
            redis={"urlSecretRef": {"name": "redis-conn", "key": "url"}},
            smtp={"host": "smtp.example.com", "credentialsSecretRef": {"name": "smtp-auth"}},
        )
    )
    env = _env(sender)
    assert env["MAILTRAIN_SMTP_USERNAME"] == {"secretKeyRef": {"name": "smtp-auth", "key": "username"}}
    assert env["MAILTRAIN_SMTP_PASSWORD"] == {"secretKeyRef": {"name": "smtp-auth", "key": "password"}}
    assert env["MAILTRAIN_REDIS_URL"] == {"secretKeyRef": {"name": "redis-conn", "key": "url"}}


def test_the_template_overrides() -> None:
    template = {
        "image": "mine/sender:dev",
        "imagePullPolicy": "Always",
        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}},
        "nodeSelector": {"pool": "mail"},
        "tolerations": [{"key": "mail", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "podLabels": {"team": "mail", "mailtrain.dev/pool": "other"},
        "podAnnotations": {"prometheus.io/scrape": "true", names.RESTART_HASH_ANNOTATION: "mine"},
    }
    built = _build(redis={"url": "redis://redis:6379/0"}, template=template)
    pod = built.deployment["spec"]["template"]
    sender = _container(built)
    assert (sender["image"], sender["imagePullPolicy"]) == ("mine/sender:dev", "Always")
    assert sender["resources"] == template["resources"]
    assert pod["spec"]["nodeSelector"] == {"pool": "mail"}
    assert pod["spec"]["tolerations"] == template["tolerations"]
    assert pod["spec"]["affinity"] == template["affinity"]
    assert pod["metadata"]["labels"]["team"] == "mail"
    assert pod["metadata"]["labels"]["mailtrain.dev/pool"] == "news"  # the selector's label wins
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["metadata"]["annotations"][names.RESTART_HASH_ANNOTATION] == built.toml.restart_hash


def test_the_service() -> None:
    shared = _build(redis={"url": "redis://redis:6379/0"}).service
    assert shared["metadata"]["name"] == "news-sender"
    assert shared["spec"]["selector"] == names.selector_labels("news")
    assert shared["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    private = _build(redis={"enabled": False}).service
    assert private["spec"]["ports"][1] == {
        "name": "redis",
        "port": 6379,
        "targetPort": "redis",
        "protocol": "TCP",
    }


def test_the_private_redis() -> None:
    built = _build(redis={"enabled": False})
    assert built.private_redis
    spec = built.deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    redis = _container(built, "redis")
    assert redis["image"] == "mirror/redis:7"
    assert redis["command"][:2] == ["sh", "-c"]
    script = redis["command"][2]
    assert '--bind "$POD_IP"' in script and "--port 6379" in script
    assert '--save "" --appendonly no' in script
    assert "--unixsocket /tmp/redis.sock --unixsocketperm 700" in script
    assert "$(" not in script  # Kubernetes would expand it
    assert 'requirepass "$REDIS_PASSWORD"' in script
    secret_ref = {"secretKeyRef": {"name": "news-sender-redis", "key": "password"}}
    assert _env(redis)["REDIS_PASSWORD"] == secret_ref
    assert _env(_container(built))["MAILTRAIN_REDIS_PASSWORD"] == secret_ref
    assert redis["ports"] == [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}]
    assert redis["readinessProbe"]["tcpSocket"] == {"port": "redis"}
    assert tomllib.loads(built.toml.text)["redis"] == {"enabled": False, "url": "unix:///tmp/redis.sock?db=0"}
    secret = builders.private_redis_secret(POOL, "f00d")
    assert secret["metadata"]["name"] == "news-sender-redis"
    assert base64.b64decode(secret["data"]["password"]) == b"f00d"


# -- Pod Security "restricted" (https://kubernetes.io/docs/concepts/security/pod-security-standards/) ----

_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: Json) -> list[str]:
    """What the restricted profile refuses in a pod spec (its checks, as the apiserver runs them)."""
    found = []
    pod_context = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            found.append(flag)
    for volume in pod.get("volumes") or ():
        if not set(volume) - {"name"} <= _RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}")
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container.get("securityContext") or {}
        name = container["name"]
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or ()):
            found.append(f"{name}: capabilities not dropped")
        if set(capabilities.get("add") or ()) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities added")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile")
        if any(port.get("hostPort") for port in container.get("ports") or ()):
            found.append(f"{name}: hostPort")
    return found


@pytest.mark.parametrize(
    "redis", [{"url": "redis://redis:6379/0"}, {"enabled": False}], ids=["shared", "private"]
)
def test_the_pods_pass_pod_security_restricted(redis: Json) -> None:
    pod = _build(redis=redis).deployment["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsUser"] == 10001  # the private Redis runs as non-root too
    for container in pod["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The check itself can fail:
    assert restricted_violations({"containers": [{"name": "c"}]}) == [
        "c: allowPrivilegeEscalation",
        "c: capabilities not dropped",
        "c: runAsNonRoot",
        "c: seccompProfile",
    ]


# -- sender.toml ----------------------------------------------------------------------------------------


def test_sender_toml_is_what_the_sender_loads() -> None:
    spec = _spec(
        queue={"processes": 4, "maxParallelCampaigns": 2},
        redis={"url": "rediss://redis.example:6380/5"},
        smtp={
            "host": "smtp.example.com",
            "port": 465,
            "security": "tls",
            "maxConnections": 9,
            "maxMessages": 50,
            "throttling": {"messagesPerSecond": 12.5, "burst": 3},
        },
    )
    toml = render("mail", "news", spec)
    assert tomllib.loads(toml.text) == {
        "redis": {"enabled": True, "url": "rediss://redis.example:6380/5"},
        "queue": {"maxParallelCampaigns": 2},  # processes: the Deployment's replicas, not the file's
        "smtp": {
            "host": "smtp.example.com",
            "port": 465,
            "security": "tls",
            "maxConnections": 9,
            "maxMessages": 50,
            "throttling": {"messagesPerSecond": 12.5, "burst": 3},
        },
        "worker": {"pool": "mail/news"},
    }
    assert toml.config == parse_config(toml.text)
    assert toml.text.startswith("# sender.toml of SenderPool mail/news, written by mailtrain-operator.")


def test_a_url_from_a_secret_leaves_the_file_without_one() -> None:
    toml = render("mail", "news", _spec(redis={"urlSecretRef": {"name": "conn", "key": "url"}}))
    assert tomllib.loads(toml.text)["redis"] == {"enabled": True}
    assert "MAILTRAIN_REDIS_URL, from key 'url' of Secret 'conn'" in toml.text


def test_scaling_to_zero_is_a_valid_pool() -> None:
    built = _build(queue={"processes": 0}, redis={"url": "redis://redis:6379/0"})
    assert built.deployment["spec"]["replicas"] == 0


def test_only_restart_settings_change_the_restart_hash() -> None:
    base = _build(redis={"url": "redis://redis:6379/0"}).toml.restart_hash
    limits = _build(
        queue={"processes": 9, "maxParallelCampaigns": 5},
        redis={"url": "redis://redis:6379/0"},
        smtp={
            "host": "smtp.example.com",
            "maxConnections": 50,
            "maxMessages": 7,
            "throttling": {"messagesPerSecond": 3},
        },
    )
    assert limits.toml.restart_hash == base  # reloaded by the running senders
    assert _build(redis={"url": "redis://redis:6379/1"}).toml.restart_hash != base
    assert _build(redis={"urlSecretRef": {"name": "c", "key": "u"}}).toml.restart_hash != base
    assert _build(redis={"enabled": False}).toml.restart_hash != base
    assert (
        children(
            PoolRef("mail", "other", "u"), _spec(redis={"url": "redis://redis:6379/0"}), SETTINGS
        ).toml.restart_hash
        != base
    )


@pytest.mark.parametrize("text", ['quote " and \\ backslash', "tab\tnew\nline\x7fdel\x01", "Grüße 🚀", ""])
def test_toml_strings_round_trip(text: str) -> None:
    assert tomllib.loads(toml_text({"s": text, "t": {"u": text}})) == {"s": text, "t": {"u": text}}


def test_a_spec_the_sender_refuses_is_rejected_with_its_one_line() -> None:
    with pytest.raises(PoolSpecRejected) as rejected:
        _build(redis={"url": "redis://[::1/0"})
    assert rejected.value.reason == SENDER_CONFIG_REJECTED
    assert rejected.value.message == "sender.toml: redis.url: Invalid IPv6 URL"
    # One the CRD would refuse too, the sender's model refuses on its own.
    two = SenderPoolSpec.model_validate(
        {"smtp": {"host": "smtp.example.com"}, "queue": {"processes": 2}, "redis": {"enabled": False}}
    )
    with pytest.raises(PoolSpecRejected, match=r"queue\.processes must be 1 when redis\.enabled is false"):
        children(POOL, two, SETTINGS)


def test_a_pool_without_a_redis_is_rejected() -> None:
    with pytest.raises(PoolSpecRejected) as rejected:
        _build()
    assert rejected.value.reason == REDIS_NOT_CONFIGURED
    assert "set redis.url or redis.urlSecretRef" in rejected.value.message
