"""A shop for the commerce tests: an owner-operator, a customer, a node and a template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.wallet import service as wallet
from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.ids import new_id
from hostplane.core.runtime import Runtime
from hostplane.identity.tenants.models import Tenant
from hostplane.infra.nodes.models import Node
from hostplane.infra.templates.models import Template
from tests.support.identity import LoggedIn, logged_in, platform_tenant
from tests.support.infra import make_node, make_template


@dataclass
class Shop:
    runtime: Runtime
    tenant: Tenant
    operator: LoggedIn
    customer: LoggedIn
    other: LoggedIn
    node: Node
    template: Template

    async def fund(self, user: LoggedIn, currency: str, amount: int) -> None:
        """Credit ``user``'s wallet in-process (as a top-up would)."""
        async with self.runtime.unit_of_work() as session:
            scope_to_tenant(session, self.tenant.id)
            await wallet.credit(
                session,
                tenant_id=self.tenant.id,
                user_id=user.user.id,
                currency=currency,
                amount=amount,
                kind="topup",
                key=f"test-topup:{new_id()}",
                source="test",
            )

    async def balances(self, user: LoggedIn) -> wallet.Balances:
        async with self.runtime.unit_of_work(read_only=True) as session:
            scope_to_tenant(session, self.tenant.id)
            return await wallet.balances(session, tenant_id=self.tenant.id, user_id=user.user.id)

    async def plan(self, client: httpx.AsyncClient, **values: Any) -> dict[str, Any]:
        body = {
            "name": f"Plan {new_id()[-5:]}",
            "currencyType": "coins",
            "price": 100,
            "periodDays": 30,
            "resources": {"memoryMb": 512, "cpuCores": 1, "diskMb": 1000, "databases": 1},
            "templateId": self.template.id,
        } | values
        created = await client.post("/api/admin/plans", json=body, headers=self.operator.headers)
        assert created.status_code == 201, created.text
        plan: dict[str, Any] = created.json()["data"]
        return plan


@pytest.fixture
async def shop(client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime) -> Shop:
    tenant = await platform_tenant(db)
    operator = await logged_in(client, db, tenant=tenant, role="owner")
    customer = await logged_in(client, db, tenant=tenant)
    other = await logged_in(client, db, tenant=tenant)
    node, _ = await make_node(db, tenant=tenant, port_range=(30000, 30099))
    template = await make_template(db, tenant=tenant)
    await db.commit()
    return Shop(runtime, tenant, operator, customer, other, node, template)


def deploy_body(plan: dict[str, Any], **values: Any) -> dict[str, Any]:
    return {"planId": plan["id"], "name": "bought", "environment": {"MEMORY": "512M"}} | values
