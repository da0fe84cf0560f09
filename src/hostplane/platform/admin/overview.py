"""``/api/admin/stats`` and ``/api/admin/health``: the fleet at a glance.

Figures are computed on request from the rows of the caller's tenant (the
session is confined to it) and from what the agents last reported: the
servers' ``resource_stats`` and the nodes' ``health_report``. These are
read-only aggregates across domains, kept here in one place rather than as
a counting function in each domain.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.runtime import Runtime
from hostplane.identity.users.models import User
from hostplane.infra.nodes import service as nodes
from hostplane.infra.nodes.models import Node
from hostplane.infra.servers.lifecycle import LIVE
from hostplane.infra.servers.models import Server
from hostplane.platform.admin import live
from hostplane.platform.admin.schemas import (
    DiskHealth,
    Health,
    JobsHealth,
    NodeHealth,
    PartState,
    Stats,
)
from hostplane.platform.jobs import repository as jobs_repository
from hostplane.platform.jobs.models import Job

PROBE_TIMEOUT_SECONDS = 2.0
# A worker heartbeats every 15 s; three missed beats mean nobody serves the queue.
WORKER_SILENCE = timedelta(seconds=45)
# The data folder holds the database (embedded), logs and backups in transit.
DISK_LOW_PERCENT = 10.0
DISK_LOW_MB = 1024
DISK_CRITICAL_MB = 100


async def stats(session: AsyncSession) -> Stats:
    rows = await session.execute(select(Server.status, func.count()).group_by(Server.status))
    by_status: dict[str, int] = {row[0]: row[1] for row in rows}
    live_filter = Server.status.in_(LIVE)
    server_row = (
        await session.execute(
            select(
                func.coalesce(func.sum(Server.allocated_memory_mb), 0),
                func.coalesce(func.sum(Server.allocated_cpu_cores), 0.0),
                func.coalesce(
                    func.sum(Server.memory_usage_mb).filter(live_filter),
                    0,
                ),
                func.coalesce(func.sum(Server.cpu_usage).filter(live_filter), 0.0),
            )
        )
    ).one()
    found_nodes = (await session.scalars(select(Node))).all()
    now = utcnow()
    total_users = await session.scalar(select(func.count()).select_from(User)) or 0
    return Stats(
        total_servers=sum(by_status.values()),
        running_servers=by_status.get("running", 0),
        total_nodes=len(found_nodes),
        online_nodes=sum(1 for node in found_nodes if nodes.is_online(node, now=now)),
        total_users=total_users,
        total_memory_mb=sum(node.max_memory_mb for node in found_nodes),
        used_memory_mb=int(server_row[2] or 0),
        total_cpu_cores=round(sum(node.max_cpu_cores for node in found_nodes), 2),
        used_cpu_cores=round(float(server_row[3] or 0) / 100, 2),
        allocated_memory_mb=int(server_row[0]),
        allocated_cpu_cores=round(float(server_row[1]), 2),
        suspended_servers=by_status.get("suspended", 0),
        servers_by_status=by_status,
    )


async def _database_ok(runtime: Runtime) -> bool:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS), runtime.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any failure means "down"; the log has the reason
        return False
    return True


async def _bus_ok(runtime: Runtime) -> bool:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            return await runtime.bus.ping()
    except Exception:  # noqa: BLE001 - see _database_ok
        return False


async def _jobs(session: AsyncSession) -> JobsHealth:
    now = utcnow()
    counts = await jobs_repository.count_by_status(session)
    backlog = await session.scalar(
        select(func.count()).select_from(Job).where(Job.status == "queued", Job.run_at <= now)
    )
    failed_recently = await session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.status == "failed", Job.finished_at >= now - timedelta(hours=1))
    )
    workers = await jobs_repository.live_workers(session, within=WORKER_SILENCE)
    return JobsHealth(
        status="ok" if workers else "degraded",
        backlog=backlog or 0,
        running=counts.get("running", 0),
        failed=counts.get("failed", 0),
        failed_last_hour=failed_recently or 0,
        workers=workers,
    )


def _existing(path: Path) -> Path:
    # Before its first write the data folder may not exist; its parent's disk is the one.
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _disk(data_dir: Path) -> DiskHealth:
    usage = shutil.disk_usage(_existing(data_dir))
    free_mb = usage.free // 2**20
    total_mb = usage.total // 2**20
    free_percent = round(100 * usage.free / usage.total, 1) if usage.total else 0.0
    status: PartState = "ok"
    if free_mb < DISK_CRITICAL_MB:
        status = "down"
    elif free_mb < DISK_LOW_MB or free_percent < DISK_LOW_PERCENT:
        status = "degraded"
    return DiskHealth(status=status, free_mb=free_mb, total_mb=total_mb, free_percent=free_percent)


async def health(session: AsyncSession, runtime: Runtime) -> Health:
    database_ok, bus_ok = await asyncio.gather(_database_ok(runtime), _bus_ok(runtime))
    now = utcnow()
    node_rows = (await session.scalars(select(Node).order_by(Node.name, Node.id))).all()
    details = [
        NodeHealth(
            id=node.id,
            name=node.name,
            status="online" if nodes.is_online(node, now=now) else "offline",
            agent_connected=node.agent_session_id is not None,
            last_seen_at=node.last_seen_at,
            report=node.health,
        )
        for node in node_rows
    ]
    jobs = await _jobs(session)
    disk = await asyncio.to_thread(_disk, runtime.settings.data_dir)
    degraded = [name for name, ok in (("database", database_ok), ("eventBus", bus_ok)) if not ok]
    degraded += [f"node:{node.name}" for node in details if node.status == "offline"]
    if jobs.status != "ok":
        degraded.append("jobs")
    if disk.status != "ok":
        degraded.append("disk")
    online = sum(1 for node in details if node.status == "online")
    redis_configured = runtime.settings.redis_url is not None
    return Health(
        status=(
            "unhealthy"
            if not database_ok or disk.status == "down"
            else "degraded"
            if degraded
            else "healthy"
        ),
        degraded=degraded,
        database="connected" if database_ok else "disconnected",
        redis=("connected" if bus_ok else "disconnected") if redis_configured else "not_configured",
        event_bus="connected" if bus_ok else "disconnected",
        nodes={"total": len(details), "online": online, "offline": len(details) - online},
        node_details=details,
        jobs=jobs,
        disk=disk,
        maintenance=live.current(runtime).maintenance.enabled,
        uptime=runtime.uptime_seconds,
    )
