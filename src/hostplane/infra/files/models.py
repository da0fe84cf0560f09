from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.clock import utcnow
from hostplane.core.db.base import Base, IdString
from hostplane.core.db.tenancy import TenantScoped


class FileLinkUse(TenantScoped, Base):
    """A one-time file link that has been used.

    The link's id is the primary key: the second use of a link cannot insert
    its row again, so "once" holds between replicas and concurrent requests
    without any lock of our own.
    """

    __tablename__ = "file_link_uses"

    link_id: Mapped[str] = mapped_column(IdString, primary_key=True)
    server_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("servers.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(IdString)
    purpose: Mapped[str] = mapped_column(String(16))
    used_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Kept until the link could no longer be presented anyway; then pruned.
    expires_at: Mapped[datetime] = mapped_column(index=True)
