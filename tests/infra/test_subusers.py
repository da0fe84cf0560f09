"""Subusers: per-server grants managed by the owner, checked by the one authorization function."""

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.runtime import Runtime
from tests.infra.conftest import Fleet
from tests.infra.test_servers import commands_during
from tests.support.identity import logged_in


async def test_owner_shares_a_server(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    base = f"/api/servers/{fleet.server.id}/users"
    server_path = f"/api/servers/{fleet.server.id}"
    assert (await client.get(server_path, headers=fleet.other.headers)).status_code == 404

    added = await client.post(
        base,
        json={"userId": fleet.other.user.id, "permissions": ["server.read", "server.start"]},
        headers=fleet.owner.headers,
    )
    assert added.status_code == 201, added.text
    assert added.json()["data"]["permissions"] == ["server.read", "server.start"]
    assert added.json()["data"]["grantedBy"] == fleet.owner.user.id

    # The subuser reads and starts, but may not stop, delete or manage subusers.
    assert (await client.get(server_path, headers=fleet.other.headers)).status_code == 200
    listed = await client.get("/api/servers", headers=fleet.other.headers)
    assert [s["id"] for s in listed.json()["data"]] == [fleet.server.id]
    # (the agent's part is stood in for: commands wait for its answer)
    started, _ = await commands_during(
        runtime,
        fleet.node.id,
        lambda: client.post(f"{server_path}/start", headers=fleet.other.headers),
    )
    assert started.status_code == 200
    assert (
        await client.post(f"{server_path}/stop", headers=fleet.other.headers)
    ).status_code == 403
    assert (await client.delete(server_path, headers=fleet.other.headers)).status_code == 403
    assert (await client.get(base, headers=fleet.other.headers)).status_code == 403

    listed_users = await client.get(base, headers=fleet.owner.headers)
    assert [u["userId"] for u in listed_users.json()["data"]] == [fleet.other.user.id]

    changed = await client.put(
        f"{base}/{fleet.other.user.id}",
        json={"permissions": ["control.power"]},
        headers=fleet.owner.headers,
    )
    assert changed.status_code == 200 and changed.json()["data"]["permissions"] == ["control.power"]
    # control.power (QeinTech) admits every power signal, but no longer reading.
    stopped, _ = await commands_during(
        runtime,
        fleet.node.id,
        lambda: client.post(
            f"{server_path}/power", json={"signal": "stop"}, headers=fleet.other.headers
        ),
    )
    assert stopped.status_code == 200
    assert (await client.get(server_path, headers=fleet.other.headers)).status_code == 403

    removed = await client.delete(f"{base}/{fleet.other.user.id}", headers=fleet.owner.headers)
    assert removed.status_code == 200
    assert (
        await client.delete(f"{base}/{fleet.other.user.id}", headers=fleet.owner.headers)
    ).status_code == 404
    assert (
        await client.post(
            f"{server_path}/power", json={"signal": "kill"}, headers=fleet.other.headers
        )
    ).status_code == 404


async def test_validation(client: httpx.AsyncClient, fleet: Fleet) -> None:
    base = f"/api/servers/{fleet.server.id}/users"
    for permissions in (["server.fly"], ["server.suspend"], ["*"], []):
        response = await client.post(
            base,
            json={"userId": fleet.other.user.id, "permissions": permissions},
            headers=fleet.owner.headers,
        )
        assert response.status_code == 400, permissions
    owner_self = await client.post(
        base,
        json={"userId": fleet.owner.user.id, "permissions": ["server.read"]},
        headers=fleet.owner.headers,
    )
    assert owner_self.status_code == 400
    unknown = await client.post(
        base, json={"userId": "nobody", "permissions": ["server.read"]}, headers=fleet.owner.headers
    )
    assert unknown.status_code == 404
    not_yet = await client.put(
        f"{base}/{fleet.other.user.id}",
        json={"permissions": ["server.read"]},
        headers=fleet.owner.headers,
    )
    assert not_yet.status_code == 404


async def test_a_subuser_manager_grants_only_what_they_hold(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    base = f"/api/servers/{fleet.server.id}/users"
    third = await logged_in(client, db, tenant=fleet.tenant)
    await client.post(
        base,
        json={"userId": fleet.other.user.id, "permissions": ["subuser.create", "server.read"]},
        headers=fleet.owner.headers,
    )
    beyond = await client.post(
        base,
        json={"userId": third.user.id, "permissions": ["server.start"]},
        headers=fleet.other.headers,
    )
    assert beyond.status_code == 403
    within = await client.post(
        base,
        json={"userId": third.user.id, "permissions": ["server.read"]},
        headers=fleet.other.headers,
    )
    assert within.status_code == 201
