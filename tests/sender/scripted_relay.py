"""A small SMTP relay that runs in the test's own event loop and misbehaves on cue.

The recording sink (tests/harness/smtp_sink.py) is the relay for volume; this one
is for replies no well-behaved server sends: bytes that are not UTF-8, a reply
nobody asked for, a final reply that comes seconds late, a reply followed by a
hang-up. A `Script` decides per recipient. Everything it accepted is recorded with
the time, the client's EHLO name and the connection it came on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.harness import net


@dataclass(frozen=True)
class Reply:
    """What the relay does at one step for one recipient."""

    line: bytes = b"250 2.0.0 Ok"
    delay: float = 0.0  # seconds before the reply
    then_hang_up: bool = False  # close the connection right after the reply
    extra: bytes = b""  # a reply nobody asked for, sent right after this one


ACCEPT = Reply()


@dataclass
class Script:
    rcpt: Callable[[str], Reply] = lambda _: ACCEPT
    final: Callable[[str], Reply] = lambda _: ACCEPT  # after the final dot; 250 means recorded
    pipelining: bool = True
    quit_delay: float = 0.0  # seconds before the reply to QUIT


@dataclass(frozen=True)
class Accepted:
    recipient: str
    message_id: str
    received_at: float
    helo: str
    connection: int


@dataclass
class ScriptedRelay:
    script: Script = field(default_factory=Script)
    port: int = 0
    accepted: list[Accepted] = field(default_factory=list)
    connections: int = 0
    awaiting_final: set[str] = field(default_factory=set)  # recipients whose final reply is not sent yet
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedRelay:
        self._server = await asyncio.start_server(self._session, net.LOOPBACK, 0, limit=16 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _say(self, writer: asyncio.StreamWriter, reply: Reply) -> bool:
        """Send a reply; False when the script hangs up."""
        if reply.delay:
            await asyncio.sleep(reply.delay)
        writer.write(reply.line + b"\r\n" + (reply.extra + b"\r\n" if reply.extra else b""))
        await writer.drain()
        if reply.then_hang_up:
            writer.close()
            return False
        return True

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection, helo, recipient, accepted = self.connections, "", "", False
        try:
            writer.write(b"220 scripted relay\r\n")
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    helo = line[5:].strip().decode()
                    writer.write(
                        b"250-scripted\r\n" + (b"250-PIPELINING\r\n" if self.script.pipelining else b"")
                    )
                    writer.write(b"250 8BITMIME\r\n")
                elif verb == b"RCPT":
                    recipient = line.decode().partition("<")[2].partition(">")[0]
                    reply = self.script.rcpt(recipient)
                    accepted = reply.line.startswith(b"250")
                    if not await self._say(writer, reply):
                        return
                elif verb == b"DATA" and not accepted:
                    writer.write(b"554 5.5.1 no valid recipients\r\n")
                elif verb == b"DATA":
                    accepted = False
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    body = await reader.readuntil(b"\r\n.\r\n")
                    reply = self.script.final(recipient)
                    self.awaiting_final.add(recipient)
                    if reply.line.startswith(b"250"):
                        message_id = next(
                            (
                                h.split(b":", 1)[1].strip().decode()
                                for h in body.split(b"\r\n")
                                if h.lower().startswith(b"message-id:")
                            ),
                            "",
                        )
                        self.accepted.append(Accepted(recipient, message_id, time.time(), helo, connection))
                    try:
                        if not await self._say(writer, reply):
                            return
                    finally:
                        self.awaiting_final.discard(recipient)
                elif verb == b"QUIT":
                    await asyncio.sleep(self.script.quit_delay)
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    return
                else:  # MAIL, RSET, NOOP
                    accepted = False
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
