"""Fixtures for the chart's tests: the session's apiserver with every CRD a rendering may hold (the
chart's own crds/ folder, and the Prometheus Operator's monitoring.coreos.com kinds from its Go
module), and namespaces that enforce Pod Security "restricted", as a careful platform team's do."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.chart import chart
from tests.harness.controlplane import ControlPlane

CHART_CRDS = chart.CHART / "crds"


def _establish(plane: ControlPlane, files: list[str], names: list[str]) -> None:
    args = [arg for path in files for arg in ("-f", path)]
    plane.kubectl("apply", "--server-side", "--force-conflicts", *args)
    for name in names:
        plane.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@pytest.fixture(scope="session")
def chart_crds(controlplane: ControlPlane) -> ControlPlane:
    """The control plane with the chart's crds/ (both mailtrain.dev kinds, kopf's peering kinds) and the
    Prometheus Operator's CRDs, as `helm install` and a monitoring stack would have put them there."""
    own = sorted(CHART_CRDS.glob("*.yaml"))
    monitoring = chart.monitoring_crd_files()
    names = [name for path in [*own, *monitoring] for name in chart.crd_names(path)]
    _establish(controlplane, [str(path) for path in [*own, *monitoring]], names)
    return controlplane


@pytest.fixture
def restricted_namespaces(controlplane: ControlPlane) -> Iterator[Callable[[], str]]:
    """Makes namespaces that enforce (and warn about) Pod Security "restricted"; deletes them afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"c-{uuid.uuid4().hex[:10]}"
        controlplane.kubectl("create", "namespace", name)
        made.append(name)
        controlplane.kubectl(
            "label",
            "namespace",
            name,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        )
        deadline = time.monotonic() + 30
        while controlplane.api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default") is None:
            assert time.monotonic() < deadline, f"the controller-manager made no ServiceAccount in {name}"
            time.sleep(0.05)
        return name

    yield make
    for name in made:
        controlplane.kubectl("delete", "namespace", name, "--wait=false")
