"""Refusals and failed installs through a real agent running Podman containers."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.agent.runtimes.docker import DockerRuntime
from tests.infra.conftest import Fleet
from tests.infra.test_commands import fresh, until
from tests.support.agents import live_agents
from tests.support.containers import Engine, podman_engine
from tests.support.infra import make_node, make_server, make_template


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with podman_engine() as found:
        yield found


def containers(engine: Engine) -> Any:
    def make(folder: Path) -> DockerRuntime:
        return DockerRuntime(
            folder, docker_host=engine.host, node_id="node-test", labels=engine.labels
        )

    return make


async def test_a_start_on_a_taken_port_answers_409_with_the_reason_and_rolls_back(
    app: object,
    client: httpx.AsyncClient,
    db: AsyncSession,
    fleet: Fleet,
    engine: Engine,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - where a container would publish it
        taken.listen()
        port = taken.getsockname()[1]
        node, secret = await make_node(db, tenant=fleet.tenant, port_range=(port, port))
        template = await make_template(
            db,
            tenant=fleet.tenant,
            name="Sleeper",
            docker_image=engine.image,
            start_command="sleep 600",
            environment={},
            required_variables=[],
        )
        server = await make_server(
            db,
            tenant=fleet.tenant,
            owner=fleet.owner.user,
            node=node,
            template=template,
            environment={},
        )
        await db.commit()
        async with live_agents(app, [(node.id, secret)], runtime_for=containers(engine)):
            response = await client.post(
                f"/api/servers/{server.id}/start", headers=fleet.owner.headers
            )
            assert response.status_code == 409, response.text
            error = response.json()["error"]
            assert error["code"] == "PORT_IN_USE"
            assert "already in use" in error["message"]
            row = await fresh(db, server.id)
            assert row.status == "stopped"
            assert row.status_reason is not None and "already in use" in row.status_reason


async def test_an_install_with_a_missing_image_ends_install_failed_and_is_retried(
    app: object,
    client: httpx.AsyncClient,
    db: AsyncSession,
    fleet: Fleet,
    engine: Engine,
) -> None:
    node, secret = await make_node(db, tenant=fleet.tenant, port_range=(34000, 34010))
    template = await make_template(
        db,
        tenant=fleet.tenant,
        name="Nowhere",
        docker_image="localhost/hostplane-no-such-image:missing",
        install_script="echo never\n",
        start_command="sleep 600",
        environment={},
        required_variables=[],
    )
    server = await make_server(
        db,
        tenant=fleet.tenant,
        owner=fleet.owner.user,
        node=node,
        template=template,
        environment={},
    )
    await db.commit()
    path = f"/api/servers/{server.id}"
    async with live_agents(app, [(node.id, secret)], runtime_for=containers(engine)):
        for _ in range(2):  # the second is the retry the failed state allows
            response = await client.post(f"{path}/install", headers=fleet.owner.headers)
            assert response.status_code == 200, response.text

            async def failed() -> dict[str, Any] | None:
                data: dict[str, Any] = (await client.get(path, headers=fleet.owner.headers)).json()[
                    "data"
                ]
                return data if data["status"] == "install_failed" else None

            data = await until(failed, within=60)
            assert "no-such-image" in data["statusReason"]
