"""``/api/nodes``: the machines that run servers (Catalyst nodes, mPanel's hosts)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from hostplane.core.http.deps import SessionDep, require
from hostplane.core.http.envelope import Empty, Envelope, ok
from hostplane.core.principal import Principal
from hostplane.infra.nodes import service
from hostplane.infra.nodes.models import Node
from hostplane.infra.nodes.schemas import (
    DeploymentToken,
    NodeCreate,
    NodeCreated,
    NodeOut,
    NodeServerSummary,
    NodeUpdate,
)
from hostplane.infra.servers import service as servers
from hostplane.infra.servers.models import Server

router = APIRouter(prefix="/api/nodes", tags=["nodes"])

NodeReader = Annotated[Principal, Depends(require("node.read"))]
NodeManager = Annotated[Principal, Depends(require("node.manage"))]


def _out(node: Node, placed: list[Server]) -> NodeOut:
    return NodeOut.model_validate(
        {
            **{
                field: getattr(node, field)
                for field in NodeOut.model_fields
                if hasattr(node, field)
            },
            "is_online": service.is_online(node),
            "ip": node.public_address,
            "status": "online" if service.is_online(node) else "offline",
            "last_heartbeat_at": node.last_seen_at,
            "servers": [NodeServerSummary.model_validate(s) for s in placed],
        }
    )


@router.get("", response_model=Envelope[list[NodeOut]])
async def list_nodes(session: SessionDep, _principal: NodeReader) -> Envelope[list[NodeOut]]:
    """Every node with its liveness and the servers placed on it. Secrets are never shown."""
    found = await service.list_nodes(session)
    placed = await servers.summaries_by_node(session, [node.id for node in found])
    return ok([_out(node, placed[node.id]) for node in found])


@router.post("", response_model=Envelope[NodeCreated], status_code=201)
async def create_node(
    body: NodeCreate, session: SessionDep, _principal: NodeManager
) -> Envelope[NodeCreated]:
    """Register a node. The response holds its secret: the only time it is shown."""
    node, secret = await service.create_node(session, **body.model_dump(by_alias=False))
    return ok(NodeCreated(id=node.id, name=node.name, secret=secret))


@router.get("/{node_id}", response_model=Envelope[NodeOut])
async def get_node(node_id: str, session: SessionDep, _principal: NodeReader) -> Envelope[NodeOut]:
    """One node. Unlike Catalyst's, the answer never includes the secret."""
    node = await service.get_node(session, node_id)
    placed = await servers.summaries_by_node(session, [node.id])
    return ok(_out(node, placed[node.id]))


@router.put("/{node_id}", response_model=Envelope[NodeOut])
async def update_node(
    node_id: str, body: NodeUpdate, session: SessionDep, _principal: NodeManager
) -> Envelope[NodeOut]:
    """Change a node's fields."""
    node = await service.update_node(
        session, node_id, body.model_dump(by_alias=False, exclude_unset=True)
    )
    placed = await servers.summaries_by_node(session, [node.id])
    return ok(_out(node, placed[node.id]))


@router.delete("/{node_id}", response_model=Empty)
async def delete_node(node_id: str, session: SessionDep, _principal: NodeManager) -> Empty:
    """Delete a node; 400 while servers are placed on it."""
    await service.get_node(session, node_id, for_update=True)
    await servers.ensure_node_empty(session, node_id)
    await service.delete_node(session, node_id)
    return Empty()


@router.post("/{node_id}/deployment-token", response_model=Envelope[DeploymentToken])
async def deployment_token(
    node_id: str, session: SessionDep, _principal: NodeManager
) -> Envelope[DeploymentToken]:
    """A 24-hour deployment token and a new secret (the old secret stops working)."""
    issued = await service.issue_deployment_token(session, node_id)
    return ok(
        DeploymentToken(
            deployment_token=issued.deployment_token,
            secret=issued.secret,
            deploy_url=f"/api/deploy/{issued.deployment_token}",
            expires_at=issued.expires_at,
        )
    )
