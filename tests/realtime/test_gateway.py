"""``/ws`` over real TCP: an agent and clients, with the panel in between."""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.app import build_runtime, create_app
from hostplane.core.ids import new_id
from hostplane.protocol import CLOSE_REPLACED, LinesDropped, Response, dump
from tests.conftest import make_settings
from tests.support.identity import LoggedIn, logged_in, platform_tenant
from tests.support.infra import make_node, make_server, make_template
from tests.support.live import served
from tests.support.services import require_redis

TIMEOUT = 10.0


async def receive(ws: Any, wanted: str, *, server_id: str | None = None) -> dict[str, Any]:
    """The next message of type ``wanted`` (others are skipped)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            message = json.loads(await ws.recv())
            if message.get("type") == wanted and (
                server_id is None or message.get("serverId") == server_id
            ):
                return message


@pytest.fixture
async def address(app: Any) -> AsyncIterator[str]:
    async with served(app) as host:
        yield host


async def connect_agent(address: str, node_id: str, token: str) -> Any:
    ws = await websockets.connect(f"ws://{address}/ws?nodeId={node_id}&token={token}")
    await ws.send(json.dumps({"type": "node_handshake", "nodeId": node_id, "token": token}))
    assert (await receive(ws, "node_handshake_response"))["nodeId"] == node_id
    return ws


async def connect_client(address: str, account: LoggedIn) -> Any:
    return await websockets.connect(f"ws://{address}/ws?token={account.token}")


async def test_console_flows_from_agent_to_client_and_input_back(
    address: str, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant)
    node, secret = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    server = await make_server(db, tenant=tenant, owner=owner.user, node=node, template=template)

    agent = await connect_agent(address, node.id, secret)
    viewer = await connect_client(address, owner)
    try:
        await viewer.send(json.dumps({"type": "subscribe", "serverId": server.id}))
        await receive(viewer, "subscribed", server_id=server.id)

        started = await client.post(f"/api/servers/{server.id}/start", headers=owner.headers)
        assert started.status_code == 200, started.text
        command = await receive(agent, "start_server", server_id=server.id)
        assert command["serverUuid"] == server.uuid

        await agent.send(
            json.dumps({"type": "server_state_update", "serverId": server.id, "state": "running"})
        )
        state = await receive(viewer, "server_state_update", server_id=server.id)
        if state["state"] == "starting":  # the start request's own transition comes first
            state = await receive(viewer, "server_state_update", server_id=server.id)
        assert state["state"] == "running"

        await agent.send(
            json.dumps(
                {
                    "type": "console_output",
                    "serverId": server.id,
                    "stream": "stdout",
                    "data": "hello\nworld\n",
                    "seq": 1,
                }
            )
        )
        line = await receive(viewer, "server_log", server_id=server.id)
        assert line["data"] == "hello\nworld\n"
        assert line["seq"] == 1

        await viewer.send(
            json.dumps({"type": "console_input", "serverId": server.id, "data": "say hi\n"})
        )
        typed = await receive(agent, "console_input", server_id=server.id)
        assert typed["data"] == "say hi\n"
    finally:
        await viewer.close()
        await agent.close()

    await asyncio.sleep(1.2)  # the gateway stores console lines in batches
    logs = await client.get(f"/api/servers/{server.id}/logs", headers=owner.headers)
    assert [entry["data"] for entry in logs.json()["data"]][-2:] == ["hello", "world"]


async def test_a_crash_reported_by_the_agent_triggers_the_restart_policy(
    address: str, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant)
    node, secret = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    server = await make_server(
        db, tenant=tenant, owner=owner.user, node=node, template=template, status="running"
    )
    policy = await client.patch(
        f"/api/servers/{server.id}/restart-policy",
        json={"restartPolicy": "on-failure", "maxCrashCount": 3},
        headers=owner.headers,
    )
    assert policy.status_code == 200, policy.text

    agent = await connect_agent(address, node.id, secret)
    try:
        await agent.send(
            json.dumps(
                {
                    "type": "server_state_update",
                    "serverId": server.id,
                    "state": "crashed",
                    "exitCode": 1,
                }
            )
        )
        restart = await receive(agent, "start_server", server_id=server.id)
        assert restart["serverId"] == server.id
    finally:
        await agent.close()
    details = (await client.get(f"/api/servers/{server.id}", headers=owner.headers)).json()["data"]
    assert details["crashCount"] == 1


async def test_a_newer_agent_connection_replaces_the_older_one(
    address: str, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    """One connection per node: a command never reaches two agents."""
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant)
    node, secret = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    server = await make_server(db, tenant=tenant, owner=owner.user, node=node, template=template)

    older = await connect_agent(address, node.id, secret)
    newer = await connect_agent(address, node.id, secret)
    try:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await receive(older, "never")
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_REPLACED
        # The node stays online on the newer connection, which gets the commands.
        starting = asyncio.create_task(
            client.post(f"/api/servers/{server.id}/start", headers=owner.headers)
        )
        command = await receive(newer, "start_server", server_id=server.id)
        assert command["serverUuid"] == server.uuid
        await newer.send(dump(Response(request_id=command["requestId"])))
        started = await starting
        assert started.status_code == 200, started.text
    finally:
        await older.close()
        await newer.close()


async def test_wrong_node_credentials_are_refused(address: str, db: AsyncSession) -> None:
    tenant = await platform_tenant(db)
    node, _secret = await make_node(db, tenant=tenant)
    with pytest.raises(websockets.exceptions.InvalidStatus):
        ws = await websockets.connect(f"ws://{address}/ws?nodeId={node.id}&token=wrong")
        await ws.recv()


async def test_clients_only_see_servers_they_may_see(
    address: str, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant)
    stranger = await logged_in(client, db, tenant=tenant)
    node, secret = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    mine = await make_server(
        db, tenant=tenant, owner=owner.user, node=node, template=template, status="running"
    )
    other = await make_server(
        db, tenant=tenant, owner=stranger.user, node=node, template=template, status="running"
    )

    agent = await connect_agent(address, node.id, secret)
    snoop = await connect_client(address, stranger)
    try:
        await snoop.send(json.dumps({"type": "subscribe", "serverId": mine.id}))
        refused = await receive(snoop, "error")
        assert refused["code"] == "NOT_FOUND"
        await snoop.send(
            json.dumps({"type": "console_input", "serverId": mine.id, "data": "stop\n"})
        )
        assert (await receive(snoop, "error"))["code"] == "NOT_FOUND"

        await snoop.send(json.dumps({"type": "subscribe", "serverId": other.id}))
        await receive(snoop, "subscribed", server_id=other.id)
        await agent.send(
            json.dumps(
                {"type": "console_output", "serverId": mine.id, "data": "secret\n", "seq": 1}
            )
        )
        await agent.send(
            json.dumps(
                {"type": "console_output", "serverId": other.id, "data": "public\n", "seq": 1}
            )
        )
        seen = await receive(snoop, "server_log")
        assert seen["serverId"] == other.id
        assert seen["data"] == "public\n"
    finally:
        await snoop.close()
        await agent.close()


async def test_anonymous_clients_are_refused(address: str) -> None:
    with pytest.raises(websockets.exceptions.InvalidStatus):
        ws = await websockets.connect(f"ws://{address}/ws")
        await ws.recv()


async def test_two_agents_on_two_nodes_stay_apart(
    address: str, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    """A client of a server on one node never sees another's lines, and an agent
    cannot speak for a server placed on another node."""
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    node_a, secret_a = await make_node(db, tenant=tenant)
    node_b, secret_b = await make_node(db, tenant=tenant, port_range=(31000, 31009))
    server_a = await make_server(
        db, tenant=tenant, owner=owner.user, node=node_a, template=template, status="running"
    )
    server_b = await make_server(
        db, tenant=tenant, owner=owner.user, node=node_b, template=template, status="running"
    )

    agent_a = await connect_agent(address, node_a.id, secret_a)
    agent_b = await connect_agent(address, node_b.id, secret_b)
    viewer = await connect_client(address, owner)
    try:
        await viewer.send(json.dumps({"type": "subscribe", "serverId": server_a.id}))
        await receive(viewer, "subscribed", server_id=server_a.id)
        await agent_b.send(
            json.dumps(
                {"type": "console_output", "serverId": server_b.id, "data": "from b\n", "seq": 1}
            )
        )
        await agent_b.send(
            json.dumps(
                {
                    "type": "console_output",
                    "serverId": server_a.id,
                    "data": "forged by b\n",
                    "seq": 99,
                }
            )
        )
        await agent_b.send(
            json.dumps({"type": "server_state_update", "serverId": server_a.id, "state": "stopped"})
        )
        await agent_a.send(
            json.dumps(
                {"type": "console_output", "serverId": server_a.id, "data": "from a\n", "seq": 1}
            )
        )
        seen = await receive(viewer, "server_log")
        assert (seen["serverId"], seen["data"], seen["seq"]) == (server_a.id, "from a\n", 1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                extra = json.loads(await viewer.recv())
                raise AssertionError(f"unexpected message: {extra}")
    finally:
        await viewer.close()
        await agent_a.close()
        await agent_b.close()
    status = (await client.get(f"/api/servers/{server_a.id}", headers=owner.headers)).json()[
        "data"
    ]["status"]
    assert status == "running", "node b's report about a server on node a was ignored"


async def test_the_websocket_route_hands_out_a_working_url_and_token(
    address: str, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant)
    node, _secret = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    server = await make_server(db, tenant=tenant, owner=owner.user, node=node, template=template)
    access = (
        await client.get(f"/api/servers/{server.id}/websocket", headers=owner.headers)
    ).json()["data"]
    assert access["url"].startswith("ws://") and access["url"].endswith("/ws")
    async with websockets.connect(f"ws://{address}/ws?token={access['token']}") as ws:
        await ws.send(json.dumps({"type": "subscribe", "serverId": server.id}))
        await receive(ws, "subscribed", server_id=server.id)


async def test_a_reconnecting_client_gets_what_it_missed_without_gaps_or_repeats(
    address: str, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant)
    node, secret = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    server = await make_server(
        db, tenant=tenant, owner=owner.user, node=node, template=template, status="running"
    )

    def line(seq: int, text: str) -> str:
        return json.dumps(
            {"type": "console_output", "serverId": server.id, "data": text, "seq": seq}
        )

    agent = await connect_agent(address, node.id, secret)
    try:
        first = await connect_client(address, owner)
        await first.send(json.dumps({"type": "subscribe", "serverId": server.id}))
        await receive(first, "subscribed")
        await agent.send(line(1, "one\ntwo\n"))
        assert (await receive(first, "server_log"))["seq"] == 1
        await first.close()  # the browser tab loses its connection

        await agent.send(line(3, "three\n"))
        await agent.send(line(4, "four\nfive\n"))
        await asyncio.sleep(0.2)
        second = await connect_client(address, owner)
        await second.send(json.dumps({"type": "subscribe", "serverId": server.id, "lastSeq": 2}))
        await receive(second, "subscribed")
        await agent.send(line(6, "six\n"))
        got = []
        while not got or got[-1][0] != 6:
            message = await receive(second, "server_log")
            got.append((message["seq"], message["data"]))
        assert got == [(3, "three\n"), (4, "four\nfive\n"), (6, "six\n")]

        stale = await connect_client(address, owner)
        await stale.send(json.dumps({"type": "subscribe", "serverId": server.id, "lastSeq": 4}))
        await receive(stale, "subscribed")
        assert (await receive(stale, "server_log"))["data"] == "five\n", (
            "only the part of a batch after lastSeq"
        )
        await second.close()
        await stale.close()
    finally:
        await agent.close()


async def test_lines_older_than_the_buffer_are_reported_missing(
    address: str, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant)
    node, secret = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    server = await make_server(
        db, tenant=tenant, owner=owner.user, node=node, template=template, status="running"
    )
    agent = await connect_agent(address, node.id, secret)
    viewer = await connect_client(address, owner)
    try:
        # The panel first heard of this server at seq 500: 1..499 are gone.
        await agent.send(
            json.dumps(
                {"type": "console_output", "serverId": server.id, "data": "late\n", "seq": 500}
            )
        )
        await asyncio.sleep(0.2)
        await viewer.send(json.dumps({"type": "subscribe", "serverId": server.id, "lastSeq": 0}))
        await receive(viewer, "subscribed")
        assert (await receive(viewer, "server_log"))["seq"] == 500
        dropped = await receive(viewer, "lines_dropped")
        assert dropped["count"] == 499
    finally:
        await viewer.close()
        await agent.close()


async def test_lines_the_agent_no_longer_held_are_reported_to_every_viewer(
    address: str, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant)
    node, secret = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    server = await make_server(
        db, tenant=tenant, owner=owner.user, node=node, template=template, status="running"
    )
    agent = await connect_agent(address, node.id, secret)
    viewers = [await connect_client(address, owner) for _ in range(2)]
    try:
        for viewer in viewers:
            await viewer.send(json.dumps({"type": "subscribe", "serverId": server.id}))
            await receive(viewer, "subscribed")
        # The agent fell behind its server by more than the supervisor keeps: a gap,
        # and nothing after it for a while (the end of a burst).
        await agent.send(dump(LinesDropped(server_id=server.id, count=1234)))
        for viewer in viewers:
            dropped = await receive(viewer, "lines_dropped")
            assert (dropped["serverId"], dropped["count"]) == (server.id, 1234)
    finally:
        for viewer in viewers:
            await viewer.close()
        await agent.close()


async def test_an_agent_on_one_replica_feeds_a_client_on_another(
    tmp_path: Path, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    """Two panel replicas share a Redis bus; the agent dials one, the browser the other."""
    redis_url = await require_redis()
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant)
    node, secret = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    server = await make_server(
        db, tenant=tenant, owner=owner.user, node=node, template=template, status="running"
    )

    settings = make_settings(tmp_path, redis_url=redis_url, event_channel_prefix=f"test-{new_id()}")
    replicas = [create_app(settings, runtime=build_runtime(settings)) for _ in range(2)]
    async with (
        replicas[0].router.lifespan_context(replicas[0]),
        replicas[1].router.lifespan_context(replicas[1]),
        served(replicas[0]) as first,
        served(replicas[1]) as second,
    ):
        agent = await connect_agent(first, node.id, secret)
        viewer = await connect_client(second, owner)
        try:
            await viewer.send(json.dumps({"type": "subscribe", "serverId": server.id}))
            await receive(viewer, "subscribed")
            await agent.send(
                json.dumps(
                    {"type": "console_output", "serverId": server.id, "data": "across\n", "seq": 1}
                )
            )
            assert (await receive(viewer, "server_log"))["data"] == "across\n"
            await viewer.send(
                json.dumps({"type": "console_input", "serverId": server.id, "data": "back\n"})
            )
            assert (await receive(agent, "console_input"))["data"] == "back\n"
        finally:
            await viewer.close()
            await agent.close()
