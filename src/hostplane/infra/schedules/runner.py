"""Executing a run: the ``schedules.run`` job.

The chain is the one copied onto the run when it was queued. Each step is
marked ``running`` (committed) before its action and settled after it, so a
worker that dies mid-chain never repeats a step: the job's next attempt
finds the step ``running``, records it as interrupted, and goes on with the
rest (or stops, as the step's ``continueOnFailure`` says). A run that
outlives its deadline is failed by the sweeper, and the handler stops at
its next step.

Every action runs as the task's owner, resolved when the step starts (their
roles, grants and account status as they are then), through the same
service calls and checks as the HTTP routes. A refusal is the step's
failure reason, never an action.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import structlog

from hostplane.core.clock import utcnow
from hostplane.core.context import RequestContext, attach_context
from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.errors import HostplaneError
from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime
from hostplane.identity.authenticator import acting_user
from hostplane.infra.backups import service as backups
from hostplane.infra.schedules import service
from hostplane.infra.schedules.models import ScheduledTask, TaskRun
from hostplane.infra.schedules.schemas import MAX_STEP_DELAY_SECONDS, MAX_STEPS
from hostplane.infra.servers import commands
from hostplane.infra.servers.lifecycle import LIVE
from hostplane.infra.servers.models import Server
from hostplane.platform.jobs.context import JobContext
from hostplane.platform.jobs.registry import job_handler

log = structlog.get_logger(__name__)

INTERRUPTED = "The worker running this step stopped before it finished; it was not repeated"
UNEXPECTED = "The step failed unexpectedly; the worker's log has the details"
# The longest a run can take (every step waiting its longest), for the job's own timeout.
RUN_TIMEOUT = (MAX_STEPS + 1) * (MAX_STEP_DELAY_SECONDS + service.STEP_BUDGET_SECONDS)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def _start(runtime: Runtime, run_id: str) -> tuple[str, str, str, str | None] | None:
    """Move the run to ``running`` (once); (task, its owner, server, a reason to skip)
    or ``None`` when there is nothing (left) to do."""
    async with runtime.unit_of_work() as session:
        run = await session.get(TaskRun, run_id, with_for_update=True)
        if run is None or run.status in service.FINISHED:
            return None
        task = await session.get(ScheduledTask, run.task_id)
        if task is None:
            return None
        scope_to_tenant(session, run.tenant_id)
        now = utcnow()
        if run.status == "queued":
            run.status = "running"
            run.started_at = now
            task.last_run_at = now
            task.run_count = task.run_count + 1
        skip = None
        if task.only_when_online:
            server = await session.get(Server, run.server_id)
            if server is None or server.status not in LIVE:
                state = server.status if server is not None else "deleted"
                skip = f"The server is not online (it is {state}) and the task runs only when it is"
        return task.id, task.owner_id, run.server_id, skip


async def _finish(runtime: Runtime, run_id: str, status: str, error: str | None) -> None:
    async with runtime.unit_of_work() as session:
        run = await session.get(TaskRun, run_id, with_for_update=True)
        if run is None or run.status in service.FINISHED:
            return
        run.status = status
        run.error = error[:2000] if error else None
        run.finished_at = utcnow()
        # Steps a failure stopped the chain before are shown as not run.
        run.steps = [
            {**step, "status": "skipped"} if step.get("status") == "pending" else dict(step)
            for step in run.steps
        ]


async def _mark_step(
    runtime: Runtime, run_id: str, index: int, **changes: Any
) -> dict[str, Any] | None:
    """Update step ``index`` of a run that is still running; ``None`` once it is not."""
    async with runtime.unit_of_work() as session:
        run = await session.get(TaskRun, run_id, with_for_update=True)
        if run is None or run.status != "running":
            return None
        steps = [dict(step) for step in run.steps]
        steps[index].update(changes)
        run.steps = steps
        return steps[index]


async def _act(
    runtime: Runtime, principal: Principal, task_id: str, server_id: str, step: dict[str, Any]
) -> None:
    """One action as ``principal``; raises what the HTTP route would answer with."""
    action = step["action"]
    # Audited as the owner calling the route that does the same by hand.
    route = "backups" if action == "backup" else action
    context = RequestContext(
        principal=principal,
        method="POST",
        route=f"/api/servers/{{server_id}}/{route}",
        path_params={"server_id": server_id},
        user_agent=f"hostplane scheduled task {task_id}",
    )
    payload = step.get("payload") or {}
    if action in ("start", "stop", "restart"):
        await commands.power(runtime, context, server_id, action)
    elif action == "command":
        await commands.console_command(runtime, context, server_id, str(payload["command"]))
    elif action == "backup":
        async with runtime.unit_of_work() as session:
            scope_to_tenant(session, principal.tenant_id)
            attach_context(session, context)
            await backups.create_backup(
                session,
                principal,
                server_id,
                name=payload.get("name"),
                locked=False,
                rules=runtime.settings.backups,
            )
    else:  # pragma: no cover - the schema admits no other action
        raise ValueError(action)


async def _run_step(
    runtime: Runtime, owner_id: str, task_id: str, server_id: str, step: dict[str, Any]
) -> str | None:
    """The step's failure reason, or ``None`` when it succeeded."""
    try:
        principal = await acting_user(runtime, owner_id)
    except HostplaneError as exc:
        return f"The task's owner cannot act: {exc.message}"
    try:
        await _act(runtime, principal, task_id, server_id, step)
    except HostplaneError as exc:
        return exc.message
    except Exception:
        log.exception("schedules.step_failed", action=step.get("action"))
        return UNEXPECTED
    return None


