"""The agent's entry point: reattach to running servers, then serve the panel.

SIGTERM or SIGINT closes the panel connection and exits; the servers keep
running under their supervisors and the next agent reattaches to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from hostplane.agent.config import AgentSettings
from hostplane.agent.connection import AgentConnection
from hostplane.agent.runtime import ProcessRuntime


async def serve(settings: AgentSettings) -> None:
    runtime = ProcessRuntime(settings.data_dir, sandbox=settings.sandbox)
    await runtime.reattach()
    connection = AgentConnection(settings, runtime)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(connection.close()))
    try:
        await connection.run()
    finally:
        await runtime.close()


def run(settings: AgentSettings) -> None:
    """Run the agent until SIGTERM/SIGINT."""
    asyncio.run(serve(settings))
