"""`helm install`, `helm upgrade` and `helm uninstall` of the chart on the local cluster, with the
release machinery for real (helm v4, server-side apply): the operator's pods run on the node agent,
talk to the apiserver with their projected ServiceAccount token under the chart's RBAC, and run the
SenderPools of `pools`, whose campaigns reach the test's SMTP sink. An upgrade with changed values
rolls the operator while a campaign is sending, and loses nothing. An uninstall leaves no object and
no process of the release (the CRDs are kept, as documented).

Figures (printed with `-s`): seconds from `helm install` to every operator replica Ready; the objects
the default values render and any warning from the apiserver.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart import helm_release as hr
from tests.cluster.helpers import eventually
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json
from tests.harness.local_node import LocalNode
from tests.harness.operator_process import RESUMED
from tests.harness.smtp_sink import RecordingSink
from tests.operator.pool_support import config_map_path, ready_pool

OPERATOR = "app.kubernetes.io/component=operator"
# A request the apiserver refused (urllib3's debug line ends in the status), or a crash.
REFUSAL = re.compile(r'HTTP/1.1" 40[13] |Forbidden|forbidden|Unauthorized|Traceback')
# What a replica logs when it starts, and when the peering pauses or resumes it.
PEERING = re.compile(r"mailtrain-operator started|Pausing operations|Resuming operations|SIGTERM")


def _operator_pods(plane: ControlPlane, namespace: str) -> list[Json]:
    return plane.api.list(f"/api/v1/namespaces/{namespace}/pods", labelSelector=OPERATOR)


def _operator_logs(plane: ControlPlane, node: LocalNode, namespace: str) -> dict[str, str]:
    names = [p["metadata"]["name"] for p in _operator_pods(plane, namespace)]
    return {name: node.container_log(namespace, name, "operator") for name in names}


def _lines(logs: dict[str, str], pattern: re.Pattern[str]) -> str:
    return "\n".join(
        f"{pod}: {line}" for pod, log in logs.items() for line in log.splitlines() if pattern.search(line)
    )


def _one_active(plane: ControlPlane, node: LocalNode, namespace: str) -> None:
    """Exactly one replica resumed operations, and no replica was refused anything. Each message
    quotes the lines that matter, whole: the peering decisions of every replica, or the refusals."""

    def active() -> dict[str, str] | None:
        found = _operator_logs(plane, node, namespace)
        return found if any(RESUMED in log for log in found.values()) else None

    logs = eventually(active, timeout=60, what="one operator replica active")
    resumed = [pod for pod, log in logs.items() if RESUMED in log]
    assert len(resumed) == 1, f"resumed: {resumed}\n{_lines(logs, PEERING)}"
    refused = _lines(logs, REFUSAL)
    assert not refused, refused


def _until_empty(found: Callable[[], list[Any]], *, timeout: float, what: str) -> None:
    seen: list[Any] = []

    def empty() -> bool:
        seen[:] = found()
        return not seen

    try:
        eventually(empty, timeout=timeout, what=what, interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still there: {seen}") from None


def _uninstalled(plane: ControlPlane, node: LocalNode, release: hr.Release, pod_uids: set[str]) -> None:
    """Nothing of the release is left: no object labelled as its, none in its namespace but the
    test's own Secret, no process of any of its pods (operator and senders) on the node."""
    release.uninstall()
    _until_empty(
        lambda: hr.labelled_anywhere(plane, release.name),
        timeout=60,
        what=f"no object labelled {hr.INSTANCE}={release.name}",
    )
    keep = {("Secret", hr.REDIS_SECRET)}
    _until_empty(
        lambda: hr.left_in(plane, release.namespace, keep), timeout=90, what=f"{release.namespace} empty"
    )
    _until_empty(
        lambda: hr.running_containers(node, pod_uids),
        timeout=60,
        what="no container process of the release's pods",
    )
    assert not release.exists()
    for crd in ("senderpools.mailtrain.dev", "mailcampaigns.mailtrain.dev"):  # documented: kept
        assert plane.api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}") is not None


@pytest.fixture
def releases(
    chart_crds: ControlPlane, restricted_namespaces: Callable[[], str]
) -> Iterator[list[hr.Release]]:
    """The test's releases; one still installed when the test ends (it failed) is uninstalled, its
    campaigns deleted first, before its namespace is deleted. Left behind, it would go on running in a
    namespace being terminated, and the next test's operator of every namespace would take over its
    pools and be refused there ("unable to create new content in namespace ... because it is being
    terminated"): one failure would fail the next test too."""
    made: list[hr.Release] = []
    yield made
    for release in made:
        if release.exists():
            chart_crds.kubectl(
                "delete", "mailcampaigns", "--all", "-n", release.namespace, "--timeout=60s", check=False
            )
            release.uninstall()


