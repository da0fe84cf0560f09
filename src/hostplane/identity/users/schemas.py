from __future__ import annotations

from datetime import datetime

from pydantic import Field

from hostplane.core.schemas import ApiInput, ApiModel


class RoleRef(ApiModel):
    id: str
    name: str
    permissions: list[str]


class Profile(ApiModel):
    """``GET /api/users/me`` (SkyPANEL's fields and more)."""

    id: str
    email: str
    username: str
    first_name: str | None
    last_name: str | None
    name: str
    role: str | None
    roles: list[str]
    tenant_id: str
    two_factor_enabled: bool
    created_at: datetime


class ProfileUpdate(ApiInput):
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    username: str | None = Field(default=None, max_length=64)
    current_password: str | None = Field(default=None, max_length=1024)
    new_password: str | None = Field(default=None, max_length=1024)


class _OperatorView(ApiModel):
    id: str
    tenant_id: str
    email: str
    username: str
    name: str
    first_name: str | None
    last_name: str | None
    status: str
    two_factor_enabled: bool
    ban_reason: str | None
    banned_at: datetime | None
    last_login_at: datetime | None
    created_at: datetime


class AdminUser(_OperatorView):
    """A user as operators see it: Catalyst's admin list (roles as objects)."""

    roles: list[RoleRef]


class MPanelUser(_OperatorView):
    """mPanel's user object (``/api/users``): ``roles`` are names, e.g. ``["admin"]``."""

    roles: list[str]


class UserCreate(ApiInput):
    """mPanel ``POST /users``: an operator creates an account."""

    email: str = Field(min_length=3, max_length=320)
    name: str | None = Field(default=None, max_length=200)
    username: str | None = Field(default=None, max_length=64)
    password: str = Field(max_length=1024)
    roles: list[str] = Field(default_factory=lambda: ["customer"], description="Role names.")
    status: str = "active"


class UserUpdate(ApiInput):
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    status: str | None = None
    password: str | None = Field(default=None, max_length=1024)
    roles: list[str] | None = Field(
        default=None,
        max_length=32,
        description="Role names the account holds afterwards (replaces its roles).",
    )


class BanIn(ApiInput):
    reason: str | None = Field(default=None, max_length=500)
