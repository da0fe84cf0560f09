"""The product as users run it, for the front-door suite.

Two shapes, each a set of separate processes that the tests reach only through
HTTP, ``/ws`` and SFTP:

- ``embedded``: README command 1 (``scripts/up.sh``: ``hostplane up`` with its
  own SQLite database, workers and a local node), with nothing but the data
  folder and the port given; the operator logs in with the credentials ``up``
  prints.
- ``production``: ``hostplane migrate`` and ``admin create``, then two
  ``hostplane serve`` replicas, one ``hostplane worker`` and one
  ``hostplane agent`` on PostgreSQL and Redis. The agent dials replica 0;
  clients use both replicas.

The embedded shape runs in the suite's SQLite pass and the production shape in
its PostgreSQL pass, so each shape runs once per CI run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from hostplane.core.ids import new_id
from tests.conftest import POSTGRES_URL, TEST_SECRET
from tests.support.processes import (
    base_env,
    free_port,
    hostplane_command,
    hostplane_process,
    stop_process,
    up_script_command,
    wait_for_health,
)
from tests.support.services import REDIS_URL

OPERATOR_EMAIL = "ops@example.com"
OPERATOR_PASSWORD = "long enough 1"
WAIT = 60.0
"""The longest any step of a flow may take before the test fails."""

_CREDENTIALS = re.compile(r"Log in as\s+(\S+) with password (\S+)")
_SFTP = re.compile(r"SFTP\s+(?:sftp://)?([0-9.]+|\[[0-9a-f:]+\]|localhost):(\d+)")


@dataclass
class Deployment:
    shape: str
    api: list[str]
    """Base URLs of the panel replicas (one for ``embedded``)."""
    operator_token: str
    node_id: str
    """The node servers are created on."""
    sftp: tuple[str, int] | None
    """Where the node's SFTP server listens (``None``: ``up`` printed no address)."""
    folder: Path
    agent_env: Callable[[dict[str, Any], Path], dict[str, str]]
    """The environment of an extra ``hostplane agent`` for a node made through the API."""
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def url(self, replica: int = 0) -> str:
        return self.api[replica % len(self.api)]

    def ws_url(self, token: str, replica: int = 0) -> str:
        return self.url(replica).replace("http://", "ws://") + f"/ws?token={token}"

    def client(self, token: str | None = None, replica: int = 0) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url(replica), headers=headers, timeout=WAIT)

    def operator(self, replica: int = 0) -> httpx.AsyncClient:
        return self.client(self.operator_token, replica)

    def start_agent(
        self, node: dict[str, Any], name: str, **settings: str
    ) -> subprocess.Popen[bytes]:
        """``hostplane agent`` for ``node`` (made through the API, with its secret)."""
        folder = self.folder / name
        folder.mkdir(exist_ok=True)
        with (self.folder / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                hostplane_command("agent", "--data-dir", str(folder)),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.agent_env(node, folder) | settings,
                start_new_session=True,
            )
        self.extra.append(process)
        return process

    def log(self, name: str) -> str:
        path = self.folder / name
        return path.read_text(errors="replace") if path.exists() else f"(no {name})"


