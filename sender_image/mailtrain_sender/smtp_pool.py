"""The SMTP connection pool: `maxConnections` connections that each send in turn.

Each connection is a task that takes the next job from the process's shared
queue, waits for a pool-wide throttle token, and sends. So with N connections
N transactions are in flight at once, which is what bounds throughput on a relay
with real latency (N / (4 x RTT) messages per second for MAIL, RCPT, DATA and
the body). A connection is replaced after `maxMessages` messages.

Failures are sorted by who is at fault:
  * the relay cannot be reached (connect, TLS or AUTH fails): nobody's recipient
    is to blame, so the job is deferred and retried without using its attempts;
  * a 4xx reply, a dropped connection or a timeout mid-transaction: transient,
    retried with backoff while the recipient has attempts left;
  * a 5xx reply: permanent, the recipient counts as failed with the reply kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass
from enum import Enum

import aiosmtplib

from mailtrain_sender import pipelining
from mailtrain_sender.config import Secrets, SmtpSection
from mailtrain_sender.metrics import Metrics
from mailtrain_sender.throttle import Throttle

log = logging.getLogger(__name__)


class Outcome(Enum):
    SENT = "sent"
    FAILED = "failed"  # permanent, or out of attempts
    INVALID = "invalid"  # never sent: the address is not valid
    RETRY = "retry"  # transient: try again later, one attempt used
    DEFER = "defer"  # the relay is unreachable: try again later, no attempt used
    DROP = "drop"  # not ours to send any more (paused, lease lost, shutting down): not acknowledged


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str
    recipient: str
    message: bytes


class Job:
    """One recipient of one campaign on its way through the pool (see campaigns.py)."""

    __slots__ = ()

    def prepare(self) -> Envelope | tuple[Outcome, str]:
        """The envelope to send, or an outcome decided without sending (invalid, dropped)."""
        raise NotImplementedError

    def finish(self, outcome: Outcome, reply: str) -> None:
        raise NotImplementedError


@dataclass(slots=True)
class _Connection:
    client: aiosmtplib.SMTP | None = None
    generation: int = 0  # SmtpPool._generation when it connected
    sent: int = 0  # messages on this connection, for maxMessages
    pipelined: bool = False  # RFC 2920: the relay offered PIPELINING and it is enabled


class RelayUnavailableError(Exception):
    """Connecting, TLS or AUTH failed: the relay, not the recipient, is the problem."""


def classify(exc: BaseException) -> tuple[Outcome, str]:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        first = exc.recipients[0]
        return (Outcome.FAILED if first.code >= 500 else Outcome.RETRY), f"{first.code} {first.message}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return (Outcome.FAILED if exc.code >= 500 else Outcome.RETRY), f"{exc.code} {exc.message}"
    return Outcome.RETRY, f"{type(exc).__name__}: {exc}"


class SmtpPool:
    def __init__(
        self,
        settings: SmtpSection,
        secrets: Secrets,
        helo_name: str,
        queue: asyncio.Queue[Job],
        throttle: Throttle,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self._secrets = secrets
        self._helo = settings.helo_name or helo_name
        self._queue = queue
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
        self._tasks = [t for t in self._tasks if not t.done()]
        while len(self._tasks) < size:
            slot = len(self._tasks)
            self._tasks.append(asyncio.create_task(self._run(slot), name=f"smtp-{slot}"))
        # Extra connections notice their slot is gone and exit after their current message.

    async def close(self, grace: float) -> None:
        """Stop taking jobs; let transactions in flight finish for at most `grace` seconds."""
        self.resize(0)
        self._closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

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
            retry = self.settings.retry
            self._relay_backoff = min(retry.max_backoff, max(retry.backoff / 4, self._relay_backoff * 2))
            self._relay_down_until = time.monotonic() + self._relay_backoff
            self._metrics.smtp_errors.labels(self._metrics.pool, "connection").inc()
            if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
                log.error(
                    "the relay refused our credentials (%s); recipients stay deferred until the "
                    "SMTP username and password are fixed",
                    exc,
                )
            else:
                log.warning("cannot connect to %s:%s: %s", self.settings.host, self.settings.port, exc)
            raise RelayUnavailableError(str(exc)) from exc
        self._relay_backoff = 0.0
        self._metrics.connections.inc()
        return client

    async def _disconnect(self, client: aiosmtplib.SMTP | None, *, polite: bool) -> None:
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
                job = await self._queue.get()
                try:
                    outcome, reply = await self._handle(job, conn)
                except (
                    Exception
                ) as exc:  # a bug must neither end this connection's task nor lose the recipient
                    log.exception("unexpected error while sending; the recipient will be tried again")
                    outcome, reply = Outcome.RETRY, f"internal error: {type(exc).__name__}"
                    await self._disconnect(conn.client, polite=False)
                    conn.client = None
                job.finish(outcome, reply)
                if outcome is Outcome.DEFER:
                    await asyncio.sleep(min(1.0, self.relay_retry_in))
        finally:
            if conn.client is not None:
                await asyncio.shield(self._disconnect(conn.client, polite=True))

    async def _handle(self, job: Job, conn: _Connection) -> tuple[Outcome, str]:
        prepared = job.prepare()
        if not isinstance(prepared, Envelope):
            return prepared
        if conn.client is not None and (not conn.client.is_connected or conn.generation != self._generation):
            await self._disconnect(conn.client, polite=conn.client.is_connected)
            conn.client = None
        if conn.client is None:
            try:
                conn.client = await self._connect()
            except RelayUnavailableError as exc:
                return Outcome.DEFER, str(exc)
            conn.generation, conn.sent = self._generation, 0
            conn.pipelined = self.settings.pipelining and await pipelining.enable(conn.client)
        outcome, reply, clean = await self._send(conn, prepared)
        conn.sent += 1
        if not clean:  # no reply, or a timeout: the connection's state is unknown
            await self._disconnect(conn.client, polite=False)
            conn.client = None
        elif conn.sent >= self.settings.max_messages:
            await self._disconnect(conn.client, polite=True)
            conn.client = None
        return outcome, reply

    async def _send(self, conn: _Connection, envelope: Envelope) -> tuple[Outcome, str, bool]:
        """(outcome, reply, whether the connection can carry on)."""
        client = conn.client
        assert client is not None
        await self._throttle.acquire()
        self.in_flight += 1
        self._idle.clear()
        started = time.perf_counter()
        try:
            if conn.pipelined:
                reply = await pipelining.send(
                    client, envelope.sender, envelope.recipient, envelope.message, self.settings.timeout
                )
            else:
                _, reply = await client.sendmail(envelope.sender, [envelope.recipient], envelope.message)
            return Outcome.SENT, reply, True
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            outcome, reply = classify(exc)
            self._metrics.smtp_errors.labels(
                self._metrics.pool, "permanent" if outcome is Outcome.FAILED else "transient"
            ).inc()
            replied = isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code not in (421, -1)
            return outcome, reply, replied and not isinstance(exc, aiosmtplib.SMTPTimeoutError)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()
            self._metrics.send_seconds.observe(time.perf_counter() - started)
