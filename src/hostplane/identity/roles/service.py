"""Role rules: built-in roles, custom roles, and who may give which role to whom.

Authority has two measures, and both must allow an action:

- **Permissions.** A caller grants only what they hold: every permission of
  a role they create, every permission they add to a role, every permission
  of a role they assign. "Hold" means the request's own permissions
  (``Principal.has``), so an API key acts within its scopes, not its
  creator's.
- **Rank.** A caller's rank is the highest rank among the roles their user
  account holds, read from the database by ``Principal.user_id`` (an API key
  acts with its creator's rank). Roles ranked below it are the caller's to
  create, change, delete, assign and remove, for users ranked below the
  caller (or the caller themselves). Owners, at the top, may also assign the
  owner role and act on other owners. The platform's own ``system`` caller
  ranks as an owner.

Built-in roles are shared by all tenants and never changed through the API,
except whether they require a second factor, which a tenant's owner sets for
their tenant (``TenantRoleSetting``).

Roles and users are both identity capabilities and an assignment is a join
between them, so this service reads the users table directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.db.session import record_event
from hostplane.core.db.tenancy import scope_to_tenant, session_tenant
from hostplane.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from hostplane.core.events.bus import Event
from hostplane.core.pagination import PageMeta, PageParams, paginate
from hostplane.core.principal import Principal
from hostplane.identity.permissions import catalogue
from hostplane.identity.roles.builtin import (
    ADMIN_ROLE_NAMES,
    BUILTIN_NAMES,
    BUILTIN_ROLES,
    MAX_CUSTOM_RANK,
    OWNER,
    OWNER_RANK,
    STAFF_ROLE_NAMES,
)
from hostplane.identity.roles.models import Role, TenantRoleSetting, UserRole
from hostplane.identity.users.models import User

__all__ = [
    "ADMIN_ROLE_NAMES",
    "STAFF_ROLE_NAMES",
    "LastOwner",
    "RoleView",
    "assert_not_last_owner",
    "assign_role",
    "assign_role_as",
    "count_users_with_roles",
    "create_role",
    "delete_role",
    "effective_permissions",
    "ensure_builtin_roles",
    "get_role",
    "grant_role",
    "highest_rank",
    "list_roles",
    "revoke_role",
    "role_names_for",
    "roles_by_user",
    "roles_of_user",
    "two_factor_required",
    "update_role",
]

ROLES_CHANGED_TOPIC = "user.roles_changed"
ROLE_CHANGED_TOPIC = "role.updated"
ROLE_DELETED_TOPIC = "role.deleted"


class RoleNotFound(NotFound):
    def __init__(self, role_id: str) -> None:
        super().__init__("role", role_id)


class UserNotFound(NotFound):
    def __init__(self, user_id: str) -> None:
        super().__init__("user", user_id)


class LastOwner(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "The tenant must keep at least one owner",
            details={"reason": "last_owner"},
        )


@dataclass(frozen=True, slots=True)
class RoleView:
    """A role as one tenant sees it (its own two-factor setting for built-ins)."""

    id: str
    tenant_id: str | None
    name: str
    description: str
    permissions: list[str]
    rank: int
    require_two_factor: bool
    builtin: bool
    created_at: datetime
    updated_at: datetime


# --- built-in roles -------------------------------------------------------------------------


async def ensure_builtin_roles(session: AsyncSession) -> dict[str, Role]:
    """Create missing built-in roles and bring existing ones up to date; return them by name.

    Idempotent: rows already matching their definition are left alone, so it
    writes nothing on an up-to-date installation. ``require_two_factor`` is
    the operator's choice and is never reset.
    """
    tenant_id = session_tenant(session)
    if tenant_id is not None:
        # Built-in rows belong to no tenant, so a tenant-confined session
        # would refuse to write them. Check what the caller has pending under
        # the tenant's guard first, then sync the shared rows unconfined.
        await session.flush()
        scope_to_tenant(session, None)
    try:
        existing = {
            role.name: role
            for role in await session.scalars(
                select(Role).where(Role.builtin.is_(True), Role.tenant_id.is_(None))
            )
        }
        for definition in BUILTIN_ROLES:
            permissions = list(definition.permissions)
            role = existing.get(definition.name)
            if role is None:
                role = Role(
                    name=definition.name,
                    description=definition.description,
                    permissions=permissions,
                    rank=definition.rank,
                    builtin=True,
                    require_two_factor=False,
                )
                session.add(role)
                existing[definition.name] = role
                continue
            if role.permissions != permissions:
                role.permissions = permissions
            if role.description != definition.description:
                role.description = definition.description
            if role.rank != definition.rank:
                role.rank = definition.rank
        await session.flush()
    finally:
        if tenant_id is not None:
            scope_to_tenant(session, tenant_id)
    return existing


async def assign_role(session: AsyncSession, *, user_id: str, role_name: str) -> None:
    """Give a user a built-in role by name, without authority checks.

    For the platform's own flows (first owner, ``hostplane admin create``,
    registration as a customer). Requests go through :func:`grant_role`.
    """
    roles = await ensure_builtin_roles(session)
    role = roles.get(role_name)
    if role is None:
        raise NotFound("role", role_name)
    already = await session.get(UserRole, (user_id, role.id))
    if already is None:
        session.add(UserRole(user_id=user_id, role_id=role.id))
        await session.flush()


# --- what a user holds ----------------------------------------------------------------------


def _held_by(user_id: str) -> Select[Role]:
    """Roles held by ``user_id`` that belong to the user's tenant or are built-in.

    The tenant condition keeps a stray assignment of another tenant's role
    from ever counting, even in a session that is not confined to a tenant.
    """
    return (
        select(Role)
        .join(UserRole, UserRole.role_id == Role.id)
        .join(User, User.id == UserRole.user_id)
        .where(
            UserRole.user_id == user_id,
            or_(Role.tenant_id.is_(None), Role.tenant_id == User.tenant_id),
        )
    )


async def _roles_held(session: AsyncSession, user_id: str) -> list[Role]:
    return list(await session.scalars(_held_by(user_id).order_by(Role.rank.desc(), Role.name)))


async def effective_permissions(session: AsyncSession, user_id: str) -> frozenset[str]:
    """The union of the permission strings of every role the user holds.

    With what the administrative permissions imply (``admin.read`` holds
    ``user.read``, ...; see :data:`~hostplane.identity.permissions.catalogue.IMPLIED`).
    """
    return catalogue.with_implied(
        permission
        for role in await _roles_held(session, user_id)
        for permission in role.permissions
    )


async def roles_and_permissions(
    session: AsyncSession, user_id: str
) -> tuple[list[str], frozenset[str]]:
    """:func:`role_names_for` and :func:`effective_permissions` from one read of the roles."""
    held = await _roles_held(session, user_id)
    permissions = catalogue.with_implied(
        permission for role in held for permission in role.permissions
    )
    return sorted(role.name for role in held), permissions


async def role_names_for(session: AsyncSession, user_id: str) -> list[str]:
    return sorted(role.name for role in await _roles_held(session, user_id))


async def highest_rank(session: AsyncSession, user_id: str) -> int | None:
    """The rank of the user's most senior role; ``None`` when they hold none."""
    ranks = [role.rank for role in await _roles_held(session, user_id)]
    return max(ranks) if ranks else None


