from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.db.base import Base, IdMixin, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped


class Location(IdMixin, TenantScoped, TimestampMixin, Base):
    """Where nodes stand: a region or a data centre."""

    __tablename__ = "locations"

    name: Mapped[str] = mapped_column(String(100))
