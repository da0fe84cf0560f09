"""Operator routes: Catalyst's ``/api/admin/stats`` and ``/api/admin/health``,
QeinTech's ``/api/admin/config``, and Aura's public ``/api/v1/settings/system/config``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from hostplane.core.context import RequestContext, attach_context
from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.errors import Forbidden
from hostplane.core.http.deps import RuntimeDep, SessionDep, client_ip, require
from hostplane.core.http.envelope import Envelope, ok
from hostplane.core.http.middleware import route_template
from hostplane.core.principal import Principal
from hostplane.identity.tenants import service as tenants
from hostplane.platform.admin import live, overview, service
from hostplane.platform.admin.schemas import (
    ConfigOut,
    ConfigPatch,
    Health,
    PublicConfig,
    RuntimeConfig,
    Stats,
)

router = APIRouter(tags=["admin"])

PlatformReader = Annotated[Principal, Depends(require("platform.read"))]
ConfigReader = Annotated[Principal, Depends(require("config.read"))]
ConfigManager = Annotated[Principal, Depends(require("config.manage"))]


@router.get("/api/admin/stats", response_model=Envelope[Stats])
async def admin_stats(session: SessionDep, _principal: PlatformReader) -> Envelope[Stats]:
    """Servers, nodes, users, memory and CPU of the caller's tenant: totals from the
    rows, usage from what the agents last reported."""
    return ok(await overview.stats(session))


@router.get("/api/admin/health", response_model=Envelope[Health])
async def admin_health(
    session: SessionDep, runtime: RuntimeDep, _principal: PlatformReader
) -> Envelope[Health]:
    """Database, event bus, every node and its agent, the job queue and the data folder's
    free disk; ``degraded`` names each part at fault. Always 200: the state is the answer."""
    return ok(await overview.health(session, runtime))


@router.get("/api/admin/config", response_model=Envelope[ConfigOut])
async def get_config(
    session: SessionDep, runtime: RuntimeDep, _principal: ConfigReader
) -> Envelope[ConfigOut]:
    """The runtime configuration: maintenance mode, registration, prices of paid extras,
    rate limits and default resource limits, with its version."""
    return ok(await service.load(session, runtime.settings))


@router.patch("/api/admin/config", response_model=Envelope[ConfigOut])
async def patch_config(
    body: ConfigPatch, request: Request, runtime: RuntimeDep, principal: ConfigManager
) -> Envelope[ConfigOut]:
    """Change some settings (only the fields given). Validated as a whole (400 names the
    field), audited, stored, and applied by every panel process and worker within a
    second. Only the platform's own operators change it: it applies to every tenant."""
    context = RequestContext(
        principal=principal,
        request_id=getattr(request.state, "request_id", None),
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
        method=request.method,
        route=route_template(request.scope),
        path_params={},
    )
    # A unit of work of its own: this process applies the change as soon as it
    # committed, so the caller's next request already sees it.
    async with runtime.unit_of_work() as session:
        scope_to_tenant(session, principal.tenant_id)
        attach_context(session, context)
        if not await tenants.is_platform_operator(session, principal):
            raise Forbidden("Only the platform's operators change the platform configuration")
        out = await service.update(session, runtime.settings, principal, body.changes())
    live.apply(runtime, RuntimeConfig.model_validate(out.model_dump()), out.version)
    return ok(out)


@router.get("/api/v1/settings/system/config", response_model=Envelope[PublicConfig])
async def public_config(runtime: RuntimeDep) -> Envelope[PublicConfig]:
    """Public: maintenance mode and its message, whether sign-up is open, and the prices
    of paid extras. Answered from memory; open during maintenance."""
    config = live.current(runtime)
    return ok(
        PublicConfig(
            maintenance=config.maintenance,
            registration_open=config.registration.open,
            prices=config.prices,
        )
    )
