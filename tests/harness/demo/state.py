"""What `make demo` started beside the cluster (Mailpit, Prometheus: processes of their own session, so
they outlive the command), remembered in `.local-cluster/demo/state.json` for the next run and for
`make demo-down`."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from typing import ClassVar

from tests.harness import cluster
from tests.harness.net import process_running, stop_pid


@dataclass
class DemoState:
    DIR: ClassVar = cluster.STATE_DIR / "demo"
    pids: dict[str, int] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls) -> DemoState:
        path = cls.DIR / "state.json"
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        return cls(dict(raw["pids"]), dict(raw["urls"]))

    def save(self) -> None:
        self.DIR.mkdir(parents=True, exist_ok=True)
        (self.DIR / "state.json").write_text(json.dumps({"pids": self.pids, "urls": self.urls}))

    def alive(self, name: str) -> bool:
        return name in self.pids and process_running(self.pids[name])

    def remember(self, name: str, pid: int, url: str) -> None:
        self.pids[name], self.urls[name] = pid, url
        self.save()

    def stop_all(self, grace: float = 40.0) -> list[str]:
        """SIGTERM to each, SIGKILL after the grace; the names of those that were running."""
        stopped = []
        for name, pid in self.pids.items():
            if not process_running(pid):
                continue
            stopped.append(name)
            stop_pid(pid, grace)
        shutil.rmtree(self.DIR, ignore_errors=True)
        return stopped
