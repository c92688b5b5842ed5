"""The chart's RBAC rules are what the operator needs and no more, whether it watches every namespace or
a list of them; the operator, as a pod under the chart's ServiceAccount, starts and works with them.

Rules are rendered by `helm template` from the chart itself and installed on the real apiserver;
`kubectl auth can-i --as=<the ServiceAccount>` asks RBAC about every verb the product uses and about
those it must not have, and the ServiceAccount then does each part of the job for real.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.chart.helm_release import pool_value
from tests.cluster.helpers import eventually, pod, pod_ip_env, ready_pod
from tests.harness import net
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json
from tests.harness.local_node import LocalNode
from tests.harness.operator_process import RESUMED
from tests.operator import examples
from tests.operator.rbac_chart import (
    ALL_VERBS,
    CAMPAIGNS,
    FORBIDDEN,
    NEEDED,
    PEERING,
    POOLS,
    Installed,
    install,
    peering_rules,
    uninstall,
)

IMAGE = "ghcr.io/mailtrain-operator/operator:0.1.0"
HOOK_TEMPLATES = ("templates/uninstall-hook.yaml",)
ELSEWHERE = "not-watched"  # a namespace the operator is not given (RBAC answers whether it exists or not)


@pytest.fixture
def chart(
    kopf_peering_crds: ControlPlane, crds: ControlPlane, tmp_path: Path
) -> Iterator[Callable[..., Installed]]:
    """Installs the chart's ServiceAccount and RBAC objects as a release of its own (cluster-scoped
    names are per release), and removes the cluster-scoped ones afterwards."""
    installed: list[Installed] = []

    def install_release(namespace: str, **values: object) -> Installed:
        release = install(crds, f"r{uuid.uuid4().hex[:8]}", namespace, tmp_path, values)
        installed.append(release)
        return release

    yield install_release
    for release in installed:
        uninstall(release)


@pytest.fixture
def second_namespace(controlplane: ControlPlane) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    controlplane.kubectl("create", "namespace", name)
    yield name
    controlplane.kubectl("delete", "namespace", name, "--wait=false")


def _denied(answers: dict[str, bool]) -> list[str]:
    return [question for question, allowed in answers.items() if not allowed]


def _granted(answers: dict[str, bool]) -> list[str]:
    return [question for question, allowed in answers.items() if allowed]


def _kubectl_agrees(release: Installed, namespace: str | None, *expected: tuple[str, str, str, bool]) -> None:
    """`kubectl auth can-i --as=...` gives the answers the SubjectAccessReviews gave."""
    for verb, resource, sub, allowed in expected:
        assert release.can_i(verb, resource, sub, namespace) is allowed, (verb, resource, sub, namespace)
        assert release.allowed(verb, resource, sub, namespace) is allowed, (verb, resource, sub, namespace)


def test_cluster_wide_rules_grant_what_the_operator_needs_in_every_namespace_and_no_more(
    chart: Callable[..., Installed], namespace: str
) -> None:
    release = chart(namespace)
    kinds = {d["kind"] for d in release.documents}
    assert kinds == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
    for where in (namespace, ELSEWHERE):
        assert _denied(release.answers(NEEDED, where)) == [], where
        assert _granted(release.answers(FORBIDDEN, where)) == [], where
    needed, forbidden = peering_rules("clusterkopfpeerings.kopf.dev")
    cluster_needed = [*needed, ("list", "customresourcedefinitions.apiextensions.k8s.io", "")]
    cluster_needed += [("watch", "customresourcedefinitions.apiextensions.k8s.io", "")]
    assert _denied(release.answers(cluster_needed, None)) == []
    cluster_forbidden = [*forbidden, ("list", "namespaces", ""), ("list", "nodes", "")]
    cluster_forbidden += [("get", "customresourcedefinitions.apiextensions.k8s.io", "")]
    cluster_forbidden += [("list", "secrets", ""), ("create", "clusterroles.rbac.authorization.k8s.io", "")]
    assert _granted(release.answers(cluster_forbidden, None)) == []
    _kubectl_agrees(
        release,
        ELSEWHERE,
        ("patch", CAMPAIGNS, "status", True),
        ("create", "secrets", "", True),
        ("list", "secrets", "", False),
        ("get", POOLS, "scale", False),
    )
    _kubectl_agrees(release, None, ("patch", f"clusterkopfpeerings.kopf.dev/{PEERING}", "", True))


def test_namespaced_rules_hold_in_the_watched_namespaces_and_nothing_elsewhere(
    chart: Callable[..., Installed], namespace: str, second_namespace: str
) -> None:
    release = chart(namespace, watchNamespaces=[namespace, second_namespace])
    kinds = sorted(d["kind"] for d in release.documents)
    roles = ["Role", "Role", "RoleBinding", "RoleBinding"]
    peerings = ["KopfPeering", "KopfPeering"]
    assert kinds == ["ClusterRole", "ClusterRoleBinding", *peerings, *roles, "ServiceAccount"]
    needed, forbidden = peering_rules("kopfpeerings.kopf.dev")
    for where in (namespace, second_namespace):
        assert _denied(release.answers(NEEDED + needed, where)) == [], where
        assert _granted(release.answers(FORBIDDEN + forbidden, where)) == [], where

    # Another namespace: no verb at all on anything the operator uses.
    resources = {(resource, sub) for _, resource, sub in NEEDED + FORBIDDEN + needed + forbidden}
    everything = [(verb, resource, sub) for resource, sub in sorted(resources) for verb in ALL_VERBS]
    assert _granted(release.answers(everything, ELSEWHERE)) == []
    # Cluster-wide: the two reads kopf makes to follow CRDs and namespaces, and nothing else.
    followed = ("customresourcedefinitions.apiextensions.k8s.io", "namespaces")
    reads = [(verb, resource, "") for resource in followed for verb in ("list", "watch")]
    assert _denied(release.answers(reads, None)) == []
    beyond = [(verb, resource, "") for resource in followed for verb in ("get", "create", "patch", "delete")]
    beyond += [(verb, "clusterkopfpeerings.kopf.dev", "") for verb in ALL_VERBS]
    beyond += [(verb, kind, "") for kind in (POOLS, CAMPAIGNS, "secrets") for verb in ("get", "list")]
    assert _granted(release.answers(beyond, None)) == []
    _kubectl_agrees(
        release,
        second_namespace,
        ("watch", CAMPAIGNS, "", True),
        ("get", f"kopfpeerings.kopf.dev/{PEERING}", "", True),
        ("watch", "secrets", "", False),
    )
    _kubectl_agrees(release, ELSEWHERE, ("get", "secrets", "", False), ("list", CAMPAIGNS, "", False))
    _kubectl_agrees(release, None, ("watch", "namespaces", "", True), ("list", CAMPAIGNS, "", False))


def test_the_uninstall_hook_may_list_and_delete_the_pools_of_their_namespaces_and_nothing_else(
    crds: ControlPlane, namespace: str, second_namespace: str, tmp_path: Path
) -> None:
    pools = [pool_value("a", 2525, processes=1, rate=1), pool_value("b", 2525, processes=1, rate=1)]
    pools[1]["namespace"] = second_namespace
    name = f"r{uuid.uuid4().hex[:8]}"
    # The hook's ServiceAccount, Roles and RoleBindings; not its Job, which would delete the pools.
    hook = install(
        crds, name, namespace, tmp_path, {"pools": pools}, templates=HOOK_TEMPLATES, leave_out=("Job",)
    )
    try:
        assert sorted(d["kind"] for d in hook.documents) == [
            *["Role", "Role", "RoleBinding", "RoleBinding"],
            "ServiceAccount",
        ]
        needed = [("list", POOLS, ""), ("delete", POOLS, "")]
        forbidden = [(verb, POOLS, "") for verb in ("get", "watch", "create", "update", "patch")]
        forbidden += [("deletecollection", POOLS, ""), ("patch", POOLS, "status")]
        forbidden += [
            (verb, kind, "") for kind in (CAMPAIGNS, "secrets", "deployments.apps") for verb in ALL_VERBS
        ]
        for where in (namespace, second_namespace):
            assert _denied(hook.answers(needed, where)) == [], where
            assert _granted(hook.answers(forbidden, where)) == [], where
        assert _granted(hook.answers(needed, ELSEWHERE)) == []
        assert _granted(hook.answers(needed, None)) == []  # not cluster-wide
        _kubectl_agrees(hook, second_namespace, ("delete", POOLS, "", True), ("get", POOLS, "", False))
    finally:
        uninstall(hook)


def kubeconfig_of(release: Installed, plane: ControlPlane) -> Path:
    """A client certificate for the ServiceAccount: the same user and groups as its token."""
    return plane.kubeconfig_for_service_account(release.namespace, release.service_account)


def _as_operator(release: Installed, plane: ControlPlane) -> Callable[..., tuple[bool, str]]:
    """kubectl as the operator's ServiceAccount: (succeeded, what it said)."""
    kubeconfig = kubeconfig_of(release, plane)

    def kubectl(*args: str, manifest: Json | None = None) -> tuple[bool, str]:
        stdin = json.dumps(manifest) if manifest is not None else None
        done = plane.kubectl(*args, "-n", release.namespace, kubeconfig=kubeconfig, input=stdin, check=False)
        return done.returncode == 0, f"kubectl {' '.join(args)}: {done.stdout}{done.stderr}"

    return kubectl


