"""A pool's status from what was observed (pure), and drift: what counts as a hand edit. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mailtrain_operator.api import SenderPoolStatus
from mailtrain_operator.conditions import find
from mailtrain_operator.pools import drift
from mailtrain_operator.pools.status import (
    Observation,
    Problem,
    pods_worth_listing,
    pool_status,
    status_patch,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
Json = dict[str, Any]


def _deployment(
    replicas: int = 2, ready: int = 2, updated: int | None = None, generation: int = 3, **status: Any
) -> Json:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas if updated is None else updated,
            "readyReplicas": ready,
        }
        | status,
    }


def _observed(**fields: Any) -> Observation:
    base: dict[str, Any] = {
        "generation": 4,
        "refusal": None,
        "failure": None,
        "desired_replicas": 2,
        "deployment": _deployment(),
        "pod_problem": None,
        "active_campaigns": 3,
        "redis_problem": None,
    }
    return Observation(**(base | fields))


def _conditions(status: SenderPoolStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions or ()}


def test_a_pool_whose_every_process_is_ready() -> None:
    status = pool_status("news", _observed(), None, NOW)
    assert (status.replicas, status.ready_replicas, status.active_campaigns) == (2, 2, 3)
    assert status.selector == "app.kubernetes.io/name=mailtrain-sender,mailtrain.dev/pool=news"
    assert status.observed_generation == 4
    assert _conditions(status) == {"Ready": ("True", "AllReplicasReady"), "Degraded": ("False", "AsExpected")}
    assert all(c.observed_generation == 4 and c.last_transition_time == NOW for c in status.conditions or ())


@pytest.mark.parametrize(
    ("observed", "reason"),
    [
        ({"deployment": None}, "DeploymentMissing"),
        (
            {"deployment": _deployment(generation=5) | {"status": {"observedGeneration": 4}}},
            "RolloutInProgress",
        ),
        ({"deployment": _deployment(updated=1)}, "RolloutInProgress"),
        ({"deployment": _deployment(replicas=3, updated=2), "desired_replicas": 2}, "RolloutInProgress"),
        ({"deployment": _deployment(ready=0)}, "NoReadyReplicas"),
        ({"deployment": _deployment(ready=1)}, "NotAllReplicasReady"),
        ({"refusal": Problem("SenderConfigRejected", "sender.toml: redis.url: bad")}, "InvalidSpec"),
        ({"failure": Problem("ApplyFailed", "applying the pool's children: forbidden")}, "ApplyFailed"),
    ],
    ids=[
        "missing",
        "unseen-generation",
        "updating",
        "old-pods",
        "none-ready",
        "some-ready",
        "refused",
        "failed",
    ],
)
def test_ready_says_why_not(observed: Json, reason: str) -> None:
    ready = find(pool_status("news", _observed(**observed), None, NOW).conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("False", reason)
    assert ready.message


def test_a_pool_scaled_to_zero_is_ready() -> None:
    status = pool_status("news", _observed(desired_replicas=0, deployment=_deployment(0, 0)), None, NOW)
    assert _conditions(status)["Ready"] == ("True", "ScaledToZero")


def test_degraded_names_the_first_problem() -> None:
    refusal = Problem("SenderConfigRejected", "sender.toml: redis.url: Invalid IPv6 URL")
    pods = Problem("CreateContainerConfigError", 'pod p, container sender: secret "smtp-auth" not found')
    redis = Problem("RedisUnreachable", "the pool's Redis cannot be read: ...")
    failure = Problem("ApplyFailed", "applying the pool's children: deployments.apps is forbidden")
    for observed, expected in (
        (_observed(refusal=refusal, pod_problem=pods, redis_problem=redis), refusal),
        (_observed(failure=failure, pod_problem=pods, redis_problem=redis), failure),
        (_observed(pod_problem=pods, redis_problem=redis), pods),
        (_observed(redis_problem=redis, active_campaigns=None), redis),
    ):
        degraded = find(pool_status("news", observed, None, NOW).conditions, "Degraded")
        assert degraded is not None
        assert (degraded.status, degraded.reason, degraded.message) == (
            "True",
            expected.reason,
            expected.message,
        )
    # A private Redis whose pod is not ready yet is no degradation: Ready says the pod is not ready.
    waiting = _observed(
        redis_problem=Problem("RedisNotReady", "no ready endpoint yet"), active_campaigns=None
    )
    assert _conditions(pool_status("news", waiting, None, NOW))["Degraded"] == ("False", "AsExpected")


@pytest.mark.parametrize(
    ("deployment", "desired", "listed"),
    [
        (_deployment(), 2, False),  # healthy: one read per round, no pod list
        (_deployment(0, 0), 0, False),
        (None, 0, False),
        (None, 2, True),
        (_deployment(ready=1), 2, True),  # a process is missing
        # A rollout whose new pod cannot start: the old pod is still ready, nothing is missing.
        (_deployment(replicas=2, ready=1, updated=1), 1, True),
        (_deployment(replicas=2, ready=2, updated=1), 2, True),
        (_deployment(generation=4) | {"status": {"observedGeneration": 3, "readyReplicas": 2}}, 2, True),
    ],
    ids=["healthy", "zero", "no-deployment-zero", "no-deployment", "missing", "stuck", "old-pods", "unseen"],
)
def test_pods_are_listed_when_a_process_is_missing_or_a_rollout_is_not_done(
    deployment: Json | None, desired: int, listed: bool
) -> None:
    assert pods_worth_listing(deployment, desired) is listed


def test_refused_pods_are_degraded_with_the_controllers_words() -> None:
    failure = {
        "type": "ReplicaFailure",
        "status": "True",
        "reason": "FailedCreate",
        "message": 'pods "x" is forbidden: violates PodSecurity "restricted:latest"',
    }
    observed = _observed(deployment=_deployment(ready=0, conditions=[failure]))
    degraded = find(pool_status("news", observed, None, NOW).conditions, "Degraded")
    assert degraded is not None and (degraded.reason, degraded.message) == (
        "ReplicaFailure",
        failure["message"],
    )


def test_an_unchanged_observation_gives_an_unchanged_status() -> None:
    first = pool_status("news", _observed(), None, NOW)
    again = pool_status("news", _observed(), first, NOW + timedelta(minutes=5))
    assert again == first  # so nothing is written
    changed = pool_status(
        "news", _observed(deployment=_deployment(ready=1)), first, NOW + timedelta(minutes=6)
    )
    ready = find(changed.conditions, "Ready")
    degraded = find(changed.conditions, "Degraded")
    assert ready is not None and ready.last_transition_time == NOW + timedelta(minutes=6)
    assert degraded is not None and degraded.last_transition_time == NOW  # its status did not move


def test_a_field_that_became_unknown_is_cleared_by_the_patch() -> None:
    known = pool_status("news", _observed(), None, NOW)
    unknown = pool_status(
        "news",
        _observed(active_campaigns=None, redis_problem=Problem("RedisUnreachable", "down")),
        known,
        NOW,
    )
    patch = status_patch(unknown, known)["status"]
    assert patch["activeCampaigns"] is None  # a merge patch that left it out would keep the old count
    assert patch["readyReplicas"] == 2
    assert status_patch(known, None)["status"]["activeCampaigns"] == 3


def test_drift_is_a_value_the_operator_set_that_changed() -> None:
    container = {"name": "s", "ports": [{"containerPort": 1}]}
    desired: Json = {
        "metadata": {"labels": {"a": "1"}},
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [container]}},
        },
    }
    defaulted: Json = {
        "metadata": {"labels": {"a": "1", "extra": "x"}, "generation": 3},
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 600,
            "template": {
                "spec": {"containers": [{"name": "s", "ports": [{"containerPort": 1, "protocol": "TCP"}]}]}
            },
        },
    }
    assert not drift.drifted(defaulted, desired)  # what the apiserver added is no drift
    scaled = defaulted | {"spec": defaulted["spec"] | {"replicas": 5}}
    assert drift.drifted(scaled, desired)
    relabelled = defaulted | {"metadata": {"labels": {"a": "2"}}}
    assert drift.drifted(relabelled, desired)
    extra_container = defaulted | {
        "spec": defaulted["spec"] | {"template": {"spec": {"containers": [container, {"name": "t"}]}}}
    }
    assert drift.drifted(extra_container, desired)
