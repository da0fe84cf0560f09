"""Scheduled runs: claimed once by racing schedulers, executed as the owner at run time,
recorded with their outcome, caught up or skipped, and ended when their worker dies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.app import build_runtime
from hostplane.core.clock import utcnow
from hostplane.core.config import Settings
from hostplane.core.runtime import Runtime
from hostplane.identity.access import service as access
from hostplane.identity.users.models import User
from hostplane.infra.schedules import runner
from hostplane.infra.schedules.models import ScheduledTask, TaskRun
from hostplane.infra.schedules.scheduler import Scheduler
from hostplane.platform.audit.models import AuditLog
from hostplane.platform.jobs.worker import Worker
from tests.infra.conftest import Fleet
from tests.infra.test_commands import until
from tests.infra.test_schedules import create
from tests.support.agents import live_agents
from tests.support.identity import logged_in
from tests.support.infra import in_tenant, make_node, make_server, make_template, set_status


async def _due(db: AsyncSession, task_id: str, *, ago: timedelta = timedelta(seconds=1)) -> None:
    """Make the task due now (as if its cron time had just come)."""
    when = (utcnow() - ago).replace(microsecond=0)
    await db.execute(
        update(ScheduledTask).where(ScheduledTask.id == task_id).values(next_run_at=when)
    )
    await db.commit()


async def _runs(client: httpx.AsyncClient, fleet: Fleet, task_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/tasks/{task_id}/runs", headers=fleet.admin.headers)
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()["data"]
    return runs


async def _task(client: httpx.AsyncClient, fleet: Fleet, task_id: str) -> dict[str, Any]:
    data: dict[str, Any] = (
        await client.get(f"/api/tasks/{task_id}", headers=fleet.admin.headers)
    ).json()["data"]
    return data


async def test_a_due_task_is_claimed_advanced_and_its_failure_recorded_with_the_reason(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    task = (await create(client, fleet, schedule="* * * * *")).json()["data"]
    await _due(db, task["id"])
    assert await Scheduler(runtime).tick() == 1
    assert await Scheduler(runtime).tick() == 0  # nothing is due twice
    after = await _task(client, fleet, task["id"])
    assert after["nextRunAt"] > utcnow().isoformat()[:16]
    assert await Worker(runtime).run_until_idle() == 1
    [run] = await _runs(client, fleet, task["id"])
    # No agent holds the node: the restart is refused, and the run says why.
    assert run["trigger"] == "schedule"
    assert run["status"] == "failed"
    assert run["startedAt"] and run["finishedAt"]
    assert "restart" in run["error"] and "node" in run["error"].lower()
    assert run["steps"][0]["status"] == "failed"
    after = await _task(client, fleet, task["id"])
    assert after["runCount"] == 1
    assert after["lastRunAt"] == run["startedAt"]


async def _second_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    other = build_runtime(settings)
    await other.bus.start()
    try:
        yield other
    finally:
        await other.bus.close()
        await other.engine.dispose()


async def test_racing_schedulers_run_every_due_run_exactly_once(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, settings: Settings, fleet: Fleet
) -> None:
    ids = []
    for n in range(6):
        made = await create(client, fleet, name=f"t{n}", schedule="* * * * *", enabled=True)
        ids.append(made.json()["data"]["id"])
    # Two schedulers as two processes would run them: separate engines and pools.
    async for other in _second_runtime(settings):
        first, second = Scheduler(runtime), Scheduler(other)
        total = 0
        for round in range(3):  # three due times in a row
            for task_id in ids:
                await _due(db, task_id, ago=timedelta(seconds=10 - 3 * round))
            claimed = await asyncio.gather(first.tick(), second.tick(), first.tick(), second.tick())
            assert sum(claimed) == len(ids)
            total += sum(claimed)
            await asyncio.sleep(0.05)
        assert total == 3 * len(ids)
    await db.commit()
    runs = (await db.scalars(select(TaskRun))).all()
    per_task = {task_id: [r for r in runs if r.task_id == task_id] for task_id in ids}
    assert all(len(found) == 3 for found in per_task.values())
    assert all(len({r.scheduled_for for r in found}) == 3 for found in per_task.values())


@pytest.mark.parametrize("policy", ["skip", "runOnce"])
async def test_runs_missed_while_down_follow_the_catch_up_policy(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet, policy: str
) -> None:
    task = (await create(client, fleet, schedule="* * * * *", catchUp=policy)).json()["data"]
    # Down for an hour: sixty runs were missed.
    await _due(db, task["id"], ago=timedelta(hours=1))
    assert await Scheduler(runtime).tick() == 1
    assert await Scheduler(runtime).tick() == 0
    [run] = await _runs(client, fleet, task["id"])
    assert run["trigger"] == "catchUp"
    if policy == "skip":
        assert run["status"] == "skipped"
        assert "Missed" in run["error"]
        assert run["jobId"] is None
    else:
        assert run["status"] == "queued"
        assert run["jobId"]
    assert (await _task(client, fleet, task["id"]))["nextRunAt"] > utcnow().isoformat()


async def test_only_when_online_skips_a_stopped_server(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    task = (await create(client, fleet, onlyWhenOnline=True)).json()["data"]
    executed = await client.post(f"/api/tasks/{task['id']}/execute", headers=fleet.owner.headers)
    assert executed.status_code == 200, executed.text
    await Worker(runtime).run_until_idle()
    [run] = await _runs(client, fleet, task["id"])
    assert run["trigger"] == "manual"
    assert run["status"] == "skipped"
    assert "not online" in run["error"]


async def test_a_run_acts_with_the_owners_permissions_at_run_time(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    helper = await logged_in(client, db, tenant=fleet.tenant)
    async with in_tenant(db, fleet.tenant):
        await access.set_grant(
            db,
            resource_type="server",
            resource_id=fleet.server.id,
            user_id=helper.user.id,
            permissions=["server.read", "task.create", "task.read", "control.console"],
            granted_by=fleet.owner.user.id,
        )
    await set_status(db, fleet.server, "running")
    made = await create(
        client, fleet, headers=helper.headers, action="command", payload={"command": "say hi"}
    )
    assert made.status_code == 201, made.text
    task = made.json()["data"]
    assert task["ownerId"] == helper.user.id
    # The helper loses access before the run: the run fails with that reason, no action.
    async with in_tenant(db, fleet.tenant):
        await access.remove_grant(
            db, resource_type="server", resource_id=fleet.server.id, user_id=helper.user.id
        )
    await client.post(f"/api/tasks/{task['id']}/execute", headers=fleet.owner.headers)
    await Worker(runtime).run_until_idle()
    [run] = await _runs(client, fleet, task["id"])
    assert run["status"] == "failed"
    assert "not found" in run["error"].lower()

    # An owner whose account is no longer active cannot act either.
    task2 = (await create(client, fleet, name="mine")).json()["data"]
    await db.execute(update(User).where(User.id == fleet.owner.user.id).values(status="banned"))
    await db.commit()
    await client.post(f"/api/tasks/{task2['id']}/execute", headers=fleet.admin.headers)
    await Worker(runtime).run_until_idle()
    [run2] = await _runs(client, fleet, task2["id"])
    assert run2["status"] == "failed"
    assert "owner cannot act" in run2["error"]
    assert "not active" in run2["error"]


async def test_a_worker_that_died_mid_chain_neither_repeats_a_step_nor_hangs_the_run(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    task = (
        await create(
            client,
            fleet,
            action="stop",
            steps=[{"action": "start", "continueOnFailure": True}, {"action": "backup"}],
        )
    ).json()["data"]
    executed = (
        await client.post(f"/api/tasks/{task['id']}/execute", headers=fleet.owner.headers)
    ).json()["data"]
    run_id = executed["runId"]
    # As if a worker had started the run and died inside step 1.
    run = await db.get(TaskRun, run_id)
    assert run is not None
    steps = [dict(s) for s in run.steps]
    steps[0] |= {"status": "succeeded", "finishedAt": utcnow().isoformat()}
    steps[1] |= {"status": "running", "startedAt": utcnow().isoformat()}
    await db.execute(
        update(TaskRun).where(TaskRun.id == run_id).values(status="running", steps=steps)
    )
    await db.commit()
    await runner.execute(runtime, run_id)
    [found] = await _runs(client, fleet, task["id"])
    assert [s["status"] for s in found["steps"]] == ["succeeded", "failed", "succeeded"]
    assert found["steps"][1]["error"] == runner.INTERRUPTED
    assert found["status"] == "failed"
    assert "Step 2 (start)" in found["error"]

    # A run whose worker never came back is ended by the sweeper at its deadline.
    stuck = (
        await client.post(f"/api/tasks/{task['id']}/execute", headers=fleet.owner.headers)
    ).json()["data"]["runId"]
    await db.execute(
        update(TaskRun)
        .where(TaskRun.id == stuck)
        .values(status="running", deadline_at=utcnow() - timedelta(seconds=1))
    )
    await db.commit()
    await Scheduler(runtime).tick()
    swept = next(r for r in await _runs(client, fleet, task["id"]) if r["id"] == stuck)
    assert swept["status"] == "failed"
    assert "deadline" in swept["error"]


async def test_a_chain_runs_its_steps_in_order_after_their_delays(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    task = (
        await create(
            client,
            fleet,
            action="backup",
            payload={"name": "before"},
            steps=[{"action": "backup", "payload": {"name": "after"}, "delaySeconds": 1}],
        )
    ).json()["data"]
    await client.post(f"/api/tasks/{task['id']}/execute", headers=fleet.owner.headers)
    worker = Worker(runtime)
    assert await worker.run_until_idle() >= 1
    [run] = await _runs(client, fleet, task["id"])
    assert run["status"] == "succeeded", run
    first, second = run["steps"]
    assert (first["status"], second["status"]) == ("succeeded", "succeeded")
    waited = datetime.fromisoformat(second["startedAt"]) - datetime.fromisoformat(
        first["finishedAt"]
    )
    assert waited >= timedelta(seconds=1)
    # Both backups were made as the owner would have made them by hand.
    listed = await client.get(
        f"/api/servers/{fleet.server.id}/backups", headers=fleet.owner.headers
    )
    assert sorted(b["name"] for b in listed.json()["data"]) == ["after", "before"]


RESTARTER = """\
import os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "starts.log"), "a") as f:
    f.write(f"{os.getpid()}\\n")
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "stop":
        break
