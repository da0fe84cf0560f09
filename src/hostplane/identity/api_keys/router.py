"""API keys for bots and scripts.

``/api/admin/api-keys``: every key of the caller's tenant, for its operators
(QeinTech "External API Keys"). ``/api/account/api-keys``: a user's own keys.
Either way a key acts for the user who created it, with at most their rights.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.errors import Forbidden
from hostplane.core.http.deps import Authenticated, PageDep, SessionDep, require
from hostplane.core.http.envelope import Envelope, PageEnvelope, ok, page
from hostplane.core.principal import Principal
from hostplane.identity.api_keys import service
from hostplane.identity.api_keys.models import ApiKeyStatus
from hostplane.identity.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut

admin_router = APIRouter(prefix="/api/admin/api-keys", tags=["api-keys"])
account_router = APIRouter(prefix="/api/account/api-keys", tags=["api-keys"])

ApiKeyReader = Annotated[Principal, Depends(require("api-key.read"))]
ApiKeyCreator = Annotated[Principal, Depends(require("api-key.create"))]
ApiKeyRevoker = Annotated[Principal, Depends(require("api-key.revoke"))]


async def _acting_user(principal: Authenticated) -> Principal:
    # "My keys" means a person's: an API key (or a node) has no keys of its own,
    # and letting a key manage its creator's keys would let it mint new ones.
    if principal.kind != "user" or principal.user_id is None:
        raise Forbidden("Only a signed-in user can manage their own API keys")
    return principal


AccountUser = Annotated[Principal, Depends(_acting_user)]
StatusFilter = Annotated[
    ApiKeyStatus | None, Query(description="active | revoked | expired (default: all)")
]


def _issued(issued: service.IssuedApiKey) -> Envelope[ApiKeyCreated]:
    return ok(ApiKeyCreated.of_new(issued.api_key, issued.key))


AdminStatusFilter = Annotated[
    ApiKeyStatus | Literal["all"],
    Query(description="active (the default, as QeinTech lists) | revoked | expired | all"),
]


@admin_router.get("", response_model=PageEnvelope[ApiKeyOut])
async def list_tenant_api_keys(
    session: SessionDep,
    _principal: ApiKeyReader,
    params: PageDep,
    status: AdminStatusFilter = "active",
) -> PageEnvelope[ApiKeyOut]:
    """The tenant's active API keys, newest first (``status`` shows others; the secret
    is never shown again)."""
    keys, meta = await service.list_api_keys(
        session, params, status=None if status == "all" else status
    )
    return page([ApiKeyOut.of(key) for key in keys], meta)


@admin_router.post("", response_model=Envelope[ApiKeyCreated], status_code=201)
async def create_tenant_api_key(
    body: ApiKeyCreate, session: SessionDep, principal: ApiKeyCreator
) -> Envelope[ApiKeyCreated]:
    """Generate a key acting for the caller with the given scopes.

    The full key is in this response only. Scopes must be covered by the
    caller's own permissions (403 names the ones that are not).
    """
    return await _create(session, principal, body)


@admin_router.delete("/{key_id}", response_model=Envelope[ApiKeyOut])
async def revoke_tenant_api_key(
    key_id: str, session: SessionDep, _principal: ApiKeyRevoker
) -> Envelope[ApiKeyOut]:
    """Revoke any key of the tenant; its next request is refused."""
    return ok(ApiKeyOut.of(await service.revoke_api_key(session, key_id)))


@account_router.get("", response_model=PageEnvelope[ApiKeyOut])
async def list_my_api_keys(
    session: SessionDep, principal: AccountUser, params: PageDep, status: StatusFilter = None
) -> PageEnvelope[ApiKeyOut]:
    """The caller's own API keys, newest first."""
    keys, meta = await service.list_api_keys(
        session, params, created_by=principal.user_id, status=status
    )
    return page([ApiKeyOut.of(key) for key in keys], meta)


@account_router.post("", response_model=Envelope[ApiKeyCreated], status_code=201)
async def create_my_api_key(
    body: ApiKeyCreate, session: SessionDep, principal: AccountUser
) -> Envelope[ApiKeyCreated]:
    """Generate a key acting for the caller; the full key is in this response only."""
    return await _create(session, principal, body)


@account_router.delete("/{key_id}", response_model=Envelope[ApiKeyOut])
async def revoke_my_api_key(
    key_id: str, session: SessionDep, principal: AccountUser
) -> Envelope[ApiKeyOut]:
    """Revoke one of the caller's keys (another user's key id is 404)."""
    return ok(
        ApiKeyOut.of(await service.revoke_api_key(session, key_id, created_by=principal.user_id))
    )


# One router for the app factory; admin routes first in the OpenAPI document.
router = APIRouter()
router.include_router(admin_router)
router.include_router(account_router)


async def _create(
    session: AsyncSession, principal: Principal, body: ApiKeyCreate
) -> Envelope[ApiKeyCreated]:
    issued = await service.create_api_key(
        session,
        principal,
        name=body.name,
        scopes=body.scopes,
        expires_at=body.expires_at,
        allowed_ips=body.allowed_ips or (),
    )
    return _issued(issued)
