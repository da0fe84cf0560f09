"""HTTP API throughput: hostplane against a bare app doing the same work, in the same run.

Starts, as separate processes:

- ``hostplane serve`` on a fresh PostgreSQL database (``--workers 1`` and ``2``),
  rate limits off, with an operator, a customer owning ``--servers`` servers on
  a node whose agent runs one live echo server (for ``POST .../command``);
- ``hostplane up`` on SQLite in a fresh folder, seeded the same way;
- the bare baseline (``bench/bare_app.py``: Starlette + PyJWT EdDSA verify +
  asyncpg, one user lookup and the same 20-row query), with as many processes.

Loads each with ``wrk`` (Debian's package) at ``--connections`` and prints
req/s, p50 and p99 per route, the median of ``--runs`` runs, and the ratios.

    .venv/bin/python bench/api_throughput.py [--duration 12] [--runs 3] [--connections 64]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _harness import (
    PASSWORD,
    ROOT,
    SECRET,
    clean_env,
    free_port,
    hostplane,
    postgres_database,
    process,
    wait_health,
)

ECHO = json.loads((ROOT / "src/hostplane/templates/python-echo.json").read_text())


# --- seeding --------------------------------------------------------------------------------


@dataclass
class Seeded:
    token: str
    """The customer's access token."""
    server_id: str
    live_server_id: str | None


def seed(base: str, operator_token: str, node_id: str, servers: int) -> Seeded:
    ops = httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {operator_token}"}, timeout=60
    )
    template = ops.post("/api/templates", json=ECHO)
    assert template.status_code == 201, template.text
    template_id = template.json()["data"]["id"]
    name = f"customer{int(time.time() * 1000) % 10**8}"
    registered = httpx.post(
        f"{base}/api/auth/register",
        json={"email": f"{name}@example.com", "password": PASSWORD, "username": name},
    )
    assert registered.status_code == 200, registered.text
    user_id = registered.json()["data"]["userId"]
    ids = []
    for index in range(servers):
        created = ops.post(
            "/api/servers",
            json={
                "name": f"srv-{index}",
                "templateId": template_id,
                "nodeId": node_id,
                "ownerId": user_id,
                "allocatedMemoryMb": 64,
                "allocatedCpuCores": 0.1,
                "allocatedDiskMb": 100,
            },
        )
        assert created.status_code == 201, created.text
        ids.append(created.json()["data"]["id"])
    token = httpx.post(
        f"{base}/api/auth/login",
        json={"email": f"{name}@example.com", "password": PASSWORD},
    ).json()["data"]["token"]
    user = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    live = ids[0]
    if user.post(f"/api/servers/{live}/install").status_code != 200:
        return Seeded(token, ids[-1], None)
    if (
        not _until(user, live, "stopped")
        or user.post(f"/api/servers/{live}/start").status_code != 200
    ):
        return Seeded(token, ids[-1], None)
    return Seeded(token, ids[-1], live if _until(user, live, "running") else None)


def stop_live(base: str, seeded: Seeded) -> None:
    """Kill the live server: servers outlive their agent by design, the bench's must not."""
    if seeded.live_server_id:
        httpx.post(
            f"{base}/api/servers/{seeded.live_server_id}/kill",
            headers={"Authorization": f"Bearer {seeded.token}"},
            timeout=30,
        )


def _until(http: httpx.Client, server_id: str, status: str) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if http.get(f"/api/servers/{server_id}").json()["data"]["status"] == status:
            return True
        time.sleep(0.2)
    return False


def wait_node_online(base: str, token: str, node_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        node = httpx.get(
            f"{base}/api/nodes/{node_id}", headers={"Authorization": f"Bearer {token}"}
        ).json()["data"]
        if node["isOnline"]:
            return
        time.sleep(0.2)
    raise TimeoutError("the bench node's agent did not come online")


# --- load -----------------------------------------------------------------------------------


@dataclass
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    assert match, text
    return float(match.group(1)) * _UNIT[match.group(2)]


def wrk(
    url: str, *, token: str | None, duration: int, connections: int, post: str | None
) -> Figures:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency"]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    script = None
    if post is not None:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(post)}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        script.close()
        args += ["-s", script.name]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    if script is not None:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return Figures(rps, p50, p99, int(non2xx.group(1)) if non2xx else 0)


