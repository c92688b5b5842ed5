"""The chart's monitoring, end to end, with a real Prometheus server (Debian's `prometheus`): it finds
the operator and the sender pods through `kubernetes_sd_configs` against the local apiserver, with the
scrape configs the Prometheus Operator would make of the release's ServiceMonitor and PodMonitor
(tests.harness.prometheus_monitors), scrapes them at their pod IPs, and evaluates the `spec.groups` of
the release's PrometheusRule. Then, with short `for` durations from values:

- the SMTP relay stops while a campaign sends: MailtrainRelayUnreachable fires for the pool's sender
  pod, and resolves once the relay is back;
- (not yet here: a pool scaled up with an image the node cannot run kept its ready gauge at the
  desired count, so MailtrainSenderPoolBelowDesired did not fire; see docs/chart.md, "Monitoring".)

Figures (printed with `-s`): seconds from stopping the relay to the alert firing, and from restarting
it to the alert resolved.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart import helm_release as hr
from tests.harness.controlplane import ControlPlane
from tests.harness.kube_sd import KubeDiscovery
from tests.harness.kubeapi import Json
from tests.harness.local_node import LocalNode
from tests.harness.prometheus import Prometheus
from tests.harness.prometheus_monitors import scrape_configs
from tests.harness.smtp_sink import RecordingSink
from tests.operator.pool_support import pods, ready_pool

FAST = {"interval": "1s", "scrapeTimeout": "1s"}
# A relay retries every 30 s at most (smtp_pool's backoff): a window longer than that always holds a
# failed attempt while the relay is down, and `for` keeps the test short.
ALERTS = {
    "relayUnreachable": {"window": "35s", "for": "5s"},
    "senderPoolBelowDesired": {"for": "5s"},
    "operatorDown": {"for": "5s"},
}


@pytest.fixture
def release(
    chart_crds: ControlPlane, local_node: LocalNode, restricted_namespaces: Callable[[], str], tmp_path: Path
) -> Iterator[hr.Release]:
    """A release name in a fresh namespace; whatever the test installed is uninstalled afterwards
    (its campaigns deleted first, while the operator runs)."""
    ns = restricted_namespaces()
    found = hr.Release(chart_crds, f"p{uuid.uuid4().hex[:6]}", ns, tmp_path)
    yield found
    if found.exists():
        chart_crds.kubectl("delete", "mailcampaigns", "--all", "-n", ns, "--timeout=60s", check=False)
        found.uninstall()


@pytest.fixture
def discovery(chart_crds: ControlPlane) -> Iterator[KubeDiscovery]:
    found = KubeDiscovery(chart_crds.api).start()
    yield found
    found.stop()


@pytest.fixture
def prometheus() -> Iterator[list[Prometheus]]:
    started: list[Prometheus] = []
    yield started
    for server in started:
        server.stop()


def _values(ns: str, sink_port: int) -> dict[str, Any]:
    return {
        "watchNamespaces": [ns],
        "peering": {"lifetime": 10},
        "metrics": {"serviceMonitor": {"enabled": True, **FAST}, "podMonitor": {"enabled": True, **FAST}},
        "prometheusRule": {"enabled": True},
        "alerts": ALERTS,
        "pools": [
            hr.pool_value("relay", sink_port, processes=1, rate=10),
            hr.pool_value("short", sink_port, processes=1, rate=10),
        ],
    }


def _targets_up(server: Prometheus, pods_by_job: dict[str, set[str]]) -> list[Json] | None:
    """The active targets, once every pod expected of each job is scraped and up."""
    targets = server.targets()
    for job, expected in pods_by_job.items():
        up = {t["labels"].get("pod") for t in targets if t["labels"]["job"] == job and t["health"] == "up"}
        if not expected <= up:
            return None
    return targets


def _firing(server: Prometheus, name: str, pool: str) -> Json | None:
    found = [a for a in server.alerts(name, "firing") if a["labels"].get("pool") == pool]
    return found[0] if found else None


def _active(server: Prometheus, name: str, pool: str) -> bool:
    return any(a["labels"].get("pool") == pool for a in server.alerts(name))


def test_prometheus_scrapes_the_release_and_the_relay_alert_fires_and_resolves(
    chart_crds: ControlPlane,
    release: hr.Release,
    discovery: KubeDiscovery,
    prometheus: list[Prometheus],
    redis_url: str,
    make_recording_sink: Callable[..., RecordingSink],
    tmp_path: Path,
) -> None:
    plane, ns = chart_crds, release.namespace
    hr.redis_url_secret(plane, ns, redis_url)
    sink = make_recording_sink(record_raw=False)
    release.install(_values(ns, sink.port))
    hr.seconds_to_ready(plane, ns, f"{release.name}-mailtrain-operator", 2, time.monotonic())
    for pool in ("relay", "short"):
        ready_pool(plane.api, ns, pool, 1)

    documents = release.manifest()
    monitors = [d for d in documents if d["kind"] in ("ServiceMonitor", "PodMonitor")]
    [rule] = [d for d in documents if d["kind"] == "PrometheusRule"]
    configs = scrape_configs(monitors, discovery.sd_config)
    server = Prometheus(tmp_path / "prometheus", configs, rule["spec"]["groups"])
    prometheus.append(server.start())
    assert {r["name"] for r in server.rules()} >= {
        "MailtrainRelayUnreachable",
        "MailtrainSenderPoolBelowDesired",
    }

    # Discovery and scrapes: both operator replicas through the metrics Service, each sender pod.
    operators = {
        p["metadata"]["name"]
        for p in plane.api.list(f"/api/v1/namespaces/{ns}/pods", labelSelector=hr.OPERATOR_SELECTOR)
    }
    senders = {p["metadata"]["name"] for pool in ("relay", "short") for p in pods(plane.api, ns, pool)}
    jobs = {
        f"{release.name}-mailtrain-operator-metrics": operators,
        f"{ns}/{release.name}-mailtrain-operator-senders": senders,
    }
    targets = server.wait_for(lambda: _targets_up(server, jobs), timeout=60, what=f"targets up: {jobs}")
    pod_ips = {
        p["metadata"]["name"]: p["status"]["podIP"] for p in plane.api.list(f"/api/v1/namespaces/{ns}/pods")
    }
    for target in targets:
        pod = target["labels"]["pod"]
        assert target["scrapeUrl"].startswith(f"http://{pod_ips[pod]}:9090/"), target
        assert target["labels"]["namespace"] == ns
    # The operator is seen, so MailtrainOperatorDown (for: 5s) goes away and never fires.
    server.wait_for(
        lambda: not server.alerts("MailtrainOperatorDown"), timeout=30, what="no MailtrainOperatorDown"
    )
    server.wait_for(
        lambda: server.query(f'mailtrain_operator_pool_desired_processes{{pool="{ns}/short"}} == 1'),
        timeout=30,
        what="the operator's gauge of pool short",
    )

    # The relay stops while a campaign sends.
    hr.create_campaign(plane, ns, "slow", "relay", 1000)
    server.wait_for(
        lambda: server.query(
            f'sum(mailtrain_sender_recipients_total{{pool="{ns}/relay",outcome="sent"}}) >= 20'
        ),
        timeout=60,
        what="20 recipients sent, as Prometheus sees it",
    )
    [relay_pod] = [p["metadata"]["name"] for p in pods(plane.api, ns, "relay")]
    broken = time.monotonic()
    sink.stop()

    alert = server.wait_for(
        lambda: _firing(server, "MailtrainRelayUnreachable", f"{ns}/relay"),
        timeout=120,
        what="MailtrainRelayUnreachable firing",
    )
    fired_after = time.monotonic() - broken
    assert alert["labels"]["pod"] == relay_pod, alert
    assert alert["labels"]["severity"] == "critical", alert
    assert alert["annotations"]["runbook_url"].endswith("#mailtrainrelayunreachable"), alert
    assert not _active(server, "MailtrainRelayUnreachable", f"{ns}/short")  # it had nothing to send
    sink.start()  # the same port
    restarted = time.monotonic()
    server.wait_for(
        lambda: not _active(server, "MailtrainRelayUnreachable", f"{ns}/relay"),
        timeout=60,
        what="MailtrainRelayUnreachable resolved",
    )
    resolved_after = time.monotonic() - restarted
    print(f"\nrelay stopped -> MailtrainRelayUnreachable firing: {fired_after:.1f} s (window 35s, for 5s)")
    print(f"relay restarted -> MailtrainRelayUnreachable resolved: {resolved_after:.1f} s")
    assert [a["labels"]["alertname"] for a in server.alerts(state="firing")] == []

    # The operator's campaign gauge keeps its namespace label as exported_namespace: the scrape's
    # target label `namespace` (the operator's) wins, as under the Prometheus Operator.
    clash = server.query(f'mailtrain_operator_campaigns{{exported_namespace="{ns}"}}')
    assert clash and all(s["metric"]["namespace"] == ns for s in clash), clash