"""


async def test_a_scheduled_restart_really_restarts_the_server(
    app: object, client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    node, secret = await make_node(db, tenant=fleet.tenant, port_range=(34000, 34010))
    template = await make_template(
        db, tenant=fleet.tenant, name="Restarter", start_command="python3 -u run.py"
    )
    server = await make_server(
        db, tenant=fleet.tenant, owner=fleet.owner.user, node=node, template=template
    )
    await db.commit()
    async with live_agents(app, [(node.id, secret)]) as [agent]:
        folder = agent.server_dir(server.id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "run.py").write_text(RESTARTER)
        starts = folder / "starts.log"
        path = f"/api/servers/{server.id}"
        started = await client.post(f"{path}/start", headers=fleet.owner.headers)
        assert started.status_code == 200, started.text

        async def status_is(wanted: str) -> bool:
            data = (await client.get(path, headers=fleet.owner.headers)).json()["data"]
            return bool(data["status"] == wanted)

        async def started_times(count: int) -> bool:
            return starts.exists() and len(starts.read_text().split()) >= count

        await until(lambda: started_times(1))
        await until(lambda: status_is("running"))
        made = await client.post(
            "/api/tasks",
            json={
                "serverId": server.id,
                "name": "Daily Restart",
                "action": "restart",
                "schedule": "* * * * *",
            },
            headers=fleet.owner.headers,
        )
        assert made.status_code == 201, made.text
        task_id = made.json()["data"]["id"]
        await _due(db, task_id)
        assert await Scheduler(runtime).tick() == 1
        await Worker(runtime).run_until_idle()
        await until(lambda: started_times(2), within=30)
        await until(lambda: status_is("running"))
        pids = starts.read_text().split()
        assert len(pids) == 2 and pids[0] != pids[1]
        [run] = await _runs(client, fleet, task_id)
        assert run["status"] == "succeeded", run
        assert run["steps"][0]["status"] == "succeeded"
        await agent.runtime.kill(server.id)
    # Audited as the owner restarting the server, naming the task.
    await db.commit()
    entries = (
        await db.scalars(
            select(AuditLog).where(
                AuditLog.action == "server.restart", AuditLog.resource_id == server.id
            )
        )
    ).all()
    assert [(e.user_id, e.user_agent) for e in entries] == [
        (fleet.owner.user.id, f"hostplane scheduled task {task_id}")
    ]
