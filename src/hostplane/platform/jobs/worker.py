"""The worker loop: claim due jobs, run their handlers, record the outcome.

Any number of workers (threads of one process or many processes on many
machines) can run against one database: claiming uses row locks, and every
outcome is written only while the worker still holds the job's lease.

Failures are either permanent or transient. A :class:`PermanentJobFailure`
or a client error (4xx: a validation error, a refused archive, an agent's
400 or 404) would fail the same way again, so the job fails at once. A node
that is away, a timeout, a 5xx, a conflict or a lock that may clear (409,
423, 429), or an unexpected exception is retried with backoff until the
job's attempts run out. A job that failed for good runs its type's failure
hook (see :mod:`hostplane.platform.jobs.registry`), and so does one whose
worker died holding its last attempt, once another worker finds its lease
expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from hostplane.core.clock import utcnow
from hostplane.core.db.session import record_event
from hostplane.core.errors import HostplaneError
from hostplane.core.events.bus import Event
from hostplane.core.ids import new_id
from hostplane.core.runtime import Runtime
from hostplane.infra.alerts.actions import AlertActionDispatcher
from hostplane.infra.alerts.evaluator import AlertEvaluator
from hostplane.platform.jobs import repository
from hostplane.platform.jobs.context import JobContext, PermanentJobFailure
from hostplane.platform.jobs.registry import HandlerSpec, JobFailure, JobRegistry
from hostplane.platform.jobs.registry import registry as default_registry
from hostplane.platform.jobs.service import ENQUEUED_TOPIC, backoff_delay, enqueue
from hostplane.platform.webhooks.dispatcher import WebhookDispatcher

log = structlog.get_logger(__name__)

HEARTBEAT_SECONDS = 15.0
SHUTDOWN_GRACE_SECONDS = 20.0
UNEXPECTED_FAILURE = "The job failed unexpectedly; the worker's log has the details"
# Client errors that describe a state which may change: worth another attempt.
_TRANSIENT_CLIENT_STATUSES = frozenset({408, 409, 423, 425, 429})


def is_permanent(exc: HostplaneError) -> bool:
    """Whether another attempt would fail the same way (see the module's docstring)."""
    if isinstance(exc, PermanentJobFailure):
        return True
    return 400 <= exc.status < 500 and exc.status not in _TRANSIENT_CLIENT_STATUSES


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A snapshot of the claimed row, so nothing touches an ORM object after its session."""

    id: str
    type: str
    args: dict[str, Any]
    attempts: int
    max_attempts: int
    tenant_id: str | None
    target_id: str | None
    # Its worker died on the last attempt: run the failure hook, then fail it.
    abandoned: bool = False


class Worker:
    def __init__(
        self,
        runtime: Runtime,
        *,
        registry: JobRegistry | None = None,
        worker_id: str | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.jobs
        self.registry = registry or default_registry
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"
        self.concurrency = concurrency or self.settings.concurrency
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()

    # ---- the loop -------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then finish or hand back running jobs."""
        log.info("jobs.worker_started", worker_id=self.worker_id, concurrency=self.concurrency)
        async with self.runtime.bus.subscribe(ENQUEUED_TOPIC, max_queue=16) as enqueued:
            helpers = [
                asyncio.create_task(self._forward_wakeups(enqueued)),
                asyncio.create_task(self._heartbeat_loop()),
                asyncio.create_task(self._wake_on(stop)),
            ]
            # Webhook deliveries are served by every worker process, beside its jobs.
            webhooks = asyncio.create_task(WebhookDispatcher(self.runtime).run(stop))
            # So are alert evaluation and alert notifications.
            alerts = [
                asyncio.create_task(AlertEvaluator(self.runtime).run(stop)),
                asyncio.create_task(AlertActionDispatcher(self.runtime).run(stop)),
            ]
            try:
                await self._loop(stop)
            finally:
                if not stop.is_set():
                    webhooks.cancel()
                    for task in alerts:
                        task.cancel()
                await asyncio.gather(webhooks, *alerts, return_exceptions=True)
                for task in helpers:
                    task.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
                await self._drain()
                with contextlib.suppress(Exception):
                    async with self.runtime.unit_of_work() as session:
                        await repository.forget_worker(session, self.worker_id)
        log.info("jobs.worker_stopped", worker_id=self.worker_id)

    async def _loop(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            self._wakeup.clear()
            free = self.concurrency - len(self._running)
            claimed: list[ClaimedJob] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                    failures = 0
                except (OSError, ConnectionError, TimeoutError) as exc:
                    failures += 1
                    log.warning("jobs.claim_failed", error=str(exc), attempt=failures)
                except Exception:
                    failures += 1
                    log.exception("jobs.claim_failed", attempt=failures)
                for job in claimed:
                    self._spawn(job)
            if claimed and len(claimed) == free:
                continue  # there may be more due work right now
            delay = self.settings.poll_interval_seconds * (2 ** min(failures, 6))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), delay)

    async def run_until_idle(self) -> int:
        """Run due jobs until none is left; return how many ran. For tests and one-shot runs."""
        ran = 0
        while True:
            claimed = await self._claim(self.concurrency)
            if not claimed:
                return ran
            await asyncio.gather(*(self._execute(job) for job in claimed))
            ran += sum(1 for job in claimed if not job.abandoned)

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wakeup.set()

    async def _forward_wakeups(self, enqueued: Any) -> None:
        async for _event in enqueued:
            self._wakeup.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self.enqueue_recurring()
                async with self.runtime.unit_of_work() as session:
                    await repository.heartbeat(session, self.worker_id)
                    await repository.extend_leases(
                        session,
                        list(self._running),
                        self.worker_id,
                        lease_seconds=self.settings.lease_seconds,
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat must not stop the worker
                log.warning("jobs.heartbeat_failed", error=str(exc))
            await asyncio.sleep(min(HEARTBEAT_SECONDS, self.settings.lease_seconds / 3))

    async def _drain(self) -> None:
        if not self._running:
            return
        _done, pending = await asyncio.wait(
            list(self._running.values()), timeout=SHUTDOWN_GRACE_SECONDS
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # ---- one job --------------------------------------------------------

    async def enqueue_recurring(self) -> None:
        """Queue each recurring job once per period, whichever worker gets there first.

        The period's number is part of the job's unique key, so any number of
        workers doing this at once still queue it once.
        """
        now = utcnow().timestamp()
        for spec in self.registry.recurring():
            period = int(now // (spec.every_seconds or 1))
            async with self.runtime.unit_of_work() as session:
                await enqueue(session, spec.name, unique_key=f"recurring:{spec.name}:{period}")

    async def _claim(self, limit: int) -> list[ClaimedJob]:
        async with self.runtime.unit_of_work() as session:
            claimed = await repository.claim_due(
                session,
                worker_id=self.worker_id,
                limit=limit,
                lease_seconds=self.settings.lease_seconds,
            )
            rows = [(row, False) for row in claimed.run]
            rows += [(row, True) for row in claimed.abandoned]
            jobs = [
                ClaimedJob(
                    row.id,
                    row.type,
                    dict(row.args),
                    row.attempts,
                    row.max_attempts,
                    row.tenant_id,
                    row.target_id,
                    abandoned,
                )
                for row, abandoned in rows
            ]
            for job in jobs:
                if not job.abandoned:
                    record_event(session, self._event("job.started", job))
            return jobs

    def _spawn(self, job: ClaimedJob) -> None:
        task = asyncio.create_task(self._execute(job), name=f"job:{job.type}:{job.id}")
        self._running[job.id] = task

        def _finished(_task: asyncio.Task[None]) -> None:
            self._running.pop(job.id, None)
            self._wakeup.set()

        task.add_done_callback(_finished)

    async def _execute(self, job: ClaimedJob) -> None:
        with structlog.contextvars.bound_contextvars(
            job_id=job.id, job_type=job.type, attempt=job.attempts
        ):
            spec = self.registry.get(job.type)
            if job.abandoned:
                await self._abandon(job, spec)
                return
            if spec is None:
                await self._record_failure(
                    job,
                    "UNKNOWN_JOB_TYPE",
                    f"No handler is registered for job type {job.type!r}",
                    retry=False,
                )
                return
            context = self._context(job)
            try:
                async with asyncio.timeout(spec.timeout_seconds):
                    await spec.func(context, **job.args)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    async with self.runtime.unit_of_work() as session:
                        await repository.release(session, job.id, self.worker_id)
                raise
            except HostplaneError as exc:
                await self._record_failure(
                    job, exc.code, exc.message, retry=not is_permanent(exc), spec=spec
                )
            except TimeoutError:
                await self._record_failure(
                    job,
                    "JOB_TIMEOUT",
                    f"The job did not finish within {spec.timeout_seconds} s",
                    retry=True,
                    spec=spec,
                )
            except Exception:
                log.exception("jobs.handler_failed")
                await self._record_failure(
                    job, "INTERNAL_ERROR", UNEXPECTED_FAILURE, retry=True, spec=spec
                )
            else:
                await self._record_success(job)

    def _context(self, job: ClaimedJob) -> JobContext:
        return JobContext(
            runtime=self.runtime,
            job_id=job.id,
            type=job.type,
            attempt=job.attempts,
            max_attempts=job.max_attempts,
            tenant_id=job.tenant_id,
            target_id=job.target_id,
            worker_id=self.worker_id,
        )

    async def _abandon(self, job: ClaimedJob, spec: HandlerSpec | None) -> None:
        """A job whose worker died on its last attempt: undo what it left, then fail it."""
        log.warning("jobs.abandoned")
        await self._record_failure(
            job, repository.LEASE_EXPIRED_CODE, repository.ABANDONED_MESSAGE, retry=False, spec=spec
        )

    async def _run_failure_hook(
        self, job: ClaimedJob, spec: HandlerSpec | None, failure: JobFailure
    ) -> None:
        if spec is None or spec.on_failure is None:
            return
        try:
            # Bounded like the handler; a hook must not hold the job forever.
            async with asyncio.timeout(spec.timeout_seconds):
                await spec.on_failure(self._context(job), failure, **job.args)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The job still fails; the hook's error is for the operator.
            log.exception("jobs.failure_hook_failed")

    async def _record_success(self, job: ClaimedJob) -> None:
        async with self.runtime.unit_of_work() as session:
            if await repository.mark_succeeded(session, job.id, self.worker_id):
                record_event(session, self._event("job.succeeded", job))
                log.info("jobs.succeeded")
            else:
                log.warning("jobs.lease_lost", outcome="succeeded")

    async def _record_failure(
        self,
        job: ClaimedJob,
        code: str,
        message: str,
        *,
        retry: bool,
        spec: HandlerSpec | None = None,
    ) -> None:
        retry_at = None
        if retry and job.attempts < job.max_attempts:
            delay = backoff_delay(
                job.attempts,
                base=self.settings.backoff_base_seconds,
                cap=self.settings.backoff_max_seconds,
            )
            retry_at = utcnow() + timedelta(seconds=delay)
        if retry_at is None:
            # Failed for good: undo what the handler left before saying so.
            await self._run_failure_hook(job, spec, JobFailure(code, message))
        async with self.runtime.unit_of_work() as session:
            recorded = await repository.mark_failed(
                session,
                job.id,
                self.worker_id,
                error_code=code,
                error_message=message,
                retry_at=retry_at,
            )
            if recorded:
                kind = "job.retrying" if retry_at else "job.failed"
                record_event(session, self._event(kind, job, errorCode=code))
        log.warning(
            "jobs.failed", error_code=code, will_retry=retry_at is not None, lease_held=recorded
        )

    @staticmethod
    def _event(kind: str, job: ClaimedJob, **extra: Any) -> Event:
        data = {
            "jobId": job.id,
            "type": job.type,
            "targetId": job.target_id,
            "attempt": job.attempts,
            **extra,
        }
        return Event(kind, data, tenant_id=job.tenant_id)