def _succeeds(result: tuple[bool, str]) -> None:
    succeeded, output = result
    assert succeeded, output


def _manifest(kind: str, api_version: str, name: str, **fields: object) -> Json:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, **fields}


def test_the_service_account_does_each_part_of_the_job_and_cannot_read_secrets_in_bulk(
    chart: Callable[..., Installed], crds: ControlPlane, namespace: str
) -> None:
    release = chart(namespace, watchNamespaces=[namespace])
    crds.kubectl("apply", "-n", namespace, "-f", "-", input=examples.dumps(examples.campaign("news")))
    crds.kubectl("create", "secret", "generic", "smtp-auth", "-n", namespace, "--from-literal=password=x")
    kubectl = _as_operator(release, crds)
    apply = ("apply", "--server-side", "--field-manager=mailtrain-operator", "-f", "-")
    labels = {"app": "p-sender"}
    children = [
        _manifest("ConfigMap", "v1", "p-sender-config", data={"sender.toml": "x = 1\n"}),
        _manifest("Service", "v1", "p-sender", spec={"selector": labels, "ports": [{"port": 9090}]}),
        _manifest(
            "Deployment",
            "apps/v1",
            "p-sender",
            spec={
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "sender", "image": "mailtrain-sender"}]},
                },
            },
        ),
    ]
    for child in children:
        _succeeds(kubectl(*apply, manifest=child))  # an apply that creates
        child["metadata"]["labels"] = {"changed": "yes"}
        _succeeds(kubectl(*apply, manifest=child))  # and one that patches
    secret = _manifest("Secret", "v1", "p-sender-redis", stringData={"password": "generated"})
    _succeeds(kubectl("create", "-f", "-", manifest=secret))
    _succeeds(kubectl("get", "secret", "smtp-auth"))  # a Secret a spec names, by name
    listing, deleting = ("get", "secrets"), ("delete", "secret", "smtp-auth")
    refusals = [listing, deleting, ("label", "secret", "smtp-auth", "a=b")]
    for refused in refusals:
        ok, output = kubectl(*refused)
        assert not ok and "Forbidden" in output, refused
    _succeeds(kubectl("get", "endpointslices.discovery.k8s.io"))
    # The status as the operator writes it: a PATCH of the subresource, without the GET that kubectl's
    # `patch --subresource=status` makes first (and the operator has no use for).
    kubeconfig = str(kubeconfig_of(release, crds))
    identity = config.new_client_from_config(kubeconfig)  # type: ignore[no-untyped-call]
    client.CustomObjectsApi(identity).patch_namespaced_custom_object_status(
        "mailtrain.dev", "v1alpha1", namespace, "mailcampaigns", "news", {"status": {"total": 1}}
    )
    patched = crds.api.get(f"/apis/mailtrain.dev/v1alpha1/namespaces/{namespace}/mailcampaigns/news")
    assert patched is not None and patched["status"]["total"] == 1
    event = _manifest(
        "Event",
        "v1",
        "mailtrain-test",
        involvedObject={
            "apiVersion": examples.API_VERSION,
            "kind": "MailCampaign",
            "name": "news",
            "namespace": namespace,
        },
        reason="Started",
        message="sending",
        type="Normal",
    )
    _succeeds(kubectl("create", "-f", "-", manifest=event))
    _succeeds(kubectl("delete", "deployment", "p-sender"))


