"""A node for the local cluster: the node agent (tests.harness.node_agent) as a process of its own.

It has the identity a kubelet has (system:node:<name>, group system:nodes, checked by the Node authorizer
and NodeRestriction), a serving certificate from the cluster CA for `kubectl logs`, and its directory:

    <root>/agent.log                                   the agent's own log
    <root>/logs/<namespace>_<pod>_<uid>/<container>/<restartCount>.log   each container's output
    <root>/pods/<uid>/volumes/<volume>                 what is mounted into the pod's containers
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import binaries, net
from tests.harness.binaries import REPO_ROOT
from tests.harness.controlplane import STARTUP_TIMEOUT, ControlPlane
from tests.harness.node_agent.cgroups import NodeCgroups
from tests.harness.node_agent.images import python_home
from tests.harness.node_agent.logfiles import log_files

STOP_TIMEOUT = 30.0  # the agent gives each container at most 10 s, then SIGKILL
# An image for tests and experiments: the venv's python, so `args: [some/program.py]` runs a program
# of the repository in a pod.
TEST_PYTHON_IMAGE = "mailtrain.test/python"
# An image whose files (a shell script) sit in the node's directory, under /tmp in tests, where each
# container has a private /tmp: they must stay visible, as a checkout under /tmp must for the images
# above. The script prints its arguments and sleeps.
FILES_IN_TMP_IMAGE = "mailtrain.test/files-in-tmp"


@dataclass
class LocalNode:
    controlplane: ControlPlane
    root: Path
    name: str = "local-0"
    images: tuple[Path, ...] = ()  # TOML files with more images than the built-in table
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.root / "agent.log"

    @property
    def image_files(self) -> Path:
        """The files of FILES_IN_TMP_IMAGE: under /tmp wherever the node's directory is; one directory
        for every node (the same script), left for the next start."""
        return Path("/tmp/mailtrain-node-agent/image-files")

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def start(self) -> LocalNode:
        for program in ("ip", "unshare", "nsenter", "setpriv"):  # fail here, with the package to install
            binaries.system_binary(program)
        self.root = self.root.resolve()
        (self.root / "pki").mkdir(parents=True, exist_ok=True)
        kubeconfig = self.controlplane.kubeconfig_for(f"system:node:{self.name}", ("system:nodes",))
        # The agent also does what CoreDNS and kube-proxy would (Service names), under kube-proxy's name.
        proxy_kubeconfig = self.controlplane.kubeconfig_for("system:kube-proxy")
        cert, key = self.controlplane.ca.serving().write(self.root / "pki", "kubelet-serving")
        test_image = self.root / "test-image.toml"
        script = self.image_files / "run.sh"
        script.parent.mkdir(parents=True, exist_ok=True)
        written = script.with_name(f".run.sh.{os.getpid()}")  # replaced whole: a running node may read it
        written.write_text('echo "image files in $(dirname "$0"): $*"\nexec sleep 3600\n')
        written.replace(script)
        test_image.write_text(
            f'[[image]]\nrepositories = ["{TEST_PYTHON_IMAGE}"]\nentrypoint = ["{sys.executable}"]\n'
            f'readable = ["{python_home()}", "{binaries.REPO_ROOT}"]\n'
            f'[[image]]\nrepositories = ["{FILES_IN_TMP_IMAGE}"]\nentrypoint = ["/bin/sh", "{script}"]\n'
            f'readable = ["{script.parent}"]\nuser = [10001, 10001]\n'
        )
        args = [
            sys.executable,
            "-m",
            "tests.harness.node_agent",
            f"--kubeconfig={kubeconfig}",
            f"--root={self.root}",
            f"--node-name={self.name}",
            f"--serving-cert={cert}",
            f"--serving-key={key}",
            f"--client-ca={self.controlplane.pki / 'ca.crt'}",
            f"--proxy-kubeconfig={proxy_kubeconfig}",
            *(f"--images={path}" for path in (test_image, *self.images)),
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                args, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        net.wait_until(
            self.ready,
            what=f"node {self.name}",
            timeout=STARTUP_TIMEOUT,
            process=self.process,
            log=self.log,
            interval=0.1,
        )
        return self

    def ready(self) -> bool:
        node = self.controlplane.api.get(f"/api/v1/nodes/{self.name}")
        conditions = ((node or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def stop(self) -> None:
        """Stops the agent, which stops every container first; then makes sure none is left."""
        if self.process is not None:
            net.stop_process(self.process, grace=STOP_TIMEOUT)
            self.process = None
        NodeCgroups(str(self.root)).destroy()

    def kill(self) -> None:
        """SIGKILL to the agent alone, as a crash: its containers keep running, for the next to adopt."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def container_pids(self) -> dict[tuple[str, str], int]:
        """(pod uid, container) -> pid of every container process of this node that is running."""
        cgroups = NodeCgroups(str(self.root))
        pids = {}
        for pod_uid, name, cgroup in cgroups.containers():
            pid = cgroups.main_process(cgroup)
            if pid is not None:
                pids[(pod_uid, name)] = pid
        return pids

    def container_log(self, namespace: str, pod: str, container: str, previous: bool = False) -> str:
        """What `kubectl logs [--previous]` shows, from the node's files (also after the pod is gone)."""
        pod_dirs = sorted(
            self.logs_dir.glob(f"{namespace}_{pod}_*"), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for pod_dir in pod_dirs:
            files = log_files(pod_dir / container)
            if len(files) >= (2 if previous else 1):
                return (files[-2] if previous else files[-1]).read_text(errors="replace")
        return ""
