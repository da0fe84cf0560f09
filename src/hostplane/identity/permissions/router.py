"""``GET /api/permissions``: the permission catalogue."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from hostplane.core.http.deps import Authenticated
from hostplane.core.http.envelope import Envelope, ok
from hostplane.identity.permissions import catalogue
from hostplane.identity.permissions.schemas import PermissionOut

router = APIRouter(prefix="/api/permissions", tags=["permissions"])


@router.get("", response_model=Envelope[list[PermissionOut]])
async def list_permissions(
    _principal: Authenticated,
    scope: Annotated[
        Literal["global", "server"] | None,
        Query(description="Only `server`-level (grantable per server) or only `global` ones."),
    ] = None,
) -> Envelope[list[PermissionOut]]:
    """Every permission string roles, API keys and per-server grants may hold.

    Roles may also hold the wildcards `*` (everything) and `prefix.*` (every
    permission under the prefix). The catalogue is fixed, so it is not paginated.
    """
    return ok(
        [
            PermissionOut.of(permission)
            for permission in catalogue.all_permissions()
            if scope is None or permission.scope.value == scope
        ]
    )
