"""ConfigMap and Secret contents as the kubelet reads them: keys to bytes, or None when the object is missing.

The Node authorizer lets the agent read only objects that a pod bound to its node refers to, so every read
is a GET by name, as the kubelet's are.
"""

from __future__ import annotations

import base64
import time

from tests.harness.node_agent.kube import ApiError, KubeClient


async def read_data(kube: KubeClient, namespace: str, kind: str, name: str) -> dict[str, bytes] | None:
    """kind is "configmaps" or "secrets"."""
    try:
        obj = await kube.get(f"/api/v1/namespaces/{namespace}/{kind}/{name}")
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    data: dict[str, bytes] = {}
    if kind == "secrets":
        for key, value in (obj.get("data") or {}).items():
            data[key] = base64.b64decode(value)
    else:
        for key, value in (obj.get("data") or {}).items():
            data[key] = value.encode()
        for key, value in (obj.get("binaryData") or {}).items():
            data[key] = base64.b64decode(value)
    return data


def kind_of(ref_key: str) -> str:
    """`configMapRef` / `configMapKeyRef` / `configMap` -> "configmaps"; the secret forms -> "secrets"."""
    return "configmaps" if ref_key.startswith("configMap") else "secrets"


class ObjectCache:
    """Reads shared by every pod for a moment: many pods of a namespace mount the same kube-root-ca.crt,
    and the volumes of each are re-read every second to follow edits."""

    def __init__(self, kube: KubeClient, ttl: float) -> None:
        self._kube = kube
        self._ttl = ttl
        self._entries: dict[tuple[str, str, str], tuple[float, dict[str, bytes] | None]] = {}

    async def read(self, namespace: str, kind: str, name: str) -> dict[str, bytes] | None:
        key = (namespace, kind, name)
        now = time.monotonic()
        cached = self._entries.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        data = await read_data(self._kube, namespace, kind, name)
        self._entries[key] = (now + self._ttl, data)
        if len(self._entries) > 4096:  # forget objects of pods long gone
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
        return data
