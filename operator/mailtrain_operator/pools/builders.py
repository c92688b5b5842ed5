"""A SenderPool's child objects, built from the pool with no I/O.

    Deployment  <pool>-sender         replicas = spec.queue.processes (the private Redis: exactly 1)
    ConfigMap   <pool>-sender-config  sender.toml, judged by the sender's own config model
    Service     <pool>-sender         port `metrics`; port `redis` for the private Redis
    Secret      <pool>-sender-redis   the private Redis's password (created once, never applied again)

Every object carries the pool as its controlling owner, so deleting the pool deletes them. A spec
the sender would refuse raises `PoolSpecRejected` before any object is built: nothing is applied.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from mailtrain_operator.api import API_VERSION
from mailtrain_operator.api.senderpool import SenderPoolSpec
from mailtrain_operator.pools import names
from mailtrain_operator.pools.pod_template import pod_template
from mailtrain_operator.pools.sender_toml import SenderToml, render
from mailtrain_operator.settings import OperatorSettings

Json = dict[str, Any]


@dataclass(frozen=True)
class PoolRef:
    """The pool as an owner: what its children's metadata needs."""

    namespace: str
    name: str
    uid: str

    @classmethod
    def from_body(cls, body: Any) -> PoolRef:
        meta = body["metadata"]
        return cls(meta["namespace"], meta["name"], meta["uid"])


@dataclass(frozen=True)
class Children:
    toml: SenderToml
    config_map: Json
    service: Json
    deployment: Json
    private_redis: bool  # the Secret <pool>-sender-redis must exist before the pods start

    def in_apply_order(self) -> list[Json]:
        # The ConfigMap first: a pod that a new template starts must find the new sender.toml.
        return [self.config_map, self.service, self.deployment]


def owner_reference(pool: PoolRef) -> Json:
    return {
        "apiVersion": API_VERSION,
        "kind": "SenderPool",
        "name": pool.name,
        "uid": pool.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(pool: PoolRef, name: str) -> Json:
    return {
        "name": name,
        "namespace": pool.namespace,
        "labels": names.object_labels(pool.name),
        "ownerReferences": [owner_reference(pool)],
    }


def replicas(spec: SenderPoolSpec) -> int:
    """queue.processes. The private Redis serves one process only; the CRD and the sender's model
    refuse anything but 1 there, so the bound only guards a spec that slipped past both."""
    return spec.queue.processes if spec.redis.enabled else min(spec.queue.processes, 1)


def config_map(pool: PoolRef, toml: SenderToml) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(pool, names.config_map_name(pool.name)),
        "data": {names.SENDER_TOML: toml.text},
    }


def _service_port(name: str, port: int) -> Json:
    return {"name": name, "port": port, "targetPort": name, "protocol": "TCP"}


def service(pool: PoolRef, spec: SenderPoolSpec) -> Json:
    ports = [_service_port(names.METRICS_PORT_NAME, names.METRICS_PORT)]
    if not spec.redis.enabled:  # how the operator finds the private Redis (pool_redis.resolve)
        ports.append(_service_port(names.PRIVATE_REDIS_PORT_NAME, names.PRIVATE_REDIS_PORT))
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(pool, names.service_name(pool.name)),
        "spec": {"selector": names.selector_labels(pool.name), "ports": ports},
    }


def deployment(pool: PoolRef, spec: SenderPoolSpec, toml: SenderToml, settings: OperatorSettings) -> Json:
    if spec.redis.enabled:
        # New pods first, so that a rollout never lowers the pool's capacity.
        strategy: Json = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    else:
        # Never two private Redises: the new pod starts once the old one is gone.
        strategy = {"type": "Recreate"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(pool, names.deployment_name(pool.name)),
        "spec": {
            "replicas": replicas(spec),
            "selector": {"matchLabels": names.selector_labels(pool.name)},
            "strategy": strategy,
            "revisionHistoryLimit": 3,
            "template": pod_template(pool.name, spec, toml, settings),
        },
    }


def private_redis_secret(pool: PoolRef, password: str) -> Json:
    encoded = base64.b64encode(password.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(pool, names.private_redis_secret_name(pool.name)),
        "data": {names.PRIVATE_REDIS_PASSWORD_KEY: encoded},
    }


def children(pool: PoolRef, spec: SenderPoolSpec, settings: OperatorSettings) -> Children:
    """Every child object of the pool; PoolSpecRejected if the sender would refuse the spec."""
    toml = render(pool.namespace, pool.name, spec)
    return Children(
        toml=toml,
        config_map=config_map(pool, toml),
        service=service(pool, spec),
        deployment=deployment(pool, spec, toml, settings),
        private_redis=not spec.redis.enabled,
    )
