"""The first answer given under each idempotency key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.clock import utcnow
from hostplane.core.db.base import Base, IdMixin
from hostplane.core.db.tenancy import TenantScoped


class IdempotencyRecord(IdMixin, TenantScoped, Base):
    """A key as one caller used it on one operation, and what it answered."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "caller", "scope", "key"),)

    # Keys are the caller's own: two users may both send "1".
    caller: Mapped[str] = mapped_column(String(80))
    # The operation, e.g. "billing.top-up": one key on two operations is two keys.
    scope: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    # SHA-256 of the request body in canonical JSON.
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
