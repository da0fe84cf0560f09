from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from hostplane.core.schemas import ApiInput, ApiModel
from hostplane.infra.nodes.models import DEFAULT_ROLE, UNLIMITED


class NodeServerSummary(ApiModel):
    id: str
    name: str
    status: str


class NodeOut(ApiModel):
    """A node. Its secret is never shown again after creation or a token reset."""

    id: str
    name: str
    description: str | None
    location_id: str | None
    hostname: str
    public_address: str
    max_memory_mb: int
    max_cpu_cores: float
    max_disk_mb: int
    memory_overallocate: int
    disk_overallocate: int
    cpu_overallocate: int
    port_range_start: int
    port_range_end: int
    is_online: bool
    last_seen_at: datetime | None
    # mPanel's infrastructure-server fields.
    role: str
    ip: str = Field(description="The public address (mPanel's name).")
    status: Literal["online", "offline"]
    last_heartbeat_at: datetime | None = Field(description="The same as lastSeenAt.")
    health: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime
    servers: list[NodeServerSummary] = Field(default_factory=list)


class NodeCreated(ApiModel):
    id: str
    name: str
    secret: str = Field(description="Shown once; the panel keeps only its hash.")


class DeploymentToken(ApiModel):
    deployment_token: str
    secret: str
    deploy_url: str
    expires_at: datetime


class _PortRange(ApiInput):
    port_range_start: int | None = Field(default=None, ge=1024, le=65535)
    port_range_end: int | None = Field(default=None, ge=1024, le=65535)

    @model_validator(mode="after")
    def _ordered(self) -> _PortRange:
        if (
            self.port_range_start is not None
            and self.port_range_end is not None
            and self.port_range_end < self.port_range_start
        ):
            raise ValueError("portRangeEnd must not be below portRangeStart")
        return self


Overallocate = Annotated[
    int,
    Field(
        ge=UNLIMITED,
        le=10_000,
        description="Percent over the maximum that placements may use; -1 = unlimited.",
    ),
]
Role = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]


class NodeCreate(_PortRange):
    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=2000)
    location_id: str | None = None
    hostname: str = Field(min_length=1, max_length=255)
    public_address: str = Field(min_length=1, max_length=255)
    max_memory_mb: int = Field(gt=0)
    max_cpu_cores: float = Field(gt=0)
    max_disk_mb: int = Field(default=102400, gt=0)
    memory_overallocate: Overallocate = 0
    disk_overallocate: Overallocate = 0
    cpu_overallocate: Overallocate = 0
    role: Role = DEFAULT_ROLE


class NodeUpdate(_PortRange):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=2000)
    location_id: str | None = None
    hostname: str | None = Field(default=None, min_length=1, max_length=255)
    public_address: str | None = Field(default=None, min_length=1, max_length=255)
    max_memory_mb: int | None = Field(default=None, gt=0)
    max_cpu_cores: float | None = Field(default=None, gt=0)
    max_disk_mb: int | None = Field(default=None, gt=0)
    memory_overallocate: Overallocate | None = None
    disk_overallocate: Overallocate | None = None
    cpu_overallocate: Overallocate | None = None
    role: Role | None = None
