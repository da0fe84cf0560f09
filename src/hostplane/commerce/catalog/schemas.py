from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field

from hostplane.core.schemas import ApiInput, ApiModel

CurrencyType = Literal["coins", "credits"]
# Bounded so a typo (five extra zeros) is refused rather than sold.
MAX_PRICE = Decimal("10000000")
MAX_IDS = 100


class PlanResources(ApiModel):
    memory_mb: int = Field(ge=16, le=10_000_000)
    cpu_cores: float = Field(gt=0, le=1024)
    disk_mb: int = Field(ge=16, le=100_000_000)
    databases: int = Field(default=0, ge=0, le=1000)
    backups: int = Field(default=0, ge=0, le=1000)
    allocations: int = Field(default=1, ge=1, le=100, description="Ports, the primary included.")


class PlanPlacement(ApiModel):
    location_ids: list[str] = Field(default_factory=list, max_length=MAX_IDS)
    node_ids: list[str] = Field(default_factory=list, max_length=MAX_IDS)


class TemplateRef(ApiModel):
    id: str
    name: str


class PlanOut(ApiModel):
    id: str
    name: str
    description: str | None
    currency_type: CurrencyType
    currency: str = Field(description="COINS, or the ISO code of credits (e.g. USD).")
    price: int | float = Field(description="Per period: credits with decimals, coins whole.")
    price_minor: int = Field(description="The same price in minor units (cents; coins).")
    period_days: int
    resources: PlanResources
    template: TemplateRef
    placement: PlanPlacement = Field(
        description="Where servers of the plan are placed; empty lists: any node."
    )
    active: bool
    created_at: datetime
    updated_at: datetime


class PlanResourcesIn(ApiInput, PlanResources):
    pass


class PlanPlacementIn(ApiInput, PlanPlacement):
    pass


class PlanCreate(ApiInput):
    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=2000)
    currency_type: CurrencyType
    price: Decimal = Field(
        ge=0, le=MAX_PRICE, description="Major units: 4.99 credits, 100 coins (whole)."
    )
    period_days: int = Field(default=30, ge=1, le=3650)
    resources: PlanResourcesIn
    template_id: str = Field(min_length=1, max_length=64)
    placement: PlanPlacementIn = Field(default_factory=PlanPlacementIn)
    active: bool = True


class PlanUpdate(ApiInput):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=2000)
    currency_type: CurrencyType | None = None
    price: Decimal | None = Field(default=None, ge=0, le=MAX_PRICE)
    period_days: int | None = Field(default=None, ge=1, le=3650)
    resources: PlanResourcesIn | None = None
    template_id: str | None = Field(default=None, min_length=1, max_length=64)
    placement: PlanPlacementIn | None = None
    active: bool | None = None
