"""The kopf peering objects this operator's replicas share, created at start if they are missing.

kopf elects the active replica through a peering object: a `ClusterKopfPeering` when the operator
watches every namespace, else a `KopfPeering` in each watched namespace, all named
`settings.peering_name`. kopf only patches that object and never creates it; with mandatory peering
a missing object would leave every replica paused, silently, for good. So the startup handler
creates each one (RBAC: `create` on the kind, `get` on that name), or, with `create_peering` off
(the chart, which renders them), looks for it again for about 30 s, then stops the operator naming
the missing object.

kopf resumes a replica as soon as its first look at the peering object shows no live peer above it,
so two replicas started together could both be active for a moment (seen: 8 ms, both resumed).
`announce` closes that window: each replica writes its own keep-alive (kopf's format) before kopf
looks, then waits `ANNOUNCE_SETTLE`. A replica with a higher priority is thus in the object for that
long before it can resume, and every peer watching pauses in favour of it first. It narrows rather
than removes: an older replica that announces more than `ANNOUNCE_SETTLE` after a younger one looked
(a slow start) finds the younger one active, which pauses when its watch delivers the change.

The CustomResourceDefinitions of both kinds are the chart's
(`helm/mailtrain-operator/crds/kopf-peering.yaml`): without them the operator stops at start,
with the reason.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mailtrain_operator import kube
from mailtrain_operator.settings import OperatorSettings

GROUP = "kopf.dev"
VERSION = "v1"
CLUSTER_PLURAL = "clusterkopfpeerings"
NAMESPACED_PLURAL = "kopfpeerings"
# Longer than a watch event takes to reach the other replicas, so that they see this one first.
ANNOUNCE_SETTLE = 2.0


_RBAC = "grant the chart's RBAC rules (helm/mailtrain-operator/templates/rbac.yaml) to the operator"


class PeeringUnavailable(Exception):
    """A peering object can neither be found nor created, and retrying will not change that: what to
    fix, in one line."""


class PeeringMissing(PeeringUnavailable):
    """The peering object does not exist and this operator may not create it: it may yet appear (Helm
    creates kinds it does not know, such as KopfPeering, after the Deployment)."""


def _not_found(exc: ApiException) -> dict[str, Any]:
    """The `details` of a 404's Status: what the apiserver did not find (empty for a kind it does not
    serve, which gets a plain `404 page not found`)."""
    try:
        status = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    details = status.get("details") if isinstance(status, dict) else None
    return details if isinstance(details, dict) else {}


def _object_missing(exc: ApiException, name: str) -> bool:
    """Whether a 404 is for the object rather than its kind: only then does the Status name it."""
    return _not_found(exc).get("name") == name


def _not_installed(namespace: str | None) -> PeeringUnavailable:
    return PeeringUnavailable(
        f"the {_where(namespace)} kind is not installed: apply the chart's CRDs "
        "(helm/mailtrain-operator/crds/kopf-peering.yaml)"
    )


def _where(namespace: str | None) -> str:
    return "ClusterKopfPeering" if namespace is None else f"KopfPeering in namespace {namespace!r}"


async def _ensure(
    api: client.CustomObjectsApi, name: str, namespace: str | None, *, create_missing: bool
) -> bool:
    """True if this call created the object, False if it was there."""
    body: dict[str, Any] = {"apiVersion": f"{GROUP}/{VERSION}", "metadata": {"name": name}}
    if namespace is None:
        body["kind"] = "ClusterKopfPeering"
        get: tuple[Any, ...] = (api.get_cluster_custom_object, GROUP, VERSION, CLUSTER_PLURAL, name)
        create: tuple[Any, ...] = (api.create_cluster_custom_object, GROUP, VERSION, CLUSTER_PLURAL, body)
    else:
        body["kind"] = "KopfPeering"
        get = (api.get_namespaced_custom_object, GROUP, VERSION, namespace, NAMESPACED_PLURAL, name)
        create = (api.create_namespaced_custom_object, GROUP, VERSION, namespace, NAMESPACED_PLURAL, body)
    try:
        await kube.call(*get)
        return False
    except ApiException as exc:
        if exc.status == 403:
            raise PeeringUnavailable(f"may not read the {_where(namespace)} {name!r}: {_RBAC}") from None
        if exc.status != 404:
            raise  # the apiserver's trouble: kopf retries the startup handler
        if not _object_missing(exc, name):
            raise _not_installed(namespace) from None
    if not create_missing:
        raise PeeringMissing(
            f"the {_where(namespace)} {name!r} does not exist: the chart renders it "
            "(templates/peering.yaml); without the chart, create it, or set "
            "MAILTRAIN_OPERATOR_CREATE_PEERING=true and grant `create` on its kind"
        )
    try:
        await kube.call(*create)
    except ApiException as exc:
        if exc.status == 409:  # another replica created it meanwhile
            return False
        if exc.status == 404 and _not_found(exc).get("kind") == "namespaces":
            raise PeeringUnavailable(
                f"namespace {namespace!r} does not exist: the operator watches it"
            ) from None
        if exc.status == 404:
            raise _not_installed(namespace) from None
        if exc.status == 403:
            raise PeeringUnavailable(f"may not create the {_where(namespace)} {name!r}: {_RBAC}") from None
        raise
    return True


async def ensure_objects(settings: OperatorSettings) -> list[str]:
    """Creates the peering objects this operator needs and lacks; returns what it created."""
    if settings.standalone:
        return []
    api = client.CustomObjectsApi(kube.api_client())
    namespaces: tuple[str | None, ...] = settings.namespaces or (None,)
    created = []
    for namespace in namespaces:
        if await _ensure(api, settings.peering_name, namespace, create_missing=settings.create_peering):
            created.append(f"{_where(namespace)} {settings.peering_name!r}")
    return created


def _path(name: str, namespace: str | None) -> str:
    if namespace is None:
        return f"/apis/{GROUP}/{VERSION}/{CLUSTER_PLURAL}/{name}"
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{NAMESPACED_PLURAL}/{name}"


def keepalive_entry(priority: int, lifetime: int, now: datetime.datetime | None = None) -> dict[str, Any]:
    """This replica's entry in a peering object's status, as kopf writes it (kopf's `Peer.as_dict`)."""
    seen = now or datetime.datetime.now(datetime.UTC)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


async def announce(
    settings: OperatorSettings, identity: str, priority: int, settle: float = ANNOUNCE_SETTLE
) -> None:
    """Writes this replica's keep-alive into its peering objects, then waits `settle` seconds before
    kopf takes its first look (the module's docstring says why). kopf's own keep-alives take over."""
    if settings.standalone:
        return
    entry = keepalive_entry(priority, settings.peering_lifetime)
    for namespace in settings.namespaces or (None,):
        patch = {"status": {identity: entry}}
        await kube.request(
            "PATCH", _path(settings.peering_name, namespace), patch, content_type=kube.MERGE_PATCH
        )
    await asyncio.sleep(settle)
