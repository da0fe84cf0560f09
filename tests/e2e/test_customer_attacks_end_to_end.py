"""What a self-registered customer who owns one server must not be able to do.

Each attack runs against the product started as users start it (see
:mod:`tests.e2e.frontdoor`: ``hostplane up`` in the SQLite pass, ``serve`` x2 +
``worker`` + ``agent`` on PostgreSQL and Redis in the PostgreSQL pass), one
instance for the whole module, and speaks HTTP, ``/ws`` and SFTP only:

1. shell syntax in a variable's value runs nothing, and names that change how a
   process starts (``LD_PRELOAD``, ``PATH``) or that hostplane fills
   (``SERVER_MEMORY``) are refused;
2. another customer's server answers exactly as a made-up one (404), over HTTP,
   ``/ws`` and SFTP;
3. a removed subuser and a banned user lose an open console at once;
4. the disk allocation holds for uploads (HTTP and SFTP) and decompression,
   and a refused write leaves nothing behind;
5. console input over ``/ws`` is held to the REST command's limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from hostplane.core.ids import new_id
from tests.conftest import POSTGRES_URL
from tests.e2e.frontdoor import (
    WAIT,
    Deployment,
    console_has,
    embedded,
    eventually,
    next_matching,
    production,
    wait_status,
)

MB = 2**20
LIMIT = 4096
"""The REST command's limit (``MAX_COMMAND_LENGTH``), in bytes."""
AT_ONCE = 5.0
"""How long "at once" may take between a revocation and the socket hearing of it."""

# Prints what it received (its arguments and the environment it cares about) as
# one JSON line, then echoes console lines back like the bundled echo template.
PROBE = """\
import json, os, sys
seen = {name: os.environ.get(name) for name in ("MOTD", "LD_PRELOAD", "PATH", "SERVER_MEMORY")}
print("probe: " + json.dumps({"argv": sys.argv[1:], "env": seen}), flush=True)
for line in sys.stdin:
    text = line.rstrip("\\n")
    if text == "stop":
        print("Stopping", flush=True)
        break
    print(f"echo: {text}", flush=True)
"""

PROBE_TEMPLATE: dict[str, Any] = {
    "name": "Attack probe",
    "description": "Prints its arguments and environment, then echoes console lines.",
    "dockerImage": "docker.io/library/python:3.12-slim",
    "installImage": "docker.io/library/python:3.12-slim",
    # The value in every quoting context the shell has.
    "startCommand": "python3 -u probe.py {{MOTD}} '{{MOTD}}' \"{{MOTD}}\"",
    "stopCommand": "stop",
    "variables": [
        {
            "name": "Message of the day",
            "envVariable": "MOTD",
            "defaultValue": "hello",
            "userViewable": True,
            "userEditable": True,
            "rules": "nullable|string|max:300",
        }
    ],
    "installScript": (
        f"#!/bin/sh\nset -e\ncat > probe.py <<'PY'\n{PROBE}PY\necho 'Installed probe.py'\n"
    ),
}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("attacks")
    shape = production if POSTGRES_URL else embedded
    with shape(folder) as running:
        try:
            yield running
        finally:
            _stop_everything(running)


def _stop_everything(deployment: Deployment) -> None:
    """Servers outlive their agent by design: stop every one this module started."""
    headers = {"Authorization": f"Bearer {deployment.operator_token}"}
    with httpx.Client(base_url=deployment.url(), headers=headers, timeout=WAIT) as http:
        servers = http.get("/api/servers", params={"limit": 100}).json().get("data") or []
        for server in servers:
            if server["status"] in ("running", "starting"):
                http.post(f"/api/servers/{server['id']}/stop")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            listed = http.get("/api/servers", params={"limit": 100}).json().get("data") or []
            if all(s["status"] not in ("running", "starting", "stopping") for s in listed):
                return
            time.sleep(0.3)
    # Whatever did not stop in time: the probes running out of this module's folder.
    for pid in _probe_pids(deployment.folder):
        os.kill(pid, signal.SIGKILL)


