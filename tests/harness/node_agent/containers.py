"""One container's life on the node: start, supervise with probes, restart with back-off, stop.

A runner owns its ContainerStatus and calls `changed` whenever it moves; the pod worker reports the pod.
Restarts follow the kubelet: the first one at once, then 10 s, 20 s, 40 s ... up to 300 s, shown as
CrashLoopBackOff, and the back-off forgets a container that ran for 10 minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness.node_agent.cgroups import NodeCgroups
from tests.harness.node_agent.environment import ConfigError, PodContext, container_env
from tests.harness.node_agent.events import now_rfc3339
from tests.harness.node_agent.hosts import pod_hostname
from tests.harness.node_agent.images import ImageTable, LocalImage, container_argv
from tests.harness.node_agent.kube import KUBE_ERRORS, KubeClient
from tests.harness.node_agent.probes import ProbeLoop, ProbeTarget, run_probe
from tests.harness.node_agent.processes import Identity, exit_code, signal_process, spawn
from tests.harness.node_agent.status import ContainerStatus
from tests.harness.node_agent.supervision import Supervision
from tests.harness.node_agent.volumes import Mount, PodVolumes, hidden_image_dirs

BACKOFF_INITIAL, BACKOFF_MAX, BACKOFF_RESET_AFTER = 10.0, 300.0, 600.0
RETRY = 2.0  # a container waiting for its config, or for a program to appear, is tried again this often
MIN_GRACE = 2.0  # the kubelet's minimum grace period when it kills a container


@dataclass
class ContainerRuntime:
    """What a container runner needs from its pod and node: plain values and callables."""

    kube: KubeClient
    images: ImageTable
    volumes: PodVolumes
    probe_session: aiohttp.ClientSession
    context: Callable[[], PodContext]
    changed: Callable[[], None]
    event: Callable[[str, str, str], None]  # type, reason, message
    scratch_dir: Path
    log_dir: Path
    cgroups: NodeCgroups
    restart_policy: str
    hosts_file: Path | None = None  # the pod's /etc/hosts (see hosts)


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    identity: Identity
    working_dir: str
    readable: tuple[str, ...] = ()
    own_dir: bool = False  # the working directory is the agent's scratch directory


class Backoff:
    def __init__(self) -> None:
        self._next = 0.0

    def next(self, ran_for: float) -> float:
        if ran_for >= BACKOFF_RESET_AFTER:
            self._next = 0.0
        delay = self._next
        self._next = BACKOFF_INITIAL if delay == 0 else min(delay * 2, BACKOFF_MAX)
        return delay


def identity_for(pod: dict[str, Any], container: dict[str, Any], image: LocalImage) -> Identity:
    pod_context = pod["spec"].get("securityContext") or {}
    context = container.get("securityContext") or {}
    uid = context.get("runAsUser", pod_context.get("runAsUser", image.user[0]))
    default_gid = image.user[1] if uid == image.user[0] else 0
    gid = context.get("runAsGroup", pod_context.get("runAsGroup", default_gid))
    if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) and uid == 0:
        raise ConfigError("container has runAsNonRoot and image will run as root")
    groups = [*pod_context.get("supplementalGroups", [])]
    if "fsGroup" in pod_context:
        groups.append(pod_context["fsGroup"])
    return Identity(int(uid), int(gid), tuple(groups), context.get("allowPrivilegeEscalation") is False)


class ContainerRunner:
    def __init__(
        self,
        rt: ContainerRuntime,
        spec: dict[str, Any],
        status: ContainerStatus,
        adopt_pid: int | None = None,
        lost: bool = False,
    ) -> None:
        """adopt_pid: its process, still running from a previous agent. lost: the status says running,
        but no process is left (it ended while no agent was watching)."""
        self.rt = rt
        self.spec = spec
        self.status = status
        self.name: str = spec["name"]
        self._adopt_pid = adopt_pid
        self._lost = lost
        self._has_run = bool(status.last_state) or "waiting" not in status.state
        self._stop = asyncio.Event()
        self._stop_deadline = 0.0
        self._process: Supervision | None = None
        self._reported: str = ""  # the last waiting message posted as an event, to post each once

    # -- the loop ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff()
        process = None
        if self._adopt_pid is not None:
            process = await self._adopt(self._adopt_pid)
            self._lost = process is None  # it ended between the agent's scan and now
        if self._lost:
            self._record_exit(137, "ContainerStatusUnknown")
            if not self._restarts(137):
                return
        elif process is None and (code := self.status.exit_code) is not None and not self._restarts(code):
            return  # it had finished for good before the agent restarted
        while not self._stop.is_set():
            if process is None:
                process = await self._start()
                if process is None:
                    if await self._paused(RETRY):
                        return
                    continue
            began = time.monotonic()
            code, reason = await self._supervise(process)
            process = None
            self._record_exit(code, reason)
            if self._stop.is_set() or not self._restarts(code):
                return
            delay = backoff.next(time.monotonic() - began)
            if delay:
                pod = self.rt.context().pod["metadata"]["name"]
                message = f"back-off {delay:g}s restarting failed container={self.name} pod={pod}"
                self._wait("CrashLoopBackOff", message)
                self.rt.event("Warning", "BackOff", "Back-off restarting failed container")
                if await self._paused(delay):
                    return

    async def stop(self, grace: float) -> None:
        """preStop, SIGTERM, and SIGKILL once the grace period is over; no restart after this."""
        self._stop_deadline = time.monotonic() + max(grace, MIN_GRACE)
        self._stop.set()
        if self._process is not None and not self._process.exited.done():
            await self._terminate(self._process, self._stop_deadline, run_pre_stop=True)

    def _restarts(self, code: int) -> bool:
        policy = self.rt.restart_policy
        return policy == "Always" or (policy == "OnFailure" and code != 0)

    async def _paused(self, seconds: float) -> bool:
        """Sleeps, or returns True at once when the container is being stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    # -- starting ---------------------------------------------------------------------------------------

    def _wait(self, reason: str, message: str, event: str = "") -> None:
        self.status.state = {"waiting": {"reason": reason, "message": message}}
        self.status.ready = self.status.started = False
        self.rt.changed()
        if event and message != self._reported:
            self._reported = message
            self.rt.event("Warning", event, message)

    async def _prepare(self, ctx: PodContext) -> Launch | None:
        reference = self.spec["image"]
        image = self.rt.images.resolve(reference)
        if image is None:
            known = ", ".join(self.rt.images.known())
            message = (
                f'image "{reference}" cannot be pulled here and is not in the node agent\'s image table '
                f"(tests/harness/node_agent/images.py, or --images); known: {known}"
            )
            self._wait("ImageNotRunnableLocally", message, event="Failed")
            return None
        try:
            env = await container_env(self.rt.kube, ctx, self.spec)
            identity = identity_for(ctx.pod, self.spec, image)
        except ConfigError as exc:
            self._wait("CreateContainerConfigError", str(exc), event="Failed")
            return None
        except KUBE_ERRORS as exc:
            self._wait("CreateContainerConfigError", f"reading the container's configuration: {exc}")
            return None
        hostname = pod_hostname(ctx.pod)
        home = "/root" if identity.uid == 0 else "/"
        env = {**image.env, "HOSTNAME": hostname, "HOME": home, **env}
        argv = container_argv(image, self.spec, env)
        missing = image.missing_program(argv, env)
        if missing is not None:
            self._wait("ImageNotRunnableLocally", f'image "{reference}": {missing}', event="Failed")
            return None
        own_dir = not (self.spec.get("workingDir") or image.working_dir)
        working_dir = self.spec.get("workingDir") or image.working_dir or self._scratch(identity)
        return Launch(argv, env, identity, working_dir, image.readable, own_dir)

    def _scratch(self, identity: Identity) -> str:
        """A private writable directory: what the image's root filesystem would give the program."""
        directory = self.rt.scratch_dir / self.name
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, identity.uid, identity.gid)
        return str(directory)

    def _mounts(self, ctx: PodContext, launch: Launch) -> list[Mount]:
        """The pod's volumes, and a private /tmp unless a volume is mounted there: an image's /tmp is its
        own, and two pods must not meet in one (health files, sockets). The pod's /etc/hosts, unless a
        volume is mounted there (the kubelet's rule too). Then the image's own directories, read-only,
        where a mount above would hide them: a checkout under /tmp holds the venv the image runs."""
        mounts = self.rt.volumes.mounts(ctx.pod, self.spec, launch.env)
        if self.rt.hosts_file is not None and not any(m.target.rstrip("/") == "/etc/hosts" for m in mounts):
            mounts.append(Mount(self.rt.hosts_file, "/etc/hosts", read_only=False))
        if not any(m.target.rstrip("/") == "/tmp" for m in mounts):
            tmp = self.rt.scratch_dir / ".tmp" / self.name
            if not tmp.is_dir():
                tmp.mkdir(parents=True)
                tmp.chmod(0o1777)
            mounts.append(Mount(tmp, "/tmp", read_only=False))
        return mounts + hidden_image_dirs(mounts, launch.readable)

    async def _start(self) -> Supervision | None:
        ctx = self.rt.context()
        launch = await self._prepare(ctx)
        if launch is None:
            return None
        restart_count = self.status.restart_count + (1 if self._has_run else 0)
        pod_uid = ctx.pod["metadata"]["uid"]
        cgroup = self.rt.cgroups.container(pod_uid, self.name)
        process = await spawn(
            launch.argv,
            self._mounts(ctx, launch),
            launch.working_dir,
            launch.identity,
            launch.env,
            self.rt.log_dir / self.name / f"{restart_count}.log",
            cgroup,
            [Path(d) for d in launch.readable],
            self.rt.scratch_dir / ".staging" / self.name,
            launch.own_dir,
        )
        self.status.restart_count, self._has_run = restart_count, True
        self._reported = ""
        self.status.state = {"running": {"startedAt": now_rfc3339()}}
        self.status.container_id = f"local-process://{pod_uid}/{self.name}/{process.pid}"
        supervision = Supervision.of_child(process, self._target(ctx, process.pid, launch), cgroup)
        self.rt.event("Normal", "Started", f"Started container {self.name}")
        return supervision

    async def _adopt(self, pid: int) -> Supervision | None:
        """A process a previous agent started: supervised again, without a restart. None: it is gone."""
        ctx = self.rt.context()
        env, identity = {}, Identity(0, 0)  # what exec probes run with, as far as it can be known now
        image = self.rt.images.resolve(self.spec["image"])
        if image is not None:
            with contextlib.suppress(ConfigError, *KUBE_ERRORS):
                env = {**image.env, **await container_env(self.rt.kube, ctx, self.spec)}
                identity = identity_for(ctx.pod, self.spec, image)
        cgroup = self.rt.cgroups.container(ctx.pod["metadata"]["uid"], self.name)
        supervision = Supervision.of_stranger(
            pid, self._target(ctx, pid, Launch([], env, identity, "/")), cgroup
        )
        if supervision is None:
            return None
        if not self.status.running:
            self.status.state = {"running": {"startedAt": now_rfc3339()}}
        self.rt.event(
            "Normal", "Adopted", f"Node agent restarted; container {self.name} kept running (pid {pid})"
        )
        return supervision

    def _target(self, ctx: PodContext, pid: int, launch: Launch) -> ProbeTarget:
        ports = {p["name"]: int(p["containerPort"]) for p in self.spec.get("ports") or [] if p.get("name")}
        return ProbeTarget(ctx.pod_ip, pid, launch.identity, launch.env, ports)

    # -- running ----------------------------------------------------------------------------------------

    async def _supervise(self, process: Supervision) -> tuple[int, str]:
        self._process = process
        if self._stop.is_set():  # asked to stop while it was starting
            await self._terminate(process, self._stop_deadline, run_pre_stop=True)
        self.rt.changed()
        probes = asyncio.create_task(self._probe_and_hook(process))
        try:
            code = await asyncio.shield(process.exited)
        finally:
            probes.cancel()
            await asyncio.gather(probes, return_exceptions=True)
            # What it left behind ends with it, as a PID namespace ends with its first process.
            await asyncio.to_thread(self.rt.cgroups.kill, process.cgroup)
        if process.is_child:
            return exit_code(code), "Completed" if code == 0 else "Error"
        return 137, "ContainerStatusUnknown"

    def _record_exit(self, code: int, reason: str) -> None:
        started = self.status.state.get("running", {}).get("startedAt", now_rfc3339())
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": now_rfc3339(),
            "containerID": self.status.container_id,
        }
        if reason == "ContainerStatusUnknown":
            terminated["message"] = "the node agent restarted and cannot read the exit code of this process"
        self.status.last_state = {"terminated": terminated}
        self.status.state = {"terminated": terminated}
        self.status.ready = self.status.started = False
        self._process = None
        self.rt.changed()

    async def _terminate(self, process: Supervision, deadline: float, run_pre_stop: bool) -> None:
        if run_pre_stop:
            await self._pre_stop(process, deadline)
        signal_process(process.pid, signal.SIGTERM)  # the container's own process, as a runtime does
        remaining = max(deadline - time.monotonic(), 0.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(process.exited), remaining)
        if not process.exited.done():
            await asyncio.to_thread(self.rt.cgroups.kill, process.cgroup)
            await asyncio.shield(process.exited)

    async def _pre_stop(self, process: Supervision, deadline: float) -> None:
        hook = (self.spec.get("lifecycle") or {}).get("preStop")
        remaining = deadline - time.monotonic()
        if not hook or remaining <= 0:
            return
        if "sleep" in hook:
            await asyncio.sleep(min(float(hook["sleep"]["seconds"]), remaining))
            return
        ok, message = await run_probe(
            {**hook, "timeoutSeconds": remaining}, process.target, self.rt.probe_session
        )
        if not ok:
            self.rt.event("Warning", "FailedPreStopHook", f"PreStopHook failed: {message}")

    async def _probe_and_hook(self, process: Supervision) -> None:
        """postStart, then the probes; a failed hook or a failing startup/liveness probe restarts it."""
        failed: str | None = None
        hook = (self.spec.get("lifecycle") or {}).get("postStart")
        if hook:
            ok, message = await run_probe(
                {**hook, "timeoutSeconds": 300}, process.target, self.rt.probe_session
            )
            if not ok:
                self.rt.event("Warning", "FailedPostStartHook", f"PostStartHook failed: {message}")
                failed = "failed its postStart hook"
        if failed is None:
            loop = ProbeLoop(self.spec, process.target, self.rt.probe_session, self.status, self.rt.changed)
            failed = await loop.run(self.rt.event)
        if failed is not None:
            self.rt.event("Normal", "Killing", f"Container {self.name} {failed}, will be restarted")
            grace = float(self.rt.context().pod["spec"].get("terminationGracePeriodSeconds", 30))
            await self._terminate(process, time.monotonic() + max(grace, MIN_GRACE), run_pre_stop=True)
