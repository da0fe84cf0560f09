"""``/api/admin/stats`` and ``/api/admin/health``: figures from live rows and agent reports."""

from datetime import timedelta

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.runtime import Runtime
from hostplane.infra.servers.models import Server
from hostplane.platform.jobs import repository as jobs_repository
from hostplane.platform.jobs.models import Job
from tests.support.factories import make_job
from tests.support.identity import logged_in, other_tenant, platform_tenant
from tests.support.infra import make_node, make_server, make_template


async def _report(db: AsyncSession, server: Server, *, cpu: float, memory_mb: int) -> None:
    await db.execute(
        update(Server)
        .where(Server.id == server.id)
        .values(cpu_usage=cpu, memory_usage_mb=memory_mb, stats_at=utcnow())
    )
    await db.commit()


async def test_stats_are_counted_from_the_rows_and_the_agents_reports(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    admin = await logged_in(client, db, tenant=tenant, role="admin")
    owner = await logged_in(client, db, tenant=tenant)
    up, _ = await make_node(db, tenant=tenant, max_memory_mb=8192, max_cpu_cores=4)
    down, _ = await make_node(db, tenant=tenant, online=False, max_memory_mb=4096, max_cpu_cores=2)
    template = await make_template(db, tenant=tenant)
    running = await make_server(
        db,
        tenant=tenant,
        owner=owner.user,
        node=up,
        template=template,
        status="running",
        memory_mb=2048,
    )
    await _report(db, running, cpu=150.0, memory_mb=900)
    stopped = await make_server(
        db, tenant=tenant, owner=owner.user, node=down, template=template, memory_mb=512
    )
    # A stopped server's last report is history, not usage.
    await _report(db, stopped, cpu=80.0, memory_mb=400)
    await make_server(
        db,
        tenant=tenant,
        owner=owner.user,
        node=up,
        template=template,
        status="suspended",
        memory_mb=256,
    )
    # Another tenant's fleet is not counted.
    away = await other_tenant(db)
    stranger = await logged_in(client, db, tenant=away)
    far, _ = await make_node(db, tenant=away)
    await make_server(
        db,
        tenant=away,
        owner=stranger.user,
        node=far,
        template=await make_template(db, tenant=away),
        status="running",
    )

    response = await client.get("/api/admin/stats", headers=admin.headers)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {
        "totalServers": 3,
        "runningServers": 1,
        "totalNodes": 2,
        "onlineNodes": 1,
        "totalUsers": 2,
        "totalMemoryMb": 12288,
        "usedMemoryMb": 900,
        "totalCpuCores": 6.0,
        "usedCpuCores": 1.5,
        "allocatedMemoryMb": 2048 + 512 + 256,
        "allocatedCpuCores": 3.0,
        "suspendedServers": 1,
        "serversByStatus": {"running": 1, "stopped": 1, "suspended": 1},
    }


async def test_health_names_every_part_at_fault(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    tenant = await platform_tenant(db)
    admin = await logged_in(client, db, tenant=tenant, role="admin")
    await make_node(db, tenant=tenant, name="alpha")
    down, _ = await make_node(db, tenant=tenant, name="beta", online=False)
    await make_job(db, name="health.waiting", tenant=tenant)
    failed = await make_job(db, name="health.failed", tenant=tenant)
    await db.execute(
        update(Job).where(Job.id == failed.id).values(status="failed", finished_at=utcnow())
    )
    await db.commit()

    response = await client.get("/api/admin/health", headers=admin.headers)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "degraded"
    assert data["degraded"] == ["node:beta", "jobs"]
    assert data["database"] == "connected"
    assert data["eventBus"] == "connected"
    assert data["redis"] == "not_configured"
    assert data["nodes"] == {"total": 2, "online": 1, "offline": 1}
    assert [(n["name"], n["status"], n["agentConnected"]) for n in data["nodeDetails"]] == [
        ("alpha", "online", True),
        ("beta", "offline", False),
    ]
    assert data["jobs"] == {
        "status": "degraded",
        "backlog": 1,
        "running": 0,
        "failed": 1,
        "failedLastHour": 1,
        "workers": 0,
    }
    assert data["disk"]["status"] == "ok"
    assert 0 < data["disk"]["freeMb"] <= data["disk"]["totalMb"]
    assert "path" not in data["disk"]
    assert data["maintenance"] is False
    assert isinstance(data["uptime"], int)

    # A worker reports in and the node comes back: healthy.
    async with runtime.unit_of_work() as session:
        await jobs_repository.heartbeat(session, "worker-1")
    await db.execute(
        update(type(down))
        .where(type(down).id == down.id)
        .values(last_seen_at=utcnow() - timedelta(seconds=1), agent_session_id="s1")
    )
    await db.commit()
    data = (await client.get("/api/admin/health", headers=admin.headers)).json()["data"]
    assert data["degraded"] == []
    assert data["status"] == "healthy"
