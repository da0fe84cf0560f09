"""Registration, login (with the second-factor step), refresh and logout."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.errors import Forbidden, NotFound, RateLimited, Unauthorized
from hostplane.core.principal import Principal
from hostplane.core.ratelimit import login_account_key
from hostplane.core.runtime import Runtime
from hostplane.core.security.passwords import hash_password, needs_rehash, verify_password
from hostplane.identity.auth import two_factor
from hostplane.identity.auth.models import LoginChallenge
from hostplane.identity.auth.sessions import (
    InvalidRefreshToken,
    TokenPair,
    revoke_session,
    rotate_refresh_token,
    session_of_refresh_token,
    start_session,
    token_hash,
)
from hostplane.identity.roles.service import two_factor_required
from hostplane.identity.tenants.models import Tenant
from hostplane.identity.tenants.service import DEFAULT_TENANT_SLUG
from hostplane.identity.users.models import User
from hostplane.identity.users.service import create_user, normalise_email
from hostplane.platform.admin import live as live_config
from hostplane.platform.audit import service as audit

CHALLENGE_TTL = timedelta(minutes=5)
CHALLENGE_MAX_ATTEMPTS = 5


class InvalidCredentials(Unauthorized):
    code = "INVALID_CREDENTIALS"

    def __init__(self) -> None:
        super().__init__("Invalid credentials")


class LoginLocked(RateLimited):
    """Too many failed logins for one account, from wherever they came.

    The same answer for an email without an account, so it reveals nothing.
    """

    code = "LOGIN_LOCKED"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many failed logins for this account. Try again in {retry_after} seconds.",
            details={"retryAfter": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


class AccountDisabled(Forbidden):
    code = "ACCOUNT_DISABLED"


class RegistrationClosed(Forbidden):
    code = "REGISTRATION_CLOSED"


class InvalidTwoFactorCode(Unauthorized):
    code = "INVALID_TWO_FACTOR_CODE"
    keep_changes = True  # the failed attempt is counted


@dataclass(frozen=True, slots=True)
class TwoFactorChallenge:
    challenge_token: str
    user_id: str
    expires_in: int


async def tenant_for_login(session: AsyncSession, slug: str | None) -> Tenant:
    tenant = await session.scalar(
        select(Tenant).where(Tenant.slug == (slug or DEFAULT_TENANT_SLUG))
    )
    if tenant is None or tenant.status != "active":
        raise NotFound("tenant", slug)
    return tenant


def ensure_active(user: User) -> None:
    if user.status == "banned":
        raise AccountDisabled("This account is banned", details={"reason": user.ban_reason})
    if user.status != "active":
        raise AccountDisabled("This account is disabled")


async def register(
    session: AsyncSession,
    runtime: Runtime,
    *,
    email: str,
    password: str,
    username: str | None,
    tenant_slug: str | None,
    ip: str | None,
    user_agent: str | None,
) -> tuple[User, TokenPair]:
    """A new customer account, logged in at once."""
    # The runtime configuration (an operator may close sign-up without a restart).
    if not live_config.current(runtime).registration.open:
        raise RegistrationClosed("Registration is closed; ask an administrator for an account")
    tenant = await tenant_for_login(session, tenant_slug)
    user = await create_user(
        session,
        tenant_id=tenant.id,
        email=email,
        password=password,
        username=username,
        role="customer",
    )
    audit_login(session, user, "auth.register")
    return user, await start_session(session, runtime, user, ip=ip, user_agent=user_agent)


async def login(
    session: AsyncSession,
    runtime: Runtime,
    *,
    email: str,
    password: str,
    tenant_slug: str | None,
    ip: str | None,
    user_agent: str | None,
) -> tuple[User, TokenPair | TwoFactorChallenge]:
    """Check the password; return tokens, or a challenge when a second factor is on.

    Unknown emails and wrong passwords look the same, in answer and in time.
    Failures are also counted per account (``rate_limits.login_failures_per_account``):
    when they are spent, :class:`LoginLocked` until the window ends.
    """
    tenant = await tenant_for_login(session, tenant_slug)
    address = normalise_email(email)
    limiter = runtime.rate_limiter
    attempt = await limiter.begin_login(login_account_key(tenant.id, address))
    if attempt is not None and attempt.locked:
        raise LoginLocked(attempt.retry_after)
    guessed_wrong = False
    try:
        user = await session.scalar(
            select(User).where(User.tenant_id == tenant.id, User.email == address)
        )
        if not verify_password(user.password_hash if user else None, password) or user is None:
            guessed_wrong = True
            raise InvalidCredentials
    finally:
        # Only a wrong password is a failure; a right one (whatever happens
        # next) or a fault of ours (the database down) hands the count back.
        await limiter.end_login(attempt, succeeded=not guessed_wrong)
    ensure_active(user)
    if user.password_hash and needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    if user.two_factor_enabled:
        raw = "lc_" + secrets.token_urlsafe(32)
        session.add(
            LoginChallenge(
                tenant_id=user.tenant_id,
                user_id=user.id,
                token_hash=token_hash(raw),
                expires_at=utcnow() + CHALLENGE_TTL,
            )
        )
        await session.flush()
        audit_login(session, user, "auth.login_challenge")
        return user, TwoFactorChallenge(raw, user.id, int(CHALLENGE_TTL.total_seconds()))
    audit_login(session, user, "auth.login")
    return user, await start_session(session, runtime, user, ip=ip, user_agent=user_agent)


async def complete_login(
    session: AsyncSession,
    runtime: Runtime,
    *,
    challenge_token: str,
    code: str | None,
    recovery_code: str | None,
    ip: str | None,
    user_agent: str | None,
) -> tuple[User, TokenPair]:
    """The second step of a login: a TOTP code or a recovery code."""
    challenge = await session.scalar(
        select(LoginChallenge)
        .where(LoginChallenge.token_hash == token_hash(challenge_token))
        .with_for_update()
    )
    now = utcnow()
    if (
        challenge is None
        or challenge.used_at is not None
        or challenge.expires_at <= now
        or challenge.attempts >= CHALLENGE_MAX_ATTEMPTS
    ):
        raise Unauthorized(
            "The login challenge is invalid or expired; log in again", code="INVALID_CHALLENGE"
        )
    user = await session.get(User, challenge.user_id)
    if user is None:
        raise Unauthorized(
            "The login challenge is invalid or expired; log in again", code="INVALID_CHALLENGE"
        )
    ensure_active(user)
    accepted = False
    if code:
        accepted = two_factor.accept_code(runtime, user, code)
    elif recovery_code:
        accepted = await two_factor.use_recovery_code(session, user, recovery_code)
    if not accepted:
        challenge.attempts += 1
        raise InvalidTwoFactorCode("Invalid two-factor code")
    challenge.used_at = now
    audit_login(
        session,
        user,
        "auth.login",
        second_factor="recovery_code" if recovery_code and not code else "totp",
    )
    return user, await start_session(session, runtime, user, ip=ip, user_agent=user_agent)


async def two_factor_setup_required(
    session: AsyncSession, user: User, *, ignore_enabled: bool = False
) -> bool:
    """Whether a role of ``user`` requires two-factor that is not (or, with
    ``ignore_enabled``, would no longer be) set up."""
    if user.two_factor_enabled and not ignore_enabled:
        return False
    return await two_factor_required(session, user.id)


def audit_login(session: AsyncSession, user: User, action: str, **metadata: object) -> None:
    """An audit entry with the user as the actor (the request itself was anonymous)."""
    actor = Principal(kind="user", id=user.id, user_id=user.id, tenant_id=user.tenant_id)
    audit.record(
        session,
        action=action,
        resource_type="user",
        resource_id=user.id,
        actor=actor,
        tenant_id=user.tenant_id,
        metadata=metadata or None,
    )


class RefreshRefused(InvalidRefreshToken):
    keep_changes = True  # a replayed token's session stays revoked


async def refresh(session: AsyncSession, runtime: Runtime, *, refresh_token: str) -> TokenPair:
    # Clients refresh every few minutes: routine, not an auditable change.
    audit.skip_generic(session)
    pair, reason = await rotate_refresh_token(session, runtime, refresh_token)
    if pair is None:
        raise RefreshRefused(
            "Refresh token reuse detected; the session was revoked"
            if reason == "reused"
            else "Invalid or expired refresh token",
            details={"reason": reason},
        )
    return pair


async def logout(
    session: AsyncSession, *, session_id: str | None, refresh_token: str | None
) -> None:
    """Revoke the caller's session (from the access token) and/or a refresh token's session."""
    targets = {session_id} if session_id else set()
    if refresh_token:
        found = await session_of_refresh_token(session, refresh_token)
        if found:
            targets.add(found)
    for target in targets:
        await revoke_session(session, target, reason="logout")


__all__ = [
    "AccountDisabled",
    "InvalidCredentials",
    "LoginLocked",
    "TwoFactorChallenge",
    "complete_login",
    "login",
    "logout",
    "refresh",
    "register",
]
