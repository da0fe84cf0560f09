"""A real agent connected to the test's app over a real WebSocket.

The app is served by uvicorn in the test's event loop (so the agent's socket
is real TCP) while API calls go through the usual ASGI client: both reach the
same runtime and event bus, so a request's agent call crosses the gateway as
in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostplane.agent.config import AgentSettings
from hostplane.agent.connection import AgentConnection
from hostplane.agent.runtime import ProcessRuntime
from tests.agent.conftest import kill_everything_under
from tests.support.live import served


@dataclass
class LiveAgent:
    node_id: str
    data_dir: Path
    connection: AgentConnection
    runtime: ProcessRuntime
    task: asyncio.Task[None]

    def server_dir(self, server_id: str) -> Path:
        return self.data_dir / "servers" / server_id

    async def stop(self) -> None:
        """Hang up (the node goes quiet; its servers keep running)."""
        await self.connection.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, 5)


@contextlib.asynccontextmanager
async def live_agents(
    app: Any,
    nodes: list[tuple[str, str]],
    *,
    settings_of: dict[str, dict[str, Any]] | None = None,
    runtime_for: Callable[[Path], Any] | None = None,
) -> AsyncIterator[list[LiveAgent]]:
    """Serve ``app`` and connect one agent per ``(node id, secret)``; each has
    its own data folder and the extra settings ``settings_of[node id]``.
    Yields once every agent has shaken hands. ``runtime_for(folder)`` makes
    each agent's runtime (default: processes)."""
    async with served(app) as address, contextlib.AsyncExitStack() as stack:
        agents = []
        for node_id, secret in nodes:
            extra = (settings_of or {}).get(node_id, {})
            folder = Path(tempfile.mkdtemp(prefix="hpn-", dir="/tmp"))
            # Servers run as their own uid: the path to their folder must be
            # traversable (mkdtemp makes it 0700).
            os.chmod(folder, 0o711)  # noqa: S103 - traversal only, no listing
            stack.callback(shutil.rmtree, folder, True)
            stack.callback(kill_everything_under, folder)
            settings = AgentSettings(
                panel_url=f"ws://{address}/ws",
                node_id=node_id,
                token=secret,
                data_dir=folder,
                heartbeat_interval=5,
                health_interval=5,
                stats_interval=5,
                reconnect_min_delay=0.05,
                reconnect_max_delay=0.2,
                stop_timeout=2,
                term_timeout=2,
                **extra,
            )
            # A process runtime unless the test brings another (containers).
            runtime = runtime_for(folder) if runtime_for is not None else ProcessRuntime(folder)
            connection = AgentConnection(settings, runtime)
            task = asyncio.create_task(connection.run())
            agent = LiveAgent(node_id, folder, connection, runtime, task)
            stack.push_async_callback(runtime.close)
            stack.push_async_callback(agent.stop)
            agents.append(agent)
        for agent in agents:
            await asyncio.wait_for(agent.connection.connected.wait(), 10)
        # The gateway subscribes to the node's commands right after the handshake.
        await asyncio.sleep(0.1)
        yield agents
