"""Rendering with a time limit per message, enforced by a watchdog thread.

A template is user input. Even sandboxed and with its sizes capped (render.py),
one can loop for a very long time. On the event loop that would stop heartbeats
and lease renewals for good: the process's work would move elsewhere, and the
next process would block on the same recipient.

Rendering stays on the event loop, a batch at a time: a message takes about
30 µs, and moving it to a thread costs more than that, above all in waits for
the GIL on every network wake-up. So that slow templates cannot hog the loop,
a batch stops after a time budget (the runner then yields as long again), and a
watchdog *thread* (the loop itself may be the one stuck) interrupts a message
that has been rendering for longer than `MESSAGE_LIMIT`, by raising
`RenderTimeout` in the loop's thread. That recipient fails with the reason and
the batch ends; the runner fails the campaign after three in a row rather than
burn its recipients one by one. So a runaway template stalls the loop for at
most half a second at a time, and takes at most half of its time.

Compiling (seconds for the largest templates) runs on a thread, under the same
watchdog.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from mailtrain_sender import addresses
from mailtrain_sender.layout import CampaignWire, Recipient
from mailtrain_sender.render import (
    CampaignError,
    CompiledCampaign,
    InvalidRecipientError,
    RecipientError,
    check_recipient,
    message_date,
)
from mailtrain_sender.smtp_pool import Envelope, Outcome

log = logging.getLogger(__name__)
MESSAGE_LIMIT = 0.5  # seconds one message may take to render: some 10,000 times the usual
COMPILE_LIMIT = 30.0  # seconds compiling a campaign's templates may take (on a thread: the loop runs on)
TIMED_OUT = f"rendering took longer than {MESSAGE_LIMIT:g}s"
_WATCH_INTERVAL = 0.05

T = TypeVar("T")
Rendered = Envelope | tuple[Outcome, str]


class RenderTimeout(BaseException):
    """Raised in the loop's thread by the watchdog. A BaseException, so that no
    `except Exception` in a template or in the renderer can swallow it."""


def _set_async_exception(thread: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in a thread at its next bytecode (None clears a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread), None if exc is None else ctypes.py_object(exc)
    )


def render_message(compiled: CompiledCampaign, index: int, recipient: Recipient) -> Rendered:
    """One recipient's envelope, or the outcome decided without sending (invalid data, a template error)."""
    try:
        checked = check_recipient(recipient)
        address = addresses.normalize(checked.email)
        rendered = compiled.render(Recipient(address, checked.name, checked.vars), index)
        message = compiled.build(rendered, message_date())
    except (InvalidRecipientError, addresses.InvalidAddressError) as exc:
        return Outcome.INVALID, str(exc)
    except RecipientError as exc:
        return Outcome.FAILED, str(exc)
    except CampaignError:
        raise
    except Exception as exc:  # a bug in building one message must not stop the campaign
        return Outcome.FAILED, f"cannot build the message: {type(exc).__name__}: {exc}"
    return Envelope(compiled.envelope_sender, address, message)


class RenderPool:
    """Renders on the calling thread under a watchdog. One per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, tuple[float, float]] = {}  # thread -> (started, limit) of its current work
        self._closed = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="render-watchdog", daemon=True)
        self._watchdog.start()

    def _timed(self, work: Callable[[], T], limit: float) -> T:
        ident = threading.get_ident()
        with self._lock:
            self._running[ident] = (time.monotonic(), limit)
        try:
            return work()
        finally:
            with self._lock:
                self._running.pop(ident, None)
                # An interruption that came too late to stop the work must not fire later,
                # outside any handler: clear it (the watchdog only raises under this lock).
                _set_async_exception(ident, None)

    def compile(self, wire: CampaignWire) -> CompiledCampaign:
        """Compile the campaign's templates; CampaignError for anything wrong with it. Seconds for
        large templates: call it on a thread (asyncio.to_thread), the watchdog still applies."""
        try:
            return self._timed(lambda: CompiledCampaign(wire), COMPILE_LIMIT)
        except RenderTimeout:
            raise CampaignError(f"compiling the templates took longer than {COMPILE_LIMIT:g}s") from None

    def render(
        self, compiled: CompiledCampaign, batch: Sequence[tuple[int, Recipient]], budget: float
    ) -> list[Rendered]:
        """Render a batch in order, for at most about `budget` seconds (at least one message).

        What was not rendered is left to the caller for later. A message that times out fails and
        also ends the batch, so the loop runs between two timeouts.
        """
        results: list[Rendered] = []
        started = time.monotonic()
        for index, recipient in batch:
            try:
                results.append(self._timed(lambda: render_message(compiled, index, recipient), MESSAGE_LIMIT))  # noqa: B023 (called at once)
            except RenderTimeout:
                results.append((Outcome.FAILED, TIMED_OUT))
                break
            if time.monotonic() - started >= budget:
                break
        return results

    def _watch(self) -> None:
        while not self._closed.wait(_WATCH_INTERVAL):
            try:
                self._interrupt_overdue()
            except Exception:  # it must outlive any bug: without it a template could stall the loop
                log.exception("render watchdog: unexpected error")

    def _interrupt_overdue(self) -> None:
        now = time.monotonic()
        with self._lock:
            for ident, (started, limit) in list(self._running.items()):
                if now - started > limit:
                    # Under the lock, so the thread cannot move on to other work meanwhile;
                    # the entry goes, so that the same work is interrupted only once.
                    del self._running[ident]
                    _set_async_exception(ident, RenderTimeout)

    def close(self) -> None:
        self._closed.set()
