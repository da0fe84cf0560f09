"""The durable job queue: transactional enqueue, exclusive claims, retries."""

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.app import build_runtime
from hostplane.core.clock import shifted, utcnow
from hostplane.core.errors import Conflict, ProviderUnavailable, ValidationFailed
from hostplane.core.runtime import Runtime
from hostplane.platform.jobs import repository
from hostplane.platform.jobs.context import JobContext, PermanentJobFailure
from hostplane.platform.jobs.models import Job
from hostplane.platform.jobs.registry import JobFailure, JobRegistry
from hostplane.platform.jobs.service import backoff_delay, enqueue
from hostplane.platform.jobs.worker import Worker
from tests.conftest import make_settings
from tests.support.factories import make_job


@pytest.fixture
def registry() -> JobRegistry:
    return JobRegistry()


async def reload(db: AsyncSession, job_id: str) -> Job:
    await db.commit()  # a fresh snapshot: see what the workers wrote
    job = await db.get(Job, job_id, populate_existing=True)
    assert job is not None
    return job


async def test_a_job_enqueued_in_a_rolled_back_transaction_never_exists(
    runtime: Runtime, registry: JobRegistry, db: AsyncSession
) -> None:
    ran: list[str] = []

    async def handler(_ctx: JobContext, *, server_id: str) -> None:
        ran.append(server_id)

    registry.register("server.install", handler)
    with pytest.raises(RuntimeError):
        async with runtime.unit_of_work() as session:
            await enqueue(session, "server.install", server_id="srv-1")
            raise RuntimeError("the change failed")
    assert await Worker(runtime, registry=registry).run_until_idle() == 0
    assert ran == []
    assert (await db.scalars(select(Job))).all() == []


async def test_a_committed_job_runs_once_with_its_arguments(
    runtime: Runtime, registry: JobRegistry, db: AsyncSession
) -> None:
    ran: list[tuple[str, int, int]] = []

    async def handler(ctx: JobContext, *, server_id: str, size: int) -> None:
        ran.append((server_id, size, ctx.attempt))

    registry.register("server.install", handler)
    job = await make_job(db, name="server.install", server_id="srv-1", size=3)
    assert job.target_id == "srv-1"
    assert await Worker(runtime, registry=registry).run_until_idle() == 1
    assert ran == [("srv-1", 3, 1)]
    stored = await reload(db, job.id)
    assert (stored.status, stored.attempts, stored.progress) == ("succeeded", 1, 100)
    assert stored.finished_at is not None and stored.locked_by is None


async def test_two_workers_racing_run_every_job_exactly_once(
    tmp_path: Path, runtime: Runtime, registry: JobRegistry, db: AsyncSession
) -> None:
    """Each worker has its own engine and connections, as two processes would."""
    runs: Counter[str] = Counter()
    total = 40

    async def handler(ctx: JobContext, *, n: int) -> None:
        runs[ctx.job_id] += 1
        await asyncio.sleep(0.005)

    registry.register("race.job", handler)
    for n in range(total):
        await make_job(db, name="race.job", n=n)

    second = build_runtime(make_settings(tmp_path))
    await second.bus.start()
    workers = [
        Worker(runtime, registry=registry, concurrency=4),
        Worker(second, registry=registry, concurrency=4),
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stop)) for worker in workers]
    try:
        async with asyncio.timeout(30):
            while sum(runs.values()) < total:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # give a double run the chance to show up
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await second.bus.close()
        await second.engine.dispose()

    assert len(runs) == total
    assert set(runs.values()) == {1}
    statuses = Counter((await db.scalars(select(Job.status))).all())
    assert statuses == {"succeeded": total}


async def test_concurrent_claims_never_share_a_job(
    tmp_path: Path, runtime: Runtime, db: AsyncSession
) -> None:
    """Two claimers in open transactions: never the same row.

    PostgreSQL skips the locked row and answers at once; SQLite makes the
    second claimer wait for the first transaction's write lock.
    """
    for n in range(2):
        await make_job(db, name="claim.me", n=n)
    other = build_runtime(make_settings(tmp_path))
    async with other.engine.connect() as warm:  # connect before the race, not during it
        await warm.execute(text("SELECT 1"))
    try:
        async with runtime.sessions() as first:
            mine = await repository.claim(first, worker_id="w1", limit=1, lease_seconds=30)
            assert len(mine) == 1

            async def claim_in_other() -> list[str]:
                async with other.unit_of_work() as second:
                    jobs = await repository.claim(second, worker_id="w2", limit=1, lease_seconds=30)
                    return [job.id for job in jobs]

            task = asyncio.create_task(claim_in_other())
            if runtime.settings.is_sqlite:
                await asyncio.sleep(1.0)
                assert not task.done(), "SQLite must serialise claimers"
            else:
                # Generous bound for a loaded machine: what matters is that it
                # finishes while the first transaction still holds its row.
                await asyncio.wait({task}, timeout=10)
                assert task.done(), "PostgreSQL must skip the locked row instead of waiting"
            await first.commit()
        theirs = await asyncio.wait_for(task, 10)
        assert len(theirs) == 1
        assert theirs[0] != mine[0].id
    finally:
        await other.engine.dispose()


