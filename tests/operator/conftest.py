"""Fixtures for the operator's tests: the CRDs installed on the session's apiserver, and their schemas;
the operator as a process watching a namespace that enforces Pod Security "restricted"."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import net
from tests.harness.binaries import REPO_ROOT
from tests.harness.controlplane import ControlPlane
from tests.harness.local_node import LocalNode
from tests.harness.operator_process import OperatorProcess

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


@pytest.fixture(scope="module")
def pool_namespace(crds: ControlPlane) -> Iterator[str]:
    """A namespace for one test module's pools, enforcing Pod Security "restricted" as a careful platform
    team's would: every sender pod of these tests is admitted under it."""
    name = f"pools-{uuid.uuid4().hex[:10]}"
    crds.kubectl("create", "namespace", name)
    crds.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    deadline = time.monotonic() + 30
    while crds.api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default") is None:
        assert time.monotonic() < deadline, f"the controller-manager made no ServiceAccount in {name}"
        time.sleep(0.05)
    yield name
    crds.kubectl("delete", "namespace", name, "--wait=false")


def _delete_pools(plane: ControlPlane, namespace: str, log: Path) -> None:
    """Delete every SenderPool of the namespace and wait until they are gone. kopf holds a finalizer on
    each pool while its status daemon runs, so this must happen while the operator runs."""
    pools = f"/apis/mailtrain.dev/v1alpha1/namespaces/{namespace}/senderpools"
    for pool in plane.api.list(pools):
        plane.api.delete(f"{pools}/{pool['metadata']['name']}")
    deadline = time.monotonic() + 60
    while plane.api.list(pools):
        assert time.monotonic() < deadline, f"SenderPools not deleted:\n{net.log_tail(log)}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def operator_process(
    crds: ControlPlane, local_node: LocalNode, pool_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator as a process, watching the module's namespace, on a cluster whose node runs pods.
    Started once per module: importing kopf and the kubernetes client alone takes seconds."""
    process = OperatorProcess(crds, (pool_namespace,), tmp_path_factory.mktemp("operator")).start()
    try:
        yield process
        _delete_pools(crds, pool_namespace, process.log)
    finally:
        code = process.stop()
    assert code == 0, f"the operator exited with {code}:\n{net.log_tail(process.log)}"


@pytest.fixture
def operator(
    operator_process: OperatorProcess, pool_namespace: str, crds: ControlPlane
) -> Iterator[OperatorProcess]:
    """The module's operator; the test's pools are deleted after it, so the next test starts clean."""
    yield operator_process
    _delete_pools(crds, pool_namespace, operator_process.log)
