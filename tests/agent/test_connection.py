"""The agent's panel connection against a real WebSocket server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hostplane.agent.config import AgentSettings
from hostplane.agent.connection import AgentConnection
from hostplane.agent.runtime import ProcessRuntime
from hostplane.protocol import (
    ConsoleOutput,
    Error,
    Heartbeat,
    NodeHandshake,
    Reconcile,
    Response,
    ServerStateUpdate,
)
from tests.agent.panel_stub import PanelStub, running_panel


@pytest.fixture
async def panel() -> AsyncIterator[PanelStub]:
    async with running_panel() as stub:
        yield stub


@pytest.fixture
async def agent(panel: PanelStub, data_dir: Path) -> AsyncIterator[AgentConnection]:
    settings = AgentSettings(
        panel_url=panel.url,
        node_id="node-1",
        token="node-token",
        data_dir=data_dir,
        heartbeat_interval=0.2,
        health_interval=0.3,
        stats_interval=0.3,
        reconnect_min_delay=0.05,
        reconnect_max_delay=0.2,
    )
    runtime = ProcessRuntime(data_dir)
    connection = AgentConnection(settings, runtime)
    task = asyncio.create_task(connection.run())
    try:
        yield connection
    finally:
        await connection.close()
        await asyncio.wait_for(task, 5)
        await runtime.close()


async def test_handshake_reconcile_heartbeat_and_health(
    panel: PanelStub, agent: AgentConnection
) -> None:
    hello = await panel.expect(NodeHandshake)
    assert (hello.node_id, hello.token) == ("node-1", "node-token")
    assert panel.queries[0] == {"nodeId": ["node-1"], "token": ["node-token"]}
    reconcile = await panel.expect(Reconcile)
    assert reconcile.servers == []
    await panel.expect(Heartbeat, within=2)
    await panel.expect(Heartbeat, within=2)
    from hostplane.protocol import HealthReport

    health = await panel.expect(HealthReport, within=2)
    assert health.node_id == "node-1"
    assert health.memory_total_mb > 0


async def test_reconnects_after_the_panel_drops_and_reconciles_again(
    panel: PanelStub, agent: AgentConnection
) -> None:
    await panel.expect(Reconcile)
    await panel.connections[-1].close()
    await panel.expect(NodeHandshake, within=5)
    await panel.expect(Reconcile, within=5)
    assert len(panel.connections) == 2
    assert agent.handshakes == 2


SERVER = (
    "import sys\n"
    "print('ready', flush=True)\n"
    "for line in sys.stdin:\n"
    "    if line.strip() == 'quit':\n"
    "        sys.exit(0)\n"
    "    print('got', line.strip(), flush=True)\n"
)


async def test_requests_are_answered_and_events_forwarded(
    panel: PanelStub, agent: AgentConnection
) -> None:
    await panel.expect(Reconcile)
    command = f"/usr/bin/python3 -u -c {shlex.quote(SERVER)}"
    await panel.send(
        {
            "type": "start_server",
            "requestId": "r1",
            "serverId": "srv1",
            "serverUuid": "8fec71a3-9d19-45f7-8362-900674cde45c",
            "template": {"startCommand": command, "stopCommand": "quit"},
            "environment": {"EULA": "TRUE"},
        }
    )
    started = await panel.expect(Response, request_id="r1")
    assert started.data["pid"] > 0
    await panel.expect(ServerStateUpdate, server_id="srv1", state="running")
    ready = await panel.expect(ConsoleOutput, server_id="srv1")
    assert (ready.seq, ready.data) == (1, "ready\n")

    await panel.send({"type": "console_input", "serverId": "srv1", "data": "hello\n"})
    await panel.send(
        {"type": "execute_command", "requestId": "r2", "serverId": "srv1", "command": "again"}
    )
    await panel.expect(Response, request_id="r2")
    seen: list[tuple[int, str]] = []
    while len(seen) < 2:
        out = await panel.expect(ConsoleOutput, server_id="srv1")
        assert out.seq is not None
        seen.extend((out.seq + i, line) for i, line in enumerate(out.lines()))
    assert seen == [(2, "got hello"), (3, "got again")]

    await panel.send(
        {
            "type": "file_operation",
            "requestId": "r3",
            "operation": "list",
            "serverId": "srv1",
            "path": "/",
        }
    )
    listing = await panel.expect(Response, request_id="r3")
    assert isinstance(listing.data, list)
    await panel.send({"type": "file_list", "requestId": "r5", "serverId": "srv1", "path": "/.."})
    assert (await panel.expect(Error, request_id="r5")).code == "INVALID_PATH"
    await panel.send(
        {"type": "console_input", "requestId": "r4", "serverId": "nope", "data": "x\n"}
    )
    assert (await panel.expect(Error, request_id="r4")).code == "NOT_RUNNING"
    await panel.connections[-1].send('{"type": "no_such_thing"}')
    assert (await panel.expect(Error)).code == "UNKNOWN_TYPE"

    await panel.send(
        {"type": "stop_server", "requestId": "r5", "serverId": "srv1", "timeoutSeconds": 5}
    )
    # Answered once the stop is under way; the exit comes as a state update.
    stopping = await panel.expect(Response, request_id="r5")
    assert stopping.data["state"] in ("running", "stopping")
    update = await panel.expect(ServerStateUpdate, server_id="srv1", state="stopped")
    assert update.exit_code == 0


async def test_install_streams_output_and_states(panel: PanelStub, agent: AgentConnection) -> None:
    await panel.expect(Reconcile)
    await panel.send(
        {
            "type": "install_server",
            "requestId": "i1",
            "serverId": "srv2",
            "serverUuid": "u",
            "template": {"environment": {"VERSION": "1.21"}},
            "installScript": "echo installing $VERSION\n",
        }
    )
    # Accepted at once (an install may take far longer than a request waits).
    accepted = await panel.expect(Response, request_id="i1")
    assert accepted.data == {"accepted": True}
    out = await panel.expect(ConsoleOutput, server_id="srv2")
    assert out.data == "installing 1.21\n"
    await panel.expect(ServerStateUpdate, server_id="srv2", state="stopped")


async def test_an_install_without_a_script_still_reports_its_end(
    panel: PanelStub, agent: AgentConnection
) -> None:
    await panel.expect(Reconcile)
    await panel.send(
        {"type": "install_server", "requestId": "i2", "serverId": "srv4", "serverUuid": "u"}
    )
    await panel.expect(Response, request_id="i2")
    ready = await panel.expect(ServerStateUpdate, server_id="srv4")
    assert (ready.state, ready.exit_code) == ("stopped", 0)


async def test_a_failing_install_reports_install_failed_with_the_reason(
    panel: PanelStub, agent: AgentConnection
) -> None:
    await panel.expect(Reconcile)
    await panel.send(
        {
            "type": "install_server",
            "requestId": "i3",
            "serverId": "srv5",
            "serverUuid": "u",
            "installScript": "echo half way; exit 4\n",
        }
    )
    await panel.expect(Response, request_id="i3")
    failed = await panel.expect(ServerStateUpdate, server_id="srv5", state="install_failed")
    assert failed.exit_code == 4 and failed.message and "4" in failed.message


async def test_an_install_under_way_is_in_the_reconcile_and_refuses_a_second(
    panel: PanelStub, agent: AgentConnection
) -> None:
    await panel.expect(Reconcile)
    await panel.send(
        {
            "type": "install_server",
            "requestId": "i4",
            "serverId": "srv6",
            "serverUuid": "u",
            "installScript": "sleep 3\n",
        }
    )
    await panel.expect(Response, request_id="i4")
    await panel.send(
        {"type": "install_server", "requestId": "i5", "serverId": "srv6", "serverUuid": "u"}
    )
    assert (await panel.expect(Error, request_id="i5")).code == "SERVER_BUSY"
    await panel.connections[-1].close()
    reconcile = await panel.expect(Reconcile, within=5)
    assert [(s.server_id, s.state) for s in reconcile.servers] == [("srv6", "installing")]
    await panel.expect(ServerStateUpdate, server_id="srv6", state="stopped", within=10)


async def test_restart_of_a_server_that_is_not_running_is_refused(
    panel: PanelStub, agent: AgentConnection
) -> None:
    await panel.expect(Reconcile)
    await panel.send({"type": "restart_server", "requestId": "x1", "serverId": "srv7"})
    assert (await panel.expect(Error, request_id="x1")).code == "NOT_RUNNING"


async def test_reconcile_lists_running_servers_after_reconnect(
    panel: PanelStub, agent: AgentConnection
) -> None:
    await panel.expect(Reconcile)
    status = await agent.runtime.start("srv3", "/usr/bin/python3 -c 'import time; time.sleep(30)'")
    await panel.connections[-1].close()
    reconcile = await panel.expect(Reconcile, within=5)
    assert [(s.server_id, s.state, s.pid) for s in reconcile.servers] == [
        ("srv3", "running", status.pid)
    ]
    await agent.runtime.kill("srv3")
