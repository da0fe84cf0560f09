"""Tenant rules."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.errors import Conflict, Forbidden, NotFound
from hostplane.core.ids import new_id
from hostplane.core.pagination import PageMeta, PageParams, paginate
from hostplane.core.principal import Principal
from hostplane.identity.tenants.models import Tenant

DEFAULT_TENANT_SLUG = "default"


async def ensure_default_tenant(session: AsyncSession, *, name: str = "Default") -> Tenant:
    """The embedded default's single tenant, created on first use."""
    tenant = await session.scalar(select(Tenant).where(Tenant.slug == DEFAULT_TENANT_SLUG))
    if tenant is None:
        tenant = Tenant(name=name, slug=DEFAULT_TENANT_SLUG, status="active", is_platform=True)
        session.add(tenant)
        await session.flush()
    return tenant


class TenantNotFound(NotFound):
    def __init__(self, tenant_id: str) -> None:
        super().__init__("tenant", tenant_id)


async def is_platform_operator(session: AsyncSession, principal: Principal) -> bool:
    """Whether the caller acts from the installation's own (platform) tenant."""
    tenant = await session.get(Tenant, principal.tenant_id) if principal.tenant_id else None
    return tenant is not None and tenant.is_platform


async def require_platform_operator(session: AsyncSession, principal: Principal) -> None:
    """Tenants are managed from the installation's own (platform) tenant only."""
    tenant = await session.get(Tenant, principal.tenant_id) if principal.tenant_id else None
    if tenant is None or not tenant.is_platform:
        raise Forbidden("Only the platform's operators manage tenants")


def _slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:50]
    return slug or "tenant"


async def create_tenant(
    session: AsyncSession, *, name: str, slug: str | None, status: str
) -> Tenant:
    wanted = slug or _slugify(name)
    if await session.scalar(select(Tenant.id).where(Tenant.slug == wanted)):
        if slug:
            raise Conflict(f"A tenant with slug {slug!r} exists")
        wanted = f"{wanted}-{new_id()[-6:]}"
    tenant = Tenant(name=name.strip(), slug=wanted, status=status, is_platform=False)
    session.add(tenant)
    await session.flush()
    return tenant


async def get_tenant(session: AsyncSession, tenant_id: str) -> Tenant:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise TenantNotFound(tenant_id)
    return tenant


async def list_tenants(
    session: AsyncSession, params: PageParams
) -> tuple[Sequence[Tenant], PageMeta]:
    return await paginate(session, select(Tenant).order_by(Tenant.id), params)
