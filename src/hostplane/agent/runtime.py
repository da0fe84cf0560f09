"""The process runtime: what the agent's panel connection calls to run servers.

Every running server belongs to its own detached supervisor process (see
:mod:`hostplane.agent.supervisor`); this object only talks to supervisors
through their UNIX sockets. Discarding it, or killing the agent, leaves the
servers running; a new :class:`ProcessRuntime` finds them again with
:meth:`ProcessRuntime.reattach` and continues their output from the
sequence number it asks for.

Layout under the agent's data folder::

    servers/<server id>/     the server's files (its working directory)
    run/<server id>/         spec.json, state.json, console.log, supervisor.sock
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hostplane.agent import sysinfo
from hostplane.agent.config import DEFAULT_UID_BASE, DEFAULT_UID_COUNT
from hostplane.agent.isolation import (
    FolderNotGiven,
    Identity,
    ServerUids,
    UidsExhausted,
    give_folder,
    is_root,
    user_namespaces_available,
)
from hostplane.agent.sandbox import CommandLine, SandboxError, build_launch, bwrap_path
from hostplane.agent.supervisor import (
    SOCKET_NAME,
    SPEC_NAME,
    STATE_NAME,
    read_json,
    socket_address,
    write_json_atomic,
)

SERVER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_CONTROL_TIMEOUT = 10.0
LAST_START = "last-start.json"


class AgentRuntimeError(Exception):
    """Base class of the runtime's errors; ``code`` goes into protocol errors."""

    code = "RUNTIME_ERROR"


class ServerNotRunning(AgentRuntimeError):
    code = "NOT_RUNNING"


class ServerAlreadyRunning(AgentRuntimeError):
    code = "ALREADY_RUNNING"


class InvalidServerId(AgentRuntimeError):
    code = "INVALID_SERVER_ID"


class SandboxUnavailable(AgentRuntimeError):
    """Servers may not run here: no sandbox, and running without one is not allowed."""

    code = "SANDBOX_UNAVAILABLE"


class InstallFailed(AgentRuntimeError):
    code = "INSTALL_FAILED"

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"install script exited with code {exit_code}")
        self.exit_code = exit_code


@dataclass(frozen=True)
class OutputBatch:
    """Consecutive console lines of one stream; the first has ``seq``
    (``None`` for install output, which is not part of the console log)."""

    server_id: str
    seq: int | None
    stream: str
    lines: list[str]


@dataclass(frozen=True)
class StateChange:
    server_id: str
    state: str
    """``running``, ``stopping``, ``stopped`` or ``crashed``."""
    exit_code: int | None = None
    pid: int | None = None
    message: str | None = None


@dataclass(frozen=True)
class LinesLost:
    """``count`` lines from ``seq`` on were no longer retained by the supervisor."""

    server_id: str
    seq: int
    count: int


RuntimeEvent = OutputBatch | StateChange | LinesLost


@dataclass(frozen=True)
class LaunchSpec:
    """What a container runtime needs beyond the command line and environment.

    The process runtime has no images, port mapping or cgroup limits and
    ignores these; the Docker runtime applies all of them.
    """

    image: str | None = None
    install_image: str | None = None
    """The image the install script runs in (default: ``image``)."""
    port_bindings: dict[int, int] = field(default_factory=dict)
    """Container port -> host port."""
    memory_mb: int | None = None
    cpu_cores: float | None = None
    disk_mb: int | None = None
    primary_port: int | None = None
    container_name: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> LaunchSpec:
        """The spec recorded by :func:`record_last_start` (empty when there is none)."""
        if not isinstance(data, dict):
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["port_bindings"] = {
            int(k): int(v) for k, v in (values.get("port_bindings") or {}).items()
        }
        return cls(**values)


def record_last_start(
    run_dir: Path,
    command: str,
    env: dict[str, str] | None,
    stop_command: str | None,
    spec: LaunchSpec | None,
) -> None:
    """Remember how a server was started, so ``restart`` can start it the same way."""
    write_json_atomic(
        run_dir / LAST_START,
        {
            "command": command,
            "env": env or {},
            "stopCommand": stop_command,
            "spec": dataclasses.asdict(spec or LaunchSpec()),
        },
    )


