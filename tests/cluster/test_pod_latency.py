"""The node agent is quick: median over 20 pods, creation to Running and Running to Ready under 1 s.

Ready here follows an exec readiness probe that passes at once, so the figure is the agent's own cost
(the control plane's, the agent's, one command run inside the container, and the status patches). With a
probe that fails until the program listens, Ready comes one periodSeconds later: see pod_latency.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.cluster.pod_latency import PROBES, measure
from tests.harness.kubeapi import KubeApi


def test_twenty_pods_are_running_and_ready_within_a_second(
    kube: KubeApi, namespace: str, record_property: Callable[[str, object], None]
) -> None:
    summary = measure(kube, namespace, 20, PROBES["exec"]).summary()
    record_property("pod_latency", json.dumps(summary))
    assert summary["created_to_running"]["median_ms"] < 1000, summary
    assert summary["running_to_ready"]["median_ms"] < 1000, summary
