from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped

DEFAULT_PORT_RANGE = (25565, 25764)
# Overallocation is a percentage over the node's maximum (Pterodactyl's
# meaning): 0 = exactly the maximum, 50 = 1.5 times it, -1 = no limit.
UNLIMITED = -1
DEFAULT_ROLE = "node"


class Node(IdMixin, TenantScoped, TimestampMixin, Base):
    """A machine running the agent. Its secret and deployment token are kept as SHA-256."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    location_id: Mapped[str | None] = mapped_column(
        IdString, ForeignKey("locations.id", ondelete="SET NULL"), index=True
    )
    hostname: Mapped[str] = mapped_column(String(255))
    public_address: Mapped[str] = mapped_column(String(255))
    max_memory_mb: Mapped[int] = mapped_column(Integer)
    max_cpu_cores: Mapped[float] = mapped_column(Float)
    max_disk_mb: Mapped[int] = mapped_column(Integer)
    memory_overallocate: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    disk_overallocate: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cpu_overallocate: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # mPanel's host role (e.g. "game", "control"); free text for operators.
    role: Mapped[str] = mapped_column(String(32), default=DEFAULT_ROLE, server_default=DEFAULT_ROLE)
    # The pool of host ports servers on this node are given.
    port_range_start: Mapped[int] = mapped_column(Integer, default=DEFAULT_PORT_RANGE[0])
    port_range_end: Mapped[int] = mapped_column(Integer, default=DEFAULT_PORT_RANGE[1])

    secret_hash: Mapped[str] = mapped_column(String(64))
    deployment_token_hash: Mapped[str | None] = mapped_column(String(64))
    deployment_token_expires_at: Mapped[datetime | None] = mapped_column()

    last_seen_at: Mapped[datetime | None] = mapped_column()
    health: Mapped[dict[str, Any] | None] = mapped_column()
    # The agent session currently connected (set at handshake, cleared when its
    # socket closes); ``None`` means offline whatever ``last_seen_at`` says.
    agent_session_id: Mapped[str | None] = mapped_column(IdString)


class PendingServerDelete(IdMixin, TenantScoped, TimestampMixin, Base):
    """A deleted server whose files and container the node has not removed yet.

    Written with the server's deletion; sent to the agent when it (re)connects
    and by the sweeper while it is connected; removed once the agent confirms.
    """

    __tablename__ = "pending_server_deletes"
    __table_args__ = (UniqueConstraint("node_id", "server_id"),)

    node_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("nodes.id", ondelete="CASCADE"), index=True
    )
    # No foreign key: the server row is gone by then.
    server_id: Mapped[str] = mapped_column(IdString)
    server_uuid: Mapped[str] = mapped_column(String(36))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
