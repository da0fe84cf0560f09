"""Dropping the databases of deleted servers, retried while a host is away.

Deleting a server enqueues ``databases.drop_server`` in the same
transaction. The job marks the server's rows ``deleting`` first (the
leftover is recorded even if every attempt fails), then drops each on its
host in a transaction of its own, so one host that is down does not undo
what the others already dropped. A failure is kept on the row and the job
raises so it is retried with backoff; ``databases.sweep_leftovers`` tries
again every few minutes for rows whose job ran out of attempts.
"""

from __future__ import annotations

import structlog
from sqlalchemy import select, update

from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.errors import HostplaneError
from hostplane.infra.databases import service
from hostplane.infra.databases.models import DatabaseHost, ServerDatabase
from hostplane.platform.jobs.context import JobContext
from hostplane.platform.jobs.registry import job_handler

log = structlog.get_logger(__name__)

SWEEP_SECONDS = 600


class LeftoverDatabases(RuntimeError):
    """Some databases could not be dropped yet; the job is retried."""


async def _drop_rows(ctx: JobContext, tenant_id: str | None, database_ids: list[str]) -> list[str]:
    vault = service.Vault.of(ctx.runtime.settings)
    failed: list[str] = []
    for database_id in database_ids:
        async with ctx.unit_of_work() as session:
            scope_to_tenant(session, tenant_id)
            row = await session.get(ServerDatabase, database_id, with_for_update=True)
            if row is None:
                continue
            host = await session.get(DatabaseHost, row.host_id)
            try:
                if host is not None:
                    await service.connect(host, vault).drop(
                        database=row.name, username=row.username
                    )
            except HostplaneError as exc:
                message = exc.message
                row.last_error = message[:2000]
                failed.append(database_id)
                log.warning("databases.drop_failed", database_id=database_id, error=message)
                continue
            await session.delete(row)
    return failed


@job_handler("databases.drop_server", timeout_seconds=600)
async def drop_server_databases(ctx: JobContext, *, server_id: str) -> None:
    async with ctx.unit_of_work() as session:
        scope_to_tenant(session, ctx.tenant_id)
        await session.execute(
            update(ServerDatabase)
            .where(ServerDatabase.server_id == server_id)
            .values(status="deleting")
        )
        ids = list(
            (
                await session.scalars(
                    select(ServerDatabase.id).where(ServerDatabase.server_id == server_id)
                )
            ).all()
        )
    failed = await _drop_rows(ctx, ctx.tenant_id, ids)
    if failed:
        raise LeftoverDatabases(f"{len(failed)} database(s) not dropped yet; retrying")


@job_handler("databases.sweep_leftovers", every_seconds=SWEEP_SECONDS, timeout_seconds=600)
async def sweep_leftovers(ctx: JobContext) -> None:
    """Retry the drops of deleted servers' databases whose jobs gave up."""
    async with ctx.unit_of_work() as session:
        rows = (
            await session.execute(
                select(ServerDatabase.id, ServerDatabase.tenant_id).where(
                    ServerDatabase.status == "deleting"
                )
            )
        ).all()
        by_tenant: dict[str, list[str]] = {}
        for database_id, tenant_id in rows:
            by_tenant.setdefault(tenant_id, []).append(database_id)
    for tenant_id, ids in by_tenant.items():
        await _drop_rows(ctx, tenant_id, ids)
