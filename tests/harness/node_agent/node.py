"""The Node object: registration, a Ready status with this machine's capacity, and the node Lease.

The node-lifecycle controller judges a node by its Lease in kube-node-lease: renewed every 10 s with a
40 s duration (the kubelet's defaults), the node stays Ready and its pods are never evicted. The status
itself is posted at registration and then every minute.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
from pathlib import Path
from typing import Any

from tests.harness.node_agent.events import now_micro, now_rfc3339
from tests.harness.node_agent.kube import KUBE_ERRORS, STRATEGIC_MERGE_PATCH, ApiError, KubeClient

log = logging.getLogger(__name__)

LEASE_DURATION = 40
LEASE_RENEW_INTERVAL = 10.0
STATUS_INTERVAL = 60.0
MAX_PODS = 110  # the kubelet's default
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def machine_capacity() -> dict[str, str]:
    meminfo = dict(line.split(":", 1) for line in _read("/proc/meminfo").splitlines() if ":" in line)
    memory_kib = int(meminfo.get("MemTotal", "0 kB").split()[0])
    disk = os.statvfs("/")
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{memory_kib}Ki",
        "pods": str(MAX_PODS),
        "ephemeral-storage": str(disk.f_blocks * disk.f_frsize),
    }


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


class NodeRegistration:
    def __init__(
        self, kube: KubeClient, name: str, host_ip: str, pod_cidr: str, kubelet_port: int, version: str
    ) -> None:
        self._kube = kube
        self.name = name
        self._host_ip = host_ip
        self._pod_cidr = pod_cidr
        self._kubelet_port = kubelet_port
        self._version = version
        self.capacity = machine_capacity()
        self._since = now_rfc3339()  # the conditions have held since the agent started

    def _node(self) -> dict[str, Any]:
        arch = _ARCH.get(platform.machine(), platform.machine())
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"podCIDR": self._pod_cidr, "podCIDRs": [self._pod_cidr]},
        }

    def _status(self) -> dict[str, Any]:
        now = now_rfc3339()

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self._since,
            }

        return {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "node agent is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self._host_ip},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self._kubelet_port}},
            "nodeInfo": {
                "machineID": _read("/etc/machine-id"),
                "systemUUID": _read("/sys/class/dmi/id/product_uuid"),
                "bootID": _read("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": platform.release(),
                "osImage": _os_image(),
                "containerRuntimeVersion": "local-process://1.0",
                "kubeletVersion": self._version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": self._node()["metadata"]["labels"]["kubernetes.io/arch"],
            },
        }

    async def register(self) -> None:
        try:
            await self._kube.create("/api/v1/nodes", self._node())
        except ApiError as exc:
            if exc.status != 409:  # a node of this name from before an agent restart is ours
                raise
        await self.post_status()
        await self.renew_lease()

    async def post_status(self) -> None:
        # Strategic merge: conditions merge by type, so the node-lifecycle controller's own stay.
        await self._kube.patch(
            f"/api/v1/nodes/{self.name}/status", {"status": self._status()}, STRATEGIC_MERGE_PATCH
        )

    async def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_DURATION, "renewTime": now_micro()}
        try:
            await self._kube.patch(path, {"spec": spec})
        except ApiError as exc:
            if exc.status != 404:
                raise
            node = await self._kube.get(f"/api/v1/nodes/{self.name}")
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node["metadata"]["uid"]}
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease", "ownerReferences": [owner]},
                "spec": spec,
            }
            await self._kube.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)

    async def heartbeat(self) -> None:
        """Renews the lease and posts the status on their intervals, for as long as the agent runs."""
        since_status = 0.0
        while True:
            await asyncio.sleep(LEASE_RENEW_INTERVAL)
            since_status += LEASE_RENEW_INTERVAL
            try:
                await self.renew_lease()
                if since_status >= STATUS_INTERVAL:
                    await self.post_status()
                    since_status = 0.0
            except KUBE_ERRORS as exc:  # the apiserver may be restarting: try again next round
                log.warning("node heartbeat failed: %s", exc)
