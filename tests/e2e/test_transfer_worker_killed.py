"""A transfer whose worker is killed (SIGKILL) mid-copy, with the panel, the
worker and two agents as separate processes: once the job's lease expires,
another worker rolls the transfer back. The server is ``stopped`` on its
source, the transfer and its job show ``failed`` (never ``succeeded``), and
the server can be moved again at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.panel import live_panel, start_agent
from tests.support.processes import base_env, hostplane_command, stop_process
from tests.support.services import REDIS_URL

TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "hostplane" / "templates"
LEASE_SECONDS = "3"
# Incompressible, so the copy lasts long enough to be interrupted.
PAYLOAD_BYTES = 96 * 2**20


def start_worker(tmp_path: Path, env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
    with (tmp_path / log_name).open("wb") as log:
        return subprocess.Popen(
            hostplane_command("worker", "--data-dir", str(tmp_path)),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


async def wait_for(
    http: httpx.AsyncClient, url: str, check: Any, *, seconds: float, every: float = 0.05
) -> Any:
    for _ in range(int(seconds / every)):
        data = (await http.get(url)).json()["data"]
        if check(data):
            return data
        await asyncio.sleep(every)
    raise AssertionError(f"{url}: still {data}")


async def test_a_worker_killed_mid_transfer_leaves_the_server_on_its_source(
    tmp_path: Path,
) -> None:
    # The worker and the panel are separate processes: they share Redis's bus.
    async with live_panel(tmp_path, HOSTPLANE_REDIS_URL=REDIS_URL) as live:
        http = live.http
        agents: list[subprocess.Popen[bytes]] = []
        workers: list[subprocess.Popen[bytes]] = []
        try:
            nodes = {}
            for name in ("source", "target"):
                node = await live.add_node(name)
                folder = tmp_path / name
                folder.mkdir()
                env = base_env(
                    HOSTPLANE_AGENT_PANEL_URL=f"ws://127.0.0.1:{live.port}/ws",
                    HOSTPLANE_AGENT_NODE_ID=node["id"],
                    HOSTPLANE_AGENT_TOKEN=node["secret"],
                    HOSTPLANE_AGENT_HEARTBEAT_INTERVAL="1",
                    HOSTPLANE_AGENT_SANDBOX="false",
                )
                agents.append(start_agent(folder, env, f"agent-{name}.log"))
                nodes[name] = (node["id"], folder / "agent")
            for node_id, _ in nodes.values():
                await wait_for(http, f"/api/nodes/{node_id}", lambda n: n["isOnline"], seconds=30)

            template_body = json.loads((TEMPLATES / "python-echo.json").read_text())
            template = (await http.post("/api/templates", json=template_body)).json()["data"]
            source_id, source_dir = nodes["source"]
            target_id, _ = nodes["target"]
            created = await http.post(
                "/api/servers",
                json={
                    "name": "moving",
                    "templateId": template["id"],
                    "nodeId": source_id,
                    "allocatedMemoryMb": 256,
                    "allocatedCpuCores": 1,
                    "allocatedDiskMb": 500,
                },
            )
            assert created.status_code == 201, created.text
            server = created.json()["data"]
            server_id = server["id"]
            await wait_for(
                http, f"/api/servers/{server_id}", lambda s: s["status"] == "stopped", seconds=30
            )
            files = source_dir / "servers" / server_id
            files.mkdir(parents=True, exist_ok=True)
            with (files / "world.bin").open("wb") as out:
                for _ in range(PAYLOAD_BYTES // 2**20):
                    out.write(os.urandom(2**20))

            worker_env = {**live.env, "HOSTPLANE_JOBS__LEASE_SECONDS": LEASE_SECONDS}
            workers.append(start_worker(tmp_path, worker_env, "worker-1.log"))
            started = await http.post(
                f"/api/servers/{server_id}/transfer", json={"targetNodeId": target_id}
            )
            assert started.status_code == 200, started.text
            job_id = started.json()["data"]["jobId"]
            transfers = f"/api/servers/{server_id}/transfers"
            await wait_for(http, transfers, lambda t: t[0]["status"] == "copying", seconds=60)
            os.killpg(workers[0].pid, signal.SIGKILL)
            workers[0].wait()

            # Another worker finds the lease expired and rolls the transfer back.
            workers.append(start_worker(tmp_path, worker_env, "worker-2.log"))
            history = await wait_for(
                http, transfers, lambda t: t[0]["status"] != "copying", seconds=60
            )
            assert history[0]["status"] == "failed", history
            job = await wait_for(
                http, f"/api/jobs/{job_id}", lambda j: j["status"] != "running", seconds=30
            )
            assert job["status"] == "failed", job
            assert job["error"]["code"] == "LEASE_EXPIRED"
            moved = (await http.get(f"/api/servers/{server_id}")).json()["data"]
            assert moved["nodeId"] == source_id
            assert moved["status"] == "stopped"
            assert (files / "world.bin").stat().st_size == PAYLOAD_BYTES

            # The source's export was stopped by the rollback, not left waiting for
            # the dead worker: the server can move again at once.
            again = await http.post(
                f"/api/servers/{server_id}/transfer", json={"targetNodeId": target_id}
            )
            assert again.status_code == 200, again.text
            history = await wait_for(
                http,
                transfers,
                lambda t: t[0]["status"] in ("completed", "failed"),
                seconds=120,
                every=0.5,
            )
            assert history[0]["status"] == "completed", history[0]
            moved = (await http.get(f"/api/servers/{server_id}")).json()["data"]
            assert (moved["nodeId"], moved["status"]) == (target_id, "stopped")
        finally:
            for process in [*workers, *agents]:
                stop_process(process)
