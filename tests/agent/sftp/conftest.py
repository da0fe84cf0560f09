"""A real agent with its SFTP server on, against the test app, and a paramiko client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import paramiko
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.config import Settings
from hostplane.core.runtime import Runtime
from hostplane.infra.servers.models import Server
from tests.conftest import panel_runtime
from tests.infra.conftest import Fleet, fleet
from tests.support.agents import LiveAgent, live_agents
from tests.support.infra import make_node, make_server

__all__ = ["fleet"]


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """The panel's runtime, as in the root conftest: these tests run the panel
    and an agent together, and ``tests/agent`` names its process runtime so."""
    async with panel_runtime(settings) as runtime:
        yield runtime


@dataclass
class SftpWorld:
    fleet: Fleet
    agent: LiveAgent
    server: Server
    elsewhere: Server
    """A server of the same owner on a node whose agent is not this one."""

    @property
    def port(self) -> int:
        port = self.agent.connection.sftp.port
        assert port is not None
        return port


@pytest.fixture
async def world(app: object, db: AsyncSession, fleet: Fleet) -> AsyncIterator[SftpWorld]:
    node, secret = await make_node(db, tenant=fleet.tenant, name="sftp-node")
    server = await make_server(
        db, tenant=fleet.tenant, owner=fleet.owner.user, node=node, template=fleet.template
    )
    elsewhere = await make_server(
        db, tenant=fleet.tenant, owner=fleet.owner.user, node=fleet.node, template=fleet.template
    )
    await db.commit()
    settings_of = {node.id: {"sftp_listen": "127.0.0.1:0"}}
    async with live_agents(app, [(node.id, secret)], settings_of=settings_of) as [agent]:
        agent.server_dir(server.id).mkdir(parents=True)
        agent.server_dir(elsewhere.id).mkdir(parents=True)
        yield SftpWorld(fleet, agent, server, elsewhere)


@contextlib.contextmanager
def sftp_client(port: int, username: str, password: str) -> Iterator[paramiko.SFTPClient]:
    """A logged-in SFTP session (blocking: call from a thread)."""
    transport = paramiko.Transport(("127.0.0.1", port))
    try:
        transport.connect(username=username, password=password)
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        with client:
            yield client
    finally:
        transport.close()


def login_refused(port: int, username: str, password: str) -> bool:
    transport = paramiko.Transport(("127.0.0.1", port))
    try:
        transport.connect(username=username, password=password)
    except paramiko.AuthenticationException:
        return True
    finally:
        transport.close()
    return False
