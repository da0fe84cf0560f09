from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.clock import utcnow
from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped


def _uuid() -> str:
    return str(uuid.uuid4())


class Server(IdMixin, TenantScoped, TimestampMixin, Base):
    """A server placed on a node, built from a template, owned by a user."""

    __tablename__ = "servers"
    __table_args__ = (Index("ix_servers_node_id_status", "node_id", "status"),)

    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    owner_id: Mapped[str | None] = mapped_column(
        IdString, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    node_id: Mapped[str] = mapped_column(IdString, ForeignKey("nodes.id", ondelete="RESTRICT"))
    template_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("templates.id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="stopped", index=True)

    allocated_memory_mb: Mapped[int] = mapped_column(Integer)
    allocated_cpu_cores: Mapped[float] = mapped_column(Float)
    allocated_disk_mb: Mapped[int] = mapped_column(Integer)
    primary_port: Mapped[int | None] = mapped_column(Integer)
    network_mode: Mapped[str] = mapped_column(String(32), default="bridge")
    environment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    container_name: Mapped[str] = mapped_column(String(100))
    container_id: Mapped[str | None] = mapped_column(String(100))

    # The latest resource_stats from the agent.
    cpu_usage: Mapped[float | None] = mapped_column(Float)
    memory_usage_mb: Mapped[int | None] = mapped_column(Integer)
    disk_usage_mb: Mapped[int | None] = mapped_column(Integer)
    network_sent: Mapped[int | None] = mapped_column(BigInteger)
    network_received: Mapped[int | None] = mapped_column(BigInteger)
    stats_at: Mapped[datetime | None] = mapped_column()

    # How many server databases the owner may create; 0: none (set by an operator).
    database_limit: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    restart_policy: Mapped[str] = mapped_column(String(16), default="on-failure")
    max_crash_count: Mapped[int] = mapped_column(Integer, default=5)
    crash_count: Mapped[int] = mapped_column(Integer, default=0)
    last_crash_at: Mapped[datetime | None] = mapped_column()
    # Times of recent crashes (ISO strings), for the crash-loop guard.
    recent_crashes: Mapped[list[Any]] = mapped_column(default=list)
    last_exit_code: Mapped[int | None] = mapped_column(Integer)
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Why the status last changed when it was not asked for (an agent's refusal,
    # a failed install, a state the sweeper ended); cleared by the next change.
    status_reason: Mapped[str | None] = mapped_column(String(500))

    suspended_at: Mapped[datetime | None] = mapped_column()
    suspended_by_user_id: Mapped[str | None] = mapped_column(IdString)
    suspension_reason: Mapped[str | None] = mapped_column(String(500))


class ServerAllocation(IdMixin, TenantScoped, TimestampMixin, Base):
    """A port binding: a host port from the node's pool to a port in the server."""

    __tablename__ = "server_allocations"
    __table_args__ = (
        # A host port belongs to one server of a node, whatever races happen.
        UniqueConstraint("node_id", "host_port"),
        UniqueConstraint("server_id", "container_port"),
    )

    server_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("servers.id", ondelete="CASCADE"), index=True
    )
    node_id: Mapped[str] = mapped_column(IdString, ForeignKey("nodes.id", ondelete="RESTRICT"))
    container_port: Mapped[int] = mapped_column(Integer)
    host_port: Mapped[int] = mapped_column(Integer)
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)


class ServerLog(TenantScoped, Base):
    """One line of console output; ``seq`` orders lines and pages backwards (``before``)."""

    __tablename__ = "server_logs"
    __table_args__ = (Index("ix_server_logs_server_id_seq", "server_id", "seq"),)

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    server_id: Mapped[str] = mapped_column(IdString, ForeignKey("servers.id", ondelete="CASCADE"))
    stream: Mapped[str] = mapped_column(String(16))
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
