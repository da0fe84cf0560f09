"""The one authorization check every domain uses on a loaded resource.

``authorize(session, principal, "control.console", server)`` passes when:

1. the caller holds the permission globally (a role; for an API key, its
   scopes intersected with its creator's roles), or
2. the caller owns the resource and the permission is one an owner has
   (every permission of the resource's kind: ``server.*``, ``file.*``, ...),
   or
3. the caller holds a per-resource grant covering it (a subuser).

An API key never exceeds its scopes, even on its creator's own resources.
Tenant isolation is not checked here: a tenant-scoped session cannot load
another tenant's resource in the first place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.errors import Forbidden, NotFound
from hostplane.core.principal import Principal, permission_matches
from hostplane.identity.access.events import announce_revoked
from hostplane.identity.access.models import ResourceGrant
from hostplane.identity.users.service import get_user


class OwnedResource(Protocol):
    """What ``authorize`` needs to know about a resource."""

    @property
    def id(self) -> str: ...

    @property
    def owner_id(self) -> str | None: ...


# Permission families an owner holds on what they own, by resource type.
# Global-only powers (suspending, transferring between nodes) are absent on
# purpose: owning a server does not let you unsuspend it.
OWNER_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "server": (
        "server.read",
        "server.details",
        "server.update",
        "server.delete",
        "server.install",
        "server.start",
        "server.stop",
        "server.restart",
        "server.kill",
        "server.console",
        "control.*",
        "file.*",
        "backup.*",
        "database.*",
        "task.*",
        "schedule.*",
        "allocation.*",
        "startup.*",
        "settings.*",
        "subuser.*",
        "server.logs.read",
        "activity.read",
        "websocket.connect",
    ),
}


class AccessDenied(Forbidden):
    def __init__(self, permission: str) -> None:
        super().__init__(
            "You do not have permission to perform this action", details={"permission": permission}
        )


def owner_may(resource_type: str, permission: str) -> bool:
    return any(
        permission_matches(granted, permission)
        for granted in OWNER_PERMISSIONS.get(resource_type, ())
    )


async def grant_for(
    session: AsyncSession, *, resource_type: str, resource_id: str, user_id: str
) -> ResourceGrant | None:
    return await session.scalar(
        select(ResourceGrant).where(
            ResourceGrant.resource_type == resource_type,
            ResourceGrant.resource_id == resource_id,
            ResourceGrant.user_id == user_id,
        )
    )


async def allowed(
    session: AsyncSession,
    principal: Principal,
    permission: str,
    resource: OwnedResource,
    *,
    resource_type: str,
) -> bool:
    if not principal.is_authenticated or not principal.within_scopes(permission):
        return False
    if principal.has(permission):
        return True
    if principal.user_id is None:
        return False
    if resource.owner_id == principal.user_id and owner_may(resource_type, permission):
        return True
    grant = await grant_for(
        session, resource_type=resource_type, resource_id=resource.id, user_id=principal.user_id
    )
    return grant is not None and any(permission_matches(p, permission) for p in grant.permissions)


async def can_see(
    session: AsyncSession, principal: Principal, resource: OwnedResource, *, resource_type: str
) -> bool:
    """Whether the caller has any access at all to ``resource``.

    A global ``<type>.read``, ownership, or a per-resource grant of any
    permission. A caller who cannot see a resource is told it does not exist
    (404, the same answer as for a made-up id), so ids of other people's
    resources reveal nothing; 403 is for what the caller can see but may not
    do.
    """
    if not principal.is_authenticated:
        return False
    if principal.has(f"{resource_type}.read"):
        return True
    if principal.user_id is None:
        return False
    if resource.owner_id == principal.user_id:
        return True
    grant = await grant_for(
        session, resource_type=resource_type, resource_id=resource.id, user_id=principal.user_id
    )
    return grant is not None


async def authorize_any(
    session: AsyncSession,
    principal: Principal,
    permissions: Iterable[str],
    resource: OwnedResource,
    *,
    resource_type: str,
    not_found: Callable[[], NotFound],
) -> None:
    """Pass when any of ``permissions`` is allowed on ``resource``.

    Otherwise ``not_found()`` (404) when the caller cannot see the resource at
    all, else 403 naming the first permission.
    """
    wanted = tuple(permissions)
    for permission in wanted:
        if await allowed(session, principal, permission, resource, resource_type=resource_type):
            return
    if not await can_see(session, principal, resource, resource_type=resource_type):
        raise not_found()
    raise AccessDenied(wanted[0])


async def authorize(
    session: AsyncSession,
    principal: Principal,
    permission: str,
    resource: OwnedResource,
    *,
    resource_type: str = "server",
) -> None:
    """Raise 404 unless ``principal`` can see ``resource``, 403 unless it may do ``permission``."""
    await authorize_any(
        session,
        principal,
        (permission,),
        resource,
        resource_type=resource_type,
        not_found=lambda: NotFound(resource_type, resource.id),
    )


async def set_grant(
    session: AsyncSession,
    *,
    resource_type: str,
    resource_id: str,
    user_id: str,
    permissions: Sequence[str],
    granted_by: str | None,
) -> ResourceGrant:
    """Create or replace a user's permissions on one resource.

    The user must be visible to the session (in a tenant-scoped session: of
    the caller's tenant), else 404.
    """
    grantee = await get_user(session, user_id)
    grant = await grant_for(
        session, resource_type=resource_type, resource_id=resource_id, user_id=user_id
    )
    if grant is None:
        grant = ResourceGrant(
            tenant_id=grantee.tenant_id,
            resource_type=resource_type,
            resource_id=resource_id,
            user_id=user_id,
            permissions=list(permissions),
            granted_by=granted_by,
        )
        session.add(grant)
    else:
        grant.permissions = list(permissions)
        grant.granted_by = granted_by
        # The new list may hold less than the old one: open sockets re-check.
        _announce_grant_change(session, grant, reason="grant_changed")
    await session.flush()
    return grant


async def remove_grant(
    session: AsyncSession, *, resource_type: str, resource_id: str, user_id: str
) -> bool:
    grant = await grant_for(
        session, resource_type=resource_type, resource_id=resource_id, user_id=user_id
    )
    if grant is None:
        return False
    await session.delete(grant)
    await session.flush()
    _announce_grant_change(session, grant, reason="grant_removed")
    return True


def _announce_grant_change(session: AsyncSession, grant: ResourceGrant, *, reason: str) -> None:
    announce_revoked(
        session,
        reason=reason,
        tenant_id=grant.tenant_id,
        user_id=grant.user_id,
        **({"server_id": grant.resource_id} if grant.resource_type == "server" else {}),
    )


async def grants_on(
    session: AsyncSession, *, resource_type: str, resource_id: str
) -> Sequence[ResourceGrant]:
    rows = await session.scalars(
        select(ResourceGrant)
        .where(
            ResourceGrant.resource_type == resource_type, ResourceGrant.resource_id == resource_id
        )
        .order_by(ResourceGrant.id)
    )
    return rows.all()


def granted_resource_ids(*, resource_type: str, user_id: str) -> Select[str]:
    """A subquery of the ids of resources ``user_id`` holds a grant on (for list filters)."""
    return select(ResourceGrant.resource_id).where(
        ResourceGrant.resource_type == resource_type, ResourceGrant.user_id == user_id
    )
