from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.clock import utcnow
from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped

KEY_PREFIX = "hp_"
PUBLIC_ID_LENGTH = 8

ApiKeyStatus = Literal["active", "revoked", "expired"]


class ApiKey(IdMixin, TenantScoped, TimestampMixin, Base):
    """A credential shown once; only the SHA-256 of its secret is kept."""

    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(100))
    # The non-secret part of the key ("hp_<public_id>_<secret>"). Unique across
    # tenants because a presented key is looked up by it before the tenant is known.
    public_id: Mapped[str] = mapped_column(String(PUBLIC_ID_LENGTH), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    # Addresses and networks the key may be used from; empty means anywhere.
    allowed_ips: Mapped[list[Any]] = mapped_column(default=list)
    # Kept (as NULL) when the creator is deleted, so the listing still shows
    # the key; a key without a creator never authenticates.
    created_by_id: Mapped[str | None] = mapped_column(
        IdString, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    expires_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()

    @property
    def prefix(self) -> str:
        """What a listing shows of the key: enough to recognise it, nothing to use."""
        return f"{KEY_PREFIX}{self.public_id}"

    @property
    def status(self) -> ApiKeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= utcnow():
            return "expired"
        return "active"
