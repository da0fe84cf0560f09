"""``/api/tasks``: Catalyst's scheduled tasks, with Pterodactyl's chained steps,
``onlyWhenOnline``, a catch-up policy and a run history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from hostplane.core.http.deps import Authenticated, PageDep, SessionDep
from hostplane.core.http.envelope import Envelope, PageEnvelope, ok, page
from hostplane.infra.schedules import runner as _runner  # noqa: F401 - registers the job handler
from hostplane.infra.schedules import service
from hostplane.infra.schedules.models import ScheduledTask, TaskRun
from hostplane.infra.schedules.schemas import (
    TaskCreate,
    TaskDeleted,
    TaskExecuted,
    TaskOut,
    TaskRunOut,
    TaskUpdate,
)

router = APIRouter(prefix="/api/tasks", tags=["scheduled tasks"])


def _out(task: ScheduledTask) -> TaskOut:
    return TaskOut.model_validate(task)


def _run_out(run: TaskRun) -> TaskRunOut:
    return TaskRunOut.model_validate(run)


@router.get("", response_model=PageEnvelope[TaskOut])
async def list_tasks(
    session: SessionDep,
    principal: Authenticated,
    params: PageDep,
    server_id: Annotated[str | None, Query(alias="serverId", max_length=40)] = None,
) -> PageEnvelope[TaskOut]:
    """Tasks of the servers the caller may read tasks of (``task.read``), or of one
    server with ``serverId``. ``nextRunAt`` is exact (``null`` while disabled)."""
    found, meta = await service.list_tasks(session, principal, params, server_id=server_id)
    return page([_out(task) for task in found], meta)


@router.post("", response_model=Envelope[TaskOut], status_code=201)
async def create_task(
    body: TaskCreate, session: SessionDep, principal: Authenticated
) -> Envelope[TaskOut]:
    """Create a task on a server (``task.create``). ``schedule`` is five-field cron read
    in ``timezone`` (IANA, default UTC); a bad field is a 400 naming it
    (``details.field``, e.g. ``schedule.hour``). Runs act as the caller, with the
    caller's permissions as they are when each run starts."""
    task = await service.create_task(session, principal, body.model_dump(by_alias=False))
    return ok(_out(task))


@router.get("/{task_id}", response_model=Envelope[TaskOut])
async def get_task(
    task_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[TaskOut]:
    return ok(_out(await service.get_task(session, principal, task_id)))


@router.put("/{task_id}", response_model=Envelope[TaskOut])
async def update_task(
    task_id: str, body: TaskUpdate, session: SessionDep, principal: Authenticated
) -> Envelope[TaskOut]:
    """Change a task (``task.update``); ``nextRunAt`` is recomputed from now."""
    changes = body.model_dump(exclude_unset=True, by_alias=False)
    task = await service.update_task(session, principal, task_id, changes)
    return ok(_out(task))


@router.delete("/{task_id}", response_model=Envelope[TaskDeleted])
async def delete_task(
    task_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[TaskDeleted]:
    """Delete a task and its run history (``task.delete``)."""
    await service.delete_task(session, principal, task_id)
    return ok(TaskDeleted(message="Task deleted successfully", task_id=task_id))


@router.post("/{task_id}/execute", response_model=Envelope[TaskExecuted])
async def execute_task(
    task_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[TaskExecuted]:
    """Run the task now, whatever its schedule (``task.execute``); follow the run in
    ``GET /api/tasks/{id}/runs``."""
    run = await service.execute_task(session, principal, task_id)
    return ok(
        TaskExecuted(
            message="Task execution queued", task_id=task_id, run_id=run.id, job_id=run.job_id
        )
    )


@router.get("/{task_id}/runs", response_model=PageEnvelope[TaskRunOut])
async def list_runs(
    task_id: str, session: SessionDep, principal: Authenticated, params: PageDep
) -> PageEnvelope[TaskRunOut]:
    """The task's runs, newest first: trigger, start, end, status, the reason of a
    failure, and each step's outcome (``task.read``)."""
    found, meta = await service.list_runs(session, principal, task_id, params)
    return page([_run_out(run) for run in found], meta)
