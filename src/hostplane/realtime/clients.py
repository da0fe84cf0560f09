"""A client's session: subscribe to servers, receive their console, send input.

Every subscription and every ``console_input`` is checked against the
caller's rights on that server (``server.read`` for state and stats,
``control.console`` for the console and for input). Console lines reach the
client through its :class:`Outbox`; a client that cannot keep up loses lines
and is told how many, and nobody else notices.

Access is not checked once: every client message first re-checks the caller
(:class:`~hostplane.realtime.caller.LiveCaller`), and access events (a ban, a
logout, a revoked key, a removed subuser, a role change) and the token's
expiry re-check the caller and every subscription without waiting for a
message. A subscription the caller may no longer hold ends at once
(``subscription_ended``); a caller that is no longer valid gets an ``error``
frame and the socket closes with 4401.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.errors import HostplaneError, ValidationFailed
from hostplane.core.events.bus import Event
from hostplane.core.ids import new_id
from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime
from hostplane.infra.servers import commands
from hostplane.infra.servers import service as servers
from hostplane.infra.servers.models import Server
from hostplane.infra.servers.schemas import MAX_COMMAND_LENGTH
from hostplane.protocol.messages import (
    ConsoleInput,
    LinesDropped,
    Message,
    ProtocolError,
    ServerStateUpdate,
    Subscribe,
    Unsubscribe,
    dump,
    parse_message,
)
from hostplane.realtime import topics
from hostplane.realtime.caller import ACCESS_TOPICS, AccessEnded, LiveCaller
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


@dataclass(slots=True)
class _Subscription:
    pump: asyncio.Task[None]
    # What the subscription needed; re-checked whenever the caller's access may shrink.
    permissions: tuple[str, ...]


class ClientSession:
    def __init__(self, websocket: WebSocket, runtime: Runtime, caller: LiveCaller) -> None:
        self.websocket = websocket
        self.runtime = runtime
        self.caller = caller
        self.outbox = Outbox()
        self._subscriptions: dict[str, _Subscription] = {}
        self._ended: AccessEnded | None = None
        # Cleared while the caller is being re-checked after an access event:
        # nothing is delivered until the re-check has said what may still flow.
        self._delivering = asyncio.Event()
        self._delivering.set()

    async def run(self) -> None:
        writer = asyncio.create_task(self._write())
        watching = asyncio.Event()
        watcher = asyncio.create_task(self._watch(watching))
        reader = asyncio.create_task(self._read(watching))
        try:
            await asyncio.wait({reader, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tasks = [reader, watcher, writer, *(s.pump for s in self._subscriptions.values())]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._ended is not None:
            await self._close(self._ended)

    async def _close(self, ended: AccessEnded) -> None:
        """Say why, then close: nothing queued for the caller goes out after this."""
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self._error(ended.code, ended.message, None)
            await self.websocket.close(code=CLOSE_UNAUTHORIZED, reason=ended.message[:120])

    async def _write(self) -> None:
        while True:
            frame = await self.outbox.next()
            await self._delivering.wait()
            # Frames of a subscription that ended (unsubscribed, or access
            # revoked) may still be queued: they are not sent.
            if frame is not None and frame.server_id in self._subscriptions:
                await self.websocket.send_text(frame.text)
            for server_id, count in self.outbox.take_drop_reports().items():
                if server_id in self._subscriptions:
                    await self.websocket.send_text(
                        dump(LinesDropped(server_id=server_id, count=count))
                    )

    async def _watch(self, watching: asyncio.Event) -> None:
        """End what the caller may no longer have, as soon as an event says so.

        Also wakes for the token's expiry and, failing any event, every
        ``MAX_CACHE_AGE`` seconds.
        """
        async with self.runtime.bus.subscribe(*ACCESS_TOPICS, max_queue=256) as events:
            watching.set()
            while True:
                try:
                    async with asyncio.timeout(self.caller.next_check_in()):
                        event: Event | None = await events.get()
                except TimeoutError:
                    event = None
                if event is not None and not self.caller.concerns(event) and not events.dropped:
                    continue
                events.dropped = 0
                self.caller.invalidate()
                self._delivering.clear()
                try:
                    await self._recheck()
                except AccessEnded as ended:
                    self._ended = ended
                    return
                except Exception:
                    # Access that cannot be re-checked (the database is away)
                    # is not assumed to still hold: the client reconnects.
                    log.exception("gateway.access_recheck_failed")
                    self._ended = AccessEnded(
                        "UNAVAILABLE", "Access could not be checked; reconnect in a moment"
                    )
                    return
                self._delivering.set()

    async def _recheck(self) -> None:
        """Resolve the caller again and end each subscription it may no longer hold."""
        principal = await self.caller.current(fresh=True)
        for server_id, subscription in list(self._subscriptions.items()):
            try:
                await self._load(principal, server_id, subscription.permissions)
            except HostplaneError:
                await self._end_subscription(server_id)

    async def _end_subscription(self, server_id: str) -> None:
        subscription = self._subscriptions.pop(server_id, None)
        if subscription is None:
            return
        subscription.pump.cancel()
        await self.websocket.send_text(
            json.dumps(
                {
                    "type": "subscription_ended",
                    "serverId": server_id,
                    "code": "ACCESS_REVOKED",
                    "message": "You no longer have access to this server",
                }
            )
        )

    async def _read(self, watching: asyncio.Event) -> None:
        # Access events are heard from before the first message is served.
        await watching.wait()
        while True:
            try:
                raw = await self.websocket.receive_text()
            except WebSocketDisconnect:
                return
            message: Message | None = None
            try:
                try:
                    message = parse_message(raw)
                finally:
                    # Every message, even a malformed one, first re-checks the
                    # caller. Console input acts on the server: it is never let
                    # through on a cached answer, not even in the instant
                    # between a ban's commit and its event reaching this replica.
                    principal = await self.caller.current(fresh=isinstance(message, ConsoleInput))
                if isinstance(message, Subscribe):
                    await self._subscribe(principal, message)
                elif isinstance(message, Unsubscribe):
                    subscription = self._subscriptions.pop(message.server_id, None)
                    if subscription is not None:
                        subscription.pump.cancel()
                elif isinstance(message, ConsoleInput):
                    await self._console_input(principal, message)
                else:
                    raise ProtocolError(
                        f"{message.type} is not a client message", code="UNEXPECTED_MESSAGE"
                    )
            except AccessEnded as ended:
                self._ended = ended
                return
            except ProtocolError as exc:
                await self._error(exc.code, str(exc), None)
            except HostplaneError as exc:
                await self._error(exc.code, exc.message, getattr(message, "server_id", None))

    async def _error(self, code: str, message: str, server_id: str | None) -> None:
        body: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if server_id:
            body["serverId"] = server_id
        await self.websocket.send_text(json.dumps(body))

    async def _load(
        self, principal: Principal, server_id: str, permissions: tuple[str, ...]
    ) -> Server:
        async with self.runtime.unit_of_work(read_only=True) as session:
            scope_to_tenant(session, principal.tenant_id)
            return await servers.load_for(session, principal, server_id, permissions)

    async def _subscribe(self, principal: Principal, message: Subscribe) -> None:
        wants_console = "server_log" in message.events
        permissions = CONSOLE_PERMISSIONS if wants_console else READ_PERMISSIONS
        server = await self._load(principal, message.server_id, permissions)
        previous = self._subscriptions.pop(server.id, None)
        if previous is not None:
            previous.pump.cancel()
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
        self._subscriptions[server.id] = _Subscription(
            asyncio.create_task(self._pump(server.id, patterns, ready, cursor)), permissions
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
                            self.outbox.note_dropped(server_id, int(event.data.get("missed", 0)))
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
                elif event.type == "server.console_dropped":
                    self.outbox.note_dropped(server_id, int(event.data.get("count", 0)))
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
                    self.outbox.note_dropped(server_id, events.dropped)
                    events.dropped = 0

    async def _console_input(self, principal: Principal, message: ConsoleInput) -> None:
        if len(message.data.encode()) > MAX_COMMAND_LENGTH:
            raise ValidationFailed(
                f"Console input is limited to {MAX_COMMAND_LENGTH} bytes",
                details={
                    "fields": [{"field": "data", "message": f"at most {MAX_COMMAND_LENGTH} bytes"}]
                },
            )
        async with self.runtime.unit_of_work() as session:
            scope_to_tenant(session, principal.tenant_id)
            server = await servers.load_for(
                session, principal, message.server_id, CONSOLE_PERMISSIONS
            )
            commands.publish_command(
                session,
                server.node_id,
                ConsoleInput(server_id=server.id, data=message.data),
                tenant_id=server.tenant_id,
            )


async def serve_client(websocket: WebSocket, runtime: Runtime, caller: LiveCaller) -> None:
    if not caller.principal.is_authenticated:
        await websocket.close(code=CLOSE_UNAUTHORIZED)
        return
    await websocket.accept()
    with contextlib.suppress(WebSocketDisconnect):
        await ClientSession(websocket, runtime, caller).run()
