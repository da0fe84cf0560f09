"""Shared steps of the alert tests: stats as an agent reports them, rules through the API."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.infra.alerts.models import Alert, AlertAction
from hostplane.infra.servers.models import Server


async def report_stats(
    db: AsyncSession,
    server_id: str,
    *,
    cpu: float = 0.0,
    memory_mb: int = 0,
    disk_mb: int = 0,
    status: str = "running",
) -> None:
    """The server's latest sample, as the gateway stores what its agent reports."""
    await db.execute(
        update(Server)
        .where(Server.id == server_id)
        .values(
            status=status,
            cpu_usage=cpu,
            memory_usage_mb=memory_mb,
            disk_usage_mb=disk_mb,
            stats_at=utcnow(),
        )
    )
    await db.commit()


async def make_rule(
    client: httpx.AsyncClient, headers: dict[str, str], **body: Any
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "High CPU",
        "type": "resource_threshold",
        "targetId": "*",
        "conditions": {"metric": "cpu", "operator": ">", "value": 50, "duration": 0},
        "actions": [],
    }
    values.update(body)
    answer = await client.post("/api/alert-rules", json=values, headers=headers)
    assert answer.status_code == 201, answer.text
    rule: dict[str, Any] = answer.json()["data"]
    return rule


async def alerts_in_db(db: AsyncSession) -> list[Alert]:
    await db.commit()
    return list(
        (
            await db.scalars(
                select(Alert).order_by(Alert.id).execution_options(populate_existing=True)
            )
        ).all()
    )


async def actions_in_db(db: AsyncSession) -> list[AlertAction]:
    await db.commit()
    return list(
        (
            await db.scalars(
                select(AlertAction)
                .order_by(AlertAction.id)
                .execution_options(populate_existing=True)
            )
        ).all()
    )
