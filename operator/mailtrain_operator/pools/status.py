"""A SenderPool's status from what was observed: pure, no I/O.

Ready says whether every process the spec asks for runs and is ready, and if not, why:

    InvalidSpec          the spec was refused (Degraded says by whom); the children were left alone
    ApplyFailed          applying the children failed, and is being retried (Degraded says why)
    DeploymentMissing    the Deployment does not exist (yet)
    RolloutInProgress    pods of an older template still run, or new ones are not available yet
    NoReadyReplicas      no sender is ready
    NotAllReplicasReady  some are
    AllReplicasReady     all are (True)
    ScaledToZero         queue.processes is 0 (True: nothing is wrong, and nothing is sent)

Degraded says whether the pool cannot run as specified, the first of:
- the spec was refused: SenderConfigRejected, RedisNotConfigured, ChildObjectRejected, InvalidSpec;
- applying it failed (ApplyFailed: the apiserver refused the operator, e.g. its RBAC, or was away);
- a pod cannot start: the kubelet's reason (e.g. CreateContainerConfigError for a missing Secret), or
  the Deployment's (ReplicaFailure when pods are refused, ProgressDeadlineExceeded);
- the pool's Redis cannot be read: RedisUnreachable, SecretNotFound, ...
Otherwise it is False, AsExpected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailtrain_operator.api import Condition, SenderPoolStatus, to_status
from mailtrain_operator.conditions import DEGRADED, READY, set_condition
from mailtrain_operator.pools.names import deployment_name, selector_text

Json = dict[str, Any]
INVALID_SPEC = "InvalidSpec"
APPLY_FAILED = "ApplyFailed"
# A private Redis whose pod is not ready yet is the Ready condition's business, not a degradation.
_NOT_A_DEGRADATION = frozenset({"RedisNotReady"})


@dataclass(frozen=True)
class Problem:
    reason: str  # CamelCase
    message: str  # one line, for people: what is wrong and what to do


@dataclass(frozen=True)
class Observation:
    """What the status is made of, gathered by observe.py."""

    generation: int  # the spec generation the operator last handled
    refusal: Problem | None  # that generation was not applied, and why
    failure: Problem | None  # applying it failed, and is being retried
    desired_replicas: int
    deployment: Json | None
    pod_problem: Problem | None
    active_campaigns: int | None  # None: the pool's Redis could not be read
    redis_problem: Problem | None


def _rollout(deployment: Json, desired: int) -> str | None:
    """Why the Deployment has not replaced every pod of an older template yet, or None."""
    meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return "the Deployment's controller has not seen the latest template yet"
    updated = status.get("updatedReplicas", 0)
    if updated < desired:
        return f"{updated} of {desired} pods run the current template"
    old = status.get("replicas", 0) - updated
    if old > 0:
        return f"{old} pod(s) of an older template are still running"
    return None  # the pods' readiness is the rest of the story


def pods_worth_listing(deployment: Json | None, desired: int) -> bool:
    """Whether the pool's pods are listed for one that cannot start: when a process is missing, and
    also while a rollout has not replaced every pod. A rollout whose new pod cannot start keeps the
    old pods (maxUnavailable 0), so every process may be ready while the new pod waits for good:
    without the list, Degraded would say nothing until the Deployment's progress deadline."""
    ready = ((deployment or {}).get("status") or {}).get("readyReplicas", 0)
    return ready < desired or (deployment is not None and _rollout(deployment, desired) is not None)


def ready_condition(pool: str, observed: Observation) -> tuple[bool, str, str]:
    """(status, reason, message) of Ready."""
    if observed.refusal is not None:
        return False, INVALID_SPEC, f"the spec was not applied: {observed.refusal.message}"
    if observed.failure is not None:
        return False, APPLY_FAILED, f"the spec is not applied yet: {observed.failure.message}"
    deployment = observed.deployment
    if deployment is None:
        return False, "DeploymentMissing", f"Deployment {deployment_name(pool)} does not exist yet"
    desired = observed.desired_replicas
    waiting = _rollout(deployment, desired)
    if waiting is not None:
        return False, "RolloutInProgress", waiting
    if desired == 0:
        return True, "ScaledToZero", "queue.processes is 0: no sender runs, nothing is sent"
    ready = (deployment.get("status") or {}).get("readyReplicas", 0)
    if ready == 0:
        return False, "NoReadyReplicas", f"none of the {desired} sender processes is ready"
    if ready < desired:
        return False, "NotAllReplicasReady", f"{ready} of {desired} sender processes are ready"
    return True, "AllReplicasReady", f"{ready} of {desired} sender processes are ready"


def deployment_problem(deployment: Json | None) -> Problem | None:
    """The Deployment's controller cannot make pods (ReplicaFailure: e.g. Pod Security or a quota
    refused them), or gave up waiting for them (ProgressDeadlineExceeded)."""
    for condition in ((deployment or {}).get("status") or {}).get("conditions") or ():
        kind, status, why = condition.get("type"), condition.get("status"), condition.get("reason")
        failing = kind == "ReplicaFailure" and status == "True"
        stuck = kind == "Progressing" and why == "ProgressDeadlineExceeded"
        if failing or stuck:
            reason = "ReplicaFailure" if failing else "ProgressDeadlineExceeded"
            return Problem(reason, str(condition.get("message") or reason))
    return None


def degraded_condition(observed: Observation) -> tuple[bool, str, str]:
    """(status, reason, message) of Degraded."""
    redis = observed.redis_problem
    if redis is not None and redis.reason in _NOT_A_DEGRADATION:
        redis = None
    pods = observed.pod_problem or deployment_problem(observed.deployment)
    for problem in (observed.refusal, observed.failure, pods, redis):
        if problem is not None:
            return True, problem.reason, problem.message
    return False, "AsExpected", "the pool runs as specified"


def pool_status(
    pool: str, observed: Observation, previous: SenderPoolStatus | None, now: datetime
) -> SenderPoolStatus:
    deployment_status = (observed.deployment or {}).get("status") or {}
    conditions: list[Condition] | None = previous.conditions if previous else None
    for type_, (status, reason, message) in (
        (READY, ready_condition(pool, observed)),
        (DEGRADED, degraded_condition(observed)),
    ):
        conditions = set_condition(
            conditions, type_, status, reason, message, generation=observed.generation, now=now
        )
    return SenderPoolStatus(
        replicas=deployment_status.get("replicas", 0),
        ready_replicas=deployment_status.get("readyReplicas", 0),
        active_campaigns=observed.active_campaigns,
        selector=selector_text(pool),
        observed_generation=observed.generation,
        conditions=conditions,
    )


def status_patch(new: SenderPoolStatus, previous: SenderPoolStatus | None) -> Json:
    """A merge patch from `previous` to `new`: a field `new` no longer has is set to null, since a merge
    patch that leaves a field out keeps its old value (activeCampaigns must not outlive a Redis outage)."""
    written = to_status(new)
    cleared = {key: None for key in to_status(previous) if key not in written} if previous else {}
    return {"status": written | cleared}
