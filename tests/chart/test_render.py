"""The chart renders, and the real apiserver accepts what it renders, for several sets of values.

Each rendering of `helm template` goes to a server-side dry-run (`kubectl apply --server-side
--dry-run=server`) against the session's apiserver, which holds the chart's CRDs and the Prometheus
Operator's: every object is checked by its real schema, CEL rules and admission (Pod Security
"restricted" enforced and warned about in the namespaces), and nothing is stored. A warning of any
kind fails the test.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.chart import chart
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json

DEFAULT_KINDS = [
    "ClusterKopfPeering",
    "ClusterRole",
    "ClusterRoleBinding",
    "Deployment",
    "PodDisruptionBudget",
    "Service",
    "ServiceAccount",
]
# With a list of namespaces: a KopfPeering in each instead of the ClusterKopfPeering.
WATCHING_KINDS = [k for k in DEFAULT_KINDS if k != "ClusterKopfPeering"]


def _accepted(plane: ControlPlane, documents: list[Json]) -> None:
    result = chart.dry_run(plane, documents)
    assert result.returncode == 0, result.stderr
    assert result.warnings == [], result.stderr
    assert result.stdout.count("serverside-applied (server dry run)") == len(documents), result.stdout


def _env(deployment: Json) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_default_values_render_the_operator_and_the_apiserver_accepts_it(
    chart_crds: ControlPlane, restricted_namespaces: Callable[[], str], tmp_path: Path
) -> None:
    namespace = restricted_namespaces()
    documents = chart.render({}, tmp_path, namespace=namespace)
    assert chart.kinds(documents) == DEFAULT_KINDS
    _accepted(chart_crds, documents)

    deployment = chart.one(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == chart.one(documents, "ServiceAccount")["metadata"]["name"]
    [container] = pod["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    env = _env(deployment)
    assert env["MAILTRAIN_OPERATOR_NAMESPACES"] == ""  # every namespace, as the ClusterRole allows
    assert env["MAILTRAIN_OPERATOR_HEALTH_LISTEN"] == "$(POD_IP):8080"
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    token_volume = mounts["/var/run/secrets/kubernetes.io/serviceaccount"]
    [volume] = [v for v in pod["volumes"] if v["name"] == token_volume]
    assert {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}} in volume["projected"][
        "sources"
    ]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert (
        anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == deployment["spec"]["selector"]["matchLabels"]
    )

    service = chart.one(documents, "Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pdb = chart.one(documents, "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}


def test_watching_a_list_of_namespaces_with_every_operator_setting_changed(
    chart_crds: ControlPlane, restricted_namespaces: Callable[[], str], tmp_path: Path
) -> None:
    release_ns, team_a, team_b = (restricted_namespaces() for _ in range(3))
    values = {
        "watchNamespaces": [team_a, team_b],
        "replicaCount": 3,
        "podAntiAffinity": "hard",
        "podDisruptionBudget": {"maxUnavailable": "50%"},
        "peering": {"name": "mail.peers", "lifetime": 12},
        "image": {"digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
        "senderImage": {"tag": "0.1.0-rc1"},
        "settings": {"logLevel": "debug", "logFormat": "json", "progressInterval": 2.5, "chunkSize": 1024},
        "extraEnv": [{"name": "PYTHONASYNCIODEBUG", "value": "0"}],
        "imagePullSecrets": [{"name": "regcred"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "mail", "operator": "Exists", "effect": "NoSchedule"}],
        "podLabels": {"team": "platform", "app.kubernetes.io/component": "not-the-chart's"},
        "podAnnotations": {"example.com/owner": "platform"},
        "priorityClassName": "",
        "resources": {"requests": {"cpu": "50m", "memory": "100Mi"}, "limits": {"memory": "1Gi"}},
        "serviceAccount": {"annotations": {"example.com/role": "mail"}},
    }
    documents = chart.render(values, tmp_path, namespace=release_ns)
    per_namespace = ["KopfPeering", "Role", "RoleBinding"] * 2
    assert chart.kinds(documents) == sorted([*WATCHING_KINDS, *per_namespace])
    _accepted(chart_crds, documents)

    deployment = chart.one(documents, "Deployment")
    env = _env(deployment)
    assert env["MAILTRAIN_OPERATOR_NAMESPACES"] == f"{team_a},{team_b}"
    assert env["MAILTRAIN_OPERATOR_PEERING_NAME"] == "mail.peers"
    assert env["MAILTRAIN_OPERATOR_SENDER_IMAGE"] == "ghcr.io/mailtrain-operator/sender:0.1.0-rc1"
    assert env["PYTHONASYNCIODEBUG"] == "0"
    template = deployment["spec"]["template"]
    [container] = template["spec"]["containers"]
    assert container["image"] == "ghcr.io/mailtrain-operator/operator@sha256:" + "a" * 64
    # The chart's labels win: a pod must stay its Deployment's.
    assert template["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    assert template["metadata"]["labels"]["team"] == "platform"
    assert "requiredDuringSchedulingIgnoredDuringExecution" in template["spec"]["affinity"]["podAntiAffinity"]
    roles = [d for d in documents if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted([team_a, team_b])
    for role in roles:
        assert {
            "apiGroups": ["kopf.dev"],
            "resources": ["kopfpeerings"],
            "resourceNames": ["mail.peers"],
            "verbs": ["get", "patch"],
        } in role["rules"]


def _pools(team: str) -> list[Json]:
    smtp = {"host": "smtp.example.com", "credentialsSecretRef": {"name": "smtp-auth"}}
    return [
        {"name": "bulk", "namespace": team, "spec": {"queue": {"processes": 3}, "smtp": smtp}},
        {
            "name": "solo",
            "namespace": team,
            "labels": {"tier": "small"},
            "spec": {"redis": {"enabled": False}, "smtp": smtp},
        },
        {"name": "external", "spec": {"redis": {"url": "redis://redis.example:6379/2"}, "smtp": smtp}},
    ]


def test_the_bundled_redis_pools_monitors_and_alerts_are_accepted_and_the_pools_use_that_redis(
    chart_crds: ControlPlane, restricted_namespaces: Callable[[], str], tmp_path: Path
) -> None:
    release_ns, team = restricted_namespaces(), restricted_namespaces()
    values = {
        "watchNamespaces": [release_ns, team],
        "redis": {
            "enabled": True,
            "maxmemory": "2gb",
            "appendfsync": "always",
            "persistence": {"storageClassName": "fast", "size": "20Gi"},
            "networkPolicy": {"extraFrom": [{"podSelector": {"matchLabels": {"app": "redis-exporter"}}}]},
        },
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "podMonitor": {"enabled": True, "interval": "15s"},
        },
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
        "pools": _pools(team),
    }
    documents = chart.render(values, tmp_path, namespace=release_ns)
    extra = ["NetworkPolicy", "PodMonitor", "PrometheusRule", "Secret", "Secret", "Secret", "SenderPool"]
    extra += [
        "SenderPool",
        "SenderPool",
        "Service",
        "ServiceMonitor",
        "StatefulSet",
        "Role",
        "Role",
        "RoleBinding",
        "RoleBinding",
        "KopfPeering",
        "KopfPeering",
    ]
    # The uninstall hook, for the pools of two namespaces.
    extra += ["Job", "ServiceAccount", "Role", "Role", "RoleBinding", "RoleBinding"]
    assert chart.kinds(documents) == sorted([*WATCHING_KINDS, *extra])
    _accepted(chart_crds, documents)

    redis_name = "mt-mailtrain-operator-redis"
    password = base64.b64decode(chart.one(documents, "Secret", redis_name)["data"]["password"]).decode()
    assert len(password) == 48
    url_secrets = [d for d in documents if d["metadata"]["name"] == "mt-mailtrain-operator-redis-url"]
    assert sorted(s["metadata"]["namespace"] for s in url_secrets) == sorted([release_ns, team])
    for secret in url_secrets:
        url = base64.b64decode(secret["data"]["url"]).decode()
        assert url == f"redis://:{password}@{redis_name}.{release_ns}.svc:6379/0"

    pools = {d["metadata"]["name"]: d for d in documents if d["kind"] == "SenderPool"}
    assert pools["bulk"]["spec"]["redis"] == {
        "enabled": True,
        "urlSecretRef": {"name": "mt-mailtrain-operator-redis-url", "key": "url"},
    }
    assert pools["solo"]["spec"]["redis"] == {"enabled": False}
    assert pools["solo"]["metadata"]["labels"]["tier"] == "small"
    assert pools["external"]["spec"]["redis"] == {"url": "redis://redis.example:6379/2"}
    assert pools["external"]["metadata"]["namespace"] == release_ns

    statefulset = chart.one(documents, "StatefulSet")
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    script = container["command"][2]
    assert "--appendonly yes --appendfsync always" in script and "--maxmemory 2gb" in script
    assert password not in script  # from the Secret, on redis-server's standard input
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"

    policy = chart.one(documents, "NetworkPolicy")["spec"]
    assert policy["podSelector"] == statefulset["spec"]["selector"]
    [rule] = policy["ingress"]
    operator_peer, sender_peer, exporter = rule["from"]
    assert operator_peer == {"podSelector": chart.one(documents, "Deployment")["spec"]["selector"]}
    assert sender_peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "mailtrain-sender"}}
    assert sender_peer["namespaceSelector"]["matchExpressions"][0]["values"] == [release_ns, team]
    assert exporter == {"podSelector": {"matchLabels": {"app": "redis-exporter"}}}

    pod_monitor = chart.one(documents, "PodMonitor")["spec"]
    assert pod_monitor["namespaceSelector"] == {"matchNames": [release_ns, team]}
    assert pod_monitor["podMetricsEndpoints"][0]["port"] == "metrics"
    service_monitor = chart.one(documents, "ServiceMonitor")
    assert service_monitor["metadata"]["labels"]["release"] == "prometheus"
    metrics_labels = chart.one(documents, "Service", "mt-mailtrain-operator-metrics")["metadata"]["labels"]
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= metrics_labels.items()


def test_the_least_the_chart_can_install_is_accepted_too(
    chart_crds: ControlPlane, restricted_namespaces: Callable[[], str], tmp_path: Path
) -> None:
    """No RBAC, an existing ServiceAccount, no PDB, one replica, no anti-affinity; the bundled Redis without
    a volume or NetworkPolicy (what the local test node can run: it has neither)."""
    namespace = restricted_namespaces()
    chart_crds.kubectl("create", "serviceaccount", "mail-operator", "-n", namespace)
    values = {
        "rbac": {"create": False},
        "serviceAccount": {"create": False, "name": "mail-operator"},
        "podDisruptionBudget": {"enabled": False},
        "replicaCount": 1,
        "podAntiAffinity": "none",
        "redis": {"enabled": True, "persistence": {"enabled": False}, "networkPolicy": {"enabled": False}},
        "metrics": {"podMonitor": {"enabled": True}},
    }
    documents = chart.render(values, tmp_path, namespace=namespace)
    assert chart.kinds(documents) == [
        "ClusterKopfPeering",
        "Deployment",
        "PodMonitor",
        "Secret",
        "Secret",
        "Service",
        "Service",
        "StatefulSet",
    ]
    _accepted(chart_crds, documents)
    pod = chart.one(documents, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mail-operator"
    assert "affinity" not in pod
    statefulset = chart.one(documents, "StatefulSet")["spec"]
    assert "volumeClaimTemplates" not in statefulset
    assert statefulset["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]
    assert chart.one(documents, "PodMonitor")["spec"]["namespaceSelector"] == {"any": True}


def test_a_pod_security_violation_would_be_reported_by_the_dry_run(
    chart_crds: ControlPlane, restricted_namespaces: Callable[[], str], tmp_path: Path
) -> None:
    """The check above means something: the same dry-run warns about a Deployment the chart did not make
    restricted (here a hand-edited rendering that runs as root)."""
    namespace = restricted_namespaces()
    documents = chart.render({}, tmp_path, namespace=namespace)
    deployment = chart.one(documents, "Deployment")
    deployment["spec"]["template"]["spec"]["securityContext"] = {"runAsUser": 0}
    result = chart.dry_run(chart_crds, [deployment])
    assert result.returncode == 0, result.stderr
    assert any('would violate PodSecurity "restricted' in warning for warning in result.warnings), (
        result.stderr
    )


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        (
            {"name": "bulk", "spec": {"queue": {"processes": 0.5}, "smtp": {"host": "h"}}},
            "spec.queue.processes",
        ),
        (
            {
                "name": "solo",
                "spec": {"queue": {"processes": 2}, "redis": {"enabled": False}, "smtp": {"host": "h"}},
            },
            "queue.processes must be 1 when redis.enabled is false",
        ),
    ],
)
def test_a_pool_the_crd_refuses_fails_with_the_apiservers_reason(
    chart_crds: ControlPlane,
    restricted_namespaces: Callable[[], str],
    tmp_path: Path,
    pool: Json,
    message: str,
) -> None:
    namespace = restricted_namespaces()
    documents = chart.render({"redis": {"enabled": True}, "pools": [pool]}, tmp_path, namespace=namespace)
    result = chart.dry_run(chart_crds, documents)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
