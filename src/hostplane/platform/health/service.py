"""Probing the dependencies a panel needs."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Literal

from sqlalchemy import text

from hostplane.core.runtime import Runtime
from hostplane.platform.jobs import repository as jobs_repository

DependencyState = Literal["ok", "down"]
PROBE_TIMEOUT_SECONDS = 2.0
# A worker heartbeats every 15 s; three missed beats mean nobody serves the queue.
WORKER_SILENCE = timedelta(seconds=45)


async def _database(runtime: Runtime) -> DependencyState:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS), runtime.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any failure means "down"; details go to the log, not the client
        return "down"
    return "ok"


async def _redis(runtime: Runtime) -> DependencyState:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            return "ok" if await runtime.bus.ping() else "down"
    except TimeoutError:
        return "down"


async def _queue(runtime: Runtime) -> DependencyState:
    """``ok`` when at least one worker has reported in recently."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS), runtime.sessions() as session:
            alive = await jobs_repository.live_workers(session, within=WORKER_SILENCE)
    except Exception:  # noqa: BLE001 - see _database
        return "down"
    return "ok" if alive else "down"


async def dependency_states(runtime: Runtime) -> dict[str, DependencyState]:
    checks = {"database": _database(runtime), "queue": _queue(runtime)}
    if runtime.settings.redis_url:
        checks["redis"] = _redis(runtime)
    results = await asyncio.gather(*checks.values())
    return dict(zip(checks, results, strict=True))


async def job_counts(runtime: Runtime) -> dict[str, int]:
    async with runtime.sessions() as session:
        return await jobs_repository.count_by_status(session)
