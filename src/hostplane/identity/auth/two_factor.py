"""TOTP two-factor authentication with one-time recovery codes.

Enrolment is two steps so a mistyped secret never locks anyone out: ``begin``
stores a pending (sealed) secret and returns it with its ``otpauth://`` URI;
``confirm`` with a valid code switches it on and returns ten recovery codes,
shown once and stored as hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.errors import Conflict, Unauthorized, ValidationFailed
from hostplane.core.runtime import Runtime
from hostplane.core.security import totp
from hostplane.core.security.crypto import SecretBox
from hostplane.core.security.passwords import verify_password
from hostplane.identity.auth.models import RecoveryCode
from hostplane.identity.users.models import User

RECOVERY_CODES = 10


def _box(runtime: Runtime) -> SecretBox:
    return SecretBox(runtime.settings.secret_key.get_secret_value(), "totp-secrets")


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.replace("-", "").strip().lower().encode()).hexdigest()


def _secret(runtime: Runtime, user: User) -> str | None:
    if user.totp_secret_sealed is None:
        return None
    return _box(runtime).open(user.totp_secret_sealed).decode()


def accept_code(runtime: Runtime, user: User, code: str) -> bool:
    """Check a TOTP code; each time step is accepted once (no replay)."""
    secret = _secret(runtime, user)
    if secret is None:
        return False
    step = totp.verify(secret, code, after_step=user.totp_last_step)
    if step is None:
        return False
    user.totp_last_step = step
    return True


async def use_recovery_code(session: AsyncSession, user: User, code: str) -> bool:
    wanted = _code_hash(code)
    for record in await session.scalars(
        select(RecoveryCode).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    ):
        if hmac.compare_digest(record.code_hash, wanted):
            record.used_at = utcnow()
            return True
    return False


async def begin_enrollment(runtime: Runtime, user: User) -> tuple[str, str]:
    """A new pending secret and its provisioning URI."""
    if user.two_factor_enabled:
        raise Conflict("Two-factor authentication is already enabled; disable it first")
    secret = totp.new_secret()
    user.totp_secret_sealed = _box(runtime).seal(secret.encode())
    user.totp_last_step = None
    return secret, totp.provisioning_uri(
        secret, account=user.email, issuer=runtime.settings.identity.issuer
    )


async def confirm_enrollment(
    session: AsyncSession, runtime: Runtime, user: User, code: str
) -> list[str]:
    """Switch two-factor on with a first valid code; return the recovery codes (shown once)."""
    if user.two_factor_enabled:
        raise Conflict("Two-factor authentication is already enabled")
    if user.totp_secret_sealed is None:
        raise Conflict("Start with POST /api/auth/2fa/enable")
    if not accept_code(runtime, user, code):
        raise ValidationFailed("Invalid two-factor code", code="INVALID_TWO_FACTOR_CODE")
    user.totp_enabled_at = utcnow()
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [f"{secrets.token_hex(4)}-{secrets.token_hex(4)}" for _ in range(RECOVERY_CODES)]
    session.add_all(
        RecoveryCode(tenant_id=user.tenant_id, user_id=user.id, code_hash=_code_hash(c))
        for c in codes
    )
    await session.flush()
    return codes


async def disable(
    session: AsyncSession, runtime: Runtime, user: User, *, code: str | None, password: str | None
) -> None:
    """Switch two-factor off; proves presence with a current code or the password."""
    if not user.two_factor_enabled:
        raise Conflict("Two-factor authentication is not enabled")
    proven = (code is not None and accept_code(runtime, user, code)) or (
        password is not None and verify_password(user.password_hash, password)
    )
    if not proven:
        raise Unauthorized(
            "A valid two-factor code or the current password is required",
            code="INVALID_TWO_FACTOR_CODE",
        )
    user.totp_secret_sealed = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
