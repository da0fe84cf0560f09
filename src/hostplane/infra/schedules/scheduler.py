"""The scheduler loop: every tick, claim the due runs and fail the overdue ones.

It runs next to the job workers (``hostplane worker`` and the embedded
``hostplane up``); any number of instances may run at once, because each
due run is claimed by a compare-and-set in the database
(:func:`hostplane.infra.schedules.service.claim_due`). The runs themselves
are jobs, executed by whichever worker claims them.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from sqlalchemy.exc import IntegrityError

from hostplane.core.clock import utcnow
from hostplane.core.errors import HostplaneError
from hostplane.core.runtime import Runtime
from hostplane.infra.schedules import runner as _runner  # noqa: F401 - registers the job handler
from hostplane.infra.schedules import service

log = structlog.get_logger(__name__)

BATCH = 100


class Scheduler:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.schedules

    @property
    def late_after(self) -> float:
        """How late a run may be claimed before it counts as missed (catch-up policy)."""
        return max(60.0, 3 * self.settings.tick_seconds)

    async def tick(self) -> int:
        """Claim every run due now; return how many this instance claimed."""
        now = utcnow()
        async with self.runtime.unit_of_work() as session:
            await service.sweep_overdue(session, now)
        async with self.runtime.unit_of_work(read_only=True) as session:
            due = await service.due_tasks(session, now, BATCH)
        claimed = 0
        for task_id, at in due:
            try:
                async with self.runtime.unit_of_work() as session:
                    run = await service.claim_due(
                        session, task_id, at, now, late_after=self.late_after
                    )
            except IntegrityError:
                # The run's unique (task, time) key: this time has a run already
                # (the task's schedule was moved back onto it). Move past it.
                async with self.runtime.unit_of_work() as session:
                    await service.advance(session, task_id, at, now)
                continue
            except HostplaneError as exc:
                # One task that cannot be scheduled (its zone left the tz database)
                # must not hold up the others.
                log.warning("schedules.claim_refused", task_id=task_id, error=exc.message)
                continue
            if run is not None:
                claimed += 1
                log.info(
                    "schedules.claimed",
                    task_id=task_id,
                    run_id=run.id,
                    scheduled_for=at.isoformat(),
                    status=run.status,
                )
        return claimed

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set; a failed tick is logged and the next one tries again."""
        log.info("schedules.scheduler_started", tick_seconds=self.settings.tick_seconds)
        while not stop.is_set():
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed tick must not stop the scheduler
                log.exception("schedules.tick_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.tick_seconds)
        log.info("schedules.scheduler_stopped")
