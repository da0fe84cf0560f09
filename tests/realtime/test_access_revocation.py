"""Open ``/ws`` sockets follow revocation: bans, removed subusers, expiry, revoked keys.

Real sockets over TCP, a fake-free agent connection (the test speaks the agent
protocol), and revocations made through the HTTP API as an operator would.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.app import build_runtime, create_app
from hostplane.core.clock import utcnow
from hostplane.core.ids import new_id
from hostplane.core.runtime import Runtime
from hostplane.core.security.tokens import unverified_claims
from hostplane.identity.auth.keys import key_ring
from hostplane.infra.servers.schemas import MAX_COMMAND_LENGTH
from tests.conftest import make_settings
from tests.support.identity import LoggedIn, logged_in, platform_tenant
from tests.support.infra import make_node, make_server, make_template
from tests.support.live import served
from tests.support.services import require_redis

TIMEOUT = 10.0
# How long "nothing arrives" is watched for.
QUIET = 0.5


@pytest.fixture
async def address(app: Any) -> AsyncIterator[str]:
    async with served(app) as host:
        yield host


async def receive(ws: Any, wanted: str, *, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next message of type ``wanted`` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if message.get("type") == wanted:
                return message


async def until_closed(ws: Any) -> tuple[list[dict[str, Any]], int | None, str]:
    """Every message up to the close, the close code and its reason."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            while True:
                seen.append(json.loads(await ws.recv()))
    return seen, ws.close_code, ws.close_reason or ""


async def quiet(ws: Any, wanted: str) -> list[dict[str, Any]]:
    """Messages of type ``wanted`` that arrive within ``QUIET`` seconds."""
    found: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError, websockets.exceptions.ConnectionClosed):
        async with asyncio.timeout(QUIET):
            while True:
                message = json.loads(await ws.recv())
                if message.get("type") == wanted:
                    found.append(message)
    return found


async def connect_agent(address: str, node_id: str, token: str) -> Any:
    ws = await websockets.connect(f"ws://{address}/ws?nodeId={node_id}&token={token}")
    await ws.send(json.dumps({"type": "node_handshake", "nodeId": node_id, "token": token}))
    assert (await receive(ws, "node_handshake_response"))["nodeId"] == node_id
    return ws


async def connect(address: str, token: str) -> Any:
    return await websockets.connect(f"ws://{address}/ws?token={token}")


async def subscribe(ws: Any, server_id: str) -> None:
    await ws.send(json.dumps({"type": "subscribe", "serverId": server_id}))
    assert (await receive(ws, "subscribed"))["serverId"] == server_id


async def console_output(agent: Any, server_id: str, data: str, seq: int) -> None:
    await agent.send(
        json.dumps({"type": "console_output", "serverId": server_id, "data": data, "seq": seq})
    )


async def console_input(ws: Any, server_id: str, data: str) -> None:
    await ws.send(json.dumps({"type": "console_input", "serverId": server_id, "data": data}))


async def world(client: httpx.AsyncClient, db: AsyncSession) -> tuple[LoggedIn, Any, Any, str]:
    """An owner, their running server and its node (with the node's secret)."""
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant)
    node, secret = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    server = await make_server(
        db, tenant=tenant, owner=owner.user, node=node, template=template, status="running"
    )
    return owner, server, node, secret


