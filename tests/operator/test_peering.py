"""Replicas of the operator elect one active replica through kopf's peering object; the others stand by
and take over when it dies (SIGKILL: after the peering lifetime) or stops (SIGTERM: at once).

Each replica is a real process: the operator's own entry point, with mandatory peering in the test's
namespace, plus the test-only probe handler (programs/operator_with_probe.py). Who is active is
read three ways: kopf's peering object (every live replica, with its priority), kopf's log lines,
and what the probe did: a ConfigMap handled by a replica carries `handled-by-<replica>` in its data,
so a standby that handled anything, or two replicas handling one object, would show. Once the pool
and campaign handlers exist, their effects (a SenderPool's Deployment, a campaign's status) can be
checked the same way: by the object each replica touched.
"""

from __future__ import annotations

import datetime
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.config import kube_config

from mailtrain_operator import kube as operator_kube
from mailtrain_operator import peering
from mailtrain_operator.handlers import startup
from mailtrain_operator.settings import OperatorSettings
from tests.cluster.helpers import eventually
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import Json, KubeApi
from tests.harness.operator_process import PROBE, RESUMED, OperatorProcess

PEERING = "mailtrain-operator"  # the default name
LIFETIME = 10  # MAILTRAIN_OPERATOR_PEERING_LIFETIME: the shortest allowed
PROBE_LABEL = "mailtrain.test/probe"


