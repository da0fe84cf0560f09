"""Scheduled tasks: rules and transactions.

A task belongs to a server and runs as its owner (the user who created it),
with that user's permissions as they are when the run starts. ``nextRunAt``
is recomputed from the cron expression and time zone on every change; while
a task is disabled it is ``None``.

A run is a row in ``scheduled_task_runs`` and a ``schedules.run`` job queued
in the same transaction (:mod:`hostplane.infra.schedules.runner` executes it).
Scheduled runs are claimed by :func:`claim_due`: a compare-and-set UPDATE on
``next_run_at`` plus the runs' unique (task, scheduled time) key, so any
number of schedulers claim each due run once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.errors import NotFound, ValidationFailed
from hostplane.core.pagination import PageMeta, PageParams, paginate
from hostplane.core.principal import Principal
from hostplane.identity.access import service as access
from hostplane.infra.schedules import cron
from hostplane.infra.schedules.models import ScheduledTask, TaskRun
from hostplane.infra.servers.models import Server
from hostplane.infra.servers.service import load_for
from hostplane.platform.jobs import service as jobs

READ = ("task.read", "schedule.read")
CREATE = ("task.create", "schedule.create")
UPDATE = ("task.update", "schedule.update")
DELETE = ("task.delete", "schedule.delete")
EXECUTE = ("task.execute", "schedule.update")

RUN_JOB = "schedules.run"
FINISHED = ("succeeded", "failed", "skipped")
# What one step may take (the agent's answer is bounded by the servers'
# command timeout) and how long a run may wait in the queue before starting.
STEP_BUDGET_SECONDS = 120
QUEUE_SLACK_SECONDS = 600
MAX_COMMAND_LENGTH = 1000


class TaskNotFound(NotFound):
    def __init__(self, task_id: str) -> None:
        super().__init__("task", task_id)


# --- validation -------------------------------------------------------------------------------


def check_payload(
    action: str, payload: Mapping[str, Any] | None, field: str
) -> dict[str, Any] | None:
    """The payload ``action`` needs, checked: a ``command`` for commands, an optional
    backup ``name`` for backups, nothing for power actions."""
    if action == "command":
        command = (payload or {}).get("command")
        if not isinstance(command, str) or not command.strip():
            raise ValidationFailed(
                "A command task needs payload.command", details={"field": f"{field}.command"}
            )
        if len(command) > MAX_COMMAND_LENGTH or "\n" in command or "\x00" in command:
            raise ValidationFailed(
                f"payload.command is one line of at most {MAX_COMMAND_LENGTH} characters",
                details={"field": f"{field}.command"},
            )
        return {"command": command}
    if action == "backup":
        name = (payload or {}).get("name")
        if name is None:
            return None
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise ValidationFailed(
                "payload.name is the backup's name (1-100 characters)",
                details={"field": f"{field}.name"},
            )
        return {"name": name}
    return None


def _steps(raw: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    checked = []
    for index, step in enumerate(raw):
        checked.append(
            {
                "action": step["action"],
                "payload": check_payload(
                    step["action"], step.get("payload"), f"steps.{index}.payload"
                ),
                "delaySeconds": int(step.get("delay_seconds", step.get("delaySeconds", 0))),
                "continueOnFailure": bool(
                    step.get("continue_on_failure", step.get("continueOnFailure", False))
                ),
            }
        )
    return checked


def chain(task: ScheduledTask) -> list[dict[str, Any]]:
    """Every step of a run: the task's own action first, then its steps."""
    first = {
        "action": task.action,
        "payload": task.payload,
        "delaySeconds": 0,
        "continueOnFailure": False,
    }
    return [first, *task.steps]


def _reschedule(task: ScheduledTask, now: datetime | None = None) -> None:
    task.next_run_at = (
        cron.next_run(task.schedule, task.timezone, now or utcnow()) if task.enabled else None
    )


def deadline_for(steps: Sequence[Mapping[str, Any]], start: datetime) -> datetime:
    waits = sum(int(step.get("delaySeconds", 0)) for step in steps)
    budget = waits + STEP_BUDGET_SECONDS * len(steps) + QUEUE_SLACK_SECONDS
    return start + timedelta(seconds=budget)


# --- reading ----------------------------------------------------------------------------------


