"""What a program sees of its pod: mounted ConfigMaps that follow edits, Secrets in its environment, the
downward API, and $(VAR) expansion, each read by the running process itself."""

from __future__ import annotations

import base64
import time

from tests.cluster.helpers import eventually, pod, program, ready
from tests.harness.kubeapi import Json, KubeApi
from tests.harness.local_node import LocalNode


def _running_pod(kube: KubeApi, namespace: str, body: Json) -> Json:
    kube.create(f"/api/v1/namespaces/{namespace}/pods", body)
    name = body["metadata"]["name"]

    def running() -> Json | None:
        found = kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        return found if found and ready(found) else None

    return eventually(running, timeout=30, what=f"pod {name} ready")


def test_configmap_edit_reaches_the_running_process_and_secret_reaches_its_env(
    kube: KubeApi, namespace: str, local_node: LocalNode
) -> None:
    kube.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": "settings"}, "data": {"sender.toml": "rate = 1\n"}},
    )
    secret = {"password": base64.b64encode(b"s3cret").decode(), "user": base64.b64encode(b"mailer").decode()}
    kube.create(f"/api/v1/namespaces/{namespace}/secrets", {"metadata": {"name": "smtp"}, "data": secret})
    container = program(
        "watcher",
        "watch_file.py",
        "/etc/mailtrain/sender.toml",
        "SMTP_PASSWORD",
        "SMTP_user",
        "GREETING",
        env=[
            {"name": "SMTP_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "smtp", "key": "password"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "GREETING", "value": "hello $(NAME), $$(NAME) stays"},
        ],
        envFrom=[{"secretRef": {"name": "smtp"}, "prefix": "SMTP_"}],
        volumeMounts=[{"name": "config", "mountPath": "/etc/mailtrain"}],
    )
    body = pod("watcher", [container], volumes=[{"name": "config", "configMap": {"name": "settings"}}])
    _running_pod(kube, namespace, body)

    def log() -> str:
        return local_node.container_log(namespace, "watcher", "watcher")

    eventually(lambda: "content 'rate = 1\\n'" in log(), timeout=10, what="the file as first mounted")
    assert "env SMTP_PASSWORD=s3cret" in log()
    assert "env SMTP_user=mailer" in log()
    assert "env GREETING=hello watcher, $(NAME) stays" in log()

    edited = time.monotonic()
    kube.patch(f"/api/v1/namespaces/{namespace}/configmaps/settings", {"data": {"sender.toml": "rate = 2\n"}})
    eventually(lambda: "content 'rate = 2\\n'" in log(), timeout=10, what="the edit, seen by the process")
    assert time.monotonic() - edited < 10


def test_downward_api_volume_and_named_ports(kube: KubeApi, namespace: str, local_node: LocalNode) -> None:
    container = program(
        "watcher",
        "watch_file.py",
        "/etc/podinfo/labels",
        "POD_IP",
        "NODE",
        env=[
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ],
        volumeMounts=[{"name": "podinfo", "mountPath": "/etc/podinfo"}],
    )
    volume = {
        "name": "podinfo",
        "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]},
    }
    running = _running_pod(kube, namespace, pod("info", [container], volumes=[volume]))

    def log() -> str:
        return local_node.container_log(namespace, "info", "watcher")

    eventually(lambda: 'app="info"' in log(), timeout=10, what="the pod's labels in the downward API file")
    assert f"env POD_IP={running['status']['podIP']}" in log()
    assert f"env NODE={local_node.name}" in log()
    kube.patch(f"/api/v1/namespaces/{namespace}/pods/info", {"metadata": {"labels": {"tier": "mail"}}})
    eventually(lambda: "tier=" in log(), timeout=10, what="a new label in the downward API file")
