"""A container's environment, built the way the kubelet builds it.

Order and precedence follow the kubelet: the apiserver's address first, then every `envFrom` source in
order, then `env` in order; a `value` expands $(VAR) from what is defined before it. A missing ConfigMap,
Secret or key that is not `optional` is a ConfigError: the container waits (CreateContainerConfigError)
and is tried again, it is never started with a partial environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from tests.harness.node_agent.fields import FieldError, field_value, resource_value
from tests.harness.node_agent.images import expand
from tests.harness.node_agent.kube import KubeClient
from tests.harness.node_agent.objects import kind_of, read_data

_KIND_NAMES = {"configmaps": ("configmap", "ConfigMap"), "secrets": ("secret", "Secret")}


class ConfigError(Exception):
    """The container's configuration is not there yet: the kubelet's CreateContainerConfigError."""


@dataclass(frozen=True)
class PodContext:
    """What a container's set-up needs to know about its pod and node, as plain values."""

    pod: dict[str, Any]
    pod_ip: str
    host_ip: str
    api_host: str
    api_port: int
    allocatable: dict[str, str]

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])


def apiserver_env(ctx: PodContext) -> dict[str, str]:
    # There is no kube-proxy, so the `kubernetes` Service's ClusterIP would lead nowhere: in-cluster
    # clients get the apiserver's own loopback address, which its serving certificate names.
    host, port = ctx.api_host, str(ctx.api_port)
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": port,
        f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }


async def container_env(kube: KubeClient, ctx: PodContext, container: dict[str, Any]) -> dict[str, str]:
    env = apiserver_env(ctx)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for ref_key in ("configMapRef", "secretRef"):
            ref = source.get(ref_key)
            if ref is None:
                continue
            data = await read_data(kube, ctx.namespace, kind_of(ref_key), ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(_not_found(kind_of(ref_key), ref["name"]))
            for key, raw in data.items():
                env[prefix + key] = os.fsdecode(raw)
    for var in container.get("env") or []:
        if "valueFrom" in var:
            resolved = await _value_from(kube, ctx, container, var["valueFrom"])
            if resolved is None:  # an optional reference to something missing: the variable is not set
                continue
            env[var["name"]] = resolved
        else:
            env[var["name"]] = expand(var.get("value", ""), env)
    return env


async def _value_from(
    kube: KubeClient, ctx: PodContext, container: dict[str, Any], source: dict[str, Any]
) -> str | None:
    try:
        if "fieldRef" in source:
            return field_value(ctx.pod, source["fieldRef"]["fieldPath"], ctx.pod_ip, ctx.host_ip)
        if "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            name = ref.get("containerName") or container["name"]
            return resource_value(ctx.pod, name, ref["resource"], ref.get("divisor"), ctx.allocatable)
    except FieldError as exc:
        raise ConfigError(str(exc)) from exc
    for ref_key in ("configMapKeyRef", "secretKeyRef"):
        ref = source.get(ref_key)
        if ref is None:
            continue
        kind = kind_of(ref_key)
        data = await read_data(kube, ctx.namespace, kind, ref["name"])
        if data is None or ref["key"] not in data:
            if ref.get("optional"):
                return None
            if data is None:
                raise ConfigError(_not_found(kind, ref["name"]))
            raise ConfigError(
                f"couldn't find key {ref['key']} in {_KIND_NAMES[kind][1]} {ctx.namespace}/{ref['name']}"
            )
        return os.fsdecode(data[ref["key"]])
    raise ConfigError(f"unsupported valueFrom: {sorted(source)}")


def _not_found(kind: str, name: str) -> str:
    return f'{_KIND_NAMES[kind][0]} "{name}" not found'
