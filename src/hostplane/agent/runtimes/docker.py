"""The Docker runtime: one container per server through the Docker Engine API.

Speaks API v1.41 to Docker or Podman (``podman system service``). A server
is the container ``spec.container_name`` (default ``hostplane-<id>``),
labelled ``hostplane.server=<id>`` and ``hostplane.node=<node id>``, with
the server's data folder (``data_dir/servers/<id>``, as for the process
runtime) bound at ``/data`` (its working directory), the template's image,
the final environment, port bindings (TCP and UDP), a memory limit of the
allocation plus a small overhead (no swap), a CPU quota (``NanoCpus``) and a
pids limit. It runs ``/bin/sh -c`` with the start command, after taking its
stdin from the console FIFO (see :mod:`.docker_console`). Each start
replaces the container, so new limits, ports and environment apply.

Containers do not depend on the agent: a new runtime finds them again by
label with :meth:`DockerRuntime.reattach`, re-reads their output from the
engine's log and continues the sequence numbers it stored in
``run/<id>/container.json``; exits nobody heard of are reported then.

Layout under the agent's data folder::

    servers/<server id>/          the server's files (bound at /data)
    run/<server id>/container.json container id, sequence numbers, stop flags, last state
    run/<server id>/last-start.json how it was last started (for restart)
    run/<server id>/io/console    the console FIFO (bound at /run/hostplane)
    run/<server id>/install/      the install script while it runs
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostplane.agent.config import DEFAULT_UID_BASE, DEFAULT_UID_COUNT
from hostplane.agent.isolation import (
    FolderNotGiven,
    ServerUids,
    UidsExhausted,
    give_folder,
    is_root,
)
from hostplane.agent.runtime import (
    LAST_START,
    SERVER_ID,
    AgentRuntimeError,
    InstallFailed,
    LaunchSpec,
    OutputBatch,
    RestartsLastStart,
    RuntimeEvent,
    ServerAlreadyRunning,
    ServerFolders,
    ServerNotRunning,
    ServerStats,
    ServerStatus,
    StateChange,
    record_last_start,
)
from hostplane.agent.runtimes.docker_console import (
    CONSOLE_DIR,
    CONSOLE_NAME,
    ConsoleBlocked,
    ConsoleNotReading,
    LineSplitter,
    batches,
    console_command,
    ensure_fifo,
    write_console,
)
from hostplane.agent.runtimes.docker_engine import (
    EngineClient,
    EngineError,
    EngineRefused,
    EngineUnavailable,
)
from hostplane.agent.runtimes.docker_stats import server_stats
from hostplane.agent.supervisor import read_json, write_json_atomic

logger = logging.getLogger(__name__)

_CONTAINER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")
_RECORD = "container.json"
SERVER_LABEL = "hostplane.server"
NODE_LABEL = "hostplane.node"
ROLE_LABEL = "hostplane.role"
INSTALL_MOUNT = "/mnt/install"
_OOM_EXIT = 137
_OUTPUT_DRAIN = 5.0
"""How long the log stream may lag behind the container's exit."""
_RETRY_DELAY = 1.0
_FINAL_STATES = ("stopped", "crashed")


class ImageUnavailable(AgentRuntimeError):
    code = "IMAGE_UNAVAILABLE"


class PortInUse(AgentRuntimeError):
    code = "PORT_IN_USE"


class InstallImageUnavailable(InstallFailed):
    """The install image is absent and could not be pulled (no script ran)."""

    def __init__(self, image: str) -> None:
        AgentRuntimeError.__init__(
            self, f"image {image} is not on this node and could not be pulled"
        )
        self.exit_code = -1


