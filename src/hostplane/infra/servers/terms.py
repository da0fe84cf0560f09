"""What servers bought on a plan need from the servers domain, without it knowing plans.

Commerce keeps a server's plan term; the servers domain must not import it.
So commerce registers a lookup here (:func:`provide`) that the server
listings call to fill ``plan``, ``planId`` and ``expiresAt``, and it changes
a server's limits through :func:`apply_limits`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.infra.nodes import service as nodes
from hostplane.infra.servers.models import Server
from hostplane.infra.servers.service import check_capacity, get_server


@dataclass(frozen=True, slots=True)
class ServerTerm:
    plan_id: str
    plan_name: str
    expires_at: datetime | None


TermLookup = Callable[[AsyncSession, Collection[str]], Awaitable[Mapping[str, ServerTerm]]]
_lookups: list[TermLookup] = []


def provide(lookup: TermLookup) -> None:
    """Register where the plan terms of servers come from (once per lookup)."""
    if lookup not in _lookups:
        _lookups.append(lookup)


async def terms_of(session: AsyncSession, server_ids: Collection[str]) -> dict[str, ServerTerm]:
    """The plan term of each server that has one (one query per registered lookup)."""
    found: dict[str, ServerTerm] = {}
    if not server_ids:
        return found
    for lookup in _lookups:
        found |= await lookup(session, server_ids)
    return found


@dataclass(frozen=True, slots=True)
class Limits:
    memory_mb: int
    cpu_cores: float
    disk_mb: int
    database_limit: int


async def apply_limits(session: AsyncSession, server_id: str, limits: Limits) -> str:
    """Give the server new limits, within its node's capacity (400 when it lacks room).

    The agent receives limits with every install and start; it has no message to
    change a running container's, so a server that runs gets them at its next
    start. Returns ``"live"`` or ``"next_start"``: when the limits take effect.
    """
    server: Server = await get_server(session, server_id, for_update=True)
    node = await nodes.get_node(session, server.node_id, for_update=True)
    await check_capacity(
        session,
        node,
        memory_mb=limits.memory_mb,
        cpu_cores=limits.cpu_cores,
        disk_mb=limits.disk_mb,
        excluding=server.id,
    )
    server.allocated_memory_mb = limits.memory_mb
    server.allocated_cpu_cores = limits.cpu_cores
    server.allocated_disk_mb = limits.disk_mb
    server.database_limit = limits.database_limit
    await session.flush()
    return "next_start"
