"""What the agent's panel connection needs from a runtime.

Two runtimes implement it: :class:`hostplane.agent.runtime.ProcessRuntime`
(supervised processes, optionally under bubblewrap) and
:class:`hostplane.agent.runtimes.docker.DockerRuntime` (one container per
server through the Docker Engine API, Docker or Podman). Both keep a
server's files in ``data_dir/servers/<id>/``, so file and backup handling
works the same for either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from hostplane.agent.runtime import (
    LaunchSpec,
    OutputBatch,
    RuntimeEvent,
    ServerStats,
    ServerStatus,
)


class ServerRuntime(Protocol):
    """Runs servers on this node. Errors are :class:`~hostplane.agent.runtime.AgentRuntimeError`
    subclasses whose message may be shown to users (no host paths)."""

    data_dir: Path

    def server_dir(self, server_id: str) -> Path:
        """The server's data folder. Raises ``InvalidServerId``."""
        ...

    def file_owner(self, server_id: str) -> tuple[int, int] | None:
        """The uid and gid of the server's processes, when it has its own."""
        ...

    async def status(self, server_id: str) -> ServerStatus:
        """The live or last recorded state; ``unknown`` if never started."""
        ...

    async def start(
        self,
        server_id: str,
        command: str,
        *,
        env: dict[str, str] | None = None,
        stop_command: str | None = None,
        attach: bool = True,
        spec: LaunchSpec | None = None,
    ) -> ServerStatus:
        """Start ``command`` in the server's data folder. Raises ``ServerAlreadyRunning``."""
        ...

    async def stop(
        self,
        server_id: str,
        *,
        stop_timeout: float = 30.0,
        term_timeout: float = 10.0,
        wait: bool = True,
    ) -> ServerStatus:
        """Stop command, SIGTERM after ``stop_timeout``, SIGKILL after ``term_timeout``.
        Raises ``ServerNotRunning``."""
        ...

    async def restart(
        self, server_id: str, *, stop_timeout: float = 30.0, term_timeout: float = 10.0
    ) -> ServerStatus:
        """Stop if running, then start as last started. Raises ``ServerNotRunning``
        if it was never started."""
        ...

    async def kill(self, server_id: str, *, wait: bool = True) -> ServerStatus:
        """SIGKILL. Raises ``ServerNotRunning``."""
        ...

    async def send_input(self, server_id: str, data: str) -> None:
        """Write ``data`` to the server's console as is. Raises ``ServerNotRunning``."""
        ...

    async def forget(self, server_id: str) -> None:
        """Remove what the runtime keeps for a deleted, stopped server (container,
        run folder). Raises ``ServerAlreadyRunning`` while it runs."""
        ...

    async def list_servers(self) -> list[ServerStatus]:
        """Every server this node has run, with its current status."""
        ...

    def attached(self) -> list[str]:
        """The servers whose output and state this runtime streams."""
        ...

    async def stats(self, server_id: str) -> ServerStats:
        """CPU % (100 = one core), memory and process count. Raises ``ServerNotRunning``."""
        ...

    async def next_event(self, within: float | None = None) -> RuntimeEvent:
        """The next event of an attached server (``TimeoutError`` after ``within`` s)."""
        ...

    def install(
        self,
        server_id: str,
        script: str,
        *,
        env: dict[str, str] | None = None,
        spec: LaunchSpec | None = None,
    ) -> AsyncIterator[OutputBatch]:
        """Run the install script, yielding its output (``seq=None``); raises
        ``InstallFailed`` at the end on a non-zero exit, ``ServerAlreadyRunning``
        at once if the server runs."""
        ...

    async def reattach(self) -> list[ServerStatus]:
        """After start-up: attach to running servers, report exits missed while away."""
        ...

    async def close(self) -> None:
        """Stop streaming; the servers keep running."""
        ...
