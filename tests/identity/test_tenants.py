"""Tenants: managed from the platform tenant; nothing crosses between tenants."""

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.identity import logged_in, other_tenant, platform_tenant


async def test_platform_operators_manage_tenants(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    await platform_tenant(db)
    operator = await logged_in(client, db, role="owner")
    created = await client.post(
        "/api/tenants", json={"name": "Acme Hosting"}, headers=operator.headers
    )
    assert created.status_code == 201, created.text
    tenant = created.json()["data"]
    assert tenant["slug"] == "acme-hosting"
    assert tenant["status"] == "active"
    listed = (await client.get("/api/tenants", headers=operator.headers)).json()
    assert {t["slug"] for t in listed["data"]} == {"default", "acme-hosting"}
    assert (await client.get(f"/api/tenants/{tenant['id']}", headers=operator.headers)).json()[
        "data"
    ]["name"] == "Acme Hosting"
    duplicate = await client.post(
        "/api/tenants", json={"name": "X", "slug": "acme-hosting"}, headers=operator.headers
    )
    assert duplicate.status_code == 409
    bad = await client.post(
        "/api/tenants", json={"name": "X", "slug": "Bad Slug!"}, headers=operator.headers
    )
    assert bad.status_code == 400


async def test_a_tenants_own_owner_cannot_manage_tenants(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    await platform_tenant(db)
    reseller = await other_tenant(db)
    owner = await logged_in(client, db, tenant=reseller, role="owner")
    assert (await client.get("/api/tenants", headers=owner.headers)).status_code == 403
    assert (
        await client.post("/api/tenants", json={"name": "Mine"}, headers=owner.headers)
    ).status_code == 403


async def test_users_of_another_tenant_are_invisible(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    home = await platform_tenant(db)
    away = await other_tenant(db)
    home_admin = await logged_in(client, db, tenant=home, role="admin")
    away_admin = await logged_in(client, db, tenant=away, role="admin")
    away_user = await logged_in(client, db, tenant=away)

    listed = (await client.get("/api/admin/users", headers=home_admin.headers)).json()["data"]
    assert away_user.user.id not in {u["id"] for u in listed}
    assert all(u["tenantId"] == home.id for u in listed)
    assert (
        await client.get(f"/api/users/{away_user.user.id}", headers=home_admin.headers)
    ).status_code == 404
    assert (
        await client.post(f"/api/admin/users/{away_user.user.id}/ban", headers=home_admin.headers)
    ).status_code == 404
    assert (
        await client.delete(f"/api/users/{away_user.user.id}", headers=home_admin.headers)
    ).status_code == 404
    assert (
        await client.get(f"/api/users/{away_user.user.id}", headers=away_admin.headers)
    ).status_code == 200


async def test_the_same_email_can_exist_in_two_tenants(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    home = await platform_tenant(db)
    away = await other_tenant(db)
    first = await logged_in(client, db, tenant=home, email="same@example.com")
    second = await logged_in(client, db, tenant=away, email="same@example.com")
    assert first.user.id != second.user.id
    me = (await client.get("/api/auth/me", headers=second.headers)).json()["data"]
    assert me["tenantId"] == away.id