async def test_failing_jobs_retry_with_backoff_then_fail(
    runtime: Runtime, registry: JobRegistry, db: AsyncSession
) -> None:
    attempts: list[int] = []

    async def handler(ctx: JobContext, *, node_id: str) -> None:
        attempts.append(ctx.attempt)
        raise ProviderUnavailable(f"node {node_id} did not answer")

    registry.register("node.ping", handler)
    # Long delays and a moved clock: the test never races real time.
    runtime.settings.jobs.backoff_base_seconds = 60
    runtime.settings.jobs.backoff_max_seconds = 3600
    job = await make_job(db, name="node.ping", node_id="n1", max_attempts=3)
    worker = Worker(runtime, registry=registry)

    assert await worker.run_until_idle() == 1
    stored = await reload(db, job.id)
    assert (stored.status, stored.attempts, stored.error_code) == (
        "queued",
        1,
        "PROVIDER_UNAVAILABLE",
    )
    first_delay = (stored.run_at - utcnow()).total_seconds()
    assert 25 <= first_delay <= 60, "half to all of the base delay"
    assert await worker.run_until_idle() == 0, "not due yet: backoff holds it"

    with shifted(timedelta(seconds=61)):
        assert await worker.run_until_idle() == 1
        stored = await reload(db, job.id)
        assert (stored.status, stored.attempts) == ("queued", 2)
        second_delay = (stored.run_at - utcnow()).total_seconds()
        assert 55 <= second_delay <= 120, "the delay doubles with the attempt"
    with shifted(timedelta(seconds=61 + 121)):
        assert await worker.run_until_idle() == 1
    stored = await reload(db, job.id)
    assert (stored.status, stored.attempts) == ("failed", 3)
    assert stored.error_message == "node n1 did not answer"
    assert stored.finished_at is not None
    assert attempts == [1, 2, 3]


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for attempt in range(1, 8):
        delay = backoff_delay(attempt, base=2.0, cap=60.0)
        ceiling = min(60.0, 2.0 * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert backoff_delay(60, base=2.0, cap=60.0) <= 60.0


async def test_unexpected_errors_are_recorded_without_their_message(
    runtime: Runtime, registry: JobRegistry, db: AsyncSession
) -> None:
    async def handler(_ctx: JobContext) -> None:
        raise RuntimeError("password=hunter2 at /srv/secret")

    registry.register("leaky", handler)
    job = await make_job(db, name="leaky", max_attempts=1)
    await Worker(runtime, registry=registry).run_until_idle()
    stored = await reload(db, job.id)
    assert stored.status == "failed"
    assert stored.error_code == "INTERNAL_ERROR"
    assert "hunter2" not in (stored.error_message or "")


async def test_permanent_failures_and_unknown_types_do_not_retry(
    runtime: Runtime, registry: JobRegistry, db: AsyncSession
) -> None:
    async def handler(_ctx: JobContext) -> None:
        raise PermanentJobFailure("the template was deleted")

    registry.register("doomed", handler)
    doomed = await make_job(db, name="doomed", max_attempts=5)
    unknown = await make_job(db, name="nobody.handles.this", max_attempts=5)
    await Worker(runtime, registry=registry).run_until_idle()
    assert (await reload(db, doomed.id)).status == "failed"
    assert (await reload(db, doomed.id)).attempts == 1
    assert (await reload(db, unknown.id)).error_code == "UNKNOWN_JOB_TYPE"


async def test_a_job_whose_worker_died_is_claimed_again_after_its_lease(
    runtime: Runtime, registry: JobRegistry, db: AsyncSession
) -> None:
    ran: list[int] = []

    async def handler(ctx: JobContext) -> None:
        ran.append(ctx.attempt)

    registry.register("orphan", handler)
    job = await make_job(db, name="orphan", max_attempts=3)
    async with runtime.unit_of_work() as session:
        await repository.claim(session, worker_id="dead-worker", limit=1, lease_seconds=5)
    worker = Worker(runtime, registry=registry)
    assert await worker.run_until_idle() == 0, "the lease still holds"
    with shifted(timedelta(seconds=6)):
        assert await worker.run_until_idle() == 1
    assert ran == [2]
    assert (await reload(db, job.id)).status == "succeeded"


async def test_a_job_that_keeps_killing_its_worker_fails_after_max_attempts(
    runtime: Runtime, registry: JobRegistry, db: AsyncSession
) -> None:
    job = await make_job(db, name="poison", max_attempts=2)
    for n in range(2):
        with shifted(timedelta(seconds=10 * n)):
            async with runtime.unit_of_work() as session:
                assert (
                    len(
                        await repository.claim(
                            session, worker_id=f"dies-{n}", limit=1, lease_seconds=5
                        )
                    )
                    == 1
                )
    with shifted(timedelta(seconds=30)):
        assert await Worker(runtime, registry=registry).run_until_idle() == 0
    stored = await reload(db, job.id)
    assert (stored.status, stored.error_code) == ("failed", "LEASE_EXPIRED")


async def test_outcomes_are_written_only_while_the_lease_is_held(
    runtime: Runtime, db: AsyncSession
) -> None:
    job = await make_job(db, name="contested")
    async with runtime.unit_of_work() as session:
        await repository.claim(session, worker_id="slow", limit=1, lease_seconds=5)
    with shifted(timedelta(seconds=6)):
        async with runtime.unit_of_work() as session:
            await repository.claim(session, worker_id="fast", limit=1, lease_seconds=5)
    async with runtime.unit_of_work() as session:
        assert await repository.mark_succeeded(session, job.id, "slow") is False
        assert await repository.mark_succeeded(session, job.id, "fast") is True


async def test_unique_keys_queue_the_same_work_once(runtime: Runtime, db: AsyncSession) -> None:
    async with runtime.unit_of_work() as session:
        first = await enqueue(session, "payment.apply", unique_key="stripe:evt_1", payment_id="p1")
    async with runtime.unit_of_work() as session:
        second = await enqueue(session, "payment.apply", unique_key="stripe:evt_1", payment_id="p1")
    assert first.id == second.id
    assert len((await db.scalars(select(Job))).all()) == 1


async def test_arguments_must_be_ids_not_objects(runtime: Runtime) -> None:
    async with runtime.unit_of_work() as session:
        with pytest.raises(TypeError, match="id or a plain value"):
            await enqueue(session, "bad", server={"id": "x"})  # type: ignore[arg-type]


async def test_progress_is_stored_and_published(
    runtime: Runtime, registry: JobRegistry, db: AsyncSession
) -> None:
    async def handler(ctx: JobContext, *, backup_id: str) -> None:
        await ctx.progress(40, "archiving")
        await ctx.progress(80)

    registry.register("backup.create", handler)
    job = await make_job(db, name="backup.create", backup_id="b1")
    async with runtime.bus.subscribe("job.*") as events:
        await Worker(runtime, registry=registry).run_until_idle()
        seen = []
        async with asyncio.timeout(5):
            while len(seen) < 4:
                event = await events.get()
                seen.append((event.type, event.data.get("progress")))
    assert seen == [
        ("job.started", None),
        ("job.progress", 40),
        ("job.progress", 80),
        ("job.succeeded", None),
    ]
    assert (await reload(db, job.id)).progress == 100


async def test_a_running_worker_picks_up_new_jobs_at_once(
    runtime: Runtime, registry: JobRegistry, db: AsyncSession
) -> None:
    done = asyncio.Event()

    async def handler(_ctx: JobContext) -> None:
        done.set()

    registry.register("quick", handler)
    runtime.settings.jobs.poll_interval_seconds = 30  # only the enqueue event can wake it in time
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(runtime, registry=registry).run(stop))
    try:
        await asyncio.sleep(0.2)
        async with runtime.unit_of_work() as session:
            await enqueue(session, "quick")
        await asyncio.wait_for(done.wait(), 5)
    finally:
        stop.set()
        await task


