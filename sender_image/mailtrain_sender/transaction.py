"""One SMTP transaction on an aiosmtplib connection: pipelined (RFC 2920) or one command at a time.

Connecting, STARTTLS and AUTH stay aiosmtplib's. Once a connection is
established, its protocol is switched to `ReplyQueueProtocol`, which keeps every
reply in the order it came, and the transaction is run here:

  * pipelined, when the relay offers it: MAIL, RCPT and DATA in one write, then
    the body, so a message costs two round trips instead of four;
  * one command at a time otherwise.

A transaction never raises for what the relay says. It returns a `Result` that
tells the caller the reply, whether the connection is in a known state and may
carry on (a refused recipient followed by a clean RSET does not cost a new
connection), and whether the outcome is ambiguous: the final dot was written
but no reply came, so the relay may have accepted a message that will be sent
again.

aiosmtplib does not pipeline, and its protocol holds one reply at a time; this
module relies on its protocol internals (pinned to major version 5).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib.protocol import MAX_RESPONSE_LENGTH, SMTPProtocol
from aiosmtplib.response import SMTPResponse

_LEADING_DOT = re.compile(rb"(?m)^\.")
# An envelope address goes between < and > on a command line: nothing that could end it.
_ENVELOPE_ADDRESS = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]{1,254}\Z")
_MAX_QUEUED_REPLIES = 8  # more unread replies than a transaction can produce: the relay is out of step
_REPLY_CHARS = re.compile(r"[^\x20-\x7e]+")
MAX_REPLY = 500


def sanitize(reply: str) -> str:
    """A relay's reply as printable ASCII of bounded length, whatever bytes it sent.

    aiosmtplib decodes replies with surrogateescape; such a string cannot be encoded
    again, which once stopped every acknowledgement of the process.
    """
    return _REPLY_CHARS.sub("?", reply.replace("\n", " "))[:MAX_REPLY]


@dataclass(frozen=True, slots=True)
class Result:
    code: int  # the reply that decided the outcome; 0 when none came (timeout, disconnect)
    message: str  # sanitized
    clean: bool  # the connection is in a known state and can take the next transaction
    ambiguous: bool = False  # the final dot went out and no reply came: it may have been delivered

    @property
    def sent(self) -> bool:
        return self.code == 250


class ReplyQueueProtocol(SMTPProtocol):
    """aiosmtplib's protocol, keeping any number of replies in order, and the ones that came
    before a disconnect too (a real 550 must not be recorded as a dropped connection)."""

    _replies: deque[SMTPResponse]
    _error: BaseException | None
    _signal: asyncio.Future[None] | None

    def adopt(self) -> None:
        self._replies = deque()
        self._error = None
        self._signal = None

    def _wake(self) -> None:
        if self._signal is not None and not self._signal.done():
            self._signal.set_result(None)

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._wake()
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer.extend(data)
        while True:
            try:
                reply = self._read_response_from_buffer()
            except Exception as exc:  # a malformed reply: whoever reads next gets the error
                self._fail(exc)
                return
            if reply is None:
                break
            self._replies.append(reply)
        # aiosmtplib's own bounds, which a queue of replies must keep too.
        if len(self._buffer) > MAX_RESPONSE_LENGTH:
            self._fail(aiosmtplib.SMTPResponseException(-1, "reply too long"))
        elif len(self._replies) > _MAX_QUEUED_REPLIES:
            self._fail(aiosmtplib.SMTPResponseException(-1, "more replies than commands"))
        self._wake()

    def eof_received(self) -> bool:
        self._error = self._error or aiosmtplib.SMTPServerDisconnected("Unexpected EOF received")
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._error = self._error or aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._wake()

    async def read_response(self, timeout: float | None = None) -> SMTPResponse:  # noqa: ASYNC109 (aiosmtplib's signature)
        try:
            async with asyncio.timeout(timeout):
                while not self._replies:
                    if self._error is not None:
                        raise self._error
                    self._signal = self._loop.create_future()
                    await self._signal
        except TimeoutError as exc:
            raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from exc
        return self._replies.popleft()

    @property
    def in_step(self) -> bool:
        """No reply is waiting to be read: the relay said nothing it was not asked."""
        return not self._replies and not self._buffer and self._error is None


def in_step(client: aiosmtplib.SMTP) -> bool:
    """Whether a connection is fit for the next transaction: open, and no reply waiting unread."""
    protocol = client.protocol
    return isinstance(protocol, ReplyQueueProtocol) and protocol.transport is not None and protocol.in_step


async def adopt(client: aiosmtplib.SMTP) -> bool:
    """Take over an idle connected client; returns whether the relay offers PIPELINING."""
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()  # the extensions are only known after EHLO
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    # The connection is idle: no reply is outstanding, so the switch loses nothing.
    protocol.__class__ = ReplyQueueProtocol
    assert isinstance(protocol, ReplyQueueProtocol)
    protocol.adopt()
    # uvloop's transports cache the protocol's bound methods; hand the protocol over
    # again so they pick up the new data_received.
    if protocol.transport is not None:
        protocol.transport.set_protocol(protocol)
    return client.supports_extension("pipelining")


class Progress:
    """How far a transaction got, readable after it was cancelled (a shutdown past its grace)."""

    __slots__ = ("dot_written",)

    def __init__(self) -> None:
        self.dot_written = False


async def send(
    client: aiosmtplib.SMTP,
    sender: str,
    recipient: str,
    message: bytes,
    *,
    pipelined: bool,
    reply_timeout: float,
    progress: Progress,
) -> Result:
    protocol = client.protocol
    if not isinstance(protocol, ReplyQueueProtocol) or protocol.transport is None:
        return Result(0, "not connected", clean=False)
    if not protocol.in_step:
        return Result(0, "the relay sent data nobody asked for; reconnecting", clean=False)
    for address in (sender, recipient):
        if address and not _ENVELOPE_ADDRESS.match(address):
            return Result(501, f"refusing to write the envelope address {address!r}", clean=True)
    size = f" SIZE={len(message) + 3}" if client.supports_extension("size") else ""
    commands = (f"MAIL FROM:<{sender}>{size}\r\n", f"RCPT TO:<{recipient}>\r\n", "DATA\r\n")
    body = _LEADING_DOT.sub(b"..", message) + b".\r\n"
    try:
        if pipelined:
            result = await _pipelined(protocol, commands, body, reply_timeout, progress)
        else:
            result = await _stepwise(protocol, commands, body, reply_timeout, progress)
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
        what = "no reply after the final dot" if progress.dot_written else "connection failed"
        return Result(0, sanitize(f"{what}: {type(exc).__name__}: {exc}"), False, progress.dot_written)
    # A reply left unread means the relay and we no longer agree on which reply is whose.
    return result if protocol.in_step else Result(result.code, result.message, False, result.ambiguous)


def _result(reply: SMTPResponse, clean: bool) -> Result:
    return Result(reply.code, sanitize(f"{reply.code} {reply.message}"), clean)


async def _finish(
    protocol: ReplyQueueProtocol, body: bytes, reply_timeout: float, progress: Progress
) -> Result:
    protocol.write(body)
    progress.dot_written = True
    final = await protocol.read_response(reply_timeout)
    return _result(final, final.code != 421)


async def _reset(protocol: ReplyQueueProtocol, reply_timeout: float) -> bool:
    """RSET after a refusal: whether the connection is clean again (a hang-up is not an error here:
    the refusal already decided the outcome)."""
    try:
        protocol.write(b"RSET\r\n")
        return (await protocol.read_response(reply_timeout)).code == 250
    except (TimeoutError, aiosmtplib.SMTPException, OSError):
        return False


async def _pipelined(
    protocol: ReplyQueueProtocol,
    commands: tuple[str, ...],
    body: bytes,
    reply_timeout: float,
    progress: Progress,
) -> Result:
    protocol.write("".join(commands).encode("ascii"))
    mail = await protocol.read_response(reply_timeout)
    rcpt = await protocol.read_response(reply_timeout)
    accepted = mail.code == 250 and rcpt.code in (250, 251)
    try:
        data = await protocol.read_response(reply_timeout)
    except (TimeoutError, aiosmtplib.SMTPException, OSError):
        if accepted:
            raise
        # A refusal then a hang-up: the refusal is the answer (a 550 is not a dropped connection).
        return _result(mail if mail.code != 250 else rcpt, False)
    if data.code == 354:
        if accepted:
            return await _finish(protocol, body, reply_timeout, progress)
        # RFC 2920 3.1: DATA was accepted although the envelope was not; end it with a lone dot.
        protocol.write(b".\r\n")
        clean = (await protocol.read_response(reply_timeout)).code // 100 in (2, 5)
    else:
        clean = await _reset(protocol, reply_timeout)
    decisive = mail if mail.code != 250 else rcpt if rcpt.code not in (250, 251) else data
    if decisive.code < 400:  # a success where a refusal must be: the replies are not ours
        return Result(0, "the relay's replies are out of step", clean=False)
    return _result(decisive, clean and decisive.code != 421)


async def _stepwise(
    protocol: ReplyQueueProtocol,
    commands: tuple[str, ...],
    body: bytes,
    reply_timeout: float,
    progress: Progress,
) -> Result:
    for command in commands:
        protocol.write(command.encode("ascii"))
        reply = await protocol.read_response(reply_timeout)
        expected = (354,) if command == "DATA\r\n" else (250, 251)
        if reply.code not in expected:
            if reply.code < 400:
                return Result(0, "the relay's replies are out of step", clean=False)
            return _result(reply, reply.code != 421 and await _reset(protocol, reply_timeout))
    return await _finish(protocol, body, reply_timeout, progress)
