"""The downward API's values, shared by env (`fieldRef`, `resourceFieldRef`) and downwardAPI volumes."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

_SUFFIXES = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


class FieldError(ValueError):
    """A field path or resource the downward API does not offer."""


def parse_quantity(text: str) -> Decimal:
    match = _QUANTITY.match(str(text).strip())
    if match is None or match.group(2) not in _SUFFIXES:
        raise FieldError(f"not a quantity: {text!r}")
    return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]


def _selected(path: str, prefix: str, values: dict[str, str]) -> str | None:
    """`metadata.labels['app']` -> the label's value; None when the path has another form."""
    match = re.fullmatch(re.escape(prefix) + r"\['(.+)'\]", path)
    return None if match is None else values.get(match.group(1), "")


def _as_lines(values: dict[str, str]) -> str:
    # The kubelet's format for a whole map: key="value", one per line, sorted.
    return "\n".join(f'{key}="{value}"' for key, value in sorted(values.items()))


def field_value(pod: dict[str, Any], path: str, pod_ip: str, host_ip: str) -> str:
    """The value of a `fieldRef.fieldPath` for this pod."""
    meta = pod["metadata"]
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "metadata.labels": _as_lines(labels),
        "metadata.annotations": _as_lines(annotations),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path])
    for prefix, values in (("metadata.labels", labels), ("metadata.annotations", annotations)):
        selected = _selected(path, prefix, values)
        if selected is not None:
            return selected
    raise FieldError(f"unsupported fieldPath {path!r}")


def resource_value(
    pod: dict[str, Any], container_name: str, resource: str, divisor: str | None, allocatable: dict[str, str]
) -> str:
    """The value of a `resourceFieldRef`: a limit falls back to the node's allocatable, as the kubelet's."""
    container = next((c for c in pod["spec"]["containers"] if c["name"] == container_name), None)
    if container is None:
        raise FieldError(f"resourceFieldRef names no container {container_name!r}")
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise FieldError(f"unsupported resource {resource!r}")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None:
        value = allocatable.get(name, "0") if kind == "limits" else "0"
    amount = parse_quantity(value) / parse_quantity(divisor or "1")
    return str(math.ceil(amount))
