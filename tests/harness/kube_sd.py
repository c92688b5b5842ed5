"""Kubernetes service discovery for a Prometheus built without it: Debian's `prometheus` 2.42+ds
leaves `kubernetes_sd_configs` out of its build ("field kubernetes_sd_configs not found"), so this
serves the same targets through `http_sd_configs`.

An HTTP server on a free loopback port reads pods, Services and EndpointSlices from the apiserver on
every request and answers with target groups that carry the `__meta_kubernetes_*` labels Prometheus's
own kubernetes discovery gives, for roles `pod` (one target per container port, at the pod IP) and
`endpoints` (one per address and port of a Service, with the Service's and the pod's labels). The
relabelling that selects and names targets stays Prometheus's, unchanged.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.harness import net
from tests.harness.kubeapi import KubeApi

Json = dict[str, Any]
K = "__meta_kubernetes_"


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _labels(kind: str, meta: Json) -> dict[str, str]:
    found = {}
    for key, value in (meta.get("labels") or {}).items():
        found[f"{K}{kind}_label_{_sanitize(key)}"] = value
        found[f"{K}{kind}_labelpresent_{_sanitize(key)}"] = "true"
    return found


def _pod_labels(pod: Json) -> dict[str, str]:
    status = pod.get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
    return {
        f"{K}namespace": pod["metadata"]["namespace"],
        f"{K}pod_name": pod["metadata"]["name"],
        f"{K}pod_uid": pod["metadata"]["uid"],
        f"{K}pod_ip": status.get("podIP", ""),
        f"{K}pod_phase": status.get("phase", ""),
        f"{K}pod_ready": str(ready).lower(),
        f"{K}pod_node_name": (pod.get("spec") or {}).get("nodeName", ""),
        **_labels("pod", pod["metadata"]),
    }


def _port_labels(container: Json, port: Json) -> dict[str, str]:
    return {
        f"{K}pod_container_name": container["name"],
        f"{K}pod_container_port_name": port.get("name", ""),
        f"{K}pod_container_port_number": str(port["containerPort"]),
        f"{K}pod_container_port_protocol": port.get("protocol", "TCP"),
    }


@dataclass
class KubeDiscovery:
    api: KubeApi
    port: int = field(default_factory=net.free_port)
    _server: ThreadingHTTPServer | None = None

    def sd_config(self, role: str, namespaces: list[str] | None) -> Json:
        """What a scrape config needs instead of kubernetes_sd_configs: [{role, namespaces}]."""
        query = urllib.parse.urlencode({"role": role, "namespaces": ",".join(namespaces or [])})
        url = f"http://{net.LOOPBACK}:{self.port}/targets?{query}"
        return {"http_sd_configs": [{"url": url, "refresh_interval": "1s"}]}

    def start(self) -> KubeDiscovery:
        discovery = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                namespaces = [n for n in query.get("namespaces", [""])[0].split(",") if n]
                groups = flatten(discovery.groups(query["role"][0], namespaces))
                body = json.dumps(groups).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # one request a second: not worth a line each
                pass

        self._server = ThreadingHTTPServer((net.LOOPBACK, self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _list(self, resource: str, namespaces: list[str], api_group: str = "/api/v1") -> list[Json]:
        if not namespaces:
            return self.api.list(f"{api_group}/{resource}")
        return [o for ns in namespaces for o in self.api.list(f"{api_group}/namespaces/{ns}/{resource}")]

    def groups(self, role: str, namespaces: list[str]) -> list[Json]:
        pods = self._list("pods", namespaces)
        if role == "pod":
            return [self._pod_group(pod) for pod in pods if (pod.get("status") or {}).get("podIP")]
        if role == "endpoints":
            by_name = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
            services = self._list("services", namespaces)
            slices = self._list("endpointslices", namespaces, "/apis/discovery.k8s.io/v1")
            return [self._service_group(s, slices, by_name) for s in services]
        raise ValueError(f"role {role!r} is not served")

    def _pod_group(self, pod: Json) -> Json:
        ip = pod["status"]["podIP"]
        targets = []
        for container in pod["spec"]["containers"]:
            for port in container.get("ports") or []:
                targets.append({"target": f"{ip}:{port['containerPort']}", **_port_labels(container, port)})
        return {"targets": [t["target"] for t in targets], "labels": _pod_labels(pod), "_each": targets}

    def _service_group(self, service: Json, slices: list[Json], pods: dict[tuple[str, str], Json]) -> Json:
        meta = service["metadata"]
        common = {
            f"{K}namespace": meta["namespace"],
            f"{K}endpoints_name": meta["name"],
            f"{K}service_name": meta["name"],
            **_labels("service", meta),
        }
        targets = []
        mine = [
            s
            for s in slices
            if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == meta["name"]
        ]
        for endpoint_slice in mine:
            for endpoint in endpoint_slice.get("endpoints") or []:
                ref = endpoint.get("targetRef") or {}
                pod = pods.get((meta["namespace"], ref.get("name", ""))) if ref.get("kind") == "Pod" else None
                for port in endpoint_slice.get("ports") or []:
                    for address in endpoint["addresses"]:
                        labels = {
                            f"{K}endpoint_port_name": port.get("name", ""),
                            f"{K}endpoint_port_protocol": port.get("protocol", "TCP"),
                            f"{K}endpoint_ready": str(
                                (endpoint.get("conditions") or {}).get("ready", False)
                            ).lower(),
                            f"{K}endpoint_address_target_kind": ref.get("kind", ""),
                            f"{K}endpoint_address_target_name": ref.get("name", ""),
                        }
                        if pod is not None:
                            labels |= _pod_labels(pod)
                            for container in pod["spec"]["containers"]:
                                for cport in container.get("ports") or []:
                                    if cport["containerPort"] == port.get("port"):
                                        labels |= _port_labels(container, cport)
                        targets.append({"target": f"{address}:{port.get('port')}", **labels})
        return {"targets": [], "labels": common, "_each": targets}


def flatten(groups: list[Json]) -> list[Json]:
    """http_sd's format: one group per target, since each target has labels of its own."""
    return [
        {"targets": [t["target"]], "labels": {**g["labels"], **{k: v for k, v in t.items() if k != "target"}}}
        for g in groups
        for t in g["_each"]
    ]
