"""The reply queue under an SMTP connection (findings 3, 15 and 16), fed bytes directly.

Fast unit tests of the protocol's bookkeeping; the same behaviours are proven end
to end against a misbehaving relay in test_guarantees.py.
"""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from mailtrain_sender.transaction import MAX_REPLY, ReplyQueueProtocol, sanitize


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self.written = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def _protocol() -> tuple[ReplyQueueProtocol, _Transport]:
    protocol = ReplyQueueProtocol(loop=asyncio.get_running_loop())
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.adopt()
    return protocol, transport


async def test_replies_that_came_before_a_hang_up_are_still_read() -> None:
    protocol, _ = _protocol()
    protocol.data_received(b"250 2.1.0 ok\r\n550 5.1.1 no such user\r\n")
    protocol.connection_lost(None)
    assert (await protocol.read_response(1)).code == 250
    refused = await protocol.read_response(1)
    assert (refused.code, refused.message) == (550, "5.1.1 no such user")  # not "connection lost"
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await protocol.read_response(1)


async def test_replies_split_across_reads_and_multiline_replies_arrive_whole() -> None:
    protocol, _ = _protocol()
    protocol.data_received(b"250-first line\r\n250-sec")
    protocol.data_received(b"ond\r\n250 last\r\n354 go")
    reply = await protocol.read_response(1)
    assert (reply.code, reply.message) == (250, "first line\nsecond\nlast")
    assert not protocol.in_step  # half a reply is waiting
    protocol.data_received(b" ahead\r\n")
    assert (await protocol.read_response(1)).code == 354
    assert protocol.in_step


async def test_a_reply_without_an_end_is_cut_off_at_aiosmtplibs_limit() -> None:
    protocol, transport = _protocol()
    for _ in range(5):
        protocol.data_received(b"x" * 10_000)  # no line end, ever
    assert transport.closed
    with pytest.raises(aiosmtplib.SMTPResponseException, match="too long"):
        await protocol.read_response(1)


async def test_more_replies_than_any_transaction_asks_for_are_an_error() -> None:
    protocol, transport = _protocol()
    protocol.data_received(b"250 ok\r\n" * 20)
    assert transport.closed
    for _ in range(20):  # what came is still readable, in order ...
        assert (await protocol.read_response(1)).code == 250
    with pytest.raises(aiosmtplib.SMTPResponseException, match="more replies than commands"):
        await protocol.read_response(1)  # ... and then the connection is done


async def test_waiting_for_a_reply_times_out_as_aiosmtplib_does() -> None:
    protocol, _ = _protocol()
    with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
        await protocol.read_response(0.05)


def test_replies_are_kept_as_printable_ascii_of_bounded_length() -> None:
    raw = b"550 5.1.1 Unbekannter Empf\xe4nger \xff\xfe\n second line \x00".decode("utf-8", "surrogateescape")
    kept = sanitize(raw)
    assert kept == "550 5.1.1 Unbekannter Empf?nger ?  second line ?"
    kept.encode("ascii")  # what redis-py and the logs need
    assert len(sanitize("5" * 10_000)) == MAX_REPLY
