"""A server on a node with a real agent connected, and its owner logged in."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.infra.servers.models import Server
from tests.support.agents import LiveAgent, live_agents
from tests.support.identity import LoggedIn, logged_in, platform_tenant
from tests.support.infra import make_node, make_server, make_template


@dataclass
class Files:
    server: Server
    owner: LoggedIn
    agent: LiveAgent

    @property
    def base(self) -> str:
        return f"/api/servers/{self.server.id}/files"

    @property
    def folder(self) -> Path:
        return self.agent.server_dir(self.server.id)

    @property
    def headers(self) -> dict[str, str]:
        return self.owner.headers


@pytest.fixture
async def files(app: object, client: httpx.AsyncClient, db: AsyncSession) -> AsyncIterator[Files]:
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant)
    node, secret = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    server = await make_server(db, tenant=tenant, owner=owner.user, node=node, template=template)
    async with live_agents(app, [(node.id, secret)]) as [agent]:
        agent.server_dir(server.id).mkdir(parents=True, exist_ok=True)
        yield Files(server, owner, agent)
