"""A small world for server tests: a tenant, an operator, an owner, another user, a node."""

from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.identity.tenants.models import Tenant
from hostplane.infra.nodes.models import Node
from hostplane.infra.servers.models import Server
from hostplane.infra.templates.models import Template
from tests.support.identity import LoggedIn, logged_in, platform_tenant
from tests.support.infra import make_node, make_server, make_template


@dataclass
class Fleet:
    tenant: Tenant
    admin: LoggedIn
    owner: LoggedIn
    other: LoggedIn
    node: Node
    template: Template
    server: Server


@pytest.fixture
async def fleet(client: httpx.AsyncClient, db: AsyncSession) -> Fleet:
    tenant = await platform_tenant(db)
    admin = await logged_in(client, db, tenant=tenant, role="admin")
    owner = await logged_in(client, db, tenant=tenant)
    other = await logged_in(client, db, tenant=tenant)
    node, _ = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    server = await make_server(db, tenant=tenant, owner=owner.user, node=node, template=template)
    return Fleet(tenant, admin, owner, other, node, template, server)
