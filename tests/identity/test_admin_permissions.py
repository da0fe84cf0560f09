"""``admin.read``, ``admin.write`` and ``admin.access`` open the routes the documents give them.

The route-by-route proof is the authorization matrix (a caller per permission);
these tests pin the implication table and API keys scoped to it.
"""

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.principal import permission_matches
from hostplane.identity.permissions.catalogue import IMPLIED, is_known, with_implied
from tests.support.factories import make_user
from tests.support.identity import logged_in, platform_tenant


def test_each_administrative_permission_implies_known_permissions() -> None:
    for key, opened in IMPLIED.items():
        assert is_known(key)
        assert opened, key
        assert all(is_known(permission) for permission in opened), key
    assert IMPLIED["admin.read"] | IMPLIED["admin.write"] <= IMPLIED["admin.access"]
    assert not any(p.endswith((".manage", ".ban", ".delete")) for p in IMPLIED["admin.read"])


def test_implication_adds_what_is_not_already_covered() -> None:
    assert "user.read" in with_implied({"admin.read"})
    assert "node.manage" not in with_implied({"admin.read"})
    assert "node.manage" in with_implied({"admin.write"})
    assert {"user.ban", "api-key.create", "server.suspend"} <= with_implied({"admin.access"})
    # A wildcard over the admin permissions implies all three sets.
    assert IMPLIED["admin.access"] <= with_implied({"admin.*"})
    # Nothing is repeated under a wildcard that covers it already.
    assert with_implied({"*"}) == {"*"}
    assert with_implied({"user.*", "admin.read"}) >= {"user.*", "server.read"}
    assert "user.read" not in with_implied({"user.*", "admin.read"})
    # Tenants and a customer's server powers are not administrative routes.
    everything = with_implied({"admin.access"})
    for outside in ("tenant.read", "tenant.manage", "server.start", "control.console", "*"):
        assert not any(permission_matches(p, outside) for p in everything), outside


async def test_an_api_key_scoped_to_admin_access_opens_admin_routes(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant, role="owner")
    target = await make_user(db, tenant=tenant, role="customer")
    minted = await client.post(
        "/api/admin/api-keys",
        json={"name": "Discord Bot", "scopes": ["admin.access"]},
        headers=owner.headers,
    )
    assert minted.status_code == 201, minted.text
    bot = {"Authorization": f"Bearer {minted.json()['data']['key']}"}

    listed = await client.get("/api/admin/users", headers=bot)
    assert listed.status_code == 200, listed.text
    banned = await client.post(f"/api/admin/users/{target.id}/ban", json={}, headers=bot)
    assert banned.status_code == 200, banned.text
    # Not an administrative route of the tenant: other tenants stay the owner's.
    tenants = await client.get("/api/tenants", headers=bot)
    assert tenants.status_code == 403, tenants.text


async def test_admin_read_key_reads_but_does_not_ban(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant, role="owner")
    target = await make_user(db, tenant=tenant, role="customer")
    minted = await client.post(
        "/api/admin/api-keys",
        json={"name": "Dashboard", "scopes": ["admin.read"]},
        headers=owner.headers,
    )
    assert minted.status_code == 201, minted.text
    bot = {"Authorization": f"Bearer {minted.json()['data']['key']}"}
    assert (await client.get("/api/admin/audit-logs", headers=bot)).status_code == 200
    assert (await client.get(f"/api/users/{target.id}", headers=bot)).status_code == 200
    refused = await client.post(f"/api/admin/users/{target.id}/ban", json={}, headers=bot)
    assert refused.status_code == 403, refused.text