async def two_factor_required(session: AsyncSession, user_id: str) -> bool:
    """Whether any role the user holds requires a second factor, in the user's tenant.

    For a built-in role the tenant's own setting wins over the platform default.
    """
    rows = await session.execute(
        select(Role.require_two_factor, TenantRoleSetting.require_two_factor)
        .join(UserRole, UserRole.role_id == Role.id)
        .join(User, User.id == UserRole.user_id)
        .outerjoin(
            TenantRoleSetting,
            (TenantRoleSetting.role_id == Role.id)
            & (TenantRoleSetting.tenant_id == User.tenant_id),
        )
        .where(
            UserRole.user_id == user_id,
            or_(Role.tenant_id.is_(None), Role.tenant_id == User.tenant_id),
        )
    )
    return any(override if override is not None else default for default, override in rows)


async def count_users_with_roles(session: AsyncSession, role_names: tuple[str, ...]) -> int:
    rows = await session.scalars(
        select(UserRole.user_id)
        .join(Role, Role.id == UserRole.role_id)
        .where(Role.name.in_(role_names))
        .distinct()
    )
    return len(rows.all())


async def assert_not_last_owner(session: AsyncSession, *, user_id: str) -> None:
    """Refuse (409) when ``user_id`` is the only owner of their tenant.

    Call before removing an owner in any way (taking the role, deleting or
    banning the account). The owners' assignment rows are locked, so two
    requests removing two different owners at once cannot both pass.
    """
    user = await session.get(User, user_id)
    if user is None:
        return
    owners = list(
        await session.scalars(
            select(UserRole.user_id)
            .join(Role, Role.id == UserRole.role_id)
            .join(User, User.id == UserRole.user_id)
            .where(
                Role.name == OWNER,
                Role.builtin.is_(True),
                Role.tenant_id.is_(None),
                User.tenant_id == user.tenant_id,
            )
            .with_for_update(of=UserRole)
        )
    )
    if owners == [user_id]:
        raise LastOwner


