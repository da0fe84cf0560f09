"""A server's disk allocation beyond the file manager: backup restores, the usage
the agent reports, and a running server that writes past its allocation."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.runtime import Runtime
from hostplane.infra.servers.models import Server
from hostplane.platform.jobs.worker import Worker
from tests.infra.conftest import Fleet
from tests.support.agents import LiveAgent, live_agents
from tests.support.infra import make_node, make_server, make_template

MB = 2**20
FILL = "sh -c 'head -c 3145728 /dev/zero > fill.bin; exec sleep 60'"


async def allocate(db: AsyncSession, server_id: str, disk_mb: int) -> None:
    await db.execute(update(Server).where(Server.id == server_id).values(allocated_disk_mb=disk_mb))
    await db.commit()


async def row(db: AsyncSession, server_id: str) -> Server:
    await db.commit()
    found = await db.scalar(
        select(Server).where(Server.id == server_id).execution_options(populate_existing=True)
    )
    assert found is not None
    # End the read: SQLite would not let this session write after the panel did.
    await db.commit()
    return found


def tree(folder: Path) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(top, name), folder): Path(top, name).read_bytes()
        for top, _dirs, found in os.walk(folder)
        for name in found
    }


async def wait_for(condition: object, seconds: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not reached within {seconds} s")


class Site:
    def __init__(self, fleet: Fleet, agent: LiveAgent, server: Server) -> None:
        self.fleet = fleet
        self.agent = agent
        self.server_id = server.id
        self.files = agent.server_dir(server.id)


@pytest.fixture
async def site(app: object, db: AsyncSession, fleet: Fleet) -> AsyncIterator[Site]:
    node, secret = await make_node(db, tenant=fleet.tenant, name="disk-node")
    template = await make_template(db, tenant=fleet.tenant, name="Filler", start_command=FILL)
    server = await make_server(
        db, tenant=fleet.tenant, owner=fleet.owner.user, node=node, template=template
    )
    await db.commit()
    async with live_agents(app, [(node.id, secret)]) as [agent]:
        agent.server_dir(server.id).mkdir(parents=True, exist_ok=True)
        yield Site(fleet, agent, server)
        if (await agent.runtime.status(server.id)).running:
            await agent.runtime.kill(server.id)


async def test_a_backup_larger_than_the_allocation_is_not_restored(
    client: httpx.AsyncClient, runtime: Runtime, db: AsyncSession, site: Site
) -> None:
    owner = site.fleet.owner.headers
    url = f"/api/servers/{site.server_id}/backups"
    (site.files / "world").mkdir()
    (site.files / "world" / "region.bin").write_bytes(os.urandom(2 * MB))
    created = await client.post(url, json={"name": "big"}, headers=owner)
    assert created.status_code == 200, created.text
    backup_id = created.json()["data"]["backupId"]
    await Worker(runtime).run_until_idle()

    # The allocation shrank below what the backup holds.
    (site.files / "world" / "region.bin").unlink()
    (site.files / "small.txt").write_bytes(b"kept as it is")
    before = tree(site.files)
    await allocate(db, site.server_id, 1)
    restored = await client.post(f"{url}/{backup_id}/restore", headers=owner)
    assert restored.status_code == 200, restored.text
    job_id = restored.json()["data"]["jobId"]
    await Worker(runtime).run_until_idle()
    job = (await client.get(f"/api/jobs/{job_id}", headers=site.fleet.admin.headers)).json()
    assert job["data"]["status"] == "failed", job
    assert "allocation" in str(job["data"]), job
    assert tree(site.files) == before
    # No staging folder is left next to the server's.
    assert sorted(p.name for p in site.files.parent.iterdir()) == [site.server_id]

    # With room for it, the same backup restores.
    await allocate(db, site.server_id, 10)
    again = await client.post(f"{url}/{backup_id}/restore", headers=owner)
    assert again.status_code == 200, again.text
    await Worker(runtime).run_until_idle()
    assert (site.files / "world" / "region.bin").stat().st_size == 2 * MB


async def test_stats_report_disk_usage_and_a_server_over_its_allocation_is_stopped(
    client: httpx.AsyncClient, db: AsyncSession, site: Site
) -> None:
    owner = site.fleet.owner.headers
    path = f"/api/servers/{site.server_id}"
    agent_runtime = site.agent.runtime

    async def is_running() -> bool:
        return (await agent_runtime.status(site.server_id)).running

    async def stopped() -> bool:
        server = await row(db, site.server_id)
        return server.status in ("stopped", "crashed") and not await is_running()

    async def log_text() -> str:
        logs = await client.get(f"{path}/logs", headers=owner)
        assert logs.status_code == 200, logs.text
        return str(logs.json()["data"])

    # The game writes 3 MB into a 2 MB allocation: the agent measures it,
    # reports it and stops the server, saying why.
    await allocate(db, site.server_id, 2)
    started = await client.post(f"{path}/start", headers=owner)
    assert started.status_code == 200, started.text

    async def usage_reported() -> bool:
        server = await row(db, site.server_id)
        return server.disk_usage_mb is not None and server.disk_usage_mb >= 3

    await wait_for(usage_reported)
    await wait_for(stopped)
    assert "disk allocation" in await log_text()

    # Over its allocation it does not start again: the agent refuses the start,
    # the answer says why, and the server stays stopped.
    refused = await client.post(f"{path}/start", headers=owner)
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["code"] == "DISK_LIMIT_EXCEEDED"
    await wait_for(stopped)
    await asyncio.sleep(1)
    assert not await is_running()
    assert "cannot start" in await log_text()

    # With room, it runs; the resources show its usage and its limit.
    await allocate(db, site.server_id, 10)
    again = await client.post(f"{path}/start", headers=owner)
    assert again.status_code == 200, again.text
    await wait_for(is_running)
    resources = (await client.get(f"{path}/resources", headers=owner)).json()["data"]
    assert resources["diskUsageMb"] >= 3 and resources["diskLimitMb"] == 10, resources
    await asyncio.sleep(1)
    assert await is_running()

    # A restart over a lowered allocation is refused and leaves it stopped.
    await allocate(db, site.server_id, 2)
    restarted = await client.post(f"{path}/restart", headers=owner)
    assert restarted.status_code == 413, restarted.text
    assert restarted.json()["error"]["code"] == "DISK_LIMIT_EXCEEDED"
    await wait_for(stopped)
