from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped


class ResourceGrant(IdMixin, TenantScoped, TimestampMixin, Base):
    """Permissions one user holds on one resource (a server's subuser, say)."""

    __tablename__ = "resource_grants"
    __table_args__ = (UniqueConstraint("resource_type", "resource_id", "user_id"),)

    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    permissions: Mapped[list[Any]] = mapped_column(default=list)
    granted_by: Mapped[str | None] = mapped_column(IdString)
