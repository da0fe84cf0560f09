"""mPanel's system routes: ``/api/system/health`` and ``/api/system/events`` (admins only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from hostplane.core.bounds import parse_moment
from hostplane.core.http.deps import RuntimeDep, SessionDep, require
from hostplane.core.http.envelope import Envelope, ok
from hostplane.core.ids import ID_LENGTH
from hostplane.core.pagination import DEFAULT_LIMIT
from hostplane.core.principal import Principal
from hostplane.identity.tenants.service import is_platform_operator
from hostplane.platform.system import service
from hostplane.platform.system.schemas import (
    CursorEnvelope,
    CursorMeta,
    SystemEventOut,
    SystemHealthOut,
)

router = APIRouter(prefix="/api/system", tags=["system"])

SystemReader = Annotated[Principal, Depends(require("system.read"))]
TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?$"


@router.get("/health", response_model=Envelope[SystemHealthOut])
async def system_health(
    runtime: RuntimeDep, session: SessionDep, _principal: SystemReader
) -> Envelope[SystemHealthOut]:
    """Aggregated host metrics: the panel process, database, bus, queue, and each node's
    CPU, memory and disk as its agent last reported them."""
    return ok(SystemHealthOut.model_validate(await service.health(runtime, session)))


@router.get("/events", response_model=CursorEnvelope)
async def system_events(
    session: SessionDep,
    principal: SystemReader,
    type: Annotated[
        str | None,
        Query(
            max_length=100,
            pattern=TYPE_PATTERN,
            description="An event type (job.failed) or a family (webhook.delivery.*)",
        ),
    ] = None,
    since: Annotated[str | None, Query(description="ISO 8601; events at or after")] = None,
    until: Annotated[str | None, Query(description="ISO 8601; events before")] = None,
    cursor: Annotated[
        str | None,
        Query(
            max_length=ID_LENGTH,
            pattern=r"^[0-9a-z]+$",
            description="`nextCursor` of the page before",
        ),
    ] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=service.MAX_EVENTS_PAGE, description="Events per page (20).")
    ] = None,
    page_size: Annotated[
        int | None,
        Query(alias="pageSize", ge=1, le=service.MAX_EVENTS_PAGE, description="Alias of `limit`."),
    ] = None,
) -> CursorEnvelope:
    """Queue and provisioning events (jobs started, retried, failed, succeeded; webhook
    deliveries; alerts), newest first, cursor-paginated. Platform operators see every
    tenant's; other admins their own tenant's."""
    scope = None if await is_platform_operator(session, principal) else principal.tenant_id
    filters = service.EventFilters(
        type=type,
        since=None if since is None else parse_moment(since, field="since"),
        until=None if until is None else parse_moment(until, field="until"),
        tenant_id=scope,
    )
    size = limit or page_size or DEFAULT_LIMIT
    rows, next_cursor = await service.list_events(session, filters, cursor=cursor, limit=size)
    return CursorEnvelope(
        data=[SystemEventOut.model_validate(row) for row in rows],
        pagination=CursorMeta(limit=size, next_cursor=next_cursor),
    )
