"""Users: the caller's own profile, and operators' user management.

``/api/users/me`` (SkyPANEL), ``/api/admin/users`` with search and bans
(Catalyst, QeinTech), and mPanel's ``/api/users`` CRUD for operators.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.errors import Forbidden, Unauthorized
from hostplane.core.http.deps import PageDep, SessionDep, require
from hostplane.core.http.envelope import Empty, Envelope, PageEnvelope, ok, page
from hostplane.core.principal import Principal
from hostplane.identity.roles.service import roles_by_user
from hostplane.identity.users import service
from hostplane.identity.users.models import User
from hostplane.identity.users.schemas import (
    AdminUser,
    BanIn,
    MPanelUser,
    Profile,
    ProfileUpdate,
    RoleRef,
    UserCreate,
    UserUpdate,
)

router = APIRouter(tags=["users"])

Authenticated = Annotated[Principal, Depends(require())]
UserReader = Annotated[Principal, Depends(require("user.read"))]
UserManager = Annotated[Principal, Depends(require("user.manage"))]
UserBanner = Annotated[Principal, Depends(require("user.ban"))]


async def _admin_views(session: AsyncSession, users: Sequence[User]) -> list[AdminUser]:
    roles = await roles_by_user(session, [user.id for user in users])
    return [
        AdminUser(
            id=user.id,
            tenant_id=user.tenant_id,
            email=user.email,
            username=user.username,
            name=user.display_name,
            first_name=user.first_name,
            last_name=user.last_name,
            status=user.status,
            roles=[
                RoleRef(id=r.id, name=r.name, permissions=list(r.permissions))
                for r in roles.get(user.id, [])
            ],
            two_factor_enabled=user.two_factor_enabled,
            ban_reason=user.ban_reason,
            banned_at=user.banned_at,
            last_login_at=user.last_login_at,
            created_at=user.created_at,
        )
        for user in users
    ]


async def _mpanel_views(session: AsyncSession, users: Sequence[User]) -> list[MPanelUser]:
    return [
        MPanelUser.model_validate(
            view.model_dump(exclude={"roles"}) | {"roles": [role.name for role in view.roles]}
        )
        for view in await _admin_views(session, users)
    ]


def _own_user_id(principal: Principal) -> str:
    if principal.kind != "user" or principal.user_id is None:
        raise Forbidden("Only a logged-in user can do this (not an API key)", code="USER_REQUIRED")
    return principal.user_id


@router.get("/api/users/me", response_model=Envelope[Profile])
async def get_me(session: SessionDep, principal: Authenticated) -> Envelope[Profile]:
    """The caller's profile."""
    if principal.user_id is None:
        raise Unauthorized("Log in as a user to do this", code="USER_REQUIRED")
    user = await service.get_user(session, principal.user_id)
    return ok(Profile.model_validate(await service.describe_user(session, user)))


@router.put("/api/users/me", response_model=Envelope[Profile])
async def update_me(
    body: ProfileUpdate, session: SessionDep, principal: Authenticated
) -> Envelope[Profile]:
    """Update the caller's profile; changing the password needs ``currentPassword`` and ends other sessions."""
    user = await service.get_user(session, _own_user_id(principal))
    await service.update_profile(
        session,
        user,
        first_name=body.first_name,
        last_name=body.last_name,
        username=body.username,
        current_password=body.current_password,
        new_password=body.new_password,
        keep_session=principal.session_id,
    )
    return ok(Profile.model_validate(await service.describe_user(session, user)))


@router.get("/api/admin/users", response_model=PageEnvelope[AdminUser])
async def admin_list_users(
    session: SessionDep,
    _principal: UserReader,
    params: PageDep,
    search: Annotated[
        str | None, Query(max_length=200, description="Matches email, username or name")
    ] = None,
    status: Annotated[str | None, Query(description="active | banned | disabled")] = None,
) -> PageEnvelope[AdminUser]:
    """Users of the caller's tenant with their roles, newest first."""
    users, meta = await service.list_users(session, params, search=search, status=status)
    return page(await _admin_views(session, users), meta)


@router.post("/api/admin/users/{user_id}/ban", response_model=Envelope[AdminUser])
async def admin_ban_user(
    user_id: str, session: SessionDep, principal: UserBanner, body: BanIn | None = None
) -> Envelope[AdminUser]:
    """Ban a user: no login, no refresh, and tokens already issued stop working at once."""
    user = await service.ban_user(
        session,
        actor_user_id=principal.user_id,
        user_id=user_id,
        reason=body.reason if body else None,
    )
    return ok((await _admin_views(session, [user]))[0])


@router.post("/api/admin/users/{user_id}/unban", response_model=Envelope[AdminUser])
async def admin_unban_user(
    user_id: str, session: SessionDep, principal: UserBanner
) -> Envelope[AdminUser]:
    """Lift a ban."""
    user = await service.unban_user(session, actor_user_id=principal.user_id, user_id=user_id)
    return ok((await _admin_views(session, [user]))[0])


@router.get("/api/users", response_model=PageEnvelope[MPanelUser])
async def list_users(
    session: SessionDep,
    _principal: UserReader,
    params: PageDep,
    search: Annotated[str | None, Query(max_length=200)] = None,
) -> PageEnvelope[MPanelUser]:
    """mPanel's operator list of users."""
    users, meta = await service.list_users(session, params, search=search)
    return page(await _mpanel_views(session, users), meta)


@router.get("/api/users/{user_id}", response_model=Envelope[MPanelUser])
async def get_user(
    user_id: str, session: SessionDep, _principal: UserReader
) -> Envelope[MPanelUser]:
    """One user of the caller's tenant."""
    user = await service.get_user(session, user_id)
    return ok((await _mpanel_views(session, [user]))[0])


@router.post("/api/users", response_model=Envelope[MPanelUser], status_code=201)
async def create_user(
    body: UserCreate, session: SessionDep, principal: UserManager
) -> Envelope[MPanelUser]:
    """Create an account in the caller's tenant with the given roles."""
    user = await service.create_operator_user(
        session,
        actor=principal,
        email=body.email,
        password=body.password,
        username=body.username,
        name=body.name,
        roles=body.roles,
        status=body.status,
    )
    return ok((await _mpanel_views(session, [user]))[0])


@router.put("/api/users/{user_id}", response_model=Envelope[MPanelUser])
async def update_user(
    user_id: str, body: UserUpdate, session: SessionDep, principal: UserManager
) -> Envelope[MPanelUser]:
    """Edit another account: name, email, status, password, and roles (by name; only
    roles the caller may assign, as in the roles routes)."""
    user = await service.update_user(
        session,
        actor_user_id=principal.user_id,
        user_id=user_id,
        name=body.name,
        email=body.email,
        status=body.status,
        password=body.password,
    )
    if body.roles is not None:
        await service.set_roles(session, actor=principal, user_id=user.id, role_names=body.roles)
    return ok((await _mpanel_views(session, [user]))[0])


@router.delete("/api/users/{user_id}", response_model=Empty)
async def delete_user(user_id: str, session: SessionDep, principal: UserManager) -> Empty:
    """Delete an account of the caller's tenant."""
    await service.delete_user(session, actor_user_id=principal.user_id, user_id=user_id)
    return Empty()
