"""The Redis layout: every key name, Lua script and wire format, in one place.

Both the operator (publishing campaigns, reading progress) and the sender
(claiming, sending, acknowledging) go through this module; nothing else spells a
key name. Each Lua script touches keys of one hash tag only, `{p:<pool>}` or
`{c:<campaign>}`, so the layout also works on Redis Cluster.

Pool keys                          Campaign keys
  registry  ZSET campaign->score     meta      STRING campaign wire format (JSON)
  workers   ZSET worker->expiry      state     STRING active|paused|completed
  caps      HASH worker->cap         rcpt      HASH   chunk->recipients (JSON)
  assign    HASH worker->campaigns   todo      ZSET   chunks not yet leased
  throttle  HASH tokens, ts          leases    ZSET   chunk->lease expiry (ms)
  hb:<worker> STRING heartbeat       owners    HASH   chunk->worker
                                     completed ZSET   completed chunks
                                     done/failed/invalid  bitmaps, one bit per recipient
                                     replies   HASH   recipient->last SMTP reply (failures)
                                     counts    HASH   deferred, takeovers

Recipient i of a campaign is in chunk i // chunk_size. sent = done - failed - invalid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

PREFIX = "mt"
WIRE_VERSION = 1
# Registry scores order by priority, then creation; both fit a double exactly.
_PRIORITY_SPAN = 4_000_000_000_000  # ms, about 126 years after _EPOCH_MS
_EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
PRIORITY_MIN, PRIORITY_MAX = -1000, 1000


def registry_score(priority: int, created_ms: int) -> int:
    """Lower scores are claimed first: higher priority, then older."""
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(f"priority must be within {PRIORITY_MIN}..{PRIORITY_MAX}")
    return (PRIORITY_MAX - priority) * _PRIORITY_SPAN + max(0, created_ms - _EPOCH_MS)


@dataclass(frozen=True)
class PoolKeys:
    pool: str

    def _key(self, name: str) -> str:
        return f"{PREFIX}:{{p:{self.pool}}}:{name}"

    @property
    def registry(self) -> str:
        return self._key("registry")

    @property
    def workers(self) -> str:
        return self._key("workers")

    @property
    def caps(self) -> str:
        return self._key("caps")

    @property
    def assign(self) -> str:
        return self._key("assign")

    @property
    def throttle(self) -> str:
        return self._key("throttle")

    def heartbeat(self, worker: str) -> str:
        return self._key(f"hb:{worker}")


@dataclass(frozen=True)
class CampaignKeys:
    campaign: str

    def _key(self, name: str) -> str:
        return f"{PREFIX}:{{c:{self.campaign}}}:{name}"

    meta = property(lambda self: self._key("meta"))
    state = property(lambda self: self._key("state"))
    rcpt = property(lambda self: self._key("rcpt"))
    todo = property(lambda self: self._key("todo"))
    leases = property(lambda self: self._key("leases"))
    owners = property(lambda self: self._key("owners"))
    completed = property(lambda self: self._key("completed"))
    done = property(lambda self: self._key("done"))
    failed = property(lambda self: self._key("failed"))
    invalid = property(lambda self: self._key("invalid"))
    replies = property(lambda self: self._key("replies"))
    counts = property(lambda self: self._key("counts"))

    def all(self) -> list[str]:
        names = (
            "meta",
            "state",
            "rcpt",
            "todo",
            "leases",
            "owners",
            "completed",
            "done",
            "failed",
            "invalid",
        )
        return [self._key(name) for name in (*names, "replies", "counts")]


# -- wire format ------------------------------------------------------------------------------------------


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
    id: str  # unique per campaign (the MailCampaign's uid)
    name: str  # "<namespace>/<name>", for logs and metrics
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
    # Key for the recipients' unsubscribe tokens (HMAC); random per campaign.
    token_key: str = Field(alias="tokenKey")

    def dumps(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    name: str | None = None
    vars: dict[str, Any] | None = None


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


def decode_chunk(payload: str | bytes) -> list[Recipient]:
    return [Recipient(*row) for row in json.loads(payload)]


def bit_is_set(bits: bytes, index: int) -> bool:
    """Bit `index` of a Redis bitmap slice (bit 0 is the most significant bit of byte 0)."""
    byte = index >> 3
    return byte < len(bits) and bool(bits[byte] & (0x80 >> (index & 7)))


# -- scripts and the operations built on them ---------------------------------------------------------------


_SCRIPT_NAMES = (
    "rebalance",
    "claim_chunk",
    "renew_leases",
    "complete_chunk",
    "release_chunks",
    "take_tokens",
)


@dataclass(frozen=True)
class Assignment:
    campaigns: tuple[str, ...]
    workers: int  # live workers in the pool
    runnable: int  # campaigns in the registry
    expired: int  # workers whose heartbeat expired in this call


@dataclass(frozen=True)
class ChunkClaim:
    chunk: int
    recipients: list[Recipient]
    done_bits: bytes  # the chunk's slice of the done bitmap
    previous_owner: str  # "" unless this claim took over an expired lease


@dataclass(frozen=True)
class NoChunk:
    leased: int  # chunks still leased by someone: the campaign is not finished yet


@dataclass(frozen=True)
class Inactive:
    state: str  # paused, completed, or missing


def text(value: bytes | str) -> str:
    """A Redis reply as str, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else value


