"""Podman's Docker-compatible API for tests (``scripts/podman.sh`` sets it up).

The engine is found through ``DOCKER_HOST`` (what ``scripts/test.sh`` exports)
or the socket ``scripts/podman.sh`` starts under ``.test-services/podman``.
Missing: skipped locally, a failure under CI (see :mod:`tests.support.services`).
Nothing is ever pulled: the tests use the busybox image the script builds.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import aiohttp

from tests.support.services import missing_service

TEST_IMAGE = "localhost/hostplane-test:latest"
API_VERSION = "v1.41"
REPOSITORY = Path(__file__).resolve().parents[2]
SCRIPT_SOCKET = REPOSITORY / ".test-services" / "podman" / "podman.sock"


def docker_host() -> str:
    host = os.environ.get("DOCKER_HOST")
    if host:
        return host
    return f"unix://{SCRIPT_SOCKET}"


@dataclass(frozen=True)
class Engine:
    host: str
    image: str
    docker: aiodocker.Docker
    run_label: str
    """``key=value`` on every container of this test (cleanup removes them all)."""

    @property
    def labels(self) -> dict[str, str]:
        key, value = self.run_label.split("=", 1)
        return {key: value}

    async def containers(self, label: str | None = None) -> list[dict[str, object]]:
        found = await self.docker.containers.list(
            all=True, filters={"label": [label or self.run_label]}
        )
        return [c._container for c in found]

    async def inspect(self, name: str) -> dict[str, object]:
        container = await self.docker.containers.get(name)
        return container._container


async def remove_labelled(docker: aiodocker.Docker, label: str) -> None:
    for container in await docker.containers.list(all=True, filters={"label": [label]}):
        try:
            await container.delete(force=True)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise


def socket_missing(host: str) -> bool:
    return host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists()


async def require_engine() -> tuple[str, aiodocker.Docker]:
    host = docker_host()
    if socket_missing(host):
        missing_service("Podman", f"no socket at {host} (run scripts/podman.sh)")
    docker = aiodocker.Docker(url=host, api_version=API_VERSION)
    try:
        await docker.version()
        await docker.images.inspect(TEST_IMAGE)
    except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
        await docker.close()
        missing_service("Podman", f"{host}: {exc} (run scripts/podman.sh)")
    return host, docker


@asynccontextmanager
async def podman_engine() -> AsyncIterator[Engine]:
    """The engine, the test image, and a label that marks this test's containers;
    every container carrying it is removed afterwards, pass or fail.

    Use it in a fixture: ``async with podman_engine() as engine: yield engine``."""
    host, docker = await require_engine()
    label = f"hostplane.test-run={uuid.uuid4().hex[:12]}"
    try:
        yield Engine(host=host, image=TEST_IMAGE, docker=docker, run_label=label)
    finally:
        try:
            await remove_labelled(docker, label)
        finally:
            await docker.close()
