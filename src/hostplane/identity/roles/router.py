"""Role management: ``/api/admin/roles`` and ``/api/admin/users/{user_id}/roles``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from hostplane.core.http.deps import PageDep, SessionDep, require
from hostplane.core.http.envelope import Empty, Envelope, PageEnvelope, ok, page
from hostplane.core.principal import Principal
from hostplane.identity.roles import service
from hostplane.identity.roles.schemas import RoleAssignment, RoleCreate, RoleOut, RoleUpdate

router = APIRouter(prefix="/api/admin", tags=["roles"])

RoleReader = Annotated[Principal, Depends(require("role.read"))]
RoleManager = Annotated[Principal, Depends(require("role.manage"))]


def _out(views: list[service.RoleView]) -> list[RoleOut]:
    return [RoleOut.model_validate(view) for view in views]


@router.get("/roles", response_model=PageEnvelope[RoleOut])
async def list_roles(
    session: SessionDep, principal: RoleReader, params: PageDep
) -> PageEnvelope[RoleOut]:
    """The tenant's roles and the built-in roles, most senior first."""
    views, meta = await service.list_roles(session, principal, params)
    return page(_out(views), meta)


@router.post("/roles", response_model=Envelope[RoleOut], status_code=status.HTTP_201_CREATED)
async def create_role(
    body: RoleCreate, session: SessionDep, principal: RoleManager
) -> Envelope[RoleOut]:
    """Create a custom role in the caller's tenant.

    Permissions must be in the catalogue (400) and held by the caller (403);
    the rank must be below the caller's own (403); the name must be free (409).
    """
    view = await service.create_role(
        session,
        principal,
        name=body.name,
        description=body.description,
        permissions=body.permissions,
        rank=body.rank,
        require_two_factor=body.require_two_factor,
    )
    return ok(RoleOut.model_validate(view))


@router.get("/roles/{role_id}", response_model=Envelope[RoleOut])
async def get_role(role_id: str, session: SessionDep, principal: RoleReader) -> Envelope[RoleOut]:
    """One role: a built-in role, or one of the caller's tenant."""
    return ok(RoleOut.model_validate(await service.get_role(session, principal, role_id)))


@router.put("/roles/{role_id}", response_model=Envelope[RoleOut])
async def update_role(
    role_id: str, body: RoleUpdate, session: SessionDep, principal: RoleManager
) -> Envelope[RoleOut]:
    """Change a custom role; omitted fields keep their value.

    Built-in roles answer 403, except `requireTwoFactor`, which an owner sets
    for their own tenant.
    """
    view = await service.update_role(
        session,
        principal,
        role_id,
        name=body.name,
        description=body.description,
        permissions=body.permissions,
        rank=body.rank,
        require_two_factor=body.require_two_factor,
    )
    return ok(RoleOut.model_validate(view))


@router.delete("/roles/{role_id}", response_model=Empty)
async def delete_role(role_id: str, session: SessionDep, principal: RoleManager) -> Empty:
    """Delete a custom role; 409 with the number of holders while anyone holds it."""
    await service.delete_role(session, principal, role_id)
    return Empty()


@router.get("/users/{user_id}/roles", response_model=Envelope[list[RoleOut]])
async def list_user_roles(
    user_id: str, session: SessionDep, principal: RoleReader
) -> Envelope[list[RoleOut]]:
    """The roles a user of the caller's tenant holds."""
    return ok(_out(await service.roles_of_user(session, principal, user_id)))


@router.post("/users/{user_id}/roles", response_model=Envelope[list[RoleOut]])
async def assign_role(
    user_id: str, body: RoleAssignment, session: SessionDep, principal: RoleManager
) -> Envelope[list[RoleOut]]:
    """Give a user a role (assigning a role they already hold changes nothing).

    The caller must hold every permission of the role and outrank both the
    role and the user. Answers the user's roles.
    """
    views = await service.grant_role(session, principal, user_id=user_id, role_id=body.role_id)
    return ok(_out(views))


@router.delete("/users/{user_id}/roles/{role_id}", response_model=Envelope[list[RoleOut]])
async def remove_role(
    user_id: str, role_id: str, session: SessionDep, principal: RoleManager
) -> Envelope[list[RoleOut]]:
    """Take a role from a user; the tenant's last owner keeps the owner role (409).

    Answers the user's remaining roles.
    """
    return ok(_out(await service.revoke_role(session, principal, user_id=user_id, role_id=role_id)))
