"""The sender pods of a pool, as a pod template: pure, no I/O.

Every pod passes Pod Security "restricted" (non-root, no privilege escalation, no capabilities,
RuntimeDefault seccomp) and holds no Kubernetes token: a sender talks to Redis and SMTP only.
Secrets reach the containers as environment variables from Secrets (`secretKeyRef`); the operator
names them and never reads the SMTP ones.

With `redis.enabled: false` the pod has a second container, the private Redis: it listens on the
pod's IP (for the operator, through the Service's `redis` port) and on a Unix socket in the pod's
own /tmp (for the sender), with the password from the Secret the operator generated, no persistence.
"""

from __future__ import annotations

import math
from typing import Any

from mailtrain_operator.api.senderpool import SenderPodTemplate, SenderPoolSpec
from mailtrain_operator.pools import names
from mailtrain_operator.pools.sender_toml import SenderToml
from mailtrain_operator.settings import OperatorSettings

Json = dict[str, Any]

# The sender image's USER (sender_image/Dockerfile), for every container of the pod: the private
# Redis too, which then runs as non-root whatever its image's default.
RUN_AS = 10001
# After SIGTERM a sender finishes what is in flight for at most worker.shutdownGrace, then takes a
# few seconds of its own (outcomes 5 s, leaving the pool 2 s; worker.py); the rest is slack for a
# busy node, so that a pod is never SIGKILLed while it still writes outcomes.
GRACE_AFTER_SHUTDOWN = 15
TMP_VOLUME, CONFIG_VOLUME = "tmp", "config"

# The private Redis's password goes to redis-server on its standard input (a config file "-"), so it
# is in no command line; the options that are no secret follow on the command line. No `$(...)` here:
# Kubernetes would expand it as a variable reference.
REDIS_SCRIPT = f"""exec redis-server - --bind "$POD_IP" --port {names.PRIVATE_REDIS_PORT} \\
  --unixsocket {names.PRIVATE_REDIS_SOCKET} --unixsocketperm 700 \\
  --save "" --appendonly no --dir {names.TMP_DIR} <<EOF
requirepass "$REDIS_PASSWORD"
EOF
"""


def pod_security_context() -> Json:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Json:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }


def _field_env(name: str, path: str) -> Json:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _secret_env(name: str, secret: str, key: str) -> Json:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def sender_env(pool: str, spec: SenderPoolSpec) -> list[Json]:
    env = [
        _field_env("POD_IP", "status.podIP"),  # for --listen $(POD_IP):9090
        _field_env("MAILTRAIN_WORKER_ID", "metadata.name"),  # unique per process, as the pool needs
    ]
    credentials = spec.smtp.credentials_secret_ref
    if credentials is not None:
        env.append(_secret_env("MAILTRAIN_SMTP_USERNAME", credentials.name, "username"))
        env.append(_secret_env("MAILTRAIN_SMTP_PASSWORD", credentials.name, "password"))
    redis = spec.redis
    if not redis.enabled:
        secret = names.private_redis_secret_name(pool)
        env.append(_secret_env("MAILTRAIN_REDIS_PASSWORD", secret, names.PRIVATE_REDIS_PASSWORD_KEY))
    elif redis.url_secret_ref is not None:
        ref = redis.url_secret_ref
        env.append(_secret_env("MAILTRAIN_REDIS_URL", ref.name, ref.key))
    return env


def sender_container(pool: str, spec: SenderPoolSpec, image: str) -> Json:
    template = spec.template or SenderPodTemplate()
    metrics = names.METRICS_PORT_NAME
    container: Json = {
        "name": names.SENDER_CONTAINER,
        "image": template.image or image,
        "args": [
            "--config",
            f"{names.CONFIG_DIR}/{names.SENDER_TOML}",
            "--listen",
            f"$(POD_IP):{names.METRICS_PORT}",
        ],
        "env": sender_env(pool, spec),
        "ports": [{"name": metrics, "containerPort": names.METRICS_PORT, "protocol": "TCP"}],
        # Ready: reached Redis within one lease TTL and not shutting down. Alive: the loop answers.
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": metrics},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": metrics},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # A directory mount, not subPath: the kubelet then swaps in a new sender.toml, which the
        # sender reloads (limits change without a restart).
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": names.CONFIG_DIR, "readOnly": True},
            {"name": TMP_VOLUME, "mountPath": names.TMP_DIR},  # the health file, the Redis socket
        ],
        "securityContext": container_security_context(),
    }
    if template.image_pull_policy is not None:
        container["imagePullPolicy"] = template.image_pull_policy
    if template.resources is not None:
        container["resources"] = template.resources
    return container


def redis_container(pool: str, image: str) -> Json:
    secret = names.private_redis_secret_name(pool)
    port = names.PRIVATE_REDIS_PORT_NAME
    return {
        "name": names.REDIS_CONTAINER,
        "image": image,
        "command": ["sh", "-c", REDIS_SCRIPT],
        "env": [
            _field_env("POD_IP", "status.podIP"),
            _secret_env("REDIS_PASSWORD", secret, names.PRIVATE_REDIS_PASSWORD_KEY),
        ],
        "ports": [{"name": port, "containerPort": names.PRIVATE_REDIS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 2, "timeoutSeconds": 2},
        "livenessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 10, "timeoutSeconds": 5},
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": names.TMP_DIR}],
        "securityContext": container_security_context(),
    }


def pod_template(pool: str, spec: SenderPoolSpec, toml: SenderToml, settings: OperatorSettings) -> Json:
    template = spec.template or SenderPodTemplate()
    containers = [sender_container(pool, spec, settings.sender_image)]
    if not spec.redis.enabled:
        containers.append(redis_container(pool, settings.private_redis_image))
    grace = math.ceil(toml.config.worker.shutdown_grace) + GRACE_AFTER_SHUTDOWN
    pod_spec: Json = {
        "automountServiceAccountToken": False,  # a sender never talks to the Kubernetes API
        "enableServiceLinks": False,  # no MAILTRAIN_*-looking variables from the namespace's Services
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": grace,
        "containers": containers,
        "volumes": [
            {"name": CONFIG_VOLUME, "configMap": {"name": names.config_map_name(pool)}},
            {"name": TMP_VOLUME, "emptyDir": {}},
        ],
    }
    for field, value in (
        ("nodeSelector", template.node_selector),
        ("tolerations", template.tolerations),
        ("affinity", template.affinity),
    ):
        if value is not None:
            pod_spec[field] = value
    annotations = {**(template.pod_annotations or {}), names.RESTART_HASH_ANNOTATION: toml.restart_hash}
    return {
        "metadata": {
            # The operator's selector labels win over podLabels: a pod must stay the Deployment's.
            "labels": {**(template.pod_labels or {}), **names.object_labels(pool)},
            "annotations": annotations,
        },
        "spec": pod_spec,
    }
