"""The sender image runs on the node as it would in a pod: its entrypoint and user from the image table, its
sender.toml from a ConfigMap, Redis from another pod's IP, and a ConfigMap edit reloaded without a restart
(the sender watches its file through the `..data` symlink swap)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from tests.cluster.helpers import container_status, eventually, pod, ready_pod, redis_container
from tests.harness import net
from tests.harness.kubeapi import Json, KubeApi
from tests.harness.local_node import LocalNode


def _sender_toml(redis_ip: str, port: int, max_parallel: int) -> str:
    return (
        f'[redis]\nurl = "redis://{redis_ip}:6379/0"\n'
        f"[queue]\nmaxParallelCampaigns = {max_parallel}\n"
        '[smtp]\nhost = "127.0.0.1"\nport = 2525\nsecurity = "none"\n'
        f'[worker]\npool = "image-test"\nlisten = "0.0.0.0:{port}"\n'
    )


def _get(kube: KubeApi, namespace: str, name: str) -> Json:
    return kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}") or {}


def _reloads(address: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return "".join(
        line for line in text.splitlines() if line.startswith("mailtrain_sender_config_reloads_total")
    )


def test_sender_image_runs_from_a_configmap_and_reloads_an_edit(
    kube: KubeApi, namespace: str, local_node: LocalNode
) -> None:
    kube.create(f"/api/v1/namespaces/{namespace}/pods", pod("redis", [redis_container()]))
    redis_pod = eventually(lambda: ready_pod(kube, namespace, "redis"), timeout=30, what="redis")
    redis_ip, port = redis_pod["status"]["podIP"], net.free_port()
    config = {"metadata": {"name": "sender"}, "data": {"sender.toml": _sender_toml(redis_ip, port, 1)}}
    kube.create(f"/api/v1/namespaces/{namespace}/configmaps", config)
    sender = {
        "name": "sender",
        "image": "ghcr.io/mailtrain-operator/sender:0.1.0",
        "volumeMounts": [{"name": "config", "mountPath": "/etc/mailtrain"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": port}, "periodSeconds": 1},
    }
    volumes = [{"name": "config", "configMap": {"name": "sender"}}]
    kube.create(f"/api/v1/namespaces/{namespace}/pods", pod("sender", [sender], volumes=volumes))
    running = eventually(lambda: ready_pod(kube, namespace, "sender"), timeout=60, what="sender ready")
    address = running["status"]["podIP"]
    uid = running["metadata"]["uid"]
    status_lines = (
        Path(f"/proc/{local_node.container_pids()[(uid, 'sender')]}/status").read_text().splitlines()
    )
    assert next(line for line in status_lines if line.startswith("Uid:")).split()[1] == "10001"  # image USER
    assert 'result="applied"' not in _reloads(address, port)

    edited = {"data": {"sender.toml": _sender_toml(redis_ip, port, 3)}}
    kube.patch(f"/api/v1/namespaces/{namespace}/configmaps/sender", edited)
    eventually(
        lambda: 'result="applied"} 1.0' in _reloads(address, port),
        timeout=15,
        what="the sender reloaded the edit",
    )
    assert container_status(_get(kube, namespace, "sender"), "sender")["restartCount"] == 0
