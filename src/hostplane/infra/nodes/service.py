"""Nodes: registration, credentials, liveness and capacity.

A node's secret and its deployment token are 256-bit random values shown
once and stored as SHA-256 (a slow hash adds nothing to 256 random bits).
The agent presents either to ``/ws``; :func:`authenticate_node` checks them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from hostplane.infra.locations import service as locations
from hostplane.infra.nodes.models import DEFAULT_PORT_RANGE, DEFAULT_ROLE, Node

# A node is online while its agent's socket is open (``agent_session_id``) and
# it reported within this long (heartbeats come every 30 s). The window only
# matters when the replica holding the socket died without saying so.
ONLINE_WINDOW = timedelta(seconds=90)
DEPLOYMENT_TOKEN_TTL = timedelta(hours=24)
_TOKEN_BYTES = 32  # 256 bits


class NodeNotFound(NotFound):
    def __init__(self, node_id: str) -> None:
        super().__init__("node", node_id)


class NodeOffline(ServiceUnavailable):
    code = "NODE_OFFLINE"

    def __init__(self, node_id: str) -> None:
        super().__init__(
            "The node is offline; try again when its agent has reconnected",
            details={"nodeId": node_id},
            headers={"Retry-After": "30"},
        )


@dataclass(frozen=True)
class IssuedToken:
    deployment_token: str
    secret: str
    expires_at: datetime


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _new_secret() -> str:
    return secrets.token_urlsafe(_TOKEN_BYTES)


def is_online(node: Node, *, now: datetime | None = None) -> bool:
    if node.last_seen_at is None or node.agent_session_id is None:
        return False
    return (now or utcnow()) - node.last_seen_at <= ONLINE_WINDOW


def ensure_online(node: Node) -> None:
    """Raise 503 ``NODE_OFFLINE`` unless the node's agent reported recently."""
    if not is_online(node):
        raise NodeOffline(node.id)


async def list_nodes(session: AsyncSession) -> Sequence[Node]:
    return (await session.scalars(select(Node).order_by(Node.name, Node.id))).all()


async def get_node(session: AsyncSession, node_id: str, *, for_update: bool = False) -> Node:
    """The node, or 404. ``for_update`` locks its row (placement and port changes)."""
    statement = select(Node).where(Node.id == node_id)
    if for_update:
        statement = statement.with_for_update()
    node = await session.scalar(statement)
    if node is None:
        raise NodeNotFound(node_id)
    return node


async def public_addresses(session: AsyncSession, node_ids: set[str]) -> dict[str, str]:
    """Each node's public address, in one query; 404 as :func:`get_node` for a missing one."""
    if not node_ids:
        return {}
    rows = await session.execute(
        select(Node.id, Node.public_address).where(Node.id.in_(sorted(node_ids)))
    )
    found = {row.id: row.public_address for row in rows}
    for node_id in node_ids - found.keys():
        raise NodeNotFound(node_id)
    return found


async def _check_location(session: AsyncSession, location_id: str | None) -> None:
    if location_id is not None:
        await locations.get_location(session, location_id)


async def create_node(
    session: AsyncSession,
    *,
    name: str,
    hostname: str,
    public_address: str,
    max_memory_mb: int,
    max_cpu_cores: float,
    max_disk_mb: int,
    description: str | None = None,
    location_id: str | None = None,
    port_range_start: int | None = None,
    port_range_end: int | None = None,
    role: str = DEFAULT_ROLE,
    memory_overallocate: int = 0,
    disk_overallocate: int = 0,
    cpu_overallocate: int = 0,
) -> tuple[Node, str]:
    """Register a node; returns it and its secret (the only time the secret exists in clear)."""
    await _check_location(session, location_id)
    start = port_range_start or DEFAULT_PORT_RANGE[0]
    end = port_range_end or max(start, DEFAULT_PORT_RANGE[1])
    if end < start:
        raise ValidationFailed("portRangeEnd must not be below portRangeStart")
    secret = _new_secret()
    node = Node(
        name=name,
        description=description,
        location_id=location_id,
        hostname=hostname,
        public_address=public_address,
        max_memory_mb=max_memory_mb,
        max_cpu_cores=max_cpu_cores,
        max_disk_mb=max_disk_mb,
        role=role,
        memory_overallocate=memory_overallocate,
        disk_overallocate=disk_overallocate,
        cpu_overallocate=cpu_overallocate,
        port_range_start=start,
        port_range_end=end,
        secret_hash=_hash(secret),
    )
    session.add(node)
    await session.flush()
    return node, secret


