"""Whether a child object still holds what the operator applied: pure, no I/O.

The apiserver adds defaults (probe schemes, termination message paths, ...) but never drops a field
it was given, so an object holds the desired one when every value the operator set is still there,
unchanged. Anything else is drift: a hand edit, or `kubectl scale` on the Deployment.
"""

from __future__ import annotations

from typing import Any


def holds(actual: Any, desired: Any) -> bool:
    """Whether `actual` has every value of `desired` (maps: its keys; lists: element by element)."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return False
        return all(key in actual and holds(actual[key], value) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return False
        return all(holds(have, want) for have, want in zip(actual, desired, strict=True))
    return bool(actual == desired)


def drifted(actual: dict[str, Any], desired: dict[str, Any]) -> bool:
    """The object's spec or labels no longer hold what was applied."""
    labels = desired["metadata"].get("labels") or {}
    actual_labels = (actual.get("metadata") or {}).get("labels") or {}
    return not (holds(actual_labels, labels) and holds(actual.get("spec"), desired["spec"]))
