"""``/ws``: one endpoint for agents (``nodeId`` + ``token``) and clients (``token``)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from hostplane.core.errors import HostplaneError
from hostplane.core.runtime import Runtime
from hostplane.realtime.agents import serve_agent
from hostplane.realtime.clients import CLOSE_UNAUTHORIZED, serve_client

router = APIRouter(tags=["realtime"])


@router.websocket("/ws")
async def websocket_gateway(websocket: WebSocket) -> None:
    runtime: Runtime = websocket.app.state.runtime
    node_id = websocket.query_params.get("nodeId")
    token = websocket.query_params.get("token") or ""
    if node_id:
        await serve_agent(websocket, runtime, node_id, token)
        return
    try:
        principal = await runtime.authenticate(websocket, runtime)
    except HostplaneError:
        await websocket.close(code=CLOSE_UNAUTHORIZED)
        return
    await serve_client(websocket, runtime, principal)
