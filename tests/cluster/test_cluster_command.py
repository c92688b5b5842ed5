"""`make cluster-up` / `make cluster-down` (python -m tests.harness.cluster): a whole cluster with a node,
and nothing left behind once it is down: no process, no mount, no route."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.cluster.helpers import eventually, pod, ready, redis_container
from tests.harness.binaries import REPO_ROOT
from tests.harness.kubeapi import KubeApi
from tests.harness.net import process_running
from tests.harness.node_agent.cgroups import NodeCgroups

MOUNT_PATH = "/tmp/mailtrain-cluster-command-test"  # created on the machine as a mountpoint, left empty


def _cluster(action: str, directory: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAILTRAIN_CLUSTER_DIR": str(directory)}
    command = [sys.executable, "-m", "tests.harness.cluster", action]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _mounts_mentioning(text: str) -> list[str]:
    """Mount table lines, in every mount namespace on the machine, that mention `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found += [line for line in (entry / "mountinfo").read_text().splitlines() if text in line]
            except OSError:
                continue
    return found


def _routes(cidr: str) -> str:
    return subprocess.run(
        ["ip", "route", "show", "table", "local", cidr], capture_output=True, text=True
    ).stdout


def test_cluster_up_runs_pods_and_down_leaves_nothing_behind(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    out = _cluster("up", directory).stdout
    try:
        assert f"export KUBECONFIG={directory / 'kubeconfig'}" in out
        assert f"{directory / 'node' / 'logs'}/<namespace>_<pod>_<uid>/<container>/<restart>.log" in out
        state = json.loads((directory / "state.json").read_text())
        pki = directory / "pki"
        kube = KubeApi(state["server"], pki / "ca.crt", pki / "admin.crt", pki / "admin.key")

        mounted = redis_container(volumeMounts=[{"name": "data", "mountPath": MOUNT_PATH}])
        kube.create(
            "/api/v1/namespaces/default/pods", pod("r", [mounted], volumes=[{"name": "data", "emptyDir": {}}])
        )
        eventually(
            lambda: ready(kube.get("/api/v1/namespaces/default/pods/r") or {}), timeout=30, what="pod ready"
        )
        cgroups = NodeCgroups(str(directory / "node"))
        [(_, _, cgroup)] = list(cgroups.containers())
        pid = cgroups.main_process(cgroup)
        assert pid is not None
        volume = str(directory / "node" / "pods")
        inside = [
            line for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines() if MOUNT_PATH in line
        ]
        assert inside, "the container sees its volume at its mountPath"
        assert not [
            line for line in Path("/proc/self/mountinfo").read_text().splitlines() if MOUNT_PATH in line
        ]
        cidr = json.loads((directory / "node" / "network.json").read_text())["cidr"]
        assert cidr in _routes(cidr)
    finally:  # a failed check must not leave a whole cluster running
        _cluster("down", directory)

    running = {name: p for name, p in state["pids"].items() if process_running(p)}
    assert not running, f"still running after cluster-down: {running}"
    assert not process_running(pid), "the container's process is gone"
    assert not cgroups.base.exists(), "the node's cgroups are removed"
    assert not _mounts_mentioning(volume) and not _mounts_mentioning(MOUNT_PATH), "no mount is left anywhere"
    assert cidr not in _routes(cidr), "the pod route is removed"
    assert not (directory / "state.json").exists()
