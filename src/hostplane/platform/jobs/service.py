"""Enqueueing, inspecting and retrying jobs.

``enqueue`` writes the job row in the caller's transaction: the job exists if
and only if the change that caused it commits.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.db.session import record_event
from hostplane.core.errors import Conflict, NotFound, ValidationFailed
from hostplane.core.events.bus import Event
from hostplane.core.pagination import PageMeta, PageParams, paginate
from hostplane.platform.jobs.models import JOB_STATUSES, Job

DEFAULT_MAX_ATTEMPTS = 5
JobArgument = str | int | bool | None

# Workers listen for this to pick new work up at once instead of at the next poll.
ENQUEUED_TOPIC = "job.enqueued"


class JobNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__("job", job_id)


async def enqueue(
    session: AsyncSession,
    name: str,
    *,
    tenant_id: str | None = None,
    max_attempts: int | None = None,
    run_at: datetime | None = None,
    unique_key: str | None = None,
    **ids: JobArgument,
) -> Job:
    """Queue job ``name`` with keyword arguments that are ids or plain values.

    ``target_id`` (the resource the job acts on, for ``GET /api/jobs?targetId=``)
    is the first argument whose name ends in ``_id``. With ``unique_key``, a
    second enqueue of the same key returns the first job instead of a new one.
    """
    for key, value in ids.items():
        if value is not None and not isinstance(value, str | int | bool):
            raise TypeError(
                f"job argument {key!r} must be an id or a plain value, not {type(value).__name__}"
            )
    if unique_key is not None:
        existing = await session.scalar(select(Job).where(Job.unique_key == unique_key))
        if existing is not None:
            return existing
    target = next((str(v) for k, v in ids.items() if k.endswith("_id") and v is not None), None)
    job = Job(
        tenant_id=tenant_id,
        type=name,
        status="queued",
        args=dict(ids),
        target_id=target,
        unique_key=unique_key,
        attempts=0,
        max_attempts=max_attempts or DEFAULT_MAX_ATTEMPTS,
        run_at=run_at or utcnow(),
        progress=0,
    )
    session.add(job)
    await session.flush()
    record_event(
        session, Event(ENQUEUED_TOPIC, {"jobId": job.id, "type": name}, tenant_id=tenant_id)
    )
    return job


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    Exponential with "equal jitter": between half and all of ``base * 2^(n-1)``,
    capped, so retries of many jobs that failed together spread out.
    """
    ceiling = min(cap, base * (1 << min(max(attempt - 1, 0), 62)))
    jitter: float = random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not security
    return ceiling / 2 + jitter


async def get_job(session: AsyncSession, job_id: str, *, tenant_id: str | None = None) -> Job:
    job = await session.get(Job, job_id)
    if job is None or (tenant_id is not None and job.tenant_id not in (tenant_id, None)):
        raise JobNotFound(job_id)
    return job


def _filtered(
    *, status: str | None, type_: str | None, target_id: str | None, tenant_id: str | None
) -> Select[Job]:
    statement = select(Job).order_by(Job.id.desc())
    if status is not None:
        if status not in JOB_STATUSES:
            raise ValidationFailed(
                f"Unknown job status {status!r}",
                details={
                    "fields": [{"field": "status", "message": f"one of {', '.join(JOB_STATUSES)}"}]
                },
            )
        statement = statement.where(Job.status == status)
    if type_ is not None:
        statement = statement.where(Job.type == type_)
    if target_id is not None:
        statement = statement.where(Job.target_id == target_id)
    if tenant_id is not None:
        statement = statement.where(Job.tenant_id == tenant_id)
    return statement


async def list_jobs(
    session: AsyncSession,
    params: PageParams,
    *,
    status: str | None = None,
    type_: str | None = None,
    target_id: str | None = None,
    tenant_id: str | None = None,
) -> tuple[Sequence[Job], PageMeta]:
    return await paginate(
        session,
        _filtered(status=status, type_=type_, target_id=target_id, tenant_id=tenant_id),
        params,
    )


async def retry_job(session: AsyncSession, job_id: str, *, tenant_id: str | None = None) -> Job:
    """Put a failed job back in the queue with a fresh set of attempts."""
    job = await get_job(session, job_id, tenant_id=tenant_id)
    job = await session.get(Job, job.id, with_for_update=True, populate_existing=True) or job
    if job.status != "failed":
        raise Conflict(
            f"Only failed jobs can be retried; this one is {job.status}",
            details={"status": job.status},
        )
    job.status = "queued"
    job.attempts = 0
    job.run_at = utcnow()
    job.finished_at = None
    job.locked_by = None
    job.locked_until = None
    job.error_code = None
    job.error_message = None
    job.progress = 0
    job.progress_message = None
    await session.flush()
    record_event(
        session, Event(ENQUEUED_TOPIC, {"jobId": job.id, "type": job.type}, tenant_id=job.tenant_id)
    )
    return job


def lease_expiry(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)
