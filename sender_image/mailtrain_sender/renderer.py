"""Rendering off the event loop: batches of messages on worker threads, with a time limit per message.

A template is user input. Even sandboxed and with its sizes capped (render.py),
one can loop for a long time, and folding a long non-ASCII name costs seconds.
On the event loop that would stop heartbeats and lease renewals, the process's
work would move elsewhere, and the next process would block on the same
recipient. So messages are rendered here, on a small thread pool, a batch at a
time (one hand-over per batch, not per message, keeps the cost negligible), and
the loop stays free.

A message that takes longer than `MESSAGE_LIMIT` is interrupted (an asynchronous
exception raised in its thread by the watchdog) and its recipient fails with
that reason. A campaign whose messages keep timing out is a campaign-level
error: three in a row fail the campaign rather than burn its recipients.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from mailtrain_sender import addresses
from mailtrain_sender.layout import CampaignWire, Recipient
from mailtrain_sender.render import CampaignError, CompiledCampaign, RecipientError, message_date
from mailtrain_sender.smtp_pool import Envelope, Outcome

MESSAGE_LIMIT = 2.0  # seconds one message may take to render
_THREADS = 2  # a slow campaign holds one thread; the others keep rendering
_CONSECUTIVE_TIMEOUTS = 3
_WATCH_INTERVAL = 0.25

T = TypeVar("T")
Rendered = Envelope | tuple[Outcome, str]


class RenderTimeout(BaseException):
    """Raised inside a render thread by the watchdog. A BaseException, so that no
    `except Exception` in a template or in the renderer can swallow it."""


def _set_async_exception(thread: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in another thread at its next bytecode (None clears a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread), None if exc is None else ctypes.py_object(exc)
    )


class _InvalidRecipient(RecipientError):
    pass


def _check_recipient(r: Recipient) -> Recipient:
    if not isinstance(r.email, str):
        raise _InvalidRecipient("email is not a string")
    if r.name is not None and not isinstance(r.name, str):
        raise _InvalidRecipient("name is not a string")
    if r.vars is not None and not isinstance(r.vars, dict):
        raise _InvalidRecipient("vars is not a mapping")
    return r


def render_message(compiled: CompiledCampaign, index: int, recipient: Recipient) -> Rendered:
    """One recipient's envelope, or the outcome decided without sending (invalid data, a template error)."""
    try:
        checked = _check_recipient(recipient)
        address = addresses.normalize(checked.email)
        rendered = compiled.render(Recipient(address, checked.name, checked.vars), index)
        message = compiled.build(rendered, message_date())
    except (_InvalidRecipient, addresses.InvalidAddressError) as exc:
        return Outcome.INVALID, str(exc)
    except RecipientError as exc:
        return Outcome.FAILED, str(exc)
    except CampaignError:
        raise
    except Exception as exc:  # a bug in building one message must not stop the campaign
        return Outcome.FAILED, f"cannot build the message: {type(exc).__name__}: {exc}"
    return Envelope(compiled.sender.addr_spec, address, message)


class RenderPool:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(_THREADS, thread_name_prefix="render")
        self._lock = threading.Lock()
        self._running: dict[int, float] = {}  # render thread id -> when its current message started

    def _timed(self, work: Callable[[], T]) -> T:
        """Run one unit of work under the watchdog (in a render thread)."""
        ident = threading.get_ident()
        with self._lock:
            self._running[ident] = time.monotonic()
        try:
            return work()
        finally:
            with self._lock:
                self._running.pop(ident, None)
                # An interruption that arrived too late to stop the work must not fire later,
                # outside any handler: clear it (the watchdog only injects under this lock).
                _set_async_exception(ident, None)

    async def compile(self, wire: CampaignWire) -> CompiledCampaign:
        """Compile the campaign's templates; CampaignError for anything wrong with it."""

        def compile_campaign() -> CompiledCampaign:
            try:
                return self._timed(lambda: CompiledCampaign(wire))
            except RenderTimeout:
                raise CampaignError(f"compiling the templates took longer than {MESSAGE_LIMIT:g}s") from None

        return await asyncio.get_running_loop().run_in_executor(self._executor, compile_campaign)

    async def render(
        self, compiled: CompiledCampaign, batch: Sequence[tuple[int, Recipient]]
    ) -> list[Rendered]:
        """Render a batch in order; raises CampaignError when the campaign cannot be sent at all."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._render_batch, compiled, batch
        )

    def _render_batch(
        self, compiled: CompiledCampaign, batch: Sequence[tuple[int, Recipient]]
    ) -> list[Rendered]:
        results: list[Rendered] = []
        timeouts = 0
        for index, recipient in batch:
            try:
                results.append(self._timed(lambda: render_message(compiled, index, recipient)))  # noqa: B023 (called at once)
                timeouts = 0
            except RenderTimeout:
                timeouts += 1
                if timeouts >= _CONSECUTIVE_TIMEOUTS:
                    raise CampaignError(
                        f"rendering takes longer than {MESSAGE_LIMIT:g}s per message "
                        f"({timeouts} recipients in a row); simplify the templates"
                    ) from None
                results.append((Outcome.FAILED, f"rendering took longer than {MESSAGE_LIMIT:g}s"))
        return results

    async def watch(self) -> None:
        """Interrupt any message that has been rendering for longer than MESSAGE_LIMIT."""
        while True:
            await asyncio.sleep(_WATCH_INTERVAL)
            now = time.monotonic()
            with self._lock:
                for ident, started in list(self._running.items()):
                    if now - started > MESSAGE_LIMIT:
                        # Under the lock, so the thread cannot move on to another message meanwhile;
                        # the entry is dropped so that the same message is interrupted only once.
                        del self._running[ident]
                        _set_async_exception(ident, RenderTimeout)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
