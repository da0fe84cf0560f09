"""Host metrics in one answer, and the system event log."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane import __version__
from hostplane.core.errors import ValidationFailed
from hostplane.core.runtime import Runtime
from hostplane.infra.nodes import service as nodes
from hostplane.platform.health.service import PROBE_TIMEOUT_SECONDS, WORKER_SILENCE
from hostplane.platform.jobs import repository as jobs_repository
from hostplane.platform.system.models import SystemEvent

MAX_EVENTS_PAGE = 100


async def _timed(probe: Any) -> dict[str, Any]:
    """Run ``probe`` (bounded); ``{"status", "latencyMs"}``."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            healthy = await probe
    except Exception:  # noqa: BLE001 - any failure means down; the log has details, not the client
        healthy = False
    return {
        "status": "ok" if healthy else "down",
        "latencyMs": round((time.monotonic() - started) * 1000, 2),
    }


async def _database(runtime: Runtime) -> bool:
    async with runtime.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return True


def _process() -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "pid": os.getpid(),
        "version": __version__,
        "uptimeSeconds": 0,
        "cpuSeconds": round(usage.ru_utime + usage.ru_stime, 3),
        # ru_maxrss is in kilobytes on Linux.
        "maxRssBytes": usage.ru_maxrss * 1024,
        "loadAverage": list(os.getloadavg()),
    }


def _node(node: Any) -> dict[str, Any]:
    health: dict[str, Any] = dict(node.health or {})

    def percent(used: str, total: str) -> float | None:
        if not health.get(total):
            return None
        return round(float(health.get(used) or 0) * 100 / float(health[total]), 2)

    return {
        "id": node.id,
        "name": node.name,
        "status": "online" if nodes.is_online(node) else "offline",
        "lastSeenAt": node.last_seen_at,
        "cpuPercent": health.get("cpuPercent"),
        "memoryUsageMb": health.get("memoryUsageMb"),
        "memoryTotalMb": health.get("memoryTotalMb"),
        "memoryPercent": percent("memoryUsageMb", "memoryTotalMb"),
        "diskUsageMb": health.get("diskUsageMb"),
        "diskTotalMb": health.get("diskTotalMb"),
        "diskPercent": percent("diskUsageMb", "diskTotalMb"),
        "containerCount": health.get("containerCount"),
        "uptimeSeconds": health.get("uptimeSeconds"),
    }


async def health(runtime: Runtime, session: AsyncSession) -> dict[str, Any]:
    """The panel process, the database, the bus, the queue and each node (from its agent)."""
    database, bus = await asyncio.gather(_timed(_database(runtime)), _timed(runtime.bus.ping()))
    bus["kind"] = "redis" if runtime.settings.redis_url else "memory"
    workers = await jobs_repository.live_workers(session, within=WORKER_SILENCE)
    jobs = await jobs_repository.count_by_status(session)
    fleet = [_node(node) for node in await nodes.list_nodes(session)]
    process = _process()
    process["uptimeSeconds"] = runtime.uptime_seconds
    down = database["status"] == "down"
    degraded = (
        bus["status"] == "down" or not workers or any(n["status"] == "offline" for n in fleet)
    )
    return {
        "status": "down" if down else ("degraded" if degraded else "ok"),
        "panel": process,
        "database": database,
        "bus": bus,
        "queue": {"workers": workers, "jobs": jobs},
        "nodes": fleet,
    }


@dataclass(frozen=True, slots=True)
class EventFilters:
    type: str | None = None  # an exact type, or a family ending in ".*"
    since: datetime | None = None
    until: datetime | None = None
    tenant_id: str | None = None  # None: every tenant's (platform operators)


async def list_events(
    session: AsyncSession, filters: EventFilters, *, cursor: str | None, limit: int
) -> tuple[Sequence[SystemEvent], str | None]:
    """Events newest first, after ``cursor`` (the last id of the previous page).

    Returns the page and the cursor of the next one (None at the end).
    """
    if limit < 1 or limit > MAX_EVENTS_PAGE:
        raise ValidationFailed(f"limit must be between 1 and {MAX_EVENTS_PAGE}")
    statement = select(SystemEvent).order_by(SystemEvent.id.desc()).limit(limit + 1)
    if cursor is not None:
        statement = statement.where(SystemEvent.id < cursor)
    if filters.type is not None:
        if filters.type.endswith(".*"):
            statement = statement.where(
                SystemEvent.type.startswith(filters.type[:-1], autoescape=True)
            )
        else:
            statement = statement.where(SystemEvent.type == filters.type)
    if filters.since is not None:
        statement = statement.where(SystemEvent.created_at >= filters.since)
    if filters.until is not None:
        statement = statement.where(SystemEvent.created_at < filters.until)
    if filters.tenant_id is not None:
        statement = statement.where(SystemEvent.tenant_id == filters.tenant_id)
    rows = list((await session.scalars(statement)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)
