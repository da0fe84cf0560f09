"""The audit log's routes: Catalyst's ``/api/admin/audit-logs`` and mPanel's ``/api/audit``.

Both list the same entries, newest first; the platform's operators see every
tenant's, everyone else only their own tenant's.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from hostplane.core.http.deps import PageDep, SessionDep, require
from hostplane.core.http.envelope import PageEnvelope, page
from hostplane.core.pagination import MAX_LIMIT, MAX_PAGE, PageParams
from hostplane.core.principal import Principal
from hostplane.platform.audit import service
from hostplane.platform.audit.models import ACTOR_ID_LENGTH, RESOURCE_ID_LENGTH
from hostplane.platform.audit.schemas import (
    ACTION_PATTERN,
    ACTION_PREFIX_PATTERN,
    AuditEntryOut,
    AuditLogOut,
    action_prefix,
    parse_since,
)

router = APIRouter(tags=["audit"])

AuditReader = Annotated[Principal, Depends(require("audit.read"))]
# Catalyst's default page is 100 entries, where other lists default to 20.
CATALYST_DEFAULT_LIMIT = 100


@router.get("/api/admin/audit-logs", response_model=PageEnvelope[AuditLogOut])
async def list_audit_logs(
    principal: AuditReader,
    session: SessionDep,
    user_id: Annotated[
        str | None,
        Query(alias="userId", max_length=ACTOR_ID_LENGTH, description="The user who acted"),
    ] = None,
    action: Annotated[
        str | None,
        Query(
            pattern=ACTION_PATTERN, max_length=100, description="Exact action, e.g. server.start"
        ),
    ] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_LIMIT, description="Entries per page (max 100).")
    ] = None,
    page_size: Annotated[
        int | None, Query(alias="pageSize", ge=1, le=MAX_LIMIT, description="Alias of `limit`.")
    ] = None,
    page_number: Annotated[
        int, Query(alias="page", ge=1, le=MAX_PAGE, description="Page, from 1.")
    ] = 1,
) -> PageEnvelope[AuditLogOut]:
    """Audit entries, newest first (Catalyst's shape: with the acting user's username)."""
    entries, meta = await service.list_entries(
        session,
        principal,
        service.AuditFilters(user_id=user_id, action=action),
        PageParams(page=page_number, limit=limit or page_size or CATALYST_DEFAULT_LIMIT),
    )
    return page([AuditLogOut.of(view.entry, view.username) for view in entries], meta)


@router.get("/api/audit", response_model=PageEnvelope[AuditEntryOut])
async def list_audit_entries(
    principal: AuditReader,
    session: SessionDep,
    params: PageDep,
    actor_id: Annotated[
        str | None,
        Query(
            alias="actorId",
            max_length=ACTOR_ID_LENGTH,
            description="Who acted: a user, API key or node id, or 'system'",
        ),
    ] = None,
    type_: Annotated[
        str | None,
        Query(
            alias="type",
            pattern=ACTION_PREFIX_PATTERN,
            max_length=100,
            description=(
                "The action, or a prefix of whole words: 'subscription' (or "
                "'subscription.*') matches subscription.created, subscription.cancelled, ..."
            ),
        ),
    ] = None,
    resource_type: Annotated[
        str | None,
        Query(alias="resourceType", pattern=ACTION_PATTERN, max_length=64),
    ] = None,
    resource_id: Annotated[
        str | None, Query(alias="resourceId", max_length=RESOURCE_ID_LENGTH)
    ] = None,
    since: Annotated[
        str | None,
        Query(description="ISO 8601 date or date-time (UTC when no offset is given)"),
    ] = None,
) -> PageEnvelope[AuditEntryOut]:
    """Audit entries, newest first (mPanel's shape), filtered by actor, type, resource and time."""
    entries, meta = await service.list_entries(
        session,
        principal,
        service.AuditFilters(
            actor_id=actor_id,
            action_prefix=action_prefix(type_),
            resource_type=resource_type,
            resource_id=resource_id,
            since=parse_since(since),
        ),
        params,
    )
    return page([AuditEntryOut.of(view.entry) for view in entries], meta)
