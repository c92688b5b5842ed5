"""Prometheus for `make demo`: it scrapes the operator and every sender pod, as the chart's ServiceMonitor
and PodMonitor say, and evaluates the chart's alerts (its PrometheusRule's groups).

It wraps the Prometheus harness (tests.harness.prometheus, kube_sd, prometheus_monitors). Debian's
Prometheus has no Kubernetes discovery, so kube_sd serves the targets over HTTP from a thread; since
Prometheus must outlive `make demo`, both run in a process of their own (`python -m
tests.harness.demo.monitoring <dir>`), which stops Prometheus when it gets SIGTERM (`make demo-down`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from tests.harness import cluster as local_cluster
from tests.harness import net
from tests.harness.binaries import REPO_ROOT
from tests.harness.demo import scenario
from tests.harness.kube_sd import KubeDiscovery
from tests.harness.kubeapi import Json, KubeApi
from tests.harness.prometheus import Prometheus
from tests.harness.prometheus_monitors import scrape_configs

STARTUP_TIMEOUT = 90.0
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


def start(kube: scenario.Cluster, workdir: Path) -> tuple[int, int, str]:
    """Starts the monitoring process; (its pid, Prometheus's pid, Prometheus's URL) once it is ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    monitors, groups = rendered_monitoring(kube, scenario.NAMESPACE)
    (workdir / "monitoring.json").write_text(json.dumps({"monitors": monitors, "groups": groups}))
    ready = workdir / "ready.json"
    ready.unlink(missing_ok=True)
    log = workdir / "monitoring.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.demo.monitoring", str(workdir)],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    net.wait_until(ready.exists, what="prometheus", timeout=STARTUP_TIMEOUT, process=process, log=log)
    found = json.loads(ready.read_text())
    return process.pid, int(found["pid"]), str(found["url"])


def serve(workdir: Path) -> None:
    """The monitoring process: discovery and Prometheus until SIGTERM."""
    state = json.loads(local_cluster.STATE_FILE.read_text())
    pki = local_cluster.STATE_DIR / "pki"
    api = KubeApi(state["server"], pki / "ca.crt", pki / "admin.crt", pki / "admin.key")
    config = json.loads((workdir / "monitoring.json").read_text())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    discovery = KubeDiscovery(api).start()
    server = Prometheus(workdir / "prometheus", scrape_configs(config["monitors"], discovery.sd_config))
    server.rule_groups = config["groups"]
    try:
        server.start()
        assert server.process is not None
        (workdir / "ready.json").write_text(json.dumps({"pid": server.process.pid, "url": server.url}))
        print(f"prometheus at {server.url}, {len(server.rules())} rules", flush=True)
        while not stop.wait(1):
            if server.process.poll() is not None:
                print(f"prometheus exited with {server.process.returncode}", flush=True)
                break
    finally:
        server.stop()
        discovery.stop()
        print(f"stopped at {time.strftime('%H:%M:%S')}", flush=True)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
