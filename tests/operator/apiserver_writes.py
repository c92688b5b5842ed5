"""Writes the apiserver served, counted by the apiserver itself (`apiserver_request_total` on its
/metrics), by resource, subresource and verb: what a test or benchmark holds the operator's writes to.

The counter has no user label, so a caller takes the difference of two readings around what it
measures and keeps the resources only the operator writes meanwhile (campaigns, their Events, pools).
"""

from __future__ import annotations

import re
import ssl
import urllib.request
from collections import Counter

from tests.harness.controlplane import ControlPlane

WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY"})
Key = tuple[str, str, str, str]  # (resource, subresource, verb, response code)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def read(controlplane: ControlPlane) -> Counter[Key]:
    """Every write so far, by (resource, subresource, verb), whatever the response code."""
    pki = controlplane.pki
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    with opener.open(f"{controlplane.server}/metrics", timeout=30) as response:
        text = response.read().decode()
    found: Counter[Key] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line.rpartition(" ")
        labels = dict(_LABEL.findall(labels_text))
        if labels.get("verb") in WRITE_VERBS:
            key = (
                labels.get("resource", ""),
                labels.get("subresource", ""),
                labels["verb"],
                labels.get("code", ""),
            )
            found[key] += int(float(value))
    return found


def between(before: Counter[Key], after: Counter[Key], resources: frozenset[str]) -> Counter[Key]:
    """The writes of `resources` made between two readings."""
    return Counter(
        {key: after[key] - before[key] for key in after if key[0] in resources and after[key] > before[key]}
    )


def refused(writes: Counter[Key]) -> int:
    """Writes the apiserver answered with a 4xx or 5xx: a JSON patch whose resourceVersion test failed
    (kopf's finalizer, when another write came first) is a 422."""
    return sum(n for key, n in writes.items() if not key[3].startswith("2"))


def describe(writes: Counter[Key]) -> str:
    return ", ".join(f"{r}{'/' + s if s else ''} {v} {c}: {n}" for (r, s, v, c), n in sorted(writes.items()))