class ServerFolders:
    """Where a runtime keeps each server: ``servers/<id>/`` (its files) and
    ``run/<id>/`` (its run state), under the agent's data folder."""

    servers_root: Path
    run_root: Path
    uids: ServerUids | None = None
    """Each server's own uid (only when the agent runs as root)."""

    def file_owner(self, server_id: str) -> tuple[int, int] | None:
        """Who the files the agent writes for the server should belong to."""
        if self.uids is None:
            return None
        identity = self.uids.get(server_id)
        return None if identity is None else (identity.uid, identity.gid)

    def _check(self, server_id: str) -> str:
        if not SERVER_ID.match(server_id):
            raise InvalidServerId(f"invalid server id {server_id!r}")
        return server_id

    def server_dir(self, server_id: str) -> Path:
        return self.servers_root / self._check(server_id)

    def run_dir(self, server_id: str) -> Path:
        return self.run_root / self._check(server_id)


class _Startable(Protocol):
    def run_dir(self, server_id: str) -> Path: ...

    async def status(self, server_id: str) -> ServerStatus: ...

    async def stop(
        self, server_id: str, *, stop_timeout: float = ..., term_timeout: float = ...
    ) -> ServerStatus: ...

    async def start(
        self,
        server_id: str,
        command: str,
        *,
        env: dict[str, str] | None = ...,
        stop_command: str | None = ...,
        spec: LaunchSpec | None = ...,
    ) -> ServerStatus: ...


class RestartsLastStart:
    """``restart`` for runtimes that record their starts with :func:`record_last_start`."""

    async def restart(
        self: _Startable, server_id: str, *, stop_timeout: float = 30.0, term_timeout: float = 10.0
    ) -> ServerStatus:
        """Stop the server if it runs, then start it again as it was last started."""
        last = read_json(self.run_dir(server_id) / LAST_START)
        if last is None:
            raise ServerNotRunning(f"server {server_id} was never started")
        if (await self.status(server_id)).running:
            await self.stop(server_id, stop_timeout=stop_timeout, term_timeout=term_timeout)
        return await self.start(
            server_id,
            str(last["command"]),
            env=dict(last.get("env") or {}),
            stop_command=last.get("stopCommand"),
            spec=LaunchSpec.from_json(last.get("spec")),
        )


@dataclass(frozen=True)
class ServerStatus:
    server_id: str
    state: str
    """``running``, ``stopping``, ``stopped``, ``crashed``, or ``unknown`` (never started)."""
    pid: int | None = None
    exit_code: int | None = None
    sandbox: str = "none"
    last_seq: int = 0
    first_seq: int = 1
    """The oldest line the supervisor still retains."""
    run_first_seq: int = 1
    """The first line of the current (or last) run."""
    supervisor_pid: int | None = None
    message: str | None = None

    @property
    def running(self) -> bool:
        return self.state in ("starting", "running", "stopping")

    @classmethod
    def from_wire(cls, server_id: str, data: dict[str, Any]) -> ServerStatus:
        return cls(
            server_id=server_id,
            state=str(data.get("state", "unknown")),
            pid=data.get("pid"),
            exit_code=data.get("exitCode"),
            sandbox=str(data.get("sandbox", "none")),
            last_seq=int(data.get("lastSeq") or 0),
            first_seq=int(data.get("firstSeq") or 1),
            run_first_seq=int(data.get("runFirstSeq") or 1),
            supervisor_pid=data.get("supervisorPid"),
            message=data.get("message"),
        )


@dataclass(frozen=True)
class ServerStats:
    server_id: str
    cpu_percent: float
    memory_mb: float
    processes: int


