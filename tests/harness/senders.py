"""Sender processes for tests: real `python -m mailtrain_sender` OS processes.

Each has its own sender.toml, worker id (also its EHLO name, so the sink can
tell which process sent a message), metrics port and log file. Tests can
SIGKILL them, SIGTERM them, rewrite their config, and read their /metrics.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import binaries, net

DEFAULTS: dict[str, Any] = {
    "smtp": {"host": net.LOOPBACK, "security": "none", "maxConnections": 4, "timeout": 10},
    "worker": {"leaseTtl": 3, "rebalanceInterval": 0.2, "shutdownGrace": 10, "logLevel": "info"},
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Enough TOML for sender.toml: scalars and nested tables."""
    scalars = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    out = ([f"[{prefix}]"] if prefix and scalars else []) + scalars
    for key, value in data.items():
        if isinstance(value, dict):
            out.append(to_toml(value, f"{prefix}.{key}" if prefix else key))
    return "\n".join(out) + "\n"


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


@dataclass
class SenderProcess:
    root: Path
    worker_id: str
    settings: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    metrics_port: int = field(default_factory=net.free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.root / f"{self.worker_id}.toml"

    @property
    def log(self) -> Path:
        return self.root / f"{self.worker_id}.log"

    def write_config(self, settings: dict[str, Any] | None = None) -> None:
        if settings is not None:
            self.settings = settings
        full = merge(
            self.settings,
            {
                "worker": {
                    "listen": f"{net.LOOPBACK}:{self.metrics_port}",
                    "healthFile": str(self.root / f"{self.worker_id}.health.json"),
                }
            },
        )
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(to_toml(full))
        tmp.replace(self.config_path)  # atomic, as a ConfigMap update is

    def start(self) -> SenderProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_config()
        # The id comes from the environment, as a pod's name does: a shared sender.toml must not set it.
        env = {
            **os.environ,
            "PYTHONPATH": str(binaries.REPO_ROOT / "sender_image"),
            "MAILTRAIN_WORKER_ID": self.worker_id,
            **self.env,
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailtrain_sender", "--config", str(self.config_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        net.wait_until(
            self.ready, what=f"sender {self.worker_id}", timeout=30, process=self.process, log=self.log
        )
        return self

    def _get(self, path: str) -> tuple[int, str]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{net.LOOPBACK}:{self.metrics_port}{path}", timeout=2) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        return self._get("/readyz")[0] == 200

    def metrics(self) -> str:
        return self._get("/metrics")[1]

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            metric_name = series.split("{", 1)[0]
            if metric_name != name:
                continue
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def send_signal(self, signum: int) -> None:
        """Send a signal and return at once (terminate() waits for the exit)."""
        assert self.process is not None
        self.process.send_signal(signum)

    def terminate(self, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            net.stop_process(self.process, grace=30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class SenderFleet:
    """Starts sender processes sharing one Redis, sink and pool; stops them at the end of the test."""

    root: Path
    redis_url: str
    smtp_port: int
    pool: str = "test-pool"
    processes: list[SenderProcess] = field(default_factory=list)
    # Test defaults: short leases and fast rebalancing, so failover tests take seconds.
    defaults: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(DEFAULTS))

    def settings(self, **overrides: Any) -> dict[str, Any]:
        base = merge(
            self.defaults,
            {
                "redis": {"url": self.redis_url},
                "smtp": {"port": self.smtp_port},
                "worker": {"pool": self.pool},
            },
        )
        return merge(base, overrides)

    def start(
        self, count: int = 1, env: dict[str, str] | None = None, **overrides: Any
    ) -> list[SenderProcess]:
        started = []
        for _ in range(count):
            worker_id = f"sender-{len(self.processes)}"
            process = SenderProcess(self.root, worker_id, self.settings(**overrides), env=env or {})
            self.processes.append(process)
            started.append(process.start())
        return started

    def alive(self) -> list[SenderProcess]:
        return [p for p in self.processes if p.process is not None and p.process.poll() is None]

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()
