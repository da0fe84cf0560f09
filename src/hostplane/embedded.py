"""The embedded default (``hostplane up``): one folder, the panel, its workers
and a local node whose agent runs as a child.

``up`` writes a config with a generated secret on first start, migrates the
database, creates the first operator and registers this machine as a node of the default tenant and
starts ``hostplane agent`` next to the panel, so a newcomer can create a
server from a bundled template and watch its console without setting up a
node. The node secret is written once to ``<data dir>/agent.toml`` (mode
0600) because the panel keeps only its hash. The agent is a separate
process: stopping or restarting the panel leaves the servers running.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane import __version__, launch
from hostplane.core.config import Settings, default_data_dir
from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.logging import configure_logging
from hostplane.identity.tenants.service import ensure_default_tenant
from hostplane.infra.nodes import service as nodes
from hostplane.infra.nodes.models import UNLIMITED, Node
from hostplane.infra.templates import service as templates

LOCAL_NODE_NAME = "local"
DEFAULT_SFTP_PORT = 2022
AGENT_CONFIG = "agent.toml"


def _machine_capacity(data_dir: Path) -> tuple[int, float, int]:
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    disk_mb = shutil.disk_usage(data_dir).total // (1024 * 1024)
    return int(memory_mb), float(os.cpu_count() or 1), int(disk_mb)


def _write_agent_config(
    path: Path, *, panel_url: str, node_id: str, secret: str, data_dir: Path, sftp_listen: str = ""
) -> None:
    body = (
        "# Written by `hostplane up`: the local node's agent. Keep it private.\n"
        f'panel_url = "{panel_url}"\n'
        f'node_id = "{node_id}"\n'
        f'token = "{secret}"\n'
        f'data_dir = "{data_dir}"\n'
        f'sftp_listen = "{sftp_listen}"\n'
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(body)
    temporary.replace(path)


async def ensure_local_node(
    session: AsyncSession, settings: Settings, *, panel_url: str, sftp_listen: str = ""
) -> Path:
    """The local node exists and ``agent.toml`` holds working credentials; returns its path.

    The first start also adds the bundled templates to the default tenant, so a
    newcomer's first server is one request away.
    """
    tenant = await ensure_default_tenant(session)
    scope_to_tenant(session, tenant.id)
    config = settings.data_dir / AGENT_CONFIG
    node = await session.scalar(select(Node).where(Node.name == LOCAL_NODE_NAME))
    agent_dir = settings.data_dir / "agent"
    if node is None:
        memory, cpus, disk = _machine_capacity(settings.data_dir)
        node, secret = await nodes.create_node(
            session,
            name=LOCAL_NODE_NAME,
            description="This machine (hostplane up)",
            hostname="127.0.0.1",
            public_address="127.0.0.1",
            max_memory_mb=memory,
            max_cpu_cores=cpus,
            max_disk_mb=disk,
            # A machine's servers mostly idle: counting each one's cores against
            # the machine's would refuse the third 1-core server on 2 cores.
            cpu_overallocate=UNLIMITED,
        )
        await templates.install_bundled_templates(session)
    elif config.is_file():
        # Keep the secret; follow a changed port.
        secret = (
            _read_token(config) or (await nodes.issue_deployment_token(session, node.id)).secret
        )
    else:
        # The file is gone: only a new secret can be written down.
        secret = (await nodes.issue_deployment_token(session, node.id)).secret
    _write_agent_config(
        config,
        panel_url=panel_url,
        node_id=node.id,
        secret=secret,
        data_dir=agent_dir,
        sftp_listen=sftp_listen,
    )
    return config


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def sftp_address(config: Path, host: str, requested: int | None) -> tuple[str, int]:
    """Where the local node's SFTP server listens: ``requested`` (0: any free
    port), else the port of the last start, else Catalyst's 2022, else any free
    port, so a second ``up`` on the same machine still starts."""
    if requested is not None:
        if requested and not _bindable(host, requested):
            raise launch.CliError(
                f"SFTP port {requested} on {host} is already in use; choose another with --sftp-port"
            )
        return host, requested or _free_port(host)
    import tomllib

    try:
        previous = str(tomllib.loads(config.read_text()).get("sftp_listen") or "")
    except (OSError, tomllib.TOMLDecodeError):
        previous = ""
    candidates = [int(previous.rpartition(":")[2])] if previous.rpartition(":")[2].isdigit() else []
    for port in [*candidates, DEFAULT_SFTP_PORT]:
        if _bindable(host, port):
            return host, port
    return host, _free_port(host)


def _read_token(config: Path) -> str | None:
    import tomllib

    try:
        token = tomllib.loads(config.read_text()).get("token")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return token if isinstance(token, str) and token else None


def start_local_agent(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """``hostplane agent --config FILE`` as a child process, logging to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "hostplane", "agent", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


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


def prepare_folder(data_dir: Path | None, **overrides: Any) -> Settings:
    """The embedded default's folder exists with a config holding a generated secret
    (unless the secret comes from elsewhere); returns the settings it gives."""
    folder = data_dir or Path(os.environ.get("HOSTPLANE_DATA_DIR") or default_data_dir())
    _write_embedded_config(folder)
    return launch.settings_for(folder, **{k: v for k, v in overrides.items() if v is not None})


def prepare_database(settings: Settings) -> None:
    """The database answers and its schema is current."""
    launch.run(launch.check_database(settings))
    launch.run(launch.migrate(settings))


def up(
    out: Console,
    *,
    data_dir: Path | None,
    host: str | None,
    port: int | None,
    admin_email: str | None,
    sftp_port: int | None = None,
) -> None:
    """Run everything on this machine: database, panel and workers, from one folder."""
    from hostplane.identity.bootstrap import DEFAULT_ADMIN_EMAIL, ensure_installation

    settings = prepare_folder(data_dir, host=host, port=port)
    configure_logging(level=settings.log_level, fmt=settings.effective_log_format)
    sock = launch.bind(settings.host, settings.port)
    bound_port = sock.getsockname()[1]
    prepare_database(settings)
    # SFTP listens where the panel does (an empty host is every interface).
    listen_host = settings.host or "0.0.0.0"  # noqa: S104
    sftp_host, sftp_port = sftp_address(settings.data_dir / AGENT_CONFIG, listen_host, sftp_port)
    sftp_listen = f"[{sftp_host}]:{sftp_port}" if ":" in sftp_host else f"{sftp_host}:{sftp_port}"

    agent_config = launch.in_transaction(
        settings,
        lambda session: ensure_local_node(
            session,
            settings,
            panel_url=f"ws://127.0.0.1:{bound_port}/ws",
            sftp_listen=sftp_listen,
        ),
    )
    admin = launch.in_transaction(
        settings,
        lambda session: ensure_installation(
            session, admin_email=admin_email or DEFAULT_ADMIN_EMAIL
        ),
    )
    base = launch.url(settings.host, bound_port)
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
    shown_host = launch.url(sftp_host, sftp_port).removeprefix("http://")
    out.print(
        f"  SFTP        sftp://{shown_host} (username: a server's id, password: your access token)"
    )
    from hostplane.agent.isolation import startup_notice

    for line in startup_notice(agent_config):
        out.print(f"  {line}", markup=False, highlight=False)
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
        launch.serve(settings, sock, workers=1)
    finally:
        # The agent leaves its servers running; the next `up` re-attaches.
        agent.stop()