@dataclass
class _Attachment:
    task: asyncio.Task[None]
    last_seq: int = 0
    previous: sysinfo.GroupUsage | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class ProcessRuntime(ServerFolders, RestartsLastStart):
    """Runs servers as supervised processes under ``data_dir``.

    Events of every attached server arrive through :meth:`events` (one
    consumer). The queue is bounded: when nobody consumes, reading from the
    supervisors pauses and they keep the output in their ring logs.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        sandbox: bool = False,
        python: str = sys.executable,
        event_buffer: int = 1024,
        uid_base: int = DEFAULT_UID_BASE,
        uid_count: int = DEFAULT_UID_COUNT,
        network: str = "host",
        refusal: str | None = None,
    ) -> None:
        """``sandbox``: bubblewrap (when installed). As root, each server runs
        as its own uid from ``uid_base`` (``uid_count`` of them), with or
        without the sandbox. ``network="none"`` gives sandboxed servers no
        network. ``refusal``, when set, is why no server may start here."""
        self.data_dir = Path(data_dir)
        self.sandbox = sandbox
        self.network = network
        self.refusal = refusal
        self.uids = ServerUids(self.data_dir, base=uid_base, count=uid_count) if is_root() else None
        self.user_namespace = user_namespaces_available()
        self.python = python
        self.servers_root = self.data_dir / "servers"
        self.run_root = self.data_dir / "run"
        self.servers_root.mkdir(parents=True, exist_ok=True)
        self.run_root.mkdir(parents=True, exist_ok=True)
        self._events: asyncio.Queue[RuntimeEvent] = asyncio.Queue(maxsize=event_buffer)
        self._attached: dict[str, _Attachment] = {}
        self._usage: dict[str, sysinfo.GroupUsage] = {}

    # ------------------------------------------------------------------ control

    async def _control(self, server_id: str, request: dict[str, Any]) -> dict[str, Any]:
        run_dir = self.run_dir(server_id)
        if not (run_dir / SOCKET_NAME).exists():
            raise ServerNotRunning(f"server {server_id} is not running")
        try:
            with socket_address(run_dir) as address:
                reader, writer = await asyncio.open_unix_connection(address)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ServerNotRunning(f"server {server_id} is not running") from exc
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), _CONTROL_TIMEOUT)
        except (ConnectionError, TimeoutError) as exc:
            raise ServerNotRunning(f"server {server_id}: supervisor did not answer") from exc
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        if not line:
            raise ServerNotRunning(f"server {server_id} is not running")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise ServerNotRunning(f"server {server_id}: {reply.get('error')}")
        return reply

    async def status(self, server_id: str) -> ServerStatus:
        """The live status from the supervisor, else the last recorded one."""
        try:
            return ServerStatus.from_wire(
                server_id, await self._control(server_id, {"op": "status"})
            )
        except ServerNotRunning:
            pass
        recorded = read_json(self.run_dir(server_id) / STATE_NAME)
        if recorded is None:
            return ServerStatus(server_id=server_id, state="unknown")
        status = ServerStatus.from_wire(server_id, recorded)
        if status.running:
            # The supervisor died without recording an exit.
            return ServerStatus(
                server_id=server_id,
                state="crashed",
                pid=status.pid,
                sandbox=status.sandbox,
                last_seq=status.last_seq,
                message="supervisor died",
            )
        return status

    async def start(
        self,
        server_id: str,
        command: str,
        *,
        env: dict[str, str] | None = None,
        stop_command: str | None = None,
        attach: bool = True,
        spec: LaunchSpec | None = None,
    ) -> ServerStatus:
        """Start ``command`` (a shell command line) in the server's data folder.

        ``spec`` is accepted for interface parity with the container runtime;
        a process has no image or port mapping to apply.

        Raises :class:`ServerAlreadyRunning` if its supervisor is alive.
        """
        if self.refusal is not None:
            raise SandboxUnavailable(self.refusal)
        current = await self.status(server_id)
        if current.running:
            raise ServerAlreadyRunning(f"server {server_id} is already running")
        data_dir = self.server_dir(server_id)
        run_dir = self.run_dir(server_id)
        data_dir.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        launch = await self._launch(server_id, command, env or {})
        supervisor_spec = {
            "serverId": server_id,
            "argv": launch.argv,
            "cwd": launch.cwd,
            "env": launch.env,
            "stopCommand": stop_command,
            "sandbox": launch.sandbox,
            "awaitAttach": attach,
        }
        write_json_atomic(run_dir / SPEC_NAME, supervisor_spec)
        record_last_start(run_dir, command, env, stop_command, spec)
        await self._detach_stream(server_id)
        proc = await asyncio.create_subprocess_exec(
            self.python,
            "-m",
            "hostplane.agent.supervisor",
            "--run-dir",
            str(run_dir),
            "--detach",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _, err = await proc.communicate()
        except asyncio.CancelledError:
            # The supervisor detaches within milliseconds and the server runs on
            # (reattach finds it); reap it here, or its transport outlives the loop.
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(proc.wait(), 5.0)
            raise
        if proc.returncode != 0:
            raise AgentRuntimeError(
                f"supervisor for {server_id} failed: {err.decode(errors='replace').strip()}"
            )
        status = await self.status(server_id)
        if attach:
            await self.attach(server_id, from_seq=status.run_first_seq)
        return status

    async def _launch(self, server_id: str, command: str, env: dict[str, str]) -> CommandLine:
        """The server's command line, after giving its folder to its uid."""
        data_dir = self.server_dir(server_id)
        identity: Identity | None = None
        if self.uids is not None:
            try:
                identity = self.uids.identity(server_id)
                # Files the agent wrote (file manager, SFTP, restores,
                # transfers) belong to root until now.
                await give_folder(data_dir, identity)
            except (UidsExhausted, FolderNotGiven) as exc:
                raise AgentRuntimeError(str(exc)) from exc
        try:
            return build_launch(
                command,
                data_dir=data_dir,
                env=env,
                sandbox=self.sandbox,
                run_as=identity,
                user_namespace=self.user_namespace,
                network=self.network,
            )
        except SandboxError as exc:
            raise SandboxUnavailable(f"the server sandbox cannot run: {exc}") from exc

    async def stop(
        self,
        server_id: str,
        *,
        stop_timeout: float = 30.0,
        term_timeout: float = 10.0,
        wait: bool = True,
    ) -> ServerStatus:
        """Stop command, then SIGTERM after ``stop_timeout``, then SIGKILL after ``term_timeout``.

        With ``wait`` returns once the server has exited.
        """
        await self._control(
            server_id, {"op": "stop", "timeout": stop_timeout, "termTimeout": term_timeout}
        )
        if not wait:
            return await self.status(server_id)
        return await self._wait_exit(server_id, stop_timeout + term_timeout + 5.0)

    async def kill(self, server_id: str, *, wait: bool = True) -> ServerStatus:
        """SIGKILL the server's process group."""
        await self._control(server_id, {"op": "kill"})
        if not wait:
            return await self.status(server_id)
        return await self._wait_exit(server_id, 10.0)

    async def list_servers(self) -> list[ServerStatus]:
        """Every server this node has run, with its current status."""
        names = [
            d.name
            for d in sorted(self.run_root.iterdir())
            if d.is_dir() and SERVER_ID.match(d.name)
        ]
        return [await self.status(name) for name in names]

    async def _wait_exit(self, server_id: str, limit: float) -> ServerStatus:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            status = await self.status(server_id)
            if not status.running or loop.time() > deadline:
                return status
            await asyncio.sleep(0.05)

    async def forget(self, server_id: str) -> None:
        """Drop everything this runtime keeps for a stopped server (its run folder)."""
        if (await self.status(server_id)).running:
            raise ServerAlreadyRunning(f"server {server_id} is running")
        await self._detach_stream(server_id)
        shutil.rmtree(self.run_dir(server_id), ignore_errors=True)
        if self.uids is not None:
            self.uids.release(server_id)

    async def send_input(self, server_id: str, data: str) -> None:
        """Write ``data`` to the server's stdin as is (add the newline yourself)."""
        await self._control(server_id, {"op": "input", "data": data})

    # ------------------------------------------------------------------ attach

    async def reattach(self) -> list[ServerStatus]:
        """Find every server under ``run/``: attach to live supervisors and
        report exits that happened while nobody was attached.

        Call once after start-up. Returns every server's status (for the
        panel's reconcile). Output is replayed from the oldest retained line
        unless :meth:`attach` is called with ``from_seq`` instead.
        """
        statuses = []
        for run_dir in sorted(self.run_root.iterdir()):
            if not run_dir.is_dir() or not SERVER_ID.match(run_dir.name):
                continue
            server_id = run_dir.name
            status = await self.status(server_id)
            if status.running:
                if server_id not in self._attached:
                    await self.attach(server_id)
            elif status.state != "unknown":
                await self._report_recorded_exit(server_id, status)
            statuses.append(status)
        return statuses

    async def _report_recorded_exit(self, server_id: str, status: ServerStatus) -> None:
        path = self.run_dir(server_id) / STATE_NAME
        recorded = read_json(path) or {}
        if recorded.get("reported"):
            return
        if status.message == "supervisor died" and status.pid is not None:
            # Nobody holds its pipes any more: do not leave it running unsupervised.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(status.pid, signal.SIGKILL)
        await self._events.put(
            StateChange(
                server_id=server_id,
                state=status.state,
                exit_code=status.exit_code,
                pid=status.pid,
                message=status.message,
            )
        )
        recorded.update({"reported": True, "state": status.state, "message": status.message})
        write_json_atomic(path, recorded)

    async def attach(self, server_id: str, *, from_seq: int | None = None) -> ServerStatus:
        """Stream the server's output from ``from_seq`` (default: the oldest
        retained line) and its state changes into :meth:`events`."""
        await self._detach_stream(server_id)
        run_dir = self.run_dir(server_id)
        try:
            with socket_address(run_dir) as address:
                reader, writer = await asyncio.open_unix_connection(address, limit=2**24)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ServerNotRunning(f"server {server_id} is not running") from exc
        writer.write(json.dumps({"op": "attach", "fromSeq": from_seq}).encode() + b"\n")
        await writer.drain()
        first = await asyncio.wait_for(reader.readline(), _CONTROL_TIMEOUT)
        if not first:
            raise ServerNotRunning(f"server {server_id} is not running")
        status = ServerStatus.from_wire(server_id, json.loads(first))
        attachment = _Attachment(
            task=asyncio.create_task(self._stream(server_id, reader, writer)),
            last_seq=(from_seq if from_seq is not None else status.first_seq) - 1,
            writers=[writer],
        )
        self._attached[server_id] = attachment
        return status

    async def _stream(
        self, server_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        final = False
        try:
            while line := await reader.readline():
                event = json.loads(line)
                kind = event.get("ev")
                if kind == "output":
                    batch = OutputBatch(
                        server_id=server_id,
                        seq=int(event["seq"]),
                        stream=str(event["stream"]),
                        lines=list(event["lines"]),
                    )
                    attachment = self._attached.get(server_id)
                    if attachment is not None:
                        attachment.last_seq = int(event["seq"]) + len(batch.lines) - 1
                    await self._events.put(batch)
                elif kind == "gap":
                    await self._events.put(
                        LinesLost(
                            server_id=server_id, seq=int(event["seq"]), count=int(event["count"])
                        )
                    )
                elif kind == "state":
                    state = str(event.get("state"))
                    await self._events.put(
                        StateChange(
                            server_id=server_id,
                            state=state,
                            exit_code=event.get("exitCode"),
                            pid=event.get("pid"),
                            message=event.get("message"),
                        )
                    )
                    if state in ("stopped", "crashed"):
                        final = True
                        break
        except (ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            attachment = self._attached.get(server_id)
            if attachment is not None and writer in attachment.writers:
                del self._attached[server_id]
        if not final:
            # The supervisor went away without a final word: tell what the files say.
            await asyncio.sleep(0.2)
            status = await self.status(server_id)
            if not status.running:
                await self._report_recorded_exit(server_id, status)

    async def _detach_stream(self, server_id: str) -> None:
        attachment = self._attached.pop(server_id, None)
        if attachment is None:
            return
        attachment.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await attachment.task

    def last_seq(self, server_id: str) -> int | None:
        """The sequence number of the last line this runtime delivered, if attached."""
        attachment = self._attached.get(server_id)
        return None if attachment is None else attachment.last_seq

    def attached(self) -> list[str]:
        return sorted(self._attached)

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        """Output batches, lost-line notices and state changes of attached servers."""
        while True:
            yield await self._events.get()

    async def next_event(self, within: float | None = None) -> RuntimeEvent:
        """One event (raises ``TimeoutError`` after ``within`` seconds)."""
        return await asyncio.wait_for(self._events.get(), within)

    async def close(self) -> None:
        """Stop streaming; the servers keep running."""
        for server_id in list(self._attached):
            await self._detach_stream(server_id)

    # ------------------------------------------------------------------ stats

    async def stats(self, server_id: str) -> ServerStats:
        """CPU % (100 = one core) since the previous call, or over 0.2 s on
        the first call, and resident memory of the server's process group."""
        status = await self.status(server_id)
        if not status.running or status.pid is None:
            raise ServerNotRunning(f"server {server_id} is not running")
        pgid = status.pid
        previous = self._usage.get(server_id)
        if previous is None:
            previous = await asyncio.to_thread(sysinfo.group_usage, pgid)
            await asyncio.sleep(0.2)
        current = await asyncio.to_thread(sysinfo.group_usage, pgid)
        self._usage[server_id] = current
        return ServerStats(
            server_id=server_id,
            cpu_percent=round(sysinfo.cpu_percent(previous, current), 2),
            memory_mb=round(current.rss_bytes / 2**20, 2),
            processes=current.processes,
        )

    # ------------------------------------------------------------------ install

    async def install(
        self,
        server_id: str,
        script: str,
        *,
        env: dict[str, str] | None = None,
        spec: LaunchSpec | None = None,
    ) -> AsyncIterator[OutputBatch]:
        """Run ``script`` with ``/bin/sh`` in the server's data folder (sandboxed
        like the server), yielding its output; raises :class:`InstallFailed`
        at the end if it exits non-zero.

        The install runs as the agent's child: an agent restart interrupts it
        and the panel marks it ``install_failed`` (installed again on request).
        """
        if self.refusal is not None:
            raise SandboxUnavailable(self.refusal)
        current = await self.status(server_id)
        if current.running:
            raise ServerAlreadyRunning(f"server {server_id} is running")
        data_dir = self.server_dir(server_id)
        data_dir.mkdir(parents=True, exist_ok=True)
        script_path = data_dir / ".hostplane-install.sh"
        script_path.write_text(script)
        # Relative without the sandbox: the server's uid may not be able to
        # walk the agent's folders down to its own (it starts inside it).
        sandboxed = self.sandbox and bwrap_path() is not None
        inner = "/data/.hostplane-install.sh" if sandboxed else "./.hostplane-install.sh"
        launch = await self._launch(server_id, f"/bin/sh {inner}", env or {})
        proc = await asyncio.create_subprocess_exec(
            *launch.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=launch.cwd,
            env=launch.env,
            start_new_session=True,
        )
        if proc.stdout is None:  # pragma: no cover - asked for a pipe
            raise AgentRuntimeError("install: no stdout pipe")
        partial = b""
        try:
            while chunk := await proc.stdout.read(65536):
                parts = (partial + chunk).split(b"\n")
                partial = parts.pop()
                if parts:
                    yield OutputBatch(
                        server_id=server_id,
                        seq=None,
                        stream="stdout",
                        lines=[p.rstrip(b"\r").decode("utf-8", "replace") for p in parts],
                    )
            if partial:
                yield OutputBatch(
                    server_id=server_id,
                    seq=None,
                    stream="stdout",
                    lines=[partial.decode("utf-8", "replace")],
                )
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            with contextlib.suppress(FileNotFoundError):
                script_path.unlink()
        if code != 0:
            raise InstallFailed(code)
