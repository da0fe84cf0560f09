from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from hostplane.core.schemas import ApiModel


class ProbeOut(ApiModel):
    status: Literal["ok", "down"]
    latency_ms: float


class BusOut(ProbeOut):
    kind: Literal["redis", "memory"]


class PanelProcessOut(ApiModel):
    pid: int
    version: str
    uptime_seconds: int
    cpu_seconds: float
    max_rss_bytes: int
    load_average: list[float]


class QueueOut(ApiModel):
    workers: int = Field(description="Workers that reported in the last 45 s.")
    jobs: dict[str, int]


class NodeMetricsOut(ApiModel):
    id: str
    name: str
    status: Literal["online", "offline"]
    last_seen_at: datetime | None
    cpu_percent: float | None
    memory_usage_mb: float | None
    memory_total_mb: float | None
    memory_percent: float | None
    disk_usage_mb: float | None
    disk_total_mb: float | None
    disk_percent: float | None
    container_count: int | None
    uptime_seconds: int | None


class SystemHealthOut(ApiModel):
    status: Literal["ok", "degraded", "down"]
    panel: PanelProcessOut
    database: ProbeOut
    bus: BusOut
    queue: QueueOut
    nodes: list[NodeMetricsOut]


class SystemEventOut(ApiModel):
    id: str
    tenant_id: str | None
    type: str
    subject_id: str | None
    data: dict[str, Any]
    created_at: datetime


class CursorMeta(ApiModel):
    limit: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class CursorEnvelope(BaseModel):
    success: Literal[True] = True
    data: list[SystemEventOut]
    pagination: CursorMeta