async def update_node(session: AsyncSession, node_id: str, changes: dict[str, Any]) -> Node:
    """Apply the given fields. Shrinking capacity below what is placed is allowed
    (operators drain nodes that way); new placements are refused until it fits."""
    node = await get_node(session, node_id)
    if "location_id" in changes:
        await _check_location(session, changes["location_id"])
    for field, value in changes.items():
        setattr(node, field, value)
    if node.port_range_end < node.port_range_start:
        raise ValidationFailed("portRangeEnd must not be below portRangeStart")
    await session.flush()
    return node


async def delete_node(session: AsyncSession, node_id: str) -> None:
    """Delete a node. Callers check first that no server is placed on it.

    Transfer records and backups name the node they ran on or are stored on;
    that history is kept, so a node still named there is a 409, not deleted
    (the database's foreign keys decide, which also covers a concurrent insert).
    """
    node = await get_node(session, node_id, for_update=True)
    try:
        async with session.begin_nested():
            await session.delete(node)
            await session.flush()
    except IntegrityError:
        raise Conflict(
            "The node is still named by transfer or backup records; delete those first",
            details={"nodeId": node_id},
        ) from None


async def issue_deployment_token(session: AsyncSession, node_id: str) -> IssuedToken:
    """A new deployment token (24 h) and a new secret; the old secret stops working."""
    node = await get_node(session, node_id, for_update=True)
    token = _new_secret()
    secret = _new_secret()
    expires_at = utcnow() + DEPLOYMENT_TOKEN_TTL
    node.deployment_token_hash = _hash(token)
    node.deployment_token_expires_at = expires_at
    node.secret_hash = _hash(secret)
    await session.flush()
    return IssuedToken(deployment_token=token, secret=secret, expires_at=expires_at)


async def authenticate_node(session: AsyncSession, node_id: str, token: str) -> Node | None:
    """The node when ``token`` is its secret or its unexpired deployment token, else ``None``.

    For the gateway's ``/ws?nodeId=...&token=...``; comparisons are constant-time.
    """
    if not token or not node_id:
        return None
    node = await session.get(Node, node_id)
    if node is None:
        return None
    presented = _hash(token)
    if hmac.compare_digest(presented, node.secret_hash):
        return node
    if (
        node.deployment_token_hash is not None
        and node.deployment_token_expires_at is not None
        and node.deployment_token_expires_at > utcnow()
        and hmac.compare_digest(presented, node.deployment_token_hash)
    ):
        return node
    return None


async def all_nodes(session: AsyncSession) -> Sequence[Node]:
    """Every node the session sees, with its last heartbeat (the alert evaluator)."""
    return (await session.scalars(select(Node).order_by(Node.id))).all()


async def mark_seen(
    session: AsyncSession, node_id: str, health: dict[str, Any] | None = None
) -> None:
    """Record that the node's agent is alive (handshake, heartbeat, health report)."""
    node = await session.get(Node, node_id)
    if node is None:
        return
    node.last_seen_at = utcnow()
    if health is not None:
        node.health = health
    await session.flush()


async def mark_connected(session: AsyncSession, node_id: str, agent_session_id: str) -> None:
    """The node's agent finished its handshake on some replica: online from now."""
    node = await session.get(Node, node_id)
    if node is None:
        return
    node.agent_session_id = agent_session_id
    node.last_seen_at = utcnow()
    await session.flush()


async def mark_disconnected(session: AsyncSession, node_id: str, agent_session_id: str) -> bool:
    """The socket of session ``agent_session_id`` closed: the node is offline now.

    Only that session's mark is cleared, so an agent that already reconnected
    (possibly to another replica) is not shown offline by its old socket's end.
    Returns whether the node went offline.
    """
    result = await session.execute(
        update(Node)
        .where(Node.id == node_id, Node.agent_session_id == agent_session_id)
        .values(agent_session_id=None)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))