# --- reading roles --------------------------------------------------------------------------


async def _two_factor_overrides(session: AsyncSession, tenant_id: str | None) -> dict[str, bool]:
    if tenant_id is None:
        return {}
    rows = await session.execute(
        select(TenantRoleSetting.role_id, TenantRoleSetting.require_two_factor).where(
            TenantRoleSetting.tenant_id == tenant_id
        )
    )
    return {role_id: bool(required) for role_id, required in rows}


def _view(role: Role, overrides: dict[str, bool]) -> RoleView:
    return RoleView(
        id=role.id,
        tenant_id=role.tenant_id,
        name=role.name,
        description=role.description,
        permissions=list(role.permissions),
        rank=role.rank,
        require_two_factor=overrides.get(role.id, role.require_two_factor),
        builtin=role.builtin,
        created_at=role.created_at,
        updated_at=role.updated_at,
    )


async def _views(session: AsyncSession, actor: Principal, roles: Iterable[Role]) -> list[RoleView]:
    overrides = await _two_factor_overrides(session, actor.tenant_id)
    return [_view(role, overrides) for role in roles]


async def _load_role(session: AsyncSession, role_id: str) -> Role:
    # The request's session shows the caller's tenant's roles and the built-ins only.
    role = await session.scalar(select(Role).where(Role.id == role_id))
    if role is None:
        raise RoleNotFound(role_id)
    return role


async def _load_user(session: AsyncSession, user_id: str) -> User:
    # Another tenant's user is invisible to a tenant's session: 404, not 403.
    user = await session.scalar(select(User).where(User.id == user_id))
    if user is None:
        raise UserNotFound(user_id)
    return user


async def list_roles(
    session: AsyncSession, actor: Principal, params: PageParams
) -> tuple[list[RoleView], PageMeta]:
    """The tenant's roles and the built-ins, most senior first."""
    statement = select(Role).order_by(Role.rank.desc(), Role.name, Role.id)
    roles, meta = await paginate(session, statement, params)
    return await _views(session, actor, roles), meta


async def get_role(session: AsyncSession, actor: Principal, role_id: str) -> RoleView:
    role = await _load_role(session, role_id)
    return (await _views(session, actor, [role]))[0]


async def roles_of_user(session: AsyncSession, actor: Principal, user_id: str) -> list[RoleView]:
    await _load_user(session, user_id)
    return await _views(session, actor, await _roles_held(session, user_id))


