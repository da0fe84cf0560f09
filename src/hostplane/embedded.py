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
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane import __version__, launch
from hostplane.core.config import Settings, default_data_dir
from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.logging import configure_logging
from hostplane.identity.tenants.service import ensure_default_tenant
from hostplane.infra.nodes import service as nodes
from hostplane.infra.nodes.models import Node

LOCAL_NODE_NAME = "local"
AGENT_CONFIG = "agent.toml"


def _machine_capacity(data_dir: Path) -> tuple[int, float, int]:
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    disk_mb = shutil.disk_usage(data_dir).total // (1024 * 1024)
    return int(memory_mb), float(os.cpu_count() or 1), int(disk_mb)


def _write_agent_config(
    path: Path, *, panel_url: str, node_id: str, secret: str, data_dir: Path
) -> None:
    body = (
        "# Written by `hostplane up`: the local node's agent. Keep it private.\n"
        f'panel_url = "{panel_url}"\n'
        f'node_id = "{node_id}"\n'
        f'token = "{secret}"\n'
        f'data_dir = "{data_dir}"\n'
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(body)
    temporary.replace(path)


async def ensure_local_node(session: AsyncSession, settings: Settings, *, panel_url: str) -> Path:
    """The local node exists and ``agent.toml`` holds working credentials; returns its path."""
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
        )
    elif config.is_file():
        # Keep the secret; follow a changed port.
        secret = (
            _read_token(config) or (await nodes.issue_deployment_token(session, node.id)).secret
        )
    else:
        # The file is gone: only a new secret can be written down.
        secret = (await nodes.issue_deployment_token(session, node.id)).secret
    _write_agent_config(
        config, panel_url=panel_url, node_id=node.id, secret=secret, data_dir=agent_dir
    )
    return config


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


def up(
    out: Console,
    *,
    data_dir: Path | None,
    host: str | None,
    port: int | None,
    admin_email: str | None,
) -> None:
    """Run everything on this machine: database, panel and workers, from one folder."""
    from hostplane.identity.bootstrap import DEFAULT_ADMIN_EMAIL, ensure_installation

    folder = data_dir or Path(os.environ.get("HOSTPLANE_DATA_DIR") or default_data_dir())
    _write_embedded_config(folder)
    settings = launch.settings_for(folder, host=host, port=port if port is not None else None)
    configure_logging(level=settings.log_level, fmt=settings.effective_log_format)
    sock = launch.bind(settings.host, settings.port)
    bound_port = sock.getsockname()[1]
    launch.run(launch.check_database(settings))
    launch.run(launch.migrate(settings))

    agent_config = launch.in_transaction(
        settings,
        lambda session: ensure_local_node(
            session, settings, panel_url=f"ws://127.0.0.1:{bound_port}/ws"
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
    out.print("")
    sys.stdout.flush()
    agent = start_local_agent(agent_config, settings.data_dir / "agent.log")

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
        agent.terminate()
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
