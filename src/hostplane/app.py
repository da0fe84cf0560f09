"""The app factory: settings -> engine -> bus -> routers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

import hostplane.models  # noqa: F401 - registers every table with the ORM before first use
from hostplane import __version__
from hostplane.commerce.catalog.router import router as catalog_router
from hostplane.commerce.invoices.router import router as invoices_router
from hostplane.commerce.payments.router import router as payments_router
from hostplane.commerce.rewards.router import router as rewards_router
from hostplane.commerce.subscriptions.router import router as subscriptions_router
from hostplane.commerce.wallet.router import router as wallet_router
from hostplane.core.config import Settings
from hostplane.core.db.engine import create_engine, read_only
from hostplane.core.db.session import create_session_factory
from hostplane.core.events.bus import create_bus
from hostplane.core.http.envelope import ERROR_RESPONSES, error_body
from hostplane.core.http.errors import install_error_handlers
from hostplane.core.http.middleware import RequestMiddleware
from hostplane.core.http.middleware_forwarded import ForwardedClientMiddleware
from hostplane.core.http.ratelimit import enforce_rate_limit
from hostplane.core.ratelimit import create_rate_limiter
from hostplane.core.runtime import Runtime
from hostplane.identity.access import principal_cache
from hostplane.identity.api_keys.router import router as api_keys_router
from hostplane.identity.auth.keys import warm_key_ring
from hostplane.identity.auth.router import jwks_router
from hostplane.identity.auth.router import router as auth_router
from hostplane.identity.authenticator import authenticate
from hostplane.identity.permissions.router import router as permissions_router
from hostplane.identity.roles.router import router as roles_router
from hostplane.identity.tenants.router import router as tenants_router
from hostplane.identity.users.router import router as users_router
from hostplane.infra.alerts.router import router as alerts_router
from hostplane.infra.backups.router import router as backups_router
from hostplane.infra.databases.router import admin_router as database_hosts_router
from hostplane.infra.databases.router import router as databases_router
from hostplane.infra.files.router import router as files_router
from hostplane.infra.locations.router import router as locations_router
from hostplane.infra.nodes.router import router as nodes_router
from hostplane.infra.schedules.router import router as schedules_router
from hostplane.infra.schedules.scheduler import Scheduler
from hostplane.infra.servers.admin_routes import router as admin_servers_router
from hostplane.infra.servers.router import router as servers_router
from hostplane.infra.templates.router import router as templates_router
from hostplane.infra.transfers.router import router as transfers_router
from hostplane.platform.admin.live import ConfigFollower
from hostplane.platform.admin.maintenance import enforce_maintenance
from hostplane.platform.admin.router import router as admin_router
from hostplane.platform.audit.hooks import install_audit
from hostplane.platform.audit.router import router as audit_router
from hostplane.platform.health.router import router as health_router
from hostplane.platform.jobs.router import router as jobs_router
from hostplane.platform.jobs.worker import Worker
from hostplane.platform.system.router import router as system_router
from hostplane.platform.webhooks.router import router as webhooks_router
from hostplane.realtime.router import api_router as realtime_api_router
from hostplane.realtime.router import router as realtime_router

# Routers under /api, in the order they appear in the OpenAPI document.
API_ROUTERS: list[APIRouter] = [
    realtime_api_router,
    auth_router,
    users_router,
    tenants_router,
    permissions_router,
    roles_router,
    api_keys_router,
    audit_router,
    jobs_router,
    locations_router,
    nodes_router,
    templates_router,
    # Before the servers' routes: /api/servers/deploy is a literal beside {server_id}.
    subscriptions_router,
    servers_router,
    files_router,
    backups_router,
    transfers_router,
    admin_router,
    admin_servers_router,
    schedules_router,
    database_hosts_router,
    databases_router,
    alerts_router,
    webhooks_router,
    catalog_router,
    system_router,
    wallet_router,
    rewards_router,
    payments_router,
    invoices_router,
]


def build_runtime(settings: Settings) -> Runtime:
    engine = create_engine(settings)
    runtime = Runtime(
        settings=settings,
        engine=engine,
        sessions=create_session_factory(engine, settings=settings),
        read_sessions=create_session_factory(read_only(engine), settings=settings),
        bus=create_bus(settings),
        rate_limiter=create_rate_limiter(settings),
        authenticate=authenticate,
    )
    install_audit(runtime)
    principal_cache.install(runtime)
    return runtime


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    # A connection lost mid-transaction (the database restarted, a failover)
    # is the service being briefly unavailable, not a server bug; the pool is
    # already invalidated, so the client's retry gets a fresh connection.
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return JSONResponse(
            error_body("SERVICE_UNAVAILABLE", "The database connection was lost; try again"),
            status_code=503,
            headers={"Retry-After": "1"},
        )
    raise exc


def create_app(settings: Settings, *, runtime: Runtime | None = None, workers: int = 0) -> FastAPI:
    """The panel's ASGI app.

    ``workers`` > 0 runs that many job workers inside the app's process (the
    embedded default); production runs them with ``hostplane worker``.
    """
    runtime = runtime or build_runtime(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.bus.start()
        await warm_key_ring(runtime)
        config_follower = ConfigFollower(runtime)
        await config_follower.start()
        listening = asyncio.Event()
        invalidations = asyncio.create_task(
            principal_cache.listen(runtime, listening), name="principal-cache-invalidations"
        )
        # Serve no request before other processes' changes can reach the cache.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listening.wait(), timeout=10)
        stop = asyncio.Event()
        worker_tasks = [
            asyncio.create_task(Worker(runtime).run(stop), name=f"jobs-worker-{n}")
            for n in range(workers)
        ]
        if workers and settings.schedules.enabled:
            # Where the job workers run, the scheduler that feeds them scheduled runs runs too.
            worker_tasks.append(
                asyncio.create_task(Scheduler(runtime).run(stop), name="schedules-scheduler")
            )
        try:
            yield
        finally:
            stop.set()
            await config_follower.close()
            for task in worker_tasks:
                with contextlib.suppress(Exception):
                    await task
            invalidations.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await invalidations
            await runtime.bus.close()
            await runtime.rate_limiter.close()
            await runtime.engine.dispose()

    app = FastAPI(
        title="hostplane",
        version=__version__,
        summary="Hosting control plane: servers on a fleet of nodes, billing, domains and support.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
        # Maintenance after the rate limit: a refused caller is still counted.
        dependencies=[Depends(enforce_rate_limit), Depends(enforce_maintenance)],
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_exception_handler(DBAPIError, _database_error)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(RequestMiddleware, metrics=runtime.metrics)
    # Outermost: everything inside sees the client a trusted proxy names.
    app.add_middleware(ForwardedClientMiddleware, trusted_proxies=settings.http.trusted_proxies)
    app.include_router(health_router)
    app.include_router(jwks_router)
    app.include_router(realtime_router)
    for router in API_ROUTERS:
        app.include_router(router, responses=ERROR_RESPONSES)
    return app