# --- authority ------------------------------------------------------------------------------


async def _actor_rank(session: AsyncSession, actor: Principal) -> int:
    if actor.kind == "system":
        return OWNER_RANK
    if actor.user_id is None:
        raise Forbidden(
            "Managing roles needs a user account (or an API key created by one)",
            details={"reason": "no_user"},
        )
    rank = await highest_rank(session, actor.user_id)
    if rank is None:
        raise Forbidden("Your account holds no role", details={"reason": "no_role"})
    return rank


def _require_outranks(actor_rank: int, rank: int, *, what: str) -> None:
    if rank >= actor_rank:
        raise Forbidden(
            f"You can only {what} roles ranked below your own ({actor_rank})",
            details={"rank": rank, "yourRank": actor_rank},
        )


def _require_holds(actor: Principal, permissions: Iterable[str]) -> None:
    missing = sorted({p for p in permissions if not actor.has(p)})
    if missing:
        raise Forbidden(
            f"You cannot grant permissions you do not hold: {', '.join(missing)}",
            details={"missing": missing},
        )


async def _require_may_assign(
    session: AsyncSession, actor: Principal, actor_rank: int, role: Role, user: User
) -> None:
    """Rank rules for giving or taking ``role`` from ``user``."""
    is_owner = actor_rank >= OWNER_RANK
    if not is_owner:
        _require_outranks(actor_rank, role.rank, what="assign or remove")
        if user.id != actor.user_id:
            target_rank = await highest_rank(session, user.id)
            if target_rank is not None and target_rank >= actor_rank:
                raise Forbidden(
                    "You can only change the roles of users ranked below you",
                    details={"userRank": target_rank, "yourRank": actor_rank},
                )


# --- changing roles -------------------------------------------------------------------------


def _clean_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise ValidationFailed(
            "A role needs a name",
            details={"fields": [{"field": "name", "message": "must not be empty"}]},
        )
    return name


async def _require_free_name(session: AsyncSession, tenant_id: str, name: str) -> None:
    if name.lower() in BUILTIN_NAMES:
        raise Conflict(f"{name!r} is the name of a built-in role", details={"name": name})
    clash = await session.scalar(
        select(Role.id).where(
            func.lower(Role.name) == name.lower(),
            or_(Role.tenant_id == tenant_id, Role.tenant_id.is_(None)),
        )
    )
    if clash is not None:
        raise Conflict(f"A role named {name!r} already exists", details={"name": name})


def _require_custom_rank(rank: int) -> None:
    if not 0 <= rank <= MAX_CUSTOM_RANK:
        raise ValidationFailed(
            f"rank must be between 0 and {MAX_CUSTOM_RANK}",
            details={"fields": [{"field": "rank", "message": f"0 to {MAX_CUSTOM_RANK}"}]},
        )


async def _flush_unique(session: AsyncSession, name: str) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent request took the name first
        raise Conflict(f"A role named {name!r} already exists", details={"name": name}) from exc


async def create_role(
    session: AsyncSession,
    actor: Principal,
    *,
    name: str,
    description: str = "",
    permissions: Sequence[str] = (),
    rank: int = 0,
    require_two_factor: bool = False,
) -> RoleView:
    """A custom role in the caller's tenant."""
    if actor.tenant_id is None:
        raise ValidationFailed("Custom roles belong to a tenant; act within one")
    name = _clean_name(name)
    _require_custom_rank(rank)
    granted = catalogue.validate(permissions)
    actor_rank = await _actor_rank(session, actor)
    _require_outranks(actor_rank, rank, what="create")
    _require_holds(actor, granted)
    await _require_free_name(session, actor.tenant_id, name)
    role = Role(
        tenant_id=actor.tenant_id,
        name=name,
        description=description,
        permissions=granted,
        rank=rank,
        builtin=False,
        require_two_factor=require_two_factor,
    )
    session.add(role)
    await _flush_unique(session, name)
    return (await _views(session, actor, [role]))[0]


