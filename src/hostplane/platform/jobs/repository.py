"""The queries workers run: claiming with row locks, finishing under the lease."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.platform.jobs.models import JOB_STATUSES, Job, JobWorker

LEASE_EXPIRED_CODE = "LEASE_EXPIRED"
ABANDONED_MESSAGE = "The worker running this job stopped responding and no attempts are left"


@dataclass(frozen=True, slots=True)
class Claimed:
    """What one claim took: jobs to run, and jobs abandoned on their last attempt
    (their worker died) whose failure hook the claiming worker must run."""

    run: list[Job]
    abandoned: list[Job]


async def claim_due(
    session: AsyncSession, *, worker_id: str, limit: int, lease_seconds: float
) -> Claimed:
    """Take up to ``limit`` due jobs for ``worker_id``.

    On PostgreSQL the rows are locked with ``FOR UPDATE SKIP LOCKED``, so
    workers racing for the same rows each get different ones and never wait on
    each other. On SQLite the transaction began with ``BEGIN IMMEDIATE`` and
    already holds the database's write lock, which gives the same exclusivity.
    A running job whose lease expired (its worker died) is claimable again. If
    it has no attempts left it is not run again: it is leased as ``abandoned``
    (error ``LEASE_EXPIRED``) so the worker can run its failure hook before
    failing it; one whose failure hook's worker died as well is failed here.
    """
    now = utcnow()
    due = (
        select(Job)
        .where(
            or_(
                and_(Job.status == "queued", Job.run_at <= now),
                and_(Job.status == "running", Job.locked_until < now),
            )
        )
        .order_by(Job.run_at, Job.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = Claimed([], [])
    for job in await session.scalars(due):
        if job.status == "running" and job.attempts >= job.max_attempts:
            if job.error_code == LEASE_EXPIRED_CODE:
                # Its failure hook was already handed to a worker that died too.
                job.status = "failed"
                job.finished_at = now
                job.locked_by = None
                job.locked_until = None
                continue
            job.error_code = LEASE_EXPIRED_CODE
            job.error_message = ABANDONED_MESSAGE
            job.locked_by = worker_id
            job.locked_until = now + timedelta(seconds=lease_seconds)
            claimed.abandoned.append(job)
            continue
        job.status = "running"
        job.attempts += 1
        job.locked_by = worker_id
        job.locked_until = now + timedelta(seconds=lease_seconds)
        job.started_at = now
        claimed.run.append(job)
    await session.flush()
    return claimed


async def claim(
    session: AsyncSession, *, worker_id: str, limit: int, lease_seconds: float
) -> list[Job]:
    """The jobs :func:`claim_due` took to run (abandoned ones stay leased to
    ``worker_id`` until their lease expires again)."""
    claimed = await claim_due(
        session, worker_id=worker_id, limit=limit, lease_seconds=lease_seconds
    )
    return claimed.run


async def _update_owned(session: AsyncSession, job_id: str, worker_id: str, **values: Any) -> bool:
    """Update a job only while ``worker_id`` still holds it; report whether it did."""
    statement = (
        update(Job)
        .where(Job.id == job_id, Job.locked_by == worker_id, Job.status == "running")
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    result = cast(CursorResult[Any], await session.execute(statement))
    return result.rowcount == 1


async def mark_succeeded(session: AsyncSession, job_id: str, worker_id: str) -> bool:
    return await _update_owned(
        session,
        job_id,
        worker_id,
        status="succeeded",
        finished_at=utcnow(),
        locked_by=None,
        locked_until=None,
        progress=100,
    )


async def mark_failed(
    session: AsyncSession,
    job_id: str,
    worker_id: str,
    *,
    error_code: str,
    error_message: str,
    retry_at: datetime | None,
) -> bool:
    """Record a failed attempt: back to the queue at ``retry_at``, or failed for good."""
    common: dict[str, Any] = {
        "error_code": error_code,
        "error_message": error_message,
        "locked_by": None,
        "locked_until": None,
    }
    if retry_at is None:
        return await _update_owned(
            session, job_id, worker_id, status="failed", finished_at=utcnow(), **common
        )
    return await _update_owned(
        session, job_id, worker_id, status="queued", run_at=retry_at, **common
    )


async def release(session: AsyncSession, job_id: str, worker_id: str) -> bool:
    """Give a job back unfinished (shutdown); the interrupted attempt does not count."""
    return await _update_owned(
        session,
        job_id,
        worker_id,
        status="queued",
        run_at=utcnow(),
        locked_by=None,
        locked_until=None,
        attempts=Job.attempts - 1,
    )


async def set_progress(
    session: AsyncSession, job_id: str, worker_id: str, *, percent: int, message: str | None
) -> bool:
    return await _update_owned(
        session, job_id, worker_id, progress=percent, progress_message=message
    )


async def extend_leases(
    session: AsyncSession, job_ids: Sequence[str], worker_id: str, *, lease_seconds: float
) -> None:
    if not job_ids:
        return
    await session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.locked_by == worker_id, Job.status == "running")
        .values(locked_until=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )


async def heartbeat(session: AsyncSession, worker_id: str) -> None:
    row = await session.get(JobWorker, worker_id)
    now = utcnow()
    if row is None:
        session.add(
            JobWorker(
                id=worker_id,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                started_at=now,
                last_seen_at=now,
            )
        )
    else:
        row.last_seen_at = now
    await session.flush()


async def forget_worker(session: AsyncSession, worker_id: str) -> None:
    await session.execute(delete(JobWorker).where(JobWorker.id == worker_id))


async def live_workers(session: AsyncSession, *, within: timedelta) -> int:
    return (
        await session.scalar(
            select(func.count())
            .select_from(JobWorker)
            .where(JobWorker.last_seen_at >= utcnow() - within)
        )
    ) or 0


async def count_by_status(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Job.status, func.count()).group_by(Job.status))
    counts = dict.fromkeys(JOB_STATUSES, 0)
    for status, count in rows:
        counts[status] = count
    return counts
