"""Subusers: other users' per-server grants (Pterodactyl's subusers).

Managing them takes ``subuser.*`` permissions on the server (owners hold them
implicitly). Someone who is neither the owner nor an operator grants only
permissions they hold on the server themselves, so a subuser cannot raise
another above their own level.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.errors import Forbidden, NotFound, ValidationFailed
from hostplane.core.principal import Principal
from hostplane.identity.access import service as access
from hostplane.identity.access.models import ResourceGrant
from hostplane.identity.permissions import catalogue
from hostplane.identity.permissions.catalogue import Scope
from hostplane.identity.users import service as users
from hostplane.infra.servers.models import Server
from hostplane.infra.servers.service import load_for


class SubuserNotFound(NotFound):
    def __init__(self, user_id: str) -> None:
        super().__init__("subuser", user_id)


async def list_subusers(
    session: AsyncSession, principal: Principal, server_id: str
) -> Sequence[ResourceGrant]:
    server = await load_for(session, principal, server_id, ("subuser.read",))
    return await access.grants_on(session, resource_type="server", resource_id=server.id)


async def _check_grantable(
    session: AsyncSession, principal: Principal, server: Server, permissions: list[str]
) -> None:
    if principal.user_id is not None and server.owner_id == principal.user_id:
        return
    beyond = [
        name
        for name in permissions
        if not principal.has(name)
        and not all(
            [
                await access.allowed(session, principal, p.name, server, resource_type="server")
                for p in catalogue.expand(name)
            ]
        )
    ]
    if beyond:
        raise Forbidden(
            "You can only grant permissions you hold on this server",
            details={"permissions": beyond},
        )


async def set_subuser(
    session: AsyncSession,
    principal: Principal,
    server_id: str,
    *,
    user_id: str,
    permissions: Sequence[str],
    create: bool,
) -> ResourceGrant:
    """Add (``create``) or change a subuser's permissions on the server."""
    wanted = ("subuser.create",) if create else ("subuser.update",)
    server = await load_for(session, principal, server_id, wanted, for_update=True)
    names = catalogue.validate(permissions, scope=Scope.SERVER)
    if not names:
        raise ValidationFailed("Give at least one permission")
    user = await users.get_user(session, user_id)
    if user.id == server.owner_id:
        raise ValidationFailed("The owner already holds every permission on the server")
    existing = await access.grant_for(
        session, resource_type="server", resource_id=server.id, user_id=user.id
    )
    if not create and existing is None:
        raise SubuserNotFound(user_id)
    await _check_grantable(session, principal, server, names)
    return await access.set_grant(
        session,
        resource_type="server",
        resource_id=server.id,
        user_id=user.id,
        permissions=names,
        granted_by=principal.user_id,
    )


async def remove_subuser(
    session: AsyncSession, principal: Principal, server_id: str, user_id: str
) -> None:
    server = await load_for(session, principal, server_id, ("subuser.delete",))
    removed = await access.remove_grant(
        session, resource_type="server", resource_id=server.id, user_id=user_id
    )
    if not removed:
        raise SubuserNotFound(user_id)
