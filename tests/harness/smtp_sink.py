"""SMTP sinks for tests: a recording sink (aiosmtpd); postfix's smtp-sink is in postfix_sink.py.

The recording sink runs as its own process, so a test with several senders and
100k messages is not slowed by the test's own interpreter. It appends one JSON
line per accepted message (envelope, raw bytes unless record_raw=False, Message-ID,
EHLO name, time) to a file the test reads. Faults (4xx/5xx replies, dropped
connections) are rules given at start; with chaos=True, random faults can also be
switched on and off at runtime (relay_faults.py).

Run by hand: python -m tests.harness.smtp_sink --port 2525 --record /tmp/mail.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import email
import email.policy
import json
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
from tests.harness.postfix_sink import PostfixSink
from tests.harness.relay_faults import ChaosSettings, RelayChaos, chaos_smtp_class

_MESSAGE_ID = re.compile(rb"(?im)^Message-ID:[ \t]*<([^>\r\n]*)>")


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
    message_id: str = ""  # without the angle brackets
    after_dot_drop: bool = False  # recorded, then the connection was cut without a reply (chaos)
    reply_delay: float = 0.0  # seconds the 250 was held back (chaos: slow_reply)

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
    record_raw: bool = True  # False: leave the message bytes out of the record (long soaks)
    chaos: bool = False  # random faults switched at runtime with set_chaos(); logs every MAIL
    process: subprocess.Popen[bytes] | None = None
    _seen: list[ReceivedMessage] = field(default_factory=list, repr=False)
    _offset: int = field(default=0, repr=False)
    _generation: int = field(default=0, repr=False)

    @property
    def record_file(self) -> Path:
        return self.root / f"sink-{self.port}.jsonl"

    @property
    def log(self) -> Path:
        return self.root / f"sink-{self.port}.log"

    def _chaos_file(self, name: str) -> Path:
        return self.root / f"sink-{self.port}.{name}"

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
        if not self.record_raw:
            args.append("--no-raw")
        if self.chaos:
            for name in ("control", "applied", "faults", "mail"):
                args += [f"--chaos-{name}", str(self._chaos_file(name))]
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
                    rec.get("message_id", ""),
                    rec.get("after_dot_drop", False),
                    rec.get("reply_delay", 0.0),
                )
            )
        return list(self._seen)

    def set_chaos(self, settings: ChaosSettings | None, timeout: float = 10.0) -> None:
        """Switch random faults on (settings) or off (None); returns once the sink applied it."""
        assert self.chaos, "start the sink with chaos=True"
        self._generation += 1
        generation = self._generation
        control = self._chaos_file("control")
        tmp = control.with_suffix(".tmp")
        tmp.write_text((settings or ChaosSettings(0)).to_json(generation, enabled=settings is not None))
        tmp.replace(control)  # atomic: the sink never reads half a file
        applied = self._chaos_file("applied")
        net.wait_until(
            lambda: applied.exists() and applied.read_text() == str(generation),
            what=f"the sink applying chaos generation {generation}",
            timeout=timeout,
            process=self.process,
            log=self.log,
        )

    def injected_faults(self) -> list[dict[str, Any]]:
        """Every random fault injected so far: at (time), kind, helo, rcpt_tos, and extras."""
        path = self._chaos_file("faults")
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]

    def transaction_times(self) -> list[tuple[float, str]]:
        """(time, EHLO name) of every MAIL command, accepted or not: one per transaction started."""
        path = self._chaos_file("mail")
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            at, _, helo = line.partition(" ")
            if helo:  # a line still being written has no name yet
                out.append((float(at), helo))
        return out

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


# -- the sink process ---------------------------------------------------------------------------------------


class _Handler:
    def __init__(
        self,
        record: Path,
        faults: list[Fault],
        pipelining: bool,
        record_raw: bool = True,
        chaos: RelayChaos | None = None,
        mail_log: Path | None = None,
    ) -> None:
        self._out = record.open("a", buffering=1)
        self._pipelining = pipelining
        self._faults = faults
        self._record_raw = record_raw
        self.chaos = chaos  # read by the ChaosSMTP class too
        self._mail_log = mail_log.open("a", buffering=1) if mail_log else None
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

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if self._mail_log is not None:  # one line per transaction: the soak's throttle check
            self._mail_log.write(f"{time.time():.6f} {session.host_name}\n")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str | bytes:
        fault = self._fault("rcpt", [address])
        if fault:
            return self._reply(server, fault)
        refusal = await self.chaos.at_rcpt(session.host_name or "", address) if self.chaos else None
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str | bytes:
        fault = self._fault("data", list(envelope.rcpt_tos))
        if fault:
            return self._reply(server, fault)
        after = self.chaos.after_dot(session.host_name or "", envelope.rcpt_tos) if self.chaos else None
        if after is not None and after.refusal is not None:
            return after.refusal
        # Recorded before any fault after the dot: a relay that has the whole message has it.
        drop, delay = (after.drop, after.delay) if after else (False, 0.0)
        self._record(session, envelope, after_dot_drop=drop, reply_delay=delay)
        return await after.reply(server.transport) if after else "250 OK queued"

    def _record(self, session: Any, envelope: Any, *, after_dot_drop: bool, reply_delay: float) -> None:
        content = envelope.original_content or envelope.content
        headers = content.partition(b"\r\n\r\n")[0]
        match = _MESSAGE_ID.search(headers)
        record: dict[str, Any] = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "raw": base64.b64encode(content).decode() if self._record_raw else "",
            "peer_port": session.peer[1],
            "helo": session.host_name,
            "received_at": time.time(),
            "message_id": match.group(1).decode(errors="replace") if match else "",
        }
        if after_dot_drop:
            record["after_dot_drop"] = True
        if reply_delay:
            record["reply_delay"] = reply_delay
        self._out.write(json.dumps(record) + "\n")


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
    chaos = None
    if args.chaos_control:
        chaos = RelayChaos(Path(args.chaos_control), Path(args.chaos_applied), Path(args.chaos_faults))
    mail_log = Path(args.chaos_mail) if args.chaos_mail else None
    handler = _Handler(Path(args.record), faults, not args.no_pipelining, not args.no_raw, chaos, mail_log)
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

    smtp_class = chaos_smtp_class(SMTP) if chaos is not None else SMTP

    def factory() -> SMTP:
        return smtp_class(handler, **kwargs)

    loop = asyncio.get_running_loop()
    watcher = loop.create_task(chaos.watch()) if chaos is not None else None
    server = await loop.create_server(
        factory, host=net.LOOPBACK, port=args.port, ssl=context if args.implicit_tls else None, backlog=1024
    )
    print(f"sink listening on {net.LOOPBACK}:{args.port}", flush=True)
    try:
        async with server:
            await server.serve_forever()
    finally:
        if watcher is not None:
            watcher.cancel()


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
    parser.add_argument("--no-raw", action="store_true", help="leave message bytes out of the record")
    parser.add_argument("--chaos-control", help="JSON control file of random faults (relay_faults.py)")
    parser.add_argument("--chaos-applied", help="where the sink writes the control generation applied")
    parser.add_argument("--chaos-faults", help="JSON-lines log of every random fault injected")
    parser.add_argument("--chaos-mail", help="log of every MAIL command: time and EHLO name")
    asyncio.run(_serve(parser.parse_args()))


__all__ = ["Fault", "PostfixSink", "ReceivedMessage", "RecordingSink"]

if __name__ == "__main__":
    main()
