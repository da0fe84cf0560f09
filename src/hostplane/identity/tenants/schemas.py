from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from hostplane.core.schemas import ApiInput, ApiModel


class TenantOut(ApiModel):
    id: str
    name: str
    slug: str
    status: str
    is_platform: bool
    created_at: datetime


class TenantCreate(ApiInput):
    name: str = Field(min_length=1, max_length=200)
    slug: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    status: Literal["active", "suspended"] = "active"
