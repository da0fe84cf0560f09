"""Commands to a node's agent: built from the protocol's models, acknowledged.

Every install, power action, console command and delete goes the same way:

1. the decision (checks, the transitional status, the audit entry) is taken
   in a unit of work of its own, which commits;
2. the message goes to the agent through :class:`AgentRpc` and the request
   waits (bounded by ``servers.command_answer_seconds``) for its answer;
3. a refusal (``error`` from the agent) or a node that nobody holds puts the
   previous status back, with the reason, in a new unit of work (and a
   ``server.state_changed`` event), and the caller gets a 409/503 envelope.

The call happens after the commit because, on SQLite, a request's write
transaction blocks every other writer, the gateway recording the agent's own
state reports included: waiting for the agent inside it would stall the
answer behind the report. An agent that took the command but does not answer
in time keeps the transitional state: its reports, the reconcile when it
reconnects, or the sweeper (:mod:`hostplane.infra.servers.sweeper`) end it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.context import RequestContext, attach_context
from hostplane.core.db.session import record_event
from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.events.bus import Event
from hostplane.core.runtime import Runtime
from hostplane.infra.nodes import service as nodes
from hostplane.infra.nodes.models import PendingServerDelete
from hostplane.infra.nodes.rpc import AgentFailed, AgentRpc, AnswerOverdue, NodeUnavailable
from hostplane.infra.servers import service, variables
from hostplane.infra.servers.models import Server
from hostplane.infra.servers.service import CommandKind, PlannedCommand, PowerAction
from hostplane.infra.templates import service as templates
from hostplane.protocol import (
    DeleteServer,
    ExecuteCommand,
    InstallServer,
    InstallTemplate,
    KillServer,
    RestartServer,
    StartServer,
    StartTemplate,
    StopServer,
    WireModel,
    dump,
)

log = structlog.get_logger(__name__)

# What a refusal means for the status, when the agent knows better than the
# panel: a start refused because it already runs leaves it running.
_REFUSAL_STATES = {"ALREADY_RUNNING": "running", "NOT_RUNNING": "stopped"}


# --- building ---------------------------------------------------------------------------------


async def build(session: AsyncSession, planned: PlannedCommand) -> WireModel:
    """The protocol message for ``planned`` (rendered start command, environment, ports)."""
    server = planned.server
    suspended = server.status == "suspended"
    kind = planned.kind
    if kind in ("install_server", "start_server"):
        return await _launch_message(session, server, kind, suspended=suspended)
    if kind == "stop_server":
        return StopServer(
            server_id=server.id,
            server_uuid=server.uuid,
            suspended=suspended,
            timeout_seconds=planned.stop_timeout,
        )
    if kind == "restart_server":
        # The allocation rides along: the agent refuses a restart over it.
        return RestartServer(
            server_id=server.id,
            server_uuid=server.uuid,
            suspended=suspended,
            allocated_disk_mb=server.allocated_disk_mb,
        )
    if kind == "kill_server":
        return KillServer(server_id=server.id, server_uuid=server.uuid)
    if kind == "delete_server":
        return DeleteServer(server_id=server.id, server_uuid=server.uuid)
    return ExecuteCommand(server_id=server.id, server_uuid=server.uuid, command=planned.text or "")


async def _launch_message(
    session: AsyncSession, server: Server, kind: CommandKind, *, suspended: bool
) -> WireModel:
    node = await nodes.get_node(session, server.node_id)
    template = await templates.get_template(session, server.template_id)
    bindings = {
        a.container_port: a.host_port for a in await service.allocations_of(session, server.id)
    }
    command, environment = templates.render(
        template, variables.variables_for(server, node, bindings, server.environment)
    )
    common: dict[str, Any] = {
        "server_id": server.id,
        "server_uuid": server.uuid,
        "environment": environment,
        "allocated_memory_mb": server.allocated_memory_mb,
        "allocated_cpu_cores": server.allocated_cpu_cores,
        "allocated_disk_mb": server.allocated_disk_mb,
        "primary_port": server.primary_port,
        "network_mode": server.network_mode,
        "port_bindings": {str(c): h for c, h in bindings.items()},
        "container_name": server.container_name,
        "suspended": suspended,
    }
    if kind == "install_server":
        return InstallServer(
            template=InstallTemplate(
                docker_image=template.docker_image,
                environment=environment,
                install_script=template.install_script,
                install_image=template.install_image,
                start_command=command,
                stop_command=template.stop_command,
            ),
            **common,
        )
    return StartServer(
        template=StartTemplate(
            start_command=command,
            stop_command=template.stop_command,
            docker_image=template.docker_image,
        ),
        stop_command=template.stop_command,
        **common,
    )


def publish_command(
    session: AsyncSession, node_id: str, message: WireModel, *, tenant_id: str | None
) -> None:
    """Best effort, no answer: hand ``message`` to the node's agent once the
    transaction commits (console keystrokes, where a lost one is retyped)."""
    record_event(
        session,
        Event("node.command", {"nodeId": node_id, "message": _wire(message)}, tenant_id=tenant_id),
        topic=f"node.{node_id}.commands",
    )


def _wire(message: WireModel) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(dump(message))
    return parsed


# --- delivering -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """A committed decision on its way to the agent."""

    node_id: str
    tenant_id: str | None
    server_id: str
    message: WireModel
    previous: str
    target: str | None

    @classmethod
    async def of(cls, session: AsyncSession, planned: PlannedCommand) -> Delivery:
        server = planned.server
        return cls(
            node_id=server.node_id,
            tenant_id=server.tenant_id,
            server_id=server.id,
            message=await build(session, planned),
            previous=planned.previous,
            target=planned.target,
        )


async def deliver(runtime: Runtime, delivery: Delivery) -> Any:
    """Send the command and return the agent's answer.

    A refusal or a node nobody holds rolls the status back and raises; an
    answer that is overdue leaves the transitional state (and returns ``None``).
    """
    calls = AgentRpc(runtime.bus, tenant_id=delivery.tenant_id)
    try:
        return await calls.call(
            delivery.node_id,
            delivery.message,
            within=runtime.settings.servers.command_answer_seconds,
        )
    except AnswerOverdue as exc:
        log.warning(
            "servers.command_overdue",
            server_id=delivery.server_id,
            command=delivery.message.model_dump().get("type"),
            error=str(exc),
        )
        return None
    except AgentFailed as exc:
        restored = _REFUSAL_STATES.get(exc.agent_code, delivery.previous)
        await roll_back(runtime, delivery, restored, reason=exc.message)
        raise
    except NodeUnavailable as exc:
        await roll_back(runtime, delivery, delivery.previous, reason=exc.message)
        raise


async def roll_back(runtime: Runtime, delivery: Delivery, status: str, *, reason: str) -> None:
    """Put ``status`` back, unless something (an agent's report) moved the
    server on from the state the command set."""
    if delivery.target is None:
        return
    async with runtime.unit_of_work() as session:
        scope_to_tenant(session, delivery.tenant_id)
        server = await session.get(Server, delivery.server_id)
        if server is None or server.status != delivery.target:
            return
        service.set_status(session, server, status, reason=reason)
        await session.flush()
    log.info(
        "servers.command_refused",
        server_id=delivery.server_id,
        status=status,
        reason=reason,
    )


@contextlib.asynccontextmanager
async def _decision(runtime: Runtime, context: RequestContext) -> AsyncIterator[AsyncSession]:
    """The request's own unit of work (audited like a request's), committed before delivery."""
    async with runtime.unit_of_work() as session:
        if context.principal.kind != "system":
            scope_to_tenant(session, context.principal.tenant_id)
        attach_context(session, context)
        yield session


# --- what the routes call ---------------------------------------------------------------------


async def power(
    runtime: Runtime,
    context: RequestContext,
    server_id: str,
    action: PowerAction,
    *,
    stop_timeout: int | None = None,
) -> Server:
    async with _decision(runtime, context) as session:
        planned = await service.power(
            session, context.principal, server_id, action, stop_timeout=stop_timeout
        )
        delivery = await Delivery.of(session, planned)
    await deliver(runtime, delivery)
    return planned.server


async def install(runtime: Runtime, context: RequestContext, server_id: str) -> Server:
    async with _decision(runtime, context) as session:
        planned = await service.install_server(session, context.principal, server_id)
        delivery = await Delivery.of(session, planned)
    await deliver(runtime, delivery)
    return planned.server


async def console_command(
    runtime: Runtime, context: RequestContext, server_id: str, command: str
) -> Server:
    async with _decision(runtime, context) as session:
        planned = await service.send_command(session, context.principal, server_id, command)
        delivery = await Delivery.of(session, planned)
    await deliver(runtime, delivery)
    return planned.server


async def suspend(
    runtime: Runtime, context: RequestContext, server_id: str, *, reason: str | None
) -> Server:
    """Suspend; a running server is told to stop (best effort: an agent that
    cannot be reached stops it when it reconnects)."""
    async with _decision(runtime, context) as session:
        server, planned = await service.suspend_server(
            session, context.principal, server_id, reason=reason
        )
        delivery = await Delivery.of(session, planned) if planned is not None else None
    if delivery is not None:
        try:
            await deliver(runtime, delivery)
        except (AgentFailed, NodeUnavailable) as exc:
            log.warning("servers.suspend_stop_failed", server_id=server.id, error=exc.message)
    return server


async def delete(
    runtime: Runtime, context: RequestContext, server_id: str, *, force: bool = False
) -> bool:
    """Delete the server; ``True`` when its node has removed it already, ``False``
    when the removal waits for the node (sent when its agent reconnects)."""
    async with _decision(runtime, context) as session:
        pending = await service.delete_server(session, context.principal, server_id, force=force)
        node = await nodes.get_node(session, pending.node_id)
        online = nodes.is_online(node)
    if not online:
        return False
    return await carry_out_delete(runtime, pending)


async def carry_out_delete(runtime: Runtime, pending: PendingServerDelete) -> bool:
    """Ask the agent to remove a deleted server; forget the request once it did."""
    calls = AgentRpc(runtime.bus, tenant_id=pending.tenant_id)
    message = DeleteServer(server_id=pending.server_id, server_uuid=pending.server_uuid)
    error: str
    try:
        await calls.call(
            pending.node_id, message, within=runtime.settings.servers.command_answer_seconds
        )
    except (AgentFailed, NodeUnavailable) as exc:
        error = exc.message
    else:
        async with runtime.unit_of_work() as session:
            row = await session.get(PendingServerDelete, pending.id)
            if row is not None:
                await session.delete(row)
        log.info("servers.node_removed_server", server_id=pending.server_id)
        return True
    async with runtime.unit_of_work() as session:
        row = await session.get(PendingServerDelete, pending.id)
        if row is not None:
            row.attempts += 1
            row.last_error = error[:500]
    log.warning("servers.node_removal_pending", server_id=pending.server_id, error=error)
    return False


async def pending_deletes(runtime: Runtime, node_id: str) -> Sequence[PendingServerDelete]:
    async with runtime.unit_of_work(read_only=True) as session:
        rows = await session.scalars(
            select(PendingServerDelete)
            .where(PendingServerDelete.node_id == node_id)
            .order_by(PendingServerDelete.id)
        )
        return rows.all()


async def send_pending_deletes(runtime: Runtime, node_id: str) -> int:
    """Carry out every delete the node missed; returns how many it confirmed."""
    done = 0
    for pending in await pending_deletes(runtime, node_id):
        if await carry_out_delete(runtime, pending):
            done += 1
    return done


async def follow_up(
    runtime: Runtime, tenant_id: str | None, server_id: str, kinds: Sequence[str]
) -> None:
    """Send what an agent's report calls for (a restart by policy, a stop for a
    suspended server), acknowledged like any command."""
    for kind in kinds:
        async with runtime.unit_of_work() as session:
            scope_to_tenant(session, tenant_id)
            server = await session.get(Server, server_id)
            if server is None:
                return
            if kind == "start_server":
                # The report that asked for it moved the server crashed -> starting.
                planned = PlannedCommand(server, "start_server", "crashed", target="starting")
            else:
                planned = PlannedCommand(server, "stop_server", server.status)
            delivery = await Delivery.of(session, planned)
        try:
            await deliver(runtime, delivery)
        except (AgentFailed, NodeUnavailable) as exc:
            log.warning(
                "servers.follow_up_refused", server_id=server_id, command=kind, error=exc.message
            )
