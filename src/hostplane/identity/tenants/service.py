"""Tenant rules."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.identity.tenants.models import Tenant

DEFAULT_TENANT_SLUG = "default"


async def ensure_default_tenant(session: AsyncSession, *, name: str = "Default") -> Tenant:
    """The embedded default's single tenant, created on first use."""
    tenant = await session.scalar(select(Tenant).where(Tenant.slug == DEFAULT_TENANT_SLUG))
    if tenant is None:
        tenant = Tenant(name=name, slug=DEFAULT_TENANT_SLUG, status="active")
        session.add(tenant)
        await session.flush()
    return tenant
