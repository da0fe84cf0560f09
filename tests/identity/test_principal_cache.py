"""The principal cache: a warm request reads no identity rows, and any change is seen at once.

Each change is made the way it happens in production (through the API, or a
commit of the database by another session), and the very next request with
the same credential must see it: in the same process, and on a second app
instance that learns of it through a shared Redis bus.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.app import build_runtime, create_app
from hostplane.core.ids import new_id
from hostplane.core.runtime import Runtime
from hostplane.identity.users.models import User
from tests.conftest import make_settings
from tests.support.identity import LoggedIn, logged_in, platform_tenant
from tests.support.infra import make_node, make_server, make_template
from tests.support.services import require_redis

TIMEOUT = 10.0


@contextmanager
def statements(runtime: Runtime) -> Iterator[list[str]]:
    """The SQL statements run on ``runtime``'s engine inside the block (BEGIN aside)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip().upper().startswith("BEGIN"):
            seen.append(statement)

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)


async def _owner_with_servers(client: httpx.AsyncClient, db: AsyncSession) -> LoggedIn:
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant)
    node, _ = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    for _ in range(3):
        await make_server(db, tenant=tenant, owner=owner.user, node=node, template=template)
    return owner


async def test_a_warm_request_reads_only_what_the_route_needs(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    owner = await _owner_with_servers(client, db)
    assert (await client.get("/api/servers?limit=20", headers=owner.headers)).status_code == 200
    with statements(runtime) as listed:
        response = await client.get("/api/servers?limit=20", headers=owner.headers)
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 3
    # The page and its total, its nodes' addresses, its servers' plans: no user, session,
    # role or tenant setting rows.
    assert len(listed) <= 3, listed
    assert not any("auth_sessions" in sql or "user_roles" in sql for sql in listed), listed

    with statements(runtime) as me:
        assert (await client.get("/api/auth/me", headers=owner.headers)).status_code == 200
    assert not any("auth_sessions" in sql for sql in me), me


async def test_disabled_cache_resolves_every_request(
    tmp_path: Path, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await _owner_with_servers(client, db)
    settings = make_settings(tmp_path, auth={"principal_cache_seconds": 0})
    app = create_app(settings, runtime=build_runtime(settings))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://hostplane.test") as http,
    ):
        runtime: Runtime = app.state.runtime
        assert (await http.get("/api/auth/me", headers=owner.headers)).status_code == 200
        with statements(runtime) as seen:
            assert (await http.get("/api/auth/me", headers=owner.headers)).status_code == 200
        assert any("auth_sessions" in sql for sql in seen), seen
        assert len(runtime.principal_cache) == 0


async def _warm(
    http: httpx.AsyncClient, headers: dict[str, str], path: str = "/api/auth/me"
) -> None:
    for _ in range(2):
        response = await http.get(path, headers=headers)
        assert response.status_code == 200, response.text


async def test_a_ban_ends_a_cached_caller_on_the_next_request(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    admin = await logged_in(client, db, role="admin")
    customer = await logged_in(client, db)
    await _warm(client, customer.headers)
    assert len(runtime.principal_cache) >= 1
    banned = await client.post(
        f"/api/admin/users/{customer.user.id}/ban", json={}, headers=admin.headers
    )
    assert banned.status_code == 200, banned.text
    assert (await client.get("/api/auth/me", headers=customer.headers)).status_code == 401


async def test_logout_ends_a_cached_token_on_the_next_request(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    customer = await logged_in(client, db)
    await _warm(client, customer.headers)
    assert (await client.post("/api/auth/logout", headers=customer.headers)).status_code == 200
    assert (await client.get("/api/auth/me", headers=customer.headers)).status_code == 401


async def test_a_removed_role_is_gone_on_the_next_request(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="admin")
    operator = await logged_in(client, db, role="admin-l1")
    await _warm(client, operator.headers, "/api/admin/users")
    roles = await client.get(f"/api/admin/users/{operator.user.id}/roles", headers=admin.headers)
    [l1] = [role["id"] for role in roles.json()["data"] if role["name"] == "admin-l1"]
    taken = await client.delete(
        f"/api/admin/users/{operator.user.id}/roles/{l1}", headers=admin.headers
    )
    assert taken.status_code == 200, taken.text
    assert (await client.get("/api/admin/users", headers=operator.headers)).status_code == 403


async def test_a_role_losing_a_permission_is_seen_on_the_next_request(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await logged_in(client, db, role="owner")
    created = await client.post(
        "/api/admin/roles",
        json={"name": "Reader", "permissions": ["admin.read"], "rank": 10},
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text
    role_id = created.json()["data"]["id"]
    reader = await logged_in(client, db, role=None)
    granted = await client.post(
        f"/api/admin/users/{reader.user.id}/roles", json={"roleId": role_id}, headers=owner.headers
    )
    assert granted.status_code == 200, granted.text
    # The grant itself was seen at once too.
    await _warm(client, reader.headers, "/api/admin/users")
    narrowed = await client.put(
        f"/api/admin/roles/{role_id}", json={"permissions": []}, headers=owner.headers
    )
    assert narrowed.status_code == 200, narrowed.text
    assert (await client.get("/api/admin/users", headers=reader.headers)).status_code == 403


async def test_a_revoked_api_key_is_refused_on_its_next_request(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await logged_in(client, db)
    minted = await client.post(
        "/api/account/api-keys",
        json={"name": "Bot", "scopes": ["server.read"]},
        headers=owner.headers,
    )
    assert minted.status_code == 201, minted.text
    key = minted.json()["data"]
    bot = {"Authorization": f"Bearer {key['key']}"}
    await _warm(client, bot, "/api/servers")
    revoked = await client.delete(f"/api/account/api-keys/{key['id']}", headers=owner.headers)
    assert revoked.status_code == 200, revoked.text
    assert (await client.get("/api/servers", headers=bot)).status_code == 401


async def test_a_change_committed_by_another_session_is_seen_on_the_next_request(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    """Any commit touching the rows counts, whatever code path made it."""
    customer = await logged_in(client, db)
    await _warm(client, customer.headers)
    user = await db.get(User, customer.user.id)
    assert user is not None
    user.status = "disabled"
    await db.commit()
    refused = await client.get("/api/auth/me", headers=customer.headers)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "ACCOUNT_DISABLED"


async def test_a_bulk_session_revocation_is_seen_on_the_next_request(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    from hostplane.identity.auth.sessions import revoke_user_sessions

    customer = await logged_in(client, db)
    await _warm(client, customer.headers)
    async with runtime.unit_of_work() as session:
        await revoke_user_sessions(session, customer.user.id, reason="test")
    assert (await client.get("/api/auth/me", headers=customer.headers)).status_code == 401


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[list[Any]]:
    """Two app instances on the test database, sharing a Redis bus."""
    redis_url = await require_redis()
    settings = make_settings(tmp_path, redis_url=redis_url, event_channel_prefix=f"test-{new_id()}")
    apps = [create_app(settings, runtime=build_runtime(settings)) for _ in range(2)]
    async with apps[0].router.lifespan_context(apps[0]), apps[1].router.lifespan_context(apps[1]):
        yield apps


async def _until_invalidated(runtime: Runtime, generation: int) -> None:
    """Wait (bounded) for the other instance's event to reach this one's cache."""
    async with asyncio.timeout(TIMEOUT):
        while runtime.principal_cache.generation == generation:
            await asyncio.sleep(0.01)


async def test_changes_on_one_instance_reach_the_other_through_the_bus(
    client: httpx.AsyncClient, db: AsyncSession, replicas: list[Any]
) -> None:
    owner_account = await logged_in(client, db, role="owner")
    admin = await logged_in(client, db, role="admin")
    customer = await logged_in(client, db)
    operator = await logged_in(client, db, role="admin-l1")
    first, second = (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hostplane.test")
        for app in replicas
    )
    other: Runtime = replicas[1].state.runtime
    async with first, second:
        # A removed role.
        await _warm(second, operator.headers, "/api/admin/users")
        roles = await first.get(
            f"/api/admin/users/{operator.user.id}/roles", headers=owner_account.headers
        )
        [l1] = [role["id"] for role in roles.json()["data"] if role["name"] == "admin-l1"]
        generation = other.principal_cache.generation
        taken = await first.delete(
            f"/api/admin/users/{operator.user.id}/roles/{l1}", headers=owner_account.headers
        )
        assert taken.status_code == 200, taken.text
        await _until_invalidated(other, generation)
        assert (await second.get("/api/admin/users", headers=operator.headers)).status_code == 403

        # A ban.
        await _warm(second, customer.headers)
        generation = other.principal_cache.generation
        banned = await first.post(
            f"/api/admin/users/{customer.user.id}/ban", json={}, headers=admin.headers
        )
        assert banned.status_code == 200, banned.text
        await _until_invalidated(other, generation)
        assert (await second.get("/api/auth/me", headers=customer.headers)).status_code == 401

        # A change of the account's row that no service announced.
        await _warm(second, admin.headers)
        generation = other.principal_cache.generation
        async with replicas[0].state.runtime.unit_of_work() as session:
            admin_row = await session.get(User, admin.user.id)
            assert admin_row is not None
            admin_row.status = "disabled"
        await _until_invalidated(other, generation)
        assert (await second.get("/api/auth/me", headers=admin.headers)).status_code == 401