def _probe_pids(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"probe.py" in cmdline and cwd.startswith(str(folder)):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def template_id(deployment: Deployment) -> str:
    """The probe template; the operator adds it, as operators add templates."""
    headers = {"Authorization": f"Bearer {deployment.operator_token}"}
    created = httpx.post(
        f"{deployment.url()}/api/templates", headers=headers, json=PROBE_TEMPLATE, timeout=WAIT
    )
    assert created.status_code == 201, created.text
    return str(created.json()["data"]["id"])


# --- customers and their servers --------------------------------------------------------------


class Customer:
    def __init__(self, user: dict[str, Any], token: str) -> None:
        self.user = user
        self.token = token

    @property
    def id(self) -> str:
        return str(self.user["id"])


async def register(deployment: Deployment) -> Customer:
    """Self-registration, as anyone on the internet can."""
    name = f"cust{new_id()[-8:].lower()}"
    async with deployment.client() as http:
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
    async with deployment.client(token) as http:
        me = await http.get("/api/auth/me")
        assert me.status_code == 200, me.text
        return Customer(me.json()["data"], token)


async def server_for(
    deployment: Deployment, template_id: str, owner: Customer, *, disk_mb: int = 200
) -> str:
    """A server the operator makes for ``owner``, installed by the owner."""
    async with deployment.operator() as ops:
        created = await ops.post(
            "/api/servers",
            json={
                "name": f"probe-{new_id()[-6:].lower()}",
                "templateId": template_id,
                "nodeId": deployment.node_id,
                "ownerId": owner.id,
                "allocatedMemoryMb": 128,
                "allocatedCpuCores": 1,
                "allocatedDiskMb": disk_mb,
            },
        )
    assert created.status_code == 201, created.text
    server_id: str = created.json()["data"]["id"]
    async with deployment.client(owner.token) as http:
        installed = await http.post(f"/api/servers/{server_id}/install")
        assert installed.status_code == 200, installed.text
        await wait_status(http, server_id, "stopped")
    return server_id


async def start(deployment: Deployment, owner: Customer, server_id: str) -> None:
    async with deployment.client(owner.token) as http:
        started = await http.post(f"/api/servers/{server_id}/start")
        assert started.status_code == 200, started.text
        await wait_status(http, server_id, "running")


async def stop(deployment: Deployment, owner: Customer, server_id: str) -> None:
    async with deployment.client(owner.token) as http:
        if (await http.get(f"/api/servers/{server_id}")).json()["data"]["status"] == "running":
            await http.post(f"/api/servers/{server_id}/stop")
        await wait_status(http, server_id, "stopped", "crashed")


@pytest.fixture
async def running(deployment: Deployment, template_id: str) -> AsyncIterator[tuple[Customer, str]]:
    """A customer with one running probe server; stopped afterwards."""
    owner = await register(deployment)
    server_id = await server_for(deployment, template_id, owner)
    await start(deployment, owner, server_id)
    try:
        yield owner, server_id
    finally:
        await stop(deployment, owner, server_id)


# --- /ws ------------------------------------------------------------------------------------------


async def console(deployment: Deployment, token: str, server_id: str) -> ClientConnection:
    """A console subscription on ``server_id`` (on the replica the agent does not dial)."""
    ws = await websockets.connect(deployment.ws_url(token, replica=1), open_timeout=WAIT)
    await ws.send(json.dumps({"type": "subscribe", "serverId": server_id}))
    answer = await next_matching(ws, lambda m: m.get("type") in ("subscribed", "error"))
    assert answer["type"] == "subscribed", answer
    return ws


async def send_input(ws: ClientConnection, server_id: str, data: str) -> None:
    await ws.send(json.dumps({"type": "console_input", "serverId": server_id, "data": data}))


async def collect_until(
    ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT
) -> list[dict[str, Any]]:
    """Every frame up to and including the first ``predicate`` accepts."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            seen.append(json.loads(await ws.recv()))
            if predicate(seen[-1]):
                return seen


async def echoed(ws: ClientConnection, server_id: str, text: str) -> None:
    """Input ``text`` reaches the server: its echo comes back."""
    await send_input(ws, server_id, f"{text}\n")
    await next_matching(ws, console_has(server_id, f"echo: {text}"))


async def never_reached(watcher: ClientConnection, server_id: str, text: str) -> None:
    """``text`` never reached the server: a later line from ``watcher`` is echoed
    and ``text``'s echo did not come before it (console lines keep their order)."""
    sentinel = f"sentinel-{new_id()[-8:]}"
    await send_input(watcher, server_id, f"{sentinel}\n")
    frames = await collect_until(watcher, console_has(server_id, f"echo: {sentinel}"))
    logged = "".join(f.get("data", "") for f in frames if f.get("type") == "server_log")
    assert f"echo: {text}" not in logged, logged


def error_frame(frame: dict[str, Any]) -> dict[str, Any]:
    """An ``error`` frame without the id it names, to compare two of them."""
    return {k: v for k, v in frame.items() if k != "serverId"}


# --- 1. server variables --------------------------------------------------------------------------


async def test_shell_syntax_in_a_variable_runs_nothing_and_start_up_names_are_refused(
    deployment: Deployment, template_id: str
) -> None:
    owner = await register(deployment)
    server_id = await server_for(deployment, template_id, owner)
    tag = new_id()[-10:].lower()
    # A marker in the node's own temporary folder, and three in the server's.
    marker = Path(tempfile.gettempdir()) / f"pwned-{tag}-1"
    hostile = (
        f"x; touch {marker} && touch pwned-{tag}-2 | $(touch pwned-{tag}-3) "
        f"`touch pwned-{tag}-4` $(id) ${{HOME}} *"
    )
    path = f"/api/servers/{server_id}"
    async with deployment.client(owner.token) as http:
        before = (await http.get(path)).json()["data"]["environment"]
        for name, value, rule in (
            ("LD_PRELOAD", f"./evil-{tag}.so", "denied"),
            ("PATH", ".", "denied"),
            ("SERVER_MEMORY", "999999", "builtin"),
        ):
            refused = await http.put(path, json={"environment": {"MOTD": "changed", name: value}})
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert error["code"] == "VALIDATION_ERROR", error
            assert error["details"] == {"variable": name, "rule": rule}, error
            # Nothing changed, not even the acceptable part of the request.
            assert (await http.get(path)).json()["data"]["environment"] == before

        accepted = await http.put(path, json={"environment": {"MOTD": hostile}})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["data"]["environment"] == {"MOTD": hostile}

        async with await console(deployment, owner.token, server_id) as ws:
            started = await http.post(f"{path}/start")
            assert started.status_code == 200, started.text
            line = await next_matching(ws, console_has(server_id, "probe: "))
            seen = json.loads(line["data"].split("probe: ", 1)[1].splitlines()[0])
            await wait_status(http, server_id, "running")
            # One word each time, byte for byte: nothing was parsed as shell syntax.
            assert seen["argv"] == [hostile, hostile, hostile], seen
            assert seen["env"]["MOTD"] == hostile, seen
            # The refused names never reached the process.
            assert seen["env"]["LD_PRELOAD"] is None, seen
            assert seen["env"]["PATH"] != ".", seen
            assert seen["env"]["SERVER_MEMORY"] != "999999", seen
            stopped = await http.post(f"{path}/stop")
            assert stopped.status_code == 200, stopped.text
            await wait_status(http, server_id, "stopped")

        # No marker on the node, in its /tmp or in the server's folder.
        assert not await asyncio.to_thread(marker.exists)
        names = await tree(http, server_id)
        assert not [name for name in names if "pwned" in name], names
        assert names == ["probe.py"], names


# --- 2. visibility --------------------------------------------------------------------------------


async def test_another_customers_server_is_as_absent_as_a_made_up_one(
    deployment: Deployment, running: tuple[Customer, str]
) -> None:
    owner, server_id = running
    stranger = await register(deployment)
    made_up = new_id()
    async with deployment.client(owner.token) as http:
        before = (await http.get(f"/api/servers/{server_id}")).json()["data"]
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "", {}),
        ("PUT", "", {"json": {"name": "mine now", "environment": {"MOTD": "owned"}}}),
        ("POST", "/stop", {}),
        ("POST", "/start", {}),
        ("POST", "/install", {}),
        ("POST", "/command", {"json": {"command": "stop"}}),
        ("GET", "/logs", {}),
        ("GET", "/files", {"params": {"path": "/"}}),
        ("GET", "/files/content", {"params": {"path": "probe.py"}}),
        ("POST", "/files/write", {"json": {"path": "probe.py", "content": "griefed"}}),
        ("GET", "/files/upload", {}),
        ("GET", "/backups", {}),
        ("POST", "/backups", {"json": {"name": "mine"}}),
        ("GET", "/users", {}),
        ("POST", "/users", {"json": {"userId": stranger.id, "permissions": ["control.console"]}}),
    ]
    async with deployment.client(stranger.token) as http:
        for method, suffix, extra in attempts:
            real = await http.request(method, f"/api/servers/{server_id}{suffix}", **extra)
            fake = await http.request(method, f"/api/servers/{made_up}{suffix}", **extra)
            what = f"{method} /api/servers/{{id}}{suffix}"
            assert real.status_code == fake.status_code == 404, (what, real.text, fake.text)
            assert real.json()["error"]["code"] == fake.json()["error"]["code"] == "NOT_FOUND"
            assert real.json()["error"]["message"] == fake.json()["error"]["message"], what
        listed = (await http.get("/api/servers")).json()["data"]
        assert server_id not in [s["id"] for s in listed]

    # Over /ws: subscribing and sending input answer as for a made-up id.
    async with (
        websockets.connect(deployment.ws_url(stranger.token), open_timeout=WAIT) as ws,
        await console(deployment, owner.token, server_id) as watcher,
    ):
        answers = []
        for target in (server_id, made_up):
            await ws.send(json.dumps({"type": "subscribe", "serverId": target}))
            answers.append(await next_matching(ws, lambda m: m.get("type") != "server_log"))
        assert answers[0]["type"] == "error" and answers[0]["code"] == "NOT_FOUND", answers
        assert error_frame(answers[0]) == error_frame(answers[1]), answers
        intruder = f"intruder-{new_id()[-8:]}"
        await send_input(ws, server_id, f"{intruder}\n")
        refused = await next_matching(ws, lambda m: m.get("type") == "error")
        assert refused["code"] == "NOT_FOUND", refused
        await never_reached(watcher, server_id, intruder)

    # Over SFTP: the stranger's token opens nothing.
    with pytest.raises(paramiko.AuthenticationException):
        await asyncio.to_thread(sftp, deployment, server_id, stranger.token)

    async with deployment.client(owner.token) as http:
        server = (await http.get(f"/api/servers/{server_id}")).json()["data"]
        assert server["status"] == "running", server
        assert (server["name"], server["environment"]) == (before["name"], before["environment"])
        content = await http.get(
            f"/api/servers/{server_id}/files/content", params={"path": "probe.py"}
        )
        assert "griefed" not in content.text


