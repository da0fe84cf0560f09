"""The evaluator: thresholds held for their duration, one open alert per rule and target,
resolution by the system, node silence, crash reports, and racing evaluators."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import shifted, utcnow
from hostplane.core.runtime import Runtime
from hostplane.infra.alerts.evaluator import AlertEvaluator
from hostplane.infra.nodes.models import Node
from hostplane.infra.servers import reports
from hostplane.infra.servers.models import Server
from tests.infra.alerts_helpers import alerts_in_db, make_rule, report_stats
from tests.infra.conftest import Fleet
from tests.support.infra import make_node, make_server


async def test_a_threshold_fires_once_after_its_duration_and_resolves_when_it_clears(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    rule = await make_rule(
        client,
        fleet.admin.headers,
        conditions={"metric": "cpu", "operator": ">", "value": 50, "duration": 5},
    )
    evaluator = AlertEvaluator(runtime)
    await report_stats(db, fleet.server.id, cpu=90)
    assert await evaluator.evaluate() == (0, 0)  # held for 0 s of 5
    with shifted(timedelta(seconds=3)):
        assert await evaluator.evaluate() == (0, 0)
    with shifted(timedelta(seconds=6)):
        assert await evaluator.evaluate() == (1, 0)
        # Still true: no second alert.
        assert await evaluator.evaluate() == (0, 0)
    [alert] = await alerts_in_db(db)
    assert alert.rule_id == rule["id"] and alert.server_id == fleet.server.id
    assert alert.node_id == fleet.node.id and alert.type == "resource_threshold"
    assert alert.details["cpuUsage"] == 90 and alert.details["threshold"] == 50
    assert not alert.resolved

    await report_stats(db, fleet.server.id, cpu=10)
    assert await evaluator.evaluate() == (0, 1)
    [alert] = await alerts_in_db(db)
    assert alert.resolved and alert.resolved_by == "system" and alert.resolved_at is not None

    # A new breach is a new alert, counted from zero again.
    await report_stats(db, fleet.server.id, cpu=95)
    assert await evaluator.evaluate() == (0, 0)
    with shifted(timedelta(seconds=6)):
        assert await evaluator.evaluate() == (1, 0)
    assert len(await alerts_in_db(db)) == 2


async def test_usage_is_measured_against_the_servers_allocation(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    server = await make_server(
        db,
        tenant=fleet.tenant,
        owner=fleet.owner.user,
        node=fleet.node,
        template=fleet.template,
        cpu_cores=2,
        memory_mb=1000,
        disk_mb=1000,
    )
    await make_rule(client, fleet.admin.headers, targetId=server.id)  # cpu > 50
    await make_rule(
        client,
        fleet.admin.headers,
        name="memory",
        targetId=server.id,
        conditions={"metric": "memory", "operator": ">=", "value": 90},
    )
    await make_rule(
        client,
        fleet.admin.headers,
        name="disk",
        targetId=server.id,
        conditions={"metric": "disk", "operator": "<", "value": 10},
    )
    evaluator = AlertEvaluator(runtime)
    # 90 % of one core is 45 % of two; 900 of 1000 MB is 90 %; disk 50 % is not < 10 %.
    await report_stats(db, server.id, cpu=90, memory_mb=900, disk_mb=500)
    assert await evaluator.evaluate() == (1, 0)
    [alert] = await alerts_in_db(db)
    assert alert.details["metric"] == "memory" and alert.details["memoryUsage"] == 90

    # A stopped server's last sample says nothing: its alert resolves.
    await report_stats(db, server.id, cpu=190, memory_mb=900, status="stopped")
    assert await evaluator.evaluate() == (0, 1)


async def test_a_rule_that_keeps_its_alert_open_waits_for_a_person(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    await make_rule(client, fleet.admin.headers, keepOpen=True)
    evaluator = AlertEvaluator(runtime)
    await report_stats(db, fleet.server.id, cpu=80)
    assert await evaluator.evaluate() == (1, 0)
    await report_stats(db, fleet.server.id, cpu=5)
    assert await evaluator.evaluate() == (0, 0)
    [alert] = await alerts_in_db(db)
    assert not alert.resolved
    # Breaching again while it is open opens nothing new.
    await report_stats(db, fleet.server.id, cpu=80)
    assert await evaluator.evaluate() == (0, 0)
    answer = await client.post(f"/api/alerts/{alert.id}/resolve", headers=fleet.admin.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["message"] == "Alert resolved"
    assert answer.json()["data"]["resolvedBy"] == fleet.admin.user.id


async def test_racing_evaluators_open_one_alert(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    await make_rule(client, fleet.admin.headers)
    servers = [fleet.server]
    while len(servers) < 4:
        made = await make_server(
            db,
            tenant=fleet.tenant,
            owner=fleet.owner.user,
            node=fleet.node,
            template=fleet.template,
        )
        servers.append(made)
    for server in servers:
        await report_stats(db, server.id, cpu=99)
    evaluators = [AlertEvaluator(runtime) for _ in range(4)]
    results = await asyncio.gather(*(e.evaluate() for e in evaluators))
    assert sum(opened for opened, _ in results) == len(servers)
    alerts = await alerts_in_db(db)
    assert sorted(a.server_id or "" for a in alerts) == sorted(s.id for s in servers)

    for server in servers:
        await report_stats(db, server.id, cpu=0)
    results = await asyncio.gather(*(e.evaluate() for e in evaluators))
    assert sum(resolved for _, resolved in results) == len(servers)
    assert all(a.resolved for a in await alerts_in_db(db))


async def test_a_silent_node_raises_node_offline_until_its_agent_is_heard_again(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    quiet, _ = await make_node(db, tenant=fleet.tenant, online=False)  # last heard 5 min ago
    never, _ = await make_node(db, tenant=fleet.tenant, online=True)
    await db.execute(update(Node).where(Node.id == never.id).values(last_seen_at=None))
    await db.commit()
    await make_rule(
        client,
        fleet.admin.headers,
        name="offline",
        type="node_offline",
        severity="critical",
        conditions={"duration": 60},
    )
    evaluator = AlertEvaluator(runtime)
    assert await evaluator.evaluate() == (1, 0)
    [alert] = await alerts_in_db(db)
    assert alert.node_id == quiet.id and alert.server_id is None
    assert alert.type == "node_offline" and alert.severity == "critical"
    assert await evaluator.evaluate() == (0, 0)

    await db.execute(update(Node).where(Node.id == quiet.id).values(last_seen_at=utcnow()))
    await db.commit()
    assert await evaluator.evaluate() == (0, 1)


async def test_a_crash_report_opens_a_crash_alert_that_clears_when_the_server_runs(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    await make_rule(
        client, fleet.admin.headers, name="crash", type="server_crashed", targetId=fleet.server.id
    )
    await db.execute(
        update(Server)
        .where(Server.id == fleet.server.id)
        .values(status="running", restart_policy="never")
    )
    await db.commit()
    await reports.apply_state_report(db, fleet.server.id, "crashed", 137)
    await db.commit()
    [alert] = await alerts_in_db(db)
    assert alert.type == "server_crashed" and alert.server_id == fleet.server.id
    assert alert.details["exitCode"] == 137

    # A second crash while the first alert is open adds nothing.
    await reports.apply_state_report(db, fleet.server.id, "running")
    await db.commit()
    await reports.apply_state_report(db, fleet.server.id, "crashed", 1)
    await db.commit()
    assert len(await alerts_in_db(db)) == 1

    evaluator = AlertEvaluator(runtime)
    assert await evaluator.evaluate() == (0, 0)  # still crashed
    with shifted(timedelta(seconds=1)):
        await reports.apply_state_report(db, fleet.server.id, "running")
        await db.commit()
    assert await evaluator.evaluate() == (0, 1)
    [alert] = await alerts_in_db(db)
    assert alert.resolved and alert.resolved_by == "system"


async def test_disabled_rules_and_other_targets_fire_nothing(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    await make_rule(client, fleet.admin.headers, enabled=False)
    other = await make_server(
        db, tenant=fleet.tenant, owner=fleet.owner.user, node=fleet.node, template=fleet.template
    )
    await make_rule(client, fleet.admin.headers, targetId=other.id)
    await report_stats(db, fleet.server.id, cpu=99)
    assert await AlertEvaluator(runtime).evaluate() == (0, 0)
    assert await alerts_in_db(db) == []


async def test_an_alert_whose_server_is_deleted_is_resolved_by_the_system(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    await make_rule(client, fleet.admin.headers)
    evaluator = AlertEvaluator(runtime)
    await report_stats(db, fleet.server.id, cpu=99)
    assert await evaluator.evaluate() == (1, 0)
    # As if the server had been deleted: it no longer reports anything.
    await db.execute(update(Server).where(Server.id == fleet.server.id).values(stats_at=None))
    await db.commit()
    assert await evaluator.evaluate() == (0, 1)
    [alert] = await alerts_in_db(db)
    assert alert.resolved and alert.resolved_by == "system"
