"""Transfers: rules and the transactions at each end of a move.

A transfer starts with the server stopped, the target online with room and
ports for every allocation; the server goes ``transferring`` and a
``transfers.run`` job does the copy (see :mod:`hostplane.infra.transfers.jobs`).
Only :func:`complete` moves the server (``nodeId`` and its allocations), in
one transaction, after the target has verified and staged the files; any
failure before that goes through :func:`fail`, which leaves the server on its
source node, ``stopped`` and startable.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.errors import ValidationFailed
from hostplane.core.principal import Principal
from hostplane.infra.nodes import service as nodes
from hostplane.infra.nodes.models import Node
from hostplane.infra.servers import lifecycle
from hostplane.infra.servers import service as servers
from hostplane.infra.servers.models import Server
from hostplane.infra.transfers.models import ServerTransfer
from hostplane.platform.jobs import service as jobs

ACTIVE = ("pending", "copying", "committing")


async def port_plan(session: AsyncSession, server: Server, target: Node) -> dict[int, int]:
    """Container port -> host port on ``target`` for each of the server's allocations:
    the same host port when it is in the target's pool and free, else the first free one."""
    used = await servers.used_host_ports(session, target.id)
    plan: dict[int, int] = {}
    for allocation in await servers.allocations_of(session, server.id):
        port = allocation.host_port
        in_pool = target.port_range_start <= port <= target.port_range_end
        if not in_pool or port in used:
            port = servers.free_port(target, used)
        used.add(port)
        plan[allocation.container_port] = port
    return plan


async def request_transfer(
    session: AsyncSession, principal: Principal, server_id: str, target_node_id: str
) -> tuple[ServerTransfer, Server, Node, Node, str]:
    """The transfer, the server, its source and target, and the id of the job that moves it."""
    server = await servers.load_for(
        session, principal, server_id, ("server.transfer",), for_update=True
    )
    lifecycle.ensure_off(server.status, action="move it")
    if target_node_id == server.node_id:
        raise ValidationFailed(
            "The server is already on that node", details={"targetNodeId": target_node_id}
        )
    target = await nodes.get_node(session, target_node_id, for_update=True)
    source = await nodes.get_node(session, server.node_id)
    nodes.ensure_online(target)
    nodes.ensure_online(source)
    await servers.check_capacity(
        session,
        target,
        memory_mb=server.allocated_memory_mb,
        cpu_cores=server.allocated_cpu_cores,
        disk_mb=server.allocated_disk_mb,
        excluding=server.id,
    )
    await port_plan(session, server, target)  # 409 NO_FREE_PORTS now rather than at the end
    lifecycle.check_transition(server.status, "transferring", action="move it")
    servers.set_status(session, server, "transferring", reason=f"moving to {target.name}")
    transfer = ServerTransfer(
        tenant_id=server.tenant_id,
        server_id=server.id,
        active_server_id=server.id,
        source_node_id=source.id,
        target_node_id=target.id,
        status="pending",
        requested_by_user_id=principal.user_id,
    )
    session.add(transfer)
    await session.flush()
    job = await jobs.enqueue(
        session,
        "transfers.run",
        tenant_id=server.tenant_id,
        max_attempts=1,
        transfer_id=transfer.id,
    )
    return transfer, server, source, target, job.id


async def list_transfers(
    session: AsyncSession, principal: Principal, server_id: str
) -> Sequence[ServerTransfer]:
    server = await servers.load_for(session, principal, server_id, ("server.read",))
    rows = await session.scalars(
        select(ServerTransfer)
        .where(ServerTransfer.server_id == server.id)
        .order_by(ServerTransfer.created_at.desc())
    )
    return rows.all()


async def load(session: AsyncSession, transfer_id: str) -> ServerTransfer | None:
    return await session.get(ServerTransfer, transfer_id, with_for_update=True)


async def set_stage(session: AsyncSession, transfer_id: str, status: str, **values: object) -> None:
    transfer = await load(session, transfer_id)
    if transfer is None or transfer.status not in ACTIVE:
        return
    transfer.status = status
    for name, value in values.items():
        setattr(transfer, name, value)


async def complete(session: AsyncSession, transfer_id: str) -> ServerTransfer:
    """Move the server to the target: node, allocations and status, in this transaction."""
    transfer = await load(session, transfer_id)
    if transfer is None or transfer.status not in ACTIVE:
        raise ValidationFailed("This transfer is no longer under way")
    server = await servers.get_server(session, transfer.server_id, for_update=True)
    target = await nodes.get_node(session, transfer.target_node_id, for_update=True)
    plan = await port_plan(session, server, target)
    for allocation in await servers.allocations_of(session, server.id):
        allocation.node_id = target.id
        allocation.host_port = plan[allocation.container_port]
    server.node_id = target.id
    servers.set_status(session, server, "stopped", reason=f"moved to {target.name}")
    transfer.status = "completed"
    transfer.active_server_id = None
    transfer.finished_at = utcnow()
    await jobs.enqueue(
        session,
        "transfers.cleanup_source",
        tenant_id=server.tenant_id,
        node_id=transfer.source_node_id,
        server_id=server.id,
    )
    return transfer


async def fail(session: AsyncSession, transfer_id: str, error: str) -> None:
    """Record the failure; the server stays where it was, ``stopped``."""
    transfer = await load(session, transfer_id)
    if transfer is None or transfer.status not in ACTIVE:
        return
    transfer.status = "failed"
    transfer.error = error[:2000]
    transfer.active_server_id = None
    transfer.finished_at = utcnow()
    server = await session.get(Server, transfer.server_id, with_for_update=True)
    if server is not None and server.status == "transferring":
        servers.set_status(session, server, "stopped", reason=f"transfer failed: {error}")


async def disk_limit_of(session: AsyncSession, server_id: str) -> int | None:
    """The server's disk allocation (MB): the target refuses an import past it."""
    server = await session.get(Server, server_id)
    return None if server is None else server.allocated_disk_mb
