"""The ``hostplane`` command.

Scripts and operators depend on this contract: every command takes
``--data-dir`` (env ``HOSTPLANE_DATA_DIR``); ``up`` and ``serve`` take
``--host`` and ``--port``; failures print one line and exit non-zero.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane import __version__, launch
from hostplane.core.config import Settings, redact_url
from hostplane.core.errors import HostplaneError
from hostplane.core.logging import configure_logging
from hostplane.launch import CliError
from hostplane.platform.audit.cli import audit_cli

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


# The helpers keep their old names here: the commands below read as before.
_settings = launch.settings_for
_run = launch.run
_bind = launch.bind
_check_database = launch.check_database
_migrate = launch.migrate
_serve = launch.serve
_in_transaction = launch.in_transaction


# ---- commands --------------------------------------------------------------


@cli.command()
def up(
    data_dir: DataDirOption = None,
    host: HostOption = None,
    port: PortOption = None,
    admin_email: Annotated[
        str | None, typer.Option("--admin-email", help="Email of the first admin, on first start.")
    ] = None,
    sftp_port: Annotated[
        int | None,
        typer.Option(
            "--sftp-port",
            help="The local node's SFTP port (0: any free one). Default: the last one, else 2022, else any free one.",
            min=0,
            max=65535,
        ),
    ] = None,
) -> None:
    """Run everything on this machine: database, panel and workers, from one folder."""
    from hostplane import embedded

    embedded.up(
        out,
        data_dir=data_dir,
        host=host,
        port=port,
        admin_email=admin_email,
        sftp_port=sftp_port,
    )


@cli.command()
def serve(
    data_dir: DataDirOption = None,
    host: HostOption = None,
    port: PortOption = None,
    workers: Annotated[
        int,
        typer.Option("--workers", min=1, max=64, help="Server processes sharing the port."),
    ] = 1,
) -> None:
    """Run the panel API only (production: several replicas behind a load balancer)."""
    settings = _settings(data_dir, host=host, port=port)
    if workers > 1 and not settings.redis_url:
        # Each process has its own in-memory event bus: an agent's socket held
        # by one would be out of reach of commands and consoles on the others.
        raise CliError("--workers above 1 needs redis_url (HOSTPLANE_REDIS_URL)")
    configure_logging(level=settings.log_level, fmt=settings.effective_log_format)
    sock = _bind(settings.host, settings.port)
    _run(_check_database(settings))
    _serve(settings, sock, workers=0, processes=workers)


@cli.command()
def worker(
    data_dir: DataDirOption = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Jobs run at once.")
    ] = None,
) -> None:
    """Run background work: installs, backups, transfers, retention, scheduled tasks."""
    settings = _settings(data_dir)
    configure_logging(level=settings.log_level, fmt=settings.effective_log_format)
    _run(_check_database(settings))

    async def work() -> None:
        from hostplane.app import build_runtime
        from hostplane.infra.schedules.scheduler import Scheduler
        from hostplane.platform.admin.live import ConfigFollower
        from hostplane.platform.jobs.worker import Worker

        runtime = build_runtime(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await runtime.bus.start()
        # Jobs read the runtime configuration too (limits, prices): follow its changes.
        config_follower = ConfigFollower(runtime)
        await config_follower.start()
        try:
            loops = [Worker(runtime, concurrency=concurrency).run(stop)]
            if settings.schedules.enabled:
                loops.append(Scheduler(runtime).run(stop))
            await asyncio.gather(*loops)
        finally:
            await config_follower.close()
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
    """Create an operator account (prompts only for missing values, and only on a terminal).

    A fresh folder is prepared as ``up`` prepares it (a config with a generated
    secret, the database migrated): scripted installs create the first operator
    before the first start."""
    from hostplane import embedded
    from hostplane.identity.bootstrap import create_admin

    if role not in ("owner", "admin"):
        raise CliError("--role must be owner or admin")
    email = _ask(email, "Email")
    password = _ask(password, "Password", secret=True)
    settings = embedded.prepare_folder(data_dir)
    embedded.prepare_database(settings)

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

    The token comes from the config file or HOSTPLANE_AGENT__TOKEN (never a flag:
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
            "the agent needs a node id and a token (config file or HOSTPLANE_AGENT__NODE_ID / HOSTPLANE_AGENT__TOKEN)"
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


ledger_cli = typer.Typer(help="The money ledger.", no_args_is_help=True)
cli.add_typer(ledger_cli, name="ledger")


@ledger_cli.command("verify")
def ledger_verify(data_dir: DataDirOption = None) -> None:
    """Check that every movement sums to zero and every balance equals its entries."""
    from hostplane.commerce.ledger.verify import verify

    settings = _settings(data_dir)
    _run(_check_database(settings))
    report = _in_transaction(settings, verify)
    if not report.ok:
        more = len(report.problems) - 1
        _fail(report.problems[0] + (f" (and {more} more problems)" if more else ""))
    out.print(f"ok: {report.transactions} movements on {report.accounts} accounts balance")


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
