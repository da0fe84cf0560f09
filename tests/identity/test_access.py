"""``authorize``: global grants, ownership, per-resource grants, API-key ceilings."""

from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.errors import NotFound
from hostplane.core.principal import ANONYMOUS, Principal
from hostplane.identity.access.service import (
    AccessDenied,
    allowed,
    authorize,
    grants_on,
    remove_grant,
    set_grant,
)
from tests.support.factories import make_tenant, make_user


@dataclass
class Box:
    """Anything with an id and an owner, as every domain's resources are."""

    id: str
    owner_id: str | None


def user(
    user_id: str, tenant_id: str, *permissions: str, scopes: frozenset[str] | None = None
) -> Principal:
    kind = "api_key" if scopes is not None else "user"
    return Principal(
        kind=kind,
        id=user_id,
        user_id=user_id,
        tenant_id=tenant_id,
        permissions=frozenset(permissions),
        scopes=scopes,
    )


async def test_owners_hold_server_level_permissions_on_what_they_own(db: AsyncSession) -> None:
    tenant = await make_tenant(db)
    owner = await make_user(db, tenant=tenant)
    server = Box("srv-1", owner.id)
    me = user(owner.id, tenant.id)
    for permission in (
        "server.start",
        "control.console",
        "file.read-content",
        "backup.download",
        "subuser.create",
    ):
        assert await allowed(db, me, permission, server, resource_type="server"), permission
    # Owning a server is not a global power over it.
    for permission in ("server.suspend", "server.transfer", "node.manage"):
        assert not await allowed(db, me, permission, server, resource_type="server"), permission


async def test_others_need_a_global_grant_or_a_per_server_grant(db: AsyncSession) -> None:
    tenant = await make_tenant(db)
    owner = await make_user(db, tenant=tenant)
    friend = await make_user(db, tenant=tenant)
    server = Box("srv-2", owner.id)
    stranger = user(friend.id, tenant.id)
    # No access at all: the server does not exist as far as the stranger can tell.
    with pytest.raises(NotFound):
        await authorize(db, stranger, "control.console", server)

    await set_grant(
        db,
        resource_type="server",
        resource_id=server.id,
        user_id=friend.id,
        permissions=["control.console", "file.*"],
        granted_by=owner.id,
    )
    assert await allowed(db, stranger, "control.console", server, resource_type="server")
    assert await allowed(db, stranger, "file.read-content", server, resource_type="server")
    # Seen through the grant, but not granted this: 403.
    with pytest.raises(AccessDenied):
        await authorize(db, stranger, "server.delete", server)
    assert not await allowed(db, stranger, "control.start", server, resource_type="server")
    assert not await allowed(
        db, stranger, "control.console", Box("srv-other", owner.id), resource_type="server"
    )
    assert [
        g.user_id for g in await grants_on(db, resource_type="server", resource_id=server.id)
    ] == [friend.id]

    await set_grant(
        db,
        resource_type="server",
        resource_id=server.id,
        user_id=friend.id,
        permissions=["control.start"],
        granted_by=owner.id,
    )
    assert not await allowed(db, stranger, "control.console", server, resource_type="server"), (
        "replaced, not merged"
    )
    assert await remove_grant(db, resource_type="server", resource_id=server.id, user_id=friend.id)
    assert not await allowed(db, stranger, "control.start", server, resource_type="server")

    operator = user(friend.id, tenant.id, "control.*")
    assert await allowed(db, operator, "control.console", server, resource_type="server")


async def test_an_api_key_never_exceeds_its_scopes_even_on_its_creators_servers(
    db: AsyncSession,
) -> None:
    tenant = await make_tenant(db)
    owner = await make_user(db, tenant=tenant)
    server = Box("srv-3", owner.id)
    bot = user(owner.id, tenant.id, scopes=frozenset({"server.start"}))
    assert await allowed(db, bot, "server.start", server, resource_type="server")
    assert not await allowed(db, bot, "control.console", server, resource_type="server")
    assert not await allowed(db, ANONYMOUS, "server.read", server, resource_type="server")
