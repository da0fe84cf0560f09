"""A server's disk allocation travels with it: the target node refuses more."""

from __future__ import annotations

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.runtime import Runtime
from hostplane.infra.servers.models import Server
from hostplane.platform.jobs.worker import Worker
from tests.infra.test_transfers_api import Pair, pair, route, server_row
from tests.support.trees import snapshot

__all__ = ["pair", "route"]
MB = 2**20


async def test_a_server_larger_than_its_allocation_is_not_imported_on_the_target(
    client: httpx.AsyncClient, runtime: Runtime, db: AsyncSession, pair: Pair
) -> None:
    sid = pair.server_id
    folder = pair.source.server_dir(sid)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "world.bin").write_bytes(bytes(2 * MB))
    before = snapshot(folder)
    await db.execute(update(Server).where(Server.id == sid).values(allocated_disk_mb=1))
    await db.commit()
    admin = pair.fleet.admin.headers

    started = await client.post(
        f"/api/servers/{sid}/transfer", json={"targetNodeId": pair.target_node_id}, headers=admin
    )
    assert started.status_code == 200, started.text
    await Worker(runtime).run_until_idle()

    history = (await client.get(f"/api/servers/{sid}/transfers", headers=admin)).json()["data"]
    assert history[0]["status"] == "failed", history
    assert "allocation" in (history[0]["error"] or ""), history
    server = await server_row(db, sid)
    assert server.node_id == pair.source_node_id
    assert snapshot(folder) == before
    # Nothing stayed on the target: neither files nor a staged copy.
    assert not pair.target.server_dir(sid).exists()
    assert not any((pair.target.data_dir / "transfers").glob("*/*"))
