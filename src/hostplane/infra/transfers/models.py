from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped


class ServerTransfer(IdMixin, TenantScoped, TimestampMixin, Base):
    """One move of a server from ``source_node_id`` to ``target_node_id``.

    ``status``: ``pending`` -> ``copying`` -> ``committing`` -> ``completed``,
    or ``failed`` from any of them (the server stays on the source).
    ``active_server_id`` holds the server id while the transfer is under way
    and NULL after: its unique constraint allows one live transfer per server.
    ``route`` is set once the copy is verified.
    """

    __tablename__ = "server_transfers"

    server_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("servers.id", ondelete="CASCADE"), index=True
    )
    active_server_id: Mapped[str | None] = mapped_column(IdString, unique=True)
    source_node_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("nodes.id", ondelete="RESTRICT")
    )
    target_node_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("nodes.id", ondelete="RESTRICT")
    )
    status: Mapped[str] = mapped_column(String(16), default="pending")
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    archive_bytes: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(80))
    # How the archive travelled: ``direct`` (node to node) or ``relayed`` (through the panel).
    route: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    requested_by_user_id: Mapped[str | None] = mapped_column(IdString)
    finished_at: Mapped[datetime | None] = mapped_column()
