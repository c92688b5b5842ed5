"""The operator's own settings: environment variables MAILTRAIN_OPERATOR_*, validated once at start.

Where it sits: `cli.py` loads them before anything else (and before importing kopf), so a bad
value costs one line on stderr and exit code 2, never a traceback or a crash loop that hides
the reason. `framework.py` turns them into kopf's settings; later handlers read them from
kopf's memo. Nothing here imports kopf, kubernetes or redis.

Variables that match no field are ignored rather than refused: in a pod, Kubernetes' service
links add variables such as MAILTRAIN_OPERATOR_SERVICE_HOST and MAILTRAIN_OPERATOR_PORT for a
Service named `mailtrain-operator`, and refusing them would stop the operator for a reason that
is not the person's mistake. For the same reason no field is called `port` or `service_*`.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "MAILTRAIN_OPERATOR_"
# RFC 1123 label: what a namespace name is (kopf would take glob patterns too, but RBAC cannot be
# scoped by a pattern, so only exact names are accepted).
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")


def _package_version() -> str:
    try:
        return version("mailtrain-operator")
    except PackageNotFoundError:  # run from a source tree without installing it
        return "0.0.0"


def _comma_separated(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _host_port(value: str) -> str:
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 0.0.0.0:8080, or $(POD_IP):8080 in a pod)")
    return value


HostPort = Annotated[str, BeforeValidator(lambda v: _host_port(str(v)))]


class OperatorSettings(BaseSettings):
    """Every setting of the operator process. The Helm chart sets them as environment variables."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    namespaces: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_separated)] = Field(
        default=(),
        description="Namespaces whose SenderPools and MailCampaigns this operator handles, comma-separated "
        "(e.g. `mail,marketing`). Empty (the default) means every namespace, which needs cluster-wide RBAC; "
        "a list lets the chart grant Roles in those namespaces only.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info",
        description="Lowest level logged. `info` logs each reconcile decision once; `debug` adds kopf's "
        "own detail (every watch event and patch), which is verbose.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text` for people reading `kubectl logs`; `json` (one object per line) for a log "
        "pipeline. Matches the sender's `worker.logFormat`.",
    )
    health_listen: HostPort = Field(
        default="0.0.0.0:8080",
        description="HOST:PORT of kopf's liveness endpoint, served at `/healthz`. In a pod, pass "
        "`$(POD_IP):8080`: pods share the node's ports on the local test cluster, and 8080 is the "
        "usual probe port.",
    )
    metrics_listen: HostPort = Field(
        default="0.0.0.0:9090",
        description="HOST:PORT of the operator's Prometheus `/metrics`. 9090 like the sender, so one "
        "scrape configuration fits both; in a pod, pass `$(POD_IP):9090`.",
    )
    peering_name: str = Field(
        default="mailtrain-operator",
        min_length=1,
        max_length=253,
        description="Name of the kopf peering object (KopfPeering in each watched namespace, or "
        "ClusterKopfPeering when cluster-wide). Replicas with the same name elect one active operator; "
        "the others stand by. A name of our own, not kopf's `default`, so another kopf operator in the "
        "cluster is not mistaken for a peer.",
    )
    standalone: bool = Field(
        default=False,
        description="Run without peering, as the only operator. For development and tests. Otherwise "
        "peering is mandatory: a missing peering object stops the operator rather than letting two "
        "replicas reconcile the same campaign at once.",
    )
    create_peering: bool = Field(
        default=True,
        description="Create a missing peering object at start (RBAC: `create` on its kind, which cannot be "
        "limited to one name). The chart renders its peering objects itself and sets this to false, so its "
        "operator holds no `create` there; a missing object is looked for again for about 30 s, then stops "
        "the operator with the reason.",
    )
    peering_lifetime: int = Field(
        default=30,
        ge=10,
        le=3600,
        description="Seconds a replica's keep-alive in the peering object counts as alive. Replicas renew it "
        "5-10 s before it runs out, so a standby takes over at most this long after the active replica "
        "dies without a word (SIGKILL, node loss); a replica that stops on SIGTERM hands over at once. "
        "Shorter means faster takeover but more keep-alive writes, and at least 10 s so that one slow "
        "apiserver reply cannot make a live replica look dead.",
    )
    progress_interval: float = Field(
        default=5.0,
        ge=1.0,
        le=300.0,
        description="Seconds between two reads of a sending campaign's progress from Redis, and so the "
        "most often its status is written (issue 8: at most once per 5 s per campaign while sending).",
    )
    chunk_size: int = Field(
        default=512,
        ge=8,
        le=65536,
        multiple_of=8,
        description="Recipients per chunk when a campaign is published: a sender leases a chunk at a "
        "time, and the checkpoint in the status records whole chunks, so after a Redis loss at most the "
        "chunks not yet checkpointed are sent again. A multiple of 8. A published campaign keeps its own.",
    )
    sender_image: str = Field(
        default=f"ghcr.io/mailtrain-operator/sender:{_package_version()}",
        min_length=1,
        description="Image of the sender pods when a SenderPool's `spec.template.image` is not set. "
        "Defaults to the sender built from the same release as this operator, since the two share the "
        "Redis layout.",
    )
    private_redis_image: str = Field(
        default="docker.io/library/redis:7.4",
        min_length=1,
        description="Image of the private Redis beside the sender of a SenderPool with `redis.enabled: "
        "false`. The official image's, or a mirror of it: the pod runs `redis-server` from it through "
        "`sh`, as a non-root user, without persistence.",
    )
    recipients_url_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600.0,
        description="Seconds without a byte from a `recipients.url` source before the download is given "
        "up (and retried later). Not the whole download's limit: a million rows may take minutes.",
    )
    recipients_max_bytes: int = Field(
        default=1 << 30,
        gt=0,
        description="Largest recipients list, in bytes (after undoing gzip), from any source. A larger "
        "list fails its campaign with the reason SourceTooLarge. The operator streams a list, so this "
        "bounds the time a publish takes, not the operator's memory.",
    )
    recipients_max_count: int = Field(
        default=5_000_000,
        gt=0,
        description="Most recipients (after deduplication) one campaign may have; more fail it with the "
        "reason TooManyRecipients. Deduplication keeps about 16 bytes per recipient in the operator's "
        "memory while a list is read (16 MB for a million).",
    )

    @field_validator("namespaces")
    @classmethod
    def _namespace_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not _DNS_LABEL.match(name):
                raise ValueError(f"{name!r} is not a namespace name (lowercase letters, digits and '-')")
        return names

    @field_validator("peering_name")
    @classmethod
    def _peering_object_name(cls, name: str) -> str:
        if not _DNS_SUBDOMAIN.match(name):
            raise ValueError(f"{name!r} is not an object name (lowercase letters, digits, '-' and '.')")
        return name

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


class SettingsError(Exception):
    """One line a person can act on: the variable, and what is wrong with its value."""


def variable(field: str) -> str:
    """The environment variable that sets a field."""
    return ENV_PREFIX + field.upper()


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    message = first["msg"].removeprefix("Value error, ")
    given = first.get("input")
    # A value error already quotes the value; pydantic's own messages ("Input should be ...") do not.
    shown = isinstance(given, str | int | float) and first["type"] != "value_error"
    got = f" (got {given!r:.100})" if shown else ""
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{variable(field)}: {message}{got}{more}" if field else f"{message}{more}"


def load_settings() -> OperatorSettings:
    """The settings from the process's environment; SettingsError names the first bad variable."""
    try:
        return OperatorSettings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from exc
