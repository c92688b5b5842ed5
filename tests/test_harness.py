"""Smoke tests proving the harness runs real components, not stand-ins."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import redis

from tests.harness import binaries
from tests.harness.controlplane import ControlPlane
from tests.harness.smtp_sink import Fault, PostfixSink, RecordingSink

CRDS = binaries.REPO_ROOT / "crds"
VERSIONS = dict(
    line.split("=", 1)
    for line in (binaries.REPO_ROOT / "hack/controlplane/versions.env").read_text().splitlines()
    if line and not line.startswith("#")
)


@pytest.fixture(scope="session")
def crds(controlplane: ControlPlane) -> None:
    controlplane.kubectl("apply", "--server-side", "-f", str(CRDS))
    for name in ("mailcampaigns.mailtrain.dev", "senderpools.mailtrain.dev"):
        controlplane.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


def _campaign(name: str, recipients: dict[str, object]) -> str:
    return json.dumps(
        {
            "apiVersion": "mailtrain.dev/v1alpha1",
            "kind": "MailCampaign",
            "metadata": {"name": name},
            "spec": {
                "from": {"address": "news@acme.example"},
                "subject": "Hello {{ name }}",
                "text": "Hi",
                "recipients": recipients,
            },
        }
    )


def test_versions_are_stamped(controlplane: ControlPlane) -> None:
    out = json.loads(controlplane.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == f"v{VERSIONS['KUBE_VERSION']}"
    assert out["clientVersion"]["gitVersion"] == f"v{VERSIONS['KUBE_VERSION']}"
    helm = binaries.controlplane_binary("helm")
    version = subprocess.run(
        [str(helm), "version", "--template", "{{.Version}}"], capture_output=True, text=True, check=True
    ).stdout
    assert version == f"v{VERSIONS['HELM_VERSION']}"
    for program in ("prometheus", "promtool"):
        stamped = subprocess.run(
            [str(binaries.prometheus_binary(program)), "--version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        # Kubernetes discovery built in: what the chart's monitoring tests find their targets with.
        assert stamped.startswith(f"{program}, version {VERSIONS['PROMETHEUS_VERSION']} "), stamped
        assert "enable_kubernetes_sd" in stamped, stamped


@pytest.mark.usefixtures("crds")
def test_crd_objects_are_created_with_kubectl_and_validated(
    controlplane: ControlPlane, namespace: str
) -> None:
    controlplane.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=_campaign("welcome", {"inline": [{"email": "a@b.example"}]}),
    )
    stored = json.loads(controlplane.kubectl("get", "mc", "welcome", "-n", namespace, "-o", "json").stdout)
    # Defaults come from the apiserver's structural schema, so the object really went through it.
    assert stored["spec"]["senderPool"] == "default"
    assert stored["spec"]["priority"] == 0
    assert stored["spec"]["suspend"] is False

    rejected = controlplane.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        check=False,
        input=_campaign("two-sources", {"inline": [], "url": {"href": "https://x.example/l.csv"}}),
    )
    assert rejected.returncode != 0
    assert "exactly one of inline, configMapRef, secretRef or url" in rejected.stderr


def test_non_admin_identity_is_forbidden_until_granted(controlplane: ControlPlane, namespace: str) -> None:
    controlplane.kubectl("get", "secrets", "-n", namespace)  # the admin may
    sa_kubeconfig = controlplane.kubeconfig_for_service_account(namespace, "nobody")

    denied = controlplane.kubectl("get", "secrets", "-n", namespace, kubeconfig=sa_kubeconfig, check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert f"system:serviceaccount:{namespace}:nobody" in denied.stderr

    controlplane.kubectl(
        "create", "role", "secret-reader", "--verb=list", "--resource=secrets", "-n", namespace
    )
    controlplane.kubectl(
        "create",
        "rolebinding",
        "secret-reader",
        "--role=secret-reader",
        f"--serviceaccount={namespace}:nobody",
        "-n",
        namespace,
    )
    deadline = time.monotonic() + 15  # the authorizer's cache follows the binding within moments
    while True:
        allowed = controlplane.kubectl(
            "get", "secrets", "-n", namespace, kubeconfig=sa_kubeconfig, check=False
        )
        if allowed.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert allowed.returncode == 0, allowed.stderr


def test_redis_answers_ping(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping() is True
        assert client.info("server")["redis_version"].split(".")[0] >= "7"
        client.set("k", "v")
        assert client.get("k") == b"v"


def _message(to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Acme News <news@acme.example>"
    msg["To"] = to
    msg["Subject"] = "Grüße aus Köln"
    msg["Message-ID"] = "<smoke-1@acme.example>"
    msg["List-Unsubscribe"] = "<https://acme.example/u/abc>"
    msg.set_content("Hallo Welt\n")
    return msg


async def test_message_arrives_at_recording_sink_with_headers(smtp_sink: RecordingSink) -> None:
    await aiosmtplib.send(_message("Reader <reader@example.org>"), hostname="127.0.0.1", port=smtp_sink.port)
    [received] = smtp_sink.wait_for(1)
    assert received.mail_from == "news@acme.example"
    assert received.rcpt_tos == ["reader@example.org"]
    msg = received.message
    assert msg["Subject"] == "Grüße aus Köln"
    assert msg["Message-ID"] == "<smoke-1@acme.example>"
    assert msg["List-Unsubscribe"] == "<https://acme.example/u/abc>"
    assert msg.get_content() == "Hallo Welt\n"


async def test_recording_sink_injects_faults(make_recording_sink: Callable[..., RecordingSink]) -> None:
    sink = make_recording_sink(
        faults=[
            Fault(stage="rcpt", code=550, match="^gone@"),
            Fault(stage="rcpt", code=451, match="^slow@", times=1),
            Fault(stage="data", drop=True, match="^drop@"),
        ]
    )
    kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": sink.port}
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await aiosmtplib.send(_message("gone@example.org"), **kwargs)
    assert refused.value.recipients[0].code == 550
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as deferred:
        await aiosmtplib.send(_message("slow@example.org"), **kwargs)
    assert deferred.value.recipients[0].code == 451
    await aiosmtplib.send(_message("slow@example.org"), **kwargs)  # the second attempt passes
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await aiosmtplib.send(_message("drop@example.org"), **kwargs)
    assert sink.recipient_counts() == {"slow@example.org": 1}


async def test_postfix_smtp_sink_accepts_and_rejects(make_postfix_sink: Callable[..., PostfixSink]) -> None:
    accepting = make_postfix_sink()
    response, _ = await aiosmtplib.send(_message("a@example.org"), hostname="127.0.0.1", port=accepting.port)
    assert response == {}  # no recipient refused

    rejecting = make_postfix_sink(hard_reject=("RCPT",))
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await aiosmtplib.send(_message("a@example.org"), hostname="127.0.0.1", port=rejecting.port)
    assert refused.value.recipients[0].code == 550

    closing = make_postfix_sink(reply_421=("MAIL",))
    with pytest.raises(aiosmtplib.SMTPResponseException) as closed:
        await aiosmtplib.send(_message("a@example.org"), hostname="127.0.0.1", port=closing.port)
    assert closed.value.code == 421


def test_promtool_runs_rule_tests(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(
        "groups:\n- name: g\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 1m\n"
    )
    (tmp_path / "test.yaml").write_text(
        "rule_files: [rules.yaml]\nevaluation_interval: 1m\ntests:\n- interval: 1m\n"
        "  input_series:\n  - series: 'up{job=\"x\"}'\n    values: '0 0 0'\n"
        "  alert_rule_test:\n  - eval_time: 2m\n    alertname: Down\n"
        "    exp_alerts:\n    - exp_labels: {job: x}\n"
    )
    promtool = binaries.prometheus_binary("promtool")
    result = subprocess.run(
        [str(promtool), "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_helm_checks_kube_version_against_the_real_server(controlplane: ControlPlane, tmp_path: Path) -> None:
    helm = str(binaries.controlplane_binary("helm"))
    chart = binaries.REPO_ROOT / "helm" / "mailtrain-operator"
    env = {"KUBECONFIG": str(controlplane.kubeconfig), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run(
        [helm, "install", "smoke", str(chart), "--dry-run=server"], capture_output=True, text=True, env=env
    )
    assert ok.returncode == 0, ok.stderr

    too_new = tmp_path / "chart"
    subprocess.run(["cp", "-rL", str(chart), str(too_new)], check=True)
    chart_yaml = too_new / "Chart.yaml"
    chart_yaml.write_text(
        chart_yaml.read_text().replace('kubeVersion: ">=1.30.0-0"', 'kubeVersion: ">=1.99.0-0"')
    )
    refused = subprocess.run(
        [helm, "install", "smoke", str(too_new), "--dry-run=server"], capture_output=True, text=True, env=env
    )
    assert refused.returncode != 0
    assert f"v{VERSIONS['KUBE_VERSION']}" in refused.stderr  # helm read the stamped server version
