"""Pod status, built from what the agent knows, by the kubelet's rules. Pure: no I/O.

The agent owns these conditions: PodReadyToStartContainers, Initialized, ContainersReady and Ready
(PodScheduled is the scheduler's). The status goes out as a strategic merge patch, which merges
conditions by type, so the scheduler's condition stays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.harness.node_agent.events import now_rfc3339


@dataclass
class ContainerStatus:
    """One container as the API shows it; the container runner keeps it current."""

    name: str
    image: str
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str = ""

    def to_api(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def exit_code(self) -> int | None:
        terminated = self.state.get("terminated")
        return None if terminated is None else int(terminated["exitCode"])


def pod_phase(
    statuses: list[ContainerStatus], restart_policy: str, initialized: bool, terminating: bool
) -> str:
    """The kubelet's getPhase. `terminating`: the pod is being deleted, so nothing restarts any more."""
    waiting = running = stopped = succeeded = 0
    for status in statuses:
        if status.running:
            running += 1
        elif status.exit_code is not None:
            stopped += 1
            succeeded += status.exit_code == 0
        elif status.last_state.get("terminated"):
            stopped += 1  # waiting to be restarted
        else:
            waiting += 1
    if not initialized or waiting:
        return "Pending"
    if running:
        return "Running"
    if not stopped:
        return "Pending"
    if terminating:
        return "Succeeded" if stopped == succeeded else "Failed"
    if restart_policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    return "Failed" if restart_policy == "Never" else "Running"


class Conditions:
    """The agent's pod conditions, each keeping its lastTransitionTime until its status changes."""

    def __init__(self, existing: list[dict[str, Any]]) -> None:
        self._conditions = {c["type"]: dict(c) for c in existing}

    def set(self, kind: str, value: bool, reason: str = "") -> None:
        status = "True" if value else "False"
        current = self._conditions.get(kind)
        if current is not None and current.get("status") == status and current.get("reason", "") == reason:
            return
        condition: dict[str, Any] = {"type": kind, "status": status, "lastTransitionTime": now_rfc3339()}
        if current is not None and current.get("status") == status:
            condition["lastTransitionTime"] = current.get(
                "lastTransitionTime", condition["lastTransitionTime"]
            )
        if reason:
            condition["reason"] = reason
        self._conditions[kind] = condition

    def owned(self) -> list[dict[str, Any]]:
        kinds = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")
        return [self._conditions[k] for k in kinds if k in self._conditions]


@dataclass
class PodStatusInputs:
    pod_ip: str
    host_ip: str
    start_time: str
    sandbox_ready: bool
    initialized: bool
    init_failed: bool
    init_statuses: list[ContainerStatus]
    statuses: list[ContainerStatus]
    restart_policy: str
    terminating: bool
    readiness_gates_met: bool = True


def pod_status(inputs: PodStatusInputs, conditions: Conditions) -> dict[str, Any]:
    containers_ready = bool(inputs.statuses) and all(s.ready for s in inputs.statuses)
    not_ready = "" if containers_ready else "ContainersNotReady"
    conditions.set("PodReadyToStartContainers", inputs.sandbox_ready)
    conditions.set(
        "Initialized", inputs.initialized, "" if inputs.initialized else "ContainersNotInitialized"
    )
    conditions.set("ContainersReady", containers_ready, not_ready)
    ready = containers_ready and inputs.readiness_gates_met and not inputs.terminating
    conditions.set("Ready", ready, "" if ready else not_ready or "PodTerminating")
    phase = pod_phase(inputs.statuses, inputs.restart_policy, inputs.initialized, inputs.terminating)
    status: dict[str, Any] = {
        "phase": "Failed" if inputs.init_failed else phase,
        "conditions": conditions.owned(),
        "hostIP": inputs.host_ip,
        "hostIPs": [{"ip": inputs.host_ip}],
        "startTime": inputs.start_time,
        "containerStatuses": [s.to_api() for s in inputs.statuses],
    }
    if inputs.init_statuses:
        status["initContainerStatuses"] = [s.to_api() for s in inputs.init_statuses]
    if inputs.pod_ip:
        status["podIP"] = inputs.pod_ip
        status["podIPs"] = [{"ip": inputs.pod_ip}]
    return status
