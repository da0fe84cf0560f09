"""A backup's one-time link is spent when the archive starts flowing: a download
the node could not serve leaves it usable for a retry."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.runtime import Runtime
from hostplane.platform.jobs.worker import Worker
from tests.infra.conftest import Fleet
from tests.support.agents import LiveAgent, live_agents
from tests.support.infra import make_node, make_server


@pytest.fixture
async def placed(
    app: object, db: AsyncSession, fleet: Fleet
) -> AsyncIterator[tuple[LiveAgent, str]]:
    node, secret = await make_node(db, tenant=fleet.tenant, name="backup-node")
    server = await make_server(
        db, tenant=fleet.tenant, owner=fleet.owner.user, node=node, template=fleet.template
    )
    await db.commit()
    async with live_agents(app, [(node.id, secret)]) as [agent]:
        agent.server_dir(server.id).mkdir(parents=True, exist_ok=True)
        (agent.server_dir(server.id) / "world.dat").write_bytes(b"world" * 100)
        yield agent, server.id


async def test_a_failed_backup_download_leaves_its_link_usable(
    client: httpx.AsyncClient, runtime: Runtime, fleet: Fleet, placed: tuple[LiveAgent, str]
) -> None:
    agent, server_id = placed
    owner = fleet.owner.headers
    url = f"/api/servers/{server_id}/backups"
    created = await client.post(url, json={"name": "nightly"}, headers=owner)
    assert created.status_code in (200, 201, 202), created.text
    backup_id = created.json()["data"]["backupId"]
    await Worker(runtime).run_until_idle()
    link = await client.get(f"{url}/{backup_id}/download", headers=owner)
    assert link.status_code == 200, link.text
    target = link.json()["data"]["url"]

    archive = agent.data_dir / "backups" / server_id / f"{backup_id}.tar.zst"
    aside = archive.with_name("aside")
    archive.rename(aside)
    missing = await client.get(target)
    assert missing.status_code == 404, missing.text
    aside.rename(archive)

    retried = await client.get(target)
    assert retried.status_code == 200, retried.text
    assert retried.content == archive.read_bytes()
    spent = await client.get(target)
    assert spent.status_code == 410
    assert spent.json()["error"]["code"] == "LINK_USED"
