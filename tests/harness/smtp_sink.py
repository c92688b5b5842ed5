"""SMTP sinks for tests: a recording sink (aiosmtpd) and postfix's smtp-sink.

The recording sink runs as its own process, so a test with several senders and
100k messages is not slowed by the test's own interpreter. It appends one JSON
line per accepted message (envelope + raw bytes) to a file the test reads.
Faults (4xx/5xx replies, dropped connections) are rules given at start.

Run by hand: python -m tests.harness.smtp_sink --port 2525 --record /tmp/mail.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import email
import email.policy
import json
import os
import re
import ssl
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests.harness import binaries, net


@dataclass(frozen=True)
class Fault:
    """Reply `code` (or drop the connection) at `stage` for matching recipients.

    times: fail only the first N attempts per recipient (a transient failure);
    None fails every attempt. every: only every k-th command at that stage.
    """

    stage: str  # "rcpt" | "data"
    code: int = 451
    drop: bool = False
    match: str | None = None
    times: int | None = None
    every: int | None = None


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    peer_port: int
    received_at: float
    helo: str = ""  # the client's EHLO name: which sender process sent it

    @property
    def message(self) -> EmailMessage:
        # `raw` is what came over the wire (CRLF line ends); the parser wants local ones.
        parsed = email.message_from_bytes(self.raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class RecordingSink:
    """Handle on a running recording-sink process."""

    root: Path
    port: int = field(default_factory=net.free_port)
    faults: list[Fault] = field(default_factory=list)
    auth: tuple[str, str] | None = None
    tls: tuple[Path, Path] | None = None  # cert, key: offers STARTTLS
    implicit_tls: bool = False
    pipelining: bool = True  # offer PIPELINING (RFC 2920), as production relays do
    process: subprocess.Popen[bytes] | None = None
    _seen: list[ReceivedMessage] = field(default_factory=list, repr=False)
    _offset: int = field(default=0, repr=False)

    @property
    def record_file(self) -> Path:
        return self.root / f"sink-{self.port}.jsonl"

    @property
    def log(self) -> Path:
        return self.root / f"sink-{self.port}.log"

    def start(self) -> RecordingSink:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "tests.harness.smtp_sink",
            "--port",
            str(self.port),
            "--record",
            str(self.record_file),
            "--faults",
            json.dumps([asdict(f) for f in self.faults]),
        ]
        if self.auth:
            args += ["--auth", f"{self.auth[0]}:{self.auth[1]}"]
        if self.tls:
            args += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
            if self.implicit_tls:
                args.append("--implicit-tls")
        if not self.pipelining:
            args.append("--no-pipelining")
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, cwd=binaries.REPO_ROOT, start_new_session=True
            )
        net.wait_until(
            lambda: net.port_accepts(self.port),
            what="recording SMTP sink",
            timeout=20,
            process=self.process,
            log=self.log,
        )
        return self

    def stop(self) -> None:
        if self.process is not None:
            net.stop_process(self.process)
            self.process = None

    def messages(self) -> list[ReceivedMessage]:
        """Every message recorded so far (read incrementally: cheap to poll)."""
        if not self.record_file.exists():
            return list(self._seen)
        with self.record_file.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # a last line still being written waits for the next call
        self._offset += len(complete)
        for line in complete.splitlines():
            rec = json.loads(line)
            raw = base64.b64decode(rec["raw"])
            self._seen.append(
                ReceivedMessage(
                    rec["mail_from"],
                    rec["rcpt_tos"],
                    raw,
                    rec["peer_port"],
                    rec["received_at"],
                    rec.get("helo", ""),
                )
            )
        return list(self._seen)

    def recipient_counts(self) -> Counter[str]:
        return Counter(rcpt for msg in self.messages() for rcpt in msg.rcpt_tos)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[ReceivedMessage]:
        """Wait until at least `count` messages arrived; return them all."""
        net.wait_until(
            lambda: len(self.messages()) >= count,
            what=f"{count} messages at the sink",
            timeout=timeout,
            process=self.process,
            log=self.log,
        )
        return self.messages()


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


# -- the sink process ---------------------------------------------------------------------------------------


class _Handler:
    def __init__(self, record: Path, faults: list[Fault], pipelining: bool) -> None:
        self._out = record.open("a", buffering=1)
        self._pipelining = pipelining
        self._faults = faults
        self._attempts: Counter[tuple[int, str]] = Counter()
        self._stage_count: Counter[int] = Counter()

    def _fault(self, stage: str, addresses: list[str]) -> Fault | None:
        for index, fault in enumerate(self._faults):
            if fault.stage != stage:
                continue
            if fault.match and not any(re.search(fault.match, a) for a in addresses):
                continue
            self._stage_count[index] += 1
            if fault.every and self._stage_count[index] % fault.every:
                continue
            if fault.times is not None:
                key = (index, ",".join(addresses))
                self._attempts[key] += 1
                if self._attempts[key] > fault.times:
                    continue
            return fault
        return None

    @staticmethod
    def _reply(server: Any, fault: Fault) -> str:
        if fault.drop:
            server.transport.abort()
        return f"{fault.code} {'4.0.0' if fault.code < 500 else '5.0.0'} injected fault"

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self._pipelining:  # aiosmtpd reads pipelined commands in order; it only does not say so
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        fault = self._fault("rcpt", [address])
        if fault:
            return self._reply(server, fault)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        fault = self._fault("data", list(envelope.rcpt_tos))
        if fault:
            return self._reply(server, fault)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "raw": base64.b64encode(envelope.original_content or envelope.content).decode(),
            "peer_port": session.peer[1],
            "helo": session.host_name,
            "received_at": time.time(),
        }
        self._out.write(json.dumps(record) + "\n")
        return "250 OK queued"


def _authenticator(user: str, password: str) -> Any:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def check(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd sends the 535 itself

    return check


async def _serve(args: argparse.Namespace) -> None:
    from aiosmtpd.smtp import SMTP

    faults = [Fault(**f) for f in json.loads(args.faults)]
    handler = _Handler(Path(args.record), faults, not args.no_pipelining)
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    kwargs: dict[str, Any] = {"enable_SMTPUTF8": True, "hostname": "sink.test"}
    if args.auth:
        user, _, password = args.auth.partition(":")
        kwargs.update(
            authenticator=_authenticator(user, password), auth_required=True, auth_require_tls=False
        )
    if context is not None and not args.implicit_tls:
        kwargs["tls_context"] = context

    def factory() -> SMTP:
        return SMTP(handler, **kwargs)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory, host=net.LOOPBACK, port=args.port, ssl=context if args.implicit_tls else None, backlog=1024
    )
    print(f"sink listening on {net.LOOPBACK}:{args.port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="Recording SMTP sink for tests")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True, help="JSON-lines file, one line per accepted message")
    parser.add_argument("--faults", default="[]", help="JSON list of Fault fields")
    parser.add_argument("--auth", help="user:password required via AUTH")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--implicit-tls", action="store_true")
    parser.add_argument("--no-pipelining", action="store_true", help="do not offer PIPELINING in EHLO")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
