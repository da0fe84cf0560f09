"""The agent's connection to the panel: dial out, handshake, serve requests.

The agent dials ``ws(s)://panel/ws?nodeId=..&token=..`` (so nodes behind NAT
work), sends ``node_handshake`` and waits for ``node_handshake_response``,
then ``reconcile`` with every server's real state. While connected it sends
a ``heartbeat`` every ``heartbeat_interval``, ``health_report`` every
``health_interval``, ``resource_stats`` of running servers every
``stats_interval`` and forwards the runtime's events (batched
``console_output`` with sequence numbers, ``server_state_update``,
``lines_dropped``). Panel requests run in their own tasks; a request with a
``requestId`` is answered with ``response`` or ``error``. The agent asks the
panel too (an SFTP login, :mod:`hostplane.agent.asks`): the answers to its
questions are taken out of the stream before dispatch.

A lost connection is redialled with exponential backoff and full jitter
(between half and all of ``min(max_delay, min_delay * 2**attempt)``); the
attempt counter resets after a successful handshake. Servers keep running
meanwhile and their output waits in the runtime (and the supervisors' ring
logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection, connect

from hostplane.agent import sysinfo
from hostplane.agent.asks import PanelQuestions
from hostplane.agent.config import AgentSettings
from hostplane.agent.disk import MB, recorded_limits
from hostplane.agent.files.errors import DiskLimitExceeded
from hostplane.agent.handlers.backups import BackupHandlers
from hostplane.agent.handlers.context import HandlerContext, ServerBusy
from hostplane.agent.handlers.files import FileHandlers
from hostplane.agent.handlers.transfers import TransferHandlers
from hostplane.agent.peers import PeerListener
from hostplane.agent.runtime import (
    AgentRuntimeError,
    InstallFailed,
    LaunchSpec,
    LinesLost,
    OutputBatch,
    RuntimeEvent,
    ServerAlreadyRunning,
    ServerNotRunning,
    StateChange,
)
from hostplane.agent.runtimes import ServerRuntime
from hostplane.agent.sftp import SftpService
from hostplane.agent.streams import StreamHub
from hostplane.protocol import (
    CLOSE_REPLACED,
    ConsoleInput,
    ConsoleOutput,
    DeleteServer,
    Error,
    ExecuteCommand,
    HealthReport,
    Heartbeat,
    InstallServer,
    KillServer,
    LinesDropped,
    Message,
    NodeHandshake,
    NodeHandshakeResponse,
    ProtocolError,
    Reconcile,
    ReconciledServer,
    ResourceStats,
    Response,
    RestartServer,
    ServerState,
    ServerStateUpdate,
    StartServer,
    StopServer,
    StreamCredit,
    StreamEnd,
    StreamError,
    WireModel,
    dump,
    parse_message,
    request_id_of,
)

logger = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
# Reconnect delays stop doubling here (reconnect_max_delay caps them anyway).
MAX_ATTEMPT = 30


class HandshakeRejected(Exception):
    """The panel answered the handshake with an error."""


class AgentConnection:
    """One agent's link to the panel. ``await run()`` until :meth:`close`."""

    def __init__(self, settings: AgentSettings, runtime: ServerRuntime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.connected = asyncio.Event()
        self.handshakes = 0
        self._ws: ClientConnection | None = None
        self._closing = asyncio.Event()
        self._pending: RuntimeEvent | None = None
        self._requests: set[asyncio.Task[None]] = set()
        # Servers whose install runs now, and state updates the panel missed.
        self._installing: set[str] = set()
        self._undelivered: dict[str, ServerStateUpdate] = {}
        self._host_cpu = sysinfo.host_cpu_sample()
        self.streams = StreamHub(self.send, self._send_bytes)
        self.peers = PeerListener(settings)
        self.questions = PanelQuestions(self.send)
        self.context = context = HandlerContext(
            settings=settings,
            streams=self.streams,
            send=self.send,
            server_dir=runtime.server_dir,
            is_running=self._is_running,
            peers=self.peers,
            file_owner=runtime.file_owner,
        )
        self.sftp = SftpService(
            settings,
            runtime.server_dir,
            self.questions.ask,
            busy=context.busy.get,
            report=context.notify,
            disk=context.disk,
            file_owner=runtime.file_owner,
        )
        context.disk.recorded_limit = recorded_limits(getattr(runtime, "run_dir", None))
        self._disk_stops: set[asyncio.Task[None]] = set()
        self._handlers: dict[type[WireModel], Callable[[Any], Awaitable[Any]]] = {
            **FileHandlers(context).handlers(),
            **BackupHandlers(context).handlers(),
            **TransferHandlers(context).handlers(),
        }

    async def _is_running(self, server_id: str) -> bool:
        return (await self.runtime.status(server_id)).running

    def url(self) -> str:
        query = urlencode(
            {"nodeId": self.settings.node_id, "token": self.settings.token.get_secret_value()}
        )
        separator = "&" if "?" in self.settings.panel_url else "?"
        return f"{self.settings.panel_url}{separator}{query}"

    async def close(self) -> None:
        """Hang up and stop reconnecting; the servers keep running."""
        self._closing.set()
        if self._ws is not None:
            await self._ws.close()

    async def run(self) -> None:
        # The peer listener (direct transfers from other nodes) and the SFTP
        # server live as long as the agent, whatever happens to the panel
        # connection (SFTP logins are refused while it is down).
        await self.peers.start()
        await self.sftp.start()
        try:
            await self._run()
        finally:
            await self.sftp.close()
            await self.peers.close()

    async def _run(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            try:
                async with connect(self.url(), max_size=2**24, open_timeout=10) as ws:
                    self._ws = ws
                    await self._handshake(ws)
                    attempt = 0
                    await self._session(ws)
            except websockets.ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == CLOSE_REPLACED:
                    # Another agent with this node's identity is connected: the
                    # panel talks to one. Retry slowly, in case that one goes.
                    logger.error(
                        "the panel took this node's connection over for another agent "
                        "process with the same node id; retrying in up to %.0f s",
                        self.settings.reconnect_max_delay,
                    )
                    attempt = MAX_ATTEMPT
                else:
                    logger.warning("panel connection lost: %s", exc)
            except (OSError, TimeoutError, websockets.WebSocketException, ProtocolError) as exc:
                logger.warning("panel connection lost: %s", exc)
            except HandshakeRejected as exc:
                logger.error("panel refused the handshake: %s", exc)
            finally:
                self._ws = None
                self.connected.clear()
                self.questions.connection_lost()
                self.streams.abort_all("the panel connection was lost")
            if self._closing.is_set():
                break
            ceiling = min(
                self.settings.reconnect_max_delay,
                self.settings.reconnect_min_delay * 2**attempt,
            )
            attempt = min(attempt + 1, MAX_ATTEMPT)
            delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    async def _handshake(self, ws: ClientConnection) -> None:
        await ws.send(
            dump(
                NodeHandshake(
                    node_id=self.settings.node_id,
                    token=self.settings.token.get_secret_value(),
                    version=AGENT_VERSION,
                )
            )
        )
        raw = await asyncio.wait_for(ws.recv(), self.settings.handshake_timeout)
        answer = parse_message(raw)
        if isinstance(answer, Error):
            raise HandshakeRejected(f"{answer.code}: {answer.message}")
        if not isinstance(answer, NodeHandshakeResponse):
            raise HandshakeRejected(f"expected node_handshake_response, got {answer.type}")
        self.handshakes += 1
        await self.send(await self.reconcile())
        # Ends the panel did not hear (an install that finished while away).
        for server_id, update in list(self._undelivered.items()):
            await self.send(update)
            self._undelivered.pop(server_id, None)
        self.questions.available = True
        self.connected.set()

    async def reconcile(self) -> Reconcile:
        servers = [
            ReconciledServer(server_id=server_id, state="installing")
            for server_id in sorted(self._installing)
        ]
        for status in await self.runtime.list_servers():
            if status.state == "unknown" or status.server_id in self._installing:
                continue
            servers.append(
                ReconciledServer(
                    server_id=status.server_id,
                    state=_state(status.state),
                    pid=status.pid if status.running else None,
                    exit_code=status.exit_code,
                    last_seq=status.last_seq,
                )
            )
        return Reconcile(servers=servers)

    async def send(self, message: WireModel) -> None:
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected to the panel")
        await ws.send(dump(message))

    async def _send_bytes(self, frame: bytes) -> None:
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected to the panel")
        await ws.send(frame)

    async def _session(self, ws: ClientConnection) -> None:
        tasks = [
            asyncio.create_task(self._receive(ws)),
            asyncio.create_task(self._every(self.settings.heartbeat_interval, self._heartbeat)),
            asyncio.create_task(self._every(self.settings.health_interval, self._health)),
            asyncio.create_task(self._every(self.settings.stats_interval, self._stats)),
            asyncio.create_task(self._forward()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc

    async def _every(self, interval: float, action: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval)
            await action()

    async def _heartbeat(self) -> None:
        await self.send(Heartbeat())

    async def _health(self) -> None:
        sample = sysinfo.host_cpu_sample()
        cpu = sysinfo.host_cpu_percent(self._host_cpu, sample)
        self._host_cpu = sample
        used, total = sysinfo.memory_mb()
        disk_used, disk_total = sysinfo.disk_mb(self.runtime.data_dir)
        running = [s for s in await self.runtime.list_servers() if s.running]
        await self.send(
            HealthReport(
                node_id=self.settings.node_id,
                cpu_percent=round(cpu, 2),
                memory_usage_mb=round(used, 1),
                memory_total_mb=round(total, 1),
                disk_usage_mb=round(disk_used, 1),
                disk_total_mb=round(disk_total, 1),
                container_count=len(running),
                uptime_seconds=sysinfo.uptime_seconds(),
            )
        )

    async def _stats(self) -> None:
        for server_id in self.runtime.attached():
            try:
                stats = await self.runtime.stats(server_id)
            except AgentRuntimeError:
                continue
            # Both runtimes keep the server's files in its folder on this host
            # (the container's is a bind mount), so one walk measures either.
            used = await asyncio.to_thread(self.context.disk.used, server_id)
            await self.send(
                ResourceStats(
                    server_id=server_id,
                    cpu=stats.cpu_percent,
                    memory_mb=stats.memory_mb,
                    disk_usage_mb=round(used / MB, 2),
                )
            )
            self._enforce_disk(server_id)

    async def _check_disk(self, message: StartServer | RestartServer) -> None:
        """Refuse to start a server over its disk allocation, saying why on its
        console and in its state (a running server asked to restart is stopped)."""
        server_id = message.server_id
        try:
            await asyncio.to_thread(
                self.context.disk.check_start, server_id, message.allocated_disk_mb
            )
        except DiskLimitExceeded as exc:
            if isinstance(message, RestartServer):
                with contextlib.suppress(AgentRuntimeError):
                    await self.runtime.stop(
                        server_id,
                        stop_timeout=message.timeout_seconds or self.settings.stop_timeout,
                        term_timeout=self.settings.term_timeout,
                    )
            reason = str(exc)
            await self.send(ConsoleOutput(server_id=server_id, stream="system", data=reason + "\n"))
            await self.send(ServerStateUpdate(server_id=server_id, state="stopped", message=reason))
            raise

    def _enforce_disk(self, server_id: str) -> None:
        """Stop a running server whose files exceed its allocation, as Wings does."""
        reason = self.context.disk.excess(server_id)
        if reason is None or any(t.get_name() == server_id for t in self._disk_stops):
            return
        task = asyncio.create_task(self._stop_over_disk(server_id, reason), name=server_id)
        self._disk_stops.add(task)
        task.add_done_callback(self._disk_stops.discard)

    async def _stop_over_disk(self, server_id: str, reason: str) -> None:
        logger.warning("server %s: %s", server_id, reason)
        with contextlib.suppress(ConnectionError, websockets.WebSocketException):
            await self.send(ConsoleOutput(server_id=server_id, stream="system", data=reason + "\n"))
        with contextlib.suppress(AgentRuntimeError):
            await self.runtime.stop(
                server_id,
                stop_timeout=self.settings.stop_timeout,
                term_timeout=self.settings.term_timeout,
            )

    async def _forward(self) -> None:
        while True:
            if self._pending is None:
                self._pending = await self.runtime.next_event()
            await self.send(_event_message(self._pending))
            self._pending = None

    async def _receive(self, ws: ClientConnection) -> None:
        async for raw in ws:
            try:
                if isinstance(raw, bytes):
                    # Stream chunks are handled in arrival order, never in a task.
                    self.streams.on_frame(raw)
                    continue
                message = parse_message(raw)
            except ProtocolError as exc:
                await self.send(Error(code=exc.code, message=exc.message))
                continue
            if isinstance(message, StreamCredit | StreamEnd | StreamError):
                self.streams.on_control(message)
                continue
            if isinstance(message, Response | Error) and self.questions.deliver(message):
                continue
            task = asyncio.create_task(self._handle(message))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)

    async def _handle(self, message: Message) -> None:
        request_id = request_id_of(message)
        try:
            data = await self.dispatch(message)
        except AgentRuntimeError as exc:
            await self._answer(Error(request_id=request_id, code=exc.code, message=str(exc)))
            return
        except (ConnectionError, websockets.WebSocketException):
            return
        except Exception:
            # Details (paths of this host, tracebacks) stay in the agent's log.
            logger.exception("request %s failed", message.type)
            await self._answer(
                Error(
                    request_id=request_id,
                    code="AGENT_ERROR",
                    message=f"the node could not carry out {message.type}",
                )
            )
            return
        if request_id is not None:
            await self._answer(Response(request_id=request_id, data=data))

    async def _answer(self, message: Response | Error) -> None:
        with contextlib.suppress(ConnectionError, websockets.WebSocketException):
            await self.send(message)

    async def dispatch(self, message: Message) -> Any:
        """Carry out one panel message; the return value is the response's ``data``."""
        runtime = self.runtime
        settings = self.settings
        if isinstance(message, InstallServer | StartServer | RestartServer):
            # Not while a restore or an export holds the server's files.
            self.context.ensure_idle(message.server_id)
        if isinstance(message, InstallServer):
            return await self._install(message)
        if isinstance(message, StartServer | RestartServer):
            await self._check_disk(message)
        if isinstance(message, StartServer):
            await self.send(ServerStateUpdate(server_id=message.server_id, state="starting"))
            status = await runtime.start(
                message.server_id,
                message.template.start_command,
                env=message.environment,
                stop_command=message.effective_stop_command(),
                spec=launch_spec(message),
            )
            return {"pid": status.pid, "sandbox": status.sandbox}
        if isinstance(message, StopServer):
            # Answered once the stop is under way (a graceful stop may take
            # minutes); the exit is reported as a state update.
            status = await runtime.stop(
                message.server_id,
                stop_timeout=message.timeout_seconds or settings.stop_timeout,
                term_timeout=settings.term_timeout,
                wait=False,
            )
            return {"state": status.state}
        if isinstance(message, RestartServer):
            if not (await runtime.status(message.server_id)).running:
                raise ServerNotRunning(f"server {message.server_id} is not running")
            self._background(
                message.server_id,
                runtime.restart(
                    message.server_id,
                    stop_timeout=message.timeout_seconds or settings.stop_timeout,
                    term_timeout=settings.term_timeout,
                ),
            )
            return {"accepted": True}
        if isinstance(message, DeleteServer):
            self.context.ensure_idle(message.server_id)
            if message.server_id in self._installing:
                raise ServerBusy("the server is busy (install)")
            if (await runtime.status(message.server_id)).running:
                # The panel has deleted it: nothing of it may keep running.
                await runtime.kill(message.server_id)
            await runtime.forget(message.server_id)
            await self._remove_files(message.server_id)
            return {"deleted": True}
        if isinstance(message, KillServer):
            status = await runtime.kill(message.server_id)
            return {"state": status.state, "exitCode": status.exit_code}
        if isinstance(message, ConsoleInput):
            await runtime.send_input(message.server_id, message.data)
            return None
        if isinstance(message, ExecuteCommand):
            await runtime.send_input(message.server_id, message.command + "\n")
            return None
        if isinstance(message, NodeHandshakeResponse | Heartbeat | Response | Error):
            return None
        handler = self._handlers.get(type(message))
        if handler is not None:
            return await handler(message)
        raise NotSupported(f"{message.type} is not supported by this agent yet")

    async def _remove_files(self, server_id: str) -> None:
        """A deleted server's files, backups and staged transfer go with it."""
        data_dir = Path(self.settings.data_dir)
        for folder in (
            self.runtime.server_dir(server_id),
            data_dir / "backups" / server_id,
            data_dir / "transfers" / server_id,
        ):
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def _install(self, message: InstallServer) -> Any:
        """Accept the install and run it in the background: it may take far longer
        than a request waits. Its end is always reported: ``stopped`` (ready) or
        ``install_failed`` with the reason, whatever went wrong."""
        server_id = message.server_id
        if server_id in self._installing:
            raise ServerBusy("the server is busy (install)")
        if (await self.runtime.status(server_id)).running:
            raise ServerAlreadyRunning(f"server {server_id} is running")
        self._installing.add(server_id)
        task = asyncio.create_task(self._run_install(message))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)
        return {"accepted": True}

    async def _run_install(self, message: InstallServer) -> None:
        server_id = message.server_id
        script = message.script()
        end: ServerStateUpdate
        # The script writes the server's files: measured afresh before and after.
        self.context.disk.invalidate(server_id)
        try:
            if script:
                async for batch in self.runtime.install(
                    server_id, script, env=message.merged_environment(), spec=launch_spec(message)
                ):
                    with contextlib.suppress(ConnectionError, websockets.WebSocketException):
                        await self.send(
                            ConsoleOutput(
                                server_id=server_id, stream="system", data=_join(batch.lines)
                            )
                        )
        except InstallFailed as exc:
            end = ServerStateUpdate(
                server_id=server_id,
                state="install_failed",
                message=str(exc),
                exit_code=exc.exit_code,
            )
        except AgentRuntimeError as exc:
            end = ServerStateUpdate(server_id=server_id, state="install_failed", message=str(exc))
        except Exception:
            logger.exception("install of %s failed", server_id)
            end = ServerStateUpdate(
                server_id=server_id,
                state="install_failed",
                message="the node could not run the install",
            )
        else:
            end = ServerStateUpdate(server_id=server_id, state="stopped", exit_code=0)
        finally:
            self._installing.discard(server_id)
            self.context.disk.invalidate(server_id)
        await self._report(end)

    def _background(self, server_id: str, work: Awaitable[Any]) -> None:
        """Run a command past its answer; a failure is reported as the server's state."""

        async def run() -> None:
            try:
                await work
            except Exception as exc:
                if not isinstance(exc, AgentRuntimeError):
                    logger.exception("background work on %s failed", server_id)
                status = await self.runtime.status(server_id)
                await self._report(
                    ServerStateUpdate(
                        server_id=server_id,
                        state=_state(status.state),
                        exit_code=status.exit_code,
                        message=str(exc)
                        if isinstance(exc, AgentRuntimeError)
                        else "the node could not carry out the command",
                    )
                )

        task = asyncio.create_task(run())
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _report(self, update: ServerStateUpdate) -> None:
        """Send ``update`` now, or right after the next handshake if the panel is away."""
        try:
            await self.send(update)
        except (ConnectionError, websockets.WebSocketException):
            self._undelivered[update.server_id] = update


class NotSupported(AgentRuntimeError):
    code = "NOT_SUPPORTED"


def launch_spec(message: StartServer | InstallServer) -> LaunchSpec:
    """The container settings a start or install message carries."""
    bindings: dict[int, int] = {}
    for container_port, host_port in message.port_bindings.items():
        with contextlib.suppress(ValueError):
            bindings[int(container_port)] = host_port
    install_image = message.template.install_image if isinstance(message, InstallServer) else None
    return LaunchSpec(
        image=message.template.docker_image,
        install_image=install_image,
        port_bindings=bindings,
        memory_mb=message.allocated_memory_mb,
        cpu_cores=message.allocated_cpu_cores,
        disk_mb=message.allocated_disk_mb,
        primary_port=message.primary_port,
        container_name=message.container_name,
    )


def _join(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def _state(value: str) -> ServerState:
    states: dict[str, ServerState] = {
        "stopped": "stopped",
        "installing": "installing",
        "starting": "starting",
        "running": "running",
        "stopping": "stopping",
        "crashed": "crashed",
        "suspended": "suspended",
        "install_failed": "install_failed",
    }
    return states.get(value, "stopped")


def _event_message(event: RuntimeEvent) -> WireModel:
    if isinstance(event, OutputBatch):
        stream = "stderr" if event.stream == "stderr" else "stdout"
        return ConsoleOutput(
            server_id=event.server_id, stream=stream, data=_join(event.lines), seq=event.seq
        )
    if isinstance(event, LinesLost):
        return LinesDropped(server_id=event.server_id, count=event.count)
    if not isinstance(event, StateChange):  # pragma: no cover - exhaustive
        raise TypeError(f"unknown runtime event {event!r}")
    return ServerStateUpdate(
        server_id=event.server_id,
        state=_state(event.state),
        exit_code=event.exit_code,
        message=event.message,
    )
