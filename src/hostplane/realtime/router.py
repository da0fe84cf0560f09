"""``/ws``: one endpoint for agents (``nodeId`` + ``token``) and clients (``token``)."""

from __future__ import annotations

from fastapi import APIRouter, Request, WebSocket
from pydantic import Field

from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.errors import Forbidden, HostplaneError
from hostplane.core.http.deps import Authenticated, RuntimeDep, SessionDep
from hostplane.core.http.envelope import Envelope, ok
from hostplane.core.runtime import Runtime
from hostplane.core.schemas import ApiModel
from hostplane.identity.auth.sessions import access_token_for
from hostplane.identity.users.service import get_user
from hostplane.infra.servers import service as servers
from hostplane.realtime.agents import serve_agent
from hostplane.realtime.caller import LiveCaller
from hostplane.realtime.clients import CLOSE_UNAUTHORIZED, serve_client

router = APIRouter(tags=["realtime"])
api_router = APIRouter(tags=["realtime"])

CONSOLE_PERMISSIONS = ("control.console", "server.console", "websocket.connect")


class ConsoleAccess(ApiModel):
    """QeinTech's ``GET /servers/:id/websocket``: where to connect, and with what."""

    url: str = Field(description="The WebSocket endpoint; connect with ?token=...")
    token: str = Field(description="A fresh access token of the caller's session.")
    expires_in: int
    server_id: str


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
    # The socket keeps its credential to re-check the caller for as long as it is open.
    await serve_client(websocket, runtime, LiveCaller(runtime, websocket, principal))


@api_router.get("/api/servers/{server_id}/websocket", response_model=Envelope[ConsoleAccess])
async def console_access(
    server_id: str,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    principal: Authenticated,
) -> Envelope[ConsoleAccess]:
    """The console's WebSocket URL and a token for it (the caller needs console rights on the server).

    API keys connect with the key itself (``/ws?token=hp_...``), so this is for users.
    """
    server = await servers.load_for(session, principal, server_id, CONSOLE_PERMISSIONS)
    if principal.kind != "user" or principal.user_id is None or principal.session_id is None:
        raise Forbidden("API keys connect to /ws with the key itself", code="USER_REQUIRED")
    scope_to_tenant(session, principal.tenant_id)
    user = await get_user(session, principal.user_id)
    token, ttl = await access_token_for(session, runtime, user, principal.session_id)
    return ok(
        ConsoleAccess(
            url=_websocket_url(request, runtime), token=token, expires_in=ttl, server_id=server.id
        )
    )


def _websocket_url(request: Request, runtime: Runtime) -> str:
    public = runtime.settings.public_url
    base = public.rstrip("/") if public else str(request.base_url).rstrip("/")
    return base.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/ws"
