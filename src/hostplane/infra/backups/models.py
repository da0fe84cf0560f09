from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped


class Backup(IdMixin, TenantScoped, TimestampMixin, Base):
    """One archive of a server's files, stored on ``node_id`` (where it was made)."""

    __tablename__ = "backups"
    __table_args__ = (Index("ix_backups_server_id_created_at", "server_id", "created_at"),)

    server_id: Mapped[str] = mapped_column(IdString, ForeignKey("servers.id", ondelete="CASCADE"))
    node_id: Mapped[str] = mapped_column(IdString, ForeignKey("nodes.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(100))
    # pending | in_progress | completed | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(80))
    error: Mapped[str | None] = mapped_column(Text)
    created_by_user_id: Mapped[str | None] = mapped_column(IdString)
    completed_at: Mapped[datetime | None] = mapped_column()
