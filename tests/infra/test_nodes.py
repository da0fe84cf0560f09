"""Nodes: secrets shown once and stored hashed, liveness, capacity summary, isolation."""

import asyncio
import hashlib
from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import shifted
from hostplane.infra.nodes import service as nodes
from hostplane.infra.nodes.models import Node
from hostplane.infra.transfers.models import ServerTransfer
from tests.support.identity import logged_in, other_tenant, platform_tenant
from tests.support.infra import in_tenant, make_node, make_server, make_template

BODY = {
    "name": "production-2",
    "description": "Second production node",
    "hostname": "node2.example.com",
    "publicAddress": "192.168.1.101",
    "maxMemoryMb": 65536,
    "maxCpuCores": 32,
}


async def test_create_shows_the_secret_once_and_stores_its_hash(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="admin")
    created = await client.post("/api/nodes", json=BODY, headers=admin.headers)
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert set(data) == {"id", "name", "secret"}
    assert len(data["secret"]) >= 43  # 256 bits, url-safe base64

    await db.commit()
    row = await db.get(Node, data["id"])
    assert row is not None
    assert row.secret_hash == hashlib.sha256(data["secret"].encode()).hexdigest()

    one = await client.get(f"/api/nodes/{data['id']}", headers=admin.headers)
    assert one.status_code == 200
    body = one.json()["data"]
    assert "secret" not in body and "secretHash" not in body
    assert body["isOnline"] is False and body["lastSeenAt"] is None
    assert body["maxMemoryMb"] == 65536 and body["servers"] == []
    listed = await client.get("/api/nodes", headers=admin.headers)
    assert [n["id"] for n in listed.json()["data"]] == [data["id"]]
    assert "secret" not in listed.text


