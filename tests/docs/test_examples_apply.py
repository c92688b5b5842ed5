"""Every Kubernetes object of examples/ applied to the local cluster's apiserver with the operator running,
and what the operator makes of it: the docs' pools and campaigns are ones it accepts, not only ones the
schema lets through.

The files are applied as an application team would, `kubectl apply --server-side` in a namespace (the
examples of one group of folders share one, see examples.NAMESPACE_GROUPS; an object that names its
own namespace goes there). The chart's bundled Redis is stood in for by the test's redis-server: its
URL Secret (`mailtrain-operator-redis-url`, what the docs' release writes) is in each namespace first,
so the pools that name it resolve and their campaigns are really published, lists read and counted.
Nothing sends: no node runs the sender pods, so a published campaign stays Sending.

What is checked, for every file, examples/seed/ included:
- the apiserver accepts every object, without a warning;
- every SenderPool is accepted by the operator (no SenderConfigRejected, RedisNotConfigured or
  ChildObjectRejected) and its Deployment has `queue.processes` replicas;
- every MailCampaign gets a phase from the operator and is not Failed, except a `url` list that this
  machine cannot download (UrlUnreachable); one with `suspend` is Paused, one whose `startAt` is ahead is
  Scheduled.
For the docs' own groups also: each campaign on a pool whose Redis resolves is Sending, with every row of
its list counted in `total` and none invalid.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.cluster.helpers import eventually
from tests.docs import examples, lists
from tests.harness import net
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json
from tests.harness.operator_process import OperatorProcess

BUNDLED_REDIS_SECRET = "mailtrain-operator-redis-url"
REJECTED = {"SenderConfigRejected", "RedisNotConfigured", "ChildObjectRejected", "InvalidSpec"}
DOCS_GROUPS = {
    "team",
    "install",
    "operations",
}  # the docs' own folders; others (seed/) are judged generically
API = "/apis/mailtrain.dev/v1alpha1/namespaces/{ns}/{plural}"


def _namespace_of(doc: Json, groups: dict[str, str], path: Path) -> str:
    return str(doc.get("metadata", {}).get("namespace") or groups[examples.group(path)])


def _create_namespace(plane: ControlPlane, name: str, made: list[str]) -> None:
    if plane.api.get(f"/api/v1/namespaces/{name}") is None:
        plane.kubectl("create", "namespace", name)
        made.append(name)


@pytest.fixture
def applied(
    chart_crds: ControlPlane, redis_url: str, tmp_path: Path
) -> Iterator[list[tuple[Path, str, Json]]]:
    """Every example object applied, with the operator watching their namespaces; yields (file,
    namespace, object) and deletes pools and campaigns while the operator still runs."""
    plane = chart_crds
    paths = examples.manifests()
    groups = {examples.group(path): f"ex-{examples.group(path)}-{uuid.uuid4().hex[:6]}" for path in paths}
    placed = [
        (path, _namespace_of(doc, groups, path), doc) for path in paths for doc in examples.documents(path)
    ]
    namespaces = sorted({ns for _, ns, doc in placed if doc["kind"] != "Namespace"} | set(groups.values()))
    made: list[str] = []
    for _, _, doc in placed:  # a file's own Namespace objects first, as `kubectl apply` of it would
        if doc["kind"] == "Namespace":
            plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(doc))
    for ns in namespaces:
        _create_namespace(plane, ns, made)
        plane.api.create(
            f"/api/v1/namespaces/{ns}/secrets",
            {"metadata": {"name": BUNDLED_REDIS_SECRET}, "stringData": {"url": redis_url}},
        )
    operator = OperatorProcess(plane, tuple(namespaces), tmp_path / "operator").start()
    try:
        for path in paths:
            by_namespace: dict[str, list[Json]] = {}
            for doc in examples.documents(path):
                if doc["kind"] != "Namespace":
                    by_namespace.setdefault(_namespace_of(doc, groups, path), []).append(doc)
            for ns, docs in by_namespace.items():
                stream = "\n---\n".join(json.dumps(doc) for doc in docs)
                result = plane.kubectl(
                    "apply",
                    "--server-side",
                    "--field-manager=examples",
                    "-n",
                    ns,
                    "-f",
                    "-",
                    input=stream,
                    check=False,
                )
                assert result.returncode == 0, f"{examples.relative(path)}: {result.stderr}"
                warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
                assert not warnings, f"{examples.relative(path)}: {warnings}"
        yield placed
        for plural in ("senderpools", "mailcampaigns"):  # pools first: a campaign without one goes at once
            for ns in namespaces:
                for found in plane.api.list(API.format(ns=ns, plural=plural)):
                    plane.api.delete(f"{API.format(ns=ns, plural=plural)}/{found['metadata']['name']}")
            eventually(
                lambda p=plural: not any(plane.api.list(API.format(ns=ns, plural=p)) for ns in namespaces),  # type: ignore[misc]
                timeout=60,
                what=f"every example's {plural} deleted\n{net.log_tail(operator.log)}",
            )
    finally:
        code = operator.stop()
        for ns in made:
            plane.kubectl("delete", "namespace", ns, "--wait=false")
    assert code == 0, f"the operator exited with {code}:\n{net.log_tail(operator.log)}"
    assert "Traceback" not in operator.log_text(), net.log_tail(operator.log)


def _status(plane: ControlPlane, ns: str, plural: str, name: str) -> Json | None:
    """The object once the operator's status describes its current generation."""
    found = plane.api.get(f"{API.format(ns=ns, plural=plural)}/{name}")
    if found is None:
        return None
    status = found.get("status") or {}
    return found if status.get("observedGeneration") == found["metadata"]["generation"] else None


