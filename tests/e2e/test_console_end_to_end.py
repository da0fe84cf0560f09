"""A panel, an agent and a browser-like client as three separate processes.

Create node, template and server; install; start; see the output; send a
command and see its echo; kill -9 the agent and see the server keep running;
restart the agent and see it re-attached and streaming; crash the server and
see the restart policy act; stop it gracefully.
"""

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import websockets

from tests.e2e.panel import live_panel, start_agent
from tests.support.processes import (
    base_env,
    stop_process,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "hostplane" / "templates"
WAIT = 30.0


async def next_matching(ws: Any, predicate: Any, *, timeout: float = WAIT) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if predicate(message):
                return message


def console_has(server_id: str, text: str) -> Any:
    return lambda m: (
        m.get("type") == "server_log"
        and m.get("serverId") == server_id
        and text in m.get("data", "")
    )


def state_is(server_id: str, state: str) -> Any:
    return lambda m: (
        m.get("type") == "server_state_update"
        and m.get("serverId") == server_id
        and m.get("state") == state
    )


def echo_pids(tmp_path: Path) -> list[int]:
    """The echo servers running out of this test's agent folder."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"echo.py" in cmdline and cwd.startswith(str(tmp_path)):
            pids.append(int(entry.name))
    return pids


async def test_panel_agent_and_client_as_separate_processes(tmp_path: Path) -> None:
    async with live_panel(tmp_path) as live:
        port, token, http = live.port, live.token, live.http

        node = await live.add_node("local")
        template_body = json.loads((TEMPLATES / "python-echo.json").read_text())
        template = (await http.post("/api/templates", json=template_body)).json()["data"]
        created = await http.post(
            "/api/servers",
            json={
                "name": "echo",
                "templateId": template["id"],
                "nodeId": node["id"],
                "allocatedMemoryMb": 256,
                "allocatedCpuCores": 1,
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
            HOSTPLANE_AGENT_SANDBOX="false",
            HOSTPLANE_AGENT_ALLOW_UNSANDBOXED="true",
        )
        # Unsandboxed, a server runs as its own uid in the host's file system
        # and must be able to walk down to its folder (pytest's are 0700).
        for folder in (tmp_path, tmp_path.parent, tmp_path.parent.parent):
            folder.chmod(folder.stat().st_mode | 0o111)
        agent = start_agent(tmp_path, agent_env, "agent-1.log")
        try:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws?token={token}") as browser:
                await browser.send(json.dumps({"type": "subscribe", "serverId": server_id}))
                await next_matching(browser, lambda m: m.get("type") == "subscribed")
                for _ in range(100):  # the agent has dialled in
                    if (await http.get(f"/api/nodes/{node['id']}")).json()["data"]["isOnline"]:
                        break
                    await asyncio.sleep(0.2)

                assert (await http.post(f"/api/servers/{server_id}/install")).status_code == 200
                await next_matching(browser, console_has(server_id, "Installed echo.py"))
                await next_matching(browser, state_is(server_id, "stopped"))

                assert (await http.post(f"/api/servers/{server_id}/start")).status_code == 200
                await next_matching(browser, console_has(server_id, "Echo server ready"))
                await browser.send(
                    json.dumps({"type": "console_input", "serverId": server_id, "data": "hello\n"})
                )
                await next_matching(browser, console_has(server_id, "echo: hello"))

                # kill -9 the agent: the server keeps running.
                before = echo_pids(tmp_path)
                assert len(before) == 1
                agent.send_signal(signal.SIGKILL)
                agent.wait(10)
                await asyncio.sleep(0.5)
                assert echo_pids(tmp_path) == before
                agent = start_agent(tmp_path, agent_env, "agent-2.log")
                await asyncio.sleep(1.0)
                for _ in range(50):  # re-attached: input reaches the same process again
                    await browser.send(
                        json.dumps(
                            {
                                "type": "console_input",
                                "serverId": server_id,
                                "data": "again\n",
                            }
                        )
                    )
                    try:
                        await next_matching(
                            browser, console_has(server_id, "echo: again"), timeout=1.0
                        )
                        break
                    except TimeoutError:
                        continue
                else:
                    raise AssertionError("no echo after the agent restarted")
                assert echo_pids(tmp_path) == before

                # A crash: the restart policy starts it again.
                os.kill(before[0], signal.SIGKILL)
                await next_matching(browser, state_is(server_id, "crashed"))
                await next_matching(browser, console_has(server_id, "Echo server ready"))
                details = (await http.get(f"/api/servers/{server_id}")).json()["data"]
                assert details["crashCount"] == 1

                # Graceful stop: the template's stop command.
                assert (await http.post(f"/api/servers/{server_id}/stop")).status_code == 200
                await next_matching(browser, console_has(server_id, "Stopping"))
                await next_matching(browser, state_is(server_id, "stopped"))
                assert echo_pids(tmp_path) == []
        finally:
            stop_process(agent)
            for pid in echo_pids(tmp_path):
                os.kill(pid, signal.SIGKILL)
