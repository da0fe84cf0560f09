"""Plans and servers bought on them, for the authorization matrix."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.subscriptions.models import ServerSubscription
from hostplane.core.ids import new_id


async def matrix_commerce(
    client: httpx.AsyncClient,
    db: AsyncSession,
    *,
    admin_headers: dict[str, str],
    owner_headers: dict[str, str],
    template_id: str,
) -> tuple[dict[str, str], dict[str, Callable[[], Awaitable[str]]]]:
    """Two free plans of one template, and makers of plans and of ``owner``'s servers
    bought on the first (their term running)."""

    async def plan(name: str) -> str:
        created = await client.post(
            "/api/admin/plans",
            json={
                "name": name,
                "currencyType": "coins",
                "price": 0,
                "resources": {"memoryMb": 256, "cpuCores": 1, "diskMb": 100},
                "templateId": template_id,
            },
            headers=admin_headers,
        )
        assert created.status_code == 201, created.text
        return str(created.json()["data"]["id"])

    plan_id = await plan("Matrix Free")
    other_plan_id = await plan("Matrix Other")

    async def fresh_plan_id() -> str:
        return await plan(f"Matrix {new_id()}")

    async def fresh_plan_server_id() -> str:
        deployed = await client.post(
            "/api/servers/deploy",
            json={"planId": plan_id, "name": "bought", "environment": {"MEMORY": "256M"}},
            headers=owner_headers,
        )
        assert deployed.status_code == 201, deployed.text
        data = deployed.json()["data"]
        await db.execute(
            update(ServerSubscription)
            .where(ServerSubscription.id == data["subscription"]["id"])
            .values(status="active")
        )
        await db.commit()
        return str(data["serverId"])

    subscription = await client.post(
        "/api/servers/deploy",
        json={"planId": plan_id, "name": "followed", "environment": {"MEMORY": "256M"}},
        headers=owner_headers,
    )
    assert subscription.status_code == 201, subscription.text
    ids = {
        "plan_id": plan_id,
        "other_plan_id": other_plan_id,
        "subscription_id": subscription.json()["data"]["subscription"]["id"],
    }
    makers: dict[str, Callable[[], Awaitable[str]]] = {
        "fresh_plan_id": fresh_plan_id,
        "fresh_plan_server_id": fresh_plan_server_id,
    }
    return ids, makers
