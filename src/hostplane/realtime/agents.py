"""An agent's session: handshake, then commands out and reports in.

The agent authenticates with its node id and secret (or deployment token),
sends ``node_handshake``, and from then on: commands published for its node
(``node.<id>.commands``) are forwarded to it; its reports update the servers
(state, crashes and restart policy, stats), and its console output is
published for subscribed clients on any replica and kept for ``GET .../logs``.
It may also ask: ``sftp_authorize`` is answered here, with ``response`` or
``error``, about the servers placed on its node only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from hostplane.core.clock import utcnow
from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.errors import NotFound
from hostplane.core.events.bus import Event, Subscription
from hostplane.core.ids import new_id
from hostplane.core.runtime import Runtime
from hostplane.infra.backups import service as backups
from hostplane.infra.nodes import rpc
from hostplane.infra.nodes import service as nodes
from hostplane.infra.servers import commands as server_commands
from hostplane.infra.servers import logs as server_logs
from hostplane.infra.servers import reports, sweeper
from hostplane.infra.servers import service as servers
from hostplane.infra.sftp import service as sftp
from hostplane.protocol.messages import (
    CLOSE_REPLACED,
    BackupComplete,
    ConsoleOutput,
    Error,
    HealthReport,
    Heartbeat,
    LinesDropped,
    NodeHandshake,
    NodeHandshakeResponse,
    OperationProgress,
    ProtocolError,
    Reconcile,
    ResourceStats,
    Response,
    ServerLog,
    ServerStateUpdate,
    SftpActivity,
    SftpAuthorize,
    StreamCredit,
    StreamEnd,
    StreamError,
    decode_chunk,
    dump,
    encode_chunk,
    parse_message,
)
from hostplane.realtime import topics
from hostplane.realtime.replay import Chunk, ReplayBuffer

log = structlog.get_logger(__name__)

HANDSHAKE_TIMEOUT = 10.0
# Console lines are stored in batches: one transaction per flush, not per line.
LOG_FLUSH_SECONDS = 1.0
# Heartbeats arrive every 30 s; recording each is plenty, but never more
# often than this.
SEEN_WRITE_SECONDS = 10.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_PROTOCOL = 4400


class AgentSession:
    def __init__(
        self,
        websocket: WebSocket,
        runtime: Runtime,
        node_id: str,
        tenant_id: str,
        session_id: str | None = None,
    ) -> None:
        self.websocket = websocket
        self.runtime = runtime
        self.node_id = node_id
        self.tenant_id = tenant_id
        self.session_id = session_id or new_id()
        # Set when a newer connection of the node took over from this one.
        self.replaced = False
        self._pending_logs: dict[tuple[str, str], list[str]] = {}
        self._last_seen_write = 0.0
        # Servers placed on this node: an agent speaks only for those.
        self._own: set[str] = set()
        self._recent: dict[str, ReplayBuffer] = {}
        # The agent's own requests, answered in their own tasks so that a slow
        # database does not hold up its console output.
        self._questions: set[asyncio.Task[None]] = set()

    async def run(self, sessions: Subscription) -> None:
        """Serve the agent until its socket closes; ``sessions`` hears of newer
        connections of the node (subscribed before this one announced itself)."""
        bus = self.runtime.bus
        async with (
            bus.subscribe(topics.node_commands(self.node_id)) as commands,
            bus.subscribe(topics.replay_requests(self.node_id)) as replays,
        ):
            tasks = [
                asyncio.create_task(self._forward_commands(commands)),
                asyncio.create_task(self._answer_replays(replays)),
                asyncio.create_task(self._flush_logs_periodically()),
                asyncio.create_task(self._yield_to_newer(sessions)),
            ]
            # Deletes made while the node was away, now that it can hear them.
            self._spawn(server_commands.send_pending_deletes(self.runtime, self.node_id))
            try:
                await self._read()
            finally:
                for task in [*tasks, *self._questions]:
                    task.cancel()
                await asyncio.gather(*tasks, *self._questions, return_exceptions=True)
                await self._flush_logs()

    async def _forward_commands(self, commands: Any) -> None:
        async for event in commands:
            chunk = rpc.chunk_of(event)
            if chunk is not None:
                await self.websocket.send_bytes(encode_chunk(str(event.data["streamId"]), chunk))
                continue
            message = event.data.get("message")
            if isinstance(message, dict):
                await self.websocket.send_json(message)
                request_id = message.get("requestId")
                if isinstance(request_id, str):
                    # Tells the caller (on any replica) that this node's agent is here.
                    await self.publish(
                        rpc.reply_topic(self.node_id, request_id),
                        "agent.accepted",
                        {"requestId": request_id},
                    )

    async def _yield_to_newer(self, sessions: Any) -> None:
        """Hang up when a newer connection of this node announces itself: one
        agent connection per node, so a command never reaches two agents."""
        async for event in sessions:
            if event.data.get("sessionId") in (None, self.session_id):
                continue
            self.replaced = True
            log.warning("gateway.agent_replaced", node_id=self.node_id)
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.websocket.close(
                    code=CLOSE_REPLACED, reason="another connection for this node took over"
                )
            return

    async def _answer_replays(self, requests: Any) -> None:
        async for event in requests:
            server_id, after, reply_to = (
                event.data.get("serverId"),
                event.data.get("afterSeq"),
                event.data.get("replyTo"),
            )
            if (
                not isinstance(server_id, str)
                or not isinstance(after, int)
                or not isinstance(reply_to, str)
            ):
                continue
            buffer = self._recent.get(server_id)
            chunks, missed = buffer.since(after) if buffer is not None else ([], 0)
            for chunk in chunks:
                frame = ServerLog(
                    server_id=server_id,
                    stream=chunk.stream,
                    data="\n".join(chunk.lines) + "\n",
                    timestamp=chunk.timestamp,
                    seq=chunk.seq,
                )
                await self.publish(
                    reply_to,
                    "server.console",
                    {"frame": dump(frame), "lines": len(chunk.lines), "seq": chunk.seq},
                )
            await self.publish(
                reply_to, "console.replay_done", {"serverId": server_id, "missed": missed}
            )

    async def _read(self) -> None:
        while True:
            frame = await self.websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return
            if frame.get("bytes") is not None:
                await self._chunk(frame["bytes"])
                continue
            try:
                message = parse_message(frame.get("text") or "")
            except ProtocolError as exc:
                await self.websocket.send_json(
                    {"type": "error", "code": exc.code, "message": str(exc)}
                )
                continue
            await self._handle(message)

    async def _owns(self, server_id: str) -> bool:
        if server_id in self._own:
            return True
        async with self.runtime.unit_of_work(read_only=True) as session:
            scope_to_tenant(session, self.tenant_id)
            try:
                server = await servers.get_server(session, server_id)
            except NotFound:
                server = None
        if server is None or server.node_id != self.node_id:
            log.warning("gateway.foreign_server_report", node_id=self.node_id, server_id=server_id)
            return False
        self._own.add(server_id)
        return True

    async def _chunk(self, frame: bytes) -> None:
        """Part of a stream the agent sends: for whoever opened it, on any replica."""
        try:
            stream_id, payload = decode_chunk(frame)
        except ProtocolError:
            log.warning("gateway.malformed_chunk", node_id=self.node_id)
            return
        await self.publish(
            rpc.stream_topic(self.node_id, stream_id),
            "stream.chunk",
            rpc.chunk_event(stream_id, payload).data,
        )

    async def _reply(self, message: Response | Error) -> None:
        if message.request_id is None:
            log.warning("gateway.agent_error", node_id=self.node_id, code=message.code)
            return
        await self.publish(
            rpc.reply_topic(self.node_id, message.request_id),
            "agent.reply",
            {"message": message.model_dump(mode="json", by_alias=True, exclude_none=True)},
        )

    async def _stream_control(self, message: StreamCredit | StreamEnd | StreamError) -> None:
        await self.publish(
            rpc.stream_topic(self.node_id, message.stream_id),
            "stream.control",
            {"message": message.model_dump(mode="json", by_alias=True, exclude_none=True)},
        )

    async def _handle(self, message: Any) -> None:
        if isinstance(message, Response | Error):
            await self._reply(message)
            return
        if isinstance(message, StreamCredit | StreamEnd | StreamError):
            await self._stream_control(message)
            return
        if isinstance(message, SftpAuthorize):
            # Answered even for a foreign server (with a refusal), so the
            # agent's SFTP login never waits for its timeout.
            task = asyncio.create_task(self._sftp_authorize(message))
            self._questions.add(task)
            task.add_done_callback(self._questions.discard)
            return
        server_id = getattr(message, "server_id", None)
        if server_id is not None and not await self._owns(server_id):
            return
        if isinstance(message, ConsoleOutput):
            await self._console(message)
        elif isinstance(message, LinesDropped):
            # Lines the agent no longer held when it caught up: every viewer is
            # told, as for lines a slow viewer's own queue dropped.
            await self.publish(
                topics.server_console(message.server_id),
                "server.console_dropped",
                {"count": message.count},
            )
        elif isinstance(message, ServerStateUpdate):
            await self._state(
                message.server_id, message.state, message.exit_code, message=message.message
            )
        elif isinstance(message, Reconcile):
            await self._reconcile(message)
        elif isinstance(message, ResourceStats):
            await self._stats(message)
        elif isinstance(message, SftpActivity):
            async with self.runtime.unit_of_work(read_only=True) as session:
                scope_to_tenant(session, self.tenant_id)
                line = await sftp.activity_line(session, message)
            # Kept with the console history (stream ``system``), as Catalyst logs it.
            self._pending_logs.setdefault((message.server_id, "system"), []).append(line)
        elif isinstance(message, BackupComplete):
            async with self.runtime.unit_of_work() as session:
                scope_to_tenant(session, self.tenant_id)
                await backups.apply_report(session, self.node_id, message)
        elif isinstance(message, OperationProgress):
            await self.publish(
                topics.server_progress(message.server_id),
                "server.progress",
                message.model_dump(mode="json", by_alias=True, exclude_none=True),
            )
        elif isinstance(message, Heartbeat | HealthReport):
            health = (
                message.model_dump(mode="json", by_alias=True)
                if isinstance(message, HealthReport)
                else None
            )
            await self._seen(health, force=health is not None)

    async def _sftp_authorize(self, message: SftpAuthorize) -> None:
        answer: Response | Error
        try:
            grant = await sftp.authorize(
                self.runtime,
                node_id=self.node_id,
                server_id=message.server_id,
                credential=message.credential,
                client_ip=message.client_ip,
            )
        except (sftp.SftpUnauthenticated, sftp.SftpForbidden) as exc:
            log.info(
                "gateway.sftp_refused",
                node_id=self.node_id,
                server_id=message.server_id,
                code=exc.code,
            )
            answer = Error(request_id=message.request_id, code=exc.code, message=exc.message)
        except Exception as exc:  # noqa: BLE001 - any failure is a refusal, told to the agent
            # No traceback: its frames hold the credential.
            log.error(
                "gateway.sftp_authorize_failed",
                node_id=self.node_id,
                server_id=message.server_id,
                error=type(exc).__name__,
            )
            answer = Error(
                request_id=message.request_id,
                code="UNAVAILABLE",
                message="The panel could not check this login",
            )
        else:
            log.info(
                "gateway.sftp_authorized",
                node_id=self.node_id,
                server_id=message.server_id,
                user_id=grant.user_id,
            )
            answer = Response(request_id=message.request_id, data=grant.data())
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await self.websocket.send_text(dump(answer))

    async def mark_seen(self) -> None:
        await self._seen(force=True)

    async def _seen(self, health: dict[str, Any] | None = None, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_seen_write < SEEN_WRITE_SECONDS:
            return
        self._last_seen_write = now
        async with self.runtime.unit_of_work() as session:
            await nodes.mark_seen(session, self.node_id, health)

    async def _reconcile(self, message: Reconcile) -> None:
        """The agent's servers as they are: each report applies, and a server the
        panel thinks is on its way somewhere that the agent does not know ends."""
        reported: set[str] = set()
        for server in message.servers:
            if await self._owns(server.server_id):
                reported.add(server.server_id)
                await self._state(
                    server.server_id, server.state, server.exit_code, reconciling=True
                )
        async with self.runtime.unit_of_work() as session:
            scope_to_tenant(session, self.tenant_id)
            await sweeper.settle_unreported(session, self.node_id, reported)

    async def _state(
        self,
        server_id: str,
        state: str,
        exit_code: int | None,
        *,
        message: str | None = None,
        reconciling: bool = False,
    ) -> None:
        async with self.runtime.unit_of_work() as session:
            scope_to_tenant(session, self.tenant_id)
            try:
                server = await servers.get_server(session, server_id)
            except NotFound:
                server = None
            if server is None or server.node_id != self.node_id:
                # An agent speaks only for the servers placed on its node.
                log.warning(
                    "gateway.foreign_server_report", node_id=self.node_id, server_id=server_id
                )
                return
            replies = await reports.apply_state_report(
                session, server_id, state, exit_code, message=message, reconciling=reconciling
            )
        if replies:
            # In a task: the agent's answer comes in through this very read loop.
            self._spawn(server_commands.follow_up(self.runtime, self.tenant_id, server_id, replies))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        # The coroutine is the task itself, so one cancelled before it ran (the
        # agent hung up at once) is closed, not left un-awaited.
        task = asyncio.create_task(work)
        self._questions.add(task)
        task.add_done_callback(self._questions.discard)
        task.add_done_callback(self._log_failure)

    def _log_failure(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "gateway.background_command_failed",
                node_id=self.node_id,
                error=repr(task.exception()),
            )

    async def _stats(self, message: ResourceStats) -> None:
        payload = message.model_dump(mode="json", by_alias=True, exclude_none=True)
        async with self.runtime.unit_of_work() as session:
            scope_to_tenant(session, self.tenant_id)
            await servers.record_stats(session, message.server_id, payload)
        await self.publish(topics.server_stats(message.server_id), "server.stats", payload)

    async def _console(self, message: ConsoleOutput) -> None:
        frame = ServerLog(
            server_id=message.server_id,
            stream=message.stream,
            data=message.data,
            timestamp=utcnow(),
            seq=message.seq,
        )
        lines = message.lines()
        if message.seq is not None:
            buffer = self._recent.setdefault(message.server_id, ReplayBuffer())
            buffer.add(Chunk(message.seq, message.stream, frame.timestamp, tuple(lines)))
        await self.publish(
            topics.server_console(message.server_id),
            "server.console",
            {"frame": dump(frame), "lines": len(lines), "seq": message.seq},
        )
        self._pending_logs.setdefault((message.server_id, message.stream), []).extend(lines)

    async def publish_presence(self, kind: str) -> None:
        await self.publish(rpc.presence_topic(self.node_id), kind, {"nodeId": self.node_id})

    async def publish(self, topic: str, kind: str, data: dict[str, Any]) -> None:
        try:
            await self.runtime.bus.publish(Event(kind, data, tenant_id=self.tenant_id), topic=topic)
        except ConnectionError as exc:
            log.warning("gateway.publish_failed", topic=topic, error=str(exc))

    async def _flush_logs_periodically(self) -> None:
        while True:
            await asyncio.sleep(LOG_FLUSH_SECONDS)
            await self._flush_logs()

    async def _flush_logs(self) -> None:
        if not self._pending_logs:
            return
        pending, self._pending_logs = self._pending_logs, {}
        try:
            async with self.runtime.unit_of_work() as session:
                for (server_id, stream), lines in pending.items():
                    await server_logs.append_console(session, server_id, stream, lines)
        except Exception:
            log.exception("gateway.log_store_failed", node_id=self.node_id)


async def serve_agent(websocket: WebSocket, runtime: Runtime, node_id: str, token: str) -> None:
    async with runtime.unit_of_work() as session:
        node = await nodes.authenticate_node(session, node_id, token)
        tenant_id = node.tenant_id if node is not None else None
    if node is None or tenant_id is None:
        await websocket.close(code=CLOSE_UNAUTHORIZED)
        return
    await websocket.accept()
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            first = parse_message(await websocket.receive_text())
    except (TimeoutError, ProtocolError, WebSocketDisconnect):
        with contextlib.suppress(RuntimeError):
            await websocket.close(code=CLOSE_PROTOCOL)
        return
    if not isinstance(first, NodeHandshake) or first.node_id != node_id:
        await websocket.close(code=CLOSE_PROTOCOL)
        return
    await websocket.send_text(dump(NodeHandshakeResponse(node_id=node_id)))
    session_id = new_id()
    agent = AgentSession(websocket, runtime, node_id, tenant_id, session_id)
    try:
        # Listening before announcing: of two connections racing, the one that
        # announces last stays and the other hears of it.
        async with runtime.bus.subscribe(topics.agent_sessions(node_id)) as sessions:
            async with runtime.unit_of_work() as session:
                await nodes.mark_connected(session, node_id, session_id)
            # An older connection of this node, here or on another replica, hangs up.
            await agent.publish(
                topics.agent_sessions(node_id), "agent.session_started", {"sessionId": session_id}
            )
            log.info("gateway.agent_connected", node_id=node_id)
            await agent.run(sessions)
    finally:
        log.info("gateway.agent_disconnected", node_id=node_id, replaced=agent.replaced)
        # Offline at once (not after the heartbeat window): commands to it
        # answer 503 right away instead of waiting for an agent that is gone.
        with contextlib.suppress(Exception):
            async with runtime.unit_of_work() as session:
                await nodes.mark_disconnected(session, node_id, session_id)
        if not agent.replaced:
            # Whoever waits on this node's answers or streams stops waiting now
            # (a replaced connection's node is still online, on the newer one).
            await agent.publish_presence("node.disconnected")
