"""Servers created at once race for a node's last capacity and its last port:
each request gets a 201 or a 4xx envelope, and the node is never overfilled."""

import asyncio

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.infra.servers.models import Server, ServerAllocation
from tests.support.identity import logged_in, platform_tenant
from tests.support.infra import make_node, make_template


def body(node_id: str, template_id: str, n: int, memory: int) -> dict[str, object]:
    return {
        "name": f"racer-{n}",
        "templateId": template_id,
        "nodeId": node_id,
        "allocatedMemoryMb": memory,
        "allocatedCpuCores": 0.5,
        "allocatedDiskMb": 100,
        "environment": {"MEMORY": "512M"},
    }


async def race(
    client: httpx.AsyncClient, headers: dict[str, str], bodies: list[dict[str, object]]
) -> list[httpx.Response]:
    answers = await asyncio.gather(
        *(client.post("/api/servers", json=b, headers=headers) for b in bodies)
    )
    for answer in answers:
        assert answer.status_code == 201 or 400 <= answer.status_code < 500, answer.text
        assert answer.json()["success"] is (answer.status_code == 201)
    return list(answers)


async def test_the_last_capacity_goes_to_one_request(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    admin = await logged_in(client, db, tenant=tenant, role="admin")
    node, _ = await make_node(db, tenant=tenant, max_memory_mb=2048)
    template = await make_template(db, tenant=tenant)
    answers = await race(
        client, admin.headers, [body(node.id, template.id, n, 1024) for n in range(10)]
    )
    assert [a.status_code for a in answers].count(201) == 2
    used = await db.scalar(
        select(func.sum(Server.allocated_memory_mb)).where(Server.node_id == node.id)
    )
    assert used == 2048


async def test_the_last_port_goes_to_one_request(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    admin = await logged_in(client, db, tenant=tenant, role="admin")
    node, _ = await make_node(db, tenant=tenant, port_range=(31000, 31002))
    template = await make_template(db, tenant=tenant)
    answers = await race(
        client, admin.headers, [body(node.id, template.id, n, 64) for n in range(8)]
    )
    assert [a.status_code for a in answers].count(201) == 3
    ports = (
        await db.scalars(
            select(ServerAllocation.host_port).where(ServerAllocation.node_id == node.id)
        )
    ).all()
    assert sorted(ports) == [31000, 31001, 31002]
