"""Every byte-reading route of ``hostplane up``'s local node, through real processes.

A file that ``files/create`` has just written, and a backup, are read twenty
times in parallel through each route (``files/download``, ``files/content``,
the one-time URL of ``?mode=url`` and ``backups/{id}/download``): every read
gets the right bytes, quickly. Then one-time links: a download that failed
because the node's agent was away leaves the link usable once the agent is
back, a successful one uses it up, and of two concurrent uses exactly one
gets the file.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.support.processes import (
    agent_pids,
    base_env,
    free_port,
    hostplane_process,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "hostplane" / "templates"
PARALLEL = 20
# A 5-byte file or a small archive on this machine: far below this even under
# load, and far below the 30 s a lost stream handshake used to cost.
READ_BOUND = 5.0
CONTENT = "hello"


def relative(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def node_online(http: httpx.AsyncClient, node_id: str, online: bool = True) -> bool:
    for _ in range(150):
        if (await http.get(f"/api/nodes/{node_id}")).json()["data"]["isOnline"] is online:
            return True
        await asyncio.sleep(0.2)
    return False


async def timed(
    read: Callable[[], Awaitable[httpx.Response]],
) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = await read()
    return time.monotonic() - started, response


async def in_parallel(
    name: str, reads: list[Callable[[], Awaitable[httpx.Response]]], check: Callable[..., bool]
) -> None:
    results = await asyncio.gather(*(timed(read) for read in reads))
    slow = [round(seconds, 2) for seconds, _ in results if seconds >= READ_BOUND]
    failed = [
        (response.status_code, response.text[:200])
        for _, response in results
        if response.status_code != 200 or not check(response)
    ]
    assert not failed, f"{name}: {len(failed)} of {len(reads)} failed: {failed[:3]}"
    assert not slow, f"{name}: reads took {slow} s"


async def test_byte_reading_routes_of_up_and_their_one_time_links(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    with hostplane_process(
        ["up", "--data-dir", str(data), "--port", str(port)],
        port=port,
        log_path=tmp_path / "up.log",
        env=base_env(),
    ) as panel:
        credentials = re.search(r"Log in as\s+(\S+) with password (\S+)", panel.output())
        assert credentials, panel.output()
        async with (
            httpx.AsyncClient(base_url=panel.base_url, timeout=60) as http,
            # One-time links need no Authorization: this client has none.
            httpx.AsyncClient(base_url=panel.base_url, timeout=60) as anon,
        ):
            login = await http.post(
                "/api/auth/login",
                json={"email": credentials.group(1), "password": credentials.group(2)},
            )
            http.headers["Authorization"] = f"Bearer {login.json()['data']['token']}"
            [node] = (await http.get("/api/nodes")).json()["data"]
            assert await node_online(http, node["id"]), (data / "agent.log").read_text()
            template_body = json.loads((TEMPLATES / "python-echo.json").read_text())
            template = (await http.post("/api/templates", json=template_body)).json()["data"]
            created = await http.post(
                "/api/servers",
                json={
                    "name": "files",
                    "templateId": template["id"],
                    "nodeId": node["id"],
                    "allocatedMemoryMb": 256,
                    "allocatedCpuCores": 1,
                    "allocatedDiskMb": 100,
                },
            )
            assert created.status_code == 201, created.text
            server_id = created.json()["data"]["id"]
            files = f"/api/servers/{server_id}/files"
            backups = f"/api/servers/{server_id}/backups"

            written = await http.post(
                f"{files}/create", json={"path": "/hello.txt", "content": CONTENT}
            )
            assert written.status_code == 200, written.text
            backup_id = (await http.post(backups, json={"name": "nightly"})).json()["data"][
                "backupId"
            ]
            archive = b""
            for _ in range(150):
                listed = (await http.get(backups)).json()["data"]
                if listed and listed[0]["status"] == "completed":
                    break
                await asyncio.sleep(0.2)
            assert listed[0]["status"] == "completed", listed

            # --- twenty parallel reads through each route ---------------------------------
            await in_parallel(
                "files/download",
                [
                    lambda: http.get(f"{files}/download", params={"path": "/hello.txt"})
                    for _ in range(PARALLEL)
                ],
                lambda r: r.content == CONTENT.encode(),
            )
            await in_parallel(
                "files/content",
                [
                    lambda: http.get(f"{files}/content", params={"path": "/hello.txt"})
                    for _ in range(PARALLEL)
                ],
                lambda r: r.json()["data"]["content"] == CONTENT,
            )
            links = [
                relative(
                    (
                        await http.get(
                            f"{files}/download", params={"path": "/hello.txt", "mode": "url"}
                        )
                    ).json()["data"]["url"]
                )
                for _ in range(PARALLEL)
            ]
            await in_parallel(
                "files/download?mode=url",
                [functools.partial(anon.get, url) for url in links],
                lambda r: r.content == CONTENT.encode(),
            )
            backup_links = [
                relative((await http.get(f"{backups}/{backup_id}/download")).json()["data"]["url"])
                for _ in range(PARALLEL)
            ]
            first = await anon.get(backup_links.pop())
            assert first.status_code == 200, first.text
            archive = first.content
            assert archive and len(archive) == listed[0]["sizeBytes"]
            await in_parallel(
                "backups/{id}/download",
                [functools.partial(anon.get, url) for url in backup_links],
                lambda r: r.content == archive,
            )

            # --- one-time links --------------------------------------------------------
            link = relative(
                (
                    await http.get(
                        f"{files}/download", params={"path": "/hello.txt", "mode": "url"}
                    )
                ).json()["data"]["url"]
            )
            backup_link = relative(
                (await http.get(f"{backups}/{backup_id}/download")).json()["data"]["url"]
            )
            config = data / "agent.toml"
            [pid] = agent_pids(config)
            os.kill(pid, signal.SIGKILL)
            for _ in range(100):
                if not agent_pids(config):
                    break
                await asyncio.sleep(0.1)
            away = await anon.get(link)
            assert away.status_code == 503, away.text
            away = await anon.get(backup_link)
            assert away.status_code == 503, away.text

            # `up` restarts its agent itself (a second agent started by hand would answer
            # every request twice): wait for it to be back.
            assert await node_online(http, node["id"]), (data / "agent.log").read_text()
            back = await anon.get(link)
            assert back.status_code == 200, back.text
            assert back.content == CONTENT.encode()
            spent = await anon.get(link)
            assert spent.status_code == 410
            assert spent.json()["error"]["code"] == "LINK_USED"
            back = await anon.get(backup_link)
            assert back.status_code == 200, back.text
            assert back.content == archive
            assert (await anon.get(backup_link)).status_code == 410

            for _ in range(5):
                url = relative(
                    (
                        await http.get(
                            f"{files}/download", params={"path": "/hello.txt", "mode": "url"}
                        )
                    ).json()["data"]["url"]
                )
                both = await asyncio.gather(
                    anon.get(url),
                    anon.get(url),
                )
                assert sorted(r.status_code for r in both) == [200, 410], [
                    r.text[:200] for r in both
                ]
                assert next(r for r in both if r.status_code == 200).content == b"hello"
