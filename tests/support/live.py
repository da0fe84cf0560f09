"""The app served by a real uvicorn on a free port, inside the test's event loop.

For WebSocket tests: agents and clients connect over real TCP with the
``websockets`` library, as they do in production.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1; yields ``host:port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        # uvicorn waits for open connections (an agent's socket the test has
        # not closed yet); after a grace period, stop waiting for them.
        done, _pending = await asyncio.wait({task}, timeout=5)
        if not done:
            server.force_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
