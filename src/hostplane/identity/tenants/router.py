"""``/api/tenants`` (mPanel): the platform's operators manage tenants."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from hostplane.core.http.deps import PageDep, SessionDep, require
from hostplane.core.http.envelope import Envelope, PageEnvelope, ok, page
from hostplane.core.principal import Principal
from hostplane.identity.tenants import service
from hostplane.identity.tenants.schemas import TenantCreate, TenantOut

router = APIRouter(prefix="/api/tenants", tags=["tenants"])

TenantReader = Annotated[Principal, Depends(require("tenant.read"))]
TenantManager = Annotated[Principal, Depends(require("tenant.manage"))]


@router.get("", response_model=PageEnvelope[TenantOut])
async def list_tenants(
    session: SessionDep, principal: TenantReader, params: PageDep
) -> PageEnvelope[TenantOut]:
    """Every tenant of the installation."""
    await service.require_platform_operator(session, principal)
    tenants, meta = await service.list_tenants(session, params)
    return page([TenantOut.model_validate(t) for t in tenants], meta)


@router.post("", response_model=Envelope[TenantOut], status_code=201)
async def create_tenant(
    body: TenantCreate, session: SessionDep, principal: TenantManager
) -> Envelope[TenantOut]:
    """A new tenant (its first operator is created with ``POST /api/users`` by a platform operator acting in it, or the CLI)."""
    await service.require_platform_operator(session, principal)
    tenant = await service.create_tenant(
        session, name=body.name, slug=body.slug, status=body.status
    )
    return ok(TenantOut.model_validate(tenant))


@router.get("/{tenant_id}", response_model=Envelope[TenantOut])
async def get_tenant(
    tenant_id: str, session: SessionDep, principal: TenantReader
) -> Envelope[TenantOut]:
    """One tenant."""
    await service.require_platform_operator(session, principal)
    return ok(TenantOut.model_validate(await service.get_tenant(session, tenant_id)))