async def execute(runtime: Runtime, run_id: str) -> None:
    started = await _start(runtime, run_id)
    if started is None:
        return
    task_id, owner_id, server_id, skip = started
    if skip is not None:
        await _finish(runtime, run_id, "skipped", skip)
        return
    async with runtime.unit_of_work(read_only=True) as session:
        run = await session.get(TaskRun, run_id)
        steps = [dict(step) for step in run.steps] if run is not None else []
    first_failure: str | None = None
    previous_end: datetime | None = None
    for step in steps:
        index = int(step["index"])
        if step["status"] in ("succeeded", "failed", "skipped"):
            previous_end = _parse(step.get("finishedAt"))
            if step["status"] == "failed" and first_failure is None:
                first_failure = f"Step {index + 1} ({step['action']}): {step.get('error')}"
                if not step.get("continueOnFailure"):
                    break
            continue
        error: str | None
        if step["status"] == "running":
            # A worker died inside this step: it may have acted, so it is not repeated.
            error = INTERRUPTED
        else:
            delay = min(int(step.get("delaySeconds", 0)), MAX_STEP_DELAY_SECONDS)
            if delay and previous_end is not None:
                wait = delay - (utcnow() - previous_end).total_seconds()
                if wait > 0:
                    await asyncio.sleep(wait)
            if (
                await _mark_step(runtime, run_id, index, status="running", startedAt=_iso(utcnow()))
                is None
            ):
                return  # the sweeper ended the run meanwhile
            error = await _run_step(runtime, owner_id, task_id, server_id, step)
        finished = utcnow()
        settled = await _mark_step(
            runtime,
            run_id,
            index,
            status="failed" if error else "succeeded",
            finishedAt=_iso(finished),
            error=error,
        )
        if settled is None:
            return
        previous_end = finished
        if error is not None:
            log.info("schedules.step_failed", run_id=run_id, step=index, reason=error)
            if first_failure is None:
                first_failure = f"Step {index + 1} ({step['action']}): {error}"
            if not step.get("continueOnFailure"):
                break
    await _finish(runtime, run_id, "failed" if first_failure else "succeeded", first_failure)


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@job_handler(service.RUN_JOB, timeout_seconds=RUN_TIMEOUT)
async def run_task_job(ctx: JobContext, *, run_id: str) -> None:
    await execute(ctx.runtime, run_id)
