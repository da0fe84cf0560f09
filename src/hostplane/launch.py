"""Starting hostplane processes: settings, the listening socket, the database
check, migrations and the HTTP server, shared by the commands of ``hostplane``.

Every expected failure is a :class:`CliError` whose message is the one line
the command prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.config import Settings, load_settings, redact_url
from hostplane.core.heap import settle_heap

T = TypeVar("T")


class CliError(Exception):
    """A failure to report as one line."""


def settings_for(data_dir: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(data_dir=data_dir, **overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'config'}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise CliError(f"invalid configuration: {problems}") from None
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None


def run(coroutine: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await coroutine

    return asyncio.run(wrapper())


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front: a taken port is a clear error, not a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CliError(
                f"port {port} on {host} is already in use; choose another with --port"
            ) from None
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def check_database(settings: Settings) -> None:
    from hostplane.core.db.engine import create_engine

    engine = create_engine(settings)
    try:
        async with asyncio.timeout(10), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (DBAPIError, OSError, TimeoutError) as exc:
        raise CliError(
            f"cannot reach the database at {redact_url(settings.database_url)}: {reason(exc)}"
        ) from None
    finally:
        await engine.dispose()


def reason(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc.__cause__ or exc
    message = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return message[:200]


async def migrate(settings: Settings) -> str | None:
    from hostplane.core.db.engine import create_engine
    from hostplane.migrations.runner import current_revision, upgrade

    engine = create_engine(settings)
    try:
        await upgrade(engine)
        return await current_revision(engine)
    except (DBAPIError, OSError) as exc:
        raise CliError(
            f"cannot migrate the database at {redact_url(settings.database_url)}: {reason(exc)}"
        ) from None
    finally:
        await engine.dispose()


def serve(settings: Settings, sock: socket.socket, *, workers: int, processes: int = 1) -> None:
    """Serve HTTP on ``sock``: in this process, or in ``processes`` forked ones.

    ``workers`` is the number of job workers inside each app (0 for ``serve``).
    """
    if processes <= 1:
        _serve_here(settings, sock, workers=workers)
        return
    _supervise(settings, sock, workers=workers, processes=processes)


def _serve_here(settings: Settings, sock: socket.socket, *, workers: int) -> None:
    from hostplane.app import create_app

    app = create_app(settings, workers=workers)
    settle_heap()
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        # Forwarded headers are read by ForwardedClientMiddleware, from the
        # configured trusted proxies only (uvicorn's default trusts 127.0.0.1).
        proxy_headers=False,
        server_header=False,
        ws_per_message_deflate=settings.http.websocket_compression,
        # Open WebSockets (consoles, agents) must not hold a shutdown forever;
        # agents reconnect to another replica or to the restarted panel.
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _supervise(settings: Settings, sock: socket.socket, *, workers: int, processes: int) -> None:
    """Fork ``processes`` servers sharing ``sock``; stop them all together.

    Each child builds its own app (engine, pool, event loop) after the fork:
    nothing with a connection or a thread in it crosses the fork. The kernel
    spreads accepted connections over the processes blocked on the socket.
    When one child dies on its own the others are stopped too and the command
    fails with one line: a half-sized panel that looks healthy is worse.
    """
    children: set[int] = set()
    stopping = False

    def stop_all() -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        stop_all()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, measured by the CLI tests
            _child(settings, sock, workers=workers)
        children.add(pid)
    if stopping:
        stop_all()
    failure: str | None = None
    # Waiting has an end: every child exits on SIGTERM within uvicorn's
    # graceful shutdown timeout.
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        if not stopping:
            stopping = True
            failure = f"server process {pid} {_exit_reason(status)}; stopped the others"
            stop_all()
    sock.close()
    if failure is not None:
        raise CliError(failure)


def _child(settings: Settings, sock: socket.socket, *, workers: int) -> None:
    # uvicorn installs its own SIGTERM/SIGINT handling for graceful shutdown.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    code = 0
    try:
        _serve_here(settings, sock, workers=workers)
    except BaseException as exc:  # noqa: BLE001 - the child must never return into the parent's code
        sys.stderr.write(f"server process {os.getpid()} failed: {reason(exc)}\n")
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _exit_reason(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one committed transaction on the configured database."""

    async def transaction() -> T:
        from hostplane.app import build_runtime

        runtime = build_runtime(settings)
        # Running panels hear what the change concerns (their principal
        # caches drop an account disabled from the command line, say).
        await runtime.bus.start()
        try:
            async with runtime.unit_of_work() as session:
                return await work(session)
        finally:
            await runtime.bus.close()
            await runtime.engine.dispose()

    return run(transaction())


def url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - only for display
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}"
