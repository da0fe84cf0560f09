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

# The server: numbered lines, each stamped with CLOCK_MONOTONIC when written.
# flood: one write per line as fast as it goes (an unbuffered producer);
# buffered: 2,000 lines per write (a busy game server's block-buffered stdout);
# paced: RATE lines/s, one write per line, in 1 ms ticks.
GENERATOR = """import os, sys, time
n = int(os.environ.get("LINES", "100000"))
mode = os.environ.get("MODE", "flood")
rate = float(os.environ.get("RATE", "10000"))
time.sleep(float(os.environ.get("WARMUP", "3")))
out = sys.stdout
if mode == "buffered":
    i = 0
    while i < n:
        now = time.monotonic_ns()
        k = min(2000, n - i)
        out.write("".join(f"{j} {now}\\n" for j in range(i, i + k)))
        i += k
elif mode == "paced":
    start = time.monotonic()
    i = 0
    while i < n:
        due = min(n, int((time.monotonic() - start) * rate) + 1)
        while i < due:
            out.write(f"{i} {time.monotonic_ns()}\\n")
            i += 1
        time.sleep(0.001)
else:
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
                    # Latency of the batch's first line: the oldest, so the worst in it.
                    latencies.append(now - int(lines[0].split()[1]))
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


async def run_scenario(
    http: httpx.AsyncClient,
    ws_url: str,
    node_id: str,
    *,
    mode: str,
    lines: int,
    rate: int,
    clients: int,
) -> dict[str, Any]:
    script = "#!/bin/sh\ncat > gen.py <<'PY'\n" + GENERATOR + "PY\n"
    template = (
        await http.post(
            "/api/templates",
            json={
                "name": f"flood-{mode}-{rate}",
                "dockerImage": "none",
                "startCommand": "python3 -u gen.py",
                "environment": {"LINES": str(lines), "MODE": mode, "RATE": str(rate)},
                "installScript": script,
            },
        )
    ).json()["data"]
    server = (
        await http.post(
            "/api/servers",
            json={
                "name": f"flood-{mode}-{rate}",
                "templateId": template["id"],
                "nodeId": node_id,
                "allocatedMemoryMb": 256,
                "allocatedCpuCores": 1,
                "allocatedDiskMb": 100,
                "restartPolicy": "never",
            },
        )
    ).json()["data"]
    await http.post(f"/api/servers/{server['id']}/install")
    for _ in range(300):
        status = (await http.get(f"/api/servers/{server['id']}")).json()["data"]["status"]
        if status == "stopped":
            break
        await asyncio.sleep(0.2)
    results: list[dict[str, Any]] = []
    readies = [asyncio.Event() for _ in range(clients)]
    tasks = [
        asyncio.create_task(client(ws_url, server["id"], lines, ready, results))
        for ready in readies
    ]
    await asyncio.gather(*(ready.wait() for ready in readies))
    await http.post(f"/api/servers/{server['id']}/start")
    await asyncio.gather(*tasks)
    await http.post(f"/api/servers/{server['id']}/kill")
    rates = [r["received"] / r["seconds"] for r in results]
    latencies = sorted(ms for r in results for ms in r["latencies"])
    return {
        "label": mode if mode != "paced" else f"paced {rate:,} lines/s",
        "lines": lines,
        "min_delivered": min(r["received"] for r in results),
        "rate_median": statistics.median(rates),
        "rate_min": min(rates),
        "p50": latencies[len(latencies) // 2] / 1e6 if latencies else float("nan"),
        "p99": latencies[int(len(latencies) * 0.99)] / 1e6 if latencies else float("nan"),
        "dropped": sum(r["dropped"] for r in results),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000, help="lines of the flood mode")
    parser.add_argument("--buffered-lines", type=int, default=2_000_000)
    parser.add_argument("--paced-seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument(
        "--modes",
        default="flood,buffered,paced:10000,paced:50000",
        help="comma-separated: flood, buffered, paced:RATE",
    )
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
    figures: list[dict[str, Any]] = []
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
                        "maxMemoryMb": 16384,
                        "maxCpuCores": 16,
                    },
                )
            ).json()["data"]
            agent_env = env | {
                "HOSTPLANE_AGENT__PANEL_URL": f"ws://127.0.0.1:{port}/ws",
                "HOSTPLANE_AGENT__NODE_ID": node["id"],
                "HOSTPLANE_AGENT__TOKEN": node["secret"],
                "HOSTPLANE_AGENT__DATA_DIR": str(workdir / "agent"),
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
            url = f"ws://127.0.0.1:{port}/ws?token={token}"
            for item in args.modes.split(","):
                mode, _, rate_text = item.partition(":")
                rate = int(rate_text or 0)
                lines = {
                    "flood": args.lines,
                    "buffered": args.buffered_lines,
                    "paced": rate * args.paced_seconds,
                }[mode]
                figures.append(
                    await run_scenario(
                        http,
                        url,
                        node["id"],
                        mode=mode,
                        lines=lines,
                        rate=rate,
                        clients=args.clients,
                    )
                )
                report(figures[-1], args.clients)
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
    print("\nAll modes:")
    for item in figures:
        report(item, args.clients)


def report(item: dict[str, Any], clients: int) -> None:
    print(
        f"{item['label']:<24} {item['lines']:>9,} lines x {clients} clients: "
        f"median {item['rate_median']:>10,.0f} lines/s/client (min {item['rate_min']:,.0f}), "
        f"latency p50 {item['p50']:.1f} ms p99 {item['p99']:.1f} ms, "
        f"delivered min {item['min_delivered']:,}, dropped {item['dropped']}",
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
