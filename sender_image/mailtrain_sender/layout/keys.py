"""Every Redis key name of the layout, and the registry's ordering score.

Pool keys                          Campaign keys
  registry  ZSET campaign->score     meta      STRING campaign wire format (JSON)
  workers   ZSET worker->expiry      state     STRING active|paused|completed|failed
  caps      HASH worker->cap         reason    STRING why the campaign failed
  assign    HASH worker->campaigns   rcpt      HASH   chunk->recipients (JSON)
  throttle  HASH tokens, ts          todo      ZSET   chunks not yet leased
  clock     STRING last rebalance    leases    ZSET   chunk->lease expiry (ms)
  hb:<worker> STRING heartbeat       owners    HASH   chunk->"worker|fencing token"
                                     completed ZSET   completed chunks
                                     done/failed/invalid  bitmaps, one bit per recipient
                                     replies   HASH   recipient->last SMTP reply or reason
                                     counts    HASH   deferred, ambiguous, fence, carried_*
                                     tick      STRING server time of the last script call (ms)

Recipient i of a campaign is in chunk i // chunk_size. sent = done - failed - invalid.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "mt"
# Registry scores order by priority, then creation; both fit a double exactly.
_PRIORITY_SPAN = 4_000_000_000_000  # ms, about 126 years after _EPOCH_MS
_EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
PRIORITY_MIN, PRIORITY_MAX = -1000, 1000

# Campaign states. A campaign is runnable only while active; completed and failed are terminal.
ACTIVE, PAUSED, COMPLETED, FAILED, MISSING = "active", "paused", "completed", "failed", "missing"
TERMINAL = frozenset({COMPLETED, FAILED})


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

    registry = property(lambda self: self._key("registry"))
    workers = property(lambda self: self._key("workers"))
    caps = property(lambda self: self._key("caps"))
    assign = property(lambda self: self._key("assign"))
    throttle = property(lambda self: self._key("throttle"))
    clock = property(lambda self: self._key("clock"))

    def heartbeat(self, worker: str) -> str:
        return self._key(f"hb:{worker}")


_CAMPAIGN_KEYS = (
    "meta",
    "state",
    "reason",
    "rcpt",
    "todo",
    "leases",
    "owners",
    "completed",
    "done",
    "failed",
    "invalid",
    "replies",
    "counts",
    "tick",
)


@dataclass(frozen=True)
class CampaignKeys:
    campaign: str

    def _key(self, name: str) -> str:
        return f"{PREFIX}:{{c:{self.campaign}}}:{name}"

    meta = property(lambda self: self._key("meta"))
    state = property(lambda self: self._key("state"))
    reason = property(lambda self: self._key("reason"))
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
    tick = property(lambda self: self._key("tick"))

    def all(self) -> list[str]:
        return [self._key(name) for name in _CAMPAIGN_KEYS]


def lease_holder(owner: str) -> str:
    """The worker in an `owners` value ("worker|fencing token")."""
    return owner.partition("|")[0]