def _condition(obj: Json, kind: str) -> Json:
    return next((c for c in (obj.get("status") or {}).get("conditions") or () if c["type"] == kind), {})


def _check_pool(plane: ControlPlane, where: str, ns: str, pool: Json) -> None:
    name = pool["metadata"]["name"]
    found = eventually(lambda: _status(plane, ns, "senderpools", name), timeout=30, what=f"{where}: status")
    for kind in ("Ready", "Degraded"):
        assert _condition(found, kind).get("reason") not in REJECTED, f"{where}: {_condition(found, kind)}"
    processes = (pool["spec"].get("queue") or {}).get("processes", 1)
    deployment = eventually(
        lambda: plane.api.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}-sender"),
        timeout=30,
        what=f"{where}: its Deployment",
    )
    assert deployment["spec"]["replicas"] == processes, where


def _expected_phase(campaign: Json) -> set[str]:
    spec = campaign["spec"]
    if spec.get("suspend"):
        return {"Paused"}
    start = spec.get("startAt")
    if start and datetime.fromisoformat(start.replace("Z", "+00:00")) > datetime.now(UTC):
        return {"Scheduled"}
    if "url" in spec["recipients"]:
        return {"Pending", "Failed"}
    return {"Pending", "Sending", "Completed"}


def _check_campaign(plane: ControlPlane, where: str, ns: str, campaign: Json, strict: bool) -> Json:
    """strict: the docs' own campaigns, whose pools resolve, must get past Pending; another group's
    may wait there for a pool or a Redis that only its own set-up provides."""
    name = campaign["metadata"]["name"]
    wanted = _expected_phase(campaign) - ({"Pending"} if strict else set())

    def settled() -> Json | None:
        found = _status(plane, ns, "mailcampaigns", name)
        phase = None if found is None else found["status"].get("phase")
        assert phase != "Failed" or "Failed" in wanted, f"{where}: {_condition(found or {}, 'Failed')}"
        return found if phase in wanted else None

    found = eventually(settled, timeout=30, what=f"{where}: a phase in {sorted(wanted)}")
    failed = _condition(found, "Failed")
    if failed.get("status") == "True":
        assert "url" in campaign["spec"]["recipients"] and failed["reason"] == "UrlUnreachable", (
            f"{where}: {failed}"
        )
    return found


def test_every_example_object_is_accepted_by_the_apiserver_and_the_operator(
    applied: list[tuple[Path, str, Json]], chart_crds: ControlPlane
) -> None:
    kinds = {doc["kind"] for _, _, doc in applied}
    assert {"SenderPool", "MailCampaign", "ConfigMap", "Secret"} <= kinds, kinds
    sending = 0
    for path, ns, doc in applied:
        where = f"{examples.relative(path)}: {doc['kind']} {doc['metadata']['name']}"
        if doc["kind"] == "SenderPool":
            _check_pool(chart_crds, where, ns, doc)
        elif doc["kind"] == "MailCampaign":
            strict = examples.group(path) in DOCS_GROUPS
            found = _check_campaign(chart_crds, where, ns, doc, strict)
            if not strict or found["status"]["phase"] != "Sending":
                continue
            source = lists.source_text(doc, [other for _, n, other in applied if n == ns])
            assert source is not None, where
            status = found["status"]
            assert (status.get("total"), status.get("invalid", 0)) == (lists.count_rows(source), 0), (
                f"{where}: {status}"
            )
            sending += 1
    assert sending >= 5, f"only {sending} of the docs' campaigns were published"
