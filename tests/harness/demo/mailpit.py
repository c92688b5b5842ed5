"""Mailpit, the relay `make demo` sends to: an SMTP server that keeps every message, with a REST API to
look into it (its web UI is not built: the Go module ships the UI's source only, see hack/mailpit.sh).

`make demo-mail` prints the latest messages, then the newest one with its headers and text part.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import net
from tests.harness.binaries import REPO_ROOT, MissingBinaryError

BUILD_SCRIPT = REPO_ROOT / "hack" / "mailpit.sh"
SMTP_PORT = 1025  # examples/seed/pool.yaml names it
HTTP_PORT = 8025
MAX_MESSAGES = 20000  # it keeps 500 by default, fewer than one demo sends


def build_command() -> list[str]:
    """hack/mailpit.sh: prints the cached binary's path, building it first if needed (with progress)."""
    if not BUILD_SCRIPT.exists():
        raise MissingBinaryError(f"{BUILD_SCRIPT} is missing")
    return [str(BUILD_SCRIPT)]


@dataclass
class Mailpit:
    binary: Path
    workdir: Path
    smtp_port: int = SMTP_PORT
    http_port: int = HTTP_PORT

    @property
    def url(self) -> str:
        return f"http://{net.LOOPBACK}:{self.http_port}"

    @property
    def log(self) -> Path:
        return self.workdir / "mailpit.log"

    def start(self) -> int:
        """Starts it in a session of its own (it outlives `make demo`, until `make demo-down`); its pid."""
        for port in (self.smtp_port, self.http_port):
            if net.port_accepts(port):
                raise RuntimeError(
                    f"port {port} on {net.LOOPBACK} is taken: is another demo running? (make demo-down)"
                )
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary),
            f"--smtp={net.LOOPBACK}:{self.smtp_port}",
            f"--listen={net.LOOPBACK}:{self.http_port}",
            f"--database={self.workdir / 'mailpit.db'}",
            f"--max={MAX_MESSAGES}",
            # Nothing may reach the internet: no update check, no reverse DNS of the senders.
            "--disable-version-check",
            "--smtp-disable-rdns",
        ]
        with self.log.open("ab") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        net.wait_until(
            lambda: net.port_accepts(self.smtp_port) and net.port_accepts(self.http_port),
            what="mailpit",
            timeout=30,
            process=process,
            log=self.log,
        )
        return process.pid


def _get(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return json.loads(response.read())


def message_count(url: str) -> int:
    return int(_get(f"{url}/api/v1/messages?limit=1")["messages_count"])


def latest(url: str, limit: int = 10) -> list[dict[str, Any]]:
    return list(_get(f"{url}/api/v1/messages?limit={limit}")["messages"])


def show(url: str, limit: int = 10) -> str:
    """The latest messages, one line each, then the newest in full: headers and text part."""
    messages = latest(url, limit)
    if not messages:
        return f"no messages at {url} yet"
    lines = [f"the latest {len(messages)} of {message_count(url)} messages at {url}:"]
    for m in messages:
        to = ", ".join(t["Address"] for t in m.get("To") or [])
        lines.append(f"  {m['Created'][:19]}  {to:<40.40}  {m['Subject']}")
    newest = messages[0]
    headers = _get(f"{url}/api/v1/message/{newest['ID']}/headers")
    body = _get(f"{url}/api/v1/message/{newest['ID']}")
    lines += ["", f"--- the newest, {newest['ID']} ({url}/api/v1/message/{newest['ID']}/raw)"]
    for name in sorted(headers):
        lines += [f"{name}: {value}" for value in headers[name]]
    lines += ["", body.get("Text", "").rstrip()]
    return "\n".join(lines)


def clear(url: str) -> None:
    """Deletes every message: a rerun's inbox holds its own messages only."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"{url}/api/v1/messages", method="DELETE")  # noqa: S310 - loopback
    with opener.open(request, timeout=10):
        pass
