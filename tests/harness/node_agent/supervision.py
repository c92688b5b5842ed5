"""Waiting for a container's process to end, whether this agent started it or adopted it.

A process this agent started is its child, so its exit code is known. A process adopted from a previous
agent is not: it is watched through a pidfd, and its end is reported as the kubelet reports a container
it lost track of (ContainerStatusUnknown, exit code 137).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from tests.harness.node_agent.probes import ProbeTarget


@dataclass
class Supervision:
    pid: int
    exited: asyncio.Future[int]  # the raw return code for a child (negative: killed by that signal)
    target: ProbeTarget
    cgroup: Path
    is_child: bool

    @classmethod
    def of_child(cls, process: asyncio.subprocess.Process, target: ProbeTarget, cgroup: Path) -> Supervision:
        return cls(process.pid, asyncio.ensure_future(process.wait()), target, cgroup, is_child=True)

    @classmethod
    def of_stranger(cls, pid: int, target: ProbeTarget, cgroup: Path) -> Supervision | None:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[int] = loop.create_future()

        def on_exit() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not exited.done():
                exited.set_result(-9)

        loop.add_reader(pidfd, on_exit)
        return cls(pid, exited, target, cgroup, is_child=False)
