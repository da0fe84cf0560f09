"""A panel, an agent running servers as Podman containers, and a browser-like client.

Template and server through the API; install in a container; start; console
round trip over the client WebSocket; resource stats; a crash restarted by
the policy; kill -9 the agent while the container runs and see a new agent
re-attach (running, console works); a graceful stop.
"""

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from hostplane.core.ids import new_id
from tests.e2e.panel import live_panel, start_agent
from tests.e2e.test_console_end_to_end import WAIT, console_has, next_matching, state_is
from tests.support.containers import Engine, podman_engine, remove_labelled
from tests.support.processes import (
    base_env,
    stop_process,
)

pytestmark = pytest.mark.e2e

ECHO_SCRIPT = """#!/bin/sh
echo "Echo server ready"
while read -r line; do
  case "$line" in
    stop) echo "Stopping"; exit 0 ;;
    crash) echo "Crashing"; exit 3 ;;
  esac
  echo "echo: $line"
done
"""


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with podman_engine() as found:
        yield found


def busybox_template(image: str) -> dict[str, Any]:
    install = (
        f"#!/bin/sh\nset -e\ncat > echo.sh <<'SH'\n{ECHO_SCRIPT}SH\necho 'Installed echo.sh'\n"
    )
    return {
        "name": f"Busybox Echo {new_id()[-4:]}",
        "description": "A shell echo server in the busybox test image.",
        "docker_image": image,
        "install_image": image,
        "start_command": "exec sh echo.sh",
        "stop_command": "stop",
        "ports": [],
        "environment": {},
        "required_variables": [],
        "install_script": install,
    }


async def container_state(engine: Engine, node_id: str) -> list[tuple[str, str]]:
    found = await engine.containers(f"hostplane.node={node_id}")
    return [(str(c["Id"]), str(c["State"])) for c in found]


async def say_until_echoed(ws: Any, server_id: str, text: str, *, attempts: int = 30) -> None:
    for _ in range(attempts):
        await ws.send(
            json.dumps({"type": "console_input", "serverId": server_id, "data": f"{text}\n"})
        )
        try:
            await next_matching(ws, console_has(server_id, f"echo: {text}"), timeout=1.0)
        except TimeoutError:
            continue
        return
    raise AssertionError(f"no echo of {text!r}")


async def test_containers_panel_agent_and_client(tmp_path: Path, engine: Engine) -> None:
    async with live_panel(tmp_path) as live:
        port, token, http = live.port, live.token, live.http
        node = await live.add_node("pod")
        template_response = await http.post("/api/templates", json=busybox_template(engine.image))
        assert template_response.status_code == 201, template_response.text
        template = template_response.json()["data"]
        created = await http.post(
            "/api/servers",
            json={
                "name": "boxed-echo",
                "templateId": template["id"],
                "nodeId": node["id"],
                "allocatedMemoryMb": 64,
                "allocatedCpuCores": 0.5,
                "allocatedDiskMb": 100,
                "restartPolicy": "on-failure",
                "maxCrashCount": 5,
            },
        )
        assert created.status_code == 201, created.text
        server_id = created.json()["data"]["id"]

        agent_env = base_env(
            HOSTPLANE_AGENT_PANEL_URL=f"ws://127.0.0.1:{port}/ws",
            HOSTPLANE_AGENT_NODE_ID=node["id"],
            HOSTPLANE_AGENT_TOKEN=node["secret"],
            HOSTPLANE_AGENT_HEARTBEAT_INTERVAL="1",
            HOSTPLANE_AGENT_STATS_INTERVAL="1",
            HOSTPLANE_AGENT_RUNTIME="docker",
            HOSTPLANE_AGENT_DOCKER_HOST=engine.host,
            HOSTPLANE_AGENT_DOCKER_LABELS=json.dumps(engine.labels),
        )
        agent = start_agent(tmp_path, agent_env, "agent-1.log")
        try:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws?token={token}") as browser:
                await browser.send(json.dumps({"type": "subscribe", "serverId": server_id}))
                await next_matching(browser, lambda m: m.get("type") == "subscribed")
                for _ in range(100):
                    if (await http.get(f"/api/nodes/{node['id']}")).json()["data"]["isOnline"]:
                        break
                    await asyncio.sleep(0.2)

                # Install: a short-lived container writes into the data folder.
                assert (await http.post(f"/api/servers/{server_id}/install")).status_code == 200
                await next_matching(browser, console_has(server_id, "Installed echo.sh"))
                # The install container is waited for and removed before "stopped" is
                # reported; on a loaded 2-core machine Podman can take a while over it.
                await next_matching(browser, state_is(server_id, "stopped"), timeout=3 * WAIT)
                assert (tmp_path / "agent" / "servers" / server_id / "echo.sh").is_file()

                assert (await http.post(f"/api/servers/{server_id}/start")).status_code == 200
                await next_matching(browser, console_has(server_id, "Echo server ready"))
                await say_until_echoed(browser, server_id, "hello")
                stats = await next_matching(
                    browser,
                    lambda m: m.get("type") == "resource_stats" and m.get("serverId") == server_id,
                )
                assert stats["memoryMb"] > 0
                running = await container_state(engine, node["id"])
                assert [state for _, state in running] == ["running"]

                # A crash: the restart policy starts a new container.
                await browser.send(
                    json.dumps({"type": "console_input", "serverId": server_id, "data": "crash\n"})
                )
                await next_matching(browser, state_is(server_id, "crashed"))
                await next_matching(browser, console_has(server_id, "Echo server ready"))
                details = (await http.get(f"/api/servers/{server_id}")).json()["data"]
                assert details["crashCount"] == 1
                await say_until_echoed(browser, server_id, "after-crash")

                # kill -9 the agent: the container keeps running.
                before = await container_state(engine, node["id"])
                assert [state for _, state in before] == ["running"]
                agent.send_signal(signal.SIGKILL)
                agent.wait(10)
                await asyncio.sleep(0.5)
                assert await container_state(engine, node["id"]) == before
                agent = start_agent(tmp_path, agent_env, "agent-2.log")
                await say_until_echoed(browser, server_id, "again", attempts=60)
                assert await container_state(engine, node["id"]) == before
                details = (await http.get(f"/api/servers/{server_id}")).json()["data"]
                assert details["status"] == "running"

                # Graceful stop: the template's stop command on the console.
                assert (await http.post(f"/api/servers/{server_id}/stop")).status_code == 200
                await next_matching(browser, console_has(server_id, "Stopping"))
                await next_matching(browser, state_is(server_id, "stopped"))
                assert [state for _, state in await container_state(engine, node["id"])] == [
                    "exited"
                ]
        finally:
            stop_process(agent)
            await remove_labelled(engine.docker, f"hostplane.node={node['id']}")
