"""Service names in pods, as cluster DNS would give them: the node agent's /etc/hosts (see
tests/harness/node_agent/hosts.py and services.py).

A redis StatefulSet behind a headless Service, two ClusterIP Services over it (one whose port is its
targetPort, one that maps 80 to 6379), and two clients that keep looking names up and pinging: one in the
same namespace with hostAliases, one in another namespace. Then the redis pod is deleted, comes back with a
new address, and the clients, never restarted, find it again.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.cluster.helpers import container_status, eventually, pod, program, ready_pod, redis_container
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json, KubeApi
from tests.harness.local_node import LocalNode
from tests.harness.node_agent.hosts import FILE_NAME

ALIASES = [{"ip": "10.1.2.3", "hostnames": ["alias.example", "other.example"]}]


@pytest.fixture
def other_namespace(controlplane: ControlPlane) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    controlplane.kubectl("create", "namespace", name)
    eventually(
        lambda: controlplane.api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        timeout=30,
        what=f"the default ServiceAccount of {name}",
    )
    yield name
    controlplane.kubectl("delete", "namespace", name, "--wait=false")


def _service(name: str, port: int, headless: bool = False) -> Json:
    spec: Json = {
        "selector": {"app": "cache"},
        "ports": [{"name": "redis", "port": port, "targetPort": 6379}],
    }
    if headless:
        spec["clusterIP"] = "None"
    return {"metadata": {"name": name}, "spec": spec}


def _stateful_set() -> Json:
    labels = {"app": "cache"}
    template = {
        "metadata": {"labels": labels},
        "spec": {"containers": [redis_container()], "terminationGracePeriodSeconds": 5},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "cache"},
        "spec": {
            "serviceName": "cache",
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": template,
        },
    }


def _last_round(node: LocalNode, namespace: str, name: str) -> Json:
    lines = [line for line in node.container_log(namespace, name, name).splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def _rounds_agree(node: LocalNode, namespace: str, name: str, expected: Json) -> Json | None:
    """The client's last complete round, if it resolved and pinged every name as expected."""
    last = _last_round(node, namespace, name)
    seen = {"resolved": last.get("resolved"), "pong": last.get("pong")}
    return last if seen == expected else None


def _expectations(ns: str, address: str) -> tuple[Json, Json]:
    same = {
        "resolved": {
            "cache": [address],
            f"cache.{ns}": [address],
            f"cache.{ns}.svc": [address],
            f"cache.{ns}.svc.cluster.local": [address],
            "cache-0.cache": [address],
            f"cache-0.cache.{ns}.svc.cluster.local": [address],
            "cache-ip": [address],
            "cache-80": [],  # a ClusterIP Service whose port is not its targetPort has no name here
            "alias.example": ["10.1.2.3"],
            "other.example": ["10.1.2.3"],
        },
        "pong": {"cache": True, "cache-ip": True},
    }
    other = {
        "resolved": {f"cache.{ns}.svc": [address], f"cache.{ns}.svc.cluster.local": [address], "cache": []},
        "pong": {f"cache.{ns}.svc": True},
    }
    return same, other


def test_pods_resolve_service_names_and_follow_a_pod_that_moves(
    kube: KubeApi, local_node: LocalNode, namespace: str, other_namespace: str
) -> None:
    ns, started = namespace, time.monotonic()
    for service in (
        _service("cache", 6379, headless=True),
        _service("cache-ip", 6379),
        _service("cache-80", 80),
    ):
        kube.create(f"/api/v1/namespaces/{ns}/services", service)
    kube.create(f"/apis/apps/v1/namespaces/{ns}/statefulsets", _stateful_set())
    same, other = _expectations(ns, "")  # only the names, for now
    client = program("client", "resolve.py", "--ping", "cache", "--ping", "cache-ip", *same["resolved"])
    kube.create(f"/api/v1/namespaces/{ns}/pods", pod("client", [client], hostAliases=ALIASES))
    remote = program("remote", "resolve.py", "--ping", f"cache.{ns}.svc", *other["resolved"])
    kube.create(f"/api/v1/namespaces/{other_namespace}/pods", pod("remote", [remote]))

    first = eventually(lambda: ready_pod(kube, ns, "cache-0"), timeout=30, what="cache-0 ready")
    address = first["status"]["podIP"]
    same, other = _expectations(ns, address)
    eventually(
        lambda: _rounds_agree(local_node, ns, "client", same), timeout=20, what=f"client sees {address}"
    )
    eventually(
        lambda: _rounds_agree(local_node, other_namespace, "remote", other),
        timeout=20,
        what=f"the other namespace's client sees {address}",
    )

    client_pod = kube.get(f"/api/v1/namespaces/{ns}/pods/client")
    assert client_pod is not None
    hosts = (local_node.root / "pods" / client_pod["metadata"]["uid"] / FILE_NAME).read_text()
    assert "127.0.0.1\tlocalhost\n" in hosts
    assert f"{client_pod['status']['podIP']}\tclient\n" in hosts  # the pod's own name, as the kubelet's
    assert "# Entries added by HostAliases.\n10.1.2.3\talias.example\n10.1.2.3\tother.example\n" in hosts
    warning = f"service {ns}/cache-80: ports 80 → 6379 differ from their targetPorts"
    assert local_node.log.read_text().count(warning) == 1
    pids = _client_pids(local_node, kube, ns, other_namespace)

    kube.delete(f"/api/v1/namespaces/{ns}/pods/cache-0")
    moved = eventually(
        lambda: (
            (p := ready_pod(kube, ns, "cache-0")) and p["metadata"]["uid"] != first["metadata"]["uid"] and p
        ),
        timeout=30,
        what="cache-0 back, a new pod",
    )
    new_address = moved["status"]["podIP"]
    assert new_address != address  # the agent hands out addresses in turn
    same, other = _expectations(ns, new_address)
    eventually(
        lambda: _rounds_agree(local_node, ns, "client", same), timeout=20, what=f"client sees {new_address}"
    )
    eventually(
        lambda: _rounds_agree(local_node, other_namespace, "remote", other),
        timeout=20,
        what=f"the other namespace's client sees {new_address}",
    )
    assert _client_pids(local_node, kube, ns, other_namespace) == pids  # the same processes, no restart
    assert local_node.log.read_text().count(warning) == 1  # said once, not on every change
    print(f"\nservice names: {time.monotonic() - started:.1f}s")


def _client_pids(node: LocalNode, kube: KubeApi, ns: str, other_ns: str) -> list[int]:
    pids = []
    for namespace, name in ((ns, "client"), (other_ns, "remote")):
        found = kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        assert found is not None
        assert container_status(found, name)["restartCount"] == 0
        pids.append(node.container_pids()[(found["metadata"]["uid"], name)])
    return pids