def test_install_delivers_an_upgrade_rolls_without_loss_and_uninstall_leaves_nothing(
    chart_crds: ControlPlane,
    local_node: LocalNode,
    restricted_namespaces: Callable[[], str],
    releases: list[hr.Release],
    redis_url: str,
    make_recording_sink: Callable[..., RecordingSink],
    tmp_path: Path,
) -> None:
    plane, ns = chart_crds, restricted_namespaces()
    hr.redis_url_secret(plane, ns, redis_url)
    sink = make_recording_sink(record_raw=False)
    release = hr.Release(plane, f"h{uuid.uuid4().hex[:6]}", ns, tmp_path)
    releases.append(release)
    deployment = f"{release.name}-mailtrain-operator"
    values: dict[str, Any] = {
        "watchNamespaces": [ns],
        "peering": {"lifetime": 10},
        "pools": [hr.pool_value("bulk", sink.port, processes=2, rate=25)],
    }
    started = time.monotonic()
    release.install(values)
    ready_after = hr.seconds_to_ready(plane, ns, deployment, 2, started)
    print(f"\nhelm install -> 2 operator replicas Ready: {ready_after:.1f} s")
    assert not release.warnings, release.warnings
    _one_active(plane, local_node, ns)
    ready_pool(plane.api, ns, "bulk", 2)

    # A campaign of the release's pool reaches the sink, every recipient once.
    hr.create_campaign(plane, ns, "first", "bulk", 100)
    eventually(lambda: hr.completed(plane, ns, "first"), timeout=60, what="first Completed")

    # An upgrade with changed values while the second campaign sends: the operator's pods are
    # replaced (its settings are its environment), the pool's rate changes in place.
    hr.create_campaign(plane, ns, "second", "bulk", 500)
    eventually(
        lambda: sum(r.startswith("second-") for r in sink.recipient_counts()) >= 50,
        timeout=60,
        what="the second campaign sending",
    )
    old = {p["metadata"]["uid"] for p in _operator_pods(plane, ns)}
    values["settings"] = {"progressInterval": 2, "logLevel": "debug"}
    values["pools"] = [hr.pool_value("bulk", sink.port, processes=2, rate=40)]
    release.upgrade(values)
    in_flight = (hr.campaign(plane, ns, "second").get("status") or {}).get("phase")
    eventually(
        lambda: (
            hr.operator_deployment_ready(plane, ns, deployment, 2)
            and not old & {p["metadata"]["uid"] for p in _operator_pods(plane, ns)}
        ),
        timeout=180,
        what="the operator rolled: 2 new replicas ready, the old ones gone",
        interval=0.2,
    )
    _one_active(plane, local_node, ns)
    toml = (plane.api.get(config_map_path(ns, "bulk")) or {}).get("data", {}).get("sender.toml", "")
    assert "messagesPerSecond = 40" in toml, toml
    done = eventually(lambda: hr.completed(plane, ns, "second"), timeout=120, what="second Completed")
    print(f"the second campaign was {in_flight} when the upgrade returned")
    assert done["status"]["sent"] == 500, done["status"]

    counts = sink.recipient_counts()
    expected = {f"{name}-{i}@example.org" for name, n in (("first", 100), ("second", 500)) for i in range(n)}
    assert set(counts) == expected
    assert [r for r, n in counts.items() if n != 1] == []

    # Uninstall, after deleting the campaigns while the operator still runs (docs/chart.md).
    plane.kubectl("delete", "mailcampaigns", "--all", "-n", ns, "--timeout=60s")
    pod_uids = {p["metadata"]["uid"] for p in plane.api.list(f"/api/v1/namespaces/{ns}/pods")}
    assert len(pod_uids) == 4, pod_uids  # two operator replicas, two senders
    _uninstalled(plane, local_node, release, pod_uids)


def test_the_default_values_install_ready_and_uninstall_clean(
    chart_crds: ControlPlane,
    local_node: LocalNode,
    restricted_namespaces: Callable[[], str],
    releases: list[hr.Release],
    tmp_path: Path,
) -> None:
    """The default values, unchanged: an operator of every namespace (ClusterRole, ClusterKopfPeering)."""
    plane, ns = chart_crds, restricted_namespaces()
    release = hr.Release(plane, f"d{uuid.uuid4().hex[:6]}", ns, tmp_path)
    releases.append(release)
    started = time.monotonic()
    release.install({})
    ready_after = hr.seconds_to_ready(plane, ns, f"{release.name}-mailtrain-operator", 2, started)
    objects = Counter(doc["kind"] for doc in release.manifest())
    print(f"\ndefault values: helm install -> 2 operator replicas Ready: {ready_after:.1f} s")
    print(f"default values: {sum(objects.values())} objects {dict(sorted(objects.items()))}")
    print(f"default values: apiserver warnings: {release.warnings or 'none'}")
    assert objects == Counter(
        {
            "ClusterRole": 1,
            "ClusterRoleBinding": 1,
            "ClusterKopfPeering": 1,
            "Deployment": 1,
            "PodDisruptionBudget": 1,
            "Service": 1,
            "ServiceAccount": 1,
        }
    )
    assert not release.warnings, release.warnings
    _one_active(plane, local_node, ns)
    pod_uids = {p["metadata"]["uid"] for p in _operator_pods(plane, ns)}
    _uninstalled(plane, local_node, release, pod_uids)
