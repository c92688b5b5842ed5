"""The wire formats: a campaign's description (JSON) and its chunks of recipients (JSON rows).

The operator writes them, the sender reads them; both import this module, so the
format has one definition. The sender does not trust it further than its types:
whatever the CRD already checked is checked again where it is used (render.py),
and a row of the wrong shape becomes an invalid recipient, not a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

WIRE_VERSION = 1


class WireModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class Address(WireModel):
    address: str
    name: str | None = None


class ListUnsubscribe(WireModel):
    url: str | None = None
    mailto: str | None = None
    one_click: bool = Field(default=False, alias="oneClick")


class CampaignWire(WireModel):
    """What a sender needs to send a campaign. Written once by the publisher."""

    v: int = WIRE_VERSION
    id: str = Field(description="Unique per campaign: the MailCampaign's uid.")
    name: str = Field(description='"<namespace>/<name>", for logs and metrics.')
    pool: str
    sender: Address = Field(alias="from")
    subject: str
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    list_unsubscribe: ListUnsubscribe | None = Field(default=None, alias="listUnsubscribe")
    list_id: str | None = Field(default=None, alias="listId")
    priority: int = 0
    created_ms: int = Field(alias="createdMs")
    total: int = 0
    chunk_size: int = Field(default=512, alias="chunkSize")
    chunks: int = 0
    token_key: str = Field(alias="tokenKey", description="Random per campaign: keys the unsubscribe tokens.")

    def dumps(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


@dataclass(frozen=True, slots=True)
class Recipient:
    """One row. The types are what the publisher writes; a decoded row is checked before use."""

    email: str
    name: str | None = None
    vars: dict[str, Any] | None = None


class ChunkFormatError(ValueError):
    """A chunk's payload is not a JSON list: the campaign's data is corrupt."""


def encode_chunk(recipients: list[Recipient]) -> str:
    rows: list[list[Any]] = []
    for r in recipients:
        row: list[Any] = [r.email]
        if r.name is not None or r.vars:
            row.append(r.name)
        if r.vars:
            row.append(r.vars)
        rows.append(row)
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


def _row(row: Any) -> Recipient:
    # Values of the wrong type are kept as they are: render.check_recipient names what is wrong.
    if isinstance(row, list) and 1 <= len(row) <= 3:
        return Recipient(*row)
    return Recipient(row)


def decode_chunk(payload: str | bytes) -> list[Recipient]:
    try:
        rows = json.loads(payload)
    except ValueError as exc:
        raise ChunkFormatError(f"chunk is not valid JSON: {exc}") from exc
    if not isinstance(rows, list):
        raise ChunkFormatError("chunk is not a JSON list of rows")
    return [_row(row) for row in rows]


def bit_is_set(bits: bytes, index: int) -> bool:
    """Bit `index` of a Redis bitmap slice (bit 0 is the most significant bit of byte 0)."""
    byte = index >> 3
    return byte < len(bits) and bool(bits[byte] & (0x80 >> (index & 7)))