class Store:
    """Typed operations on the layout for one Redis client (decode_responses=False)."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        folder = resources.files("mailtrain_sender") / "lua"
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script((folder / f"{name}.lua").read_text()) for name in _SCRIPT_NAMES
        }

    # -- pool ------------------------------------------------------------------------------------------------

    async def rebalance(
        self, pool: str, worker: str, cap: int, ttl_ms: int, *, leaving: bool = False
    ) -> Assignment:
        k = PoolKeys(pool)
        mine, workers, runnable, expired = await self._scripts["rebalance"](
            keys=[k.workers, k.caps, k.assign, k.registry],
            args=[worker, cap, ttl_ms, "1" if leaving else "0"],
        )
        campaigns = tuple(c for c in text(mine).split(",") if c)
        return Assignment(campaigns, int(workers), int(runnable), int(expired))

    async def take_tokens(self, pool: str, rate: float, burst: int, want: int) -> list[float]:
        """Reserve `want` tokens: for each, the seconds from now until it may be used."""
        before = float(
            await self._scripts["take_tokens"](keys=[PoolKeys(pool).throttle], args=[rate, burst, want])
        )
        return [max(0.0, (j + 1 - before) / rate) for j in range(want)]

    async def set_heartbeat(self, pool: str, worker: str, payload: dict[str, Any], ttl_s: float) -> None:
        await self.client.set(PoolKeys(pool).heartbeat(worker), json.dumps(payload), px=int(ttl_s * 1000))

    async def get_heartbeat(self, pool: str, worker: str) -> dict[str, Any] | None:
        raw = await self.client.get(PoolKeys(pool).heartbeat(worker))
        return None if raw is None else dict(json.loads(raw))

    async def retire(self, pool: str, campaign: str) -> None:
        """A completed campaign leaves the registry (idempotent)."""
        await self.client.zrem(PoolKeys(pool).registry, campaign)

    async def assignments(self, pool: str) -> dict[str, tuple[str, ...]]:
        """Every live worker's campaigns (for tests and `kubectl`-side diagnostics)."""
        raw = await self.client.hgetall(PoolKeys(pool).assign)
        return {text(w): tuple(c for c in text(v).split(",") if c) for w, v in raw.items()}

    # -- campaign --------------------------------------------------------------------------------------------

    async def load_campaign(self, campaign: str) -> CampaignWire | None:
        raw = await self.client.get(CampaignKeys(campaign).meta)
        return None if raw is None else CampaignWire.model_validate_json(raw)

    async def claim_chunk(
        self, campaign: str, worker: str, ttl_ms: int, chunk_size: int
    ) -> ChunkClaim | NoChunk | Inactive:
        k = CampaignKeys(campaign)
        reply = await self._scripts["claim_chunk"](
            keys=[k.state, k.todo, k.leases, k.owners, k.rcpt, k.done], args=[worker, ttl_ms, chunk_size]
        )
        kind = text(reply[0])
        if kind == "inactive":
            return Inactive(text(reply[1]))
        if kind == "empty":
            return NoChunk(int(reply[1]))
        return ChunkClaim(int(reply[1]), decode_chunk(reply[2] or b"[]"), bytes(reply[3]), text(reply[4]))

    async def renew_leases(
        self, campaign: str, worker: str, ttl_ms: int, chunks: list[int]
    ) -> tuple[str, set[int]]:
        """The campaign's state, and the chunks this worker no longer holds."""
        k = CampaignKeys(campaign)
        reply = await self._scripts["renew_leases"](
            keys=[k.state, k.leases, k.owners], args=[worker, ttl_ms, *chunks]
        )
        return text(reply[0]), {int(c) for c in reply[1:]}

    async def complete_chunk(self, campaign: str, worker: str, chunk: int, chunks: int) -> tuple[bool, int]:
        """Whether we still owned the chunk, and how many chunks are complete now."""
        k = CampaignKeys(campaign)
        owned, completed = await self._scripts["complete_chunk"](
            keys=[k.leases, k.owners, k.completed, k.state], args=[worker, chunk, chunks]
        )
        return bool(owned), int(completed)

    async def release_chunks(self, campaign: str, worker: str, chunks: list[int]) -> int:
        if not chunks:
            return 0
        k = CampaignKeys(campaign)
        released = await self._scripts["release_chunks"](
            keys=[k.todo, k.leases, k.owners], args=[worker, *chunks]
        )
        return int(released)

    @staticmethod
    def queue_acks(
        pipe: Any, campaign: str, sent: list[int], failed: dict[int, str], invalid: list[int], deferred: int
    ) -> None:
        """Add one campaign's acknowledgements to a pipeline: a BITFIELD per bitmap, not one per recipient.

        Every outcome sets the done bit; failed and invalid also set their own.
        """
        k = CampaignKeys(campaign)
        done = sent if not (failed or invalid) else [*sent, *failed, *invalid]
        for key, indexes in ((k.done, done), (k.failed, list(failed)), (k.invalid, invalid)):
            if indexes:
                args: list[Any] = []
                for index in indexes:
                    args += ("SET", "u1", f"#{index}", 1)
                pipe.execute_command("BITFIELD", key, *args)
        if failed:
            pipe.hset(k.replies, mapping={str(i): reply for i, reply in failed.items()})
        if deferred:
            pipe.hincrby(k.counts, "deferred", deferred)
