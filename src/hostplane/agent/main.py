"""The agent's entry point: reattach to running servers, then serve the panel.

SIGTERM or SIGINT closes the panel connection and exits; the servers keep
running (under their supervisors, or as containers) and the next agent
reattaches to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from hostplane.agent.config import AgentSettings
from hostplane.agent.connection import AgentConnection
from hostplane.agent.isolation import policy
from hostplane.agent.runtime import ProcessRuntime
from hostplane.agent.runtimes import ServerRuntime
from hostplane.core.heap import settle_heap

logger = logging.getLogger(__name__)


def build_runtime(settings: AgentSettings) -> ServerRuntime:
    """The runtime ``settings.runtime`` names."""
    if settings.runtime == "docker":
        # Imported here: aiodocker is only needed on container nodes.
        from hostplane.agent.runtimes.docker import DockerRuntime

        return DockerRuntime(
            settings.data_dir,
            docker_host=settings.docker_host,
            api_version=settings.docker_api_version,
            node_id=settings.node_id,
            memory_overhead_mb=settings.docker_memory_overhead_mb,
            pids_limit=settings.docker_pids_limit,
            bind_address=settings.docker_bind_address,
            network_mode=settings.docker_network_mode,
            labels=settings.docker_labels,
            userns_mode=settings.docker_userns_mode,
            readonly_rootfs=settings.docker_readonly_rootfs,
            uid_base=settings.server_uid_base,
            uid_count=settings.server_uid_count,
        )
    isolation = policy(settings)
    return ProcessRuntime(
        settings.data_dir,
        sandbox=isolation.sandbox,
        uid_base=settings.server_uid_base,
        uid_count=settings.server_uid_count,
        network=settings.sandbox_network,
        refusal=isolation.refusal,
    )


async def serve(settings: AgentSettings) -> None:
    isolation = policy(settings)
    logger.info("%s", isolation.summary)
    if isolation.warning is not None:
        logger.warning("%s", isolation.warning)
    runtime = build_runtime(settings)
    await runtime.reattach()
    connection = AgentConnection(settings, runtime)
    settle_heap()
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