async def test_stopping_a_worker_hands_back_unfinished_jobs(
    runtime: Runtime, registry: JobRegistry, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = asyncio.Event()

    async def handler(_ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(60)

    registry.register("long", handler)
    monkeypatch.setattr("hostplane.platform.jobs.worker.SHUTDOWN_GRACE_SECONDS", 0.2)
    job = await make_job(db, name="long")
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(runtime, registry=registry).run(stop))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 10)
    stored = await reload(db, job.id)
    assert (stored.status, stored.attempts, stored.locked_by) == ("queued", 0, None)


async def test_recurring_jobs_are_queued_once_per_period_by_any_number_of_workers(
    runtime: Runtime, registry: JobRegistry, db: AsyncSession
) -> None:
    ran: list[int] = []

    async def handler(ctx: JobContext) -> None:
        ran.append(ctx.attempt)

    registry.register("maintenance.tidy", handler, every_seconds=3600)
    workers = [Worker(runtime, registry=registry), Worker(runtime, registry=registry)]
    for worker in workers:
        await worker.enqueue_recurring()
        await worker.enqueue_recurring()
    assert await workers[0].run_until_idle() == 1
    with shifted(timedelta(hours=1)):
        await workers[1].enqueue_recurring()
        assert await workers[1].run_until_idle() == 1
    assert ran == [1, 1]


