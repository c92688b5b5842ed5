"""Prometheus for the demo (placeholder until the Prometheus harness is merged)."""

from __future__ import annotations

from pathlib import Path

from tests.harness.demo import scenario
from tests.harness.kubeapi import KubeApi


def start(api: KubeApi, kube: scenario.Cluster, workdir: Path) -> tuple[int, str]:
    return 0, ""
