"""Resolving a request's caller: access tokens, API keys, or nobody.

Installed as the runtime's authenticator by the app factory. A resolution
reads the user, the login session and the roles, so a ban, a logout or a
revoked session stops a live token at once and role changes apply on the next
request. HTTP requests reuse a resolution through the principal cache
(``identity/access/principal_cache.py``), which drops it on any such change.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.errors import Unauthorized
from hostplane.core.principal import ANONYMOUS, Principal
from hostplane.core.runtime import Runtime
from hostplane.core.security.tokens import TokenInvalid, token_kid, unverified_claims
from hostplane.identity.auth.keys import key_ring
from hostplane.identity.auth.models import AuthSession
from hostplane.identity.roles.service import effective_permissions, two_factor_required
from hostplane.identity.users.models import User

if TYPE_CHECKING:
    # Only for annotations: services that authenticate credentials given
    # elsewhere than in a request (SFTP) must not pull in the web framework.
    from starlette.requests import HTTPConnection

API_KEY_PREFIX = "hp_"


class InvalidToken(Unauthorized):
    code = "INVALID_TOKEN"


def bearer_token(connection: HTTPConnection) -> str | None:
    scheme, _, value = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    # Browsers cannot set headers on a WebSocket: /ws?token=... as Catalyst documents.
    if connection.scope["type"] == "websocket":
        return connection.query_params.get("token") or None
    return None


async def _verify(runtime: Runtime, token: str) -> dict[str, object]:
    ring = await key_ring(runtime)
    try:
        return ring.verify(token)
    except TokenInvalid as first:
        kid = token_kid(token)
        if kid is None or kid in ring.kids:
            raise InvalidToken("Invalid token") from first
    # Signed by a key this process has not loaded: another replica may have
    # rotated a moment ago.
    fresh = await key_ring(runtime, unknown_kid=kid)
    try:
        return fresh.verify(token)
    except TokenInvalid as exc:
        raise InvalidToken("Invalid token") from exc


async def user_principal(runtime: Runtime, claims: dict[str, object]) -> Principal:
    user_id, session_id = str(claims.get("sub")), str(claims.get("sid"))
    async with runtime.unit_of_work(read_only=True) as session:
        row = (
            await session.execute(
                select(User, AuthSession)
                .join(AuthSession, AuthSession.user_id == User.id)
                .where(User.id == user_id, AuthSession.id == session_id)
            )
        ).first()
        if row is None:
            raise InvalidToken("Invalid token")
        user, auth_session = row
        if auth_session.revoked_at is not None or auth_session.expires_at <= utcnow():
            raise InvalidToken("This session has ended; log in again")
        principal = await _active_user_principal(session, user)
    return dataclasses.replace(
        principal,
        session_id=auth_session.id,
        expires_at=min(_exp(claims), auth_session.expires_at.timestamp()),
    )


async def _active_user_principal(session: AsyncSession, user: User) -> Principal:
    """``user`` as a caller with the permissions their roles give now (none until a
    required second factor is set up). Raises ``Unauthorized`` unless active."""
    if user.status != "active":
        raise Unauthorized("This account is not active", code="ACCOUNT_DISABLED")
    permissions = await effective_permissions(session, user.id)
    needs_two_factor = not user.two_factor_enabled and await two_factor_required(session, user.id)
    return Principal(
        kind="user",
        id=user.id,
        user_id=user.id,
        tenant_id=user.tenant_id,
        permissions=frozenset() if needs_two_factor else permissions,
        display_name=user.username,
        needs_two_factor=needs_two_factor,
    )


async def acting_user(runtime: Runtime, user_id: str) -> Principal:
    """``user_id`` as a caller, with their roles as they are now: for work done on a
    user's behalf without a request (a scheduled task's run). Raises
    ``Unauthorized`` when the user no longer exists or is not active."""
    async with runtime.unit_of_work(read_only=True) as session:
        user = await session.get(User, user_id)
        if user is None:
            raise Unauthorized("The user no longer exists", code="ACCOUNT_DISABLED")
        return await _active_user_principal(session, user)


def _exp(claims: dict[str, object]) -> float:
    exp = claims.get("exp")
    # Verification has refused a token without a numeric ``exp`` already.
    return float(exp) if isinstance(exp, int | float) else 0.0


async def authenticate(connection: HTTPConnection, runtime: Runtime) -> Principal:
    token = bearer_token(connection)
    if token is None:
        return ANONYMOUS
    ip = connection.client.host if connection.client else None
    return await authenticate_credential(runtime, token, ip=ip)


async def authenticate_credential(runtime: Runtime, token: str, *, ip: str | None) -> Principal:
    """The caller ``token`` (an access token or an API key) stands for.

    The one check behind every request and every SFTP login: a token's
    signature, its login session and the user's status (a ban ends it at
    once), or an API key's secret, expiry, address allowlist and creator.
    Raises :class:`InvalidToken` (or ``Unauthorized`` for an inactive account);
    another issuer's token yields the anonymous caller.
    """
    if token.startswith(API_KEY_PREFIX):
        from hostplane.identity.api_keys.service import authenticate_api_key

        async with runtime.unit_of_work(read_only=True) as session:
            principal = await authenticate_api_key(session, token, ip=ip)
        if principal is None:
            raise InvalidToken("Invalid API key")
        return principal
    if not _issued_here(runtime, token):
        # Another issuer's token (sent to POST /api/auth/sync, say) is not a
        # credential here: the caller is anonymous, and protected routes say 401.
        return ANONYMOUS
    claims = await _verify(runtime, token)
    return await user_principal(runtime, claims)


def _issued_here(runtime: Runtime, token: str) -> bool:
    try:
        issuer = unverified_claims(token).get("iss")
    except TokenInvalid:
        return True  # garbage: let verification refuse it with 401
    return issuer in (None, runtime.settings.identity.issuer)
