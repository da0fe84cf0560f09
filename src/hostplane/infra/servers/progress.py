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


@contextlib.asynccontextmanager
async def job_follows(ctx: JobContext, server_id: str, operation: str) -> AsyncIterator[None]:
    """While the block runs, reports of ``operation`` with a known total set the
    job's progress (below 100: the job reaches 100 when it succeeds)."""
    async with ctx.runtime.bus.subscribe(topic(server_id)) as reports:

        async def follow() -> None:
            async for event in reports:
                data = event.data
                done, total = data.get("done"), data.get("total")
                if data.get("operation") != operation:
                    continue
                if not isinstance(done, int) or not isinstance(total, int) or total <= 0:
                    continue
                percent = min(99, done * 100 // total)
                await ctx.progress(percent, f"{operation}: {done} of {total} bytes")

        task = asyncio.create_task(follow())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
