"""Remembering the first answer given under an ``Idempotency-Key``.

The key's row is written in the request's own transaction, before the work:
it commits with the work or not at all. A failed request (a 402, a 409)
leaves no key behind, so the client may retry the same key once it has fixed
the cause; only successes are replayed. Two requests racing with one key meet
at the unique index: on PostgreSQL the second waits for the first to commit,
then replays its answer; on SQLite writers are serialised anyway.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.errors import Conflict, ValidationFailed
from hostplane.platform.idempotency.models import IdempotencyRecord

# How long a key is remembered (Stripe keeps keys for 24 hours).
RETENTION = timedelta(hours=24)
KEY_MAX = 255


class IdempotencyKeyReused(Conflict):
    code = "IDEMPOTENCY_KEY_REUSED"


@dataclass(frozen=True, slots=True)
class Stored:
    """The first answer under a key, to be given again."""

    status_code: int
    response: dict[str, Any]


def check_key(key: str) -> None:
    if not key or len(key) > KEY_MAX or not key.isprintable():
        raise ValidationFailed(
            f"Idempotency-Key must be 1 to {KEY_MAX} printable characters",
            details={"header": "Idempotency-Key"},
        )


async def claim(
    session: AsyncSession,
    *,
    tenant_id: str,
    caller: str,
    scope: str,
    key: str,
    body: BaseModel | dict[str, Any] | None,
) -> IdempotencyRecord | Stored:
    """The new key's row (fill in its answer before commit), or the stored answer.

    Raises :class:`IdempotencyKeyReused` when the key came with another body.
    """
    check_key(key)
    fingerprint = _fingerprint(body)
    existing = await _find(session, tenant_id, caller, scope, key)
    if existing is not None:
        return _stored(existing, fingerprint)
    record = IdempotencyRecord(
        tenant_id=tenant_id,
        caller=caller,
        scope=scope,
        key=key,
        fingerprint=fingerprint,
        status_code=0,
        response={},
    )
    try:
        async with session.begin_nested():
            session.add(record)
            await session.flush()
    except IntegrityError:
        winner = await _find(session, tenant_id, caller, scope, key)
        if winner is None:
            raise
        return _stored(winner, fingerprint)
    return record


def _stored(record: IdempotencyRecord, fingerprint: str) -> Stored:
    if record.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with a different request body",
            details={"header": "Idempotency-Key"},
        )
    return Stored(status_code=record.status_code, response=dict(record.response))


async def _find(
    session: AsyncSession, tenant_id: str, caller: str, scope: str, key: str
) -> IdempotencyRecord | None:
    cutoff = utcnow() - RETENTION
    where = (
        IdempotencyRecord.tenant_id == tenant_id,
        IdempotencyRecord.caller == caller,
        IdempotencyRecord.scope == scope,
        IdempotencyRecord.key == key,
    )
    found: IdempotencyRecord | None = await session.scalar(select(IdempotencyRecord).where(*where))
    if found is not None and found.created_at < cutoff:
        # Expired: the key is free again.
        await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == found.id))
        return None
    return found


def _fingerprint(body: BaseModel | dict[str, Any] | None) -> str:
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
