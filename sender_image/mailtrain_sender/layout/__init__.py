"""The Redis layout: every key name, Lua script and wire format, in one place.

Both the operator (publishing campaigns, reading progress) and the sender
(claiming, sending, acknowledging) go through this package; nothing else spells
a key name or a script.

    keys.py   key names, campaign states, the registry's ordering score
    wire.py   the campaign wire format and the chunk format
    store.py  typed operations, one per Lua script (lua/*.lua)
"""

from mailtrain_sender.layout.keys import (
    ACTIVE,
    COMPLETED,
    FAILED,
    MISSING,
    PAUSED,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TERMINAL,
    CampaignKeys,
    PoolKeys,
    lease_holder,
    registry_score,
)
from mailtrain_sender.layout.store import (
    Assignment,
    ChunkClaim,
    Inactive,
    Lease,
    NoChunk,
    Outcomes,
    Recorded,
    Store,
    hgetall,
    text,
)
from mailtrain_sender.layout.wire import (
    Address,
    CampaignWire,
    ChunkFormatError,
    ListUnsubscribe,
    Recipient,
    bit_is_set,
    decode_chunk,
    encode_chunk,
)

__all__ = [
    "ACTIVE",
    "COMPLETED",
    "FAILED",
    "MISSING",
    "PAUSED",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "TERMINAL",
    "Address",
    "Assignment",
    "CampaignKeys",
    "CampaignWire",
    "ChunkClaim",
    "ChunkFormatError",
    "Inactive",
    "Lease",
    "ListUnsubscribe",
    "NoChunk",
    "Outcomes",
    "PoolKeys",
    "Recipient",
    "Recorded",
    "Store",
    "bit_is_set",
    "decode_chunk",
    "encode_chunk",
    "hgetall",
    "lease_holder",
    "registry_score",
    "text",
]
