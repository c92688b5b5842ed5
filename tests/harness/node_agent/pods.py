"""One pod on the node, from binding to removal: its address, volumes, containers and status.

A worker reports status as a strategic merge patch with the pod's uid as a precondition (as the kubelet
does), so a status can never land on a newer pod of the same name. Deletion runs the kubelet's way:
preStop, SIGTERM, SIGKILL at the end of the grace period, a last status, and then the agent deletes the
object with grace period 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness.node_agent.cgroups import NodeCgroups
from tests.harness.node_agent.containers import RETRY, ContainerRunner, ContainerRuntime
from tests.harness.node_agent.environment import PodContext
from tests.harness.node_agent.events import EventRecorder, now_rfc3339
from tests.harness.node_agent.hosts import FILE_NAME, HostsFiles, PodHosts
from tests.harness.node_agent.images import ImageTable
from tests.harness.node_agent.kube import KUBE_ERRORS, STRATEGIC_MERGE_PATCH, ApiError, KubeClient
from tests.harness.node_agent.log_server import ContainerLogs
from tests.harness.node_agent.network import AddressPool
from tests.harness.node_agent.objects import ObjectCache
from tests.harness.node_agent.status import Conditions, ContainerStatus, PodStatusInputs, pod_status
from tests.harness.node_agent.volumes import REFRESH_INTERVAL, MountError, PodVolumes

log = logging.getLogger(__name__)
DELETE_ATTEMPTS = 5
_REFRESH_ERRORS: tuple[type[Exception], ...] = (*KUBE_ERRORS, MountError)


@dataclass
class NodeServices:
    """What every pod worker shares: clients and plain values, no back-pointer to the agent."""

    kube: KubeClient
    images: ImageTable
    cache: ObjectCache
    addresses: AddressPool
    events: EventRecorder
    probe_session: aiohttp.ClientSession
    host_ip: str
    api_host: str
    api_port: int
    allocatable: dict[str, str]
    pods_dir: Path
    logs_dir: Path
    cgroups: NodeCgroups
    hosts_files: HostsFiles
    service_names_synced: asyncio.Event


def _recorded(spec: dict[str, Any], recorded: list[dict[str, Any]]) -> ContainerStatus:
    """A container's status as the API last showed it, so counts and states survive an agent restart."""
    status = ContainerStatus(spec["name"], spec["image"])
    for entry in recorded:
        if entry.get("name") == spec["name"]:
            status.restart_count = int(entry.get("restartCount", 0))
            status.last_state = entry.get("lastState") or {}
            status.state = entry.get("state") or status.state
            status.container_id = entry.get("containerID", "")
            # An adopted container stays Ready until its probes say otherwise: no flap on agent restart.
            status.ready, status.started = bool(entry.get("ready")), bool(entry.get("started"))
    return status


