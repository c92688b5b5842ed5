"""What kopf, set up by `framework.configure`, leaves on a real object, and what a failing handler costs:
the `mailtrain.dev/finalizer`, progress and diff base in `mailtrain.dev/` annotations, our Events and
no others, and each failure counted in `mailtrain_operator_reconcile_errors_total`.

The operator is the real process with the test-only probe handler (programs/operator_with_probe.py),
standalone in the test's namespace; the objects are ConfigMaps, so the product's handlers stay out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.helpers import eventually
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import KubeApi
from tests.harness.operator_process import PROBE, STARTED, OperatorProcess

PROBE_LABEL = "mailtrain.test/probe"
FINALIZER = "mailtrain.dev/finalizer"
PROGRESS = "mailtrain.dev/probe"  # kopf's progress of the handler with id "probe"
DIFF_BASE = "mailtrain.dev/last-handled-configuration"


@pytest.fixture
def probe_operator(controlplane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(controlplane, (namespace,), tmp_path, name="probe", program=PROBE)
    try:
        operator.start().wait_for_log(STARTED, timeout=60)
        yield operator
    finally:
        operator.stop()


def _errors_counted(operator: OperatorProcess, kind: str) -> float:
    for family in text_string_to_metric_families(operator.scrape()):
        if family.name == "mailtrain_operator_reconcile_errors":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels == {"kind": kind}:
                    return sample.value
    return 0.0


def _events(kube: KubeApi, namespace: str, name: str) -> list[dict[str, Any]]:
    return kube.list(f"/api/v1/namespaces/{namespace}/events", fieldSelector=f"involvedObject.name={name}")


def test_kopf_marks_objects_with_our_names_posts_our_events_and_counts_failures(
    controlplane: ControlPlane, namespace: str, probe_operator: OperatorProcess
) -> None:
    kube = controlplane.api
    path = f"/api/v1/namespaces/{namespace}/configmaps/marked"
    body = {"metadata": {"name": "marked", "labels": {PROBE_LABEL: "yes"}}, "data": {"fail": "yes"}}
    kube.create(f"/api/v1/namespaces/{namespace}/configmaps", body)

    def retrying() -> dict[str, Any] | None:
        found = kube.get(path) or {}
        annotations = found.get("metadata", {}).get("annotations") or {}
        progress = json.loads(annotations.get(PROGRESS, "{}"))
        return found if progress.get("retries", 0) >= 2 else None

    failing = eventually(retrying, timeout=30, what="the probe's progress annotation after two failures")
    assert FINALIZER in failing["metadata"]["finalizers"]
    assert _errors_counted(probe_operator, "ConfigMap") >= 2
    assert _errors_counted(probe_operator, "MailCampaign") == 0  # present, and per kind

    kube.patch(path, {"data": {"fail": "no"}})

    def handled() -> dict[str, Any] | None:
        found = kube.get(path) or {}
        return found if "handled-by-probe" in (found.get("data") or {}) else None

    succeeded = eventually(handled, timeout=30, what="the probe handled the ConfigMap")

    def done() -> dict[str, Any] | None:
        found = kube.get(path) or {}
        annotations = found.get("metadata", {}).get("annotations") or {}
        return found if PROGRESS not in annotations else None

    finished = eventually(done, timeout=10, what="kopf removed its progress once the handler succeeded")
    annotations = finished["metadata"]["annotations"]
    assert DIFF_BASE in annotations
    assert not [key for key in annotations if key.startswith("kopf.zalando.org/")]  # none of kopf's own
    assert succeeded["metadata"]["finalizers"] == [FINALIZER]

    [event] = eventually(lambda: _events(kube, namespace, "marked"), timeout=30, what="the probe's Event")
    assert (event["reason"], event["type"]) == ("ProbeHandled", "Normal")
    assert event["message"] == "handled by probe"
    assert event["metadata"]["name"].startswith("mailtrain-")
    assert event["reportingComponent"] == event["source"]["component"] == "mailtrain-operator"
    # No Event for the failures: they are in the log and the metric (posting.loggers is off).

    kube.delete(path)
    eventually(lambda: kube.get(path) is None, timeout=30, what="kopf removed its finalizer on delete")
