"""The names a SenderPool's child objects share: object names, labels, ports and paths.

The builders, the status and the handlers all take them from here, so that what is applied, what
is watched and what is read back agree. Names that `pool_redis` already fixes (the Service, the port
`redis`, the private Redis Secret and its key) are taken from there.
"""

from __future__ import annotations

from mailtrain_operator.pool_redis import (
    PRIVATE_REDIS_PASSWORD_KEY,
    PRIVATE_REDIS_PORT_NAME,
    private_redis_secret_name,
    redis_pool_name,
    service_name,
)

__all__ = [
    "PRIVATE_REDIS_PASSWORD_KEY",
    "PRIVATE_REDIS_PORT_NAME",
    "private_redis_secret_name",
    "redis_pool_name",
    "service_name",
]

# Labels. The selector pair is fixed for the life of a Deployment (its selector cannot change).
NAME_LABEL, SENDER = "app.kubernetes.io/name", "mailtrain-sender"
POOL_LABEL = "mailtrain.dev/pool"
MANAGED_BY_LABEL, MANAGER = "app.kubernetes.io/managed-by", "mailtrain-operator"
COMPONENT_LABEL = "app.kubernetes.io/component"

# A digest of the sender.toml settings a running sender cannot reload (mailtrain_sender.config
# RESTART_REQUIRED), on the pod template: when it changes, the Deployment rolls its pods.
RESTART_HASH_ANNOTATION = "mailtrain.dev/restart-hash"

# The sender container.
SENDER_CONTAINER = "sender"
CONFIG_DIR = "/etc/mailtrain"
SENDER_TOML = "sender.toml"
METRICS_PORT_NAME, METRICS_PORT = "metrics", 9090

# The private Redis (redis.enabled: false): a second container of the sender's pod. The operator
# reaches it on the pod's IP; the sender through a Unix socket in the pod's shared /tmp (see
# docs/architecture.md, "The private Redis", for why not the loopback address).
REDIS_CONTAINER = "redis"
PRIVATE_REDIS_PORT = 6379
TMP_DIR = "/tmp"  # noqa: S108 - an emptyDir of the pod's own, so the root filesystem can be read-only
PRIVATE_REDIS_SOCKET = f"{TMP_DIR}/redis.sock"
PRIVATE_REDIS_URL = f"unix://{PRIVATE_REDIS_SOCKET}?db=0"


def deployment_name(pool: str) -> str:
    return service_name(pool)  # "<pool>-sender": the Deployment and its Service share a name


def config_map_name(pool: str) -> str:
    return f"{pool}-sender-config"


def selector_labels(pool: str) -> dict[str, str]:
    return {NAME_LABEL: SENDER, POOL_LABEL: pool}


def selector_text(pool: str) -> str:
    """The selector as `status.selector` gives it to the scale subresource (and autoscalers)."""
    return ",".join(f"{key}={value}" for key, value in selector_labels(pool).items())


def object_labels(pool: str) -> dict[str, str]:
    """Labels of every child object: the selector pair, and who manages it."""
    return {**selector_labels(pool), MANAGED_BY_LABEL: MANAGER, COMPONENT_LABEL: "sender"}
