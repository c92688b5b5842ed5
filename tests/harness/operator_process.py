"""The operator as a real process: `mailtrain-operator` (or the same entry point with the test-only probe
handler) on the test's apiserver, with its settings from the environment, as a pod would get them.

One object is one operator replica: its identity (`POD_ID`, also its name in a peering object), its
/healthz and /metrics on free loopback ports, and one log file that every start appends to, so a
restart's log follows the one before. By default it runs standalone in the namespaces given; with
`peering` it is a replica among others that kopf elects through the named peering object.

Stopping is a pod's termination (SIGTERM, then the exit code, which a test expects to be 0); `kill`
is a node's loss (SIGKILL: no goodbye to the peering object, nothing finished).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

from tests.harness import net
from tests.harness.binaries import REPO_ROOT
from tests.harness.controlplane import ControlPlane

# mailtrain_operator.settings.ENV_PREFIX, spelt out: the harness imports no product code.
ENV_PREFIX = "MAILTRAIN_OPERATOR_"
OPERATOR = (str(Path(sys.executable).parent / "mailtrain-operator"),)
# The operator's own entry point with one more handler, whose effects on labelled ConfigMaps show which
# replica handled them (see the program's docstring).
PROBE = (sys.executable, str(REPO_ROOT / "tests" / "operator" / "programs" / "operator_with_probe.py"))
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# What the operator logs once its startup handlers ran, and what kopf logs when the peering lets a
# replica work (with peering it starts paused: peering is mandatory).
STARTED = "mailtrain-operator started: watching"
RESUMED = "Resuming operations after the pause"


def _get(url: str) -> tuple[int, str] | None:
    # No proxy: a developer's HTTP_PROXY must not carry requests for the loopback address.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return int(response.status), response.read().decode()
    except OSError:
        return None


@dataclass
class OperatorProcess:
    controlplane: ControlPlane
    namespaces: tuple[str, ...]  # empty: every namespace (cluster-wide)
    root: Path  # holds the log
    settings: dict[str, str] = field(default_factory=dict)  # MAILTRAIN_OPERATOR_<KEY>: value; they win
    health_port: int = field(default_factory=net.free_port)
    process: subprocess.Popen[bytes] | None = None
    _: KW_ONLY
    metrics_port: int = field(default_factory=net.free_port)
    name: str = "operator"  # POD_ID: the replica's identity among its peers; also names the log
    peering: str | None = None  # the peering object's name; None runs standalone
    program: tuple[str, ...] = OPERATOR
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.root / f"{self.name}.log"

    def environment(self) -> dict[str, str]:
        """The process's environment: this test's, without any operator setting of the caller's own."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env |= {
            "KUBECONFIG": str(self.controlplane.kubeconfig),
            "NO_PROXY": net.LOOPBACK,
            "POD_ID": self.name,
            f"{ENV_PREFIX}HEALTH_LISTEN": f"{net.LOOPBACK}:{self.health_port}",
            f"{ENV_PREFIX}METRICS_LISTEN": f"{net.LOOPBACK}:{self.metrics_port}",
            f"{ENV_PREFIX}STANDALONE": "false" if self.peering else "true",
        }
        if self.namespaces:
            env[f"{ENV_PREFIX}NAMESPACES"] = ",".join(self.namespaces)
        if self.peering:
            env[f"{ENV_PREFIX}PEERING_NAME"] = self.peering
        env |= {ENV_PREFIX + key.upper(): str(value) for key, value in self.settings.items()}
        return env

    def launch(self) -> OperatorProcess:
        """Starts the process and returns at once: for a test that watches it fail to start."""
        assert not self.running(), f"{self.name} is running already"
        self.root.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts} of {self.name} ---\n".encode())
            out.flush()
            # Its own session: a signal meant for pytest's process group does not reach the operator.
            self.process = subprocess.Popen(
                list(self.program),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
            )
        return self

    def start(self) -> OperatorProcess:
        """Starts the process and waits for its /healthz, which kopf serves once the startup handlers
        succeeded and its watches began (a standby replica serves it too: it is alive, only paused)."""
        self.launch()
        net.wait_until(
            self.healthy,
            what=f"mailtrain-operator {self.name}",
            timeout=STARTUP_TIMEOUT,
            process=self.process,
            log=self.log,
        )
        return self

    def restart(self) -> int | None:
        """SIGTERM, then a new start with the same settings and ports; the old process's exit code."""
        code = self.stop()
        self.start()
        return code

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthy(self) -> bool:
        answer = _get(f"http://{net.LOOPBACK}:{self.health_port}/healthz")
        return answer is not None and answer[0] == 200

    def scrape(self) -> str:
        """The text of GET /metrics."""
        answer = _get(f"http://{net.LOOPBACK}:{self.metrics_port}/metrics")
        assert answer is not None and answer[0] == 200, f"no /metrics from {self.name}"
        return answer[1]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_log(self, text: str, *, timeout: float) -> float:
        """Polls the log until `text` is in it; returns the monotonic time it was first seen."""
        net.wait_until(
            lambda: text in self.log_text(),
            what=f"{text!r} in the log of {self.name}",
            timeout=timeout,
            process=self.process,
            log=self.log,
        )
        return time.monotonic()

    def wait_exit(self, timeout: float) -> int:
        """The exit code of a process that ends on its own (e.g. refusing to start)."""
        assert self.process is not None, f"{self.name} was never started"
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, as a pod's termination; then the exit code, 0 for a clean exit. None if it had to be
        killed after `timeout`, or was never started. A process that ended already gives its code."""
        if self.process is None:
            return None
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    def kill(self) -> None:
        """SIGKILL: no goodbye to the peering object and nothing finished, as when a node dies."""
        assert self.process is not None, f"{self.name} was never started"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