def test_the_operator_runs_as_a_pod_under_the_charts_service_account_without_a_refusal(
    chart: Callable[..., Installed], local_node: LocalNode, namespace: str
) -> None:
    release = chart(namespace, watchNamespaces=[namespace])
    kube = release.plane.api
    port = net.free_port()
    container = {
        "name": "operator",
        "image": IMAGE,
        "env": [
            pod_ip_env(),
            {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "MAILTRAIN_OPERATOR_NAMESPACES", "value": namespace},
            {"name": "MAILTRAIN_OPERATOR_PEERING_LIFETIME", "value": "10"},
            {"name": "MAILTRAIN_OPERATOR_CREATE_PEERING", "value": "false"},  # as the chart's Deployment
            {"name": "MAILTRAIN_OPERATOR_HEALTH_LISTEN", "value": f"$(POD_IP):{port}"},
            {"name": "MAILTRAIN_OPERATOR_METRICS_LISTEN", "value": f"$(POD_IP):{net.free_port()}"},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 1},
    }
    body = pod("operator", [container], serviceAccountName=release.service_account)
    kube.create(f"/api/v1/namespaces/{namespace}/pods", body)

    def log() -> str:
        return local_node.container_log(namespace, "operator", "operator")

    try:
        eventually(lambda: ready_pod(kube, namespace, "operator"), timeout=60, what="operator ready")
        eventually(lambda: RESUMED in log(), timeout=30, what="the operator active (peering resumed)")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log()[-3000:]}") from exc
    peering = kube.get(f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{PEERING}") or {}
    assert "operator" in (peering.get("status") or {})  # its identity is the pod's name
    # The chart's object, which the operator found: it may not create one, and did not try.
    assert peering["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    assert "created the peering object" not in log()
    for refusal in ("403", "Forbidden", "forbidden", "Not enough permissions"):
        assert refusal not in log(), log()
