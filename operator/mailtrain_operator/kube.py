"""The operator's own Kubernetes API client, for what kopf does not do for us: apply child objects,
read the one Secret key a spec names, find a pool's endpoints, write a status.

Where it sits: domain modules call these; handlers never build a client themselves. The client is
the `kubernetes` package's (blocking), so every call runs on a thread and the event loop, which
also runs every other reconcile and the progress timers, never waits for the apiserver.

Objects are plain dicts, as the API spells them (`request`, `apply`, `create`, `get`): the pure
builders make dicts, and the models of the typed client would only be converted back. The typed
client is used where its models are read field by field (Secrets, EndpointSlices).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")
Json = dict[str, Any]

# Every object the operator applies is owned by this field manager (server-side apply).
FIELD_MANAGER = "mailtrain-operator"
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML, so the body is sent as JSON
MERGE_PATCH = "application/merge-patch+json"
# The kinds the operator writes: (apiVersion, kind) -> the collection's path under a namespace.
_COLLECTIONS = {
    ("v1", "ConfigMap"): "/api/v1/namespaces/{namespace}/configmaps",
    ("v1", "Secret"): "/api/v1/namespaces/{namespace}/secrets",
    ("v1", "Service"): "/api/v1/namespaces/{namespace}/services",
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{namespace}/deployments",
}


# The kubernetes package loads each API class and model on first use, and loading a module holds the
# GIL: CoreV1Api alone is 4 MB of source. Loaded at the first Secret read, it froze the event loop
# (kopf's peering keep-alives and probes included) for as long as that took: 7 to 10 s on a busy
# 2-core node with no compiled bytecode, long enough for the standby replica to take the active one
# for dead and resume too. So what the operator's calls use is loaded here, at import, before kopf
# starts; kopf's own client is aiohttp and needs none of it.
PRELOADED = (
    client.CoreV1Api,
    client.DiscoveryV1Api,
    client.CustomObjectsApi,
    client.V1Secret,
    client.V1ConfigMap,
    client.V1EndpointSliceList,
    client.V1EndpointSlice,
    client.V1ObjectMeta,
)


@functools.cache
def api_client() -> client.ApiClient:
    """In a pod: its ServiceAccount; elsewhere (development, tests): $KUBECONFIG."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        # $KUBECONFIG as it is now: the package's default is the value it had when it was imported.
        config.load_kube_config(os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    return client.ApiClient()


def core() -> client.CoreV1Api:
    return client.CoreV1Api(api_client())


def discovery() -> client.DiscoveryV1Api:
    return client.DiscoveryV1Api(api_client())


async def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking client call, on a thread."""
    return await asyncio.to_thread(function, *args, **kwargs)


def _request(
    method: str,
    path: str,
    body: Json | None,
    query: Mapping[str, str],
    content_type: str,
) -> Json:
    api = api_client()
    method, url, headers, serialized, post = api.param_serialize(
        method,
        path,
        query_params=list(query.items()),
        header_params={"Content-Type": content_type, "Accept": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, headers, serialized, post, _request_timeout=30)
    data: bytes = response.read() or b""  # type: ignore[no-untyped-call]
    if not 200 <= response.status <= 299:
        raise ApiException(status=response.status, reason=response.reason, body=data.decode(errors="replace"))
    parsed: Json = json.loads(data) if data else {}
    return parsed


async def request(
    method: str,
    path: str,
    body: Json | None = None,
    *,
    query: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> Json:
    """One API call with a JSON body and answer, on a thread; ApiException when it is refused."""
    return await call(_request, method, path, body, query or {}, content_type)


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    return _COLLECTIONS[api_version, kind].format(namespace=namespace)


def object_path(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    collection = collection_path(obj["apiVersion"], obj["kind"], meta["namespace"])
    return f"{collection}/{meta['name']}"


async def apply(obj: Json) -> Json:
    """Server-side apply as FIELD_MANAGER, forcing conflicts: what the operator applies is its own,
    so a hand edit of one of these fields is taken back rather than refused."""
    query = {"fieldManager": FIELD_MANAGER, "force": "true"}
    return await request("PATCH", object_path(obj), obj, query=query, content_type=APPLY_PATCH)


async def get(path: str) -> Json | None:
    """The object, or None when it does not exist."""
    try:
        return await request("GET", path)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def refusal(exc: ApiException) -> str:
    """The apiserver's message of a refused request, for a condition or a log line."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except ValueError:
        message = None
    return str(message or exc.reason or exc.status)


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
