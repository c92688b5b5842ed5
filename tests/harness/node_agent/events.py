"""Events about pods, posted as the kubelet posts them (source component "kubelet"), without waiting.

`kubectl describe pod` and `kubectl get events` then tell a person what happened: Started, Killing,
Unhealthy, BackOff, FailedMount, Failed (an image that is not in the table).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from tests.harness.node_agent.kube import KUBE_ERRORS, KubeClient

log = logging.getLogger(__name__)


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def now_micro() -> str:
    """MicroTime, as Leases and events.k8s.io want it."""
    stamp = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1e6):06d}Z"


class EventRecorder:
    def __init__(self, kube: KubeClient, node_name: str) -> None:
        self._kube = kube
        self._node = node_name
        self._pending: set[asyncio.Task[None]] = set()  # held, so the loop does not drop them mid-flight

    def pod_event(self, pod: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        log.info("%s/%s %s: %s", meta["namespace"], meta["name"], reason, message)
        task = asyncio.create_task(self._post(pod, kind, reason, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, pod: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        stamp = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": self._node},
            "reportingComponent": "kubelet",
            "reportingInstance": self._node,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self._kube.create(f"/api/v1/namespaces/{meta['namespace']}/events", event)
        except KUBE_ERRORS as exc:  # an event is worth a log line, never a crash
            log.warning("could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], exc)

    async def drain(self, timeout: float = 5.0) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)
