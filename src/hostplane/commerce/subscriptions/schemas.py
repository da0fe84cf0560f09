from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from hostplane.core.schemas import ApiInput, ApiModel


class DeployBody(ApiInput):
    plan_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=100)
    environment: dict[str, str] = Field(
        default_factory=dict, max_length=100, description="Variables the template lets you set."
    )
    location_id: str | None = Field(
        default=None, max_length=64, description="One of the plan's locations; any when left out."
    )


class UpgradeBody(ApiInput):
    plan_id: str = Field(min_length=1, max_length=64)


class SubscriptionOut(ApiModel):
    """A server's plan term."""

    id: str
    server_id: str | None = Field(description="Null once the server is gone.")
    plan_id: str
    user_id: str | None
    status: Literal["provisioning", "active", "suspended", "failed", "ended"]
    currency_type: Literal["coins", "credits"]
    expires_at: datetime
    failure_reason: str | None = Field(description="Why the deploy failed and was refunded.")
    created_at: datetime


class DeployOut(ApiModel):
    message: str
    server_id: str
    name: str
    status: str
    plan: str
    plan_id: str
    expires_at: datetime
    subscription: SubscriptionOut
    job_id: str = Field(description="The install job (``GET /api/jobs/{jobId}`` for operators).")
    charged: int | float = Field(description="In the plan's currency (credits with decimals).")


class RenewOut(ApiModel):
    server_id: str
    status: str
    expires_at: datetime
    charged: int | float
    currency_type: Literal["coins", "credits"]
    subscription: SubscriptionOut


class UpgradeOut(ApiModel):
    server_id: str
    plan: str
    plan_id: str
    expires_at: datetime
    charged: int | float = Field(description="In the new plan's currency; 0 when nothing was.")
    credited: int | float = Field(description="Credited back in the old plan's currency.")
    limits_applied: Literal["live", "next_start"] = Field(
        description="When the server runs with the new limits: now, or from its next start."
    )
    allocated_memory_mb: int
    allocated_cpu_cores: float
    allocated_disk_mb: int
    database_limit: int
    subscription: SubscriptionOut


class PaidAllocationOut(ApiModel):
    """QeinTech's automatic port, with what it cost."""

    container_port: int
    host_port: int
    is_primary: bool
    ip: str
    port: int
    charged: int | float
    currency_type: Literal["coins", "credits"]
