"""Console throughput: a server's stdout to 10 subscribed WebSocket clients.

Runs the real path with separate processes: a panel (`hostplane serve`,
SQLite in a temporary folder), an agent (`hostplane agent`, per-server
supervisor), and 10 clients subscribed over `/ws`. The server prints N
numbered lines as fast as it can, each stamped with CLOCK_MONOTONIC; every
client measures delivery latency per line and counts lines it was told were
dropped. Prints lines/s per client, p50/p99 latency and drops.

    .venv/bin/python bench/console_throughput.py [--lines 200000] [--clients 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

GENERATOR = """import os, sys, time
n = int(os.environ.get("LINES", "100000"))
time.sleep(float(os.environ.get("WARMUP", "3")))
out = sys.stdout
for i in range(n):
    out.write(f"{i} {time.monotonic_ns()}\\n")
out.flush()
time.sleep(3600)
"""


def hostplane(*args: str, env: dict[str, str], data_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hostplane", *args, "--data-dir", str(data_dir)],
        env=env,
        check=True,
        capture_output=True,
    )


async def client(
    url: str, server_id: str, total: int, ready: asyncio.Event, results: list[dict[str, Any]]
) -> None:
    latencies: list[int] = []
    dropped = 0
    received = 0
    first = last = 0.0
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(
            json.dumps({"type": "subscribe", "serverId": server_id, "events": ["server_log"]})
        )
        while json.loads(await ws.recv()).get("type") != "subscribed":
            pass
        ready.set()
        try:
            async with asyncio.timeout(120):
                while received + dropped < total:
                    message = json.loads(await ws.recv())
                    now = time.monotonic_ns()
                    if message.get("type") == "lines_dropped":
                        dropped += int(message["count"])
                        continue
                    if message.get("type") != "server_log":
                        continue
                    lines = message["data"].rstrip("\n").split("\n")
                    if not first:
                        first = time.monotonic()
                    last = time.monotonic()
                    received += len(lines)
                    # Sample latency on the batch's last line (the newest).
                    latencies.append(now - int(lines[-1].split()[1]))
        except TimeoutError:
            pass
    results.append(
        {
            "received": received,
            "dropped": dropped,
            "seconds": max(last - first, 1e-9),
            "latencies": latencies,
        }
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hostplane-bench-"))
    port = 18000 + os.getpid() % 1000
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTPLANE_")} | {
        "HOSTPLANE_SECRET_KEY": "bench-secret-key-that-is-long-enough-000000",
        "HOSTPLANE_LOG_LEVEL": "warning",
        "HOSTPLANE_RATE_LIMITS__ENABLED": "false",
    }
    hostplane("migrate", env=env, data_dir=workdir)
    hostplane(
        "admin",
        "create",
        "--email",
        "bench@example.com",
        "--password",
        "bench password",
        "--role",
        "owner",
        env=env,
        data_dir=workdir,
    )
    panel = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hostplane",
            "serve",
            "--data-dir",
            str(workdir),
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    agent: subprocess.Popen[bytes] | None = None
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            for _ in range(100):
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
            token = (
                await http.post(
                    "/api/auth/login",
                    json={"email": "bench@example.com", "password": "bench password"},
                )
            ).json()["data"]["token"]
            http.headers["Authorization"] = f"Bearer {token}"
            node = (
                await http.post(
                    "/api/nodes",
                    json={
                        "name": "bench",
                        "hostname": "127.0.0.1",
                        "publicAddress": "127.0.0.1",
                        "maxMemoryMb": 4096,
                        "maxCpuCores": 2,
                    },
                )
            ).json()["data"]
            script = "#!/bin/sh\ncat > gen.py <<'PY'\n" + GENERATOR + "PY\n"
            template = (
                await http.post(
                    "/api/templates",
                    json={
                        "name": "flood",
                        "dockerImage": "none",
                        "startCommand": "python3 -u gen.py",
                        "environment": {"LINES": str(args.lines)},
                        "installScript": script,
                    },
                )
            ).json()["data"]
            server = (
                await http.post(
                    "/api/servers",
                    json={
                        "name": "flood",
                        "templateId": template["id"],
                        "nodeId": node["id"],
                        "allocatedMemoryMb": 256,
                        "allocatedCpuCores": 1,
                        "allocatedDiskMb": 100,
                        "restartPolicy": "never",
                    },
                )
            ).json()["data"]
            agent_env = env | {
                "HOSTPLANE_AGENT_PANEL_URL": f"ws://127.0.0.1:{port}/ws",
                "HOSTPLANE_AGENT_NODE_ID": node["id"],
                "HOSTPLANE_AGENT_TOKEN": node["secret"],
                "HOSTPLANE_AGENT_SANDBOX": "false",
                "HOSTPLANE_AGENT_DATA_DIR": str(workdir / "agent"),
            }
            agent = subprocess.Popen(
                [sys.executable, "-m", "hostplane", "agent"],
                env=agent_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for _ in range(100):
                if (await http.get(f"/api/nodes/{node['id']}")).json()["data"]["isOnline"]:
                    break
                await asyncio.sleep(0.2)
            await http.post(f"/api/servers/{server['id']}/install")
            for _ in range(100):
                if (await http.get(f"/api/servers/{server['id']}")).json()["data"][
                    "status"
                ] == "stopped":
                    break
                await asyncio.sleep(0.2)
            results: list[dict[str, Any]] = []
            readies = [asyncio.Event() for _ in range(args.clients)]
            url = f"ws://127.0.0.1:{port}/ws?token={token}"
            tasks = [
                asyncio.create_task(client(url, server["id"], args.lines, ready, results))
                for ready in readies
            ]
            await asyncio.gather(*(ready.wait() for ready in readies))
            await http.post(f"/api/servers/{server['id']}/start")
            await asyncio.gather(*tasks)
            await http.post(f"/api/servers/{server['id']}/kill")
    finally:
        for process in (agent, panel):
            if process is None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run(["pkill", "-f", str(workdir)], check=False)

    rates = [r["received"] / r["seconds"] for r in results]
    latencies = sorted(ms for r in results for ms in r["latencies"])
    p50 = latencies[len(latencies) // 2] / 1e6 if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99)] / 1e6 if latencies else float("nan")
    print(f"lines per server: {args.lines}, clients: {args.clients}")
    print(
        f"delivered per client: min {min(r['received'] for r in results)}, max {max(r['received'] for r in results)}"
    )
    print(
        f"throughput per client (lines/s): median {statistics.median(rates):,.0f}, min {min(rates):,.0f}"
    )
    print(f"latency stdout -> client: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"dropped (reported to clients): {sum(r['dropped'] for r in results)}")


if __name__ == "__main__":
    asyncio.run(main())
