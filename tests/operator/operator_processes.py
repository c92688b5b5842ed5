"""Real operator processes for tests: started with settings from the environment, as a pod would, and
watched through their log, /healthz and /metrics. Nothing is simulated: each is a separate OS process
that talks to the test's apiserver.

`PROBE` is the operator's own entry point with one extra, test-only handler (programs/
operator_with_probe.py); `OPERATOR` is the product's console script alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mailtrain_operator.settings import ENV_PREFIX
from tests.harness import net
from tests.harness.controlplane import ControlPlane

OPERATOR = (str(Path(sys.executable).parent / "mailtrain-operator"),)
PROBE = (sys.executable, str(Path(__file__).parent / "programs" / "operator_with_probe.py"))
# What kopf logs when the peering lets this replica work (it starts paused: peering is mandatory).
RESUMED = "Resuming operations after the pause"
STARTED = "mailtrain-operator started: watching"


def _get(url: str) -> tuple[int, str] | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return int(response.status), response.read().decode()
    except OSError:
        return None


@dataclass
class OperatorProcess:
    name: str  # POD_ID, so also its identity in the peering object
    process: subprocess.Popen[bytes]
    log: Path
    health_port: int
    metrics_port: int

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

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

    def healthy(self) -> bool:
        answer = _get(f"http://{net.LOOPBACK}:{self.health_port}/healthz")
        return answer is not None and answer[0] == 200

    def scrape(self) -> str:
        answer = _get(f"http://{net.LOOPBACK}:{self.metrics_port}/metrics")
        assert answer is not None and answer[0] == 200, f"no /metrics from {self.name}"
        return answer[1]

    def kill(self) -> None:
        """SIGKILL: no goodbye to the peering object, as when a node dies."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        net.stop_process(self.process)


def start_operator(
    controlplane: ControlPlane,
    directory: Path,
    name: str,
    *,
    program: tuple[str, ...] = OPERATOR,
    **settings: str,
) -> OperatorProcess:
    """An operator process as the admin, with MAILTRAIN_OPERATOR_<KEY> for each keyword; free ports for
    /healthz and /metrics unless given. Stop it with `stop()` (a fixture's teardown should)."""
    health, metrics = net.free_port(), net.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env |= {
        "KUBECONFIG": str(controlplane.kubeconfig),
        "NO_PROXY": net.LOOPBACK,
        "POD_ID": name,
        f"{ENV_PREFIX}HEALTH_LISTEN": f"{net.LOOPBACK}:{health}",
        f"{ENV_PREFIX}METRICS_LISTEN": f"{net.LOOPBACK}:{metrics}",
    }
    env |= {ENV_PREFIX + key.upper(): value for key, value in settings.items()}
    log = directory / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(list(program), stdout=out, stderr=subprocess.STDOUT, env=env)
    _, _, health_port = env[f"{ENV_PREFIX}HEALTH_LISTEN"].rpartition(":")
    _, _, metrics_port = env[f"{ENV_PREFIX}METRICS_LISTEN"].rpartition(":")
    return OperatorProcess(name, process, log, int(health_port), int(metrics_port))