# --- 3. revocation --------------------------------------------------------------------------------


async def test_a_removed_subuser_loses_the_open_console_at_once(
    deployment: Deployment, running: tuple[Customer, str]
) -> None:
    owner, server_id = running
    friend = await register(deployment)
    async with deployment.client(owner.token) as http:
        granted = await http.post(
            f"/api/servers/{server_id}/users",
            json={"userId": friend.id, "permissions": ["control.console"]},
        )
        assert granted.status_code == 201, granted.text
        async with (
            await console(deployment, friend.token, server_id) as ws,
            await console(deployment, owner.token, server_id) as watcher,
        ):
            await echoed(ws, server_id, f"welcome-{new_id()[-8:]}")

            removed_at = time.monotonic()
            removed = await http.delete(f"/api/servers/{server_id}/users/{friend.id}")
            assert removed.status_code in (200, 204), removed.text
            ended = await next_matching(ws, lambda m: m.get("type") == "subscription_ended")
            took = time.monotonic() - removed_at
            assert took < AT_ONCE, f"the subscription ended {took:.1f} s after the removal"
            assert ended["serverId"] == server_id and ended["code"] == "ACCESS_REVOKED", ended

            late = f"late-{new_id()[-8:]}"
            await send_input(ws, server_id, f"{late}\n")
            refused = await next_matching(ws, lambda m: m.get("type") == "error")
            assert refused["code"] == "NOT_FOUND", refused
            await never_reached(watcher, server_id, late)

            await ws.send(json.dumps({"type": "subscribe", "serverId": server_id}))
            again = await next_matching(ws, lambda m: m.get("type") in ("error", "subscribed"))
            assert again["type"] == "error" and again["code"] == "NOT_FOUND", again


