"""The chart's monitoring, end to end, with a real Prometheus server (upstream, hack/prometheus.sh): it
finds the operator and the sender pods through `kubernetes_sd_configs` against the local apiserver, as
an identity that may only read pods, Services and endpoints, with the scrape configs the Prometheus
Operator would make of the release's ServiceMonitor and PodMonitor (tests.harness.prometheus_monitors),
scrapes them at their pod IPs, and evaluates the `spec.groups` of
the release's PrometheusRule. Then, with short `for` durations from values:

- the SMTP relay stops while a campaign sends: MailtrainRelayUnreachable fires for the pool's sender
  pod, and resolves once the relay is back;
- a pool whose image the node cannot run is scaled up: MailtrainSenderPoolBelowDesired fires for
  it, and resolves once the image is corrected. The image is changed first and the pool scaled after:
  an image change alone leaves the pool at full strength (maxUnavailable 0 keeps the old pod until a
  new one is ready), and so does a scale-up in the same patch (the Deployment controller scales the
  old ReplicaSet up first, then surges one pod of the new template, which never becomes ready). Only
  processes added while the rollout is stuck go to the new template, and are missing.

Figures (printed with `-s`): seconds from the pool going short to its alert firing and from the fix
to it resolved; from stopping the relay to its alert firing, and from restarting it to it resolved.
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
from tests.harness.kubeapi import Json
from tests.harness.local_node import LocalNode
from tests.harness.prometheus import Prometheus, discovery_kubeconfig
from tests.harness.prometheus_monitors import kubernetes_sd, scrape_configs
from tests.harness.smtp_sink import RecordingSink
from tests.operator.pool_support import condition, patch_pool, pods, pool_when, ready_pool

FAST = {"interval": "1s", "scrapeTimeout": "1s"}
# Not in the node agent's image table: its containers wait with ImageNotRunnableLocally, as after a
# failed pull.
UNRUNNABLE = "registry.invalid/mailtrain/sender:missing"
# A relay retries every 30 s at most (smtp_pool's backoff): a window longer than that always holds a
# failed attempt while the relay is down, and `for` keeps the test short.
ALERTS = {
    "relayUnreachable": {"window": "35s", "for": "5s"},
    "senderPoolBelowDesired": {"for": "5s"},
    "operatorDown": {"for": "5s"},
}


def _last_evaluation(server: Prometheus, rule: str) -> str:
    """When Prometheus last evaluated the alerting rule (its own timestamp, as a string)."""
    [found] = [r for r in server.rules() if r.get("name") == rule]
    return str(found.get("lastEvaluation", ""))


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


def _processes(server: Prometheus, pool: str) -> tuple[int, int] | None:
    """(desired, ready) of the pool's gauges as Prometheus last scraped them."""
    found = {}
    for gauge in ("desired", "ready"):
        series = server.query(f'mailtrain_operator_pool_{gauge}_processes{{pool="{pool}"}}')
        if len(series) != 1:
            return None
        found[gauge] = int(float(series[0]["value"][1]))
    return found["desired"], found["ready"]


