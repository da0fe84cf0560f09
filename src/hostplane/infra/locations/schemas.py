from __future__ import annotations

from datetime import datetime

from pydantic import Field

from hostplane.core.schemas import ApiInput, ApiModel


class LocationOut(ApiModel):
    id: str
    name: str
    created_at: datetime


class LocationCreate(ApiInput):
    name: str = Field(min_length=1, max_length=100)