async def test_a_banned_user_loses_the_open_console_at_once(
    deployment: Deployment, running: tuple[Customer, str]
) -> None:
    owner, server_id = running
    friend = await register(deployment)
    async with deployment.client(owner.token) as http:
        granted = await http.post(
            f"/api/servers/{server_id}/users",
            json={"userId": friend.id, "permissions": ["control.console"]},
        )
        assert granted.status_code == 201, granted.text
    async with (
        await console(deployment, friend.token, server_id) as ws,
        await console(deployment, owner.token, server_id) as watcher,
    ):
        await echoed(ws, server_id, f"welcome-{new_id()[-8:]}")

        banned_at = time.monotonic()
        async with deployment.operator() as ops:
            banned = await ops.post(f"/api/admin/users/{friend.id}/ban", json={"reason": "abuse"})
            assert banned.status_code == 200, banned.text
        frames: list[dict[str, Any]] = []
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            async with asyncio.timeout(AT_ONCE):
                while True:
                    frames.append(json.loads(await ws.recv()))
        took = time.monotonic() - banned_at
        assert took < AT_ONCE, f"the socket closed {took:.1f} s after the ban"
        assert ws.close_code == 4401, (ws.close_code, frames)
        # The last word is the reason; no console line came after the ban (a
        # stats frame already on its way may have).
        assert frames and frames[-1]["type"] == "error", frames
        assert frames[-1]["code"] == "ACCESS_REVOKED", frames
        assert [f["type"] for f in frames if f["type"] in ("error", "server_log")] == ["error"]

        late = f"late-{new_id()[-8:]}"
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await send_input(ws, server_id, f"{late}\n")
        await never_reached(watcher, server_id, late)

    # Nor does the token open anything again.
    async with deployment.client(friend.token) as http:
        assert (await http.get(f"/api/servers/{server_id}")).status_code == 401
    with pytest.raises(websockets.exceptions.WebSocketException):
        async with websockets.connect(deployment.ws_url(friend.token), open_timeout=WAIT) as ws:
            await ws.send(json.dumps({"type": "subscribe", "serverId": server_id}))
            async with asyncio.timeout(WAIT):
                while True:
                    await ws.recv()