def _pool_goes_short_and_recovers(plane: ControlPlane, server: Prometheus, ns: str) -> tuple[float, float]:
    """Pool `short` (1 process) gets an image the node cannot run, then is scaled to 2:
    MailtrainSenderPoolBelowDesired fires for it, and resolves once the image is corrected.
    Returns the seconds from the scale-up to the alert firing, and from the fix to it resolved."""
    pool = f"{ns}/short"
    patch_pool(plane.api, ns, "short", {"template": {"image": UNRUNNABLE}})
    stuck = pool_when(
        plane.api,
        ns,
        "short",
        lambda p: condition(p, "Degraded").get("reason") == "ImageNotRunnableLocally",
        timeout=60,
        what="short: Degraded, its new pod cannot run",
    )
    # The rollout is stuck, yet the old pod still runs and is ready: nothing is missing.
    assert condition(stuck, "Ready")["reason"] == "RolloutInProgress", stuck["status"]
    assert stuck["status"]["readyReplicas"] == 1, stuck["status"]
    assert _processes(server, pool) == (1, 1)
    assert not _active(server, "MailtrainSenderPoolBelowDesired", pool)

    patch_pool(plane.api, ns, "short", {"queue": {"processes": 2}})
    short = time.monotonic()
    server.wait_for(lambda: _processes(server, pool) == (2, 1), timeout=30, what=f"{pool}: 1 of 2 ready")
    alert = server.wait_for(
        lambda: _firing(server, "MailtrainSenderPoolBelowDesired", pool),
        timeout=60,
        what="MailtrainSenderPoolBelowDesired firing",
    )
    fired_after = time.monotonic() - short
    assert float(alert["value"]) == 1, alert
    assert alert["labels"]["severity"] == "warning", alert
    assert alert["annotations"]["runbook_url"].endswith("#mailtrainsenderpoolbelowdesired"), alert
    assert not _active(server, "MailtrainSenderPoolBelowDesired", f"{ns}/relay")

    patch_pool(plane.api, ns, "short", {"template": None})  # back to the operator's sender image
    fixed = time.monotonic()
    server.wait_for(
        lambda: not _active(server, "MailtrainSenderPoolBelowDesired", pool),
        timeout=60,
        what="MailtrainSenderPoolBelowDesired resolved",
    )
    resolved_after = time.monotonic() - fixed
    assert _processes(server, pool) == (2, 2)
    ready_pool(plane.api, ns, "short", 2)
    return fired_after, resolved_after


def test_prometheus_scrapes_the_release_and_the_pool_and_relay_alerts_fire_and_resolve(
    chart_crds: ControlPlane,
    release: hr.Release,
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
    configs = scrape_configs(monitors, kubernetes_sd({"kubeconfig_file": str(discovery_kubeconfig(plane))}))
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
    # The operator is seen, so MailtrainOperatorDown (for: 5s) is not firing once its rule has been
    # evaluated on what was scraped: two evaluations after the targets were up (no alert at all
    # before the first evaluation would prove nothing).
    evaluations = {_last_evaluation(server, "MailtrainOperatorDown")}

    def evaluated_again() -> str | None:
        last = _last_evaluation(server, "MailtrainOperatorDown")
        return last if last and last not in evaluations else None

    while len(evaluations) < 3:
        evaluations.add(
            server.wait_for(evaluated_again, timeout=30, what="MailtrainOperatorDown evaluated again")
        )
    assert not server.alerts("MailtrainOperatorDown"), server.alerts("MailtrainOperatorDown")  # nor pending
    server.wait_for(
        lambda: server.query(f'mailtrain_operator_pool_desired_processes{{pool="{ns}/short"}} == 1'),
        timeout=30,
        what="the operator's gauge of pool short",
    )

    # A pool short of processes: scaled up while its image cannot run.
    short_fired, short_resolved = _pool_goes_short_and_recovers(plane, server, ns)
    print(
        f"\npool short of a process -> MailtrainSenderPoolBelowDesired firing: {short_fired:.1f} s (for 5s)"
    )
    print(f"image corrected -> MailtrainSenderPoolBelowDesired resolved: {short_resolved:.1f} s")

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
    print(f"relay stopped -> MailtrainRelayUnreachable firing: {fired_after:.1f} s (window 35s, for 5s)")
    print(f"relay restarted -> MailtrainRelayUnreachable resolved: {resolved_after:.1f} s")
    assert [a["labels"]["alertname"] for a in server.alerts(state="firing")] == []

    # The operator's campaign gauge keeps its namespace label as exported_namespace: the scrape's
    # target label `namespace` (the operator's) wins, as under the Prometheus Operator.
    clash = server.query(f'mailtrain_operator_campaigns{{exported_namespace="{ns}"}}')
    assert clash and all(s["metric"]["namespace"] == ns for s in clash), clash