async def _load(
    session: AsyncSession, principal: Principal, task_id: str, permissions: tuple[str, ...]
) -> ScheduledTask:
    task = await session.get(ScheduledTask, task_id)
    if task is None:
        raise TaskNotFound(task_id)
    try:
        await load_for(session, principal, task.server_id, permissions)
    except NotFound:
        raise TaskNotFound(task_id) from None
    return task


async def get_task(session: AsyncSession, principal: Principal, task_id: str) -> ScheduledTask:
    return await _load(session, principal, task_id, READ)


async def list_tasks(
    session: AsyncSession, principal: Principal, params: PageParams, *, server_id: str | None
) -> tuple[Sequence[ScheduledTask], PageMeta]:
    """Tasks of one server (``serverId``), or of every server the caller may read tasks of."""
    statement = select(ScheduledTask).order_by(ScheduledTask.created_at, ScheduledTask.id)
    if server_id is not None:
        await load_for(session, principal, server_id, READ)
        statement = statement.where(ScheduledTask.server_id == server_id)
    elif not any(principal.has(p) and principal.within_scopes(p) for p in READ):
        if not any(principal.within_scopes(p) for p in READ):
            raise access.AccessDenied(READ[0])
        user_id = principal.user_id
        owned = select(Server.id).where(Server.owner_id == user_id)
        granted = access.granted_resource_ids(resource_type="server", user_id=user_id or "")
        candidates = (
            await session.scalars(
                select(Server).where(or_(Server.id.in_(owned), Server.id.in_(granted)))
            )
        ).all()
        readable = [
            server.id
            for server in candidates
            if any(
                [
                    await access.allowed(session, principal, p, server, resource_type="server")
                    for p in READ
                ]
            )
        ]
        statement = statement.where(ScheduledTask.server_id.in_(readable))
    return await paginate(session, statement, params)


async def list_runs(
    session: AsyncSession, principal: Principal, task_id: str, params: PageParams
) -> tuple[Sequence[TaskRun], PageMeta]:
    task = await _load(session, principal, task_id, READ)
    statement = (
        select(TaskRun)
        .where(TaskRun.task_id == task.id)
        .order_by(TaskRun.scheduled_for.desc(), TaskRun.id.desc())
    )
    return await paginate(session, statement, params)


# --- writing ----------------------------------------------------------------------------------


async def create_task(
    session: AsyncSession, principal: Principal, values: Mapping[str, Any]
) -> ScheduledTask:
    """A new task on ``serverId`` owned by the caller; 400 names a bad cron field,
    time zone or payload."""
    server = await load_for(session, principal, values["server_id"], CREATE)
    if principal.user_id is None:
        raise ValidationFailed("Only a user (or a user's API key) can own a scheduled task")
    schedule = cron.validate(values["schedule"])
    cron.zone(values.get("timezone") or "UTC")
    task = ScheduledTask(
        tenant_id=server.tenant_id,
        server_id=server.id,
        owner_id=principal.user_id,
        name=values["name"],
        action=values["action"],
        payload=check_payload(values["action"], values.get("payload"), "payload"),
        schedule=schedule,
        timezone=values.get("timezone") or "UTC",
        enabled=values.get("enabled", True),
        only_when_online=values.get("only_when_online", False),
        catch_up=values.get("catch_up", "skip"),
        steps=_steps(values.get("steps") or []),
        run_count=0,
    )
    _reschedule(task)
    session.add(task)
    await session.flush()
    return task


async def update_task(
    session: AsyncSession, principal: Principal, task_id: str, changes: Mapping[str, Any]
) -> ScheduledTask:
    """Change what is given; ``nextRunAt`` is recomputed from now."""
    task = await _load(session, principal, task_id, UPDATE)
    if changes.get("schedule") is not None:
        task.schedule = cron.validate(changes["schedule"])
    if changes.get("timezone") is not None:
        cron.zone(changes["timezone"])
        task.timezone = changes["timezone"]
    for field in ("name", "enabled", "only_when_online", "catch_up"):
        if changes.get(field) is not None:
            setattr(task, field, changes[field])
    if changes.get("action") is not None or "payload" in changes:
        action = changes.get("action") or task.action
        payload = changes.get("payload", task.payload)
        task.payload = check_payload(action, payload, "payload")
        task.action = action
    if changes.get("steps") is not None:
        task.steps = _steps(changes["steps"])
    _reschedule(task)
    await session.flush()
    return task


async def delete_task(session: AsyncSession, principal: Principal, task_id: str) -> None:
    task = await _load(session, principal, task_id, DELETE)
    await session.delete(task)
    await session.flush()