# --- 4. disk allocation ---------------------------------------------------------------------------


async def tree(http: httpx.AsyncClient, server_id: str, folder: str = "/") -> list[str]:
    """Every name under ``folder`` in the server's files, hidden ones included."""
    listed = await http.get(f"/api/servers/{server_id}/files", params={"path": folder})
    assert listed.status_code == 200, listed.text
    names = []
    for entry in listed.json()["data"]:
        path = f"{folder.rstrip('/')}/{entry['name']}".lstrip("/")
        names.append(path)
        if entry["isDirectory"]:
            names.extend(await tree(http, server_id, f"/{path}"))
    return sorted(names)


def refused_for_disk(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "DISK_LIMIT_EXCEEDED", response.text


def sftp(deployment: Deployment, username: str, password: str) -> paramiko.SFTPClient:
    assert deployment.sftp, f"no SFTP address printed:\n{deployment.log('up.log')}"
    transport = paramiko.Transport(deployment.sftp)
    transport.banner_timeout = transport.auth_timeout = WAIT
    transport.connect(username=username, password=password)
    client = paramiko.SFTPClient.from_transport(transport)
    assert client is not None
    client.get_channel().settimeout(WAIT)
    return client


def zip_bomb(size: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("world/zeros.bin", bytes(size))
    return buffer.getvalue()


async def test_the_disk_allocation_holds_and_a_refused_write_leaves_nothing(
    deployment: Deployment, template_id: str
) -> None:
    owner = await register(deployment)
    server_id = await server_for(deployment, template_id, owner, disk_mb=2)
    base = f"/api/servers/{server_id}/files"
    async with deployment.client(owner.token) as http:
        before = await tree(http, server_id)
        assert before == ["probe.py"], before

        big = await http.post(
            f"{base}/upload",
            data={"path": "/"},
            files={"file": ("big.bin", os.urandom(3 * MB), "application/octet-stream")},
        )
        refused_for_disk(big)
        assert await tree(http, server_id) == before

        bomb = zip_bomb(8 * MB)
        assert len(bomb) < 100_000
        placed = await http.post(
            f"{base}/upload",
            data={"path": "/"},
            files={"file": ("bomb.zip", bomb, "application/zip")},
        )
        assert placed.status_code == 200, placed.text
        with_bomb = sorted([*before, "bomb.zip"])
        assert await tree(http, server_id) == with_bomb

        expanded = await http.post(
            f"{base}/decompress", json={"archivePath": "/bomb.zip", "targetPath": "/out"}
        )
        refused_for_disk(expanded)
        # No staging folder, no half-written file, no target folder.
        assert await tree(http, server_id) == with_bomb

        def sftp_upload(*, pipelined: bool) -> None:
            client = sftp(deployment, server_id, owner.token)
            try:
                with client.open("big-sftp.bin", "wb") as remote:
                    # Pipelined, the client hears of a refused write only later (if
                    # at all); either way the server keeps nothing of the file.
                    remote.set_pipelined(pipelined)
                    for _ in range(48):
                        remote.write(os.urandom(64 * 1024))
            finally:
                client.close()

        with pytest.raises(OSError, match=r"(?i)quota"):
            await asyncio.to_thread(sftp_upload, pipelined=False)
        await eventually(
            lambda: _same_tree(http, server_id, with_bomb), what="the refused SFTP file removed"
        )
        with contextlib.suppress(OSError):
            await asyncio.to_thread(sftp_upload, pipelined=True)
        await eventually(
            lambda: _same_tree(http, server_id, with_bomb), what="the refused SFTP file removed"
        )


async def _same_tree(http: httpx.AsyncClient, server_id: str, expected: list[str]) -> bool:
    return await tree(http, server_id) == expected


# --- 5. console input size ------------------------------------------------------------------------


async def test_console_input_over_ws_is_held_to_the_rest_limit(
    deployment: Deployment, running: tuple[Customer, str]
) -> None:
    owner, server_id = running
    async with (
        await console(deployment, owner.token, server_id) as ws,
        deployment.client(owner.token) as http,
    ):
        # Exactly the limit passes, newline included.
        fits = f"fits-{new_id()[-8:]}"
        await send_input(ws, server_id, fits + "a" * (LIMIT - len(fits) - 1) + "\n")
        await next_matching(ws, console_has(server_id, f"echo: {fits}"))

        # One byte more is refused, and never reaches the server; so is a huge one.
        for size in (LIMIT + 1, 1 * MB):
            big = f"big-{new_id()[-8:]}"
            await send_input(ws, server_id, big + "b" * (size - len(big) - 1) + "\n")
            refused = await next_matching(ws, lambda m: m.get("type") == "error")
            assert refused["code"] == "VALIDATION_ERROR", refused
            assert str(LIMIT) in refused["message"], refused
            await never_reached(ws, server_id, big)

        # The limit counts bytes: multi-byte characters do not stretch it.
        wide = f"wide-{new_id()[-8:]}"
        await send_input(ws, server_id, wide + "é" * (LIMIT // 2) + "\n")
        refused = await next_matching(ws, lambda m: m.get("type") == "error")
        assert refused["code"] == "VALIDATION_ERROR", refused
        await never_reached(ws, server_id, wide)

        # The REST command has the same limit.
        rest = await http.post(
            f"/api/servers/{server_id}/command", json={"command": "c" * (LIMIT + 1)}
        )
        assert rest.status_code == 400, rest.text
        assert rest.json()["error"]["code"] == "VALIDATION_ERROR", rest.text
