"""The hash chain: canonical form of an entry, its hash, and checking a chain.

Every entry stores the hash of the entry before it in its chain and its own
hash: SHA-256 over a canonical JSON document of every stored field, including
its chain, its sequence number and the previous hash. Changing, removing or
reordering a stored entry therefore breaks the chain at that entry.

There is one chain per tenant (``tenant:<id>``) and one for entries that
belong to no tenant (``platform``), so tenants never wait on each other to
append. Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

PLATFORM_CHAIN = "platform"
TENANT_CHAIN_PREFIX = "tenant:"
# The "previous hash" of a chain's first entry.
GENESIS_HASH = "0" * 64
# Bumped if the canonical form ever changes; part of every hashed document,
# so an old entry can never be mistaken for one hashed the new way.
HASH_VERSION = 1

# The stored fields that are hashed, by column name.
HASHED_FIELDS = (
    "id",
    "chain",
    "seq",
    "prev_hash",
    "tenant_id",
    "actor_type",
    "actor_id",
    "user_id",
    "action",
    "resource_type",
    "resource_id",
    "ip_address",
    "user_agent",
    "request_id",
    "metadata",
    "created_at",
)


def chain_for(tenant_id: str | None) -> str:
    """The chain an entry of ``tenant_id`` (or of no tenant) belongs to."""
    return f"{TENANT_CHAIN_PREFIX}{tenant_id}" if tenant_id else PLATFORM_CHAIN


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def clean_text(value: str | None, limit: int) -> str | None:
    """``value`` as the database will store it: without NUL characters, cut to ``limit``."""
    if value is None:
        return None
    # PostgreSQL refuses NUL in text; an over-long value would fail the
    # transaction of the change being audited.
    return value.replace("\x00", "")[:limit]


def normalise_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """``metadata`` as plain JSON that comes back from either database unchanged.

    The hash is computed before the row is written and checked after it is
    read back, so the stored document must round-trip exactly. PostgreSQL's
    JSONB stores numbers as decimals (``1e16`` comes back as an integer) and
    refuses NUL characters, so integral floats become ints, non-finite floats
    and other objects become strings, and NULs are dropped.
    """
    return {_clean_key(key): _clean_value(value) for key, value in (metadata or {}).items()}


def _clean_key(key: object) -> str:
    return str(key).replace("\x00", "")


def _clean_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, Enum):
        return _clean_value(value.value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date | Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {_clean_key(key): _clean_value(item) for key, item in value.items()}
    if isinstance(value, set | frozenset):
        # No order of their own: sort by canonical form so the hash is stable.
        return sorted((_clean_value(item) for item in value), key=canonical_json)
    if isinstance(value, list | tuple):
        return [_clean_value(item) for item in value]
    return str(value).replace("\x00", "")


def _hashable(name: str, value: Any) -> Any:
    if name == "created_at":
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError("created_at must be a timezone-aware datetime")
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


def entry_hash(fields: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of an entry's canonical form; ``fields`` by column name."""
    document = {name: _hashable(name, fields[name]) for name in HASHED_FIELDS}
    document["v"] = HASH_VERSION
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """Where a chain stops being trustworthy: the first bad sequence number."""

    chain: str
    seq: int
    reason: str

    def __str__(self) -> str:
        return f"audit chain {self.chain} is broken at sequence {self.seq}: {self.reason}"


class ChainVerifier:
    """Checks one chain's entries, fed in sequence order from its anchor.

    The anchor is where verification starts: the sequence and hash of the
    last pruned entry, or ``(0, GENESIS_HASH)`` for a chain never pruned.
    """

    def __init__(self, chain: str, *, anchor_seq: int, anchor_hash: str) -> None:
        self.chain = chain
        self.next_seq = anchor_seq + 1
        self.last_hash = anchor_hash
        self.checked = 0

    def feed(self, fields: Mapping[str, Any]) -> ChainBreak | None:
        """Check the next stored entry; return the break it reveals, if any."""
        seq = int(fields["seq"])
        if seq != self.next_seq:
            return ChainBreak(self.chain, self.next_seq, f"entry {self.next_seq} is missing")
        if fields["prev_hash"] != self.last_hash:
            return ChainBreak(
                self.chain, seq, f"entry {seq} does not follow the entry before it (prev_hash)"
            )
        if entry_hash(fields) != fields["hash"]:
            return ChainBreak(self.chain, seq, f"entry {seq} was altered (hash mismatch)")
        self.last_hash = str(fields["hash"])
        self.next_seq += 1
        self.checked += 1
        return None

    def finish(self, *, head_seq: int, head_hash: str) -> ChainBreak | None:
        """Check that the entries fed reach the chain's head (no entries cut off the end)."""
        if self.next_seq <= head_seq:
            return ChainBreak(
                self.chain,
                self.next_seq,
                f"entries {self.next_seq} to {head_seq} are missing"
                if self.next_seq < head_seq
                else f"entry {head_seq} is missing",
            )
        if self.last_hash != head_hash:
            return ChainBreak(
                self.chain, head_seq, f"entry {head_seq} does not match the chain's head"
            )
        return None
