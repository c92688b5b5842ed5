"""A real redis-server on a free loopback port, with no persistence unless asked."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.harness import binaries, net


@dataclass
class RedisServer:
    root: Path
    port: int = field(default_factory=net.free_port)
    appendonly: bool = False
    # With appendonly: "always" fsyncs every write before replying, so even a SIGKILLed server
    # restarts with everything it acknowledged ("everysec" may lose the last second).
    appendfsync: str = "everysec"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{net.LOOPBACK}:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.root / f"redis-{self.port}.log"

    def start(self) -> RedisServer:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [
            str(binaries.system_binary("redis-server")),
            "--bind",
            net.LOOPBACK,
            "--port",
            str(self.port),
            "--dir",
            str(self.root),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log),
        ]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        net.wait_until(self._pings, what="redis-server", timeout=20, process=self.process, log=self.log)
        return self

    def _pings(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # a paused server would not see the SIGTERM
            net.stop_process(self.process)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: what a crashed Redis looks like to its clients."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: the server holds every connection open and answers nothing (a long GC, a VM stall)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`: it answers what queued up meanwhile, on a clock that moved on."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stop and start again on the same port (without persistence the data is gone)."""
        self.stop()
        self.start()
