"""A real panel process on a fresh database with an operator logged in, and
agent processes, for the end-to-end tests."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hostplane.core.ids import new_id
from tests.conftest import POSTGRES_URL, TEST_SECRET
from tests.support.databases import empty_database
from tests.support.processes import base_env, free_port, hostplane_command, hostplane_process

OPERATOR_EMAIL = "ops@example.com"
OPERATOR_PASSWORD = "long enough 1"


@dataclass
class LivePanel:
    port: int
    token: str
    """The operator's access token (also set on ``http``)."""
    http: httpx.AsyncClient
    env: dict[str, str]
    """The panel's environment (its database), for more processes on it."""

    async def add_node(self, prefix: str) -> dict[str, Any]:
        """A node on this machine (its agent connects to 127.0.0.1), with its secret."""
        response = await self.http.post(
            "/api/nodes",
            json={
                "name": f"{prefix}-{new_id()[-4:]}",
                "hostname": "127.0.0.1",
                "publicAddress": "127.0.0.1",
                "maxMemoryMb": 4096,
                "maxCpuCores": 2,
            },
        )
        assert response.status_code == 201, response.text
        node: dict[str, Any] = response.json()["data"]
        return node


@contextlib.asynccontextmanager
async def panel_process(
    tmp_path: Path, **extra_env: str
) -> AsyncIterator[tuple[int, httpx.AsyncClient, dict[str, str]]]:
    """``hostplane serve`` on a migrated empty database with an owner account;
    its port, a client nobody has logged in with yet, and its environment."""
    async with empty_database(POSTGRES_URL, tmp_path) as url:
        env = base_env(
            HOSTPLANE_SECRET_KEY=TEST_SECRET,
            HOSTPLANE_DATABASE_URL=url,
            HOSTPLANE_LOG_FORMAT="json",
            **extra_env,
        )
        operator = ("--email", OPERATOR_EMAIL, "--password", OPERATOR_PASSWORD, "--role", "owner")
        for args in (("migrate",), ("admin", "create", *operator)):
            done = subprocess.run(
                hostplane_command(*args, "--data-dir", str(tmp_path)),
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
        port = free_port()
        with hostplane_process(
            ["serve", "--data-dir", str(tmp_path), "--port", str(port)],
            port=port,
            log_path=tmp_path / "panel.log",
            env=env,
        ) as panel:
            async with httpx.AsyncClient(base_url=panel.base_url, timeout=20) as http:
                yield port, http, env


@contextlib.asynccontextmanager
async def live_panel(tmp_path: Path, **extra_env: str) -> AsyncIterator[LivePanel]:
    """``hostplane serve`` on a migrated empty database with an owner logged in."""
    async with panel_process(tmp_path, **extra_env) as (port, http, env):
        login = await http.post(
            "/api/auth/login",
            json={"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD},
        )
        token = login.json()["data"]["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        yield LivePanel(port, token, http, env)


def start_agent(tmp_path: Path, env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
    """``hostplane agent`` with its data under ``tmp_path/agent``, logging to ``log_name``."""
    with (tmp_path / log_name).open("wb") as log:
        return subprocess.Popen(
            hostplane_command("agent", "--data-dir", str(tmp_path / "agent")),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