async def _set_builtin_two_factor(
    session: AsyncSession, actor: Principal, role: Role, required: bool
) -> None:
    if actor.tenant_id is None:
        # The platform itself (an unconfined session) sets the default for everyone.
        role.require_two_factor = required
        return
    setting = await session.scalar(
        select(TenantRoleSetting).where(
            TenantRoleSetting.tenant_id == actor.tenant_id, TenantRoleSetting.role_id == role.id
        )
    )
    if setting is None:
        session.add(
            TenantRoleSetting(
                tenant_id=actor.tenant_id, role_id=role.id, require_two_factor=required
            )
        )
    else:
        setting.require_two_factor = required


async def update_role(
    session: AsyncSession,
    actor: Principal,
    role_id: str,
    *,
    name: str | None = None,
    description: str | None = None,
    permissions: Sequence[str] | None = None,
    rank: int | None = None,
    require_two_factor: bool | None = None,
) -> RoleView:
    """Change a custom role; ``None`` leaves a field as it is.

    Built-in roles refuse every change (403) except ``require_two_factor``,
    which an owner sets for their own tenant. Fields sent with their current
    value are not changes, so a client may send a whole role back.
    """
    role = await _load_role(session, role_id)
    granted = catalogue.validate(permissions) if permissions is not None else None
    if name is not None:
        name = _clean_name(name)
    actor_rank = await _actor_rank(session, actor)

    if role.builtin:
        changed = sorted(
            field
            for field, value, current in (
                ("name", name, role.name),
                ("description", description, role.description),
                ("permissions", granted, sorted(role.permissions)),
                ("rank", rank, role.rank),
            )
            if value is not None and value != current
        )
        if changed:
            raise Forbidden(
                "Built-in roles cannot be changed; create a custom role instead",
                details={"fields": changed},
            )
        if require_two_factor is not None:
            if actor_rank < OWNER_RANK:
                raise Forbidden(
                    "Only an owner can change whether a built-in role requires two-factor login"
                )
            await _set_builtin_two_factor(session, actor, role, require_two_factor)
            await session.flush()
        return await get_role(session, actor, role.id)

    _require_outranks(actor_rank, role.rank, what="change")
    if rank is not None:
        _require_custom_rank(rank)
        _require_outranks(actor_rank, rank, what="give")
        role.rank = rank
    if granted is not None:
        # Only additions are grants; dropping a permission never needs authority over it.
        _require_holds(actor, set(granted) - set(role.permissions))
        role.permissions = granted
    if name is not None and name != role.name:
        await _require_free_name(session, role.tenant_id or "", name)
        role.name = name
    if description is not None:
        role.description = description
    if require_two_factor is not None:
        role.require_two_factor = require_two_factor
    await _flush_unique(session, role.name)
    record_event(session, Event(ROLE_CHANGED_TOPIC, {"roleId": role.id}, tenant_id=role.tenant_id))
    return (await _views(session, actor, [role]))[0]


async def delete_role(session: AsyncSession, actor: Principal, role_id: str) -> None:
    """Delete a custom role nobody holds (409 with the count otherwise)."""
    role = await _load_role(session, role_id)
    if role.builtin:
        raise Forbidden("Built-in roles cannot be deleted")
    actor_rank = await _actor_rank(session, actor)
    _require_outranks(actor_rank, role.rank, what="delete")
    holders = (
        await session.scalar(
            select(func.count()).select_from(UserRole).where(UserRole.role_id == role.id)
        )
    ) or 0
    if holders:
        raise Conflict(
            f"{holders} user(s) still hold this role; remove it from them first",
            details={"users": holders},
        )
    await session.delete(role)
    await session.flush()
    record_event(session, Event(ROLE_DELETED_TOPIC, {"roleId": role.id}, tenant_id=role.tenant_id))


# --- assigning roles ------------------------------------------------------------------------


