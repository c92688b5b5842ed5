"""The status loop's pool gauges, which the "pool below its desired processes" alert reads: set from
each round's observation, and gone when the loop ends (the pool deleted, or the replica stopping).

The loop runs for real (observation → status → patch); the apiserver's answers are stood in for, so
that the Deployment's readyReplicas can be any number without a kubelet: a fast unit test beside the
real thing, tests/chart/test_prometheus_alerts.py, where a real Prometheus reads these gauges from the
operator on the local cluster.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from mailtrain_operator import kube
from mailtrain_operator.metrics import METRICS
from mailtrain_operator.pools import observe, status_loop
from mailtrain_operator.pools.builders import PoolRef
from mailtrain_operator.pools.tracking import PoolTrack

POOL = PoolRef("metrics-ns", "bulk", "uid-bulk")
SPEC = {"smtp": {"host": "smtp.example.com"}, "queue": {"processes": 3}, "redis": {"url": "redis://r:6379"}}


def processes(pool: str) -> tuple[float | None, float | None]:
    get = METRICS.registry.get_sample_value
    return (
        get("mailtrain_operator_pool_desired_processes", {"pool": pool}),
        get("mailtrain_operator_pool_ready_processes", {"pool": pool}),
    )


class FakeApiserver:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.deployment: dict[str, Any] | None = None
        self.gone = False  # the pool was deleted: its status patch answers 404
        self.patches = 0
        monkeypatch.setattr(observe, "deployment", self._deployment)
        monkeypatch.setattr(observe, "pod_problem", self._no_problem)
        monkeypatch.setattr(observe, "active_campaigns", self._active_campaigns)
        monkeypatch.setattr(kube, "request", self._request)

    async def _deployment(self, pool: PoolRef) -> dict[str, Any] | None:
        return self.deployment

    async def _no_problem(self, pool: PoolRef) -> None:
        return None

    async def _active_campaigns(self, pool: PoolRef, spec: Any) -> int:
        return 0

    async def _request(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        assert (method, path) == ("PATCH", status_loop.status_path(POOL))
        if self.gone:
            raise ApiException(status=404, reason="Not Found")
        self.patches += 1
        return {}


def deployment(replicas: int, ready: int) -> dict[str, Any]:
    return {"metadata": {"generation": 1}, "spec": {"replicas": replicas}, "status": {"readyReplicas": ready}}


async def until(condition: Any, what: str, timeout: float = 10.0) -> None:
    """Polls with a deadline: a loaded machine may take its time to run the loop's next round."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.01)


def start(track: PoolTrack, stop: asyncio.Event) -> asyncio.Task[None]:
    body = {"metadata": {"name": POOL.name, "namespace": POOL.namespace}, "spec": SPEC}
    return asyncio.create_task(
        status_loop.keep_status(
            POOL,
            body,
            track,
            stopped=stop.is_set,
            warn=lambda reason, message: None,
            logger=logging.getLogger("test"),
            interval=0.02,
        )
    )


async def test_each_round_sets_the_pools_desired_and_ready_processes_and_the_end_removes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apiserver = FakeApiserver(monkeypatch)
    apiserver.deployment = deployment(replicas=3, ready=1)
    track, stop = PoolTrack(), asyncio.Event()
    loop = start(track, stop)
    await asyncio.sleep(0.1)
    assert processes("metrics-ns/bulk") == (None, None)  # nothing said before the first reconcile
    track.handled(1, None)
    await until(lambda: processes("metrics-ns/bulk") == (3, 1), "desired 3, ready 1")
    assert apiserver.patches >= 1  # the same round wrote the status
    apiserver.deployment = deployment(replicas=3, ready=3)
    await until(lambda: processes("metrics-ns/bulk") == (3, 3), "ready 3")
    stop.set()
    track.wake.set()
    await asyncio.wait_for(loop, 2)
    assert processes("metrics-ns/bulk") == (None, None)


async def test_desired_is_the_spec_even_before_the_deployment_exists_and_a_deleted_pool_leaves_no_series(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apiserver = FakeApiserver(monkeypatch)
    track, stop = PoolTrack(), asyncio.Event()
    track.handled(1, None)
    loop = start(track, stop)
    await until(lambda: processes("metrics-ns/bulk") == (3, 0), "desired 3 from the spec, none ready")
    apiserver.gone = True
    apiserver.deployment = deployment(replicas=3, ready=2)  # a change: the next status write finds 404
    await asyncio.wait_for(loop, 2)  # the loop ends on its own when the pool is gone
    assert not stop.is_set()
    assert processes("metrics-ns/bulk") == (None, None)
