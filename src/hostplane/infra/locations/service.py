"""Locations: a name nodes are grouped under."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.errors import NotFound
from hostplane.infra.locations.models import Location


class LocationNotFound(NotFound):
    def __init__(self, location_id: str) -> None:
        super().__init__("location", location_id)


async def list_locations(session: AsyncSession) -> Sequence[Location]:
    return (await session.scalars(select(Location).order_by(Location.name, Location.id))).all()


async def get_location(session: AsyncSession, location_id: str) -> Location:
    location = await session.get(Location, location_id)
    if location is None:
        raise LocationNotFound(location_id)
    return location


async def create_location(session: AsyncSession, *, name: str) -> Location:
    location = Location(name=name)
    session.add(location)
    await session.flush()
    return location
