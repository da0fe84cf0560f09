"""What a request handler needs from the agent's connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from hostplane.agent.config import AgentSettings
from hostplane.agent.disk import DiskUsage
from hostplane.agent.peers import PeerListener
from hostplane.agent.runtime import AgentRuntimeError
from hostplane.agent.streams import StreamHub
from hostplane.protocol import OperationProgress, WireModel

# Progress events are for people watching a bar: a few per second is plenty.
PROGRESS_INTERVAL = 0.5


class ServerBusy(AgentRuntimeError):
    code = "SERVER_BUSY"


@dataclass
class HandlerContext:
    settings: AgentSettings
    streams: StreamHub
    send: Callable[[WireModel], Awaitable[None]]
    server_dir: Callable[[str], Path]
    is_running: Callable[[str], Awaitable[bool]]
    peers: PeerListener
    file_owner: Callable[[str], tuple[int, int] | None] = lambda server_id: None
    """Who the server's files belong to (``None``: leave them as written)."""
    busy: dict[str, str] = field(default_factory=dict)
    """Servers whose files are being replaced or copied, and by what."""
    _notes: set[asyncio.Task[None]] = field(default_factory=set)
    disk: DiskUsage = field(init=False)
    """Every server's disk usage, shared by all that write into its folder."""

    def __post_init__(self) -> None:
        self.disk = DiskUsage(self.server_dir)

    @contextlib.contextmanager
    def exclusive(self, server_id: str, operation: str) -> Iterator[None]:
        """Hold the server for ``operation``: starts, installs and other such
        operations are refused until it ends (a restore swaps the folder away)."""
        current = self.busy.get(server_id)
        if current is not None:
            raise ServerBusy(f"the server is busy ({current})")
        self.busy[server_id] = operation
        try:
            yield
        finally:
            self.busy.pop(server_id, None)

    def ensure_idle(self, server_id: str) -> None:
        current = self.busy.get(server_id)
        if current is not None:
            raise ServerBusy(f"the server is busy ({current})")

    @property
    def data_dir(self) -> Path:
        return Path(self.settings.data_dir)

    def progress(
        self, server_id: str, operation: str, request_id: str | None
    ) -> Callable[[int, int], None]:
        """A callback for worker threads that sends throttled ``operation_progress``."""
        loop = asyncio.get_running_loop()
        last = 0.0

        def report(done: int, total: int) -> None:
            nonlocal last
            now = loop.time()
            if now - last < PROGRESS_INTERVAL and done < total:
                return
            last = now
            message = OperationProgress(
                server_id=server_id,
                operation=operation,
                done=done,
                total=total,
                request_id=request_id,
            )
            asyncio.run_coroutine_threadsafe(self._send_quietly(message), loop)

        return report

    async def _send_quietly(self, message: WireModel) -> None:
        try:
            await self.send(message)
        except (ConnectionError, OSError, websockets.ConnectionClosed):
            # A report, not a request: while the panel is away it is dropped.
            return

    def notify(self, message: WireModel) -> None:
        """Send a report without waiting for it (callable from loop callbacks)."""
        task = asyncio.get_running_loop().create_task(self._send_quietly(message))
        self._notes.add(task)
        task.add_done_callback(self._notes.discard)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)
