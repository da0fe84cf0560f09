from __future__ import annotations

from datetime import datetime

from pydantic import Field

from hostplane.core.schemas import ApiInput, ApiModel
from hostplane.identity.roles.builtin import MAX_CUSTOM_RANK

_PERMISSIONS_HELP = (
    "Permission strings from `GET /api/permissions`, or the wildcards `*` and `prefix.*`. "
    "You can grant only permissions you hold."
)
_RANK_HELP = (
    f"Seniority, 0 to {MAX_CUSTOM_RANK} (the owner is 100). "
    "It must be below your own highest role's rank."
)


class RoleOut(ApiModel):
    id: str
    tenant_id: str | None = Field(description="`null` for built-in roles, shared by every tenant.")
    name: str
    description: str
    permissions: list[str]
    rank: int
    require_two_factor: bool = Field(
        description="Holders must log in with a second factor (for built-in roles: "
        "this tenant's setting)."
    )
    builtin: bool
    created_at: datetime
    updated_at: datetime


class RoleCreate(ApiInput):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=500)
    permissions: list[str] = Field(
        default_factory=list, max_length=500, description=_PERMISSIONS_HELP
    )
    rank: int = Field(default=0, ge=0, le=MAX_CUSTOM_RANK, description=_RANK_HELP)
    require_two_factor: bool = False


class RoleUpdate(ApiInput):
    """Fields to change; omitted fields keep their value."""

    name: str | None = Field(default=None, min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=500)
    permissions: list[str] | None = Field(
        default=None, max_length=500, description=_PERMISSIONS_HELP
    )
    rank: int | None = Field(default=None, ge=0, le=MAX_CUSTOM_RANK, description=_RANK_HELP)
    require_two_factor: bool | None = None


class RoleAssignment(ApiInput):
    role_id: str = Field(min_length=1, max_length=64)
