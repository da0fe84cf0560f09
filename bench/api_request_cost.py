"""CPU and database queries per API request, in process: figures that do not depend on load.

Builds the panel app on a fresh database (SQLite by default, PostgreSQL with
``--database postgresql+asyncpg://...``), seeds a customer owning ``--servers``
servers, and calls the ASGI app directly (no HTTP server, no client library in
between) ``--requests`` times per route after a warm-up. Prints, per route,
the CPU milliseconds per request (``time.process_time``, which a loaded
machine does not inflate the way wall time is), the wall milliseconds, and
the SQL statements per request (counted by an engine event listener).
``--profile FILE`` writes a cProfile of the measured requests of all routes.

    .venv/bin/python bench/api_request_cost.py [--requests 500] [--database URL] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import ROOT, SECRET

sys.path.insert(0, str(ROOT))

from sqlalchemy import event
from tests.support.factories import make_user
from tests.support.infra import make_node, make_server, make_template

from hostplane.app import build_runtime, create_app
from hostplane.core.config import Settings
from hostplane.core.logging import configure_logging
from hostplane.identity.roles.service import ensure_builtin_roles
from hostplane.identity.tenants.service import ensure_default_tenant
from hostplane.models import metadata

PASSWORD = "a long bench passphrase"


class Call:
    """One in-process request: the ASGI scope, and the status and body it got."""

    def __init__(self, app: Any, method: str, path: str, token: str | None, body: bytes = b""):
        self.app = app
        self.body = body
        path_only, _, query = path.partition("?")
        headers = [(b"host", b"bench"), (b"user-agent", b"bench")]
        if token:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        if body:
            headers.append((b"content-type", b"application/json"))
        self.scope_template: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path_only,
            "raw_path": path_only.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }

    async def __call__(self) -> tuple[int, bytes]:
        status = 0
        chunks: list[bytes] = []
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": self.body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(dict(self.scope_template), receive, send)
        return status, b"".join(chunks)


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="hostplane-cost-"))
    settings = Settings(
        environment="test",
        secret_key=SECRET,
        data_dir=folder / "data",
        database_url=args.database or f"sqlite+aiosqlite:///{folder / 'cost.db'}",
        log_level="warning",
        log_format="json",
        rate_limits={"enabled": False},  # type: ignore[arg-type]
    )
    # As `hostplane serve` under the API bench (HOSTPLANE_LOG_LEVEL=warning).
    configure_logging(level=settings.log_level, fmt="json")
    runtime = build_runtime(settings)
    async with runtime.engine.begin() as connection:
        await connection.run_sync(metadata.drop_all)
        await connection.run_sync(metadata.create_all)
    app = create_app(settings, runtime=runtime)
    statements = 0

    def count(*_: object) -> None:
        nonlocal statements
        statements += 1

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", count)
    async with app.router.lifespan_context(app):
        async with runtime.sessions() as db:
            tenant = await ensure_default_tenant(db)
            await ensure_builtin_roles(db)
            await db.commit()
            user = await make_user(db, tenant=tenant, role="customer", password=PASSWORD)
            node, _ = await make_node(
                db,
                tenant=tenant,
                port_range=(30000, 30000 + args.servers),
                max_memory_mb=1024 * args.servers,
                max_cpu_cores=args.servers,
                max_disk_mb=1000 * args.servers,
            )
            template = await make_template(db, tenant=tenant)
            server_ids = [
                (await make_server(db, tenant=tenant, owner=user, node=node, template=template)).id
                for _ in range(args.servers)
            ]
        status, body = await Call(
            app,
            "POST",
            "/api/auth/login",
            None,
            json.dumps({"email": user.email, "password": PASSWORD}).encode(),
        )()
        assert status == 200, body
        token = json.loads(body)["data"]["token"]
        routes = {
            "GET /api/servers?limit=20": Call(app, "GET", "/api/servers?limit=20", token),
            "GET /api/servers/{id}": Call(app, "GET", f"/api/servers/{server_ids[-1]}", token),
            "GET /api/auth/me": Call(app, "GET", "/api/auth/me", token),
            "GET /health": Call(app, "GET", "/health", None),
        }
        profiler = cProfile.Profile() if args.profile else None
        print(f"{'route':<28} {'CPU ms/req':>10} {'wall ms/req':>11} {'SQL/req':>8}")
        for label, call in routes.items():
            for _ in range(args.warmup):
                status, body = await call()
                assert status == 200, (label, status, body[:300])
            statements = 0
            cpu, wall = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            for _ in range(args.requests):
                await call()
            if profiler:
                profiler.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            n = args.requests
            print(
                f"{label:<28} {cpu / n * 1000:>10.3f} {wall / n * 1000:>11.3f} {statements / n:>8.2f}",
                flush=True,
            )
        if profiler:
            profiler.dump_stats(args.profile)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--servers", type=int, default=40)
    parser.add_argument("--database", help="a postgresql+asyncpg:// URL (default: SQLite)")
    parser.add_argument("--profile", help="write a cProfile of the measured requests here")
    arguments = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(arguments))
    except ImportError:
        asyncio.run(main(arguments))