async def test_customers_cannot_read_or_manage_nodes(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    customer = await logged_in(client, db)
    assert (await client.get("/api/nodes", headers=customer.headers)).status_code == 403
    assert (await client.post("/api/nodes", json=BODY, headers=customer.headers)).status_code == 403


async def test_update_and_validation(client: httpx.AsyncClient, db: AsyncSession) -> None:
    admin = await logged_in(client, db, role="admin")
    node_id = (await client.post("/api/nodes", json=BODY, headers=admin.headers)).json()["data"][
        "id"
    ]
    updated = await client.put(
        f"/api/nodes/{node_id}",
        json={"name": "production-1-updated", "maxMemoryMb": 1024},
        headers=admin.headers,
    )
    assert updated.status_code == 200
    assert updated.json()["data"]["name"] == "production-1-updated"
    assert updated.json()["data"]["maxMemoryMb"] == 1024
    bad = await client.put(
        f"/api/nodes/{node_id}",
        json={"portRangeStart": 40000, "portRangeEnd": 30000},
        headers=admin.headers,
    )
    assert bad.status_code == 400
    missing = await client.put("/api/nodes/nope", json={"name": "x"}, headers=admin.headers)
    assert missing.status_code == 404


async def test_location(client: httpx.AsyncClient, db: AsyncSession) -> None:
    admin = await logged_in(client, db, role="admin")
    location = await client.post("/api/locations", json={"name": "Mumbai"}, headers=admin.headers)
    assert location.status_code == 201
    location_id = location.json()["data"]["id"]
    created = await client.post(
        "/api/nodes", json=BODY | {"locationId": location_id}, headers=admin.headers
    )
    assert created.status_code == 201
    node = await client.get(f"/api/nodes/{created.json()['data']['id']}", headers=admin.headers)
    assert node.json()["data"]["locationId"] == location_id
    unknown = await client.post(
        "/api/nodes", json=BODY | {"locationId": "x"}, headers=admin.headers
    )
    assert unknown.status_code == 404
    listed = await client.get("/api/locations", headers=admin.headers)
    assert [x["name"] for x in listed.json()["data"]] == ["Mumbai"]


async def test_delete_refused_while_servers_are_placed(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    admin = await logged_in(client, db, role="admin")
    node, _secret = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    server = await make_server(db, tenant=tenant, owner=admin.user, node=node, template=template)

    shown = await client.get(f"/api/nodes/{node.id}", headers=admin.headers)
    assert shown.json()["data"]["servers"] == [
        {"id": server.id, "name": server.name, "status": "stopped"}
    ]
    refused = await client.delete(f"/api/nodes/{node.id}", headers=admin.headers)
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "Cannot delete node with active servers"

    empty, _ = await make_node(db, tenant=tenant)
    deleted = await client.delete(f"/api/nodes/{empty.id}", headers=admin.headers)
    assert deleted.status_code == 200 and deleted.json() == {"success": True}
    assert (await client.get(f"/api/nodes/{empty.id}", headers=admin.headers)).status_code == 404


async def test_deployment_token_and_authentication(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="admin")
    created = (await client.post("/api/nodes", json=BODY, headers=admin.headers)).json()["data"]
    node_id, first_secret = created["id"], created["secret"]
    await db.commit()
    assert (await nodes.authenticate_node(db, node_id, first_secret)) is not None
    assert (await nodes.authenticate_node(db, node_id, "wrong")) is None
    assert (await nodes.authenticate_node(db, "missing", first_secret)) is None
    await db.commit()

    issued = await client.post(f"/api/nodes/{node_id}/deployment-token", headers=admin.headers)
    assert issued.status_code == 200
    data = issued.json()["data"]
    assert set(data) == {"deploymentToken", "secret", "deployUrl", "expiresAt"}
    assert data["deployUrl"].endswith(data["deploymentToken"])
    await db.commit()
    row = await db.get(Node, node_id)
    assert row is not None
    assert row.deployment_token_hash == hashlib.sha256(data["deploymentToken"].encode()).hexdigest()
    # The old secret stopped working; the new secret and the token work.
    assert (await nodes.authenticate_node(db, node_id, first_secret)) is None
    assert (await nodes.authenticate_node(db, node_id, data["secret"])) is not None
    assert (await nodes.authenticate_node(db, node_id, data["deploymentToken"])) is not None
    with shifted(timedelta(hours=25)):
        assert (await nodes.authenticate_node(db, node_id, data["deploymentToken"])) is None
        assert (await nodes.authenticate_node(db, node_id, data["secret"])) is not None
    await db.commit()


async def test_a_node_is_online_while_its_agent_is_connected_and_reports(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    admin = await logged_in(client, db, role="admin")
    node, _ = await make_node(db, tenant=tenant, online=False)

    async def online() -> bool:
        body = (await client.get(f"/api/nodes/{node.id}", headers=admin.headers)).json()["data"]
        return bool(body["isOnline"])

    assert await online() is False
    # A report alone (no open socket) does not make it online.
    await nodes.mark_seen(db, node.id, {"cpuPercent": 12.5})
    await db.commit()
    assert await online() is False
    await nodes.mark_connected(db, node.id, "session-1")
    await db.commit()
    body = (await client.get(f"/api/nodes/{node.id}", headers=admin.headers)).json()["data"]
    assert body["isOnline"] is True and body["health"] == {"cpuPercent": 12.5}
    with shifted(timedelta(seconds=91)):
        # Connected, but silent for longer than the heartbeat window.
        assert await online() is False

    # The agent reconnected (session 2) before its old socket's end was noticed:
    # the old socket's end does not take the node offline.
    await nodes.mark_connected(db, node.id, "session-2")
    assert await nodes.mark_disconnected(db, node.id, "session-1") is False
    await db.commit()
    assert await online() is True
    assert await nodes.mark_disconnected(db, node.id, "session-2") is True
    await db.commit()
    assert await online() is False


async def test_another_tenants_node_is_not_found(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    away = await other_tenant(db)
    foreign = await logged_in(client, db, tenant=away, role="admin")
    home = await platform_tenant(db)
    node, _ = await make_node(db, tenant=home)
    assert (await client.get(f"/api/nodes/{node.id}", headers=foreign.headers)).status_code == 404
    assert (await client.get("/api/nodes", headers=foreign.headers)).json()["data"] == []
    assert (
        await client.delete(f"/api/nodes/{node.id}", headers=foreign.headers)
    ).status_code == 404


async def test_delete_refused_while_transfer_history_names_the_node(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    admin = await logged_in(client, db, role="admin")
    old, _ = await make_node(db, tenant=tenant)
    new, _ = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    server = await make_server(db, tenant=tenant, owner=admin.user, node=new, template=template)
    async with in_tenant(db, tenant):
        db.add(
            ServerTransfer(
                server_id=server.id,
                source_node_id=old.id,
                target_node_id=new.id,
                status="completed",
            )
        )

    refused = await client.delete(f"/api/nodes/{old.id}", headers=admin.headers)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "CONFLICT"
    assert "transfer" in refused.json()["error"]["message"]
    assert (await client.get(f"/api/nodes/{old.id}", headers=admin.headers)).status_code == 200


async def test_concurrent_deletes_of_one_node_answer_once(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    admin = await logged_in(client, db, role="admin")
    node, _ = await make_node(db, tenant=tenant)
    answers = await asyncio.gather(
        *(client.delete(f"/api/nodes/{node.id}", headers=admin.headers) for _ in range(8))
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(200) == 1, [answer.text for answer in answers]
    assert all(status == 200 or 400 <= status < 500 for status in statuses), statuses
    assert all(answer.json()["success"] is (answer.status_code == 200) for answer in answers)
