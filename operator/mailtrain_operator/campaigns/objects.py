"""The campaign's own writes to the apiserver: its status (kopf posts the Events).

Through the operator's client (`kube.py`), on a thread. A merge patch, so only the fields that
changed travel; a field that is gone is sent as null, which removes it.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mailtrain_operator import kube
from mailtrain_operator.api import GROUP, VERSION

PLURAL = "mailcampaigns"


def merge_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `current` into `desired`."""
    patch: dict[str, Any] = {key: None for key in current if key not in desired}
    for key, value in desired.items():
        old = current.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            nested = merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif value != old:
            patch[key] = value
    return patch


async def patch_status(namespace: str, name: str, patch: dict[str, Any]) -> bool:
    """False if the campaign is gone (deleted while its driver was writing)."""
    api = client.CustomObjectsApi(kube.api_client())
    try:
        await kube.call(
            api.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": patch},
        )
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True
