"""Catalyst's flows 1, 2, 3, 4, 7 and 8 through the front door.

Each flow runs against the product started as users start it (see
:mod:`tests.e2e.frontdoor`): ``hostplane up`` from README command 1 in the
SQLite pass, and ``serve`` x2 + ``worker`` + ``agent`` on PostgreSQL and Redis
in the PostgreSQL pass. The tests speak HTTP, ``/ws`` and SFTP only.
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest
import websockets
import zstandard

from hostplane.core.ids import new_id
from tests.conftest import POSTGRES_URL
from tests.e2e.frontdoor import (
    Deployment,
    console_has,
    embedded,
    eventually,
    next_matching,
    production,
    state_is,
    wait_status,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "hostplane" / "templates"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("frontdoor")
    shape = production if POSTGRES_URL else embedded
    with shape(folder) as running:
        yield running


@pytest.fixture(scope="module")
def template_id(deployment: Deployment) -> str:
    """The echo template: bundled with ``up``; imported by the operator in production."""
    headers = {"Authorization": f"Bearer {deployment.operator_token}"}
    listed = httpx.get(f"{deployment.url()}/api/templates", headers=headers).json()["data"]
    for template in listed:
        if template["name"] == "Python Echo":
            return str(template["id"])
    assert deployment.shape == "production", f"`up` adds no bundled templates: {listed}"
    body = json.loads((TEMPLATES / "python-echo.json").read_text())
    created = httpx.post(f"{deployment.url()}/api/templates", headers=headers, json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["data"]["id"])


async def register(deployment: Deployment, replica: int = 0) -> tuple[dict[str, Any], str]:
    """Flow 1: register, then use the token. Returns the user and their token."""
    name = f"user{new_id()[-8:].lower()}"
    async with deployment.client(replica=replica) as http:
        registered = await http.post(
            "/api/auth/register",
            json={
                "email": f"{name}@example.com",
                "password": "a long passphrase",
                "username": name,
            },
        )
        assert registered.status_code == 200, registered.text
        token: str = registered.json()["data"]["token"]
    async with deployment.client(token, replica=replica + 1) as http:
        me = await http.get("/api/auth/me")
        assert me.status_code == 200, me.text
        user: dict[str, Any] = me.json()["data"]
    assert user["email"] == f"{name}@example.com"
    return user, token


async def create_server(deployment: Deployment, template_id: str, owner_id: str) -> str:
    async with deployment.operator() as http:
        created = await http.post(
            "/api/servers",
            json={
                "name": f"echo-{new_id()[-6:].lower()}",
                "templateId": template_id,
                "nodeId": deployment.node_id,
                "ownerId": owner_id,
                "allocatedMemoryMb": 128,
                "allocatedCpuCores": 1,
                "allocatedDiskMb": 200,
            },
        )
    assert created.status_code == 201, created.text
    server_id: str = created.json()["data"]["id"]
    return server_id


async def installed_server(deployment: Deployment, template_id: str) -> tuple[str, str]:
    """A new customer's server, installed and stopped: (server id, the owner's token)."""
    user, token = await register(deployment)
    server_id = await create_server(deployment, template_id, user["id"])
    async with deployment.client(token) as http:
        assert (await http.post(f"/api/servers/{server_id}/install")).status_code == 200
        await wait_status(http, server_id, "stopped")
    return server_id, token


async def test_flow_1_register_and_log_in(deployment: Deployment) -> None:
    user, token = await register(deployment)
    async with deployment.client() as http:
        login = await http.post(
            "/api/auth/login", json={"email": user["email"], "password": "a long passphrase"}
        )
        assert login.status_code == 200, login.text
        assert (await http.get("/api/auth/me")).status_code == 401
        fresh = login.json()["data"]["token"]
        me = await http.get("/api/auth/me", headers={"Authorization": f"Bearer {fresh}"})
        assert me.json()["data"]["id"] == user["id"]
    del token


async def test_flows_2_and_3_create_install_start_and_console(
    deployment: Deployment, template_id: str
) -> None:
    user, token = await register(deployment)
    server_id = await create_server(deployment, template_id, user["id"])
    # The console client sits on the other replica from the one that takes the commands.
    async with (
        websockets.connect(deployment.ws_url(token, replica=1)) as console,
        deployment.client(token) as http,
    ):
        await console.send(json.dumps({"type": "subscribe", "serverId": server_id}))
        await next_matching(console, lambda m: m.get("type") == "subscribed")

        install = await http.post(f"/api/servers/{server_id}/install")
        assert install.status_code == 200, install.text
        await next_matching(console, console_has(server_id, "Installed echo.py"))
        await next_matching(console, state_is(server_id, "stopped"))

        start = await http.post(f"/api/servers/{server_id}/start")
        assert start.status_code == 200, start.text
        await next_matching(console, console_has(server_id, "Echo server ready"))
        assert await wait_status(http, server_id, "running") == "running"

        await console.send(
            json.dumps({"type": "console_input", "serverId": server_id, "data": "hello there\n"})
        )
        await next_matching(console, console_has(server_id, "echo: hello there"))
        command = await http.post(
            f"/api/servers/{server_id}/command", json={"command": "over http"}
        )
        assert command.status_code in (200, 202, 204), command.text
        await next_matching(console, console_has(server_id, "echo: over http"))

        stop = await http.post(f"/api/servers/{server_id}/stop")
        assert stop.status_code == 200, stop.text
        await next_matching(console, state_is(server_id, "stopped"))


def _archive_names(archive: bytes) -> dict[str, bytes]:
    """The files of a backup archive (tar, plain or compressed with zstd or gzip)."""
    if archive[:4] == b"\x28\xb5\x2f\xfd":
        archive = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive)).read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {
            member.name.removeprefix("./"): tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.isfile()
        }


async def test_flow_4_backup_download_and_restore(deployment: Deployment, template_id: str) -> None:
    server_id, token = await installed_server(deployment, template_id)
    async with deployment.client(token) as http:
        wrote = await http.post(
            f"/api/servers/{server_id}/files/write",
            json={"path": "world/level.dat", "content": "the original world"},
        )
        assert wrote.status_code == 200, wrote.text

        # Every byte-reading route works, many times at once.
        async def read_all() -> None:
            content = await http.get(
                f"/api/servers/{server_id}/files/content", params={"path": "world/level.dat"}
            )
            assert content.status_code == 200, content.text
            download = await http.get(
                f"/api/servers/{server_id}/files/download", params={"path": "world/level.dat"}
            )
            assert download.status_code == 200, download.text
            assert download.content == b"the original world"
            link = await http.get(
                f"/api/servers/{server_id}/files/download",
                params={"path": "world/level.dat", "mode": "url"},
            )
            assert link.status_code == 200, link.text
            async with httpx.AsyncClient(timeout=30) as anonymous:
                fetched = await anonymous.get(link.json()["data"]["url"])
            assert fetched.status_code == 200, fetched.text
            assert fetched.content == b"the original world"

        async with asyncio.timeout(60):
            await asyncio.gather(*(read_all() for _ in range(8)))

        started = await http.post(f"/api/servers/{server_id}/backups", json={"name": "before"})
        assert started.status_code in (200, 201, 202), started.text
        backup_id = started.json()["data"]["backupId"]

        async def completed() -> dict[str, Any] | None:
            backup = (await http.get(f"/api/servers/{server_id}/backups/{backup_id}")).json()
            data: dict[str, Any] = backup["data"]
            assert data["status"] != "failed", data
            return data if data["status"] == "completed" else None

        backup = await eventually(completed, what="the backup to complete")
        assert backup["sizeBytes"] > 0

        link = await http.get(f"/api/servers/{server_id}/backups/{backup_id}/download")
        assert link.status_code == 200, link.text
        async with httpx.AsyncClient(timeout=60) as anonymous:
            download = await anonymous.get(link.json()["data"]["url"])
            assert download.status_code == 200, download.text
            assert _archive_names(download.content)["world/level.dat"] == b"the original world"
            spent = await anonymous.get(link.json()["data"]["url"])
            assert spent.status_code == 410, spent.text

        changed = await http.post(
            f"/api/servers/{server_id}/files/write",
            json={"path": "world/level.dat", "content": "griefed"},
        )
        assert changed.status_code == 200, changed.text

        restore = await http.post(f"/api/servers/{server_id}/backups/{backup_id}/restore")
        assert restore.status_code in (200, 202), restore.text

        async def restored() -> bool:
            content = await http.get(
                f"/api/servers/{server_id}/files/content", params={"path": "world/level.dat"}
            )
            return content.status_code == 200 and "the original world" in content.text

        await eventually(restored, what="the restored file")
        assert await wait_status(http, server_id, "stopped") == "stopped"


async def test_flow_7_transfer_to_a_second_agent(deployment: Deployment, template_id: str) -> None:
    server_id, token = await installed_server(deployment, template_id)
    async with deployment.client(token) as http:
        wrote = await http.post(
            f"/api/servers/{server_id}/files/write",
            json={"path": "keep.txt", "content": "travels with the server"},
        )
        assert wrote.status_code == 200, wrote.text

    async with deployment.operator() as ops:
        made = await ops.post(
            "/api/nodes",
            json={
                "name": f"node-{new_id()[-6:].lower()}",
                "hostname": "127.0.0.1",
                "publicAddress": "127.0.0.1",
                "maxMemoryMb": 4096,
                "maxCpuCores": 4,
                "maxDiskMb": 10240,
            },
        )
        assert made.status_code == 201, made.text
        target = made.json()["data"]
        deployment.start_agent(target, f"agent-{target['id'][-6:].lower()}")

        async def online() -> bool:
            node = (await ops.get(f"/api/nodes/{target['id']}")).json()["data"]
            return bool(node["isOnline"])

        await eventually(online, what="the second agent to come online")

        moved = await ops.post(
            f"/api/servers/{server_id}/transfer", json={"targetNodeId": target["id"]}
        )
        assert moved.status_code in (200, 202), moved.text

        async def finished() -> dict[str, Any] | None:
            transfers = (await ops.get(f"/api/servers/{server_id}/transfers")).json()["data"]
            last: dict[str, Any] = transfers[0]
            assert last["status"] != "failed", last
            return last if last["status"] == "completed" else None

        await eventually(finished, what="the transfer to complete")

    async with deployment.client(token) as http:
        server = (await http.get(f"/api/servers/{server_id}")).json()["data"]
        assert server["nodeId"] == target["id"]
        content = await http.get(
            f"/api/servers/{server_id}/files/content", params={"path": "keep.txt"}
        )
        assert "travels with the server" in content.text, content.text
        start = await http.post(f"/api/servers/{server_id}/start")
        assert start.status_code == 200, start.text
        assert await wait_status(http, server_id, "running") == "running"
        assert (await http.post(f"/api/servers/{server_id}/stop")).status_code == 200
        await wait_status(http, server_id, "stopped")


def _sftp(deployment: Deployment, username: str, password: str) -> paramiko.SFTPClient:
    assert deployment.sftp, f"no SFTP address printed:\n{deployment.log('up.log')}"
    transport = paramiko.Transport(deployment.sftp)
    transport.connect(username=username, password=password)
    client = paramiko.SFTPClient.from_transport(transport)
    assert client is not None
    return client


async def test_flow_8_sftp_with_the_owners_token(deployment: Deployment, template_id: str) -> None:
    server_id, token = await installed_server(deployment, template_id)
    stranger = (await register(deployment))[1]

    def session() -> tuple[list[str], bytes]:
        client = _sftp(deployment, server_id, token)
        try:
            client.putfo(io.BytesIO(b"uploaded over sftp"), "plugins/hello.txt", confirm=True)
        except OSError:
            client.mkdir("plugins")
            client.putfo(io.BytesIO(b"uploaded over sftp"), "plugins/hello.txt")
        names = client.listdir(".")
        body = io.BytesIO()
        client.getfo("plugins/hello.txt", body)
        client.close()
        return names, body.getvalue()

    names, body = await asyncio.to_thread(session)
    assert "echo.py" in names
    assert "plugins" in names
    assert body == b"uploaded over sftp"

    with pytest.raises(paramiko.AuthenticationException):
        await asyncio.to_thread(_sftp, deployment, server_id, stranger)

    async with deployment.client(token) as http:
        content = await http.get(
            f"/api/servers/{server_id}/files/content", params={"path": "plugins/hello.txt"}
        )
        assert content.text == "uploaded over sftp" or "uploaded over sftp" in content.text

        async def logged() -> bool:
            lines = (
                await http.get(f"/api/servers/{server_id}/logs", params={"stream": "system"})
            ).json()["data"]
            return any("SFTP" in line["data"] and "hello.txt" in line["data"] for line in lines)

        await eventually(logged, what="the SFTP upload in the server's log")
