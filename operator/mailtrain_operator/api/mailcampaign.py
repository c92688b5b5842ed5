"""MailCampaign: one message to a list of recipients, and the status that says how far it got."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic.alias_generators import to_camel

from mailtrain_operator.api.base import API_VERSION, POOL_NAME_MAX_LENGTH, ApiModel, Condition

Phase = Literal["Pending", "Scheduled", "Sending", "Paused", "Completed", "Failed"]
ListFormat = Literal["csv", "jsonl"]
_FORMAT = (
    "csv: a header row, with the columns email, name and any others as vars. jsonl: one JSON object per line "
    "with email, name and vars."
)


class Sender(ApiModel):
    address: str = Field(
        max_length=254,
        description="The sending address, ASCII only (this sender does not use SMTPUTF8), e.g. "
        "news@acme.example.",
    )
    name: str | None = Field(
        default=None,
        max_length=256,
        description="Display name shown with the address, e.g. Acme News. Any language; no control "
        "characters.",
    )


class ListUnsubscribe(ApiModel):
    url: str | None = Field(
        default=None,
        max_length=2048,
        description="Unsubscribe URL, a Jinja2 template: {{ token }} identifies the recipient. Every value a "
        "{{ }} inserts is percent-encoded.",
    )
    mailto: str | None = Field(
        default=None,
        max_length=254,
        description="Address that unsubscribes whoever writes to it, e.g. unsubscribe@acme.example. ASCII "
        "only.",
    )
    one_click: bool = Field(
        default=False,
        description="Add `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058), which large mailbox "
        "providers require of bulk senders. Needs url.",
    )


class InlineRecipient(ApiModel):
    email: str = Field(
        max_length=320,
        description="The recipient's address. One that cannot be sent to is counted as invalid, never fatal.",
    )
    name: str | None = Field(
        default=None, max_length=256, description="The recipient's display name (To header, and {{ name }})."
    )
    vars: dict[str, Any] | None = Field(
        default=None, description="Template variables of this recipient ({{ vars.x }}, or {{ x }})."
    )


class KeyRef(ApiModel):
    name: str = Field(min_length=1, max_length=253, description="Name of the ConfigMap or Secret.")
    key: str = Field(min_length=1, max_length=253, description="The key whose value is the list.")
    format: ListFormat = Field(default="csv", description=_FORMAT)


class UrlSource(ApiModel):
    href: str = Field(max_length=2048, description="Where to download the list from.")
    format: ListFormat = Field(default="csv", description=_FORMAT)


_KEY_REF = "A key of a ConfigMap (or Secret) in the campaign's namespace that holds the list."
RecipientSource = list[InlineRecipient] | KeyRef | UrlSource


class Recipients(ApiModel):
    inline: list[InlineRecipient] | None = Field(
        default=None,
        max_length=1000,
        description="Recipients listed here, at most 1,000; use a ConfigMap, Secret or URL for more.",
    )
    config_map_ref: KeyRef | None = Field(default=None, description=_KEY_REF)
    secret_ref: KeyRef | None = Field(default=None, description=_KEY_REF)
    url: UrlSource | None = Field(
        default=None,
        description="A list downloaded over http(s) when the campaign is published (streamed, so it may be "
        "large).",
    )

    @property
    def source(self) -> tuple[Literal["inline", "configMapRef", "secretRef", "url"], RecipientSource]:
        """The one source that is set (the CRD lets no other object through)."""
        for name in ("inline", "config_map_ref", "secret_ref", "url"):
            value = getattr(self, name)
            if value is not None:
                return to_camel(name), value  # type: ignore[return-value]
        raise ValueError("recipients has no source")


HeaderValue = Annotated[str, Field(max_length=998)]  # RFC 5322 2.1.1: a line is at most 998 characters


class MailCampaignSpec(ApiModel):
    sender_pool: str = Field(
        default="default",
        min_length=1,
        max_length=POOL_NAME_MAX_LENGTH,
        description="Name of the SenderPool, in the campaign's namespace, that sends it. Cannot change once "
        "the "
        "campaign exists.",
    )
    sender: Sender = Field(
        alias="from", description="The sender of the campaign, in the From header and the SMTP envelope."
    )
    subject: str = Field(
        min_length=1,
        max_length=998,
        description="Subject line, a Jinja2 template (sandboxed). Variables: email, name, vars, each var by "
        "name, "
        "and token.",
    )
    text: str | None = Field(
        default=None,
        max_length=1_048_576,
        description="Plain-text body, a Jinja2 template (sandboxed). Set text, html, or both (then the "
        "message "
        "is multipart/alternative).",
    )
    html: str | None = Field(
        default=None,
        max_length=1_048_576,
        description="HTML body, a Jinja2 template (sandboxed) in which variables are HTML-escaped.",
    )
    headers: dict[str, HeaderValue] | None = Field(
        default=None,
        max_length=50,
        description="Extra header fields, name to value, written as given. The sender's own fields (From, "
        "To, "
        "Subject, Date, Message-ID, MIME-Version, List-ID, List-Unsubscribe, List-Unsubscribe-Post, "
        "Content-Type, Content-Transfer-Encoding, Sender, Return-Path) cannot be set here.",
    )
    list_id: str | None = Field(
        default=None,
        max_length=255,
        description="The list this campaign belongs to (RFC 2919), e.g. newsletter.acme.example, sent as "
        "`List-ID: <newsletter.acme.example>`. Mailbox providers group and filter by it.",
    )
    list_unsubscribe: ListUnsubscribe | None = Field(
        default=None,
        description="The List-Unsubscribe header (RFC 2369), with one-click unsubscribe (RFC 8058) if asked "
        "for.",
    )
    recipients: Recipients = Field(
        description="Who receives the campaign. Exactly one source; it cannot change once the campaign "
        "exists."
    )
    start_at: datetime | None = Field(
        default=None,
        description="Do not send before this time (RFC 3339, e.g. 2026-12-01T09:00:00Z). Until then the "
        "phase "
        "is Scheduled.",
    )
    suspend: bool = Field(
        default=False,
        description="true pauses sending; false again resumes where it stopped, with nobody sent twice.",
    )
    priority: int = Field(
        default=0,
        ge=-1000,
        le=1000,
        description="Higher is claimed first when the pool is at capacity (-1000 to 1000).",
    )


class Checkpoint(ApiModel):
    chunk_size: int | None = Field(
        default=None, ge=8, description="Recipients per chunk; recipient i is in chunk i div chunkSize."
    )
    chunks: int | None = Field(default=None, ge=0, description="Chunks published.")
    completed_chunks: str | None = Field(
        default=None,
        pattern=r"^([0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*)?$",
        description="Completed chunks as inclusive ranges, e.g. 0-41,43,45-50.",
    )
    failed: int | None = Field(
        default=None,
        ge=0,
        description="Failed recipients within the completed chunks (carried over by a republish).",
    )
    invalid: int | None = Field(
        default=None,
        ge=0,
        description="Invalid recipients within the completed chunks (carried over by a republish).",
    )
    recipients_digest: str | None = Field(
        default=None,
        description="SHA-256 of the recipients as published, so a republish can tell that its source still "
        "gives the same list.",
    )

    @property
    def completed_ranges(self) -> list[tuple[int, int]]:
        """completedChunks as (first, last) pairs, the form Publisher.republish takes."""
        return parse_ranges(self.completed_chunks or "")


def format_ranges(ranges: list[tuple[int, int]]) -> str:
    """[(0, 41), (43, 43)] -> "0-41,43" (the form of checkpoint.completedChunks)."""
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in ranges)


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """ "0-41,43" -> [(0, 41), (43, 43)]; raises ValueError for anything else."""
    ranges = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        ranges.append((int(first), int(last or first)))
    return ranges


class MailCampaignStatus(ApiModel):
    phase: Phase | None = Field(
        default=None,
        description="Pending (waiting for its pool, or being published), Scheduled (startAt is ahead), "
        "Sending, "
        "Paused, Completed or Failed.",
    )
    total: int | None = Field(default=None, ge=0, description="Recipients after deduplication.")
    sent: int | None = Field(default=None, ge=0, description="Recipients the relay accepted a message for.")
    failed: int | None = Field(
        default=None, ge=0, description="Recipients the relay refused for good (5xx) or after every retry."
    )
    invalid: int | None = Field(
        default=None, ge=0, description="Recipients that could not be sent to (a malformed address or row)."
    )
    pending: int | None = Field(default=None, ge=0, description="Recipients not yet sent, failed or invalid.")
    progress: str | None = Field(
        default=None,
        description="Recipients done (sent, failed or invalid) as a percentage of total, e.g. 42%.",
    )
    rate: float | None = Field(
        default=None, ge=0, description="Messages sent per second over the last progress interval."
    )
    started_at: datetime | None = Field(default=None, description="When the first chunk was published.")
    completed_at: datetime | None = Field(
        default=None, description="When the phase became Completed or Failed."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The spec generation this status describes."
    )
    checkpoint: Checkpoint | None = Field(
        default=None,
        description="The durable record of what was sent: if Redis loses the campaign, the operator "
        "publishes "
        "it again without these chunks.",
    )
    conditions: list[Condition] | None = Field(
        default=None,
        description="Complete (True once every recipient is sent, failed or invalid), Failed (True when the "
        "campaign cannot be sent; the reason says why), and others the operator documents.",
    )


class MailCampaign(ApiModel):
    api_version: Literal["mailtrain.dev/v1alpha1"] = API_VERSION
    kind: Literal["MailCampaign"] = "MailCampaign"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: MailCampaignSpec
    status: MailCampaignStatus | None = Field(default=None, description="Written by the operator only.")
