"""SMTP PIPELINING (RFC 2920) on top of aiosmtplib.

Without it every message costs four round trips (MAIL, RCPT, DATA, the body);
with it, two: MAIL, RCPT and DATA go out together, then the body. Over a relay
20 ms away that doubles what each connection can send. aiosmtplib does not
pipeline, and its protocol keeps only one reply in hand, so this module teaches
an established aiosmtplib connection to queue replies, then runs the
transaction itself. Connecting, STARTTLS and AUTH stay aiosmtplib's.

It relies on aiosmtplib's protocol internals (pinned to major version 5 in
pyproject.toml); tests run it against postfix's smtp-sink, which pipelines.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse

_LEADING_DOT = re.compile(rb"(?m)^\.")


class PipeliningProtocol(SMTPProtocol):
    """aiosmtplib's protocol, holding any number of replies in the order they came."""

    _replies: deque[SMTPResponse]

    def data_received(self, data: bytes) -> None:
        if self._response_waiter is None:
            return
        self._buffer.extend(data)
        while True:
            try:
                reply = self._read_response_from_buffer()
            except Exception as exc:  # a malformed reply: fail whoever waits
                if not self._response_waiter.done():
                    self._set_response_exception(self._response_waiter, exc)
                return
            if reply is None:
                break
            self._replies.append(reply)
        if self._replies and not self._response_waiter.done():
            self._response_waiter.set_result(self._replies.popleft())

    async def read_response(self, timeout: float | None = None) -> SMTPResponse:  # noqa: ASYNC109 (aiosmtplib's signature)
        waiter = self._response_waiter
        if waiter is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        if not waiter.done() and self._replies:
            return self._replies.popleft()
        try:
            # asyncio.timeout, not wait_for: no extra task per reply. A timed-out waiter is
            # cancelled; data_received then skips it, and the connection is dropped anyway.
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError as exc:
            raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from exc
        finally:
            if waiter.done():
                self._response_waiter = None if self.transport is None else self._loop.create_future()


async def enable(client: aiosmtplib.SMTP) -> bool:
    """Switch a connected client to pipelining, if the server offers it. Call between transactions."""
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()  # the extensions are only known after EHLO
    protocol = client.protocol
    if protocol is None or not client.supports_extension("pipelining"):
        return False
    # The connection is idle: no reply is outstanding, so the switch loses nothing.
    protocol.__class__ = PipeliningProtocol
    protocol._replies = deque()  # type: ignore[attr-defined]
    # uvloop's transports cache the protocol's bound methods; hand the protocol over
    # again so they pick up the new data_received.
    if protocol.transport is not None:
        protocol.transport.set_protocol(protocol)
    return True


async def send(
    client: aiosmtplib.SMTP, sender: str, recipient: str, message: bytes, reply_timeout: float
) -> str:
    """One pipelined transaction: raises aiosmtplib's exceptions, as `sendmail` would."""
    protocol = client.protocol
    if protocol is None or protocol._command_lock is None:
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    size = f" SIZE={len(message) + 3}" if client.supports_extension("size") else ""
    body = _LEADING_DOT.sub(b"..", message) + b".\r\n"
    async with protocol._command_lock:
        protocol.write(f"MAIL FROM:<{sender}>{size}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode("ascii"))
        mail = await protocol.read_response(reply_timeout)
        rcpt = await protocol.read_response(reply_timeout)
        data = await protocol.read_response(reply_timeout)
        if data.code == 354:
            if mail.code == 250 and rcpt.code in (250, 251):
                protocol.write(body)
                final = await protocol.read_response(reply_timeout)
                if final.code != 250:
                    raise aiosmtplib.SMTPDataError(final.code, final.message)
                return final.message
            # RFC 2920 3.1: DATA was accepted although the envelope was not; end it with a lone dot.
            protocol.write(b".\r\n")
            await protocol.read_response(reply_timeout)
        else:
            protocol.write(b"RSET\r\n")
            await protocol.read_response(reply_timeout)
    if mail.code != 250:
        raise aiosmtplib.SMTPSenderRefused(mail.code, mail.message, sender)
    if rcpt.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientsRefused(
            [aiosmtplib.SMTPRecipientRefused(rcpt.code, rcpt.message, recipient)]
        )
    raise aiosmtplib.SMTPDataError(data.code, data.message)
