"""``/api/locations``: where nodes stand."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from hostplane.core.http.deps import SessionDep, require
from hostplane.core.http.envelope import Envelope, ok
from hostplane.core.principal import Principal
from hostplane.infra.locations import service
from hostplane.infra.locations.schemas import LocationCreate, LocationOut

router = APIRouter(prefix="/api/locations", tags=["nodes"])

NodeReader = Annotated[Principal, Depends(require("node.read"))]
NodeManager = Annotated[Principal, Depends(require("node.manage"))]


@router.get("", response_model=Envelope[list[LocationOut]])
async def list_locations(
    session: SessionDep, _principal: NodeReader
) -> Envelope[list[LocationOut]]:
    """Every location of the tenant."""
    return ok([LocationOut.model_validate(x) for x in await service.list_locations(session)])


@router.post("", response_model=Envelope[LocationOut], status_code=201)
async def create_location(
    body: LocationCreate, session: SessionDep, _principal: NodeManager
) -> Envelope[LocationOut]:
    """Create a location nodes can be placed in."""
    return ok(LocationOut.model_validate(await service.create_location(session, name=body.name)))
