"""Maintenance mode: 503 MAINTENANCE for every non-staff /api call; staff, probes and agents pass."""

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.identity import logged_in, login, platform_tenant


async def test_maintenance_refuses_customers_and_lets_staff_probes_and_logins_through(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant, role="owner")
    admin = await logged_in(client, db, tenant=tenant, role="admin")
    support = await logged_in(client, db, tenant=tenant, role="support")
    customer = await logged_in(client, db, tenant=tenant)

    switched = await client.patch(
        "/api/admin/config",
        json={
            "maintenance": {
                "enabled": True,
                "message": "Upgrading storage",
                "retryAfterSeconds": 120,
            }
        },
        headers=owner.headers,
    )
    assert switched.status_code == 200, switched.text

    for path in ("/api/servers", "/api/users/me", "/api/templates"):
        refused = await client.get(path, headers=customer.headers)
        assert refused.status_code == 503, (path, refused.text)
        assert refused.headers["Retry-After"] == "120"
        body = refused.json()
        assert body["success"] is False
        assert body["error"]["code"] == "MAINTENANCE"
        assert body["error"]["message"] == "Upgrading storage"
        assert body["error"]["details"] == {"retryAfter": 120}
    anonymous = await client.post(
        "/api/auth/register", json={"email": "new@example.com", "password": "long enough 1"}
    )
    assert anonymous.status_code == 503
    bad_token = await client.get("/api/servers", headers={"Authorization": "Bearer nonsense"})
    assert bad_token.status_code == 503

    # Staff work; probes and the public configuration answer; logging in stays open.
    for caller in (owner, admin, support):
        assert (await client.get("/api/servers", headers=caller.headers)).status_code == 200
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/status")).status_code in (200, 503)
    public = await client.get("/api/v1/settings/system/config")
    assert public.status_code == 200
    assert public.json()["data"]["maintenance"] == {
        "enabled": True,
        "message": "Upgrading storage",
        "retryAfterSeconds": 120,
    }
    assert (await login(client, customer.user.email, tenant=tenant.slug)).status_code == 200
    assert (await client.get("/api/auth/me", headers=customer.headers)).status_code == 200

    off = await client.patch(
        "/api/admin/config", json={"maintenance": {"enabled": False}}, headers=admin.headers
    )
    assert off.status_code == 403, "only config.manage switches it"
    off = await client.patch(
        "/api/admin/config", json={"maintenance": {"enabled": False}}, headers=owner.headers
    )
    assert off.status_code == 200
    assert off.json()["data"]["maintenance"]["message"] == "Upgrading storage", "kept for next time"
    assert (await client.get("/api/servers", headers=customer.headers)).status_code == 200
