"""Fixtures for the operator's tests: the CRDs installed on the session's apiserver, and their schemas."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import yaml

from tests.harness.binaries import REPO_ROOT
from tests.harness.controlplane import ControlPlane

CRDS = REPO_ROOT / "crds"
CRD_FILES = {
    "SenderPool": CRDS / "senderpools.mailtrain.dev.yaml",
    "MailCampaign": CRDS / "mailcampaigns.mailtrain.dev.yaml",
}


@functools.cache
def crd(kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_FILES[kind].read_text())
    return loaded


def schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of the kind's only version."""
    [version] = crd(kind)["spec"]["versions"]
    root: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return root


@pytest.fixture(scope="session")
def crds(controlplane: ControlPlane) -> ControlPlane:
    """The session's control plane with both CRDs established (the files as they are now)."""
    controlplane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    for path in CRD_FILES.values():
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        controlplane.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return controlplane


KOPF_PEERING_CRDS = REPO_ROOT / "helm" / "mailtrain-operator" / "crds" / "kopf-peering.yaml"


@pytest.fixture(scope="session")
def kopf_peering_crds(controlplane: ControlPlane) -> ControlPlane:
    """The session's control plane with kopf's peering kinds established, from the chart's file."""
    controlplane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(KOPF_PEERING_CRDS))
    for name in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        controlplane.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return controlplane