class PodWorker:
    def __init__(self, node: NodeServices, pod: dict[str, Any], adopted: dict[str, int]) -> None:
        self.node = node
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        recorded = pod.get("status") or {}
        self._recorded_phase = recorded.get("phase", "Pending")
        self._adopted = adopted  # container name -> pid, found running after an agent restart
        self._statuses = [
            _recorded(c, recorded.get("containerStatuses") or []) for c in pod["spec"]["containers"]
        ]
        self._init_statuses = [
            _recorded(c, recorded.get("initContainerStatuses") or [])
            for c in pod["spec"].get("initContainers") or []
        ]
        self._conditions = Conditions(recorded.get("conditions") or [])
        self._initialized = any(
            c["type"] == "Initialized" and c["status"] == "True" for c in recorded.get("conditions") or []
        )
        self._init_failed = False
        self._sandbox_ready = False
        self.pod_ip = ""
        self._start_time = recorded.get("startTime") or now_rfc3339()
        self._changed = asyncio.Event()
        self._deleting = asyncio.Event()
        self._gone = False
        self._runners: list[ContainerRunner] = []
        self._last_sent: dict[str, Any] | None = None
        self.volumes = PodVolumes(node.kube, node.cache, node.pods_dir / self.uid / "volumes")

    # -- from the agent's watch --------------------------------------------------------------------------

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self._deleting.set()
        self._changed.set()

    def gone(self) -> None:
        """The object was removed without waiting for this node (a forced deletion)."""
        self._gone = True
        self._deleting.set()

    async def stop_containers(self, grace_cap: float) -> None:
        """The agent is stopping: every process ends, with at most grace_cap seconds to do it."""
        await asyncio.gather(*(r.stop(min(self._grace(), grace_cap)) for r in self._runners))

    # -- the pod's life -----------------------------------------------------------------------------------

    async def run(self) -> None:
        reporter = asyncio.create_task(self._report_loop())
        refresher: asyncio.Task[None] | None = None
        try:
            if self._recorded_phase in ("Succeeded", "Failed"):
                await self._deleting.wait()  # it ran to its end before the agent restarted
            else:
                host_network = self.pod["spec"].get("hostNetwork", False)
                recorded_ip = (self.pod.get("status") or {}).get("podIP", "")
                self.pod_ip = (
                    self.node.host_ip if host_network else self.node.addresses.allocate(self.uid, recorded_ip)
                )
                self._changed.set()
                if await self._setup_volumes() and await self._setup_hosts():
                    refresher = asyncio.create_task(self._refresh_volumes())
                    await self._run_containers()
            if self._deleting.is_set():
                await self._finish_deletion()
        finally:
            for task in (reporter, refresher):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            self.node.addresses.release(self.uid)
            self.node.hosts_files.forget(self.uid)
            if self._deleting.is_set():
                self.volumes.remove()
                self._hosts_file.unlink(missing_ok=True)
                for _uid, _name, cgroup in [c for c in self.node.cgroups.containers() if c[0] == self.uid]:
                    await asyncio.to_thread(self.node.cgroups.remove, cgroup)

    def logs(self, container: str) -> ContainerLogs | None:
        names = [
            c["name"] for c in [*self.pod["spec"].get("initContainers", []), *self.pod["spec"]["containers"]]
        ]
        if container not in names:
            return None
        statuses = {s.name: s for s in [*self._init_statuses, *self._statuses]}
        return ContainerLogs(self._log_dir() / container, lambda: statuses[container].running)

    def _log_dir(self) -> Path:
        meta = self.pod["metadata"]
        return self.node.logs_dir / f"{meta['namespace']}_{meta['name']}_{self.uid}"

    def context(self) -> PodContext:
        node = self.node
        return PodContext(self.pod, self.pod_ip, node.host_ip, node.api_host, node.api_port, node.allocatable)

    def _event(self, kind: str, reason: str, message: str) -> None:
        self.node.events.pod_event(self.pod, kind, reason, message)

    def _runtime(self, restart_policy: str) -> ContainerRuntime:
        return ContainerRuntime(
            kube=self.node.kube,
            images=self.node.images,
            volumes=self.volumes,
            probe_session=self.node.probe_session,
            context=self.context,
            changed=self._changed.set,
            event=self._event,
            scratch_dir=self.node.pods_dir / self.uid / "containers",
            log_dir=self._log_dir(),
            cgroups=self.node.cgroups,
            restart_policy=restart_policy,
            hosts_file=self._hosts_file,
        )

    @property
    def _hosts_file(self) -> Path:
        return self.node.pods_dir / self.uid / FILE_NAME

    async def _setup_hosts(self) -> bool:
        """The pod's /etc/hosts, once the Services have been read: a program that looks a Service up
        as it starts must find it (the kubelet also waits for Services, for their variables). An
        adopted container has the file mounted already, and must not lose those names either.
        False: the pod was deleted while waiting."""
        synced = asyncio.create_task(self.node.service_names_synced.wait())
        deleting = asyncio.create_task(self._deleting.wait())
        await asyncio.wait([synced, deleting], return_when=asyncio.FIRST_COMPLETED)
        for task in (synced, deleting):
            task.cancel()
        if not self.node.service_names_synced.is_set():
            return False
        self.node.hosts_files.add(self.uid, self._hosts_file, PodHosts.of(self.pod, self.pod_ip))
        return True

    async def _setup_volumes(self) -> bool:
        """Until every volume is there (False: the pod was deleted while waiting). Containers adopted
        after an agent restart are running already: they are not held up by a volume that fails now."""
        reported, delay = "", 0.1
        while not self._deleting.is_set():
            try:
                await self.volumes.sync(self.context())
            except MountError as exc:
                if str(exc) != reported:
                    reported = str(exc)
                    self._event("Warning", "FailedMount", reported)
            except KUBE_ERRORS as exc:
                log.warning("%s: volumes: %s", self.key, exc)
            else:
                break
            if self._adopted:
                break
            # Soon at first: a new namespace's kube-root-ca.crt is usually a moment away.
            delay = min(delay * 2, RETRY)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._deleting.wait(), delay)
        if self._deleting.is_set() and not self._adopted:
            return False
        self._sandbox_ready = True
        self._changed.set()
        return True

    async def _refresh_volumes(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            try:
                await self.volumes.sync(self.context())
            except _REFRESH_ERRORS as exc:  # the running containers keep what they have
                log.warning("%s: refreshing volumes: %s", self.key, exc)

    def _start(self, runner: ContainerRunner) -> asyncio.Task[None]:
        task = asyncio.create_task(runner.run())
        task.add_done_callback(self._log_failure)
        return task

    def _log_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: container runner failed", self.key, exc_info=task.exception())

    async def _until_done_or_deleted(self, tasks: list[asyncio.Task[None]]) -> bool:
        """Waits for the tasks; True if the pod is being deleted first."""
        deleting = asyncio.create_task(self._deleting.wait())
        try:
            await asyncio.wait([*tasks, deleting], return_when=asyncio.FIRST_COMPLETED)
            while not self._deleting.is_set() and not all(t.done() for t in tasks):
                await asyncio.wait([*tasks, deleting], return_when=asyncio.FIRST_COMPLETED)
        finally:
            deleting.cancel()
        return self._deleting.is_set()

    async def _run_containers(self) -> None:
        spec = self.pod["spec"]
        policy = spec.get("restartPolicy", "Always")
        if not self._initialized:
            init_policy = "Never" if policy == "Never" else "OnFailure"
            for container, status in zip(spec.get("initContainers") or [], self._init_statuses, strict=True):
                runner = ContainerRunner(self._runtime(init_policy), container, status)
                self._runners = [runner]
                task = self._start(runner)
                if await self._until_done_or_deleted([task]):
                    await self._stop_runners([task])
                    return
                if status.exit_code != 0:
                    self._init_failed = True
                    self._changed.set()
                    return
            self._initialized = True
        runtime = self._runtime(policy)
        self._runners = [
            ContainerRunner(
                runtime,
                container,
                status,
                adopt_pid=self._adopted.get(container["name"]),
                lost="running" in status.state and container["name"] not in self._adopted,
            )
            for container, status in zip(spec["containers"], self._statuses, strict=True)
        ]
        self._changed.set()
        tasks = [self._start(r) for r in self._runners]
        if await self._until_done_or_deleted(tasks):
            await self._stop_runners(tasks)
        else:
            await self._deleting.wait()  # every container has finished: the pod stays until deleted

    def _grace(self) -> float:
        if self._gone:
            return 0.0  # the kubelet's minimum of 2 s still applies, in the runner
        meta, spec = self.pod["metadata"], self.pod["spec"]
        return float(meta.get("deletionGracePeriodSeconds", spec.get("terminationGracePeriodSeconds", 30)))

    async def _stop_runners(self, tasks: list[asyncio.Task[None]]) -> None:
        self._changed.set()  # Ready goes False as soon as the pod is terminating
        await asyncio.gather(*(r.stop(self._grace()) for r in self._runners))
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _finish_deletion(self) -> None:
        if self._gone:
            return
        meta = self.pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        options = {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
        for attempt in range(DELETE_ATTEMPTS):
            try:
                await self._send_status(self._status())
                await self.node.kube.delete(path, options)
                return
            except ApiError:  # gone already, or a newer pod has the name: nothing to do
                return
            except KUBE_ERRORS as exc:  # the apiserver is away for a moment; the next relist also retries
                log.warning("%s: deleting (attempt %d): %s", self.key, attempt + 1, exc)
                await asyncio.sleep(1)

    # -- status -------------------------------------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        gates = [g["conditionType"] for g in self.pod["spec"].get("readinessGates") or []]
        current = {c["type"]: c["status"] for c in (self.pod.get("status") or {}).get("conditions") or []}
        inputs = PodStatusInputs(
            pod_ip=self.pod_ip,
            host_ip=self.node.host_ip,
            start_time=self._start_time,
            sandbox_ready=self._sandbox_ready,
            initialized=self._initialized,
            init_failed=self._init_failed,
            init_statuses=self._init_statuses,
            statuses=self._statuses,
            restart_policy=self.pod["spec"].get("restartPolicy", "Always"),
            terminating=self._deleting.is_set(),
            readiness_gates_met=all(current.get(g) == "True" for g in gates),
        )
        return pod_status(inputs, self._conditions)

    async def _send_status(self, status: dict[str, Any]) -> None:
        meta = self.pod["metadata"]
        patch = {"metadata": {"uid": self.uid}, "status": status}  # the uid is a precondition
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        await self.node.kube.patch(path, patch, STRATEGIC_MERGE_PATCH)
        self._last_sent = status

    async def _report_loop(self) -> None:
        """Sends the status whenever it changed; one patch in flight, the newest state always wins."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._recorded_phase in ("Succeeded", "Failed"):
                continue
            status = self._status()
            if status == self._last_sent:
                continue
            try:
                await self._send_status(status)
            except ApiError as exc:
                if exc.status in (404, 409):  # the pod is gone, or its name is a newer pod's
                    return
                log.warning("%s: status: %s", self.key, exc)
                await asyncio.sleep(0.5)
                self._changed.set()
            except KUBE_ERRORS as exc:
                log.warning("%s: status: %s", self.key, exc)
                await asyncio.sleep(0.5)
                self._changed.set()
