"""The CRDs on a real apiserver: what the models write is stored as written, `kubectl wait` and
`kubectl scale` work, `kubectl get` shows the columns, and the Helm chart ships the same files.

Statuses are patched by the test itself: the operator that writes them comes in later sections.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from mailtrain_operator import api, conditions
from tests.harness import binaries, net
from tests.harness.controlplane import ControlPlane
from tests.operator import examples
from tests.operator.conftest import CRD_FILES, KOPF_PEERING_CRDS

GROUP_PATH = "/apis/mailtrain.dev/v1alpha1/namespaces"
NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
pytestmark = pytest.mark.usefixtures("crds")


def _apply(plane: ControlPlane, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=examples.dumps(obj))
    kind = obj["kind"].lower() + "s"
    stored = plane.api.get(f"{GROUP_PATH}/{namespace}/{kind}/{obj['metadata']['name']}")
    assert stored is not None
    return stored


def _patch_status(plane: ControlPlane, namespace: str, plural: str, name: str, status: api.ApiModel) -> Any:
    path = f"{GROUP_PATH}/{namespace}/{plural}/{name}/status"
    return plane.api.patch(path, {"status": api.to_status(status)})["status"]


@pytest.mark.parametrize(
    ("example", "model"),
    [
        (examples.campaign(), api.MailCampaignSpec),
        (examples.full_campaign(), api.MailCampaignSpec),
        (examples.pool(), api.SenderPoolSpec),
        (examples.full_pool(), api.SenderPoolSpec),
    ],
    ids=["minimal campaign", "every campaign field", "minimal pool", "every pool field"],
)
def test_the_models_read_what_the_apiserver_stored_and_add_the_same_defaults(
    crds: ControlPlane, namespace: str, example: dict[str, Any], model: type[api.ApiModel]
) -> None:
    stored = _apply(crds, namespace, example)["spec"]
    parsed = model.model_validate(stored)
    assert parsed.model_dump(mode="json", by_alias=True, exclude_none=True) == stored
    # The apiserver's defaults are the model's: parsing what was sent gives what was stored.
    assert (
        model.model_validate(example["spec"]).model_dump(mode="json", by_alias=True, exclude_none=True)
        == stored
    )


def _campaign_status(**changes: Any) -> api.MailCampaignStatus:
    complete = conditions.set_condition(
        None,
        conditions.COMPLETE,
        True,
        "AllRecipientsDone",
        "every recipient was sent, failed or invalid",
        generation=1,
        now=NOW,
    )
    status = api.MailCampaignStatus(
        phase="Completed",
        total=1000,
        sent=990,
        failed=7,
        invalid=3,
        pending=0,
        progress="100%",
        rate=12.5,
        started_at=NOW,
        completed_at=NOW,
        observed_generation=1,
        checkpoint=api.Checkpoint(
            chunk_size=512,
            chunks=2,
            completed_chunks=api.format_ranges([(0, 1)]),
            failed=7,
            invalid=3,
            recipients_digest="sha256:" + "0" * 64,
        ),
        conditions=complete,
    )
    return status.model_copy(update=changes)


def test_every_status_field_the_models_write_is_stored_as_written(crds: ControlPlane, namespace: str) -> None:
    """A field the schema did not know would be pruned silently; here nothing is."""
    _apply(crds, namespace, examples.campaign("done"))
    status = _campaign_status()
    assert _patch_status(crds, namespace, "mailcampaigns", "done", status) == api.to_status(status)
    assert api.MailCampaignStatus.model_validate(api.to_status(status)) == status

    _apply(crds, namespace, examples.pool("default"))
    ready = conditions.set_condition(
        None, conditions.READY, True, "AllReady", "4 of 4 ready", generation=1, now=NOW
    )
    pool_status = api.SenderPoolStatus(
        replicas=4,
        ready_replicas=4,
        active_campaigns=2,
        selector="app.kubernetes.io/name=mailtrain-sender,app.kubernetes.io/instance=default",
        observed_generation=1,
        conditions=ready,
    )
    assert _patch_status(crds, namespace, "senderpools", "default", pool_status) == api.to_status(pool_status)


def _kubectl_env() -> dict[str, str]:
    return {**os.environ, "NO_PROXY": net.LOOPBACK, "no_proxy": net.LOOPBACK}


def _wait_command(plane: ControlPlane, namespace: str, condition: str, timeout: str) -> list[str]:
    kubectl = str(binaries.controlplane_binary("kubectl"))
    return [kubectl, f"--kubeconfig={plane.kubeconfig}", "wait", "-n", namespace, condition, "mc/x", timeout]


def _read_until(stream: IO[bytes], marker: bytes, deadline: float) -> None:
    """Reads the pipe (unbuffered, so select() sees what is left) until `marker` went by."""
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while marker not in seen and time.monotonic() < deadline:
            if selector.select(timeout=deadline - time.monotonic()):
                seen += os.read(stream.fileno(), 65536)
    assert marker in seen, f"kubectl wait did not log {marker!r} in time:\n{seen.decode(errors='replace')}"


@pytest.mark.parametrize(
    "condition",
    ["--for=condition=Complete", "--for=jsonpath={.status.phase}=Completed"],
    ids=["condition", "jsonpath"],
)
def test_kubectl_wait_returns_when_the_campaign_completes(
    crds: ControlPlane, namespace: str, condition: str
) -> None:
    _apply(crds, namespace, examples.campaign("x"))
    sending = _campaign_status(phase="Sending", completed_at=None, progress="40%", conditions=None)
    _patch_status(crds, namespace, "mailcampaigns", "x", sending)
    early = subprocess.run(
        _wait_command(crds, namespace, condition, "--timeout=1s"),
        capture_output=True,
        text=True,
        timeout=30,
        env=_kubectl_env(),
    )
    assert early.returncode != 0, "kubectl wait returned while the campaign was still sending"

    # -v=6 logs "Caches populated" once kubectl watches the object: the patch must wake it up.
    waiting = subprocess.Popen(
        [*_wait_command(crds, namespace, condition, "--timeout=60s"), "-v=6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_kubectl_env(),
    )
    try:
        assert waiting.stderr is not None
        _read_until(waiting.stderr, b"Caches populated", deadline=time.monotonic() + 30)
        _patch_status(crds, namespace, "mailcampaigns", "x", _campaign_status())
        out, err = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
        waiting.wait()
    assert waiting.returncode == 0, err.decode(errors="replace")[-2000:]
    assert b"mailcampaign.mailtrain.dev/x condition met" in out


def test_kubectl_scale_sets_the_number_of_processes(crds: ControlPlane, namespace: str) -> None:
    _apply(crds, namespace, examples.pool("shared"))
    crds.kubectl("scale", "-n", namespace, "sp/shared", "--replicas=6")
    stored = crds.api.get(f"{GROUP_PATH}/{namespace}/senderpools/shared")
    assert stored is not None and stored["spec"]["queue"]["processes"] == 6

    selector = "app.kubernetes.io/instance=shared"
    _patch_status(
        crds, namespace, "senderpools", "shared", api.SenderPoolStatus(replicas=6, selector=selector)
    )
    scale = crds.api.get(f"{GROUP_PATH}/{namespace}/senderpools/shared/scale")
    assert scale is not None
    assert (scale["spec"]["replicas"], scale["status"]["replicas"], scale["status"]["selector"]) == (
        6,
        6,
        selector,
    )


def test_kubectl_get_shows_phase_sent_total_and_progress(crds: ControlPlane, namespace: str) -> None:
    _apply(crds, namespace, examples.campaign("shown"))
    _patch_status(
        crds, namespace, "mailcampaigns", "shown", _campaign_status(phase="Sending", sent=420, progress="42%")
    )
    out = crds.kubectl("get", "mc", "shown", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "PHASE", "SENT", "TOTAL", "PROGRESS", "AGE"]
    assert out[1].split()[:5] == ["shown", "Sending", "420", "1000", "42%"]


def test_the_helm_chart_ships_the_same_crds(tmp_path: Path) -> None:
    helm = str(binaries.controlplane_binary("helm"))
    chart = binaries.REPO_ROOT / "helm" / "mailtrain-operator"
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    shown = subprocess.run(
        [helm, "show", "crds", str(chart)], capture_output=True, text=True, env=env, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    documents = [doc for doc in yaml.safe_load_all(shown.stdout) if doc]
    ours = [doc for doc in documents if doc["spec"]["group"] == "mailtrain.dev"]
    assert sorted(json.dumps(d, sort_keys=True) for d in ours) == sorted(
        json.dumps(yaml.safe_load(path.read_text()), sort_keys=True) for path in CRD_FILES.values()
    )
    # The rest are kopf's peering kinds, from the file the operator's tests install.
    kopf = [doc for doc in yaml.safe_load_all(KOPF_PEERING_CRDS.read_text()) if doc]
    assert [doc for doc in documents if doc not in ours] == kopf
