"""sender.toml: the sender's settings, validated once, with secrets kept out of it.

The operator renders this file into the pool's ConfigMap; the sender reads it at
start and again whenever it changes (see `reload.py`). The section and key names
mirror the seed's configuration (`[queue] processes`, `maxParallelCampaigns`, ...).

Secrets never come from this file: the Redis password (or a whole Redis URL with
its password) and SMTP credentials are read from environment variables, or from
files named by `<VAR>_FILE` (how a Kubernetes Secret is mounted).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_snake
from pydantic_settings import BaseSettings, SettingsConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SECRET_KEYS = {"password", "pass", "username", "user", "secret", "token"}
_SECRET_VARIABLES = {  # section -> where its secrets come from instead
    "RedisSection": "MAILTRAIN_REDIS_PASSWORD (or the whole URL in MAILTRAIN_REDIS_URL)",
    "SmtpSection": "MAILTRAIN_SMTP_USERNAME and MAILTRAIN_SMTP_PASSWORD",
}


def to_seconds(value: Any) -> Any:
    """Durations are numbers of seconds, or strings such as "500ms", "10s", "2m"."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"not a duration: {value!r} (use seconds, or e.g. '500ms', '10s', '2m')")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(to_seconds), Field(gt=0)]


class Section(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if str(key).lower() in _SECRET_KEYS:
                    where = _SECRET_VARIABLES.get(cls.__name__, "the environment (see docs/sender.md)")
                    raise ValueError(
                        f"{key!r} is a secret and does not belong in sender.toml; set it through {where} "
                        "(or the same name with _FILE appended, for a mounted Secret)"
                    )
        return data


_REDIS_SCHEMES = ("redis", "rediss", "unix")


class RedisSection(Section):
    enabled: bool = True
    # MAILTRAIN_REDIS_URL, when set, is used instead (a URL that carries a password is a secret).
    url: str = "redis://127.0.0.1:6379/0"
    db: int | None = Field(default=None, ge=0, le=15)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in _REDIS_SCHEMES:
            raise ValueError("must start with redis://, rediss:// or unix://")
        if parts.password:
            raise ValueError(
                "must not contain a password; set MAILTRAIN_REDIS_PASSWORD, or the whole URL in "
                "MAILTRAIN_REDIS_URL"
            )
        return url


class QueueSection(Section):
    # The number of sender processes in the pool: the Deployment's replicas. A
    # single process does not need it, but it must agree with redis.enabled.
    processes: int = Field(default=1, ge=1, le=1000)
    # Campaigns one process works on at once: 0 = its fair share of all of them.
    max_parallel_campaigns: int = Field(default=0, ge=0, le=10_000)


class ThrottlingSection(Section):
    # For the whole pool, all processes together; 0 = unlimited.
    messages_per_second: float = Field(default=0.0, ge=0)
    # Tokens the bucket holds when idle, i.e. the most that may go out at once
    # above the rate. Default: a tenth of a second's worth, at least 1.
    burst: int | None = Field(default=None, ge=1)

    @property
    def effective_burst(self) -> int:
        if self.burst is not None:
            return self.burst
        return max(1, int(self.messages_per_second / 10))


class RetrySection(Section):
    # Attempts per recipient on transient failures (4xx, dropped connection,
    # timeout) before it counts as failed. A relay that cannot be reached at all
    # does not use up attempts: its recipients are deferred and retried.
    # The defaults outlast greylisting, which asks a sender to come back after 1 to
    # 5 minutes (postgrey: 5): tries after 1, 2, 4, 8 and 10 minutes, 25 in all. A
    # recipient waiting for its retry holds up nobody else.
    max_attempts: int = Field(default=6, ge=1, le=100)
    backoff: Seconds = 60.0
    max_backoff: Seconds = 600.0


class SmtpSection(Section):
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "starttls"
    verify_certificates: bool = True
    # PEM bundle to trust instead of the system's (a private relay's CA), e.g. a mounted Secret.
    ca_file: str | None = None
    max_connections: int = Field(default=5, ge=1, le=1000)
    max_messages: int = Field(default=100, ge=1)
    timeout: Seconds = 30.0
    # Send MAIL, RCPT and DATA in one round trip when the relay offers PIPELINING (RFC 2920).
    pipelining: bool = True
    # EHLO name; default: the worker id (the pod name), which identifies the sender to the relay.
    helo_name: str | None = None
    throttling: ThrottlingSection = ThrottlingSection()
    retry: RetrySection = RetrySection()


class WorkerSection(Section):
    # Names the pool in Redis; every process of one pool must use the same name.
    pool: str = Field(default="default", pattern=r"^[A-Za-z0-9._/-]{1,200}$")
    # Unique per process; default: $MAILTRAIN_WORKER_ID, else <hostname>-<pid>.
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,200}$")
    # A dead process's chunk leases expire after this; its work is then taken over.
    lease_ttl: Seconds = 10.0
    # How often a process re-checks its share of campaigns; bounds how fast a new campaign starts.
    rebalance_interval: Seconds = 0.5
    # Acknowledgements are written as soon as the previous write returned, but at
    # most once per this interval: after a crash, only messages the relay accepted
    # within this interval plus one Redis round trip can go out twice.
    ack_interval: Seconds = 0.005
    # SIGTERM: stop claiming, finish what is in flight for at most this long, release leases.
    # The pod's terminationGracePeriodSeconds must be longer.
    shutdown_grace: Seconds = 20.0
    # Messages rendered ahead of sending, all campaigns of the process together (each
    # campaign gets its share, at most 256); bounds memory and what a pause must skip.
    queue_size: int = Field(default=1000, ge=1)
    listen: str = "0.0.0.0:9090"
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    health_file: str = "/tmp/mailtrain-sender-health.json"  # noqa: S108 (the pod's own tmpfs)


