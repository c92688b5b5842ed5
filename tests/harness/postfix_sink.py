"""postfix's smtp-sink as a test relay: fast, for benchmarks and whole-session fault modes.

(Imported by smtp_sink.py too, where it used to live.)
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import binaries, net


@dataclass
class PostfixSink:
    """postfix's smtp-sink: fast, for benchmarks and whole-session fault modes.

    soft_reject / hard_reject / disconnect / reply_421 take SMTP command names
    (RCPT, DATA, ., ...) and map to smtp-sink's -r / -f / -q / -Q.
    """

    root: Path
    port: int = field(default_factory=net.free_port)
    soft_reject: tuple[str, ...] = ()
    hard_reject: tuple[str, ...] = ()
    disconnect: tuple[str, ...] = ()
    reply_421: tuple[str, ...] = ()
    soft_reply: str = "451 4.3.0 Try again later"
    hard_reply: str = "550 5.1.1 No such user"
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> PostfixSink:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [
            str(binaries.system_binary("smtp-sink")),
            "-c",
            "-m",
            "1024",
            "-b",
            self.soft_reply,
            "-B",
            self.hard_reply,
        ]
        for flag, commands in (
            ("-r", self.soft_reject),
            ("-f", self.hard_reject),
            ("-q", self.disconnect),
            ("-Q", self.reply_421),
        ):
            if commands:
                args += [flag, ",".join(commands)]
        if _running_as_root():
            args += ["-u", "nobody"]  # smtp-sink refuses to keep root privileges
        args += [f"{net.LOOPBACK}:{self.port}", "1024"]
        log = self.log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        net.wait_until(
            lambda: net.port_accepts(self.port), what="smtp-sink", timeout=20, process=self.process, log=log
        )
        return self

    def stop(self) -> None:
        if self.process is not None:
            net.stop_process(self.process)
            self.process = None

    @property
    def log(self) -> Path:
        return self.root / f"smtp-sink-{self.port}.log"

    def messages_received(self) -> int:
        """smtp-sink's own count of messages (its -c counters: "sess=N quit=N mesg=N")."""
        counters = re.findall(rb"mesg=(\d+)", self.log.read_bytes()) if self.log.exists() else []
        return int(counters[-1]) if counters else 0


def _running_as_root() -> bool:
    return os.geteuid() == 0