@dataclass
class _Watch:
    """Streaming output, exit and stats of one running container."""

    server_id: str
    container_id: str
    run_first_seq: int
    last_seq: int
    task: asyncio.Task[None] | None = None
    stats_task: asyncio.Task[None] | None = None
    latest: ServerStats | None = None
    sampled: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class DockerRuntime(ServerFolders, RestartsLastStart):
    """Runs servers as containers; same interface and events as
    :class:`~hostplane.agent.runtime.ProcessRuntime`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        docker_host: str,
        api_version: str = "v1.41",
        node_id: str = "",
        memory_overhead_mb: int = 64,
        pids_limit: int = 512,
        bind_address: str = "0.0.0.0",  # noqa: S104 - game ports are public by design
        network_mode: str = "bridge",
        labels: dict[str, str] | None = None,
        event_buffer: int = 1024,
        userns_mode: str = "",
        readonly_rootfs: bool = True,
        uid_base: int = DEFAULT_UID_BASE,
        uid_count: int = DEFAULT_UID_COUNT,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.servers_root = self.data_dir / "servers"
        self.run_root = self.data_dir / "run"
        self.servers_root.mkdir(parents=True, exist_ok=True)
        self.run_root.mkdir(parents=True, exist_ok=True)
        self.engine = EngineClient(docker_host, api_version=api_version)
        self.node_id = node_id
        self.memory_overhead_mb = memory_overhead_mb
        self.pids_limit = pids_limit
        self.bind_address = bind_address
        self.network_mode = network_mode
        self.labels = dict(labels or {})
        self.userns_mode = userns_mode
        self.readonly_rootfs = readonly_rootfs
        # As root, each server's container runs as the server's own uid (the
        # process runtime's allocation); otherwise as the agent's, which owns
        # the data folders.
        self.uids = ServerUids(self.data_dir, base=uid_base, count=uid_count) if is_root() else None
        self._events: asyncio.Queue[RuntimeEvent] = asyncio.Queue(maxsize=event_buffer)
        self._watches: dict[str, _Watch] = {}
        self._stops: dict[str, asyncio.Task[None]] = {}
        self._records: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ paths and records

    def _record(self, server_id: str) -> dict[str, Any] | None:
        cached = self._records.get(server_id)
        if cached is None:
            cached = read_json(self.run_dir(server_id) / _RECORD)
            if cached is not None:
                self._records[server_id] = cached
        return cached

    def _save(self, server_id: str, **changes: Any) -> dict[str, Any]:
        record = {**(self._record(server_id) or {}), **changes}
        self._records[server_id] = record
        write_json_atomic(self.run_dir(server_id) / _RECORD, record)
        return record

    def container_name(self, server_id: str, spec: LaunchSpec | None = None) -> str:
        wanted = spec.container_name if spec is not None else None
        if wanted and _CONTAINER_NAME.match(wanted):
            return wanted
        return f"hostplane-{self._check(server_id)}"

    # ------------------------------------------------------------------ status

    async def status(self, server_id: str) -> ServerStatus:
        """From the container's state; the recorded one once it is gone."""
        record = self._record(self._check(server_id))
        if record is None:
            return ServerStatus(server_id=server_id, state="unknown", sandbox="docker")
        info = await self.engine.inspect(str(record["containerId"]))
        return self._status_of(server_id, record, info)

    def _status_of(
        self, server_id: str, record: dict[str, Any], info: dict[str, Any] | None
    ) -> ServerStatus:
        watch = self._watches.get(server_id)
        last_seq = watch.last_seq if watch is not None else int(record.get("lastSeq") or 0)
        first = int(record.get("runFirstSeq") or 1)
        common: dict[str, Any] = {
            "server_id": server_id,
            "sandbox": "docker",
            "last_seq": last_seq,
            "first_seq": first,
            "run_first_seq": first,
        }
        state_doc = info.get("State") if info is not None else None
        if isinstance(state_doc, dict) and (
            state_doc.get("Running") or state_doc.get("Status") == "running"
        ):
            state = "stopping" if record.get("stopRequested") else "running"
            return ServerStatus(state=state, pid=state_doc.get("Pid") or None, **common)
        if record.get("reported") or record.get("state") in _FINAL_STATES:
            return ServerStatus(
                state=str(record.get("state") or "stopped"),
                exit_code=record.get("exitCode"),
                message=record.get("message"),
                **common,
            )
        state, exit_code, message = _final_state(record, info, None)
        return ServerStatus(state=state, exit_code=exit_code, message=message, **common)

    async def list_servers(self) -> list[ServerStatus]:
        """Every server this node has run, with its current status."""
        names = [
            d.name
            for d in sorted(self.run_root.iterdir())
            if d.is_dir() and SERVER_ID.match(d.name) and self._record(d.name) is not None
        ]
        return [await self.status(name) for name in names]

    # ------------------------------------------------------------------ start

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
        """Create and start the server's container (replacing an old one).

        Raises :class:`ServerAlreadyRunning` if it runs, :class:`ImageUnavailable`
        if its image is absent and cannot be pulled.
        """
        spec = spec or LaunchSpec()
        if (await self.status(server_id)).running:
            raise ServerAlreadyRunning(f"server {server_id} is already running")
        if not spec.image:
            raise AgentRuntimeError(f"server {server_id} has no container image")
        async for line in self._ensure_image(spec.image, install=False):
            # A start has no install console to show the pull on.
            logger.info("server %s: %s", server_id, line)
        data_dir = self.server_dir(server_id)
        run_dir = self.run_dir(server_id)
        data_dir.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        io_dir = run_dir / "io"
        ensure_fifo(io_dir)
        await self._unwatch(server_id)
        name = self.container_name(server_id, spec)
        previous = self._record(server_id)
        if previous is not None:
            await self.engine.remove(str(previous["containerId"]))
        await self.engine.remove(name)

        config = self._config(
            server_id,
            spec.image,
            console_command(command),
            env=self._environment(env, spec),
            binds=[f"{data_dir}:/data", f"{io_dir}:{CONSOLE_DIR}"],
            working_dir="/data",
            spec=spec,
            user=await self._owner(server_id),
        )
        try:
            container_id = await self.engine.create(name, config)
        except EngineRefused as exc:
            logger.warning("creating container for %s failed: %s", server_id, exc.detail)
            raise AgentRuntimeError(
                f"server {server_id}: the container could not be created"
            ) from exc
        last_seq = int((previous or {}).get("lastSeq") or 0)
        self._save(
            server_id,
            containerId=container_id,
            containerName=name,
            runFirstSeq=last_seq + 1,
            lastSeq=last_seq,
            stopRequested=False,
            killRequested=False,
            state="starting",
            exitCode=None,
            message=None,
            reported=False,
        )
        record_last_start(run_dir, command, env, stop_command, spec)
        try:
            await self.engine.start(container_id)
        except EngineRefused as exc:
            logger.warning("starting container for %s failed: %s", server_id, exc.detail)
            await self.engine.remove(container_id)
            message = (
                "a host port of this server is already in use"
                if "address already in use" in exc.detail.lower()
                else "the container could not be started"
            )
            self._save(server_id, state="crashed", message=message, reported=True)
            refused = PortInUse if "in use" in message else AgentRuntimeError
            raise refused(f"server {server_id}: {message}") from exc
        self._save(server_id, state="running")
        if attach:
            self._watch(server_id)
        return await self.status(server_id)

    def _environment(self, env: dict[str, str] | None, spec: LaunchSpec) -> dict[str, str]:
        merged = dict(env or {})
        # What images written for other panels (Pterodactyl's "yolks") read.
        if spec.memory_mb:
            merged.setdefault("SERVER_MEMORY", str(spec.memory_mb))
        if spec.primary_port:
            merged.setdefault("SERVER_PORT", str(spec.primary_port))
        merged.setdefault("HOME", "/data")
        return merged

    def _config(
        self,
        server_id: str,
        image: str,
        argv: list[str],
        *,
        env: dict[str, str],
        binds: list[str],
        working_dir: str,
        spec: LaunchSpec,
        role: str | None = None,
        limits: bool = True,
        user: str,
    ) -> dict[str, Any]:
        labels = {**self.labels, SERVER_LABEL: server_id, NODE_LABEL: self.node_id}
        if role is not None:
            labels[ROLE_LABEL] = role
        host: dict[str, Any] = {
            "Binds": binds,
            "NetworkMode": self.network_mode,
            "RestartPolicy": {"Name": "no"},
            # Never root on the host, never a capability: see docs/decisions.md.
            "Privileged": False,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
        }
        if self.userns_mode:
            host["UsernsMode"] = self.userns_mode
        if self.readonly_rootfs and role is None:
            # The install may write to its image (its container is thrown away).
            host["ReadonlyRootfs"] = True
            host["Tmpfs"] = {"/tmp": "rw,nosuid,nodev,size=256m"}  # noqa: S108 - the container's own
        if self.pids_limit > 0:
            host["PidsLimit"] = self.pids_limit
        if limits and spec.memory_mb:
            memory = (spec.memory_mb + self.memory_overhead_mb) * 2**20
            # Swap equal to memory: no swap, so the limit is an OOM and not a crawl.
            host["Memory"] = memory
            host["MemorySwap"] = memory
        if limits and spec.cpu_cores:
            host["NanoCpus"] = int(spec.cpu_cores * 1_000_000_000)
        exposed: dict[str, dict[str, Any]] = {}
        if limits and spec.port_bindings:
            bindings: dict[str, list[dict[str, str]]] = {}
            # Podman publishes an explicit 0.0.0.0 in a way that connections
            # from the node itself (127.0.0.1) never reach; "" means the same
            # (every address) and works from everywhere.
            host_ip = "" if self.bind_address in ("", "0.0.0.0") else self.bind_address  # noqa: S104
            for container_port, host_port in sorted(spec.port_bindings.items()):
                for proto in ("tcp", "udp"):
                    key = f"{container_port}/{proto}"
                    exposed[key] = {}
                    bindings[key] = [{"HostIp": host_ip, "HostPort": str(host_port)}]
            host["PortBindings"] = bindings
        return {
            "Image": image,
            "User": user,
            "Entrypoint": argv[:1],
            "Cmd": argv[1:],
            "Env": [f"{key}={value}" for key, value in env.items()],
            "WorkingDir": working_dir,
            "Labels": labels,
            "Tty": False,
            "OpenStdin": False,
            "AttachStdin": False,
            "StopSignal": "SIGTERM",
            "ExposedPorts": exposed,
            "HostConfig": host,
        }

    async def _owner(self, server_id: str) -> str:
        """``uid:gid`` the server's containers run as, owning its data folder."""
        if self.uids is None:
            return f"{os.geteuid()}:{os.getegid()}"
        try:
            identity = self.uids.identity(server_id)
            await give_folder(self.server_dir(server_id), identity)
        except (UidsExhausted, FolderNotGiven) as exc:
            raise AgentRuntimeError(str(exc)) from exc
        return f"{identity.uid}:{identity.gid}"

    async def _ensure_image(self, image: str, *, install: bool) -> AsyncIterator[str]:
        """Pull ``image`` only if it is not here already, yielding the pull's
        progress lines."""
        if await self.engine.image_exists(image):
            return
        yield f"pulling image {image}"
        try:
            async for line in self.engine.pull(image):
                yield line
        except EngineError as exc:
            logger.warning("pulling %s failed: %s", image, exc.detail or exc)
            if install:
                raise InstallImageUnavailable(image) from exc
            raise ImageUnavailable(
                f"image {image} is not on this node and could not be pulled"
            ) from exc

    # ------------------------------------------------------------------ stop, kill, restart

    async def stop(
        self,
        server_id: str,
        *,
        stop_timeout: float = 30.0,
        term_timeout: float = 10.0,
        wait: bool = True,
    ) -> ServerStatus:
        """Stop command on the console, then after ``stop_timeout`` the engine's
        stop (SIGTERM, SIGKILL after ``term_timeout``)."""
        status = await self.status(server_id)
        if not status.running:
            raise ServerNotRunning(f"server {server_id} is not running")
        record = self._save(server_id, stopRequested=True)
        if status.state != "stopping":
            await self._events.put(StateChange(server_id=server_id, state="stopping"))
        if server_id not in self._stops or self._stops[server_id].done():
            last = read_json(self.run_dir(server_id) / LAST_START) or {}
            self._stops[server_id] = asyncio.create_task(
                self._escalate(
                    server_id,
                    str(record["containerId"]),
                    last.get("stopCommand"),
                    stop_timeout,
                    term_timeout,
                )
            )
        if not wait:
            return await self.status(server_id)
        return await self._wait_exit(server_id, stop_timeout + term_timeout + 10.0)

    async def _escalate(
        self,
        server_id: str,
        container_id: str,
        stop_command: str | None,
        stop_timeout: float,
        term_timeout: float,
    ) -> None:
        if stop_command:
            try:
                await write_console(self._console(server_id), (stop_command + "\n").encode())
            except (ConsoleNotReading, ConsoleBlocked, OSError):
                logger.info("stop command for %s not delivered; signalling", server_id)
            else:
                if await self._exited_within(server_id, container_id, stop_timeout):
                    return
        try:
            await self.engine.stop(container_id, grace=max(1, math.ceil(term_timeout)))
        except EngineError as exc:
            logger.warning("engine stop of %s failed: %s; killing", server_id, exc.detail)
            with contextlib.suppress(EngineError):
                await self.engine.kill(container_id, "SIGKILL")

    async def _exited_within(self, server_id: str, container_id: str, seconds: float) -> bool:
        watch = self._watches.get(server_id)
        if watch is not None and watch.container_id == container_id:
            try:
                await asyncio.wait_for(watch.exited.wait(), seconds)
            except TimeoutError:
                return False
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            info = await self.engine.inspect(container_id)
            if info is None or not _running(info):
                return True
            await asyncio.sleep(0.1)
        return False

    async def kill(self, server_id: str, *, wait: bool = True) -> ServerStatus:
        """SIGKILL the container."""
        status = await self.status(server_id)
        if not status.running:
            raise ServerNotRunning(f"server {server_id} is not running")
        record = self._save(server_id, killRequested=True)
        await self.engine.kill(str(record["containerId"]), "SIGKILL")
        if not wait:
            return await self.status(server_id)
        return await self._wait_exit(server_id, 10.0)

    async def _wait_exit(self, server_id: str, limit: float) -> ServerStatus:
        """Once the exit is reported (if watched) or the container is down."""
        watch = self._watches.get(server_id)
        if watch is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.finished.wait(), limit)
            return await self.status(server_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            status = await self.status(server_id)
            if not status.running or loop.time() > deadline:
                return status
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ console

    def _console(self, server_id: str) -> Path:
        return self.run_dir(server_id) / "io" / CONSOLE_NAME

    async def send_input(self, server_id: str, data: str) -> None:
        """Write ``data`` to the server's console FIFO as is (add the newline yourself)."""
        if self._record(self._check(server_id)) is None:
            raise ServerNotRunning(f"server {server_id} is not running")
        loop = asyncio.get_running_loop()
        # Right after the start the shell may not have opened the FIFO yet.
        deadline = loop.time() + 2.0
        while True:
            try:
                await write_console(self._console(server_id), data.encode())
            except ConsoleBlocked as exc:
                raise AgentRuntimeError(
                    f"server {server_id} is not reading its console input"
                ) from exc
            except ConsoleNotReading as exc:
                if loop.time() < deadline and (await self.status(server_id)).running:
                    await asyncio.sleep(0.05)
                    continue
                raise ServerNotRunning(f"server {server_id} is not running") from exc
            return

    # ------------------------------------------------------------------ watching

    def _watch(self, server_id: str) -> _Watch:
        record = self._record(server_id)
        if record is None:  # pragma: no cover - callers hold a record
            raise ServerNotRunning(f"server {server_id} is not running")
        watch = _Watch(
            server_id=server_id,
            container_id=str(record["containerId"]),
            run_first_seq=int(record.get("runFirstSeq") or 1),
            last_seq=int(record.get("lastSeq") or 0),
        )
        self._watches[server_id] = watch
        watch.stats_task = asyncio.create_task(self._follow_stats(watch))
        watch.task = asyncio.create_task(self._supervise(watch))
        return watch

    async def forget(self, server_id: str) -> None:
        """Remove a stopped server's container and run folder."""
        if (await self.status(server_id)).running:
            raise ServerAlreadyRunning(f"server {server_id} is running")
        await self._unwatch(server_id)
        record = self._record(server_id)
        if record is not None and record.get("containerId"):
            await self.engine.remove(str(record["containerId"]))
        self._records.pop(server_id, None)
        shutil.rmtree(self.run_dir(server_id), ignore_errors=True)
        if self.uids is not None:
            self.uids.release(server_id)

    async def _unwatch(self, server_id: str) -> None:
        watch = self._watches.pop(server_id, None)
        stopping = self._stops.pop(server_id, None)
        tasks = [t for t in (stopping,) if t is not None]
        if watch is not None:
            tasks += [t for t in (watch.task, watch.stats_task) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _supervise(self, watch: _Watch) -> None:
        output = asyncio.create_task(self._follow_output(watch))
        try:
            exit_code = await self._wait_for_exit(watch)
            watch.exited.set()
            if watch.stats_task is not None:
                watch.stats_task.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(output), _OUTPUT_DRAIN)
            except TimeoutError:
                output.cancel()
            except EngineError as exc:
                # The followed log broke off; _catch_up reads what it missed.
                logger.info("log stream of %s ended early: %s", watch.server_id, exc.detail or exc)
            with contextlib.suppress(asyncio.CancelledError, EngineError):
                await output
            await self._catch_up(watch)
            await self._report_exit(watch, exit_code)
        finally:
            output.cancel()
            with contextlib.suppress(asyncio.CancelledError, EngineError):
                await output
            if self._watches.get(watch.server_id) is watch:
                del self._watches[watch.server_id]
            watch.finished.set()

    async def _wait_for_exit(self, watch: _Watch) -> int | None:
        """The container's exit code, ``None`` if it disappeared. Survives engine restarts."""
        while True:
            try:
                code = await self.engine.wait(watch.container_id)
                info = await self.engine.inspect(watch.container_id)
            except EngineUnavailable:
                await asyncio.sleep(_RETRY_DELAY)
                continue
            except EngineRefused as exc:
                if exc.status == 404:
                    return None
                logger.warning("waiting for %s: %s", watch.server_id, exc.detail)
                await asyncio.sleep(_RETRY_DELAY)
                continue
            if info is None:
                return code
            if not _running(info):
                return code

    async def _follow_output(self, watch: _Watch) -> None:
        while True:
            try:
                await self._pump(watch, follow=True)
                info = await self.engine.inspect(watch.container_id)
            except EngineError as exc:
                logger.info("output of %s interrupted: %s", watch.server_id, exc.detail)
                await asyncio.sleep(_RETRY_DELAY)
                continue
            if info is None or not _running(info):
                return
            await asyncio.sleep(_RETRY_DELAY / 2)

    async def _catch_up(self, watch: _Watch) -> None:
        """Everything the log holds that was not delivered yet, including a last partial line."""
        for _ in range(3):
            try:
                await self._pump(watch, follow=False)
            except EngineUnavailable:
                await asyncio.sleep(_RETRY_DELAY)
                continue
            except EngineRefused as exc:
                logger.info("final output of %s unavailable: %s", watch.server_id, exc.detail)
            return

    async def _pump(self, watch: _Watch, *, follow: bool) -> None:
        splitter = LineSplitter()
        index = 0
        async for frames in self.engine.logs(watch.container_id, follow=follow):
            lines: list[tuple[str, str]] = []
            for stream, data in frames:
                lines += splitter.feed(stream, data)
            index = await self._deliver(watch, lines, index)
        if not follow:
            await self._deliver(watch, splitter.flush(), index)

    async def _deliver(self, watch: _Watch, lines: list[tuple[str, str]], index: int) -> int:
        """Number lines by their place in the run's log; skip those already delivered."""
        if not lines:
            return index
        first_seq = watch.run_first_seq + index
        skip = max(0, min(len(lines), watch.last_seq - first_seq + 1))
        seq = first_seq + skip
        for stream, chunk in batches(lines[skip:]):
            await self._events.put(
                OutputBatch(server_id=watch.server_id, seq=seq, stream=stream, lines=chunk)
            )
            seq += len(chunk)
            watch.last_seq = seq - 1
            self._save(watch.server_id, lastSeq=watch.last_seq)
        return index + len(lines)

    async def _report_exit(self, watch: _Watch, exit_code: int | None) -> None:
        record = self._record(watch.server_id) or {}
        if record.get("containerId") != watch.container_id:
            return  # a newer run replaced this container meanwhile
        try:
            info = await self.engine.inspect(watch.container_id)
        except EngineError:
            info = None
        state, code, message = _final_state(record, info, exit_code)
        await self._events.put(
            StateChange(server_id=watch.server_id, state=state, exit_code=code, message=message)
        )
        self._save(watch.server_id, state=state, exitCode=code, message=message, reported=True)

    async def _follow_stats(self, watch: _Watch) -> None:
        while not watch.exited.is_set():
            try:
                async for sample in self.engine.stats(watch.container_id):
                    if "read" not in sample:
                        continue
                    watch.latest = server_stats(watch.server_id, sample)
                    watch.sampled.set()
                return
            except EngineError:
                await asyncio.sleep(_RETRY_DELAY * 2)

    # ------------------------------------------------------------------ attach

    async def reattach(self) -> list[ServerStatus]:
        """Find this node's containers by label and watch them again.

        A container is adopted when its server's record here names it (two
        agents may share one engine). Running ones continue their output
        after the last stored sequence number; exits nobody reported are
        reported now; install containers an earlier agent left behind are
        removed (the panel marks that install failed; it is retried on request).
        """
        labelled = await self.engine.list_by_label(SERVER_LABEL)
        present: set[str] = set()
        for container in labelled:
            labels = container.get("Labels") or {}
            server_id = str(labels.get(SERVER_LABEL, ""))
            if not SERVER_ID.match(server_id):
                continue
            container_id = str(container.get("Id", ""))
            if labels.get(ROLE_LABEL) == "install":
                if (self.run_root / server_id).is_dir():
                    await self.engine.remove(container_id)
                continue
            record = self._record(server_id)
            if record is not None and record.get("containerId") == container_id:
                present.add(server_id)
        statuses = []
        for run_dir in sorted(self.run_root.iterdir()):
            server_id = run_dir.name
            if not run_dir.is_dir() or not SERVER_ID.match(server_id):
                continue
            record = self._record(server_id)
            if record is None:
                continue
            status = await self.status(server_id)
            statuses.append(status)
            if server_id in self._watches:
                continue
            if server_id in present and (status.running or not record.get("reported")):
                self._watch(server_id)
            elif not record.get("reported"):
                await self._report_missing(server_id, record)
        return statuses

    async def _report_missing(self, server_id: str, record: dict[str, Any]) -> None:
        message = "container disappeared"
        await self._events.put(
            StateChange(server_id=server_id, state="crashed", exit_code=None, message=message)
        )
        self._save(server_id, state="crashed", exitCode=None, message=message, reported=True)

    def attached(self) -> list[str]:
        return sorted(sid for sid, watch in self._watches.items() if not watch.exited.is_set())

    def last_seq(self, server_id: str) -> int | None:
        watch = self._watches.get(server_id)
        return None if watch is None else watch.last_seq

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        """Output batches and state changes of watched servers."""
        while True:
            yield await self._events.get()

    async def next_event(self, within: float | None = None) -> RuntimeEvent:
        """One event (raises ``TimeoutError`` after ``within`` seconds)."""
        return await asyncio.wait_for(self._events.get(), within)

    async def close(self) -> None:
        """Stop watching and close the engine connection; containers keep running."""
        for server_id in list(self._watches) + list(self._stops):
            await self._unwatch(server_id)
        await self.engine.close()

    # ------------------------------------------------------------------ stats

    async def stats(self, server_id: str) -> ServerStats:
        """The latest sample of the engine's stats stream (every 5 s on Podman)."""
        watch = self._watches.get(self._check(server_id))
        if watch is None or watch.exited.is_set():
            raise ServerNotRunning(f"server {server_id} is not running")
        if watch.latest is None:
            try:
                await asyncio.wait_for(watch.sampled.wait(), 5.0)
            except TimeoutError as exc:
                raise AgentRuntimeError(f"server {server_id}: no usage sample yet") from exc
        if watch.latest is None:  # pragma: no cover - set together with the event
            raise AgentRuntimeError(f"server {server_id}: no usage sample yet")
        return watch.latest

    # ------------------------------------------------------------------ install

    async def install(
        self,
        server_id: str,
        script: str,
        *,
        env: dict[str, str] | None = None,
        spec: LaunchSpec | None = None,
    ) -> AsyncIterator[OutputBatch]:
        """Run ``script`` in a short-lived container of ``spec.install_image``
        (default ``spec.image``) with the data folder at ``/mnt/server`` and
        ``/data``, yielding its output; raises :class:`InstallFailed` at the
        end if it exits non-zero. The container is removed in every case.
        """
        spec = spec or LaunchSpec()
        if (await self.status(server_id)).running:
            raise ServerAlreadyRunning(f"server {server_id} is running")
        image = spec.install_image or spec.image
        if not image:
            raise AgentRuntimeError(f"server {server_id} has no container image")
        async for line in self._ensure_image(image, install=True):
            yield _notice(server_id, line)
        yield _notice(server_id, f"running the install script in {image}")
        data_dir = self.server_dir(server_id)
        run_dir = self.run_dir(server_id)
        data_dir.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        script_dir = run_dir / "install"
        script_dir.mkdir(exist_ok=True)
        script_dir.chmod(0o755)
        (script_dir / "install.sh").write_text(script)
        name = f"{self.container_name(server_id, spec)}-install"
        await self.engine.remove(name)
        config = self._config(
            server_id,
            image,
            ["/bin/sh", f"{INSTALL_MOUNT}/install.sh"],
            env=dict(env or {}),
            binds=[
                f"{data_dir}:/mnt/server",
                f"{data_dir}:/data",
                f"{script_dir}:{INSTALL_MOUNT}:ro",
            ],
            working_dir="/mnt/server",
            spec=spec,
            role="install",
            limits=False,
            user=await self._owner(server_id),
        )
        try:
            container_id = await self.engine.create(name, config)
        except EngineRefused as exc:
            logger.warning("creating install container for %s failed: %s", server_id, exc.detail)
            shutil.rmtree(script_dir, ignore_errors=True)
            raise AgentRuntimeError(
                f"server {server_id}: the install container could not be created"
            ) from exc
        try:
            await self.engine.start(container_id)
            delivered = 0
            splitter = LineSplitter()
            async for frames in self.engine.logs(container_id, follow=True):
                lines: list[tuple[str, str]] = []
                for stream, data in frames:
                    lines += splitter.feed(stream, data)
                delivered += len(lines)
                for stream, chunk in batches(lines):
                    yield OutputBatch(server_id=server_id, seq=None, stream=stream, lines=chunk)
            code = await self.engine.wait(container_id)
            # The followed stream may end a little before the log is complete.
            splitter = LineSplitter()
            rest: list[tuple[str, str]] = []
            async for frames in self.engine.logs(container_id, follow=False):
                for stream, data in frames:
                    rest += splitter.feed(stream, data)
            rest = rest[delivered:] + splitter.flush()
            for stream, chunk in batches(rest):
                yield OutputBatch(server_id=server_id, seq=None, stream=stream, lines=chunk)
        except EngineRefused as exc:
            logger.warning("install container for %s failed: %s", server_id, exc.detail)
            raise AgentRuntimeError(f"server {server_id}: the install could not run") from exc
        finally:
            with contextlib.suppress(EngineError):
                await self.engine.remove(container_id)
            shutil.rmtree(script_dir, ignore_errors=True)
        if code != 0:
            raise InstallFailed(code)


def _notice(server_id: str, text: str) -> OutputBatch:
    """An install line from the agent itself (not the script), marked as such."""
    return OutputBatch(
        server_id=server_id, seq=None, stream="stdout", lines=[f"[hostplane] {text}"]
    )


def _running(info: dict[str, Any]) -> bool:
    state = info.get("State")
    return isinstance(state, dict) and bool(
        state.get("Running") or state.get("Status") in ("running", "paused")
    )


def _final_state(
    record: dict[str, Any], info: dict[str, Any] | None, wait_code: int | None
) -> tuple[str, int | None, str | None]:
    """``(state, exit code, message)`` of an exited container.

    Podman reports an OOM kill as exit 137 with ``OOMKilled=false``: a 137
    that neither a stop nor a kill asked for is taken as out of memory.
    """
    state_doc = info.get("State") if info is not None else None
    oom_flag = False
    code = wait_code
    if isinstance(state_doc, dict):
        oom_flag = bool(state_doc.get("OOMKilled"))
        if isinstance(state_doc.get("ExitCode"), int):
            code = int(state_doc["ExitCode"])
    if info is None and code is None:
        return "crashed", None, "container disappeared"
    requested = bool(record.get("stopRequested") or record.get("killRequested"))
    if oom_flag or (code == _OOM_EXIT and not requested):
        return "crashed", code, "out of memory"
    if requested or code == 0:
        return "stopped", code, None
    return "crashed", code, None


__all__ = ["DockerRuntime", "ImageUnavailable", "InstallImageUnavailable"]
