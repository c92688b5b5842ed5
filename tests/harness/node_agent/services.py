"""Which Service names resolve, and to what: the node agent's stand-in for cluster DNS.

Services and EndpointSlices of every namespace are listed and watched, as CoreDNS and kube-proxy do, with
kube-proxy's identity (`system:kube-proxy`, bound to the ClusterRole `system:node-proxier` by the
apiserver's bootstrap policy): the Node authorizer lets a kubelet list Services but not EndpointSlices.
What comes of them goes into each pod's /etc/hosts (see hosts):

- a headless Service (`clusterIP: None`): its ready endpoint addresses, as cluster DNS answers, and
  `<hostname>.<svc>` for an endpoint with a hostname (a StatefulSet's pods, through `subdomain`);
- a Service with a ClusterIP: there is no kube-proxy, so the ClusterIP leads nowhere. Its name resolves
  to its ready endpoint addresses instead, but only when every port equals its targetPort, so that
  `<name>:<port>` reaches the program as it would through the ClusterIP. Otherwise the name does not
  resolve at all, and the agent says why, once per Service and ports;
- ExternalName Services and Services without a ready endpoint: no name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from tests.harness.node_agent.hosts import ServiceRecord
from tests.harness.node_agent.kube import KUBE_ERRORS, ApiError, KubeClient

log = logging.getLogger(__name__)

SERVICES = "/api/v1/services"
ENDPOINT_SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
WATCH_SECONDS = 300

Key = tuple[str, str]  # namespace, name


def _key(obj: dict[str, Any]) -> Key:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def ready_endpoints(slices: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    """(address, hostname) of every ready endpoint; an unknown readiness counts as ready (the API's rule)."""
    found = set()
    for item in slices:
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                found.add((address, endpoint.get("hostname", "")))
    return tuple(sorted(found))


def port_mismatches(service: dict[str, Any], slices: list[dict[str, Any]]) -> list[str]:
    """The ports of a ClusterIP Service that a client reaching an endpoint directly would get wrong:
    `port → targetPort` where the two differ."""
    ports = {p.get("name", ""): int(p["port"]) for p in service["spec"].get("ports") or []}
    wrong = set()
    for item in slices:
        for port in item.get("ports") or []:
            name, target = port.get("name") or "", port.get("port")
            if target is not None and name in ports and ports[name] != target:
                wrong.add(f"{ports[name]} → {target}")
    return sorted(wrong)


class ServiceDirectory:
    """The Services and EndpointSlices of the cluster, kept by a list and watch each; `on_change` is
    called after every change, and `synced` is set once both have been listed."""

    def __init__(self, kube: KubeClient | None, on_change: Callable[[], None]) -> None:
        """kube None: no Service names at all (an agent started without kube-proxy's credentials)."""
        self._kube = kube
        self._on_change = on_change
        self._services: dict[Key, dict[str, Any]] = {}
        self._slices: dict[Key, dict[str, Any]] = {}
        self._listed: set[str] = set()
        self._warned: set[tuple[Key, tuple[str, ...]]] = set()
        self.synced = asyncio.Event()

    async def run(self) -> None:
        if self._kube is None:
            self.synced.set()
            return
        await asyncio.gather(
            self._reflect(self._kube, SERVICES, self._services),
            self._reflect(self._kube, ENDPOINT_SLICES, self._slices),
        )

    def records(self) -> list[ServiceRecord]:
        by_service: dict[Key, list[dict[str, Any]]] = {}
        for (namespace, _), item in self._slices.items():
            owner = (item["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
            if owner:
                by_service.setdefault((namespace, owner), []).append(item)
        records = []
        for key, service in self._services.items():
            spec = service["spec"]
            slices = by_service.get(key, [])
            if spec.get("type") == "ExternalName":
                continue
            headless = spec.get("clusterIP") == "None"
            if not headless and self._ports_differ(key, service, slices):
                continue
            endpoints = ready_endpoints(slices)
            if not headless:  # per-endpoint names are a headless Service's only
                endpoints = tuple(sorted({(address, "") for address, _ in endpoints}))
            if endpoints:
                records.append(ServiceRecord(key[0], key[1], endpoints))
        return records

    def _ports_differ(self, key: Key, service: dict[str, Any], slices: list[dict[str, Any]]) -> bool:
        wrong = tuple(port_mismatches(service, slices))
        if wrong and (key, wrong) not in self._warned:
            self._warned.add((key, wrong))
            log.warning(
                "service %s/%s: ports %s differ from their targetPorts, and there is no kube-proxy on this "
                "node: its name does not resolve in pods (a headless Service's would)",
                *key,
                ", ".join(wrong),
            )
        return bool(wrong)

    async def _reflect(self, kube: KubeClient, path: str, store: dict[Key, dict[str, Any]]) -> None:
        while True:
            try:
                listing = await kube.get(path)
                store.clear()
                store.update((_key(item), item) for item in listing["items"])
                self._listed.add(path)
                if len(self._listed) == 2:
                    self.synced.set()
                self._on_change()
                params = {"resourceVersion": listing["metadata"]["resourceVersion"]}
                async for event in kube.watch(path, {**params, "timeoutSeconds": str(WATCH_SECONDS)}):
                    self._apply(event, store)
            except _Expired:
                continue  # list again
            except KUBE_ERRORS as exc:
                log.warning("watching %s (as system:kube-proxy): %s; listing again in 1s", path, exc)
                await asyncio.sleep(1)

    def _apply(self, event: dict[str, Any], store: dict[Key, dict[str, Any]]) -> None:
        kind, obj = event["type"], event["object"]
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired
            raise ApiError(int(obj.get("code", 500)), str(obj.get("message", "")))
        if kind == "BOOKMARK":
            return
        if kind == "DELETED":
            store.pop(_key(obj), None)
        else:
            store[_key(obj)] = obj
        self._on_change()


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone)."""
