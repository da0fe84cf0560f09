"""Keyword-only factories. Each commits, so the API under test sees the rows."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.ids import new_id
from hostplane.identity.tenants.models import Tenant
from hostplane.identity.users.models import User
from hostplane.identity.users.service import create_user
from hostplane.platform.jobs import service as jobs
from hostplane.platform.jobs.models import Job


async def make_tenant(
    db: AsyncSession, *, name: str = "Acme Hosting", slug: str | None = None
) -> Tenant:
    tenant = Tenant(name=name, slug=slug or f"t-{new_id()[-8:]}", status="active")
    db.add(tenant)
    await db.commit()
    return tenant


async def make_user(
    db: AsyncSession,
    *,
    tenant: Tenant,
    email: str | None = None,
    password: str = "correct horse battery",
    username: str | None = None,
    role: str | None = None,
) -> User:
    suffix = new_id()[-8:]
    user = await create_user(
        db,
        tenant_id=tenant.id,
        email=email or f"user-{suffix}@example.com",
        password=password,
        username=username or f"user_{suffix}",
        role=role,
    )
    await db.commit()
    return user


async def make_job(
    db: AsyncSession,
    *,
    name: str = "test.noop",
    tenant: Tenant | None = None,
    max_attempts: int | None = None,
    **ids: str | int | bool | None,
) -> Job:
    job = await jobs.enqueue(
        db, name, tenant_id=tenant.id if tenant else None, max_attempts=max_attempts, **ids
    )
    await db.commit()
    return job
