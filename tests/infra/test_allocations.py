"""Allocations: ports from the node's pool, unique per node, changed only while stopped."""

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from tests.infra.conftest import Fleet
from tests.support.infra import make_server, set_status


async def test_list_add_primary_remove(client: httpx.AsyncClient, fleet: Fleet) -> None:
    base = f"/api/servers/{fleet.server.id}/allocations"
    headers = fleet.owner.headers
    listed = await client.get(base, headers=headers)
    assert listed.json()["data"] == [{"containerPort": 30000, "hostPort": 30000, "isPrimary": True}]

    added = await client.post(
        base, json={"containerPort": 25575, "hostPort": 30004}, headers=headers
    )
    assert added.status_code == 200, added.text
    assert added.json()["data"] == {"containerPort": 25575, "hostPort": 30004, "isPrimary": False}
    duplicate_container = await client.post(base, json={"containerPort": 25575}, headers=headers)
    assert duplicate_container.status_code == 409
    taken = await client.post(base, json={"containerPort": 1, "hostPort": 30004}, headers=headers)
    assert taken.status_code == 409
    outside = await client.post(base, json={"containerPort": 2, "hostPort": 22}, headers=headers)
    assert outside.status_code == 400

    primary = await client.post(f"{base}/primary", json={"containerPort": 25575}, headers=headers)
    assert primary.status_code == 200 and primary.json()["data"] == {"primaryPort": 25575}
    detail = await client.get(f"/api/servers/{fleet.server.id}", headers=headers)
    assert detail.json()["data"]["primaryPort"] == 25575
    refused = await client.delete(f"{base}/25575", headers=headers)
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "Cannot remove the primary allocation"
    removed = await client.delete(f"{base}/30000", headers=headers)
    assert removed.status_code == 200
    assert (await client.delete(f"{base}/30000", headers=headers)).status_code == 404
    assert (
        await client.post(f"{base}/primary", json={"containerPort": 9}, headers=headers)
    ).status_code == 404
    listed = await client.get(base, headers=headers)
    assert listed.json()["data"] == [{"containerPort": 25575, "hostPort": 30004, "isPrimary": True}]


async def test_ports_are_unique_across_servers_of_a_node(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    second = await make_server(
        db, tenant=fleet.tenant, owner=fleet.owner.user, node=fleet.node, template=fleet.template
    )
    taken = await client.post(
        f"/api/servers/{second.id}/allocations",
        json={"containerPort": 7777, "hostPort": 30000},
        headers=fleet.owner.headers,
    )
    assert taken.status_code == 409


async def test_network_routes_auto_assign(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    base = f"/api/servers/{fleet.server.id}/network"
    assigned = await client.post(f"{base}/allocations", headers=fleet.owner.headers)
    assert assigned.status_code == 201, assigned.text
    data = assigned.json()["data"]
    assert data["hostPort"] == 30001 and data["ip"] == "203.0.113.10" and data["port"] == 30001
    listed = await client.get(base, headers=fleet.owner.headers)
    assert [a["port"] for a in listed.json()["data"]] == [30000, 30001]

    # Exhaust the pool (30000-30009).
    for _ in range(8):
        assert (
            await client.post(f"{base}/allocations", headers=fleet.owner.headers)
        ).status_code == 201
    full = await client.post(f"{base}/allocations", headers=fleet.owner.headers)
    assert full.status_code == 409 and full.json()["error"]["code"] == "NO_FREE_PORTS"


async def test_changes_need_a_stopped_server_and_rights(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    base = f"/api/servers/{fleet.server.id}/allocations"
    assert (await client.get(base, headers=fleet.other.headers)).status_code == 404
    assert (
        await client.post(base, json={"containerPort": 5}, headers=fleet.other.headers)
    ).status_code == 404
    await set_status(db, fleet.server, "running")
    running = await client.post(base, json={"containerPort": 5}, headers=fleet.owner.headers)
    assert running.status_code == 409
    assert (
        await client.post(
            f"/api/servers/{fleet.server.id}/network/allocations", headers=fleet.owner.headers
        )
    ).status_code == 409
    assert (await client.get(base, headers=fleet.owner.headers)).status_code == 200


async def test_auto_assign_skips_a_port_already_bound_inside_the_container(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    base = f"/api/servers/{fleet.server.id}"
    # The fleet's server holds host 30000; bind container port 30001 to host 30005.
    explicit = await client.post(
        f"{base}/allocations",
        json={"containerPort": 30001, "hostPort": 30005},
        headers=fleet.owner.headers,
    )
    assert explicit.status_code == 200, explicit.text
    # 30001 is free on the host but taken inside the container: the next one is picked.
    assigned = await client.post(f"{base}/network/allocations", headers=fleet.owner.headers)
    assert assigned.status_code == 201, assigned.text
    assert assigned.json()["data"]["hostPort"] == 30002
    assert assigned.json()["data"]["containerPort"] == 30002