class SenderConfig(Section):
    redis: RedisSection = RedisSection()
    queue: QueueSection = QueueSection()
    smtp: SmtpSection
    worker: WorkerSection = WorkerSection()

    @model_validator(mode="after")
    def _consistent(self) -> SenderConfig:
        w = self.worker
        if not self.redis.enabled and self.queue.processes != 1:
            raise ValueError(
                "queue.processes must be 1 when redis.enabled is false: several processes need a shared Redis"
            )
        if w.id is not None and self.queue.processes > 1:
            raise ValueError(
                "worker.id must not be set when queue.processes > 1: every pod reads the same file, so "
                "every process would have the same id (leave it out; each pod uses its own name)"
            )
        # The heartbeat (every rebalanceInterval) lives for one leaseTtl: a process must
        # beat several times per TTL, or a slow call makes the pool declare it dead.
        if w.rebalance_interval > w.lease_ttl / 4:
            raise ValueError(
                f"worker.rebalanceInterval ({w.rebalance_interval:g}s) must be at most a quarter of "
                f"worker.leaseTtl ({w.lease_ttl:g}s)"
            )
        if w.ack_interval > w.lease_ttl / 10:
            raise ValueError(
                f"worker.ackInterval ({w.ack_interval:g}s) must be at most a tenth of "
                f"worker.leaseTtl ({w.lease_ttl:g}s)"
            )
        if w.shutdown_grace < w.rebalance_interval:
            raise ValueError(
                f"worker.shutdownGrace ({w.shutdown_grace:g}s) must be at least "
                f"worker.rebalanceInterval ({w.rebalance_interval:g}s)"
            )
        return self

    @property
    def worker_id(self) -> str:
        return (
            self.worker.id or os.environ.get("MAILTRAIN_WORKER_ID") or f"{os.uname().nodename}-{os.getpid()}"
        )


# Settings a running process keeps until it restarts: Worker.apply_config says so when a reloaded file
# changes one, and the operator rolls a pool's pods when one changes (and only then).
RESTART_REQUIRED = (
    "redis",
    "queue.processes",
    "worker.pool",
    "worker.id",
    "worker.listen",
    "worker.logFormat",
    "worker.logLevel",
    "worker.eventLoop",
    "worker.healthFile",
)


def restart_settings(config: SenderConfig) -> dict[str, Any]:
    """The values of RESTART_REQUIRED in `config`, by their sender.toml names (sections as dicts)."""
    values: dict[str, Any] = {}
    for path in RESTART_REQUIRED:
        value: Any = config
        for part in path.split("."):
            value = getattr(value, to_snake(part))
        values[path] = value.model_dump(mode="json", by_alias=True) if isinstance(value, BaseModel) else value
    return values


class Secrets(BaseSettings):
    """Credentials, from the environment only: MAILTRAIN_<NAME>, or the file named by <NAME>_FILE."""

    model_config = SettingsConfigDict(env_prefix="MAILTRAIN_", extra="ignore")

    redis_password: SecretStr | None = None
    # The whole Redis URL, password included (a Secret's value in a pod): overrides redis.url.
    redis_url: SecretStr | None = None
    smtp_username: SecretStr | None = None
    smtp_password: SecretStr | None = None

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: SecretStr | None) -> SecretStr | None:
        # ConfigError rather than ValueError: pydantic would quote the value in its message.
        if url is None:
            return None
        problem = "must start with redis://, rediss:// or unix://"
        try:
            if urlsplit(url.get_secret_value()).scheme in _REDIS_SCHEMES:
                return url
        except ValueError as exc:  # e.g. "Invalid IPv6 URL"
            problem = str(exc)
        raise ConfigError(f"MAILTRAIN_REDIS_URL: {problem} (the value is a secret and not shown)")

    @model_validator(mode="before")
    @classmethod
    def _from_files(cls, data: Any) -> Any:
        values = dict(data) if isinstance(data, dict) else {}
        for field in cls.model_fields:
            var = f"MAILTRAIN_{field.upper()}_FILE"
            if values.get(field) or not os.environ.get(var):
                continue
            path = Path(os.environ[var])
            try:
                values[field] = path.read_text().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"{var}: cannot read {path}: {exc.strerror}") from exc
        return values


class ConfigError(Exception):
    """One line a person can act on: which field, and what is wrong with it."""


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown setting (check the spelling and the section)"
    if first["type"] == "missing":
        message = "required setting is missing"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


def parse_config(text: str, source: str = "sender.toml") -> SenderConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return SenderConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from exc


def with_listen(config: SenderConfig, listen: str) -> SenderConfig:
    """The configuration with worker.listen replaced (the --listen option), validated like the file."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--listen: {listen!r} is not HOST:PORT")
    return config.model_copy(update={"worker": config.worker.model_copy(update={"listen": listen})})


def load_config(path: Path) -> SenderConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_config(text, str(path))
