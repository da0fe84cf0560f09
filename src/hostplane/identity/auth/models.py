from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped


class SigningKeyRecord(IdMixin, TimestampMixin, Base):
    """An Ed25519 key that signs (one at a time) or still verifies access tokens."""

    __tablename__ = "signing_keys"

    # The sealed private key (see core.security.crypto.SecretBox).
    private_key_sealed: Mapped[str] = mapped_column(Text)
    public_key: Mapped[str] = mapped_column(String(64))  # base64url of the raw 32 bytes
    retired_at: Mapped[datetime | None] = mapped_column()
    # A retired key verifies until this moment, then it is dropped from the JWKS.
    not_after: Mapped[datetime | None] = mapped_column()


class AuthSession(IdMixin, TenantScoped, TimestampMixin, Base):
    """One login: the family of rotated refresh tokens and the access tokens they mint."""

    __tablename__ = "auth_sessions"

    user_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    last_used_at: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    revoked_reason: Mapped[str | None] = mapped_column(String(64))


class RefreshToken(IdMixin, TenantScoped, TimestampMixin, Base):
    """An opaque refresh token, stored as a hash, usable once."""

    __tablename__ = "refresh_tokens"

    session_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("auth_sessions.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column()
    # Set when exchanged for a new one; presenting it again is reuse.
    used_at: Mapped[datetime | None] = mapped_column()


class LoginChallenge(IdMixin, TenantScoped, TimestampMixin, Base):
    """The step between a correct password and a correct second factor."""

    __tablename__ = "login_challenges"

    user_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column()
    attempts: Mapped[int] = mapped_column(default=0)
    used_at: Mapped[datetime | None] = mapped_column()


class RecoveryCode(IdMixin, TenantScoped, TimestampMixin, Base):
    """A one-time two-factor recovery code, stored as a hash."""

    __tablename__ = "recovery_codes"

    user_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None] = mapped_column()


class ExternalIdentity(IdMixin, TenantScoped, TimestampMixin, Base):
    """A local user's identity at an external issuer (``POST /api/auth/sync``)."""

    __tablename__ = "external_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    user_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    last_synced_at: Mapped[datetime | None] = mapped_column()
