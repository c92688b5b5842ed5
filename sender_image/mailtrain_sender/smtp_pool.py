"""The SMTP connection pool: `maxConnections` connections that each send in turn.

Each connection is a task that takes the next job from the dispatcher (the
process's campaigns in turn, see dispatch.py), connects if it must, waits for a
pool-wide throttle token, asks the job whether it may still be sent (its chunk's
lease is still valid) right before MAIL FROM, and sends. So with N connections N
transactions are in flight at once. A connection is replaced after
`maxMessages` messages, and kept after a refused recipient when the relay's
reply left it in a known state.

Failures are sorted by who is at fault:
  * the relay cannot be reached (connect, TLS, EHLO or AUTH fails): nobody's
    recipient is to blame, so the job is deferred without using its attempts;
  * a 4xx reply, a dropped connection or a timeout mid-transaction: transient,
    retried with backoff while the recipient has attempts left;
  * a 5xx reply: permanent, the recipient counts as failed with the reply kept.
A transaction whose final dot went out but whose reply never came is ambiguous:
the relay may have accepted it, so trying again may deliver it twice. Those are
counted (`mailtrain_sender_smtp_ambiguous_total`); see docs/sender.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import aiosmtplib

from mailtrain_sender import transaction
from mailtrain_sender.config import Secrets, SmtpSection
from mailtrain_sender.metrics import Metrics
from mailtrain_sender.throttle import Throttle

log = logging.getLogger(__name__)
# While the relay cannot be reached, connection attempts back off from 0.5 s to 30 s.
_RELAY_BACKOFF_MIN, _RELAY_BACKOFF_MAX = 0.5, 30.0


class Outcome(Enum):
    SENT = "sent"
    FAILED = "failed"  # permanent, or out of attempts
    INVALID = "invalid"  # never sent: the recipient's address or data is not valid
    RETRY = "retry"  # transient: try again later, one attempt used
    DEFER = "defer"  # the relay is unreachable: try again later, no attempt used
    DROP = "drop"  # not sent and not tried: the job's owner decides what becomes of it


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str
    recipient: str
    message: bytes


class Job(Protocol):
    """One recipient on its way through the pool (campaigns.SendJob)."""

    @property
    def envelope(self) -> Envelope: ...

    def begin(self) -> bool:
        """Asked right before MAIL FROM: may this message still be sent?"""

    def finish(self, outcome: Outcome, reply: str, *, ambiguous: bool = False) -> None: ...


class JobQueue(Protocol):
    async def get(self) -> Job: ...


@dataclass(slots=True)
class _Connection:
    client: aiosmtplib.SMTP | None = None
    generation: int = 0  # SmtpPool._generation when it connected
    sent: int = 0  # messages on this connection, for maxMessages
    pipelined: bool = False  # RFC 2920: the relay offered PIPELINING and it is enabled
    unclean: bool = False  # the last transaction left the connection in an unknown state
    job: Job | None = None  # the job in hand, finished as dropped if the task is cancelled
    progress: transaction.Progress = field(default_factory=transaction.Progress)


class RelayUnavailableError(Exception):
    """Connecting, TLS or AUTH failed: the relay, not the recipient, is the problem."""


def outcome_of(result: transaction.Result) -> Outcome:
    if result.sent:
        return Outcome.SENT
    if result.code >= 500:
        return Outcome.FAILED
    return Outcome.RETRY  # 4xx, no reply at all, or a reply that made no sense


class SmtpPool:
    def __init__(
        self,
        settings: SmtpSection,
        secrets: Secrets,
        helo_name: str,
        jobs: JobQueue,
        throttle: Throttle,
        metrics: Metrics,
        gate: Callable[[], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self._secrets = secrets
        self._helo = settings.helo_name or helo_name
        self._jobs = jobs
        self._gate = gate  # waits while too many acknowledgements are unwritten
        self._throttle = throttle
        self._metrics = metrics
        self._tasks: list[asyncio.Task[None]] = []
        self._generation = 0  # bumped on reload: connections made with older settings are replaced
        self._relay_down_until = 0.0
        self._relay_backoff = 0.0
        self.in_flight = 0
        self._idle = asyncio.Event()  # set while no transaction is in flight
        self._idle.set()
        self._closing = False
        self._context: ssl.SSLContext | None = None
        self._context_key: tuple[object, ...] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self.resize(self.settings.max_connections)

    @staticmethod
    def _connection_settings(s: SmtpSection) -> tuple[object, ...]:
        return (s.host, s.port, s.security, s.verify_certificates, s.ca_file, s.timeout, s.helo_name)

    def update(self, settings: SmtpSection) -> None:
        """Apply reloaded settings. Transactions in flight finish as they are."""
        if self._connection_settings(settings) != self._connection_settings(self.settings):
            self._generation += 1
        self.settings = settings
        self.resize(settings.max_connections)

    def resize(self, size: int) -> None:
        if self._closing:
            return
        self._tasks = [t for t in self._tasks if not t.done()]
        while len(self._tasks) < size:
            slot = len(self._tasks)
            self._tasks.append(asyncio.create_task(self._run(slot), name=f"smtp-{slot}"))
        # Extra connections notice their slot is gone and exit after their current message.

    async def close(self, grace: float) -> int:
        """Stop taking jobs; let transactions in flight finish for at most `grace` seconds, then cut
        them off (their jobs finish as dropped, ambiguous if the final dot had gone out).
        Returns how many were cut off."""
        self._closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        cut_off = self.in_flight
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        return cut_off

    @property
    def relay_retry_in(self) -> float:
        """Seconds until the next connection attempt, while the relay is unreachable."""
        return max(0.0, self._relay_down_until - time.monotonic())

    def _slot_alive(self, slot: int) -> bool:
        return not self._closing and slot < self.settings.max_connections

    # -- connections -------------------------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext | None:
        """Built once per connection settings: loading the CA bundle costs milliseconds."""
        s = self.settings
        if s.security == "none":
            return None
        key = self._connection_settings(s)
        if self._context_key != key:
            context = ssl.create_default_context(cafile=s.ca_file)
            if not s.verify_certificates:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._context, self._context_key = context, key
        return self._context

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        username = self._secrets.smtp_username.get_secret_value() if self._secrets.smtp_username else None
        password = self._secrets.smtp_password.get_secret_value() if self._secrets.smtp_password else None
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            local_hostname=self._helo,
            timeout=s.timeout,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            tls_context=self._tls_context(),
            username=username,
            password=password,
        )

    async def _connect(self) -> aiosmtplib.SMTP:
        wait = self._relay_down_until - time.monotonic()
        if wait > 0:
            raise RelayUnavailableError(f"relay unavailable, next attempt in {wait:.1f}s")
        client = self._client()
        try:
            await client.connect()
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            first = self._relay_backoff == 0
            self._relay_backoff = min(_RELAY_BACKOFF_MAX, max(_RELAY_BACKOFF_MIN, self._relay_backoff * 2))
            self._relay_down_until = time.monotonic() + self._relay_backoff
            self._metrics.smtp_errors.labels(self._metrics.pool, "connection").inc()
            reason = transaction.sanitize(str(exc))
            if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
                log.error(
                    "the relay refused our credentials (%s); recipients stay deferred until the "
                    "SMTP username and password are fixed",
                    reason,
                )
            elif first:  # once per outage; the metric counts every attempt
                log.warning("cannot connect to %s:%s: %s", self.settings.host, self.settings.port, reason)
            raise RelayUnavailableError(reason) from exc
        if self._relay_backoff:
            log.info("connected to %s:%s again", self.settings.host, self.settings.port)
        self._relay_backoff = 0.0
        self._metrics.connections.inc()
        return client

    async def _disconnect(self, conn: _Connection, *, polite: bool) -> None:
        client, conn.client = conn.client, None
        if client is None:
            return
        self._metrics.connections.dec()
        try:
            if polite and client.is_connected:
                await client.quit(timeout=5)
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            pass
        finally:
            client.close()

    async def _run(self, slot: int) -> None:
        conn = _Connection()
        try:
            while self._slot_alive(slot):
                await self._gate()
                conn.job = await self._jobs.get()
                conn.progress = transaction.Progress()
                try:
                    outcome, reply, ambiguous = await self._handle(conn.job, conn)
                except Exception as exc:  # a bug must neither end this task nor lose the recipient
                    log.exception("unexpected error while sending; the recipient will be tried again")
                    outcome, reply, ambiguous = Outcome.RETRY, f"internal error: {type(exc).__name__}", False
                    await self._disconnect(conn, polite=False)
                # The outcome is settled before anything else may wait: a QUIT that a shutdown cuts
                # off must not turn a message the relay accepted into one to send again.
                job, conn.job = conn.job, None
                self._finish(job, outcome, reply, ambiguous)
                await self._after(conn)
                if outcome is Outcome.DEFER:
                    await asyncio.sleep(min(1.0, self.relay_retry_in))
        except asyncio.CancelledError:
            # Shutdown past its grace: the socket goes first, then the job is given back.
            ambiguous = conn.progress.dot_written
            client, conn.client = conn.client, None
            if client is not None:
                self._metrics.connections.dec()
                client.close()
            if conn.job is not None:
                if ambiguous:
                    self._metrics.ambiguous.inc()
                self._finish(conn.job, Outcome.DROP, "cut off at shutdown", ambiguous)
            raise
        finally:
            if conn.client is not None:
                await asyncio.shield(self._disconnect(conn, polite=True))

    @staticmethod
    def _finish(job: Job, outcome: Outcome, reply: str, ambiguous: bool) -> None:
        try:
            job.finish(outcome, reply, ambiguous=ambiguous)
        except Exception:  # the owner's bug: logged, and this connection goes on
            log.exception("recording an outcome failed")

    async def _after(self, conn: _Connection) -> None:
        """What the last transaction left to do: drop the connection, or replace it after maxMessages."""
        if conn.client is None:
            return
        if conn.unclean:
            await self._disconnect(conn, polite=False)
        elif conn.sent >= self.settings.max_messages:
            await self._disconnect(conn, polite=True)

    async def _handle(self, job: Job, conn: _Connection) -> tuple[Outcome, str, bool]:
        if conn.client is not None and (
            conn.generation != self._generation or not transaction.in_step(conn.client)
        ):
            # Older settings, closed, or the relay said something nobody asked: a new connection,
            # before anything is sent (so the recipient loses no attempt).
            await self._disconnect(conn, polite=conn.generation != self._generation)
        if conn.client is None:
            try:
                conn.client = await self._connect()
                conn.pipelined = await transaction.adopt(conn.client) and self.settings.pipelining
            except RelayUnavailableError as exc:
                return Outcome.DEFER, str(exc), False
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:  # EHLO failed
                await self._disconnect(conn, polite=False)
                return Outcome.DEFER, transaction.sanitize(f"EHLO failed: {exc}"), False
            conn.generation, conn.sent, conn.unclean = self._generation, 0, False
        await self._throttle.acquire()
        if not job.begin():  # right before MAIL FROM: the lease may have ended while we waited
            return Outcome.DROP, "no longer ours to send", False
        result = await self._send(conn, job.envelope)
        conn.sent += 1
        conn.unclean = not result.clean
        outcome = outcome_of(result)
        if outcome is not Outcome.SENT:
            kind = "permanent" if outcome is Outcome.FAILED else "transient"
            self._metrics.smtp_errors.labels(self._metrics.pool, kind).inc()
        if result.ambiguous:
            self._metrics.ambiguous.inc()
        return outcome, result.message, result.ambiguous

    async def _send(self, conn: _Connection, envelope: Envelope) -> transaction.Result:
        assert conn.client is not None
        self.in_flight += 1
        self._idle.clear()
        started = time.perf_counter()
        try:
            return await transaction.send(
                conn.client,
                envelope.sender,
                envelope.recipient,
                envelope.message,
                pipelined=conn.pipelined,
                reply_timeout=self.settings.timeout,
                progress=conn.progress,
            )
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()
            self._metrics.send_seconds.observe(time.perf_counter() - started)
