"""The operator's /metrics: every family the issue asks for, in a scrape of the real process that
promtool accepts; the server stops with kopf on SIGTERM; an address in use stops the operator with
the reason."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from mailtrain_operator.metrics import METRICS
from tests.harness import binaries, net
from tests.harness.controlplane import ControlPlane
from tests.harness.operator_process import STARTED, OperatorProcess

# The list, by the names dashboards and alerts will use (counters without `_total`).
REQUIRED = {
    "mailtrain_operator_campaigns": "gauge",  # by phase
    "mailtrain_operator_reconcile_errors": "counter",  # by kind
    "mailtrain_operator_recipients_loaded": "counter",
    "mailtrain_operator_publish_seconds": "histogram",
    "mailtrain_operator_harvest_seconds": "histogram",
    "mailtrain_operator_redis_errors": "counter",
}


def test_a_scrape_returns_every_family_and_the_server_stops_on_sigterm(
    controlplane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    operator = OperatorProcess(controlplane, (namespace,), tmp_path, name="metrics").start()
    try:
        operator.wait_for_log("serving /metrics on", timeout=60)
        exposition = operator.scrape()
        families = {family.name: family for family in text_string_to_metric_families(exposition)}
        defined = {family.name: family.type for family in METRICS.registry.collect()}
        assert REQUIRED.items() <= defined.items()  # a rename would break dashboards
        # Every family, and only ours (prometheus_client adds a `_created` gauge beside each counter
        # and histogram in the text format).
        scraped = {name: f.type for name, f in families.items() if not name.endswith("_created")}
        assert scraped == defined

        errors = {s.labels["kind"]: s.value for s in families["mailtrain_operator_reconcile_errors"].samples}
        assert errors == {"SenderPool": 0.0, "MailCampaign": 0.0}  # present from the start, for rate()
        loaded = families["mailtrain_operator_recipients_loaded"].samples
        assert {s.labels["outcome"] for s in loaded} == {"published", "invalid", "duplicate"}

        promtool = binaries.prometheus_binary("promtool")
        checked = subprocess.run(
            [str(promtool), "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=30
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr

        assert operator.stop() == 0
    finally:
        operator.stop()
    log = operator.log_text()
    assert "Activity 'stop_metrics' succeeded" in log
    for trouble in ("Traceback", "Unclosed", "was destroyed but it is pending"):
        assert trouble not in log, log
    assert not net.port_accepts(operator.metrics_port)


def test_a_metrics_address_in_use_stops_the_operator_with_the_reason(
    controlplane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind((net.LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        operator = OperatorProcess(controlplane, (namespace,), tmp_path, name="taken", metrics_port=port)
        try:
            code = operator.launch().wait_exit(timeout=60)
        finally:
            operator.stop()
    assert code != 0
    assert f"cannot serve /metrics on {net.LOOPBACK}:{port}: Address already in use" in operator.log_text()
    assert STARTED in operator.log_text()  # it got as far as that, and no further
    reason = f"cannot serve /metrics on {net.LOOPBACK}:{port}: Address already in use"
    assert f"mailtrain-operator: stopped: {reason}" in operator.log_text().splitlines()
    assert code == 1 and "Traceback" not in operator.log_text()