async def test_a_ban_refuses_input_stops_lines_and_closes_the_socket(
    address: str, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner, server, node, secret = await world(client, db)
    admin = await logged_in(client, db, role="admin")
    agent = await connect_agent(address, node.id, secret)
    viewer = await connect(address, owner.token)
    try:
        await subscribe(viewer, server.id)
        await console_output(agent, server.id, "before\n", 1)
        assert (await receive(viewer, "server_log"))["data"] == "before\n"

        banned = await client.post(
            f"/api/admin/users/{owner.user.id}/ban", json={"reason": "abuse"}, headers=admin.headers
        )
        assert banned.status_code == 200, banned.text
        # The socket may already be closing: the input must not reach the server either way.
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await console_input(viewer, server.id, "stop\n")
        await console_output(agent, server.id, "after\n", 2)

        seen, code, reason = await until_closed(viewer)
        assert code == 4401
        assert reason
        assert {"type": "error", "code": "ACCESS_REVOKED"}.items() <= seen[-1].items()
        assert [m for m in seen if m["type"] == "server_log"] == []
        assert await quiet(agent, "console_input") == []
    finally:
        await viewer.close()
        await agent.close()


async def test_a_removed_subuser_stops_receiving_lines_at_once(
    address: str, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner, server, node, secret = await world(client, db)
    helper = await logged_in(client, db)
    added = await client.post(
        f"/api/servers/{server.id}/users",
        json={"userId": helper.user.id, "permissions": ["control.console", "server.read"]},
        headers=owner.headers,
    )
    assert added.status_code == 201, added.text
    agent = await connect_agent(address, node.id, secret)
    watcher = await connect(address, owner.token)
    helping = await connect(address, helper.token)
    try:
        await subscribe(watcher, server.id)
        await subscribe(helping, server.id)
        await console_output(agent, server.id, "shared\n", 1)
        assert (await receive(helping, "server_log"))["data"] == "shared\n"
        assert (await receive(watcher, "server_log"))["data"] == "shared\n"

        removed = await client.delete(
            f"/api/servers/{server.id}/users/{helper.user.id}", headers=owner.headers
        )
        assert removed.status_code == 200, removed.text
        await console_output(agent, server.id, "private\n", 2)
        # The owner still gets the line; the removed subuser is told and gets nothing.
        assert (await receive(watcher, "server_log"))["data"] == "private\n"
        ended = await receive(helping, "subscription_ended")
        assert ended["serverId"] == server.id
        assert ended["code"] == "ACCESS_REVOKED"
        assert await quiet(helping, "server_log") == []

        # The account is still valid: the socket stays open, the server is now unknown to it.
        await console_input(helping, server.id, "op me\n")
        refused = await receive(helping, "error")
        assert refused["code"] == "NOT_FOUND"
        assert await quiet(agent, "console_input") == []
    finally:
        await helping.close()
        await watcher.close()
        await agent.close()


async def test_logging_out_closes_the_sessions_socket(
    address: str, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner, server, node, secret = await world(client, db)
    agent = await connect_agent(address, node.id, secret)
    viewer = await connect(address, owner.token)
    try:
        await subscribe(viewer, server.id)
        logged_out = await client.post("/api/auth/logout", headers=owner.headers)
        assert logged_out.status_code == 200, logged_out.text
        await console_output(agent, server.id, "after logout\n", 1)
        seen, code, _ = await until_closed(viewer)
        assert code == 4401
        assert seen[-1]["code"] == "ACCESS_REVOKED"
        assert [m for m in seen if m["type"] == "server_log"] == []
    finally:
        await viewer.close()
        await agent.close()


async def test_losing_the_role_that_gave_access_ends_the_subscription(
    address: str, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    """An operator watching a customer's console through a role loses it with the role."""
    _owner, server, node, secret = await world(client, db)
    admin = await logged_in(client, db, role="admin")
    operator = await logged_in(client, db, role="admin-l1")
    roles = await client.get(f"/api/admin/users/{operator.user.id}/roles", headers=admin.headers)
    assert roles.status_code == 200, roles.text
    [l1] = [role["id"] for role in roles.json()["data"] if role["name"] == "admin-l1"]
    agent = await connect_agent(address, node.id, secret)
    watching = await connect(address, operator.token)
    try:
        await subscribe(watching, server.id)
        await console_output(agent, server.id, "one\n", 1)
        assert (await receive(watching, "server_log"))["data"] == "one\n"

        taken = await client.delete(
            f"/api/admin/users/{operator.user.id}/roles/{l1}", headers=admin.headers
        )
        assert taken.status_code == 200, taken.text
        await console_output(agent, server.id, "two\n", 2)
        ended = await receive(watching, "subscription_ended")
        assert ended["serverId"] == server.id
        assert await quiet(watching, "server_log") == []
    finally:
        await watching.close()
        await agent.close()


async def _short_lived_token(runtime: Runtime, token: str, seconds: int) -> str:
    """The same login session's token, expiring in ``seconds``."""
    claims = unverified_claims(token)
    now = int(utcnow().timestamp())
    claims.update(iat=now, exp=now + seconds, jti=new_id())
    return (await key_ring(runtime)).sign(claims)


async def test_an_expiring_token_ends_the_socket(
    address: str, client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    owner, server, node, secret = await world(client, db)
    token = await _short_lived_token(runtime, owner.token, 2)
    agent = await connect_agent(address, node.id, secret)
    viewer = await connect(address, token)
    try:
        await subscribe(viewer, server.id)
        await asyncio.sleep(2.2)
        # The next message is refused, and the socket closes (if the expiry
        # timer has not closed it already).
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await console_input(viewer, server.id, "late\n")
        await console_output(agent, server.id, "after expiry\n", 1)
        seen, code, _ = await until_closed(viewer)
        assert code == 4401
        assert seen[-1]["code"] == "TOKEN_EXPIRED"
        assert [m for m in seen if m["type"] == "server_log"] == []
        assert await quiet(agent, "console_input") == []
    finally:
        await viewer.close()
        await agent.close()


async def test_an_expiring_token_is_refused_on_its_next_message(
    address: str, client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    """No subscription, no event: the message itself finds the token expired."""
    owner, server, _node, _secret = await world(client, db)
    token = await _short_lived_token(runtime, owner.token, 1)
    viewer = await connect(address, token)
    try:
        await asyncio.sleep(1.1)
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await viewer.send(json.dumps({"type": "unsubscribe", "serverId": server.id}))
        seen, code, _ = await until_closed(viewer)
        assert code == 4401
        assert seen == [{"type": "error", "code": "TOKEN_EXPIRED", "message": seen[0]["message"]}]
    finally:
        await viewer.close()


async def test_a_revoked_api_key_closes_its_socket(
    address: str, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner, server, node, secret = await world(client, db)
    minted = await client.post(
        "/api/account/api-keys",
        json={"name": "Console bot", "scopes": ["control.console", "server.read"]},
        headers=owner.headers,
    )
    assert minted.status_code == 201, minted.text
    key = minted.json()["data"]
    agent = await connect_agent(address, node.id, secret)
    bot = await connect(address, key["key"])
    try:
        await subscribe(bot, server.id)
        await console_output(agent, server.id, "one\n", 1)
        assert (await receive(bot, "server_log"))["data"] == "one\n"

        revoked = await client.delete(f"/api/account/api-keys/{key['id']}", headers=owner.headers)
        assert revoked.status_code == 200, revoked.text
        await console_output(agent, server.id, "two\n", 2)
        seen, code, _ = await until_closed(bot)
        assert code == 4401
        assert seen[-1]["code"] == "ACCESS_REVOKED"
        assert [m for m in seen if m["type"] == "server_log"] == []
    finally:
        await bot.close()
        await agent.close()


async def test_console_input_over_the_rest_limit_is_refused(
    address: str, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner, server, node, secret = await world(client, db)
    agent = await connect_agent(address, node.id, secret)
    viewer = await connect(address, owner.token)
    try:
        await console_input(viewer, server.id, "x" * 5000)
        refused = await receive(viewer, "error")
        assert refused["code"] == "VALIDATION_ERROR"
        assert refused["serverId"] == server.id
        # Multi-byte characters count in bytes: 2049 of them are 4098 bytes.
        await console_input(viewer, server.id, "é" * 2049)
        assert (await receive(viewer, "error"))["code"] == "VALIDATION_ERROR"
        assert await quiet(agent, "console_input") == []

        exactly = "y" * MAX_COMMAND_LENGTH
        await console_input(viewer, server.id, exactly)
        assert (await receive(agent, "console_input"))["data"] == exactly
    finally:
        await viewer.close()
        await agent.close()


async def test_a_ban_on_one_replica_closes_a_socket_on_another(
    tmp_path: Path, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    """Two panel replicas share a Redis bus: the ban is made on one, the socket is on the other."""
    redis_url = await require_redis()
    owner, server, node, secret = await world(client, db)
    admin = await logged_in(client, db, role="admin")
    helper = await logged_in(client, db)
    added = await client.post(
        f"/api/servers/{server.id}/users",
        json={"userId": helper.user.id, "permissions": ["control.console"]},
        headers=owner.headers,
    )
    assert added.status_code == 201, added.text

    settings = make_settings(tmp_path, redis_url=redis_url, event_channel_prefix=f"test-{new_id()}")
    replicas = [create_app(settings, runtime=build_runtime(settings)) for _ in range(2)]
    async with (
        replicas[0].router.lifespan_context(replicas[0]),
        replicas[1].router.lifespan_context(replicas[1]),
        served(replicas[0]) as first,
        served(replicas[1]) as second,
        httpx.AsyncClient(base_url=f"http://{first}", timeout=TIMEOUT) as on_first,
    ):
        agent = await connect_agent(first, node.id, secret)
        viewer = await connect(second, owner.token)
        helping = await connect(second, helper.token)
        try:
            await subscribe(viewer, server.id)
            await subscribe(helping, server.id)
            await console_output(agent, server.id, "one\n", 1)
            assert (await receive(viewer, "server_log"))["data"] == "one\n"
            assert (await receive(helping, "server_log"))["data"] == "one\n"

            removed = await on_first.delete(
                f"/api/servers/{server.id}/users/{helper.user.id}", headers=owner.headers
            )
            assert removed.status_code == 200, removed.text
            assert (await receive(helping, "subscription_ended"))["serverId"] == server.id

            banned = await on_first.post(
                f"/api/admin/users/{owner.user.id}/ban", json={}, headers=admin.headers
            )
            assert banned.status_code == 200, banned.text
            await console_output(agent, server.id, "two\n", 2)
            seen, code, _ = await until_closed(viewer)
            assert code == 4401
            assert seen[-1]["code"] == "ACCESS_REVOKED"
            assert [m for m in seen if m["type"] == "server_log"] == []
            assert await quiet(helping, "server_log") == []
        finally:
            await helping.close()
            await viewer.close()
            await agent.close()
