"""The signing keys of access tokens: stored sealed, loaded into a key ring, rotated.

Every replica loads the key ring from the database and reloads it at most a
minute later when another replica rotated (or at once when it meets a token
signed by a key it does not know yet).
"""

from __future__ import annotations

import base64
import time
from datetime import timedelta

import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.ids import new_id
from hostplane.core.runtime import Runtime
from hostplane.core.security.crypto import SealError, SecretBox
from hostplane.core.security.tokens import LEEWAY_SECONDS, KeyRing, SigningKey
from hostplane.identity.auth.models import SigningKeyRecord

log = structlog.get_logger(__name__)

_EXTENSION = "identity.keyring"
RELOAD_SECONDS = 60.0
# Unknown kid: reload at most this often, so garbage tokens cannot hammer the database.
UNKNOWN_KID_RELOAD_SECONDS = 5.0


def _box(runtime: Runtime) -> SecretBox:
    return SecretBox(runtime.settings.secret_key.get_secret_value(), "signing-keys")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _record_for(key: SigningKey, box: SecretBox) -> SigningKeyRecord:
    return SigningKeyRecord(
        id=key.kid,
        private_key_sealed=box.seal(key.private_bytes()),
        public_key=_b64(key.public_bytes()),
    )


async def _active_records(session: AsyncSession) -> list[SigningKeyRecord]:
    now = utcnow()
    rows = await session.scalars(
        select(SigningKeyRecord)
        .where(or_(SigningKeyRecord.not_after.is_(None), SigningKeyRecord.not_after > now))
        .order_by(SigningKeyRecord.id)
    )
    return list(rows)


async def ensure_signing_key(session: AsyncSession, box: SecretBox) -> None:
    """Create the first signing key of a fresh installation."""
    current = await session.scalar(
        select(SigningKeyRecord)
        .where(SigningKeyRecord.retired_at.is_(None))
        .limit(1)
        .with_for_update()
    )
    if current is None:
        session.add(_record_for(SigningKey.generate(new_id()), box))
        await session.flush()


async def rotate_signing_key(session: AsyncSession, runtime: Runtime) -> str:
    """Start signing with a new key; the old one verifies until its tokens expired."""
    box = _box(runtime)
    now = utcnow()
    ttl = timedelta(seconds=runtime.settings.identity.access_token_ttl_seconds + LEEWAY_SECONDS)
    for record in await session.scalars(
        select(SigningKeyRecord).where(SigningKeyRecord.retired_at.is_(None)).with_for_update()
    ):
        record.retired_at = now
        record.not_after = now + ttl
    key = SigningKey.generate(new_id())
    session.add(_record_for(key, box))
    await session.flush()
    runtime.extensions.pop(_EXTENSION, None)
    return key.kid


class _Cached:
    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self.loaded = time.monotonic()
        self.last_forced = 0.0


def _opens(box: SecretBox, record: SigningKeyRecord) -> bool:
    try:
        box.open(record.private_key_sealed)
    except SealError:
        return False
    return True


async def _retire_unreadable(session: AsyncSession, runtime: Runtime, box: SecretBox) -> None:
    now = utcnow()
    ttl = timedelta(seconds=runtime.settings.identity.access_token_ttl_seconds + LEEWAY_SECONDS)
    for record in await session.scalars(
        select(SigningKeyRecord).where(SigningKeyRecord.retired_at.is_(None)).with_for_update()
    ):
        if not _opens(box, record):
            log.warning("auth.signing_key_unreadable", kid=record.id)
            record.retired_at = now
            record.not_after = now + ttl
    await session.flush()


async def _load(runtime: Runtime, *, forced_at: float = 0.0) -> KeyRing:
    box = _box(runtime)
    # Read-only: this can run inside a request that already holds SQLite's
    # write lock. The first key is created at startup (warm_key_ring).
    async with runtime.unit_of_work(read_only=True) as session:
        records = await _active_records(session)
    if not any(record.retired_at is None and _opens(box, record) for record in records):
        # No signing key yet, or it was sealed under another secret_key (the
        # operator changed it): retire what cannot be used and start a new one.
        async with runtime.unit_of_work() as session:
            await _retire_unreadable(session, runtime, box)
            await ensure_signing_key(session, box)
            records = await _active_records(session)
    keys = [
        SigningKey.from_bytes(
            record.id,
            private=box.open(record.private_key_sealed) if record.retired_at is None else None,
            public=_unb64(record.public_key),
            not_after=record.not_after,
        )
        for record in records
    ]
    ring = KeyRing(keys, issuer=runtime.settings.identity.issuer)
    cached = _Cached(ring)
    cached.last_forced = forced_at
    runtime.extensions[_EXTENSION] = cached
    return ring


async def key_ring(runtime: Runtime, *, unknown_kid: str | None = None) -> KeyRing:
    """The process's key ring, reloaded when stale or when a new kid shows up."""
    cached = runtime.extensions.get(_EXTENSION)
    now = time.monotonic()
    if isinstance(cached, _Cached):
        stale = now - cached.loaded > RELOAD_SECONDS
        forced = (
            unknown_kid is not None
            and unknown_kid not in cached.ring.kids
            and now - cached.last_forced > UNKNOWN_KID_RELOAD_SECONDS
        )
        if not stale and not forced:
            return cached.ring
        return await _load(runtime, forced_at=now if forced else cached.last_forced)
    return await _load(runtime)


async def warm_key_ring(runtime: Runtime) -> None:
    """Create the first signing key if needed and load the ring (process start)."""
    runtime.extensions.pop(_EXTENSION, None)
    await _load(runtime)