# --- runs -------------------------------------------------------------------------------------


async def queue_run(
    session: AsyncSession,
    task: ScheduledTask,
    *,
    trigger: str,
    scheduled_for: datetime,
    status: str = "queued",
    error: str | None = None,
) -> TaskRun:
    """A run row and, unless it is recorded as already settled, its job."""
    steps = chain(task)
    now = utcnow()
    run = TaskRun(
        tenant_id=task.tenant_id,
        task_id=task.id,
        server_id=task.server_id,
        trigger=trigger,
        scheduled_for=scheduled_for,
        status=status,
        error=error,
        deadline_at=deadline_for(steps, now),
        steps=[{**step, "index": index, "status": "pending"} for index, step in enumerate(steps)],
    )
    if status in FINISHED:
        run.started_at = run.finished_at = now
    session.add(run)
    await session.flush()
    if status == "queued":
        job = await jobs.enqueue(
            session, RUN_JOB, tenant_id=task.tenant_id, max_attempts=3, run_id=run.id
        )
        run.job_id = job.id
    return run


async def execute_task(session: AsyncSession, principal: Principal, task_id: str) -> TaskRun:
    """Queue a run now, whatever the schedule (and even while disabled)."""
    task = await _load(session, principal, task_id, EXECUTE)
    return await queue_run(session, task, trigger="manual", scheduled_for=utcnow())


async def due_tasks(session: AsyncSession, now: datetime, limit: int) -> list[tuple[str, datetime]]:
    """(task id, the due time it was read with) for enabled tasks due by ``now``."""
    rows = await session.execute(
        select(ScheduledTask.id, ScheduledTask.next_run_at)
        .where(ScheduledTask.enabled.is_(True), ScheduledTask.next_run_at <= now)
        .order_by(ScheduledTask.next_run_at)
        .limit(limit)
    )
    return [(task_id, due) for task_id, due in rows.all() if due is not None]


async def advance(
    session: AsyncSession, task_id: str, due: datetime, now: datetime
) -> ScheduledTask | None:
    """Move ``next_run_at`` from ``due`` to the next time after now; the task, or
    ``None`` when it no longer holds ``due`` (another scheduler moved it first)."""
    task = await session.get(ScheduledTask, task_id)
    if task is None or not task.enabled:
        return None
    following = cron.next_run(task.schedule, task.timezone, max(now, due))
    moved = await session.execute(
        update(ScheduledTask)
        .where(
            ScheduledTask.id == task_id,
            ScheduledTask.next_run_at == due,
            ScheduledTask.enabled.is_(True),
        )
        .values(next_run_at=following)
        .execution_options(synchronize_session=False)
    )
    if getattr(moved, "rowcount", 0) != 1:
        return None
    task.next_run_at = following
    return task


async def claim_due(
    session: AsyncSession, task_id: str, due: datetime, now: datetime, *, late_after: float
) -> TaskRun | None:
    """Claim the run of ``task_id`` due at ``due``: the run, or ``None`` when another
    scheduler claimed it first (or the task changed meanwhile).

    The claim moves ``next_run_at`` from ``due`` to the next time after now in
    one conditional UPDATE; only the scheduler whose UPDATE matched goes on.
    A run more than ``late_after`` seconds late was missed (no scheduler ran
    at the time): the task's catch-up policy skips it (recorded as
    ``skipped``) or runs it once, however many runs were missed.
    """
    task = await advance(session, task_id, due, now)
    if task is None:
        return None
    missed = (now - due).total_seconds() > late_after
    if missed and task.catch_up == "skip":
        return await queue_run(
            session,
            task,
            trigger="catchUp",
            scheduled_for=due,
            status="skipped",
            error="Missed while no scheduler was running; the task's catch-up policy skips it",
        )
    return await queue_run(
        session, task, trigger="catchUp" if missed else "schedule", scheduled_for=due
    )


async def sweep_overdue(session: AsyncSession, now: datetime) -> int:
    """Fail runs still queued or running past their deadline (their worker died)."""
    result = await session.execute(
        update(TaskRun)
        .where(TaskRun.status.in_(("queued", "running")), TaskRun.deadline_at < now)
        .values(
            status="failed",
            finished_at=now,
            error="The run did not finish by its deadline (its worker stopped); "
            "steps not yet started were not run",
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