def measure(
    url: str, *, token: str | None, args: argparse.Namespace, post: str | None = None
) -> Figures:
    wrk(url, token=token, duration=2, connections=args.connections, post=post)  # warm-up
    runs = [
        wrk(url, token=token, duration=args.duration, connections=args.connections, post=post)
        for _ in range(args.runs)
    ]
    middle = sorted(runs, key=lambda f: f.rps)[len(runs) // 2]
    return Figures(
        statistics.median(f.rps for f in runs),
        statistics.median(f.p50_ms for f in runs),
        statistics.median(f.p99_ms for f in runs),
        middle.errors,
    )


# --- the targets ----------------------------------------------------------------------------


@contextlib.contextmanager
def serve_on_postgres(
    folder: Path, workers: int, args: argparse.Namespace
) -> Iterator[dict[str, Any]]:
    with postgres_database() as libpq_url:
        env = clean_env(
            HOSTPLANE_SECRET_KEY=SECRET,
            HOSTPLANE_DATABASE_URL=libpq_url,
            HOSTPLANE_RATE_LIMITS__ENABLED="false",
            HOSTPLANE_LOG_LEVEL="warning",
            HOSTPLANE_LOG_FORMAT="json",
        )
        if workers > 1:
            # Processes of one panel share their events (agents' replies,
            # invalidations) through Redis; a prefix of its own per run.
            env["HOSTPLANE_REDIS_URL"] = args.redis_url
            env["HOSTPLANE_EVENT_CHANNEL_PREFIX"] = f"bench-{os.getpid()}-{time.time_ns()}"
        subprocess.run(
            hostplane("migrate", "--data-dir", str(folder)),
            env=env,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            hostplane("admin", "create", "--data-dir", str(folder), "--email", "ops@example.com",
                      "--password", PASSWORD, "--role", "owner"),
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        port = free_port()
        serve_args = ["serve", "--data-dir", str(folder), "--port", str(port)]
        if workers > 1:
            serve_args += ["--workers", str(workers)]
        with process(hostplane(*serve_args), env, folder / f"serve-{workers}.log") as panel:
            base = f"http://127.0.0.1:{port}"
            wait_health(base, panel, folder / f"serve-{workers}.log")
            ops_token = httpx.post(
                f"{base}/api/auth/login", json={"email": "ops@example.com", "password": PASSWORD}
            ).json()["data"]["token"]
            node = httpx.post(
                f"{base}/api/nodes",
                headers={"Authorization": f"Bearer {ops_token}"},
                json={"name": "bench", "hostname": "127.0.0.1", "publicAddress": "127.0.0.1",
                      "maxMemoryMb": 65536, "maxCpuCores": 64, "maxDiskMb": 1048576},
            ).json()["data"]  # fmt: skip
            agent_env = clean_env(
                HOSTPLANE_AGENT__PANEL_URL=f"ws://127.0.0.1:{port}/ws",
                HOSTPLANE_AGENT__NODE_ID=node["id"],
                HOSTPLANE_AGENT__TOKEN=node["secret"],
                HOSTPLANE_AGENT__DATA_DIR=str(folder / f"agent-{workers}"),
            )
            with process(
                hostplane("agent", "--data-dir", str(folder / f"agent-{workers}")),
                agent_env,
                folder / f"agent-{workers}.log",
            ):
                wait_node_online(base, ops_token, node["id"])
                seeded = seed(base, ops_token, node["id"], args.servers)
                try:
                    yield {"base": base, "seeded": seeded, "database": libpq_url}
                finally:
                    stop_live(base, seeded)


@contextlib.contextmanager
def up_on_sqlite(folder: Path, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    port = free_port()
    env = clean_env(HOSTPLANE_RATE_LIMITS__ENABLED="false", HOSTPLANE_LOG_LEVEL="warning")
    log = folder / "up.log"
    with process(
        hostplane("up", "--data-dir", str(folder / "up"), "--port", str(port)), env, log
    ) as up:
        base = f"http://127.0.0.1:{port}"
        wait_health(base, up, log)
        found = re.search(r"Log in as\s+(\S+) with password (\S+)", log.read_text())
        assert found, log.read_text()
        ops_token = httpx.post(
            f"{base}/api/auth/login", json={"email": found.group(1), "password": found.group(2)}
        ).json()["data"]["token"]
        deadline = time.monotonic() + 60
        node_id = None
        while node_id is None and time.monotonic() < deadline:
            nodes = httpx.get(
                f"{base}/api/nodes", headers={"Authorization": f"Bearer {ops_token}"}
            ).json()["data"]
            node_id = next((n["id"] for n in nodes if n["isOnline"]), None)
            time.sleep(0.2)
        assert node_id, "up's local node did not come online"
        seeded = seed(base, ops_token, node_id, args.servers)
        try:
            yield {"base": base, "seeded": seeded}
        finally:
            stop_live(base, seeded)


@contextlib.contextmanager
def bare(database_url: str, jwks: str, workers: int, folder: Path) -> Iterator[str]:
    port = free_port()
    env = dict(os.environ, BARE_DATABASE_URL=database_url, BARE_JWKS=jwks, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
            "--workers", str(workers)]  # fmt: skip
    log = folder / f"bare-{workers}.log"
    with process(args, env, log) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_health(base, proc, log)
        yield base


def report(rows: list[tuple[str, Figures, Figures | None]]) -> None:
    print(
        f"{'route':<58} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}   {'baseline req/s':>14} {'ratio':>6}"
    )
    for label, got, base in rows:
        line = f"{label:<58} {got.rps:>9.0f} {got.p50_ms:>8.1f} {got.p99_ms:>8.1f} {got.errors:>8}"
        if base is not None:
            line += f"   {base.rps:>14.0f} {got.rps / base.rps:>5.2f}x"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--servers", type=int, default=40)
    parser.add_argument(
        "--workers", default="1,2", help="process counts for serve and the bare app"
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
        help="Redis for serve with more than one process",
    )
    parser.add_argument("--skip-up", action="store_true", help="leave out the SQLite (up) shape")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    with tempfile.TemporaryDirectory(prefix="hostplane-bench-") as tmp:
        folder = Path(tmp)
        rows: list[tuple[str, Figures, Figures | None]] = []
        pg_servers: dict[int, Figures] = {}
        for workers in [int(w) for w in args.workers.split(",")]:
            with serve_on_postgres(folder, workers, args) as target:
                base, seeded = target["base"], target["seeded"]
                jwks = httpx.get(f"{base}/.well-known/jwks.json").text
                with bare(target["database"], jwks, workers, folder) as bare_base:
                    bare_list = measure(f"{bare_base}/api/servers", token=seeded.token, args=args)
                    bare_health = measure(f"{bare_base}/health", token=None, args=args)
                tag = f"serve x{workers}, PostgreSQL"
                listed = measure(f"{base}/api/servers?limit=20", token=seeded.token, args=args)
                pg_servers[workers] = listed
                rows.append((f"GET /api/servers?limit=20 ({tag})", listed, bare_list))
                one = measure(
                    f"{base}/api/servers/{seeded.server_id}", token=seeded.token, args=args
                )
                rows.append((f"GET /api/servers/{{id}} ({tag})", one, bare_list))
                me = measure(f"{base}/api/auth/me", token=seeded.token, args=args)
                rows.append((f"GET /api/auth/me ({tag})", me, bare_list))
                if seeded.live_server_id:
                    command = measure(
                        f"{base}/api/servers/{seeded.live_server_id}/command",
                        token=seeded.token,
                        args=args,
                        post=json.dumps({"command": "ping"}),
                    )
                    rows.append((f"POST /api/servers/{{id}}/command ({tag})", command, None))
                health = measure(f"{base}/health", token=None, args=args)
                rows.append((f"GET /health ({tag}) vs bare plain JSON", health, bare_health))
                report(rows[-5:] if seeded.live_server_id else rows[-4:])
        if not args.skip_up:
            with up_on_sqlite(folder, args) as target:
                base, seeded = target["base"], target["seeded"]
                listed = measure(f"{base}/api/servers?limit=20", token=seeded.token, args=args)
                rows.append(
                    (
                        "GET /api/servers?limit=20 (up, SQLite) vs serve x1 PostgreSQL",
                        listed,
                        pg_servers.get(1),
                    )
                )
                me = measure(f"{base}/api/auth/me", token=seeded.token, args=args)
                rows.append(("GET /api/auth/me (up, SQLite)", me, None))
                report(rows[-2:])
        print("\nAll figures:")
        report(rows)


if __name__ == "__main__":
    main()
