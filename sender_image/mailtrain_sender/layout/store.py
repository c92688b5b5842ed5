"""Typed operations on the layout: each Lua script, and the few plain commands around them.

Every script touches keys of one hash tag only, `{p:<pool>}` or `{c:<campaign>}`,
so the layout also works on Redis Cluster. Scripts that read or write leases
start with `campaign_clock.lua` (the rule that keeps a Redis pause from expiring
every lease at once).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from mailtrain_sender.layout.keys import MISSING, CampaignKeys, PoolKeys

_PRELUDE = "campaign_clock"
_SCRIPTS = {  # name -> whether it needs the campaign clock prelude
    "rebalance": False,
    "take_tokens": False,
    "claim_chunk": True,
    "renew_leases": True,
    "release_chunks": False,
    "record_outcomes": False,
    "fail_campaign": False,
    "set_state": False,
}


async def hgetall(client: Redis, key: str) -> dict[bytes, bytes]:
    """HGETALL, typed: redis-py 7 types hash commands as "awaitable or not"."""
    return await cast("Awaitable[dict[bytes, bytes]]", client.hgetall(key))


def text(value: bytes | str) -> str:
    """A Redis reply as str, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Assignment:
    campaigns: tuple[str, ...]
    workers: int  # live workers in the pool
    runnable: int  # campaigns in the registry
    expired: int  # workers whose heartbeat expired in this call


@dataclass(frozen=True)
class ChunkClaim:
    chunk: int
    token: int  # the claim's fencing token
    payload: bytes  # the chunk's recipients, wire format (decode with wire.decode_chunk)
    done_bits: bytes  # the chunk's slice of the done bitmap
    previous_owner: str  # "" unless this claim took over an expired lease


@dataclass(frozen=True)
class NoChunk:
    leased: int  # chunks still leased by someone: the campaign is not finished yet


@dataclass(frozen=True)
class Inactive:
    state: str  # paused, completed, failed, or missing


Lease = tuple[int, int]  # (chunk, fencing token)


@dataclass
class Outcomes:
    """One campaign's outcomes gathered since the last write, and the completions riding on them."""

    sent: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    invalid: dict[int, str] = field(default_factory=dict)
    deferred: int = 0
    ambiguous: int = 0  # transactions whose final reply never came (the relay may have accepted them)
    complete: list[Lease] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sent) + len(self.failed) + len(self.invalid) + len(self.complete)

    def merge(self, newer: Outcomes) -> None:
        self.sent += newer.sent
        self.failed.update(newer.failed)
        self.invalid.update(newer.invalid)
        self.deferred += newer.deferred
        self.ambiguous += newer.ambiguous
        self.complete += newer.complete


@dataclass(frozen=True)
class Recorded:
    state: str  # the campaign's state after the write ("completed" when this write completed it)
    completed: int  # completed chunks of the campaign
    owned: tuple[bool, ...]  # per completion: whether the claim still owned the chunk


def _lease_args(leases: Iterable[Lease]) -> list[int]:
    return [n for lease in leases for n in lease]


