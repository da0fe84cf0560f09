"""Real accounts and real logins for API tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.identity.roles.service import ensure_builtin_roles
from hostplane.identity.tenants.models import Tenant
from hostplane.identity.tenants.service import ensure_default_tenant
from hostplane.identity.users.models import User
from tests.support.factories import make_tenant, make_user

PASSWORD = "correct horse battery"


@dataclass
class LoggedIn:
    user: User
    token: str
    refresh_token: str
    body: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def login(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, **extra: Any
) -> httpx.Response:
    return await client.post(
        "/api/auth/login", json={"email": email, "password": password, **extra}
    )


async def logged_in(
    client: httpx.AsyncClient,
    db: AsyncSession,
    *,
    tenant: Tenant | None = None,
    role: str | None = "customer",
    email: str | None = None,
) -> LoggedIn:
    """A new user with ``role``, logged in through ``POST /api/auth/login``."""
    if tenant is None:
        tenant = await ensure_default_tenant(db)
    await ensure_builtin_roles(db)
    await db.commit()
    user = await make_user(db, tenant=tenant, role=role, email=email)
    response = await login(client, user.email, tenant=tenant.slug)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return LoggedIn(user=user, token=data["token"], refresh_token=data["refreshToken"], body=data)


async def platform_tenant(db: AsyncSession) -> Tenant:
    tenant = await ensure_default_tenant(db)
    await db.commit()
    return tenant


async def other_tenant(db: AsyncSession) -> Tenant:
    return await make_tenant(db, name="Other Hosting")