async def _load_assignable(session: AsyncSession, role_id: str, user: User) -> Role:
    role = await _load_role(session, role_id)
    if role.tenant_id not in (None, user.tenant_id):
        raise RoleNotFound(role_id)  # only reachable from an unconfined session
    return role


async def _grant(session: AsyncSession, actor: Principal, user: User, role: Role) -> None:
    actor_rank = await _actor_rank(session, actor)
    await _require_may_assign(session, actor, actor_rank, role, user)
    _require_holds(actor, role.permissions)
    if await session.get(UserRole, (user.id, role.id)) is None:
        session.add(UserRole(user_id=user.id, role_id=role.id))
        await session.flush()
        record_event(
            session,
            Event(
                ROLES_CHANGED_TOPIC,
                {"userId": user.id, "roleId": role.id, "change": "assigned"},
                tenant_id=user.tenant_id,
            ),
        )


async def grant_role(
    session: AsyncSession, actor: Principal, *, user_id: str, role_id: str
) -> list[RoleView]:
    """Give ``user_id`` the role (idempotent); return the user's roles."""
    user = await _load_user(session, user_id)
    role = await _load_assignable(session, role_id, user)
    await _grant(session, actor, user, role)
    return await _views(session, actor, await _roles_held(session, user.id))


async def assign_role_as(
    session: AsyncSession, *, actor: Principal, user_id: str, role_name: str
) -> None:
    """Give ``user_id`` the role named ``role_name``, with ``actor``'s authority.

    For flows that name roles rather than pass ids (an operator creating an
    account with ``roles: ["support"]``). The name is a built-in role or one
    of the user's tenant; an unknown name is a 400. Same rules as
    :func:`grant_role`.
    """
    user = await _load_user(session, user_id)
    if role_name in BUILTIN_NAMES:
        role: Role | None = (await ensure_builtin_roles(session))[role_name]
    else:
        role = await session.scalar(
            select(Role).where(Role.name == role_name, Role.tenant_id == user.tenant_id)
        )
    if role is None:
        raise ValidationFailed(
            f"Unknown role {role_name!r}",
            details={"fields": [{"field": "roles", "message": f"unknown role {role_name!r}"}]},
        )
    await _grant(session, actor, user, role)


async def roles_by_user(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, list[Role]]:
    """The roles each of ``user_ids`` holds, most senior first, in one query."""
    if not user_ids:
        return {}
    rows = await session.execute(
        select(UserRole.user_id, Role)
        .join(Role, Role.id == UserRole.role_id)
        .join(User, User.id == UserRole.user_id)
        .where(
            UserRole.user_id.in_(list(user_ids)),
            or_(Role.tenant_id.is_(None), Role.tenant_id == User.tenant_id),
        )
        .order_by(Role.rank.desc(), Role.name)
    )
    held: dict[str, list[Role]] = {user_id: [] for user_id in user_ids}
    for user_id, role in rows:
        held[user_id].append(role)
    return held


async def revoke_role(
    session: AsyncSession, actor: Principal, *, user_id: str, role_id: str
) -> list[RoleView]:
    """Take the role from ``user_id`` (a no-op if not held); return the user's roles.

    The tenant's last owner keeps the owner role (409).
    """
    user = await _load_user(session, user_id)
    role = await _load_assignable(session, role_id, user)
    actor_rank = await _actor_rank(session, actor)
    await _require_may_assign(session, actor, actor_rank, role, user)
    assignment = await session.get(UserRole, (user.id, role.id))
    if assignment is not None:
        if role.builtin and role.name == OWNER:
            await assert_not_last_owner(session, user_id=user.id)
        await session.delete(assignment)
        await session.flush()
        record_event(
            session,
            Event(
                ROLES_CHANGED_TOPIC,
                {"userId": user.id, "roleId": role.id, "change": "removed"},
                tenant_id=user.tenant_id,
            ),
        )
    return await _views(session, actor, await _roles_held(session, user.id))
