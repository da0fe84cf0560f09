from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.db.base import Base, IdMixin, IdString, TimestampMixin
from hostplane.core.db.tenancy import TenantOrShared, TenantScoped


class Role(IdMixin, TenantOrShared, TimestampMixin, Base):
    """A set of permission strings; built-in roles have no tenant and are shared by all."""

    __tablename__ = "roles"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        # NULLs are distinct in the unique constraint above, so built-in names
        # (tenant_id IS NULL) need their own partial index to stay unique.
        Index(
            "uq_roles_builtin_name",
            "name",
            unique=True,
            sqlite_where=text("tenant_id IS NULL"),
            postgresql_where=text("tenant_id IS NULL"),
        ),
    )

    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(500), default="")
    permissions: Mapped[list[Any]] = mapped_column(default=list)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    # Higher outranks lower: a caller manages and assigns only roles ranked
    # below their own highest role (the owner, at the top, may assign owner).
    rank: Mapped[int] = mapped_column(Integer, default=0)
    # Holders must use a second factor to log in. On a built-in role this is
    # the platform default; tenants override it in TenantRoleSetting.
    require_two_factor: Mapped[bool] = mapped_column(Boolean, default=False)


class UserRole(Base):
    __tablename__ = "user_roles"

    user_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True
    )


class TenantRoleSetting(IdMixin, TenantScoped, TimestampMixin, Base):
    """A tenant's own setting for a shared built-in role.

    Built-in roles are one row for every tenant, so a tenant's owner cannot
    change that row without changing it for everyone; the one thing a tenant
    may choose about a built-in role (whether it requires a second factor)
    lives here instead.
    """

    __tablename__ = "tenant_role_settings"
    __table_args__ = (UniqueConstraint("tenant_id", "role_id"),)

    role_id: Mapped[str] = mapped_column(
        IdString, ForeignKey("roles.id", ondelete="CASCADE"), index=True
    )
    require_two_factor: Mapped[bool] = mapped_column(Boolean, default=False)