class Store:
    """Typed operations on the layout for one Redis client (decode_responses=False)."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        folder = resources.files("mailtrain_sender.layout") / "lua"
        prelude = (folder / f"{_PRELUDE}.lua").read_text()
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script((prelude if clock else "") + (folder / f"{name}.lua").read_text())
            for name, clock in _SCRIPTS.items()
        }

    # -- pool ------------------------------------------------------------------------------------------------

    async def rebalance(
        self, pool: str, worker: str, cap: int, ttl_ms: int, *, leaving: bool = False
    ) -> Assignment:
        k = PoolKeys(pool)
        mine, workers, runnable, expired = await self._scripts["rebalance"](
            keys=[k.workers, k.caps, k.assign, k.registry, k.clock],
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
        """A finished or deleted campaign leaves the registry (idempotent)."""
        await self.client.zrem(PoolKeys(pool).registry, campaign)

    async def assignments(self, pool: str) -> dict[str, tuple[str, ...]]:
        """Every live worker's campaigns (for tests and diagnostics)."""
        raw = await hgetall(self.client, PoolKeys(pool).assign)
        return {text(w): tuple(c for c in text(v).split(",") if c) for w, v in raw.items()}

    async def eviction_policy(self) -> str | None:
        """Redis's maxmemory-policy, or None where CONFIG is not allowed (some managed services)."""
        reply = await self.client.config_get("maxmemory-policy")
        value = reply.get("maxmemory-policy") if reply else None
        return None if value is None else text(value)

    # -- campaign --------------------------------------------------------------------------------------------

    async def load_campaign(self, campaign: str) -> tuple[str, bytes | None]:
        """(state, raw wire format): the caller validates the format and fails the campaign if it is bad."""
        k = CampaignKeys(campaign)
        state, meta = await self.client.mget([k.state, k.meta])
        raw = meta.encode() if isinstance(meta, str) else meta
        return (MISSING if state is None else text(state)), raw

    async def claim_chunk(
        self, campaign: str, worker: str, ttl_ms: int, chunk_size: int
    ) -> ChunkClaim | NoChunk | Inactive:
        k = CampaignKeys(campaign)
        reply = await self._scripts["claim_chunk"](
            keys=[k.state, k.todo, k.leases, k.owners, k.rcpt, k.done, k.counts, k.tick, k.reason],
            args=[worker, ttl_ms, chunk_size],
        )
        kind = text(reply[0])
        if kind == "inactive":
            return Inactive(text(reply[1]))
        if kind == "empty":
            return NoChunk(int(reply[1]))
        return ChunkClaim(int(reply[1]), int(reply[2]), bytes(reply[3]), bytes(reply[4]), text(reply[5]))

    async def renew_leases(
        self, worker: str, ttl_ms: int, held: Sequence[tuple[str, Sequence[Lease]]]
    ) -> list[tuple[str, set[int] | None]]:
        """Renew the leases of many campaigns in one round trip.

        held: (campaign, its leases) per runner; a campaign may appear twice (a runner
        winding down and a new one). Per entry: (state, chunks lost), where None means
        every chunk is lost (the campaign is gone).
        """
        calls = []
        for campaign, leases in held:
            k = CampaignKeys(campaign)
            keys = [k.state, k.leases, k.owners, k.tick]
            calls.append(("renew_leases", keys, [worker, ttl_ms, *_lease_args(leases)]))
        result: list[tuple[str, set[int] | None]] = []
        for reply in await self._pipelined(calls):
            state = text(reply[0])
            result.append((state, None if state == MISSING else {int(c) for c in reply[1:]}))
        return result

    async def release_chunks(self, campaign: str, worker: str, leases: Sequence[Lease]) -> int:
        if not leases:
            return 0
        k = CampaignKeys(campaign)
        released = await self._scripts["release_chunks"](
            keys=[k.state, k.todo, k.leases, k.owners], args=[worker, *_lease_args(leases)]
        )
        return int(released)

    async def record_outcomes(
        self, worker: str, batches: dict[str, tuple[Outcomes, int]]
    ) -> dict[str, Recorded | ResponseError]:
        """Write many campaigns' outcomes and completions in one round trip.

        batches: campaign -> (its outcomes, its number of chunks). A campaign whose write Redis
        refused (its keys damaged, say) gets the error; the others are written all the same.
        """
        calls = []
        for campaign, (outcomes, chunks) in batches.items():
            k = CampaignKeys(campaign)
            payload = {
                "sent": outcomes.sent,
                "failed": {str(i): r for i, r in outcomes.failed.items()},
                "invalid": {str(i): r for i, r in outcomes.invalid.items()},
                "deferred": outcomes.deferred,
                "ambiguous": outcomes.ambiguous,
                "complete": [[str(chunk), f"{worker}|{token}"] for chunk, token in outcomes.complete],
                "chunks": chunks,
            }
            keys = [
                k.state,
                k.done,
                k.failed,
                k.invalid,
                k.replies,
                k.counts,
                k.leases,
                k.owners,
                k.completed,
            ]
            # json.dumps escapes non-ASCII, so the script's decoder sees ASCII whatever a reply holds.
            calls.append(("record_outcomes", keys, [json.dumps(payload)]))
        replies = await self._pipelined(calls, keep_errors=True)
        result: dict[str, Recorded | ResponseError] = {}
        for campaign, r in zip(batches, replies, strict=True):
            if isinstance(r, ResponseError):
                result[campaign] = r
            else:
                result[campaign] = Recorded(text(r[0]), int(r[1]), tuple(bool(int(x)) for x in r[2:]))
        return result

    async def _pipelined(
        self, calls: list[tuple[str, list[str], list[Any]]], *, keep_errors: bool = False
    ) -> list[Any]:
        """Run script calls in one pipeline by their SHA.

        redis-py's pipelines ask SCRIPT EXISTS before every execute, a second round
        trip; this one loads a script only when Redis says NOSCRIPT (after a restart),
        and runs again just the calls that failed so, which never ran.
        """
        if not calls:
            return []
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            for i in todo:
                name, keys, args = calls[i]
                pipe.evalsha(self._scripts[name].sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
            missing = []
            for i, result in zip(todo, results, strict=True):
                if isinstance(result, NoScriptError):
                    missing.append(i)
                elif isinstance(result, Exception) and not (
                    keep_errors and isinstance(result, ResponseError)
                ):
                    raise result
                else:
                    replies[i] = result
            if not missing:
                return replies
            for name in {calls[i][0] for i in missing}:
                await self.client.script_load(self._scripts[name].script)
            todo = missing
        raise NoScriptError("scripts vanished twice in a row while loading them")

    async def sent(self, campaign: str) -> int:
        """Recipients of the campaign sent so far (done - failed - invalid), as far as Redis knows."""
        k = CampaignKeys(campaign)
        pipe = self.client.pipeline(transaction=False)
        for key in (k.done, k.failed, k.invalid):
            pipe.bitcount(key)
        done, failed, invalid = await pipe.execute()
        return int(done) - int(failed) - int(invalid)

    async def fail_campaign(self, campaign: str, reason: str) -> str:
        """Fail an active or paused campaign with a reason; returns the state found."""
        k = CampaignKeys(campaign)
        return text(await self._scripts["fail_campaign"](keys=[k.state, k.reason], args=[reason[:1000]]))

    async def swap_state(self, campaign: str, expected: str, new: str) -> str:
        """Compare and set the campaign's state; returns the state found (swapped if it was `expected`)."""
        k = CampaignKeys(campaign)
        return text(await self._scripts["set_state"](keys=[k.state], args=[expected, new]))