def test_log_retention_is_registered_as_a_recurring_job() -> None:
    import hostplane.infra.servers.logs  # noqa: F401 - registers its handlers
    from hostplane.platform.jobs.registry import registry as default_registry

    spec = default_registry.get("servers.prune_logs")
    assert spec is not None
    assert spec.every_seconds == 3600


async def test_client_errors_fail_at_once_and_transient_ones_retry(
    runtime: Runtime, registry: JobRegistry, db: AsyncSession
) -> None:
    async def invalid(_ctx: JobContext) -> None:
        raise ValidationFailed("the archive was refused")

    async def busy(_ctx: JobContext) -> None:
        raise Conflict("the server is busy")

    registry.register("invalid", invalid)
    registry.register("busy", busy)
    doomed = await make_job(db, name="invalid", max_attempts=5)
    later = await make_job(db, name="busy", max_attempts=5)
    await Worker(runtime, registry=registry).run_until_idle()
    stored = await reload(db, doomed.id)
    assert (stored.status, stored.attempts, stored.error_code) == (
        "failed",
        1,
        "VALIDATION_ERROR",
    )
    assert (await reload(db, later.id)).status == "queued", "a conflict may clear: retried"


async def test_a_job_that_failed_for_good_runs_its_failure_hook_once(
    runtime: Runtime, registry: JobRegistry, db: AsyncSession
) -> None:
    seen: list[tuple[str, str, int]] = []

    async def handler(_ctx: JobContext, *, item: str) -> None:
        raise ProviderUnavailable(f"{item} is away")

    async def hook(ctx: JobContext, failure: JobFailure, *, item: str) -> None:
        seen.append((item, failure.code, ctx.attempt))

    registry.register("flaky", handler)
    registry.set_failure_hook("flaky", hook)
    runtime.settings.jobs.backoff_base_seconds = 60
    job = await make_job(db, name="flaky", item="a", max_attempts=2)
    worker = Worker(runtime, registry=registry)
    await worker.run_until_idle()
    assert seen == [], "a retry is not a failure yet"
    with shifted(timedelta(seconds=61)):
        await worker.run_until_idle()
    assert seen == [("a", "PROVIDER_UNAVAILABLE", 2)]
    assert (await reload(db, job.id)).status == "failed"


async def test_a_job_whose_worker_died_on_its_last_attempt_runs_its_failure_hook(
    runtime: Runtime, registry: JobRegistry, db: AsyncSession
) -> None:
    seen: list[tuple[str, str]] = []

    async def handler(_ctx: JobContext, *, item: str) -> None:
        raise AssertionError("an abandoned job must not run again")

    async def hook(_ctx: JobContext, failure: JobFailure, *, item: str) -> None:
        seen.append((item, failure.code))
        raise RuntimeError("the hook's own trouble does not keep the job alive")

    registry.register("moving", handler)
    registry.set_failure_hook("moving", hook)
    job = await make_job(db, name="moving", item="b", max_attempts=1)
    async with runtime.unit_of_work() as session:
        await repository.claim(session, worker_id="killed", limit=1, lease_seconds=5)
    with shifted(timedelta(seconds=6)):
        assert await Worker(runtime, registry=registry).run_until_idle() == 0
    assert seen == [("b", "LEASE_EXPIRED")]
    stored = await reload(db, job.id)
    assert (stored.status, stored.error_code, stored.attempts) == ("failed", "LEASE_EXPIRED", 1)

    # A worker that dies in the hook as well: the next one fails the job without it.
    again = await make_job(db, name="moving", item="c", max_attempts=1)
    async with runtime.unit_of_work() as session:
        await repository.claim(session, worker_id="killed", limit=1, lease_seconds=5)
    with shifted(timedelta(seconds=6)):
        async with runtime.unit_of_work() as session:
            claimed = await repository.claim_due(
                session, worker_id="dies-in-hook", limit=1, lease_seconds=5
            )
            assert [j.id for j in claimed.abandoned] == [again.id]
    with shifted(timedelta(seconds=12)):
        assert await Worker(runtime, registry=registry).run_until_idle() == 0
    assert seen == [("b", "LEASE_EXPIRED")]
    assert (await reload(db, again.id)).status == "failed"
