"""The operator as a real process: the venv's `mailtrain-operator`, on the test's apiserver.

It runs standalone (no peering) in the namespaces it is given, with its admin kubeconfig, its probe
and metrics endpoints on free loopback ports, and its log in a file; `stop` sends SIGTERM and
expects a clean exit, as a pod's termination would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import net
from tests.harness.controlplane import ControlPlane

OPERATOR = Path(sys.executable).parent / "mailtrain-operator"
ENV_PREFIX = "MAILTRAIN_OPERATOR_"
STARTUP_TIMEOUT = 60.0


@dataclass
class OperatorProcess:
    controlplane: ControlPlane
    namespaces: tuple[str, ...]
    root: Path
    settings: dict[str, str] = field(default_factory=dict)  # MAILTRAIN_OPERATOR_<KEY> values
    health_port: int = field(default_factory=net.free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root / "operator.log"

    def _healthy(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{net.LOOPBACK}:{self.health_port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def start(self) -> OperatorProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env |= {
            "KUBECONFIG": str(self.controlplane.kubeconfig),
            "NO_PROXY": net.LOOPBACK,
            f"{ENV_PREFIX}NAMESPACES": ",".join(self.namespaces),
            f"{ENV_PREFIX}STANDALONE": "true",
            f"{ENV_PREFIX}HEALTH_LISTEN": f"{net.LOOPBACK}:{self.health_port}",
            f"{ENV_PREFIX}METRICS_LISTEN": f"{net.LOOPBACK}:{net.free_port()}",
            **{f"{ENV_PREFIX}{key.upper()}": value for key, value in self.settings.items()},
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(OPERATOR)], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        # kopf serves /healthz once its startup handlers succeeded and its watches began.
        net.wait_until(
            self._healthy,
            what="mailtrain-operator",
            timeout=STARTUP_TIMEOUT,
            process=self.process,
            log=self.log,
        )
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int | None:
        """SIGTERM, then the exit code (None if it had to be killed)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            net.stop_process(self.process)
            return None
