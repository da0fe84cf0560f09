from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped


class DatabaseHost(IdMixin, TenantScoped, TimestampMixin, Base):
    """A MariaDB, MySQL or PostgreSQL server the panel creates server databases on."""

    __tablename__ = "database_hosts"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(100))
    engine: Mapped[str] = mapped_column(String(16))  # mariadb | mysql | postgresql
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    # The address shown to customers when it differs from the one the panel uses.
    public_host: Mapped[str | None] = mapped_column(String(255))
    username: Mapped[str] = mapped_column(String(100))
    # Sealed with the panel's key (SecretBox, purpose "database-hosts"); never returned.
    password_sealed: Mapped[str] = mapped_column(Text)
    # MariaDB/MySQL: the host part of created accounts.
    remote_pattern: Mapped[str] = mapped_column(String(255), default="%")
    # None: no limit.
    max_databases: Mapped[int | None] = mapped_column(Integer)
    # Who may use it: servers on these nodes or in these locations; both empty: every server.
    node_ids: Mapped[list[Any]] = mapped_column(default=list)
    location_ids: Mapped[list[Any]] = mapped_column(default=list)


class ServerDatabase(IdMixin, TenantScoped, TimestampMixin, Base):
    """A database and its user on a host, made for one server.

    ``server_id`` has no foreign key on purpose: when a server is deleted its
    rows stay until the ``databases.drop_server`` job has dropped the
    databases on their hosts, so a host that is down then is retried later.
    """

    __tablename__ = "server_databases"
    __table_args__ = (
        UniqueConstraint("host_id", "name"),
        UniqueConstraint("host_id", "username"),
        Index("ix_server_databases_server_id", "server_id"),
    )

    server_id: Mapped[str] = mapped_column(IdString)
    host_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("database_hosts.id", ondelete="RESTRICT"), index=True
    )
    # The real name on the host: s{server short id}_{requested name}.
    name: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(32))
    password_sealed: Mapped[str] = mapped_column(Text)
    # active | deleting (its server is gone; the drop is pending)
    status: Mapped[str] = mapped_column(String(16), default="active")
    last_error: Mapped[str | None] = mapped_column(Text)
