"""Every Helm values file of examples/ rendered by the real `helm template` (the release and namespace of
docs/install.md) and sent to a server-side dry-run against the apiserver, with the chart's CRDs and the
Prometheus Operator's installed and every namespace the rendering uses enforcing Pod Security
"restricted": every object accepted, no warning. And the quickstart holds together: its values write
the bundled Redis's URL Secret, under the name examples/pools/default.yaml uses, into the namespace
the quickstart applies that pool in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.chart import chart
from tests.docs import examples
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json

RELEASE = "mailtrain-operator"
NAMESPACE = "mailtrain-system"


def _render(values: Path, directory: Path) -> list[Json]:
    result = chart.helm(
        "template", RELEASE, str(chart.CHART), "-n", NAMESPACE, "-f", str(values), directory=directory
    )
    assert result.returncode == 0, f"{examples.relative(values)}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def namespaces(chart_crds: ControlPlane) -> Iterator[Callable[[str], None]]:
    """Makes a namespace with Pod Security "restricted" enforced and warned about, if it is missing;
    they go when the module's tests are done (one deleted in between would still be terminating)."""
    made: list[str] = []

    def ensure(name: str) -> None:
        if chart_crds.api.get(f"/api/v1/namespaces/{name}") is not None:
            return
        chart_crds.kubectl("create", "namespace", name)
        made.append(name)
        chart_crds.kubectl(
            "label",
            "namespace",
            name,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        )

    yield ensure
    for name in made:
        chart_crds.kubectl("delete", "namespace", name, "--wait=false")


@pytest.mark.parametrize("values", examples.values_files(), ids=examples.relative)
def test_a_values_file_installs_under_restricted_pod_security(
    values: Path, chart_crds: ControlPlane, namespaces: Callable[[str], None], tmp_path: Path
) -> None:
    rendered = _render(values, tmp_path)
    assert rendered, examples.relative(values)
    for name in {
        NAMESPACE,
        *(str(doc["metadata"]["namespace"]) for doc in rendered if "namespace" in doc["metadata"]),
    }:
        namespaces(name)
    result = chart.dry_run(chart_crds, rendered)
    assert result.returncode == 0, f"{examples.relative(values)}: {result.stderr}"
    assert not result.warnings, f"{examples.relative(values)}: {result.warnings}"


def test_the_quickstart_writes_the_redis_secret_its_pool_names(tmp_path: Path) -> None:
    [pool] = examples.documents(examples.EXAMPLES / "pools" / "default.yaml")
    wanted = pool["spec"]["redis"]["urlSecretRef"]
    script = (examples.EXAMPLES / "install" / "quickstart.sh").read_text()
    assert "-n mail apply -f examples/pools/default.yaml" in script
    rendered = _render(examples.EXAMPLES / "install" / "quickstart.yaml", tmp_path)
    secrets = {
        (doc["metadata"]["namespace"], doc["metadata"]["name"]): doc
        for doc in rendered
        if doc["kind"] == "Secret"
    }
    assert ("mail", wanted["name"]) in secrets, sorted(secrets)
    assert wanted["key"] in secrets["mail", wanted["name"]]["data"]
