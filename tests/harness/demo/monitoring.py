"""Prometheus for `make demo`: it scrapes the operator and every sender pod, as the chart's ServiceMonitor
and PodMonitor say, and evaluates the chart's alerts (its PrometheusRule's groups).

It is the Prometheus harness (tests.harness.prometheus, prometheus_monitors) with the demo's release
rendered: targets come from `kubernetes_sd_configs` against the demo's cluster. Prometheus runs in a
session of its own, so it outlives `make demo`; `make demo-down` stops it by its pid.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.harness.demo import scenario
from tests.harness.kubeapi import Json
from tests.harness.prometheus import Prometheus
from tests.harness.prometheus_monitors import kubernetes_sd, scrape_configs

MONITORING_VALUES = {
    "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
    "prometheusRule": {"enabled": True},
}


def rendered_monitoring(kube: scenario.Cluster, namespace: str) -> tuple[list[Json], list[Json]]:
    """(the ServiceMonitor and PodMonitor, the PrometheusRule's groups) of the demo's release, rendered
    by `helm template` (the cluster has no Prometheus Operator CRDs to install them into)."""
    values = kube.workdir / "monitoring-values.json"
    values.write_text(json.dumps(scenario.chart_values(namespace) | MONITORING_VALUES))
    out = kube.helm(
        "template", scenario.RELEASE, str(scenario.CHART), "-n", scenario.RELEASE_NAMESPACE, "-f", str(values)
    )
    documents = [d for d in yaml.safe_load_all(out) if d]
    monitors = [d for d in documents if d["kind"] in ("ServiceMonitor", "PodMonitor")]
    groups = [g for d in documents if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"]]
    return monitors, groups


def start(kube: scenario.Cluster, workdir: Path) -> tuple[int, str]:
    """Starts Prometheus; (its pid, its URL) once it is ready."""
    monitors, groups = rendered_monitoring(kube, scenario.NAMESPACE)
    # The demo's own cluster: its admin kubeconfig (the tests give Prometheus a read-only identity).
    discovery = kubernetes_sd({"kubeconfig_file": str(kube.kubeconfig)})
    server = Prometheus(workdir / "prometheus", scrape_configs(monitors, discovery), groups).start()
    assert server.process is not None
    return server.process.pid, server.url
