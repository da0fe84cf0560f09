from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped


class Plan(IdMixin, TenantScoped, TimestampMixin, Base):
    """What a server is bought on: its resources, template, placement and price per period."""

    __tablename__ = "plans"

    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    # "coins" (earned) or "credits" (bought): the wallet balance every charge of the plan uses.
    currency_type: Mapped[str] = mapped_column(String(8))
    # Minor units of the currency (whole coins; cents of the credits currency) per period.
    price: Mapped[int] = mapped_column(BigInteger)
    period_days: Mapped[int] = mapped_column(Integer)

    memory_mb: Mapped[int] = mapped_column(Integer)
    cpu_cores: Mapped[float] = mapped_column(Float)
    disk_mb: Mapped[int] = mapped_column(Integer)
    databases: Mapped[int] = mapped_column(Integer, default=0)
    backups: Mapped[int] = mapped_column(Integer, default=0)
    # Ports the server gets at deploy (the primary included).
    allocations: Mapped[int] = mapped_column(Integer, default=1)

    template_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("templates.id", ondelete="RESTRICT"), index=True
    )
    # Where servers of the plan may be placed: empty lists mean any node of the tenant.
    location_ids: Mapped[list[Any]] = mapped_column(default=list)
    node_ids: Mapped[list[Any]] = mapped_column(default=list)
    # A retired plan is not sold any more; servers bought on it keep it and renew on it.
    active: Mapped[bool] = mapped_column(Boolean, default=True)
