"""What a fresh installation needs before anyone can log in."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.security.passwords import generate_password
from hostplane.identity.roles.models import Role, UserRole
from hostplane.identity.roles.service import ADMIN_ROLE_NAMES, ensure_builtin_roles
from hostplane.identity.tenants.service import ensure_default_tenant
from hostplane.identity.users.models import User
from hostplane.identity.users.service import create_user

DEFAULT_ADMIN_EMAIL = "admin@hostplane.local"


@dataclass(frozen=True, slots=True)
class FirstAdmin:
    email: str
    # Set only when the account was created just now: shown once, never stored.
    password: str | None


async def first_admin(session: AsyncSession) -> User | None:
    """The oldest account holding an admin role, if any."""
    return await session.scalar(
        select(User)
        .join(UserRole, UserRole.user_id == User.id)
        .join(Role, Role.id == UserRole.role_id)
        .where(Role.name.in_(ADMIN_ROLE_NAMES), Role.builtin.is_(True))
        .order_by(User.id)
        .limit(1)
    )


async def ensure_installation(
    session: AsyncSession, *, admin_email: str = DEFAULT_ADMIN_EMAIL
) -> FirstAdmin:
    """Default tenant, built-in roles and one owner account, each created once."""
    tenant = await ensure_default_tenant(session)
    await ensure_builtin_roles(session)
    existing = await first_admin(session)
    if existing is not None:
        return FirstAdmin(email=existing.email, password=None)
    password = generate_password()
    user = await create_user(
        session,
        tenant_id=tenant.id,
        email=admin_email,
        password=password,
        username="admin",
        role="owner",
    )
    return FirstAdmin(email=user.email, password=password)


async def create_admin(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    username: str | None = None,
    role: str = "admin",
) -> User:
    """An operator account in the default tenant (``hostplane admin create``)."""
    tenant = await ensure_default_tenant(session)
    await ensure_builtin_roles(session)
    return await create_user(
        session, tenant_id=tenant.id, email=email, password=password, username=username, role=role
    )
