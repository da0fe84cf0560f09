"""A client's session: subscribe to servers, receive their console, send input.

Every subscription and every ``console_input`` is checked against the
caller's rights on that server (``server.read`` for state and stats,
``control.console`` for the console and for input). Console lines reach the
client through its :class:`Outbox`; a client that cannot keep up loses lines
and is told how many, and nobody else notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.errors import HostplaneError
from hostplane.core.events.bus import Event
from hostplane.core.ids import new_id
from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime
from hostplane.infra.servers import commands
from hostplane.infra.servers import service as servers
from hostplane.infra.servers.models import Server
from hostplane.protocol.messages import (
    ConsoleInput,
    LinesDropped,
    ProtocolError,
    ServerStateUpdate,
    Subscribe,
    Unsubscribe,
    dump,
    parse_message,
)
from hostplane.realtime import topics
from hostplane.realtime.outbox import Frame, Outbox

log = structlog.get_logger(__name__)

CLOSE_UNAUTHORIZED = 4401
CONSOLE_PERMISSIONS = ("control.console", "server.console")
READ_PERMISSIONS = ("server.read", "control.console", "server.console")


REPLAY_TIMEOUT = 2.0


class _Cursor:
    """The last console sequence a client has, and whether live lines may flow."""

    def __init__(self, seq: int | None) -> None:
        self.seq = seq
        self.live = asyncio.Event()


class ClientSession:
    def __init__(self, websocket: WebSocket, runtime: Runtime, principal: Principal) -> None:
        self.websocket = websocket
        self.runtime = runtime
        self.principal = principal
        self.outbox = Outbox()
        self._subscriptions: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        writer = asyncio.create_task(self._write())
        try:
            await self._read()
        finally:
            for task in self._subscriptions.values():
                task.cancel()
            writer.cancel()
            await asyncio.gather(writer, *self._subscriptions.values(), return_exceptions=True)

    async def _write(self) -> None:
        while True:
            frame = await self.outbox.next()
            await self.websocket.send_text(frame.text)
            for server_id, count in self.outbox.take_drop_reports().items():
                await self.websocket.send_text(dump(LinesDropped(server_id=server_id, count=count)))

    async def _read(self) -> None:
        while True:
            try:
                raw = await self.websocket.receive_text()
            except WebSocketDisconnect:
                return
            try:
                message = parse_message(raw)
                if isinstance(message, Subscribe):
                    await self._subscribe(message)
                elif isinstance(message, Unsubscribe):
                    task = self._subscriptions.pop(message.server_id, None)
                    if task is not None:
                        task.cancel()
                elif isinstance(message, ConsoleInput):
                    await self._console_input(message)
                else:
                    raise ProtocolError(
                        f"{message.type} is not a client message", code="UNEXPECTED_MESSAGE"
                    )
            except ProtocolError as exc:
                await self._error(exc.code, str(exc), None)
            except HostplaneError as exc:
                await self._error(exc.code, exc.message, getattr(message, "server_id", None))

    async def _error(self, code: str, message: str, server_id: str | None) -> None:
        body: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if server_id:
            body["serverId"] = server_id
        await self.websocket.send_text(json.dumps(body))

    async def _load(self, server_id: str, permissions: tuple[str, ...]) -> Server:
        async with self.runtime.unit_of_work(read_only=True) as session:
            scope_to_tenant(session, self.principal.tenant_id)
            return await servers.load_for(session, self.principal, server_id, permissions)

    async def _subscribe(self, message: Subscribe) -> None:
        wants_console = "server_log" in message.events
        server = await self._load(
            message.server_id, CONSOLE_PERMISSIONS if wants_console else READ_PERMISSIONS
        )
        previous = self._subscriptions.pop(server.id, None)
        if previous is not None:
            previous.cancel()
        patterns = []
        if wants_console:
            patterns.append(topics.server_console(server.id))
        if "server_state_update" in message.events:
            patterns.append(topics.server_state(server.id))
        if "resource_stats" in message.events:
            patterns.append(topics.server_stats(server.id))
        if "operation_progress" in message.events:
            patterns.append(topics.server_progress(server.id))
        ready = asyncio.Event()
        # Live lines wait behind the replay; those it already delivered are skipped.
        cursor = _Cursor(message.last_seq if wants_console else None)
        self._subscriptions[server.id] = asyncio.create_task(
            self._pump(server.id, patterns, ready, cursor)
        )
        await ready.wait()
        if cursor.seq is not None:
            await self._replay(server.id, server.node_id, cursor)
        cursor.live.set()
        await self.websocket.send_text(
            json.dumps(
                {"type": "subscribed", "serverId": server.id, "events": list(message.events)}
            )
        )

    async def _replay(self, server_id: str, node_id: str, cursor: _Cursor) -> None:
        """Ask the replica holding the agent for the lines after ``cursor.seq``."""
        reply_to = f"replay.{new_id()}"
        async with self.runtime.bus.subscribe(reply_to) as replies:
            request = {"serverId": server_id, "afterSeq": cursor.seq, "replyTo": reply_to}
            await self.runtime.bus.publish(
                Event("console.replay_requested", request), topic=topics.replay_requests(node_id)
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REPLAY_TIMEOUT):
                    async for event in replies:
                        if event.type == "console.replay_done":
                            if missed := int(event.data.get("missed", 0)):
                                self.outbox.dropped[server_id] += missed
                            return
                        self._offer_console(server_id, event.data, cursor)

    def _offer_console(self, server_id: str, data: dict[str, Any], cursor: _Cursor) -> None:
        lines = int(data.get("lines", 1))
        seq = data.get("seq")
        if isinstance(seq, int) and cursor.seq is not None:
            if seq + lines - 1 <= cursor.seq:
                return  # already delivered by the replay
            cursor.seq = max(cursor.seq, seq + lines - 1)
        self.outbox.offer(Frame(server_id, str(data["frame"]), lines))

    async def _pump(
        self, server_id: str, patterns: list[str], ready: asyncio.Event, cursor: _Cursor
    ) -> None:
        async with self.runtime.bus.subscribe(*patterns, max_queue=4096) as events:
            ready.set()
            async for event in events:
                if event.type == "server.console":
                    await cursor.live.wait()
                    self._offer_console(server_id, event.data, cursor)
                elif event.type == "server.state_changed":
                    update = ServerStateUpdate(
                        server_id=server_id,
                        state=event.data["state"],
                        previous_state=event.data.get("previous"),
                        message=event.data.get("message"),
                    )
                    self.outbox.offer(Frame(server_id, dump(update)))
                elif event.type == "server.stats":
                    self.outbox.offer(
                        Frame(server_id, json.dumps({"type": "resource_stats"} | event.data))
                    )
                elif event.type == "server.progress":
                    # Addition: install, backup, restore and transfer progress.
                    self.outbox.offer(
                        Frame(server_id, json.dumps(event.data | {"type": "operation_progress"}))
                    )
                if events.dropped:
                    self.outbox.dropped[server_id] += events.dropped
                    events.dropped = 0

    async def _console_input(self, message: ConsoleInput) -> None:
        async with self.runtime.unit_of_work() as session:
            scope_to_tenant(session, self.principal.tenant_id)
            server = await servers.load_for(
                session, self.principal, message.server_id, CONSOLE_PERMISSIONS
            )
            commands.publish_command(
                session,
                server.node_id,
                ConsoleInput(server_id=server.id, data=message.data),
                tenant_id=server.tenant_id,
            )


async def serve_client(websocket: WebSocket, runtime: Runtime, principal: Principal) -> None:
    if not principal.is_authenticated:
        await websocket.close(code=CLOSE_UNAUTHORIZED)
        return
    await websocket.accept()
    with contextlib.suppress(WebSocketDisconnect):
        await ClientSession(websocket, runtime, principal).run()
