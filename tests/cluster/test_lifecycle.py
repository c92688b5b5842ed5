"""Pods end the way they end on a real cluster: garbage collection, namespace deletion, preStop then
SIGTERM, restarts with back-off, a clear reason for an image that cannot run here, and an agent restart
that keeps the pods' processes."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.cluster.helpers import (
    container_status,
    deployment,
    deployment_ready,
    eventually,
    pod,
    pods_of,
    program,
    ready,
    redis_container,
)
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json, KubeApi
from tests.harness.local_node import FILES_IN_TMP_IMAGE, LocalNode
from tests.harness.net import process_running


def _pod(kube: KubeApi, namespace: str, name: str) -> Json:
    return kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}") or {}


def test_deleting_a_deployment_collects_its_replicaset_pods_and_processes(
    kube: KubeApi, namespace: str, local_node: LocalNode
) -> None:
    kube.create(
        f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("redis", 2, [redis_container()])
    )
    eventually(lambda: deployment_ready(kube, namespace, "redis", 2), timeout=30, what="2/2 ready")
    uids = {p["metadata"]["uid"] for p in pods_of(kube, namespace, "redis")}
    pids = [pid for (uid, _), pid in local_node.container_pids().items() if uid in uids]
    assert len(pids) == 2

    kube.delete(f"/apis/apps/v1/namespaces/{namespace}/deployments/redis")  # background propagation
    eventually(
        lambda: not kube.list(f"/apis/apps/v1/namespaces/{namespace}/replicasets"),
        timeout=30,
        what="the garbage collector deletes the ReplicaSet",
    )
    eventually(lambda: not pods_of(kube, namespace, "redis"), timeout=30, what="and the pods")
    eventually(
        lambda: not any(process_running(pid) for pid in pids), timeout=10, what="and their processes exit"
    )


def test_deleting_a_namespace_with_running_pods_completes(
    controlplane: ControlPlane, kube: KubeApi, local_node: LocalNode
) -> None:
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    eventually(lambda: kube.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"), timeout=30, what="SA")
    kube.create(
        f"/apis/apps/v1/namespaces/{name}/deployments", deployment("app", 2, [program("app", "signals.py")])
    )
    eventually(lambda: deployment_ready(kube, name, "app", 2), timeout=30, what="2/2 ready")
    kube.delete(f"/api/v1/namespaces/{name}")
    eventually(lambda: kube.get(f"/api/v1/namespaces/{name}") is None, timeout=60, what="namespace gone")
    for app_pod in local_node.logs_dir.glob(f"{name}_app-*"):
        assert (app_pod / "app" / "0.log").read_text().splitlines() == ["started", "SIGTERM"]


def test_pre_stop_hook_runs_before_sigterm(kube: KubeApi, namespace: str, local_node: LocalNode) -> None:
    hook = {"exec": {"command": ["/bin/sh", "-c", "kill -USR1 $(cat /tmp/app/pid)"]}}
    container = program(
        "app",
        "signals.py",
        "/tmp/app/pid",
        lifecycle={"preStop": hook},
        volumeMounts=[{"name": "run", "mountPath": "/tmp/app"}],
    )
    kube.create(
        f"/api/v1/namespaces/{namespace}/pods",
        pod("hooked", [container], volumes=[{"name": "run", "emptyDir": {}}]),
    )
    eventually(lambda: ready(_pod(kube, namespace, "hooked")), timeout=30, what="ready")
    eventually(
        lambda: "started" in local_node.container_log(namespace, "hooked", "app"), timeout=10, what="up"
    )
    kube.delete(f"/api/v1/namespaces/{namespace}/pods/hooked")
    eventually(lambda: not _pod(kube, namespace, "hooked"), timeout=30, what="the pod object removed")
    assert local_node.container_log(namespace, "hooked", "app").splitlines() == [
        "started",
        "SIGUSR1",
        "SIGTERM",
    ]


def test_a_crashing_container_backs_off(kube: KubeApi, namespace: str) -> None:
    kube.create(
        f"/api/v1/namespaces/{namespace}/pods", pod("crasher", [program("app", "exit_after.py", "3", "0")])
    )

    def backing_off() -> Json | None:
        status = container_status(_pod(kube, namespace, "crasher"), "app")
        waiting = status.get("state", {}).get("waiting", {})
        return status if waiting.get("reason") == "CrashLoopBackOff" else None

    status = eventually(backing_off, timeout=30, what="CrashLoopBackOff")
    assert status["restartCount"] == 1  # the first restart is immediate, the second waits 10 s
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert "back-off 10s" in status["state"]["waiting"]["message"]
    assert _pod(kube, namespace, "crasher")["status"]["phase"] == "Running"


def test_an_image_not_in_the_table_waits_with_a_reason_and_the_agent_carries_on(
    kube: KubeApi, namespace: str, local_node: LocalNode
) -> None:
    kube.create(
        f"/api/v1/namespaces/{namespace}/pods", pod("unknown", [{"name": "app", "image": "nginx:1.27"}])
    )

    def waiting() -> Json | None:
        state = container_status(_pod(kube, namespace, "unknown"), "app").get("state", {})
        return (
            state.get("waiting")
            if state.get("waiting", {}).get("reason") == "ImageNotRunnableLocally"
            else None
        )

    reason = eventually(waiting, timeout=30, what="ImageNotRunnableLocally")
    assert 'image "nginx:1.27" cannot be pulled here' in reason["message"]
    assert "docker.io/library/redis" in reason["message"]  # it says what can run
    assert _pod(kube, namespace, "unknown")["status"]["phase"] == "Pending"
    assert local_node.process is not None and local_node.process.poll() is None

    kube.create(f"/api/v1/namespaces/{namespace}/pods", pod("known", [redis_container()]))
    eventually(lambda: ready(_pod(kube, namespace, "known")), timeout=30, what="the next pod still runs")
    kube.delete(f"/api/v1/namespaces/{namespace}/pods/unknown")
    eventually(lambda: not _pod(kube, namespace, "unknown"), timeout=30, what="a waiting pod deletes too")


def test_an_images_files_under_tmp_stay_visible_below_the_containers_private_tmp(
    kube: KubeApi, namespace: str, local_node: LocalNode
) -> None:
    # What a checkout under /tmp needs: its venv is the sender's and the operator's image.
    container: Json = {"name": "main", "image": FILES_IN_TMP_IMAGE, "args": ["hello"]}
    kube.create(f"/api/v1/namespaces/{namespace}/pods", pod("tmp-files", [container]))
    expected = f"image files in {local_node.image_files}: hello"
    eventually(
        lambda: expected in local_node.container_log(namespace, "tmp-files", "main"),
        timeout=30,
        what=f"{expected!r} in the container's log",
    )
    # Its /tmp is still its own: the image's directory is there, and nothing else of the node's /tmp.
    uid = _pod(kube, namespace, "tmp-files")["metadata"]["uid"]
    [pid] = [pid for (pod_uid, name), pid in local_node.container_pids().items() if pod_uid == uid]
    inside = Path(f"/proc/{pid}/root")
    assert (inside / local_node.image_files.relative_to("/") / "run.sh").is_file()
    assert not (inside / "tmp/mailtrain-node-agent/ranges").exists()  # the node agent's, in the node's /tmp
    assert Path("/tmp/mailtrain-node-agent/ranges").is_dir()


def test_a_restarted_agent_adopts_running_containers_and_sweeps_strays(
    kube: KubeApi, namespace: str, local_node: LocalNode
) -> None:
    for name in ("kept", "stray"):
        kube.create(f"/api/v1/namespaces/{namespace}/pods", pod(name, [redis_container()]))
    for name in ("kept", "stray"):
        eventually(lambda n=name: ready(_pod(kube, namespace, n)), timeout=30, what=f"{name} ready")  # type: ignore[misc]
    kept, stray = _pod(kube, namespace, "kept"), _pod(kube, namespace, "stray")
    pids = local_node.container_pids()
    kept_pid, stray_pid = pids[(kept["metadata"]["uid"], "redis")], pids[(stray["metadata"]["uid"], "redis")]

    local_node.kill()
    assert process_running(kept_pid) and process_running(
        stray_pid
    )  # containers outlive the agent, as under a kubelet
    kube.delete(f"/api/v1/namespaces/{namespace}/pods/stray", gracePeriodSeconds=0)  # gone while no agent
    local_node.start()

    eventually(lambda: not process_running(stray_pid), timeout=30, what="the stray pod's process is killed")
    after = _pod(kube, namespace, "kept")
    assert (
        process_running(kept_pid)
        and local_node.container_pids()[(kept["metadata"]["uid"], "redis")] == kept_pid
    )
    status = container_status(after, "redis")
    assert status["restartCount"] == 0 and ready(after)
    assert after["status"]["podIP"] == kept["status"]["podIP"]
    kube.delete(f"/api/v1/namespaces/{namespace}/pods/kept")
    eventually(lambda: not _pod(kube, namespace, "kept"), timeout=30, what="the adopted pod deletes")
    assert not process_running(kept_pid)
