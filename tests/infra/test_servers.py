"""Servers: creation under capacity, access, updates, suspension, power and the bus commands."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.events.bus import Event
from hostplane.core.runtime import Runtime
from hostplane.infra.servers.models import Server, ServerAllocation
from tests.infra.conftest import Fleet
from tests.support.identity import logged_in, other_tenant
from tests.support.infra import make_node, make_server, set_status


def create_body(fleet: Fleet, **values: Any) -> dict[str, Any]:
    return {
        "name": "minecraft-lobby",
        "description": "Main lobby server",
        "templateId": fleet.template.id,
        "nodeId": fleet.node.id,
        "allocatedMemoryMb": 2048,
        "allocatedCpuCores": 1,
        "allocatedDiskMb": 10240,
        "environment": {"MEMORY": "2048M"},
    } | values


async def commands_during(
    runtime: Runtime,
    node_id: str,
    action: Callable[[], Awaitable[httpx.Response]],
    *,
    answer: dict[str, Any] | None = None,
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """The response of ``action`` and every agent command it sent to the node.

    Stands in for the gateway and the agent: a command with a ``requestId`` is
    accepted and answered (``answer`` is an ``error`` to send instead of a
    ``response``), as commands now wait for the agent's answer.
    """
    messages: list[dict[str, Any]] = []

    async def agent(subscription: Any) -> None:
        while True:
            event: Event = await subscription.get()
            assert event.type == "node.command"
            message = event.data["message"]
            messages.append(message)
            request_id = message.get("requestId")
            if request_id is None:
                continue
            topic = f"node.{node_id}.reply.{request_id}"
            await runtime.bus.publish(
                Event("agent.accepted", {"requestId": request_id}), topic=topic
            )
            reply = (
                {"type": "error", "requestId": request_id} | answer
                if answer is not None
                else {"type": "response", "requestId": request_id, "data": {}}
            )
            await runtime.bus.publish(Event("agent.reply", {"message": reply}), topic=topic)

    async with runtime.bus.subscribe(f"node.{node_id}.commands") as subscription:
        responder = asyncio.create_task(agent(subscription))
        try:
            response = await action()
            await asyncio.sleep(0.2)
        finally:
            responder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await responder
    return response, messages


# --- create ------------------------------------------------------------------------------------


async def test_operator_creates_a_server_for_an_owner(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    created = await client.post(
        "/api/servers",
        json=create_body(fleet, ownerId=fleet.other.user.id, primaryPort=30005),
        headers=fleet.admin.headers,
    )
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert data["status"] == "stopped"
    assert data["ownerId"] == fleet.other.user.id
    assert data["node"]["id"] == fleet.node.id and data["template"]["id"] == fleet.template.id
    assert data["primaryPort"] == 30005
    assert data["containerName"].startswith("hostplane-") and len(data["uuid"]) == 36
    assert data["restartPolicy"] == "on-failure" and data["crashCount"] == 0
    # The owner now sees it.
    mine = await client.get("/api/servers", headers=fleet.other.headers)
    assert [s["id"] for s in mine.json()["data"]] == [data["id"]]


async def test_create_errors(client: httpx.AsyncClient, fleet: Fleet) -> None:
    headers = fleet.admin.headers
    missing = await client.post(
        "/api/servers", json=create_body(fleet, environment={}), headers=headers
    )
    assert missing.status_code == 400
    assert missing.json()["error"]["message"] == "Missing required template variables: MEMORY"
    too_big = await client.post(
        "/api/servers", json=create_body(fleet, allocatedMemoryMb=8000), headers=headers
    )
    assert too_big.status_code == 400
    assert too_big.json()["error"]["message"] == "Node does not have enough resources"
    assert "memoryMb" in too_big.json()["error"]["details"]["shortfalls"]
    no_template = await client.post(
        "/api/servers", json=create_body(fleet, templateId="nope"), headers=headers
    )
    assert no_template.status_code == 404
    no_node = await client.post(
        "/api/servers", json=create_body(fleet, nodeId="nope"), headers=headers
    )
    assert no_node.status_code == 404
    taken = await client.post(
        "/api/servers", json=create_body(fleet, primaryPort=30000), headers=headers
    )
    assert taken.status_code == 409  # the fleet's server holds the pool's first port
    outside = await client.post(
        "/api/servers", json=create_body(fleet, primaryPort=25565), headers=headers
    )
    assert outside.status_code == 400
    customer = await client.post(
        "/api/servers", json=create_body(fleet), headers=fleet.owner.headers
    )
    assert customer.status_code == 403


async def test_capacity_counts_every_server_on_the_node(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    # 8192 MB node, the fleet's server holds 1024: 7168 fit, 7169 do not.
    refused = await client.post(
        "/api/servers", json=create_body(fleet, allocatedMemoryMb=7169), headers=fleet.admin.headers
    )
    assert refused.status_code == 400
    fits = await client.post(
        "/api/servers", json=create_body(fleet, allocatedMemoryMb=7168), headers=fleet.admin.headers
    )
    assert fits.status_code == 201
    cpu = await client.post(
        "/api/servers",
        json=create_body(fleet, allocatedMemoryMb=1, allocatedCpuCores=3),
        headers=fleet.admin.headers,
    )
    assert cpu.status_code == 400
    assert "cpuCores" in cpu.json()["error"]["details"]["shortfalls"]


# --- read and access ---------------------------------------------------------------------------


async def test_owner_other_user_and_operator(client: httpx.AsyncClient, fleet: Fleet) -> None:
    path = f"/api/servers/{fleet.server.id}"
    assert (await client.get(path, headers=fleet.owner.headers)).status_code == 200
    assert (await client.get(path, headers=fleet.other.headers)).status_code == 404
    assert (await client.get(path, headers=fleet.admin.headers)).status_code == 200
    assert (await client.get(path)).status_code == 401
    assert (await client.get("/api/servers/nope", headers=fleet.admin.headers)).status_code == 404
    assert (await client.get("/api/servers", headers=fleet.other.headers)).json()["data"] == []
    detail = (await client.get(path, headers=fleet.owner.headers)).json()["data"]
    assert detail["environment"] == {"MEMORY": "1024M"}


async def test_list_filters_and_pagination(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    second_node, _ = await make_node(db, tenant=fleet.tenant, port_range=(31000, 31010))
    other = await make_server(
        db, tenant=fleet.tenant, owner=fleet.owner.user, node=second_node, template=fleet.template
    )
    await set_status(db, other, "running")
    headers = fleet.admin.headers
    everything = await client.get("/api/servers", headers=headers)
    assert everything.json()["pagination"] == {"page": 1, "limit": 20, "total": 2, "pages": 1}
    by_node = await client.get(f"/api/servers?nodeId={second_node.id}", headers=headers)
    assert [s["id"] for s in by_node.json()["data"]] == [other.id]
    running = await client.get("/api/servers?status=running", headers=headers)
    assert [s["id"] for s in running.json()["data"]] == [other.id]
    paged = await client.get("/api/servers?limit=1&page=2", headers=headers)
    assert len(paged.json()["data"]) == 1 and paged.json()["pagination"]["pages"] == 2
    bad = await client.get("/api/servers?status=flying", headers=headers)
    assert bad.status_code == 400


async def test_another_tenant_sees_nothing(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    foreign = await logged_in(client, db, tenant=await other_tenant(db), role="admin")
    path = f"/api/servers/{fleet.server.id}"
    assert (await client.get(path, headers=foreign.headers)).status_code == 404
    assert (await client.post(f"{path}/start", headers=foreign.headers)).status_code == 404
    assert (await client.get("/api/servers", headers=foreign.headers)).json()["data"] == []
    # Nor can it place a server on this tenant's node.
    refused = await client.post("/api/servers", json=create_body(fleet), headers=foreign.headers)
    assert refused.status_code == 404


# --- update and delete --------------------------------------------------------------------------


async def test_update(client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet) -> None:
    path = f"/api/servers/{fleet.server.id}"
    renamed = await client.put(path, json={"name": "lobby-2"}, headers=fleet.owner.headers)
    assert renamed.status_code == 200 and renamed.json()["data"]["name"] == "lobby-2"
    # Resources are the operator's (they are what the customer pays for).
    owner_resources = await client.put(
        path, json={"allocatedMemoryMb": 4096}, headers=fleet.owner.headers
    )
    assert owner_resources.status_code == 403
    grown = await client.put(path, json={"allocatedMemoryMb": 4096}, headers=fleet.admin.headers)
    assert grown.status_code == 200 and grown.json()["data"]["allocatedMemoryMb"] == 4096
    too_big = await client.put(path, json={"allocatedMemoryMb": 9000}, headers=fleet.admin.headers)
    assert too_big.status_code == 400
    missing = await client.put(path, json={"environment": {}}, headers=fleet.owner.headers)
    assert missing.status_code == 400
    await set_status(db, fleet.server, "running")
    running = await client.put(path, json={"allocatedMemoryMb": 2048}, headers=fleet.admin.headers)
    assert running.status_code == 409
    assert "running" in running.json()["error"]["message"]
    assert (
        await client.put(path, json={"name": "x"}, headers=fleet.other.headers)
    ).status_code == 404


async def test_delete(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    path = f"/api/servers/{fleet.server.id}"
    await set_status(db, fleet.server, "running")
    assert (await client.delete(path, headers=fleet.owner.headers)).status_code == 409
    await set_status(db, fleet.server, "stopped")
    assert (await client.delete(path, headers=fleet.other.headers)).status_code == 404
    response, messages = await commands_during(
        runtime, fleet.node.id, lambda: client.delete(path, headers=fleet.owner.headers)
    )
    assert response.status_code == 200
    assert response.json()["data"]["message"] == "Server deleted successfully"
    assert [m["type"] for m in messages] == ["delete_server"]
    await db.commit()
    assert await db.scalar(select(Server).where(Server.id == fleet.server.id)) is None
    assert (await client.get(path, headers=fleet.admin.headers)).status_code == 404


# --- suspension ---------------------------------------------------------------------------------


async def test_suspension(client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet) -> None:
    path = f"/api/servers/{fleet.server.id}"
    assert (await client.post(f"{path}/suspend", headers=fleet.owner.headers)).status_code == 403
    suspended = await client.post(
        f"{path}/suspend", json={"reason": "Billing issue"}, headers=fleet.admin.headers
    )
    assert suspended.status_code == 200
    data = suspended.json()["data"]
    assert data["status"] == "suspended" and data["suspensionReason"] == "Billing issue"
    assert data["suspendedByUserId"] == fleet.admin.user.id and data["suspendedAt"]
    again = await client.post(f"{path}/suspend", headers=fleet.admin.headers)
    assert again.status_code == 409

    # Every action on a suspended server is locked, even for operators.
    for method, suffix, body in [
        ("POST", "/start", None),
        ("POST", "/stop", None),
        ("POST", "/restart", None),
        ("POST", "/kill", None),
        ("POST", "/install", None),
        ("POST", "/power", {"signal": "start"}),
        ("POST", "/command", {"command": "say hi"}),
        ("PUT", "", {"name": "renamed"}),
        ("POST", "/reset-crash-count", None),
        ("PATCH", "/restart-policy", {"restartPolicy": "never"}),
        ("POST", "/allocations", {"containerPort": 30009}),
        ("POST", "/network/allocations", None),
    ]:
        for who in (fleet.owner, fleet.admin):
            response = await client.request(
                method, f"{path}{suffix}", json=body, headers=who.headers
            )
            assert response.status_code == 423, (method, suffix, response.text)
            assert response.json()["error"]["code"] == "LOCKED"
    assert (await client.delete(path, headers=fleet.owner.headers)).status_code == 423
    assert (await client.get(path, headers=fleet.owner.headers)).status_code == 200

    lifted = await client.post(f"{path}/unsuspend", headers=fleet.admin.headers)
    assert lifted.status_code == 200
    assert lifted.json()["data"] == {
        "id": fleet.server.id,
        "status": "stopped",
        "suspendedAt": None,
        "suspendedByUserId": None,
        "suspensionReason": None,
    }
    assert (await client.post(f"{path}/unsuspend", headers=fleet.admin.headers)).status_code == 409


async def test_suspending_a_running_server_stops_it(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    await set_status(db, fleet.server, "running")
    response, messages = await commands_during(
        runtime,
        fleet.node.id,
        lambda: client.post(f"/api/servers/{fleet.server.id}/suspend", headers=fleet.admin.headers),
    )
    assert response.status_code == 200
    assert [(m["type"], m["suspended"]) for m in messages] == [("stop_server", True)]


# --- power ---------------------------------------------------------------------------------------


async def test_install_start_stop_restart_kill_publish_agent_commands(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    path = f"/api/servers/{fleet.server.id}"
    headers = fleet.owner.headers

    async def act(suffix: str, body: Any = None) -> tuple[httpx.Response, list[dict[str, Any]]]:
        return await commands_during(
            runtime,
            fleet.node.id,
            lambda: client.post(f"{path}{suffix}", json=body, headers=headers),
        )

    response, messages = await act("/install")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["message"] == "Installation started"
    assert response.json()["data"]["status"] == "installing"
    (install,) = messages
    assert install["type"] == "install_server"
    assert install["serverUuid"] == fleet.server.uuid
    assert install["template"]["dockerImage"] == fleet.template.docker_image
    assert install["template"]["environment"]["MEMORY"] == "1024M"
    assert install["allocatedMemoryMb"] == 1024 and install["portBindings"] == {"30000": 30000}

    # Installing: starting now is illegal.
    conflict = await client.post(f"{path}/start", headers=headers)
    assert conflict.status_code == 409 and "installing" in conflict.json()["error"]["message"]

    await set_status(db, fleet.server, "stopped")
    response, messages = await act("/start")
    assert response.status_code == 200 and response.json()["data"]["status"] == "starting"
    (start,) = messages
    assert start["type"] == "start_server"
    # The value travels in the environment; the command only refers to it.
    assert start["template"]["startCommand"] == 'python3 -u echo.py --memory "${MEMORY}"'
    assert start["environment"]["MEMORY"] == "1024M" and start["environment"]["MODE"] == "test"
    assert start["environment"]["SERVER_PORT"] == "30000"
    assert start["suspended"] is False

    await set_status(db, fleet.server, "running")
    again = await client.post(f"{path}/start", headers=headers)
    assert again.status_code == 409

    response, messages = await act("/stop", {"timeout": 15})
    assert response.json()["data"]["status"] == "stopping"
    # The field the agent reads (StopServer.timeout_seconds).
    assert [(m["type"], m["timeoutSeconds"]) for m in messages] == [("stop_server", 15)]

    await set_status(db, fleet.server, "running")
    response, messages = await act("/restart")
    assert response.status_code == 200 and [m["type"] for m in messages] == ["restart_server"]

    await set_status(db, fleet.server, "running")
    response, messages = await act("/kill")
    assert response.json()["data"]["message"] == "Server killed"
    assert [m["type"] for m in messages] == ["kill_server"]

    await set_status(db, fleet.server, "crashed")
    response, messages = await act("/restart")
    assert response.json()["data"]["status"] == "starting"
    assert [m["type"] for m in messages] == ["start_server"]

    await set_status(db, fleet.server, "stopped")
    stopped_stop = await client.post(f"{path}/stop", headers=headers)
    assert stopped_stop.status_code == 409
    stopped_kill = await client.post(f"{path}/kill", headers=headers)
    assert stopped_kill.status_code == 409


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"signal": "start"}, "start_server"),
        ({"action": "start"}, "start_server"),
        ({"signal": "stop"}, "stop_server"),
        ({"action": "shutdown"}, "stop_server"),
        ({"action": "restart"}, "restart_server"),
        ({"signal": "kill"}, "kill_server"),
    ],
)
async def test_power_route_accepts_signal_and_action(
    client: httpx.AsyncClient,
    db: AsyncSession,
    runtime: Runtime,
    fleet: Fleet,
    body: dict[str, str],
    kind: str,
) -> None:
    if kind != "start_server":
        await set_status(db, fleet.server, "running")
    response, messages = await commands_during(
        runtime,
        fleet.node.id,
        lambda: client.post(
            f"/api/servers/{fleet.server.id}/power", json=body, headers=fleet.owner.headers
        ),
    )
    assert response.status_code == 200, response.text
    assert [m["type"] for m in messages] == [kind]


async def test_power_body_validation(client: httpx.AsyncClient, fleet: Fleet) -> None:
    path = f"/api/servers/{fleet.server.id}/power"
    for body in (
        {},
        {"signal": "start", "action": "start"},
        {"signal": "shutdown"},
        {"action": "explode"},
    ):
        response = await client.post(path, json=body, headers=fleet.owner.headers)
        assert response.status_code == 400, body


async def test_offline_node_answers_503(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    node, _ = await make_node(db, tenant=fleet.tenant, online=False, port_range=(32000, 32010))
    server = await make_server(
        db, tenant=fleet.tenant, owner=fleet.owner.user, node=node, template=fleet.template
    )
    response = await client.post(f"/api/servers/{server.id}/start", headers=fleet.owner.headers)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "NODE_OFFLINE"
    assert response.headers["retry-after"] == "30"
    await db.commit()
    fresh = await db.scalar(
        select(Server).where(Server.id == server.id).execution_options(populate_existing=True)
    )
    assert fresh is not None and fresh.status == "stopped"


async def test_other_user_cannot_power(client: httpx.AsyncClient, fleet: Fleet) -> None:
    for suffix in ("/start", "/install"):
        response = await client.post(
            f"/api/servers/{fleet.server.id}{suffix}", headers=fleet.other.headers
        )
        assert response.status_code == 404


async def test_command(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    path = f"/api/servers/{fleet.server.id}/command"
    stopped = await client.post(path, json={"command": "say hi"}, headers=fleet.owner.headers)
    assert stopped.status_code == 409
    await set_status(db, fleet.server, "running")
    response, messages = await commands_during(
        runtime,
        fleet.node.id,
        lambda: client.post(path, json={"command": "say hi"}, headers=fleet.owner.headers),
    )
    assert response.json()["data"]["message"] == "Command sent"
    (sent,) = messages
    assert sent["requestId"]
    assert {k: v for k, v in sent.items() if k != "requestId"} == {
        "type": "execute_command",
        "serverId": fleet.server.id,
        "serverUuid": fleet.server.uuid,
        "command": "say hi",
    }


async def test_crash_count_and_restart_policy(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    path = f"/api/servers/{fleet.server.id}"
    row = await db.get(Server, fleet.server.id)
    assert row is not None
    row.crash_count = 4
    await db.commit()
    reset = await client.post(f"{path}/reset-crash-count", headers=fleet.owner.headers)
    assert reset.status_code == 200 and reset.json()["data"]["message"] == "Crash count reset"
    assert (await client.get(path, headers=fleet.owner.headers)).json()["data"]["crashCount"] == 0
    policy = await client.patch(
        f"{path}/restart-policy",
        json={"restartPolicy": "always", "maxCrashCount": 3},
        headers=fleet.owner.headers,
    )
    assert policy.status_code == 200
    assert policy.json()["data"] == {"restartPolicy": "always", "maxCrashCount": 3}
    bad = await client.patch(
        f"{path}/restart-policy", json={"restartPolicy": "sometimes"}, headers=fleet.owner.headers
    )
    assert bad.status_code == 400
    assert (
        await client.post(f"{path}/reset-crash-count", headers=fleet.other.headers)
    ).status_code == 404


async def test_resources(client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet) -> None:
    from hostplane.infra.servers import service

    await service.record_stats(
        db,
        fleet.server.id,
        {"cpu": 45.2, "memoryMb": 512, "networkSent": 10, "networkReceived": 20, "diskUsageMb": 7},
    )
    await db.commit()
    response = await client.get(
        f"/api/servers/{fleet.server.id}/resources", headers=fleet.owner.headers
    )
    data = response.json()["data"]
    assert (
        data["cpuUsage"] == 45.2 and data["memoryUsageMb"] == 512 and data["memoryLimitMb"] == 1024
    )
    assert data["diskUsageMb"] == 7 and data["networkReceived"] == 20 and data["updatedAt"]
    assert (
        await client.get(f"/api/servers/{fleet.server.id}/resources", headers=fleet.other.headers)
    ).status_code == 404


async def test_port_uniqueness_is_enforced_by_the_database(db: AsyncSession, fleet: Fleet) -> None:
    from sqlalchemy.exc import IntegrityError

    db.add(
        ServerAllocation(
            tenant_id=fleet.tenant.id,
            server_id=fleet.server.id,
            node_id=fleet.node.id,
            container_port=1234,
            host_port=30000,
        )
    )
    with pytest.raises(IntegrityError):
        await db.commit()
    await db.rollback()
