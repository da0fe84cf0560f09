"""What a job handler receives: its identity, a unit of work, progress reporting."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.db.session import record_event
from hostplane.core.errors import HostplaneError
from hostplane.core.events.bus import Event
from hostplane.core.runtime import Runtime
from hostplane.platform.jobs import repository


class PermanentJobFailure(HostplaneError):
    """Raise from a handler to fail the job at once, without further attempts."""

    code = "JOB_FAILED"


@dataclass
class JobContext:
    runtime: Runtime
    job_id: str
    type: str
    attempt: int
    max_attempts: int
    tenant_id: str | None
    target_id: str | None
    worker_id: str
    _last_percent: int = field(default=-1, repr=False)

    def unit_of_work(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A transaction of the handler's own (jobs open their own unit of work)."""
        return self.runtime.unit_of_work()

    async def progress(self, percent: int, message: str | None = None) -> None:
        """Report progress (0-100): stored on the job and published as ``job.progress``."""
        percent = max(0, min(100, int(percent)))
        if percent == self._last_percent and message is None:
            return
        self._last_percent = percent
        async with self.runtime.unit_of_work() as session:
            await repository.set_progress(
                session, self.job_id, self.worker_id, percent=percent, message=message
            )
            record_event(
                session,
                Event(
                    "job.progress",
                    {
                        "jobId": self.job_id,
                        "type": self.type,
                        "targetId": self.target_id,
                        "progress": percent,
                        "message": message,
                    },
                    tenant_id=self.tenant_id,
                ),
            )
