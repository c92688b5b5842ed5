"""kopf, set up for this operator: its marks on objects, peering, and a real run against the apiserver."""

from __future__ import annotations

import json
import pwd
import socket
import time
from pathlib import Path

import kopf
import pytest

from mailtrain_operator import framework
from mailtrain_operator.settings import OperatorSettings
from tests.harness import net
from tests.harness.controlplane import ControlPlane
from tests.harness.operator_process import STARTED, OperatorProcess


def _configured(**ours: object) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    framework.configure(settings, OperatorSettings.model_validate(ours))
    return settings


def test_kopf_marks_our_objects_with_our_own_names() -> None:
    settings = _configured()
    assert settings.persistence.finalizer == "mailtrain.dev/finalizer"
    progress = settings.persistence.progress_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage)  # not status.kopf: the schema prunes it
    assert progress.prefix == "mailtrain.dev"
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(diffbase, framework.DigestingDiffBaseStorage)
    assert list(diffbase.make_keys(diffbase.key)) == ["mailtrain.dev/last-handled-configuration"]
    assert settings.posting.reporting_component == "mailtrain-operator"
    assert settings.posting.loggers is False


def test_peering_is_mandatory_unless_standalone() -> None:
    peering = _configured(peering_name="mail-ops", peering_lifetime=15).peering
    assert (peering.name, peering.mandatory, peering.standalone) == ("mail-ops", True, False)
    assert peering.lifetime == 15
    alone = _configured(standalone=True).peering
    assert (alone.mandatory, alone.standalone) == (False, True)


def test_each_replica_gets_its_own_priority_and_the_oldest_the_highest() -> None:
    """kopf pauses every replica if two share a priority; the oldest one should be the active one."""
    first = _configured().peering.priority
    second = _configured().peering.priority
    assert first > second > 0
    started = time.time_ns() // 1000 * 1000  # a whole microsecond
    assert framework.seniority_priority(started) == framework.seniority_priority(started + 999)  # 1 µs
    assert framework.seniority_priority(started) > framework.seniority_priority(started + 1000)
    # An exact integer for any JSON reader of the peering object, for the next two centuries.
    year_2200 = 7_258_118_400 * 10**9
    assert 0 < framework.seniority_priority(year_2200) < 2**53


def _campaign(html: str, recipients: int) -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "mailtrain.dev/v1alpha1",
            "kind": "MailCampaign",
            "metadata": {"name": "big", "namespace": "mail", "annotations": {"team": "news"}},
            "spec": {
                "subject": "Hello {{ name }}",
                "html": html,
                "recipients": {"inline": [{"email": f"r{i}@acme.example"} for i in range(recipients)]},
            },
        }
    )


def test_the_diff_base_keeps_large_values_as_digests_so_the_annotation_fits() -> None:
    storage = _configured().persistence.diffbase_storage
    body = _campaign("<p>" + "x" * 1_000_000 + "</p>", recipients=1000)
    essence = storage.build(body=body)
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=essence)
    stored = patch["metadata"]["annotations"]["mailtrain.dev/last-handled-configuration"]
    assert len(stored) < 4096  # the apiserver's limit for all annotations together is 256 KiB
    spec = json.loads(stored)["spec"]
    assert spec["subject"] == "Hello {{ name }}"  # small values stay readable in kopf's diffs
    assert spec["html"].startswith("sha256:") and spec["recipients"]["inline"].startswith("sha256:")
    # A change to a digested value is still a change.
    assert storage.build(body=_campaign("<p>" + "y" * 1_000_000 + "</p>", 1000)) != essence
    assert storage.build(body=_campaign("<p>" + "x" * 1_000_000 + "</p>", 1001)) != essence
    assert storage.build(body=body) == essence


def test_the_operator_runs_kopf_against_the_apiserver_and_stops_on_sigterm(
    controlplane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    operator = OperatorProcess(controlplane, (namespace,), tmp_path)
    try:
        operator.start()  # /healthz: kopf serves it only after the startup handlers succeeded
        operator.wait_for_log(f"{STARTED} {namespace}, standalone", timeout=10)
        # Within a pod's default grace period.
        assert operator.stop(timeout=30) == 0, net.log_tail(operator.log)
    finally:
        operator.stop()
    assert "Traceback" not in operator.log_text()


def test_the_identity_needs_no_password_database_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container whose UID has no /etc/passwd entry (our image's USER 10001) must still start."""

    def no_entry(uid: int) -> None:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    for variable in ("POD_ID", "LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(variable, raising=False)
    assert framework.identity().startswith(socket.gethostname() + "/")
    monkeypatch.setenv("POD_ID", "mailtrain-operator-7d9f-x2k4q")
    assert framework.identity() == "mailtrain-operator-7d9f-x2k4q"


class _GaveUp(Exception):
    """What kopf.run raises when handlers of an activity failed for good (kopf's ActivityError)."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("One or more handlers failed.")
        self.outcomes = {f"h{i}": _Outcome(RuntimeError(r)) for i, r in enumerate(reasons)}
        self.outcomes["fine"] = _Outcome(None)


class _Outcome:
    def __init__(self, exception: BaseException | None) -> None:
        self.exception = exception


def test_kopf_giving_up_is_one_reason_and_anything_else_goes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    def gives_up(**_: object) -> None:
        raise _GaveUp(["cannot serve /metrics on 127.0.0.1:9090: Address already in use", "no CRD"])

    monkeypatch.setattr(kopf, "run", gives_up)
    with pytest.raises(framework.OperatorFailed) as failed:
        framework.run(OperatorSettings())
    assert str(failed.value) == "cannot serve /metrics on 127.0.0.1:9090: Address already in use; no CRD"

    def breaks(**_: object) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(kopf, "run", breaks)
    with pytest.raises(RuntimeError, match="a bug of ours"):
        framework.run(OperatorSettings())
