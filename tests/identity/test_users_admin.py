"""Operators managing accounts: mPanel's /api/users and the admin list."""

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.identity import PASSWORD, logged_in, login


async def test_operators_create_update_and_delete_accounts(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="admin")
    created = await client.post(
        "/api/users",
        json={
            "email": "ops@example.com",
            "name": "Olga Ops",
            "password": "long enough 1",
            "roles": ["support"],
        },
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert data["name"] == "Olga Ops"
    assert data["roles"] == ["support"]
    assert (await login(client, "ops@example.com", "long enough 1")).status_code == 200

    updated = await client.put(
        f"/api/users/{data['id']}",
        json={"status": "disabled", "name": "Olga Operator"},
        headers=admin.headers,
    )
    assert updated.status_code == 200
    assert updated.json()["data"]["status"] == "disabled"
    assert (await login(client, "ops@example.com", "long enough 1")).status_code == 403

    assert (
        await client.delete(f"/api/users/{data['id']}", headers=admin.headers)
    ).status_code == 200
    assert (await client.get(f"/api/users/{data['id']}", headers=admin.headers)).status_code == 404


async def test_operators_cannot_hand_out_roles_above_their_own(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="admin")
    response = await client.post(
        "/api/users",
        json={"email": "boss@example.com", "password": "long enough 1", "roles": ["owner"]},
        headers=admin.headers,
    )
    assert response.status_code == 403


async def test_the_admin_list_searches_and_shows_roles(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="admin")
    target = await logged_in(client, db, email="findme@example.com")
    found = (
        await client.get("/api/admin/users", params={"search": "FINDME"}, headers=admin.headers)
    ).json()
    assert [u["id"] for u in found["data"]] == [target.user.id]
    assert found["data"][0]["roles"][0]["name"] == "customer"
    assert "permissions" in found["data"][0]["roles"][0]
    assert found["pagination"]["total"] == 1


async def test_an_owner_cannot_be_banned_by_an_admin_nor_the_last_owner_by_anyone(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await logged_in(client, db, role="owner")
    admin = await logged_in(client, db, role="admin")
    assert (
        await client.post(f"/api/admin/users/{owner.user.id}/ban", headers=admin.headers)
    ).status_code == 403
    assert (
        await client.delete(f"/api/users/{owner.user.id}", headers=admin.headers)
    ).status_code == 403
    assert (await login(client, owner.user.email, PASSWORD)).status_code == 200


async def test_mpanel_user_roles_are_names_and_put_sets_them_within_the_callers_authority(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="admin")
    target = await logged_in(client, db, email="promote@example.com")
    listed = await client.get("/api/users", params={"search": "promote"}, headers=admin.headers)
    assert listed.json()["data"][0]["roles"] == ["customer"]

    changed = await client.put(
        f"/api/users/{target.user.id}", json={"roles": ["support"]}, headers=admin.headers
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"]["roles"] == ["support"]
    shown = await client.get(f"/api/users/{target.user.id}", headers=admin.headers)
    assert shown.json()["data"]["roles"] == ["support"]

    above = await client.put(
        f"/api/users/{target.user.id}", json={"roles": ["owner"]}, headers=admin.headers
    )
    assert above.status_code == 403, above.text
    unknown = await client.put(
        f"/api/users/{target.user.id}", json={"roles": ["wizard"]}, headers=admin.headers
    )
    assert unknown.status_code == 400, unknown.text
    kept = await client.get(f"/api/users/{target.user.id}", headers=admin.headers)
    assert kept.json()["data"]["roles"] == ["support"]
