"""A job's progress from its server's ``operation_progress`` reports.

The node reports how far a backup, restore or transfer has got on the
server's progress topic (for sockets); while a job waits for the node, this
turns those reports into the job's own progress, so ``GET /api/jobs/{id}``
and ``hostplane jobs watch`` show a moving bar too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from hostplane.platform.jobs.context import JobContext


def topic(server_id: str) -> str:
    return f"server.{server_id}.progress"


def _report(operation: str, data: dict[str, object]) -> tuple[int, int] | None:
    """``(done, total)`` of a report of ``operation`` with a known total."""
    done, total = data.get("done"), data.get("total")
    if data.get("operation") != operation:
        return None
    if not isinstance(done, int) or not isinstance(total, int) or total <= 0:
        return None
    return done, total


@contextlib.asynccontextmanager
async def job_follows(ctx: JobContext, server_id: str, operation: str) -> AsyncIterator[None]:
    """While the block runs, reports of ``operation`` with a known total set the
    job's progress (below 100: the job reaches 100 when it succeeds)."""
    async with ctx.runtime.bus.subscribe(topic(server_id)) as reports:
        latest: tuple[int, int] | None = None
        applied: tuple[int, int] | None = None

        async def apply(report: tuple[int, int]) -> None:
            nonlocal applied
            done, total = report
            await ctx.progress(
                min(99, done * 100 // total), f"{operation}: {done} of {total} bytes"
            )
            applied = report

        async def follow() -> None:
            nonlocal latest
            async for event in reports:
                report = _report(operation, event.data)
                if report is not None:
                    latest = report
                    await apply(report)

        task = asyncio.create_task(follow())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            # The node's last reports arrive just before its answer: apply the
            # newest one that the follower had not finished with.
            for event in reports.pending():
                latest = _report(operation, event.data) or latest
            if latest is not None and latest != applied:
                with contextlib.suppress(Exception):
                    await apply(latest)
