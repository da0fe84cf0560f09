"""The ``hostplane`` command.

Scripts and operators depend on this contract: every command takes
``--data-dir`` (env ``HOSTPLANE_DATA_DIR``); ``up`` and ``serve`` take
``--host`` and ``--port``; failures print one line and exit non-zero.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane import __version__
from hostplane.core.config import (
    Settings,
    default_data_dir,
    load_settings,
    redact_url,
)
from hostplane.core.errors import HostplaneError
from hostplane.core.logging import configure_logging
from hostplane.platform.audit.cli import audit_cli

T = TypeVar("T")

cli = typer.Typer(
    name="hostplane",
    help="hostplane: a hosting control plane.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
admin_cli = typer.Typer(help="Operator accounts.", no_args_is_help=True)
cli.add_typer(admin_cli, name="admin")
cli.add_typer(audit_cli, name="audit")

out = Console(soft_wrap=True)
DEFAULT_PORT = 8080

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", envvar="HOSTPLANE_DATA_DIR", help="Folder for the database, config and files."
    ),
]
HostOption = Annotated[str | None, typer.Option("--host", help="Address to listen on.")]
PortOption = Annotated[
    int | None, typer.Option("--port", help="Port to listen on.", min=0, max=65535)
]


class CliError(Exception):
    """A failure to report as one line."""


# ---- helpers ---------------------------------------------------------------


def _settings(data_dir: Path | None, **overrides: Any) -> Settings:
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


def _run(coroutine: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await coroutine

    return asyncio.run(wrapper())


def _bind(host: str, port: int) -> socket.socket:
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


async def _check_database(settings: Settings) -> None:
    from hostplane.core.db.engine import create_engine

    engine = create_engine(settings)
    try:
        async with asyncio.timeout(10), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (DBAPIError, OSError, TimeoutError) as exc:
        raise CliError(
            f"cannot reach the database at {redact_url(settings.database_url)}: {_reason(exc)}"
        ) from None
    finally:
        await engine.dispose()


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc.__cause__ or exc
    message = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return message[:200]


async def _migrate(settings: Settings) -> str | None:
    from hostplane.core.db.engine import create_engine
    from hostplane.migrations.runner import current_revision, upgrade

    engine = create_engine(settings)
    try:
        await upgrade(engine)
        return await current_revision(engine)
    except (DBAPIError, OSError) as exc:
        raise CliError(
            f"cannot migrate the database at {redact_url(settings.database_url)}: {_reason(exc)}"
        ) from None
    finally:
        await engine.dispose()


def _serve(settings: Settings, sock: socket.socket, *, workers: int) -> None:
    from hostplane.app import create_app

    app = create_app(settings, workers=workers)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        proxy_headers=True,
        server_header=False,
        # Open WebSockets (consoles, agents) must not hold a shutdown forever;
        # agents reconnect to another replica or to the restarted panel.
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _write_embedded_config(data_dir: Path) -> None:
    """First start of the embedded default: a config with a generated secret."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "hostplane.toml"
    if (
        path.exists()
        or os.environ.get("HOSTPLANE_CONFIG")
        or os.environ.get("HOSTPLANE_SECRET_KEY")
    ):
        return
    body = (
        "# Written by `hostplane up` on first start. HOSTPLANE_* environment variables override it.\n"
        'environment = "production"\n'
        f'secret_key = "{secrets.token_urlsafe(48)}"\n'
        'log_format = "console"\n'
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(body)


def _in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one committed transaction on the configured database."""

    async def run() -> T:
        from hostplane.app import build_runtime

        runtime = build_runtime(settings)
        try:
            async with runtime.unit_of_work() as session:
                return await work(session)
        finally:
            await runtime.engine.dispose()

    return _run(run())


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - only for display
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}"


# ---- commands --------------------------------------------------------------


@cli.command()
def up(
    data_dir: DataDirOption = None,
    host: HostOption = None,
    port: PortOption = None,
    admin_email: Annotated[
        str | None, typer.Option("--admin-email", help="Email of the first admin, on first start.")
    ] = None,
) -> None:
    """Run everything on this machine: database, panel and workers, from one folder."""
    from hostplane.identity.bootstrap import DEFAULT_ADMIN_EMAIL, ensure_installation

    folder = data_dir or Path(os.environ.get("HOSTPLANE_DATA_DIR") or default_data_dir())
    _write_embedded_config(folder)
    settings = _settings(folder, host=host, port=port if port is not None else None)
    configure_logging(level=settings.log_level, fmt=settings.effective_log_format)
    sock = _bind(settings.host, settings.port)
    bound_port = sock.getsockname()[1]
    _run(_check_database(settings))
    _run(_migrate(settings))

    from hostplane.embedded import ensure_local_node, start_local_agent

    agent_config = _in_transaction(
        settings,
        lambda session: ensure_local_node(
            session, settings, panel_url=f"ws://127.0.0.1:{bound_port}/ws"
        ),
    )
    admin = _in_transaction(
        settings,
        lambda session: ensure_installation(
            session, admin_email=admin_email or DEFAULT_ADMIN_EMAIL
        ),
    )
    base = _url(settings.host, bound_port)
    out.print(f"\n[bold]hostplane {__version__}[/bold] is starting")
    out.print(f"  Panel API   {base}/api")
    out.print(f"  API docs    {base}/docs")
    out.print(f"  Data folder {settings.data_dir}")
    if admin.password is not None:
        out.print(
            f"  Log in as   [bold]{admin.email}[/bold] with password [bold]{admin.password}[/bold]"
        )
        out.print(
            "              (shown this once: store it now, or reset it with `hostplane admin password`)"
        )
    else:
        out.print(
            f"  Log in as   [bold]{admin.email}[/bold] (password from the first start; reset with `hostplane admin password`)"
        )
    out.print(f"  Local node  agent log in {settings.data_dir / 'agent.log'}")
    out.print("")
    sys.stdout.flush()
    from hostplane.agent_watch import AgentWatch

    # Restarted whenever it dies, so the local node does not stay offline.
    agent = AgentWatch(lambda: start_local_agent(agent_config, settings.data_dir / "agent.log"))
    agent.start()

    def _exit(signum: int, _frame: object) -> None:
        # uvicorn re-raises the signal it stopped on once it has shut down;
        # turning it into SystemExit lets the agent be stopped below.
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit)
    try:
        _serve(settings, sock, workers=1)
    finally:
        # The agent leaves its servers running; the next `up` re-attaches.
        agent.stop()


@cli.command()
def serve(data_dir: DataDirOption = None, host: HostOption = None, port: PortOption = None) -> None:
    """Run the panel API only (production: several replicas behind a load balancer)."""
    settings = _settings(data_dir, host=host, port=port)
    configure_logging(level=settings.log_level, fmt=settings.effective_log_format)
    sock = _bind(settings.host, settings.port)
    _run(_check_database(settings))
    _serve(settings, sock, workers=0)


@cli.command()
def worker(
    data_dir: DataDirOption = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Jobs run at once.")
    ] = None,
) -> None:
    """Run background work: provisioning, webhooks, schedules, billing cycles."""
    settings = _settings(data_dir)
    configure_logging(level=settings.log_level, fmt=settings.effective_log_format)
    _run(_check_database(settings))

    async def work() -> None:
        from hostplane.app import build_runtime
        from hostplane.platform.jobs.worker import Worker

        runtime = build_runtime(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await runtime.bus.start()
        try:
            await Worker(runtime, concurrency=concurrency).run(stop)
        finally:
            await runtime.bus.close()
            await runtime.engine.dispose()

    _run(work())


@cli.command()
def migrate(data_dir: DataDirOption = None) -> None:
    """Bring the database schema up to date."""
    from hostplane.identity.roles.service import ensure_builtin_roles

    settings = _settings(data_dir)
    revision = _run(_migrate(settings))
    # Built-in roles are code: an upgrade refreshes their permission sets.
    _in_transaction(settings, ensure_builtin_roles)
    out.print(f"database at {redact_url(settings.database_url)} is at revision {revision}")


@cli.command()
def openapi(
    data_dir: DataDirOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the OpenAPI 3.1 document of the panel API."""
    from hostplane.app import create_app

    # The document does not depend on configuration; build it from neutral settings.
    settings = Settings(
        environment="development",
        data_dir=data_dir or Path(os.devnull),
        database_url="sqlite+aiosqlite:///:memory:",
    )
    document = json.dumps(create_app(settings).openapi(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(document)
    else:
        output.write_text(document)


def _ask(value: str | None, prompt: str, *, secret: bool = False) -> str:
    if value:
        return value
    if not sys.stdin.isatty():
        raise CliError(f"missing --{prompt.lower()} (no terminal to ask on)")
    answer: str = typer.prompt(prompt, hide_input=secret, confirmation_prompt=secret)
    return answer


@admin_cli.command("create")
def admin_create(
    email: Annotated[str | None, typer.Option("--email", help="Login email.")] = None,
    password: Annotated[
        str | None, typer.Option("--password", help="At least 8 characters.")
    ] = None,
    username: Annotated[
        str | None, typer.Option("--username", help="Defaults to the email's local part.")
    ] = None,
    role: Annotated[str, typer.Option("--role", help="owner or admin.")] = "admin",
    data_dir: DataDirOption = None,
) -> None:
    """Create an operator account (prompts only for missing values, and only on a terminal)."""
    from hostplane.identity.bootstrap import create_admin

    if role not in ("owner", "admin"):
        raise CliError("--role must be owner or admin")
    email = _ask(email, "Email")
    password = _ask(password, "Password", secret=True)
    settings = _settings(data_dir)
    _run(_check_database(settings))

    user = _in_transaction(
        settings,
        lambda session: create_admin(
            session, email=email, password=password, username=username, role=role
        ),
    )
    out.print(f"created {role} {user.email} (username {user.username}, id {user.id})")


@admin_cli.command("password")
def admin_password(
    email: Annotated[str | None, typer.Option("--email", help="The account's email.")] = None,
    password: Annotated[
        str | None, typer.Option("--password", help="The new password; generated when omitted.")
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Set a new password for an account (prints it when generated)."""
    from hostplane.core.security.passwords import generate_password
    from hostplane.identity.users.service import set_password

    email = _ask(email, "Email")
    settings = _settings(data_dir)
    _run(_check_database(settings))

    new_password = password or generate_password()
    user = _in_transaction(
        settings, lambda session: set_password(session, email=email, password=new_password)
    )
    shown = "" if password else f": {new_password}"
    out.print(f"password of {user.email} changed{shown}")


@cli.command()
def agent(
    config: Annotated[Path | None, typer.Option("--config", help="The agent's TOML file.")] = None,
    data_dir: DataDirOption = None,
    panel_url: Annotated[str | None, typer.Option("--panel-url", help="ws(s)://panel/ws")] = None,
    node_id: Annotated[str | None, typer.Option("--node-id")] = None,
) -> None:
    """Run the node agent: dial the panel, run this node's servers.

    The token comes from the config file or HOSTPLANE_AGENT_TOKEN (never a flag:
    flags show in the process list).
    """
    from hostplane.agent.config import AgentSettings
    from hostplane.agent.main import run as run_agent

    try:
        flags = {"data_dir": data_dir, "panel_url": panel_url, "node_id": node_id}
        settings = AgentSettings.load(config, **{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        raise CliError(f"invalid agent configuration: {exc.errors()[0]['msg']}") from None
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    if not settings.node_id or not settings.token.get_secret_value():
        raise CliError(
            "the agent needs a node id and a token (config file or HOSTPLANE_AGENT_NODE_ID / HOSTPLANE_AGENT_TOKEN)"
        )
    configure_logging(level="info", fmt="console" if sys.stderr.isatty() else "json")
    run_agent(settings)


templates_cli = typer.Typer(help="Server templates.", no_args_is_help=True)
cli.add_typer(templates_cli, name="templates")


@templates_cli.command("import")
def templates_import(
    file: Annotated[Path, typer.Argument(help="A Pterodactyl or Pelican egg (JSON).")],
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant slug; the default tenant when omitted.")
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Turn an egg into a template of a tenant."""
    from hostplane.core.db.tenancy import scope_to_tenant
    from hostplane.identity.auth.service import tenant_for_login
    from hostplane.identity.tenants.service import ensure_default_tenant
    from hostplane.infra.templates.service import import_egg

    try:
        egg = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {file}: {exc}") from None
    settings = _settings(data_dir)
    _run(_check_database(settings))

    async def create(session: AsyncSession) -> str:
        owner = (
            await tenant_for_login(session, tenant)
            if tenant
            else await ensure_default_tenant(session)
        )
        scope_to_tenant(session, owner.id)
        template = await import_egg(session, egg)
        return f"imported template {template.name!r} (id {template.id}) into tenant {owner.slug}"

    out.print(_in_transaction(settings, create))


keys_cli = typer.Typer(help="The keys that sign access tokens.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")


@keys_cli.command("rotate")
def keys_rotate(data_dir: DataDirOption = None) -> None:
    """Sign new tokens with a new key; the old key verifies until its tokens expire."""
    settings = _settings(data_dir)
    _run(_check_database(settings))

    async def rotate() -> str:
        from hostplane.app import build_runtime
        from hostplane.identity.auth.keys import rotate_signing_key

        runtime = build_runtime(settings)
        try:
            async with runtime.unit_of_work() as session:
                return await rotate_signing_key(session, runtime)
        finally:
            await runtime.engine.dispose()

    kid = _run(rotate())
    out.print(f"new signing key {kid}; replicas pick it up within a minute")


@cli.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"hostplane: error: {message}\n")
    raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one clear line for every expected failure, never a traceback."""
    try:
        cli(args=argv)
    except CliError as exc:
        _fail(str(exc))
    except HostplaneError as exc:
        _fail(exc.message)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        # A bug, not an operator error: still one line; the traceback goes to
        # the log at debug level (HOSTPLANE_LOG_LEVEL=debug).
        logging.getLogger("hostplane.cli").debug("unexpected error", exc_info=True)
        _fail(
            f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}"
        )


jobs_cli = typer.Typer(help="Background jobs.", no_args_is_help=True)
cli.add_typer(jobs_cli, name="jobs")

_JOB_DONE = ("succeeded", "failed")


async def _watch_job(settings: Settings, job_id: str, interval: float) -> tuple[str, str | None]:
    """Poll the job's row (any process may run it) and draw its progress until it ends."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from hostplane.app import build_runtime
    from hostplane.platform.jobs.models import Job

    runtime = build_runtime(settings)
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=out,
            transient=False,
        ) as bar:
            task = bar.add_task(job_id, total=100)
            while True:
                async with runtime.unit_of_work(read_only=True) as session:
                    job = await session.get(Job, job_id)
                    if job is None:
                        raise CliError(f"no job {job_id}")
                    status, percent = job.status, job.progress
                    note, error = job.progress_message, job.error_message
                    kind = job.type
                done = status in _JOB_DONE
                shown = 100 if status == "succeeded" else percent
                bar.update(task, completed=shown, description=f"{kind} {status} {note or ''}")
                if done:
                    return status, error
                await asyncio.sleep(interval)
    finally:
        await runtime.engine.dispose()


@jobs_cli.command("watch")
def jobs_watch(
    job_id: Annotated[str, typer.Argument(help="The job's id (the jobId a route answered).")],
    data_dir: DataDirOption = None,
    interval: Annotated[float, typer.Option(help="Seconds between looks.", min=0.1)] = 0.5,
) -> None:
    """Follow a job (install, backup, restore, transfer) with a progress bar until it
    ends; exits non-zero when it failed."""
    settings = _settings(data_dir)
    _run(_check_database(settings))
    status, error = _run(_watch_job(settings, job_id, interval))
    if status != "succeeded":
        raise CliError(f"job {job_id} failed: {error or 'no reason recorded'}")
    out.print(f"job {job_id} succeeded")
