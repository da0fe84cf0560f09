"""``/api/admin/servers``: the fleet listing, forced suspension and forced deletion."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.infra.nodes.models import PendingServerDelete
from hostplane.infra.servers.models import Server
from tests.infra.conftest import Fleet
from tests.infra.test_commands import _agent_site, _reconnect, until
from tests.support.agents import live_agents
from tests.support.identity import logged_in
from tests.support.infra import make_node, make_server, set_status
from tests.support.trees import write_tree


async def test_the_listing_names_owner_and_node_and_filters(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    other_node, _ = await make_node(
        db, tenant=fleet.tenant, name="second", port_range=(31000, 31010)
    )
    theirs = await make_server(
        db,
        tenant=fleet.tenant,
        owner=fleet.other.user,
        node=other_node,
        template=fleet.template,
        status="running",
        memory_mb=2048,
    )
    await db.commit()
    await db.execute(update(Server).where(Server.id == theirs.id).values(cpu_usage=45.2))
    await db.commit()

    response = await client.get("/api/admin/servers", headers=fleet.admin.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["pagination"]["total"] == 2
    first = body["data"][0]
    assert first["id"] == theirs.id, "newest first"
    assert first["owner"] == {"id": fleet.other.user.id, "username": fleet.other.user.username}
    assert first["node"] == {"id": other_node.id, "name": "second"}
    assert first["status"] == "running"
    assert first["allocatedMemoryMb"] == 2048
    assert first["cpuUsage"] == 45.2
    assert first["ipAddress"] == other_node.public_address

    async def ids(**params: str) -> list[str]:
        answer = await client.get("/api/admin/servers", params=params, headers=fleet.admin.headers)
        assert answer.status_code == 200, answer.text
        return [item["id"] for item in answer.json()["data"]]

    assert await ids(status="running") == [theirs.id]
    assert await ids(nodeId=fleet.node.id) == [fleet.server.id]
    assert await ids(ownerId=fleet.owner.user.id) == [fleet.server.id]
    assert await ids(limit="1", page="2") == [fleet.server.id]
    bad = await client.get(
        "/api/admin/servers", params={"status": "exploded"}, headers=fleet.admin.headers
    )
    assert bad.status_code == 400

    customer = await client.get("/api/admin/servers", headers=fleet.owner.headers)
    assert customer.status_code == 403


async def test_force_suspend_and_its_repeat(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    node, _ = await make_node(db, tenant=fleet.tenant, online=False, port_range=(32100, 32110))
    server = await make_server(
        db,
        tenant=fleet.tenant,
        owner=fleet.owner.user,
        node=node,
        template=fleet.template,
        status="running",
    )
    path = f"/api/admin/servers/{server.id}/suspend"
    response = await client.post(path, json={"reason": "abuse"}, headers=fleet.admin.headers)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "suspended"
    assert data["suspensionReason"] == "abuse"
    assert data["suspendedByUserId"] == fleet.admin.user.id
    again = await client.post(path, headers=fleet.admin.headers)
    assert again.status_code == 409
    # The owner's own actions are now refused as suspended.
    start = await client.post(f"/api/servers/{server.id}/start", headers=fleet.owner.headers)
    assert start.status_code == 423


async def test_force_delete_removes_a_running_server_of_an_offline_node(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    node, _ = await make_node(db, tenant=fleet.tenant, online=False, port_range=(32200, 32210))
    server = await make_server(
        db,
        tenant=fleet.tenant,
        owner=fleet.owner.user,
        node=node,
        template=fleet.template,
        status="running",
    )
    # The customer's delete keeps the "must be stopped" rule.
    refused = await client.delete(f"/api/servers/{server.id}", headers=fleet.admin.headers)
    assert refused.status_code == 409
    response = await client.delete(f"/api/admin/servers/{server.id}", headers=fleet.admin.headers)
    assert response.status_code == 202, response.text
    assert response.json()["data"] == {
        "message": "Server deleted; its node removes the files when it is back online",
        "serverId": server.id,
        "status": "deleted",
    }
    await db.commit()
    db.expunge_all()
    assert await db.get(Server, server.id) is None
    pending = (await db.scalars(select(PendingServerDelete))).all()
    assert [(p.node_id, p.server_id) for p in pending] == [(node.id, server.id)]
    gone = await client.delete(f"/api/admin/servers/{server.id}", headers=fleet.admin.headers)
    assert gone.status_code == 404


async def test_a_force_deleted_server_is_removed_by_its_agent_when_it_returns(
    app: object, client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    node, secret, server = await _agent_site(db, fleet, name="Forced")
    async with live_agents(app, [(node.id, secret)]) as [agent]:
        folder: Path = agent.server_dir(server.id)
        await asyncio.to_thread(write_tree, folder)
        await agent.stop()

        async def offline() -> bool:
            nodes = (await client.get("/api/nodes", headers=fleet.admin.headers)).json()["data"]
            return not next(n for n in nodes if n["id"] == node.id)["isOnline"]

        await until(offline, within=5)
        # The panel last heard it running: the operator's delete goes through anyway.
        await set_status(db, server, "running")
        deleted = await client.delete(
            f"/api/admin/servers/{server.id}", headers=fleet.admin.headers
        )
        assert deleted.status_code == 202, deleted.text
        assert await asyncio.to_thread(folder.exists)

        connection, task = await _reconnect(agent)
        try:

            async def removed() -> bool:
                await db.commit()
                left = (await db.scalars(select(PendingServerDelete))).all()
                return not left and not await asyncio.to_thread(folder.exists)

            await until(removed)
        finally:
            await connection.close()
            await asyncio.wait_for(task, 5)


async def test_customers_cannot_force_anything(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    stranger = await logged_in(client, db, tenant=fleet.tenant)
    for caller in (fleet.owner, stranger):
        suspend = await client.post(
            f"/api/admin/servers/{fleet.server.id}/suspend", headers=caller.headers
        )
        assert suspend.status_code == 403
        delete = await client.delete(
            f"/api/admin/servers/{fleet.server.id}", headers=caller.headers
        )
        assert delete.status_code == 403
