"""404 for what the caller cannot see, 403 for what it can see but may not do (over HTTP)."""

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.ids import new_id
from tests.support.identity import LoggedIn, logged_in, platform_tenant
from tests.support.infra import make_node, make_server, make_template


async def _server(client: httpx.AsyncClient, db: AsyncSession) -> tuple[LoggedIn, Any]:
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant)
    node, _ = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    server = await make_server(db, tenant=tenant, owner=owner.user, node=node, template=template)
    return owner, server


def _without_id(body: dict[str, Any]) -> dict[str, Any]:
    """The error body with the requested id taken out (it echoes what was asked)."""
    error = dict(body["error"])
    error["details"] = {k: v for k, v in error["details"].items() if k != "id"}
    return {**body, "error": error}


async def test_another_users_server_answers_like_a_made_up_id(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    _owner, server = await _server(client, db)
    stranger = await logged_in(client, db)
    made_up = new_id()
    for suffix, method in (
        ("", "GET"),
        ("", "DELETE"),
        ("/backups", "GET"),
        ("/users", "GET"),
        ("/transfers", "GET"),
        ("/logs", "GET"),
        ("/websocket", "GET"),
        ("/start", "POST"),
    ):
        real = await client.request(
            method, f"/api/servers/{server.id}{suffix}", headers=stranger.headers
        )
        fake = await client.request(
            method, f"/api/servers/{made_up}{suffix}", headers=stranger.headers
        )
        assert real.status_code == fake.status_code == 404, (suffix, real.text, fake.text)
        assert real.json()["error"]["details"]["id"] == server.id
        assert _without_id(real.json()) == _without_id(fake.json()), suffix


async def test_a_subuser_who_can_see_the_server_is_refused_with_403(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner, server = await _server(client, db)
    helper = await logged_in(client, db)
    added = await client.post(
        f"/api/servers/{server.id}/users",
        json={"userId": helper.user.id, "permissions": ["server.read"]},
        headers=owner.headers,
    )
    assert added.status_code == 201, added.text

    seen = await client.get(f"/api/servers/{server.id}", headers=helper.headers)
    assert seen.status_code == 200, seen.text
    for method, suffix in (("DELETE", ""), ("GET", "/backups"), ("POST", "/start")):
        refused = await client.request(
            method, f"/api/servers/{server.id}{suffix}", headers=helper.headers
        )
        assert refused.status_code == 403, (suffix, refused.text)
        assert refused.json()["error"]["code"] == "FORBIDDEN"

    removed = await client.delete(
        f"/api/servers/{server.id}/users/{helper.user.id}", headers=owner.headers
    )
    assert removed.status_code == 200, removed.text
    gone = await client.get(f"/api/servers/{server.id}", headers=helper.headers)
    assert gone.status_code == 404, gone.text


async def test_an_owners_narrow_api_key_sees_the_server_but_may_not_read_it(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner, server = await _server(client, db)
    minted = await client.post(
        "/api/account/api-keys",
        json={"name": "Starter", "scopes": ["server.start"]},
        headers=owner.headers,
    )
    assert minted.status_code == 201, minted.text
    key = {"Authorization": f"Bearer {minted.json()['data']['key']}"}
    response = await client.get(f"/api/servers/{server.id}", headers=key)
    assert response.status_code == 403, response.text
