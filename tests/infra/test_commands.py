"""Commands to agents are acknowledged; refusals roll the status back; nothing waits for ever."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.agent.connection import AgentConnection
from hostplane.core.clock import utcnow
from hostplane.core.config import ServerSettings
from hostplane.core.events.bus import Event
from hostplane.core.runtime import Runtime
from hostplane.infra.nodes.models import Node, PendingServerDelete
from hostplane.infra.servers import sweeper
from hostplane.infra.servers.models import Server
from hostplane.platform.jobs.worker import Worker
from tests.infra.conftest import Fleet
from tests.infra.test_servers import commands_during
from tests.support.agents import LiveAgent, live_agents
from tests.support.infra import make_node, make_server, make_template, set_status
from tests.support.trees import write_tree


async def fresh(db: AsyncSession, server_id: str) -> Server:
    await db.commit()
    row = await db.scalar(
        select(Server).where(Server.id == server_id).execution_options(populate_existing=True)
    )
    assert row is not None
    return row


async def until(check: Any, *, within: float = 20.0) -> Any:
    """Poll ``check`` (async, returns a truthy value when done) until it passes."""
    deadline = time.monotonic() + within
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


# --- through the bus (the agent's answers stood in for) ---------------------------------------


async def test_a_refused_start_answers_409_and_rolls_the_status_back_with_the_reason(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    path = f"/api/servers/{fleet.server.id}"
    async with runtime.bus.subscribe(f"server.{fleet.server.id}.state") as states:
        response, messages = await commands_during(
            runtime,
            fleet.node.id,
            lambda: client.post(f"{path}/start", headers=fleet.owner.headers),
            answer={"code": "PORT_IN_USE", "message": "a host port of this server is in use"},
        )
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "PORT_IN_USE"
        assert error["message"] == "a host port of this server is in use"
        assert [m["type"] for m in messages] == ["start_server"]
        row = await fresh(db, fleet.server.id)
        assert row.status == "stopped"
        assert row.status_reason == "a host port of this server is in use"
        seen = [await asyncio.wait_for(states.get(), 5) for _ in range(2)]
    assert [(e.data["previous"], e.data["state"]) for e in seen] == [
        ("stopped", "starting"),
        ("starting", "stopped"),
    ]
    assert seen[1].data["message"] == "a host port of this server is in use"
    detail = (await client.get(path, headers=fleet.owner.headers)).json()["data"]
    assert detail["status"] == "stopped"
    assert detail["statusReason"] == "a host port of this server is in use"


async def test_a_node_nobody_holds_answers_503_promptly_and_changes_nothing(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    # The node looks connected, but no gateway holds its agent (a replica died).
    started = time.monotonic()
    response = await client.post(
        f"/api/servers/{fleet.server.id}/start", headers=fleet.owner.headers
    )
    assert time.monotonic() - started < 10
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "NODE_UNAVAILABLE"
    row = await fresh(db, fleet.server.id)
    assert row.status == "stopped"
    assert row.status_reason


async def test_deleting_a_server_of_an_offline_node_is_remembered(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    node, _ = await make_node(db, tenant=fleet.tenant, online=False, port_range=(32000, 32010))
    server = await make_server(
        db, tenant=fleet.tenant, owner=fleet.owner.user, node=node, template=fleet.template
    )
    await db.commit()
    response = await client.delete(f"/api/servers/{server.id}", headers=fleet.owner.headers)
    assert response.status_code == 202, response.text
    assert response.json()["data"]["status"] == "deleted"
    await db.commit()
    db.expunge_all()
    assert await db.get(Server, server.id) is None
    pending = (await db.scalars(select(PendingServerDelete))).all()
    assert [(p.node_id, p.server_id, p.server_uuid) for p in pending] == [
        (node.id, server.id, server.uuid)
    ]


# --- the sweeper ------------------------------------------------------------------------------


async def test_the_sweeper_ends_overdue_passing_states_with_a_reason_and_an_event(
    db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    installing = await make_server(
        db, tenant=fleet.tenant, owner=fleet.owner.user, node=fleet.node, template=fleet.template
    )
    recent = await make_server(
        db, tenant=fleet.tenant, owner=fleet.owner.user, node=fleet.node, template=fleet.template
    )
    await db.commit()
    long_ago = utcnow() - timedelta(hours=1)
    for server, status, changed in (
        (fleet.server, "starting", long_ago),
        (installing, "installing", long_ago),
        (recent, "starting", utcnow()),
    ):
        await db.execute(
            update(Server)
            .where(Server.id == server.id)
            .values(status=status, status_changed_at=changed)
        )
    await db.commit()
    async with runtime.bus.subscribe(f"server.{fleet.server.id}.state") as states:
        await Worker(runtime).enqueue_recurring()
        await Worker(runtime).run_until_idle()
        event: Event = await asyncio.wait_for(states.get(), 5)
    assert event.type == "server.state_changed"
    assert (event.data["previous"], event.data["state"]) == ("starting", "stopped")
    assert "starting took longer than 2 min" in event.data["message"]
    stuck = await fresh(db, fleet.server.id)
    assert stuck.status == "stopped" and stuck.status_reason == event.data["message"]
    failed = await fresh(db, installing.id)
    assert failed.status == "install_failed"
    assert "installing took longer than 30 min" in (failed.status_reason or "")
    assert (await fresh(db, recent.id)).status == "starting"


async def test_sweep_leaves_states_within_their_timeout(db: AsyncSession, fleet: Fleet) -> None:
    await set_status(db, fleet.server, "stopping")
    async with db.begin():
        assert await sweeper.sweep(db, ServerSettings()) == 0
    assert (await fresh(db, fleet.server.id)).status == "stopping"


# --- with a real agent ------------------------------------------------------------------------


async def _agent_site(db: AsyncSession, fleet: Fleet, **template: Any) -> tuple[Node, str, Server]:
    node, secret = await make_node(db, tenant=fleet.tenant, port_range=(33000, 33010))
    made = await make_template(db, tenant=fleet.tenant, **template)
    server = await make_server(
        db, tenant=fleet.tenant, owner=fleet.owner.user, node=node, template=made
    )
    await db.commit()
    return node, secret, server


async def _status(client: httpx.AsyncClient, fleet: Fleet, server_id: str) -> dict[str, Any]:
    data: dict[str, Any] = (
        await client.get(f"/api/servers/{server_id}", headers=fleet.owner.headers)
    ).json()["data"]
    return data


async def test_install_without_a_script_ends_stopped_through_a_real_agent(
    app: object, client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    node, secret, server = await _agent_site(db, fleet, name="No script")
    async with live_agents(app, [(node.id, secret)]):
        response = await client.post(
            f"/api/servers/{server.id}/install", headers=fleet.owner.headers
        )
        assert response.status_code == 200, response.text

        async def ready() -> bool:
            return (await _status(client, fleet, server.id))["status"] == "stopped"

        await until(ready)


async def test_a_failing_install_ends_install_failed_and_can_be_retried(
    app: object, client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    node, secret, server = await _agent_site(
        db, fleet, name="Broken", install_script="echo fetching; exit 7\n"
    )
    path = f"/api/servers/{server.id}"
    async with live_agents(app, [(node.id, secret)]):
        for _ in range(2):  # the second time is the retry
            response = await client.post(f"{path}/install", headers=fleet.owner.headers)
            assert response.status_code == 200, response.text

            async def failed() -> dict[str, Any] | None:
                data = await _status(client, fleet, server.id)
                return data if data["status"] == "install_failed" else None

            data = await until(failed)
            assert "7" in data["statusReason"]
        start = await client.post(f"{path}/start", headers=fleet.owner.headers)
        assert start.status_code == 409


async def _reconnect(agent: LiveAgent) -> tuple[AgentConnection, asyncio.Task[None]]:
    connection = AgentConnection(agent.connection.settings, agent.runtime)
    task = asyncio.create_task(connection.run())
    await asyncio.wait_for(connection.connected.wait(), 10)
    return connection, task


async def test_node_goes_offline_at_once_and_a_delete_waits_for_its_return(
    app: object, client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    node, secret, server = await _agent_site(db, fleet, name="Kept files")
    async with live_agents(app, [(node.id, secret)]) as [agent]:
        folder: Path = agent.server_dir(server.id)
        await asyncio.to_thread(write_tree, folder)

        await agent.stop()
        started = time.monotonic()

        async def offline() -> bool:
            nodes = (await client.get("/api/nodes", headers=fleet.admin.headers)).json()["data"]
            return not next(n for n in nodes if n["id"] == node.id)["isOnline"]

        await until(offline, within=5)
        assert time.monotonic() - started < 5

        # A power command now answers 503 at once instead of stalling.
        await set_status(db, server, "stopped")
        started = time.monotonic()
        refused = await client.post(f"/api/servers/{server.id}/start", headers=fleet.owner.headers)
        assert refused.status_code == 503 and time.monotonic() - started < 5
        # Refused by the presence check, not after waiting for an agent to take it.
        assert refused.json()["error"]["code"] == "NODE_OFFLINE"

        deleted = await client.delete(f"/api/servers/{server.id}", headers=fleet.owner.headers)
        assert deleted.status_code == 202, deleted.text
        assert await asyncio.to_thread(folder.exists)

        connection, task = await _reconnect(agent)
        try:

            async def removed() -> bool:
                await db.commit()
                left = (await db.scalars(select(PendingServerDelete))).all()
                return not left and not await asyncio.to_thread(folder.exists)

            await until(removed)
        finally:
            await connection.close()
            await asyncio.wait_for(task, 5)
