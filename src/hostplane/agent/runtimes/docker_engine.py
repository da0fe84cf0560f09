"""A typed, narrow client of the Docker Engine API (Docker or Podman), over aiodocker.

Only what :class:`~hostplane.agent.runtimes.docker.DockerRuntime` needs. Every
aiodocker or aiohttp exception is translated here: callers see
:class:`EngineUnavailable` (the engine cannot be reached; retry later),
:class:`EngineRefused` (the engine answered with an error) or ``None`` for
"no such container/image". The raw engine messages are kept on the exception
for the agent's log; the text shown to panel users never contains them
(they name host paths and API internals).
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import aiohttp

from hostplane.agent.runtime import AgentRuntimeError

_FRAME_HEADER = struct.Struct(">BxxxL")
_STREAMS = {0: "stdin", 1: "stdout", 2: "stderr"}
_CONNECTION_FAILED = 900
"""aiodocker's status for "could not talk to the engine at all"."""


class EngineError(AgentRuntimeError):
    """A failed engine call; ``detail`` is the engine's own text, for logs only."""

    def __init__(self, message: str, *, detail: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.detail = detail
        self.status = status


class EngineUnavailable(EngineError):
    code = "RUNTIME_UNAVAILABLE"


class EngineRefused(EngineError):
    pass


def _translate(exc: BaseException, action: str) -> EngineError:
    if isinstance(exc, aiodocker.DockerError):
        if exc.status == _CONNECTION_FAILED:
            return EngineUnavailable(
                "the container engine is not reachable", detail=exc.message, status=exc.status
            )
        return EngineRefused(
            f"the container engine refused to {action}", detail=exc.message, status=exc.status
        )
    return EngineUnavailable(
        "the container engine is not reachable", detail=repr(exc), status=_CONNECTION_FAILED
    )


_ENGINE_ERRORS = (aiodocker.DockerError, aiohttp.ClientError, ConnectionError)


class EngineClient:
    """One connection pool to the engine at ``url`` (``unix://...`` or ``tcp://...``),
    pinned to ``api_version`` (with the ``v``: Podman accepts anything silently)."""

    def __init__(self, url: str, *, api_version: str = "v1.41") -> None:
        self.url = url
        self.api_version = api_version
        self._docker: aiodocker.Docker | None = None

    @property
    def docker(self) -> aiodocker.Docker:
        # Created lazily: aiohttp sessions must be made inside a running loop.
        if self._docker is None:
            self._docker = aiodocker.Docker(url=self.url, api_version=self.api_version)
        return self._docker

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    async def _json(self, path: str, action: str, *, method: str = "GET", **kwargs: Any) -> Any:
        try:
            return await self.docker._query_json(path, method=method, **kwargs)
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, action) from exc

    async def _call(self, path: str, action: str, *, method: str = "POST", **kwargs: Any) -> None:
        try:
            async with self.docker._query(path, method=method, **kwargs):
                pass
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, action) from exc

    # ------------------------------------------------------------------ system

    async def ping(self) -> None:
        await self._json("version", "answer")

    # ------------------------------------------------------------------ images

    async def image_exists(self, image: str) -> bool:
        try:
            await self._json(f"images/{image}/json", "inspect the image")
        except EngineRefused as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def pull(self, image: str) -> AsyncIterator[str]:
        """Pull ``image``, yielding its progress as lines a person can read
        (one per layer and status, not per byte count). The engine reports
        pull errors inside a 200 stream; they raise :class:`EngineRefused`."""
        seen: set[tuple[str, str]] = set()
        try:
            async with self.docker._query(
                "images/create", method="POST", params={"fromImage": image}, timeout=None
            ) as response:
                async for raw in response.content:
                    line = raw.strip()
                    if not line:
                        continue
                    report = json.loads(line)
                    if not isinstance(report, dict):
                        continue
                    if report.get("error"):
                        raise EngineRefused(
                            "the container engine refused to pull the image",
                            detail=str(report["error"]),
                        )
                    text = pull_status_line(report)
                    key = (str(report.get("id") or ""), str(report.get("status") or ""))
                    if text and key not in seen:
                        seen.add(key)
                        yield text
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "pull the image") from exc
        except ValueError as exc:
            raise EngineRefused("the container engine refused to pull the image") from exc

    # ------------------------------------------------------------------ containers

    async def inspect(self, container: str) -> dict[str, Any] | None:
        """The container's inspect document, or ``None`` if it does not exist."""
        try:
            data = await self._json(f"containers/{container}/json", "inspect the container")
        except EngineRefused as exc:
            if exc.status == 404:
                return None
            raise
        return data if isinstance(data, dict) else None

    async def list_by_label(self, label: str) -> list[dict[str, Any]]:
        """Every container (running or not) that has ``label`` (``key`` or ``key=value``)."""
        data = await self._json(
            "containers/json",
            "list containers",
            params={"all": "true", "filters": json.dumps({"label": [label]})},
        )
        return [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []

    async def create(self, name: str, config: dict[str, Any]) -> str:
        data = await self._json(
            "containers/create",
            "create the container",
            method="POST",
            params={"name": name},
            data=json.dumps(config),
        )
        return str(data["Id"])

    async def start(self, container: str) -> None:
        await self._call(f"containers/{container}/start", "start the container")

    async def kill(self, container: str, signal: str) -> None:
        await self._call(
            f"containers/{container}/kill", "signal the container", params={"signal": signal}
        )

    async def stop(self, container: str, *, grace: int) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds, done by the engine itself."""
        await self._call(
            f"containers/{container}/stop",
            "stop the container",
            params={"t": grace},
            timeout=None,
        )

    async def wait(self, container: str) -> int:
        """Block until the container is not running; its exit code."""
        data = await self._json(
            f"containers/{container}/wait", "wait for the container", method="POST", timeout=None
        )
        return int(data.get("StatusCode", -1)) if isinstance(data, dict) else -1

    async def remove(self, container: str, *, force: bool = True) -> None:
        try:
            await self._call(
                f"containers/{container}",
                "remove the container",
                method="DELETE",
                params={"force": "true" if force else "false", "v": "true"},
            )
        except EngineRefused as exc:
            if exc.status != 404:
                raise

    async def logs(self, container: str, *, follow: bool) -> AsyncIterator[list[tuple[str, bytes]]]:
        """The container's output from its start as ``(stream, data)`` frames.

        Frames already received are yielded together, so output written in
        one burst is delivered as one batch. With ``follow`` the stream ends
        when the container stops. aiodocker's own ``log()`` drops the stream
        type of each frame, hence the raw request here.
        """
        params = {"stdout": "true", "stderr": "true", "follow": "true" if follow else "false"}
        try:
            async with self.docker._query(
                f"containers/{container}/logs", method="GET", params=params, timeout=None
            ) as response:
                buffer = b""
                while chunk := await response.content.readany():
                    buffer += chunk
                    frames: list[tuple[str, bytes]] = []
                    while len(buffer) >= _FRAME_HEADER.size:
                        kind, length = _FRAME_HEADER.unpack_from(buffer)
                        end = _FRAME_HEADER.size + length
                        if len(buffer) < end:
                            break
                        frames.append(
                            (_STREAMS.get(kind, "stdout"), buffer[_FRAME_HEADER.size : end])
                        )
                        buffer = buffer[end:]
                    if frames:
                        yield frames
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "read the container's output") from exc
        except asyncio.IncompleteReadError as exc:
            raise _translate(exc, "read the container's output") from exc

    async def stats(self, container: str) -> AsyncIterator[dict[str, Any]]:
        """The engine's stats samples (Podman: one at once, then every 5 s)."""
        try:
            async with self.docker._query(
                f"containers/{container}/stats",
                method="GET",
                params={"stream": "true"},
                timeout=None,
            ) as response:
                async for raw in response.content:
                    line = raw.strip()
                    if not line:
                        continue
                    try:
                        sample = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(sample, dict):
                        yield sample
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "read the container's stats") from exc


def pull_status_line(report: dict[str, Any]) -> str | None:
    """``{"status": "Downloading", "id": "a1b2", "progressDetail": {...}}`` ->
    ``"a1b2: Downloading"``; ``None`` for reports without a status."""
    status = str(report.get("status") or "").strip()
    if not status:
        return None
    layer = str(report.get("id") or "").strip()
    return f"{layer}: {status}" if layer else status
