"""Role rules: the built-in roles and assigning roles to users."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.errors import NotFound
from hostplane.identity.roles.models import Role, UserRole

# The built-in roles every installation has. Their permission sets grow with
# the permission catalogue; "owner" always holds everything.
BUILTIN_ROLES: dict[str, tuple[str, list[str]]] = {
    "owner": ("Owns the installation: every permission.", ["*"]),
    "admin": ("Operates the installation.", ["*"]),
    "customer": ("A hosting customer: acts on what they own.", []),
}
ADMIN_ROLE_NAMES = ("owner", "admin")


async def ensure_builtin_roles(session: AsyncSession) -> dict[str, Role]:
    """Create missing built-in roles; return them by name."""
    existing = {
        role.name: role
        for role in await session.scalars(
            select(Role).where(Role.builtin.is_(True), Role.tenant_id.is_(None))
        )
    }
    for name, (description, permissions) in BUILTIN_ROLES.items():
        if name not in existing:
            role = Role(name=name, description=description, permissions=permissions, builtin=True)
            session.add(role)
            existing[name] = role
    await session.flush()
    return existing


async def assign_role(session: AsyncSession, *, user_id: str, role_name: str) -> None:
    roles = await ensure_builtin_roles(session)
    role = roles.get(role_name)
    if role is None:
        raise NotFound("role", role_name)
    already = await session.get(UserRole, (user_id, role.id))
    if already is None:
        session.add(UserRole(user_id=user_id, role_id=role.id))
        await session.flush()


async def role_names_for(session: AsyncSession, user_id: str) -> list[str]:
    rows = await session.scalars(
        select(Role.name)
        .join(UserRole, UserRole.role_id == Role.id)
        .where(UserRole.user_id == user_id)
    )
    return sorted(rows)


async def count_users_with_roles(session: AsyncSession, role_names: tuple[str, ...]) -> int:
    rows = await session.scalars(
        select(UserRole.user_id)
        .join(Role, Role.id == UserRole.role_id)
        .where(Role.name.in_(role_names))
        .distinct()
    )
    return len(rows.all())


async def effective_permissions(session: AsyncSession, user_id: str) -> frozenset[str]:
    """The union of the permission strings of every role the user holds."""
    rows = await session.scalars(
        select(Role.permissions)
        .join(UserRole, UserRole.role_id == Role.id)
        .where(UserRole.user_id == user_id)
    )
    return frozenset(permission for permissions in rows for permission in permissions)
