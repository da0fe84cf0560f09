"""A hundred deploys at once on a wallet that covers ten: ten servers, a zero balance."""

import asyncio

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.subscriptions.models import ServerSubscription
from hostplane.infra.servers.models import Server
from tests.commerce.conftest import Shop, deploy_body
from tests.support.infra import make_node


async def test_a_hundred_deploys_on_a_wallet_for_ten(
    client: httpx.AsyncClient, db: AsyncSession, shop: Shop
) -> None:
    roomy, _ = await make_node(
        db,
        tenant=shop.tenant,
        max_memory_mb=1_000_000,
        max_cpu_cores=1000,
        port_range=(31000, 31199),
        name="roomy",
    )
    plan = await shop.plan(client, price=7, placement={"nodeIds": [roomy.id]})
    await shop.fund(shop.customer, "coins", 70)

    async def one(n: int) -> int:
        answer = await client.post(
            "/api/servers/deploy",
            json=deploy_body(plan, name=f"rush-{n}"),
            headers=shop.customer.headers | {"Idempotency-Key": f"rush-{n}"},
        )
        assert answer.status_code in (201, 402), answer.text
        return answer.status_code

    statuses = await asyncio.gather(*(one(n) for n in range(100)))
    assert statuses.count(201) == 10 and statuses.count(402) == 90
    assert (await shop.balances(shop.customer)).coins == 0
    await db.commit()
    servers = await db.scalar(
        select(func.count()).select_from(Server).where(Server.owner_id == shop.customer.user.id)
    )
    terms = await db.scalar(select(func.count()).select_from(ServerSubscription))
    assert servers == 10 and terms == 10
