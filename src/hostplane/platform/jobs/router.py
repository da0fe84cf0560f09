"""``/api/jobs``: the durable queue, visible to operators (mPanel "provisioning jobs")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.http.deps import PageDep, SessionDep, require
from hostplane.core.http.envelope import Envelope, PageEnvelope, ok, page
from hostplane.core.principal import Principal
from hostplane.identity.tenants.service import is_platform_operator
from hostplane.platform.jobs import service
from hostplane.platform.jobs.schemas import JobOut, JobStatus

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

JobReader = Annotated[Principal, Depends(require("job.read"))]
JobRetrier = Annotated[Principal, Depends(require("job.retry"))]


async def _tenant_scope(session: AsyncSession, principal: Principal) -> str | None:
    # Operators of the platform tenant see every tenant's jobs; others their own.
    return None if await is_platform_operator(session, principal) else principal.tenant_id


@router.get("", response_model=PageEnvelope[JobOut])
async def list_jobs(
    session: SessionDep,
    principal: JobReader,
    params: PageDep,
    status: Annotated[
        JobStatus | None, Query(description="queued | running | succeeded | failed")
    ] = None,
    type: Annotated[str | None, Query(description="Job type, e.g. server.install")] = None,
    target_id: Annotated[
        str | None, Query(alias="targetId", description="The resource the job acts on")
    ] = None,
) -> PageEnvelope[JobOut]:
    """List jobs, newest first, filtered by status, type and target."""
    jobs, meta = await service.list_jobs(
        session,
        params,
        status=status,
        type_=type,
        target_id=target_id,
        tenant_id=await _tenant_scope(session, principal),
    )
    return page([JobOut.model_validate(job) for job in jobs], meta)


@router.get("/{job_id}", response_model=Envelope[JobOut])
async def get_job(job_id: str, session: SessionDep, principal: JobReader) -> Envelope[JobOut]:
    """One job with its attempts, progress and last error."""
    job = await service.get_job(session, job_id, tenant_id=await _tenant_scope(session, principal))
    return ok(JobOut.model_validate(job))


@router.post("/{job_id}/retry", response_model=Envelope[JobOut])
async def retry_job(job_id: str, session: SessionDep, principal: JobRetrier) -> Envelope[JobOut]:
    """Re-queue a failed job with a fresh set of attempts (409 unless it failed)."""
    job = await service.retry_job(
        session, job_id, tenant_id=await _tenant_scope(session, principal)
    )
    return ok(JobOut.model_validate(job))
