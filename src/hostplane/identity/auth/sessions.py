"""Login sessions: access tokens bound to a session, refresh tokens rotated in a family.

Every access token names its session (``sid``). Logging out, a password
change, a ban, or the reuse of an already-exchanged refresh token revokes the
session, and with it every access token it minted, on the next request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.errors import Unauthorized
from hostplane.core.ids import new_id
from hostplane.core.runtime import Runtime
from hostplane.identity.access.events import announce_revoked
from hostplane.identity.auth.keys import key_ring
from hostplane.identity.auth.models import AuthSession, RefreshToken
from hostplane.identity.roles.service import effective_permissions
from hostplane.identity.users.models import User

REFRESH_PREFIX = "rt_"


class InvalidRefreshToken(Unauthorized):
    code = "INVALID_REFRESH_TOKEN"


def token_hash(raw: str) -> str:
    # Refresh tokens are 256 random bits: a fast hash is as strong as a slow one here.
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: str


async def _new_refresh_token(
    session: AsyncSession, runtime: Runtime, auth_session: AuthSession
) -> str:
    raw = REFRESH_PREFIX + secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            tenant_id=auth_session.tenant_id,
            session_id=auth_session.id,
            token_hash=token_hash(raw),
            expires_at=utcnow() + timedelta(days=runtime.settings.identity.refresh_token_ttl_days),
        )
    )
    await session.flush()
    return raw


async def access_token_for(
    session: AsyncSession, runtime: Runtime, user: User, session_id: str
) -> tuple[str, int]:
    """A signed access token with the Catalyst payload (userId, email, username, permissions)."""
    ttl = runtime.settings.identity.access_token_ttl_seconds
    now = utcnow()
    claims = {
        "sub": user.id,
        "userId": user.id,
        "email": user.email,
        "username": user.username,
        "permissions": sorted(await effective_permissions(session, user.id)),
        "tid": user.tenant_id,
        "sid": session_id,
        "jti": new_id(),
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + ttl,
    }
    ring = await key_ring(runtime)
    return ring.sign(claims), ttl


async def start_session(
    session: AsyncSession, runtime: Runtime, user: User, *, ip: str | None, user_agent: str | None
) -> TokenPair:
    """A new login session for ``user`` with its first token pair."""
    now = utcnow()
    auth_session = AuthSession(
        tenant_id=user.tenant_id,
        user_id=user.id,
        ip=ip,
        user_agent=(user_agent or "")[:500] or None,
        last_used_at=now,
        expires_at=now + timedelta(days=runtime.settings.identity.refresh_token_ttl_days),
    )
    session.add(auth_session)
    await session.flush()
    user.last_login_at = now
    refresh = await _new_refresh_token(session, runtime, auth_session)
    access, ttl = await access_token_for(session, runtime, user, auth_session.id)
    return TokenPair(access, refresh, ttl, auth_session.id)


async def revoke_session(session: AsyncSession, session_id: str, *, reason: str) -> None:
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
        .execution_options(synchronize_session=False)
    )
    # Open sockets of this session end when the change commits.
    announce_revoked(session, reason=reason, session_id=session_id)


async def revoke_user_sessions(
    session: AsyncSession, user_id: str, *, reason: str, keep: str | None = None
) -> None:
    """End every session of a user (ban, password change), optionally but one."""
    statement = (
        update(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
        .execution_options(synchronize_session=False)
    )
    if keep is not None:
        statement = statement.where(AuthSession.id != keep)
    await session.execute(statement)
    # Open sockets of the user re-check when the change commits (a kept
    # session stays open; a ban also ends the user's API keys).
    announce_revoked(session, reason=reason, user_id=user_id)


async def rotate_refresh_token(
    session: AsyncSession, runtime: Runtime, raw: str
) -> tuple[TokenPair | None, str | None]:
    """Exchange a refresh token for a new pair.

    Returns ``(pair, None)`` on success, or ``(None, reason)`` when refused. A
    token presented a second time is reuse: someone copied it, so the whole
    session is revoked and the caller must commit that before refusing.
    """
    now = utcnow()
    record = await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == token_hash(raw)).with_for_update()
    )
    if record is None:
        return None, "unknown"
    auth_session = await session.get(AuthSession, record.session_id, with_for_update=True)
    if auth_session is None or auth_session.revoked_at is not None:
        return None, "revoked"
    if record.used_at is not None:
        await revoke_session(session, auth_session.id, reason="refresh_token_reuse")
        return None, "reused"
    if record.expires_at <= now or auth_session.expires_at <= now:
        return None, "expired"
    user = await session.get(User, auth_session.user_id)
    if user is None or user.status != "active":
        return None, "user_inactive"
    record.used_at = now
    auth_session.last_used_at = now
    refresh = await _new_refresh_token(session, runtime, auth_session)
    access, ttl = await access_token_for(session, runtime, user, auth_session.id)
    return TokenPair(access, refresh, ttl, auth_session.id), None


async def session_of_refresh_token(session: AsyncSession, raw: str) -> str | None:
    return await session.scalar(
        select(RefreshToken.session_id).where(RefreshToken.token_hash == token_hash(raw))
    )
