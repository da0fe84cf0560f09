"""``POST /api/auth/sync``: trust tokens from a configured external identity provider.

The QeinTech document's central auth issues the tokens; hostplane verifies
them (signature through the issuer's JWKS or a shared secret, plus issuer,
audience and expiry), then creates or updates the local user linked to the
token's subject and starts a local session. An existing local account is
linked by email only when the issuer vouches for the email (``email_verified``),
so an issuer that lets people claim any address cannot take accounts over.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.config import ExternalIssuer
from hostplane.core.errors import Conflict, ProviderUnavailable, Unauthorized
from hostplane.core.runtime import Runtime
from hostplane.core.security.tokens import TokenInvalid, unverified_claims
from hostplane.identity.auth.models import ExternalIdentity
from hostplane.identity.auth.service import audit_login, ensure_active, tenant_for_login
from hostplane.identity.auth.sessions import TokenPair, start_session
from hostplane.identity.roles.service import assign_role
from hostplane.identity.users.models import User
from hostplane.identity.users.service import default_username, normalise_email, webhook_data
from hostplane.platform.webhooks.service import emit

log = structlog.get_logger(__name__)

_JWKS_EXTENSION = "identity.external_jwks"
JWKS_TTL_SECONDS = 300.0
JWKS_REFETCH_SECONDS = 30.0
LEEWAY_SECONDS = 30


class ExternalTokenInvalid(Unauthorized):
    code = "INVALID_EXTERNAL_TOKEN"


def _issuer_for(runtime: Runtime, token: str) -> ExternalIssuer:
    try:
        claimed = unverified_claims(token).get("iss")
    except TokenInvalid as exc:
        raise ExternalTokenInvalid("Not a token") from exc
    for issuer in runtime.settings.identity.external_issuers:
        if issuer.issuer == claimed:
            return issuer
    raise ExternalTokenInvalid("Tokens of this issuer are not accepted")


async def _jwks(runtime: Runtime, url: str, *, refresh: bool = False) -> jwt.PyJWKSet:
    cache = runtime.extensions.setdefault(_JWKS_EXTENSION, {})
    if not isinstance(cache, dict):  # our own slot; anything else is a bug
        raise TypeError("identity.external_jwks holds the wrong type")
    now = time.monotonic()
    entry = cache.get(url)
    if entry is not None:
        fetched_at, key_set = entry
        fresh_enough = now - fetched_at < (JWKS_REFETCH_SECONDS if refresh else JWKS_TTL_SECONDS)
        if fresh_enough:
            return key_set  # type: ignore[no-any-return]
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.get(url)
            response.raise_for_status()
            key_set = jwt.PyJWKSet.from_dict(response.json())
    except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
        log.warning("auth.sync.jwks_unavailable", url=url, error=str(exc))
        raise ProviderUnavailable(
            "The identity provider's keys cannot be fetched right now"
        ) from exc
    cache[url] = (now, key_set)
    return key_set


async def verify_external_token(
    runtime: Runtime, token: str
) -> tuple[ExternalIssuer, dict[str, Any]]:
    issuer = _issuer_for(runtime, token)
    try:
        if issuer.shared_secret is not None:
            algorithms = [a for a in issuer.algorithms if a.startswith("HS")] or ["HS256"]
            key: Any = issuer.shared_secret.get_secret_value()
        elif issuer.jwks_url:
            algorithms = [a for a in issuer.algorithms if not a.startswith("HS")]
            kid = jwt.get_unverified_header(token).get("kid")
            key_set = await _jwks(runtime, issuer.jwks_url)
            try:
                key = key_set[str(kid)].key
            except KeyError:
                key = (await _jwks(runtime, issuer.jwks_url, refresh=True))[str(kid)].key
        else:
            raise ExternalTokenInvalid("The issuer has no verification key configured")
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            issuer=issuer.issuer,
            audience=issuer.audience,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except (jwt.InvalidTokenError, KeyError) as exc:
        raise ExternalTokenInvalid(f"Invalid external token: {type(exc).__name__}") from exc
    return issuer, claims


async def sync_user(
    session: AsyncSession, runtime: Runtime, token: str, *, ip: str | None, user_agent: str | None
) -> tuple[User, TokenPair]:
    issuer, claims = await verify_external_token(runtime, token)
    subject = str(claims["sub"])
    email = normalise_email(str(claims.get("email") or ""))
    tenant = await tenant_for_login(session, issuer.tenant)
    link = await session.scalar(
        select(ExternalIdentity).where(
            ExternalIdentity.issuer == issuer.issuer, ExternalIdentity.subject == subject
        )
    )
    user: User | None = await session.get(User, link.user_id) if link else None
    if user is None:
        if not email:
            raise ExternalTokenInvalid("The external token carries no email")
        user = await session.scalar(
            select(User).where(User.tenant_id == tenant.id, User.email == email)
        )
        if user is not None and claims.get("email_verified") is not True:
            raise Conflict(
                "A local account already uses this email; the issuer must verify the email to link it"
            )
        if user is None:
            username = str(claims.get("preferred_username") or default_username(email))
            if await session.scalar(
                select(User.id).where(
                    User.tenant_id == tenant.id, User.username_key == username.lower()
                )
            ):
                username = default_username(email + "x")
            # No password: this account logs in through its issuer.
            user = User(
                tenant_id=tenant.id, email=email, username=username[:64], password_hash=None
            )
            session.add(user)
            await session.flush()
            emit(session, "user.created", webhook_data(user), tenant.id)
            await assign_role(session, user_id=user.id, role_name="customer")
        session.add(
            ExternalIdentity(
                tenant_id=tenant.id, user_id=user.id, issuer=issuer.issuer, subject=subject
            )
        )
    ensure_active(user)
    if email and email != user.email and link is not None:
        clash = await session.scalar(
            select(User.id).where(User.tenant_id == user.tenant_id, User.email == email)
        )
        if clash is None:
            user.email = email
    if isinstance(claims.get("given_name"), str):
        user.first_name = claims["given_name"]
    if isinstance(claims.get("family_name"), str):
        user.last_name = claims["family_name"]
    if link is not None:
        link.last_synced_at = utcnow()
    await session.flush()
    audit_login(session, user, "auth.sync", issuer=issuer.name)
    return user, await start_session(session, runtime, user, ip=ip, user_agent=user_agent)
