"""SenderPool → Deployment, ConfigMap, Service, end to end: the operator as a process, sender pods on the
local node (in a namespace that enforces Pod Security "restricted"), the test's real redis-server.

Figures (printed with `-s`): processes→replicas and drift repair times, each from the moment the
apiserver accepted the change to the watch event that shows the Deployment as the pool specifies it.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable

import redis

from mailtrain_operator.pool_redis import redis_pool_name
from mailtrain_operator.pools.status_loop import POOL_STATUS_INTERVAL
from mailtrain_sender.layout import PoolKeys
from tests.cluster.helpers import eventually
from tests.harness import net
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json
from tests.harness.local_node import LocalNode
from tests.harness.operator_process import OperatorProcess
from tests.operator.pool_support import (
    condition,
    config_map_path,
    create_pool,
    deployment_path,
    existing,
    patch_pool,
    pods,
    pool_path,
    ready_pool,
    seconds_until,
    sender_pool,
    service_path,
    unchanged_for,
)

DEADLINE = 2.0  # issue 8: a change of queue.processes reaches the Deployment within 2 s


def _replicas_are(count: int) -> Callable[[Json], bool]:
    return lambda deployment: bool(deployment["spec"]["replicas"] == count)


def _owned_by(obj: Json, pool: Json) -> bool:
    [owner] = obj["metadata"]["ownerReferences"]
    return (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "SenderPool",
        pool["metadata"]["name"],
        pool["metadata"]["uid"],
        True,
    )


def test_a_pool_gets_its_children_ready_pods_and_a_status(
    operator: OperatorProcess, controlplane: ControlPlane, pool_namespace: str, redis_url: str
) -> None:
    kube, ns = controlplane.api, pool_namespace
    spec = {"queue": {"processes": 2, "maxParallelCampaigns": 2}, "redis": {"url": redis_url}}
    created = create_pool(kube, ns, sender_pool("news", net.free_port(), **spec))
    pool = ready_pool(kube, ns, "news", 2)

    deployment = kube.get(deployment_path(ns, "news"))
    config_map = kube.get(config_map_path(ns, "news"))
    service = kube.get(service_path(ns, "news"))
    assert deployment and config_map and service
    for child in (deployment, config_map, service):
        assert _owned_by(child, created), child["metadata"]
        managers = {entry["manager"] for entry in child["metadata"]["managedFields"]}
        assert "mailtrain-operator" in managers
    assert deployment["spec"]["replicas"] == 2
    settings = tomllib.loads(config_map["data"]["sender.toml"])
    assert settings["redis"]["url"] == redis_url and settings["worker"]["pool"] == f"{ns}/news"
    assert settings["queue"] == {"maxParallelCampaigns": 2}
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    status = pool["status"]
    assert status["replicas"] == status["readyReplicas"] == 2
    assert status["activeCampaigns"] == 0
    assert status["selector"] == "app.kubernetes.io/name=mailtrain-sender,mailtrain.dev/pool=news"
    assert status["observedGeneration"] == pool["metadata"]["generation"]
    assert condition(pool, "Ready")["reason"] == "AllReplicasReady"
    degraded = condition(pool, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("False", "AsExpected")
    # Each sender joined the pool in Redis under its pod's name.
    with redis.Redis.from_url(redis_url) as client:
        workers = {w.decode() for w in client.zrange(PoolKeys(redis_pool_name(ns, "news")).workers, 0, -1)}
    assert workers == {p["metadata"]["name"] for p in pods(kube, ns, "news")}

    # Status is written only when it changes: over two status rounds, the pool sees no write at all.
    version = pool["metadata"]["resourceVersion"]
    writes = unchanged_for(kube, pool_path(ns, "news"), version, seconds=2 * POOL_STATUS_INTERVAL + 1)
    assert writes == [], writes
    assert "Traceback" not in operator.log_text()


def test_processes_and_kubectl_scale_reach_the_deployment_within_2s_and_drift_is_put_back(
    operator: OperatorProcess, controlplane: ControlPlane, pool_namespace: str, redis_url: str
) -> None:
    kube, ns = controlplane.api, pool_namespace
    create_pool(kube, ns, sender_pool("scaled", net.free_port(), redis={"url": redis_url}))
    ready_pool(kube, ns, "scaled", 1)
    path = deployment_path(ns, "scaled")

    def changed_within_deadline(change: Callable[[], object], replicas: int) -> float:
        version = existing(kube, path)["metadata"]["resourceVersion"]
        change()  # the clock starts once the apiserver accepted the change
        took = seconds_until(kube, path, version, _replicas_are(replicas), timeout=DEADLINE)
        assert took is not None, f"replicas not {replicas} within {DEADLINE}s:\n{net.log_tail(operator.log)}"
        return took

    took = changed_within_deadline(lambda: patch_pool(kube, ns, "scaled", {"queue": {"processes": 3}}), 3)
    print(f"\nFIGURE queue.processes 1 -> 3 reached the Deployment in {took:.3f} s")
    took = changed_within_deadline(
        lambda: controlplane.kubectl("scale", "-n", ns, "sp/scaled", "--replicas=2"), 2
    )
    print(f"FIGURE kubectl scale sp --replicas=2 reached the Deployment in {took:.3f} s")
    pool = ready_pool(kube, ns, "scaled", 2)
    assert pool["spec"]["queue"]["processes"] == 2
    scale = kube.get(f"{pool_path(ns, 'scaled')}/scale")
    assert scale is not None
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (2, 2)
    assert scale["status"]["selector"] == "app.kubernetes.io/name=mailtrain-sender,mailtrain.dev/pool=scaled"

    # A hand edit of the Deployment's replicas (what `kubectl scale deploy` does) is put back.
    version = existing(kube, path)["metadata"]["resourceVersion"]
    edited_at = time.monotonic()
    kube.patch(f"{path}/scale", {"spec": {"replicas": 5}})
    edited = seconds_until(kube, path, version, _replicas_are(5), timeout=DEADLINE)
    repaired = seconds_until(kube, path, version, _replicas_are(2), timeout=DEADLINE)
    assert edited is not None and repaired is not None, net.log_tail(operator.log)
    took = time.monotonic() - edited_at
    assert took < DEADLINE
    print(f"FIGURE a hand edit of the Deployment's replicas was put back in {took:.3f} s")
    # The operator logs it once the apiserver answered its apply, which may be after the watch saw it.
    eventually(
        lambda: "put back as the pool specifies it" in operator.log_text(), timeout=10, what="the log line"
    )
    ready_pool(kube, ns, "scaled", 2)

    # So is a deleted Deployment.
    uid = existing(kube, path)["metadata"]["uid"]
    kube.delete(path)
    eventually(
        lambda: (kube.get(path) or {}).get("metadata", {}).get("uid") not in (None, uid),
        timeout=10,
        what="the Deployment created again",
    )
    ready_pool(kube, ns, "scaled", 2)


def _sender_log(node: LocalNode, namespace: str, pod: Json) -> str:
    return node.container_log(namespace, pod["metadata"]["name"], "sender")


def test_a_limit_change_reaches_running_senders_without_a_restart(
    operator: OperatorProcess,
    controlplane: ControlPlane,
    local_node: LocalNode,
    pool_namespace: str,
    redis_url: str,
) -> None:
    kube, ns = controlplane.api, pool_namespace
    smtp = net.free_port()
    create_pool(kube, ns, sender_pool("limits", smtp, queue={"processes": 2}, redis={"url": redis_url}))
    ready_pool(kube, ns, "limits", 2)
    before = {p["metadata"]["uid"]: p for p in pods(kube, ns, "limits")}
    template = existing(kube, deployment_path(ns, "limits"))["spec"]["template"]

    patch_pool(
        kube,
        ns,
        "limits",
        {
            "queue": {"processes": 2, "maxParallelCampaigns": 3},
            "smtp": {"host": net.LOOPBACK, "port": smtp, "security": "none", "maxConnections": 7},
        },
    )
    caps = PoolKeys(redis_pool_name(ns, "limits")).caps

    def every_sender_has_cap_3() -> bool:
        with redis.Redis.from_url(redis_url) as client:
            values = {k.decode(): v.decode() for k, v in client.hgetall(caps).items()}
        return values == {p["metadata"]["name"]: "3" for p in before.values()}

    eventually(every_sender_has_cap_3, timeout=30, what="maxParallelCampaigns 3 in each sender's heartbeat")
    for pod in before.values():
        log = _sender_log(local_node, ns, pod)
        assert "configuration reloaded: maxParallelCampaigns=3 maxConnections=7" in log, log
    after = pods(kube, ns, "limits")
    assert {p["metadata"]["uid"] for p in after} == set(before)  # the same pods ...
    for pod in after:  # ... never restarted
        assert all(s["restartCount"] == 0 for s in pod["status"]["containerStatuses"])
    # The pod template did not change at all, so the Deployment had no reason to roll.
    assert existing(kube, deployment_path(ns, "limits"))["spec"]["template"] == template


def test_what_changed_while_the_operator_was_down_is_applied_when_it_is_back(
    operator: OperatorProcess, controlplane: ControlPlane, pool_namespace: str, redis_url: str
) -> None:
    kube, ns = controlplane.api, pool_namespace
    create_pool(kube, ns, sender_pool("resumed", net.free_port(), redis={"url": redis_url}))
    ready_pool(kube, ns, "resumed", 1)
    assert operator.stop() == 0
    patched = patch_pool(kube, ns, "resumed", {"queue": {"processes": 2}})
    operator.start()  # kopf resumes every pool: the reconcile and the status loop run again
    pool = ready_pool(kube, ns, "resumed", 2)
    assert pool["status"]["observedGeneration"] == patched["metadata"]["generation"]
    assert existing(kube, deployment_path(ns, "resumed"))["spec"]["replicas"] == 2