def _login(base_url: str, email: str, password: str) -> str:
    answer = httpx.post(
        f"{base_url}/api/auth/login", json={"email": email, "password": password}, timeout=WAIT
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["data"]["token"]
    return token


def _wait_online(base_url: str, token: str, *, name: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        listed = httpx.get(
            f"{base_url}/api/nodes", headers={"Authorization": f"Bearer {token}"}, timeout=WAIT
        ).json()["data"]
        for node in listed:
            if (name is None or node["name"] == name) and node["isOnline"]:
                return dict(node)
        time.sleep(0.2)
    raise AssertionError(f"no node {name or ''} came online within {WAIT} s")


def _agent_env(panel_ws: str, node: dict[str, Any], folder: Path, **extra: str) -> dict[str, str]:
    return base_env(
        HOSTPLANE_AGENT__PANEL_URL=panel_ws,
        HOSTPLANE_AGENT__NODE_ID=node["id"],
        HOSTPLANE_AGENT__TOKEN=node["secret"],
        HOSTPLANE_AGENT__DATA_DIR=str(folder),
        HOSTPLANE_AGENT__HEARTBEAT_INTERVAL="1",
        **extra,
    )


@contextlib.contextmanager
def embedded(folder: Path, **settings: str) -> Iterator[Deployment]:
    """README command 1 on a fresh folder, exactly as a newcomer runs it.

    ``settings`` are ``HOSTPLANE_*`` variables for ``up`` and its local agent."""
    data = folder / "data"
    port = free_port()
    with hostplane_process(
        [],
        port=port,
        log_path=folder / "up.log",
        env=base_env(**settings),
        command=up_script_command("--data-dir", str(data), "--port", str(port)),
    ) as panel:
        output = panel.output()
        credentials = _CREDENTIALS.search(output)
        assert credentials, output
        token = _login(panel.base_url, credentials.group(1), credentials.group(2))
        node = _wait_online(panel.base_url, token, name="local")
        sftp = _SFTP.search(output)
        deployment = Deployment(
            shape="embedded",
            api=[panel.base_url],
            operator_token=token,
            node_id=node["id"],
            sftp=(sftp.group(1).strip("[]"), int(sftp.group(2))) if sftp else None,
            folder=folder,
            agent_env=lambda n, f: _agent_env(f"ws://127.0.0.1:{port}/ws", n, f),
        )
        try:
            yield deployment
        finally:
            for process in deployment.extra:
                stop_process(process)


def _new_postgres_database() -> tuple[str, Callable[[], None]]:
    """A new empty PostgreSQL database next to the suite's: its URL and how to drop it."""
    name = f"hostplane_e2e_{new_id()}"
    admin_url = make_url(POSTGRES_URL).set(database="postgres")

    async def run(statement: str) -> None:
        engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                await connection.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    return url, lambda: asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _run_checked(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False, timeout=WAIT)
    assert done.returncode == 0, done.stdout + done.stderr


@contextlib.contextmanager
def production(folder: Path, **settings: str) -> Iterator[Deployment]:
    """``serve`` x2 + ``worker`` + ``agent`` on PostgreSQL and Redis.

    ``settings`` are ``HOSTPLANE_*`` variables for every process (agents included)."""
    url, drop = _new_postgres_database()
    # Each deployment its own Redis namespace: events, and rate-limit counters
    # (logins from 127.0.0.1 in earlier modules must not spend this one's budget).
    namespace = f"e2e{new_id()[-8:]}"
    try:
        env = base_env(
            HOSTPLANE_SECRET_KEY=TEST_SECRET,
            HOSTPLANE_DATABASE_URL=url,
            HOSTPLANE_REDIS_URL=REDIS_URL,
            HOSTPLANE_EVENT_CHANNEL_PREFIX=namespace,
            HOSTPLANE_RATE_LIMITS__KEY_PREFIX=f"{namespace}:ratelimit",
            HOSTPLANE_LOG_FORMAT="json",
            **settings,
        )
        _run_checked(hostplane_command("migrate", "--data-dir", str(folder)), env)
        _run_checked(
            hostplane_command(
                "admin", "create", "--data-dir", str(folder),
                "--email", OPERATOR_EMAIL, "--password", OPERATOR_PASSWORD, "--role", "owner",
            ),
            env,
        )  # fmt: skip
        ports = [free_port(), free_port()]
        with contextlib.ExitStack() as stack:
            replicas = [
                stack.enter_context(
                    hostplane_process(
                        ["serve", "--data-dir", str(folder), "--port", str(port)],
                        port=port,
                        log_path=folder / f"serve-{index}.log",
                        env=env,
                    )
                )
                for index, port in enumerate(ports)
            ]
            with (folder / "worker.log").open("wb") as log:
                worker = subprocess.Popen(
                    hostplane_command("worker", "--data-dir", str(folder)),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            stack.callback(stop_process, worker)
            base = replicas[0].base_url
            token = _login(base, OPERATOR_EMAIL, OPERATOR_PASSWORD)
            node = httpx.post(
                f"{base}/api/nodes",
                headers={"Authorization": f"Bearer {token}"},
                json={
                    "name": "node-a",
                    "hostname": "127.0.0.1",
                    "publicAddress": "127.0.0.1",
                    "maxMemoryMb": 8192,
                    "maxCpuCores": 8,
                    "maxDiskMb": 20480,
                },
                timeout=WAIT,
            )
            assert node.status_code == 201, node.text
            sftp_port = free_port()
            deployment = Deployment(
                shape="production",
                api=[replica.base_url for replica in replicas],
                operator_token=token,
                node_id=node.json()["data"]["id"],
                sftp=("127.0.0.1", sftp_port),
                folder=folder,
                agent_env=lambda n, f: _agent_env(f"ws://127.0.0.1:{ports[0]}/ws", n, f),
            )
            stack.callback(lambda: [stop_process(p) for p in deployment.extra])
            # The first node's agent serves SFTP too (its setting, as an operator sets it).
            deployment.start_agent(
                node.json()["data"],
                "agent-a",
                HOSTPLANE_AGENT__SFTP_LISTEN=f"127.0.0.1:{sftp_port}",
                **settings,
            )
            _wait_online(base, token, name="node-a")
            for replica in replicas:
                wait_for_health(replica.base_url, replica.process, replica.log_path)
            yield deployment
    finally:
        drop()


# --- helpers the flows share ------------------------------------------------------------------


async def eventually(
    check: Callable[[], Any], *, what: str, timeout: float = WAIT, every: float = 0.2
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


async def server_status(http: httpx.AsyncClient, server_id: str) -> str:
    answer = await http.get(f"/api/servers/{server_id}")
    assert answer.status_code == 200, answer.text
    status: str = answer.json()["data"]["status"]
    return status


async def wait_status(http: httpx.AsyncClient, server_id: str, *wanted: str) -> str:
    async def reached() -> str | None:
        status = await server_status(http, server_id)
        return status if status in wanted else None

    result: str = await eventually(reached, what=f"server {server_id} to be {wanted}")
    return result


async def next_matching(ws: Any, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        while True:
            message = json.loads(await ws.recv())
            if predicate(message):
                return dict(message)


def console_has(server_id: str, text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: (
        m.get("type") == "server_log"
        and m.get("serverId") == server_id
        and text in m.get("data", "")
    )


def state_is(server_id: str, state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: (
        m.get("type") == "server_state_update"
        and m.get("serverId") == server_id
        and m.get("state") == state
    )
