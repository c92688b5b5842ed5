"""Each container's processes in a cgroup of their own (cgroup v2), as a container runtime keeps them.

The cgroups only group: no controller is enabled, so nothing is limited. What they give is what a PID
namespace would: every process a container starts stays in its cgroup, even one that daemonizes or
starts a new session, so the agent can kill a container completely (cgroup.kill), and a restarted agent
finds the containers a previous one left running. A program that rewrites its own environment or
argv (redis does) cannot hide from it.

Layout: <cgroup2 mount>/mailtrain-node-agent/<id of the node's root>/<pod uid>/<container>.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

_EMPTY_TIMEOUT = 5.0  # cgroup.kill is asynchronous: how long the processes may take to be gone


def cgroup2_mount() -> Path:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype == "cgroup2":
            return Path(fields[4])
    raise RuntimeError("the node agent needs a cgroup2 hierarchy (mount -t cgroup2 none /sys/fs/cgroup)")


def _pids(cgroup: Path) -> list[int]:
    try:
        return [int(line) for line in (cgroup / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def session_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The fields after the command name (which may hold spaces and parentheses): state ppid pgrp session.
    return int(stat.rsplit(")", 1)[1].split()[3])


class NodeCgroups:
    def __init__(self, node_root: str) -> None:
        node_id = hashlib.sha256(node_root.encode()).hexdigest()[:16]
        self.base = cgroup2_mount() / "mailtrain-node-agent" / node_id

    def container(self, pod_uid: str, name: str) -> Path:
        """The container's cgroup, made if need be."""
        path = self.base / pod_uid / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def containers(self) -> Iterator[tuple[str, str, Path]]:
        """(pod uid, container, cgroup) for every container cgroup of this node."""
        if not self.base.is_dir():
            return
        for pod in self.base.iterdir():
            if pod.is_dir():
                for container in pod.iterdir():
                    if container.is_dir():
                        yield pod.name, container.name, container

    def main_process(self, cgroup: Path) -> int | None:
        """The container's own process: the one that leads its session (what the agent started)."""
        return next((pid for pid in _pids(cgroup) if session_of(pid) == pid), None)

    def kill(self, cgroup: Path) -> list[int]:
        """SIGKILLs every process in the container's cgroup and waits for them to be gone."""
        pids = _pids(cgroup)
        if not pids:
            return []
        try:
            (cgroup / "cgroup.kill").write_text("1")
        except OSError:  # kernels before 5.14 have no cgroup.kill
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + _EMPTY_TIMEOUT
        while _pids(cgroup) and time.monotonic() < deadline:
            time.sleep(0.01)
        return pids

    def remove(self, cgroup: Path) -> list[int]:
        """Kills what is left in the container's cgroup, then removes it (and its pod's, once empty)."""
        killed = self.kill(cgroup)
        for path in (cgroup, cgroup.parent):
            with contextlib.suppress(FileNotFoundError, OSError):  # busy or not empty: a sibling lives on
                path.rmdir()
        return killed

    def sweep(self, keep_pods: set[str]) -> list[int]:
        """Removes the containers of every pod not in keep_pods; returns the pids it killed."""
        killed = []
        for pod_uid, _name, cgroup in list(self.containers()):
            if pod_uid not in keep_pods:
                killed += self.remove(cgroup)
        return killed

    def destroy(self) -> list[int]:
        """Every container gone, and the node's cgroups with them."""
        killed = self.sweep(set())
        for path in (self.base, self.base.parent):
            with contextlib.suppress(FileNotFoundError, OSError):  # another node agent still uses the parent
                path.rmdir()
        return killed