@pytest.fixture
def replicas(
    kopf_peering_crds: ControlPlane, namespace: str, tmp_path: Path
) -> Iterator[Callable[[str], OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(name: str) -> OperatorProcess:
        replica = OperatorProcess(
            kopf_peering_crds,
            (namespace,),
            tmp_path,
            {"peering_lifetime": str(LIFETIME)},
            name=name,
            peering=PEERING,
            program=PROBE,
        )
        started.append(replica)
        return replica.start()

    yield start
    for replica in started:
        replica.stop()


def _peers(kube: KubeApi, namespace: str) -> dict[str, Any]:
    """The live replicas kopf has recorded in the peering object: identity -> priority, lifetime, ..."""
    found = kube.get(f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{PEERING}") or {}
    return dict(found.get("status") or {})


PAUSED = "Pausing operations in favour of"
_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def _logged_at(log: str, text: str) -> list[datetime.datetime]:
    """When each line holding `text` was logged (kopf's log stamps, in milliseconds)."""
    found = []
    for line in log.splitlines():
        stamp = _STAMP.match(line)
        if stamp and text in line:
            found.append(datetime.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f"))
    return found


def _create_probe(kube: KubeApi, namespace: str, name: str) -> None:
    body: Json = {"metadata": {"name": name, "labels": {PROBE_LABEL: "yes"}}, "data": {}}
    kube.create(f"/api/v1/namespaces/{namespace}/configmaps", body)


def _handled_by(kube: KubeApi, namespace: str, name: str) -> set[str]:
    found = kube.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}") or {}
    keys = (found.get("data") or {}).keys()
    return {key.removeprefix("handled-by-") for key in keys if key.startswith("handled-by-")}


def _handled_by_only(kube: KubeApi, namespace: str, name: str, replica: str) -> bool:
    return _handled_by(kube, namespace, name) == {replica}


def test_one_replica_is_active_and_a_standby_takes_over_when_it_dies_or_stops(
    kopf_peering_crds: ControlPlane, namespace: str, replicas: Callable[[str], OperatorProcess]
) -> None:
    kube = kopf_peering_crds.api
    a = replicas("operator-a")
    a.wait_for_log(RESUMED, timeout=60)  # alone: it created the peering object and resumed
    assert "created the peering object" in a.log_text()
    b = replicas("operator-b")
    eventually(lambda: "operator-b" in _peers(kube, namespace), timeout=60, what="b in the peering object")

    peers = _peers(kube, namespace)
    assert set(peers) == {"operator-a", "operator-b"}
    assert peers["operator-a"]["priority"] > peers["operator-b"]["priority"]  # the older one leads
    assert {peer["lifetime"] for peer in peers.values()} == {LIFETIME}

    _create_probe(kube, namespace, "while-both-live")
    eventually(
        lambda: _handled_by_only(kube, namespace, "while-both-live", "operator-a"),
        timeout=30,
        what="the active replica handled the ConfigMap",
    )
    assert RESUMED not in b.log_text()  # a new replica starts paused and stays so
    for replica in (a, b):
        assert replica.healthy()  # a standby is alive: its liveness probe must not restart it
        assert "Possibly conflicting operators" not in replica.log_text()  # kopf would pause both

    # SIGKILL: a's entry stays in the peering object until it runs out, then b resumes.
    killed = time.monotonic()
    a.kill()
    _create_probe(kube, namespace, "after-kill")
    eventually(
        lambda: _handled_by_only(kube, namespace, "after-kill", "operator-b"),
        timeout=LIFETIME + 30,
        what="the standby handled a ConfigMap created after the kill",
    )
    takeover = time.monotonic() - killed
    print(f"takeover after SIGKILL: {takeover:.1f} s (peering lifetime {LIFETIME} s)")
    assert takeover <= LIFETIME + 5
    assert RESUMED in b.log_text()
    # b saw the first ConfigMap only once it resumed, as handled already: no replica handles twice.
    assert _handled_by(kube, namespace, "while-both-live") == {"operator-a"}
    eventually(lambda: set(_peers(kube, namespace)) == {"operator-b"}, timeout=10, what="a's entry removed")

    # SIGTERM: b says goodbye in the peering object, and the next standby resumes without waiting.
    replicas("operator-c")
    eventually(lambda: "operator-c" in _peers(kube, namespace), timeout=60, what="c in the peering object")
    stopped = time.monotonic()
    assert b.stop() == 0
    _create_probe(kube, namespace, "after-stop")
    eventually(
        lambda: _handled_by_only(kube, namespace, "after-stop", "operator-c"),
        timeout=LIFETIME + 30,
        what="the standby handled a ConfigMap created after the stop",
    )
    handover = time.monotonic() - stopped
    print(f"handover after SIGTERM: {handover:.1f} s")
    assert handover < LIFETIME / 2  # not the expiry of b's entry: it was removed
    assert set(_peers(kube, namespace)) == {"operator-c"}


def test_replicas_started_together_never_are_both_active(
    kopf_peering_crds: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """Launched in the same instant, each replica's first look at the peering object could show only
    itself, and kopf would resume both; each announces itself and waits first (peering.announce)."""
    kube = kopf_peering_crds.api
    settings = {"peering_lifetime": str(LIFETIME)}
    names = ("together-a", "together-b")
    pair = [
        OperatorProcess(
            kopf_peering_crds, (namespace,), tmp_path, settings, name=n, peering=PEERING, program=PROBE
        )
        for n in names
    ]
    try:
        for replica in pair:
            replica.launch()
        eventually(lambda: set(_peers(kube, namespace)) == set(names), timeout=60, what="both announced")
        eventually(
            lambda: any(RESUMED in replica.log_text() for replica in pair),
            timeout=60,
            what="one active replica",
        )
        _create_probe(kube, namespace, "started-together")
        eventually(
            lambda: len(_handled_by(kube, namespace, "started-together")) > 0,
            timeout=30,
            what="the probe handled",
        )
        peers = _peers(kube, namespace)
        senior, junior = sorted(pair, key=lambda r: peers[r.name]["priority"], reverse=True)
        assert _handled_by(kube, namespace, "started-together") == {senior.name}
        resumed = _logged_at(senior.log_text(), RESUMED)
        assert resumed, "the senior replica never became active"
        # Never both active, not even for a moment: the junior resumes only if it looked before the
        # senior announced itself (a slow start), and then it paused before the senior resumed.
        junior_log = junior.log_text()
        if RESUMED in junior_log:
            paused = _logged_at(junior_log, PAUSED)
            assert paused and paused[-1] < resumed[0], junior_log
            assert _logged_at(junior_log, RESUMED)[-1] < paused[-1], junior_log  # and it stayed paused
    finally:
        for replica in pair:
            replica.stop()


@pytest.fixture
def operator_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """Points the operator's own API client, in this process, at a kubeconfig (the client is cached per
    process, and the kubernetes package reads $KUBECONFIG when it is imported: so it is given directly)."""

    def use(kubeconfig: Path) -> None:
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        operator_kube.api_client.cache_clear()

    yield use
    operator_kube.api_client.cache_clear()


async def test_the_peering_objects_are_created_once_per_scope(
    kopf_peering_crds: ControlPlane, namespace: str, operator_client: Callable[[Path], None]
) -> None:
    operator_client(kopf_peering_crds.kubeconfig)
    kube = kopf_peering_crds.api
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster_wide = OperatorSettings(peering_name=name, namespaces=())
    try:
        assert await peering.ensure_objects(cluster_wide) == [f"ClusterKopfPeering {name!r}"]
        assert await peering.ensure_objects(cluster_wide) == []  # there already: left as it is
        assert kube.get(f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}") is not None
    finally:
        kube.delete(f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}")
    namespaced = OperatorSettings(peering_name=name, namespaces=(namespace,))
    assert await peering.ensure_objects(namespaced) == [f"KopfPeering in namespace {namespace!r} {name!r}"]
    assert kube.get(f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{name}") is not None
    alone = OperatorSettings(peering_name=f"{name}-alone", namespaces=(namespace,), standalone=True)
    assert await peering.ensure_objects(alone) == []
    assert kube.get(f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{name}-alone") is None


async def test_without_the_rbac_rules_the_operator_says_what_to_grant(
    kopf_peering_crds: ControlPlane, namespace: str, operator_client: Callable[[Path], None]
) -> None:
    operator_client(kopf_peering_crds.kubeconfig_for_service_account(namespace, "default"))
    expected = f"may not read the KopfPeering in namespace '{namespace}' '{PEERING}': grant the chart's"
    with pytest.raises(peering.PeeringUnavailable, match=expected):
        await peering.ensure_objects(OperatorSettings(namespaces=(namespace,)))


async def test_told_not_to_create_it_a_missing_peering_object_is_named_and_an_existing_one_used(
    kopf_peering_crds: ControlPlane, namespace: str, operator_client: Callable[[Path], None]
) -> None:
    operator_client(kopf_peering_crds.kubeconfig)
    kube = kopf_peering_crds.api
    name = f"t-{uuid.uuid4().hex[:10]}"
    chart_like = OperatorSettings(peering_name=name, namespaces=(namespace,), create_peering=False)
    expected = f"the KopfPeering in namespace '{namespace}' '{name}' does not exist: the chart renders it"
    with pytest.raises(peering.PeeringMissing, match=expected):  # looked for again, unlike the rest
        await peering.ensure_objects(chart_like)
    assert kube.get(f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{name}") is None  # not made
    kube.create(
        f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": name}},
    )
    assert await peering.ensure_objects(chart_like) == []


def test_a_missing_peering_object_is_told_from_a_missing_kind_by_the_apiservers_answer(
    kopf_peering_crds: ControlPlane, namespace: str, operator_client: Callable[[Path], None]
) -> None:
    operator_client(kopf_peering_crds.kubeconfig)
    api = client.CustomObjectsApi(operator_kube.api_client())
    answers = {}
    for plural in (peering.NAMESPACED_PLURAL, "nosuchkinds"):
        with pytest.raises(ApiException) as refused:
            api.get_namespaced_custom_object(peering.GROUP, peering.VERSION, namespace, plural, "absent")
        assert refused.value.status == 404
        answers[plural] = refused.value
    assert peering._object_missing(answers[peering.NAMESPACED_PLURAL], "absent")
    assert not peering._object_missing(answers[peering.NAMESPACED_PLURAL], "another")
    assert not peering._object_missing(answers["nosuchkinds"], "absent")


async def test_told_not_to_create_it_a_missing_kind_is_said_at_once_and_not_looked_for_again(
    kopf_peering_crds: ControlPlane,
    namespace: str,
    operator_client: Callable[[Path], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    operator_client(kopf_peering_crds.kubeconfig)
    monkeypatch.setattr(peering, "NAMESPACED_PLURAL", "nosuchkinds")  # a kind the apiserver does not serve
    chart_like = OperatorSettings(namespaces=(namespace,), create_peering=False)
    with pytest.raises(peering.PeeringUnavailable, match="kind is not installed") as refused:
        await peering.ensure_objects(chart_like)
    assert not isinstance(refused.value, peering.PeeringMissing)


def _operator_told_not_to_create(
    plane: ControlPlane, namespace: str, root: Path, name: str
) -> OperatorProcess:
    return OperatorProcess(plane, (namespace,), root, {"create_peering": "false"}, peering=name)


def test_a_peering_object_that_appears_late_is_waited_for(
    kopf_peering_crds: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    name = f"t-{uuid.uuid4().hex[:10]}"
    operator = _operator_told_not_to_create(kopf_peering_crds, namespace, tmp_path, name).launch()
    try:
        operator.wait_for_log("does not exist", timeout=60)  # it looked once, and looks again
        kopf_peering_crds.api.create(
            f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings",
            {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": name}},
        )
        operator.wait_for_log(RESUMED, timeout=60)
        assert operator.running()
    finally:
        operator.stop()


def test_a_missing_peering_object_it_may_not_create_stops_the_operator_with_one_line(
    kopf_peering_crds: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    name = f"t-{uuid.uuid4().hex[:10]}"
    operator = _operator_told_not_to_create(kopf_peering_crds, namespace, tmp_path, name)
    try:
        # It looks PEERING_LOOKS times, PEERING_LOOK_DELAY seconds apart (28 s), then gives up.
        code = operator.launch().wait_exit(timeout=120)
    finally:
        operator.stop()
    log = operator.log_text()
    assert code == 1 and "Traceback" not in log, log
    assert log.count("(looking again)") == startup.PEERING_LOOKS - 1
    assert (
        f"mailtrain-operator: stopped: the KopfPeering in namespace {namespace!r} {name!r} does not "
        "exist: the chart renders it (templates/peering.yaml); without the chart, create it, or set "
        "MAILTRAIN_OPERATOR_CREATE_PEERING=true and grant `create` on its kind"
    ) in log.splitlines()
