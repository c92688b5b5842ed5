"""The operator's own Kubernetes API client, for what kopf does not do for us: apply child objects,
read the one Secret key a spec names, find a pool's endpoints.

Where it sits: domain modules call these; handlers never build a client themselves. The client is
the `kubernetes` package's (blocking), so every call runs on a thread and the event loop, which
also runs every other reconcile and the progress timers, never waits for the apiserver.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")


@functools.cache
def api_client() -> client.ApiClient:
    """In a pod: its ServiceAccount; elsewhere (development, tests): $KUBECONFIG."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def core() -> client.CoreV1Api:
    return client.CoreV1Api(api_client())


def discovery() -> client.DiscoveryV1Api:
    return client.DiscoveryV1Api(api_client())


async def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking client call, on a thread."""
    return await asyncio.to_thread(function, *args, **kwargs)


class MissingReference(Exception):
    """A Secret or ConfigMap a spec names is missing, or lacks the key: what to fix, in one line."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # CamelCase, for a condition
        self.message = message


async def read_secret_key(namespace: str, name: str, key: str, *, purpose: str) -> str:
    """One key of one Secret, read with `get` (the operator may not list or watch Secrets)."""
    try:
        secret = await call(core().read_namespaced_secret, name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise MissingReference(
                "SecretNotFound", f"Secret {namespace}/{name} ({purpose}) does not exist"
            ) from None
        if exc.status == 403:
            raise MissingReference(
                "SecretForbidden",
                f"the operator may not read Secret {namespace}/{name} ({purpose}): check its RBAC scope",
            ) from None
        raise
    encoded = (secret.data or {}).get(key)
    if encoded is None:
        raise MissingReference(
            "SecretKeyNotFound", f"Secret {namespace}/{name} ({purpose}) has no key {key!r}"
        )
    try:
        return base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise MissingReference(
            "SecretKeyNotText", f"key {key!r} of Secret {namespace}/{name} ({purpose}) is not UTF-8 text"
        ) from None
