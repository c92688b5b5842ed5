"""Probes as the kubelet runs them: exec, httpGet and tcpSocket, counted against their thresholds.

An httpGet or tcpSocket probe goes to the pod's IP unless it names a host; an exec probe runs inside the
container's mount namespace as the container's user. A grpc probe always fails with a message saying
that the node agent does not run them (grpcio is not a dependency).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.harness.node_agent.processes import Identity, exec_argv
from tests.harness.node_agent.status import ContainerStatus


@dataclass(frozen=True)
class ProbeTarget:
    """How to reach one running container."""

    pod_ip: str
    pid: int
    identity: Identity
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)  # the container's named ports


def _port(value: int | str, target: ProbeTarget) -> int:
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    if value not in target.ports:
        raise ValueError(f"the container has no port named {value!r}")
    return target.ports[value]


async def run_probe(
    spec: dict[str, Any], target: ProbeTarget, session: aiohttp.ClientSession
) -> tuple[bool, str]:
    """One attempt: (success, message for the Unhealthy event)."""
    timeout = float(spec.get("timeoutSeconds", 1))
    try:
        if "exec" in spec:
            return await _exec(spec["exec"]["command"], target, timeout)
        if "httpGet" in spec:
            return await _http_get(spec["httpGet"], target, timeout, session)
        if "tcpSocket" in spec:
            return await _tcp(spec["tcpSocket"], target, timeout)
    except ValueError as exc:
        return False, str(exc)
    if "grpc" in spec:
        return False, "grpc probes are not run by the node agent"
    return False, f"unknown probe handler {sorted(spec)}"


async def _exec(command: list[str], target: ProbeTarget, timeout: float) -> tuple[bool, str]:
    process = await asyncio.create_subprocess_exec(
        *exec_argv(target.pid, command, target.identity),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=target.env,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return False, f"command {command!r} timed out after {timeout:g}s"
    text = output.decode(errors="replace")[-1024:]
    return process.returncode == 0, text


async def _http_get(
    spec: dict[str, Any], target: ProbeTarget, timeout: float, session: aiohttp.ClientSession
) -> tuple[bool, str]:
    scheme = str(spec.get("scheme", "HTTP")).lower()
    host = spec.get("host") or target.pod_ip
    url = f"{scheme}://{host}:{_port(spec['port'], target)}{spec.get('path', '/')}"
    headers = {"User-Agent": "kube-probe/1.36", "Accept": "*/*"}
    headers.update({h["name"]: h["value"] for h in spec.get("httpHeaders") or []})
    try:
        async with session.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout), ssl=False
        ) as response:
            body = (await response.content.read(10240)).decode(errors="replace")
            if 200 <= response.status < 400:
                return True, body
            return False, f"HTTP probe failed with statuscode: {response.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return False, f'Get "{url}": {exc or type(exc).__name__}'


async def _tcp(spec: dict[str, Any], target: ProbeTarget, timeout: float) -> tuple[bool, str]:
    host = spec.get("host") or target.pod_ip
    port = _port(spec["port"], target)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return False, f"dial tcp {host}:{port}: {exc or type(exc).__name__}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, ""


class ProbeCounter:
    """Consecutive results against successThreshold / failureThreshold, with the API's defaults."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.initial_delay = float(spec.get("initialDelaySeconds", 0))
        self.period = float(spec.get("periodSeconds", 10))
        self.success_threshold = int(spec.get("successThreshold", 1))
        self.failure_threshold = int(spec.get("failureThreshold", 3))
        self._successes = 0
        self._failures = 0

    def record(self, success: bool) -> bool | None:
        """True when the successes reach their threshold, False when the failures do, else None."""
        if success:
            self._failures = 0
            self._successes += 1
            return True if self._successes >= self.success_threshold else None
        self._successes = 0
        self._failures += 1
        return False if self._failures >= self.failure_threshold else None


class ProbeLoop:
    """Startup, then readiness and liveness, for one running container: sets `started` and `ready`."""

    def __init__(
        self,
        container: dict[str, Any],
        target: ProbeTarget,
        session: aiohttp.ClientSession,
        status: ContainerStatus,
        changed: Callable[[], None],
    ) -> None:
        self._container = container
        self._target = target
        self._session = session
        self._status = status
        self._changed = changed

    async def run(self, event: Callable[[str, str, str], None]) -> str | None:
        """Runs until cancelled with its container; returns why the container must restart, if it must."""
        startup = self._container.get("startupProbe")
        if startup and not await self._verdict(startup, "Startup", event, until=(True, False)):
            return "failed startup probe"
        self._status.started = True
        readiness = self._container.get("readinessProbe")
        if readiness is None:
            self._status.ready = True
        self._changed()
        readiness_task = asyncio.create_task(self._readiness(readiness, event)) if readiness else None
        try:
            liveness = self._container.get("livenessProbe")
            if liveness and not await self._verdict(liveness, "Liveness", event, until=(False,)):
                return "failed liveness probe"
            await asyncio.Event().wait()  # nothing left to decide: wait to be cancelled
            return None
        finally:
            if readiness_task is not None:
                readiness_task.cancel()
                await asyncio.gather(readiness_task, return_exceptions=True)

    async def _readiness(self, spec: dict[str, Any], event: Callable[[str, str, str], None]) -> None:
        await self._verdict(spec, "Readiness", event, until=(), on_verdict=self._set_ready)

    def _set_ready(self, ready: bool) -> None:
        if self._status.ready != ready:
            self._status.ready = ready
            self._changed()

    async def _verdict(
        self,
        spec: dict[str, Any],
        name: str,
        event: Callable[[str, str, str], None],
        until: tuple[bool, ...],
        on_verdict: Callable[[bool], None] | None = None,
    ) -> bool:
        """Probes every period; returns the first verdict in `until` (with () it never returns)."""
        counter = ProbeCounter(spec)
        await asyncio.sleep(counter.initial_delay)
        last_message = None
        while True:
            ok, message = await run_probe(spec, self._target, self._session)
            if not ok and message != last_message:  # one event per distinct failure, not one per period
                event("Warning", "Unhealthy", f"{name} probe failed: {message}")
            last_message = None if ok else message
            verdict = counter.record(ok)
            if verdict is not None:
                if on_verdict is not None:
                    on_verdict(verdict)
                if verdict in until:
                    return verdict
            await asyncio.sleep(counter.period)
