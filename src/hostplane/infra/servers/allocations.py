"""Port allocations of a server: bindings from the node's pool, unique per node.

Every change happens under a lock on the node's row, and the unique
``(node_id, host_port)`` constraint backs it up. Bindings change only while
the server is stopped (the container is created with them).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.errors import Conflict, NotFound, ValidationFailed
from hostplane.core.principal import Principal
from hostplane.infra.nodes import service as nodes
from hostplane.infra.servers import lifecycle
from hostplane.infra.servers.models import Server, ServerAllocation
from hostplane.infra.servers.service import (
    allocations_of,
    check_in_pool,
    free_port,
    load_for,
    used_host_ports,
)

READ = ("server.read", "allocation.read")
CREATE = ("server.update", "allocation.create")
DELETE = ("server.update", "allocation.delete")
UPDATE = ("server.update", "allocation.update")


class AllocationNotFound(NotFound):
    def __init__(self, container_port: int) -> None:
        super().__init__("allocation", str(container_port))


async def list_allocations(
    session: AsyncSession, principal: Principal, server_id: str
) -> tuple[Server, Sequence[ServerAllocation]]:
    server = await load_for(session, principal, server_id, READ)
    return server, await allocations_of(session, server.id)


async def add_allocation(
    session: AsyncSession,
    principal: Principal,
    server_id: str,
    *,
    container_port: int | None = None,
    host_port: int | None = None,
) -> ServerAllocation:
    """Bind a host port of the node's pool to a container port.

    Without ``host_port`` the lowest free port of the pool is taken (QeinTech's
    auto-assign); without ``container_port`` it equals the host port, so an
    automatic pick also skips ports already bound inside the server's container
    rather than failing on them.
    """
    server = await load_for(session, principal, server_id, CREATE, for_update=True)
    lifecycle.ensure_off(server.status, action="change its ports")
    node = await nodes.get_node(session, server.node_id, for_update=True)
    used = await used_host_ports(session, node.id)
    existing = await allocations_of(session, server.id)
    if host_port is None:
        inside = {a.container_port for a in existing} if container_port is None else set()
        host_port = free_port(node, used | inside)
    check_in_pool(node, host_port)
    if host_port in used:
        raise Conflict(
            f"Port {host_port} is already allocated on this node", details={"hostPort": host_port}
        )
    container_port = container_port or host_port
    if any(a.container_port == container_port for a in existing):
        raise Conflict(
            f"Container port {container_port} is already bound",
            details={"containerPort": container_port},
        )
    allocation = ServerAllocation(
        server_id=server.id,
        node_id=node.id,
        container_port=container_port,
        host_port=host_port,
        is_primary=not existing,
    )
    session.add(allocation)
    if not existing:
        server.primary_port = container_port
    await session.flush()
    return allocation


async def _find(session: AsyncSession, server: Server, container_port: int) -> ServerAllocation:
    for allocation in await allocations_of(session, server.id):
        if allocation.container_port == container_port:
            return allocation
    raise AllocationNotFound(container_port)


async def remove_allocation(
    session: AsyncSession, principal: Principal, server_id: str, container_port: int
) -> None:
    server = await load_for(session, principal, server_id, DELETE, for_update=True)
    lifecycle.ensure_off(server.status, action="change its ports")
    allocation = await _find(session, server, container_port)
    if allocation.is_primary:
        raise ValidationFailed("Cannot remove the primary allocation")
    await session.delete(allocation)
    await session.flush()


async def set_primary(
    session: AsyncSession, principal: Principal, server_id: str, container_port: int
) -> Server:
    server = await load_for(session, principal, server_id, UPDATE, for_update=True)
    lifecycle.ensure_off(server.status, action="change its ports")
    chosen = await _find(session, server, container_port)
    for allocation in await allocations_of(session, server.id):
        allocation.is_primary = allocation is chosen
    server.primary_port = chosen.container_port
    await session.flush()
    return server
