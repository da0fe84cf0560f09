"""Queries of the audit log: locking chain heads, appending, reading, pruning.

The write side (:func:`lock_head`, :func:`lock_heads`) is synchronous: it runs
while the transaction commits, from the unit of work's before-commit hook
(through ``run_sync``) and from SQLAlchemy's own ``before_commit`` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Select, delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from hostplane.core.db.tenancy import scope_to_tenant, session_tenant
from hostplane.identity.tenants.models import Tenant
from hostplane.identity.users.models import User
from hostplane.platform.audit.chain import GENESIS_HASH, chain_for
from hostplane.platform.audit.models import AuditChainHead, AuditCheckpoint, AuditLog

BATCH_SIZE = 500


# ---- the write side (synchronous, inside the committing transaction) ------


def lock_head(session: Session, chain: str, tenant_id: str | None) -> AuditChainHead:
    """The head row of ``chain``, locked until the transaction ends; created on first use.

    On PostgreSQL ``SELECT ... FOR UPDATE`` makes appenders of one chain take
    turns, so two transactions can never both append sequence N. A missing
    head is created with ``INSERT ... ON CONFLICT DO NOTHING``: of two
    transactions racing to create it, the second waits for the first and then
    locks the row the first made. On SQLite the transaction already holds the
    database's write lock (``BEGIN IMMEDIATE``), which serialises appenders.
    """
    head = _select_locked(session, chain)
    if head is not None:
        return head
    values = {
        "chain": chain,
        "tenant_id": tenant_id,
        "seq": 0,
        "hash": GENESIS_HASH,
        "anchor_seq": 0,
        "anchor_hash": GENESIS_HASH,
    }
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(
            postgresql_insert(AuditChainHead)
            .values(values)
            .on_conflict_do_nothing(index_elements=["chain"])
        )
    elif dialect == "sqlite":
        session.execute(
            sqlite_insert(AuditChainHead)
            .values(values)
            .on_conflict_do_nothing(index_elements=["chain"])
        )
    else:
        raise RuntimeError(f"the audit log does not support the {dialect} database")
    head = _select_locked(session, chain)
    if head is None:  # pragma: no cover - the row was just inserted or already there
        raise RuntimeError(f"audit chain head {chain} vanished while being created")
    return head


def _select_locked(session: Session, chain: str) -> AuditChainHead | None:
    # populate_existing: the identity map may hold a copy read before the lock.
    return session.scalar(
        select(AuditChainHead)
        .where(AuditChainHead.chain == chain)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def lock_heads(session: Session, tenant_id: str | None = None) -> list[AuditChainHead]:
    """Every chain head (or only ``tenant_id``'s), locked, in chain order.

    Always locking in the same order keeps two transactions that need several
    chains from deadlocking on each other.
    """
    statement = (
        select(AuditChainHead)
        .order_by(AuditChainHead.chain)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if tenant_id is not None:
        statement = statement.where(AuditChainHead.chain == chain_for(tenant_id))
    return list(session.scalars(statement))


def checkpoint_of(session: Session, chain: str) -> AuditCheckpoint | None:
    """``chain``'s checkpoint, read fresh (the caller holds the head's lock)."""
    return session.scalar(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.chain == chain)
        .execution_options(populate_existing=True)
    )


# ---- reading -------------------------------------------------------------


@contextmanager
def platform_view(session: AsyncSession) -> Iterator[None]:
    """Read every tenant's entries in this block, then restore the session's scope.

    For callers entitled to the whole platform's trail (see the service).
    """
    tenant_id = session_tenant(session)
    scope_to_tenant(session, None)
    try:
        yield
    finally:
        scope_to_tenant(session, tenant_id)


def filtered(
    *,
    own_tenant_only: bool,
    user_id: str | None = None,
    actor_id: str | None = None,
    action: str | None = None,
    action_prefix: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    since: datetime | None = None,
) -> Select[AuditLog]:
    """Entries matching every filter given, newest first.

    ``action_prefix`` matches the action itself and every action below it
    (``server`` matches ``server.start`` and ``server.files.write``).
    """
    statement = select(AuditLog).order_by(AuditLog.id.desc())
    if own_tenant_only:
        # The session filter lets a tenant read its rows and shared ones; the
        # platform's entries are not the tenant's to read.
        statement = statement.where(AuditLog.tenant_id.is_not(None))
    if user_id is not None:
        statement = statement.where(AuditLog.user_id == user_id)
    if actor_id is not None:
        statement = statement.where(AuditLog.actor_id == actor_id)
    if action is not None:
        statement = statement.where(AuditLog.action == action)
    if action_prefix is not None:
        statement = statement.where(
            (AuditLog.action == action_prefix)
            | AuditLog.action.startswith(f"{action_prefix}.", autoescape=True)
        )
    if resource_type is not None:
        statement = statement.where(AuditLog.resource_type == resource_type)
    if resource_id is not None:
        statement = statement.where(AuditLog.resource_id == resource_id)
    if since is not None:
        statement = statement.where(AuditLog.created_at >= since)
    return statement


async def is_platform_tenant(session: AsyncSession, tenant_id: str) -> bool:
    """Whether ``tenant_id`` is the installation's own tenant (it manages the others)."""
    return bool(await session.scalar(select(Tenant.is_platform).where(Tenant.id == tenant_id)))


async def usernames(session: AsyncSession, user_ids: Collection[str]) -> dict[str, str]:
    """Usernames by user id, for the users that still exist (one query)."""
    if not user_ids:
        return {}
    rows = await session.execute(select(User.id, User.username).where(User.id.in_(user_ids)))
    return dict(rows.all())


async def heads(session: AsyncSession, tenant_id: str | None = None) -> list[AuditChainHead]:
    statement = select(AuditChainHead).order_by(AuditChainHead.chain)
    if tenant_id is not None:
        statement = statement.where(AuditChainHead.chain == chain_for(tenant_id))
    return list(await session.scalars(statement))


async def heads_with_checkpoints(
    session: AsyncSession, tenant_id: str | None = None
) -> list[tuple[AuditChainHead, AuditCheckpoint | None]]:
    """Every chain head (or only ``tenant_id``'s) with its checkpoint.

    One statement, so an append committing meanwhile cannot make the two
    disagree (both change in its transaction).
    """
    statement = (
        select(AuditChainHead, AuditCheckpoint)
        .outerjoin(AuditCheckpoint, AuditCheckpoint.chain == AuditChainHead.chain)
        .order_by(AuditChainHead.chain)
    )
    if tenant_id is not None:
        statement = statement.where(AuditChainHead.chain == chain_for(tenant_id))
    rows = await session.execute(statement)
    return [(head, checkpoint) for head, checkpoint in rows]


async def checkpoints_without_head(
    session: AsyncSession, tenant_id: str | None = None
) -> list[AuditCheckpoint]:
    """Checkpoints whose chain has no head any more (a head deleted by hand)."""
    statement = (
        select(AuditCheckpoint)
        .where(AuditCheckpoint.chain.not_in(select(AuditChainHead.chain)))
        .order_by(AuditCheckpoint.chain)
    )
    if tenant_id is not None:
        statement = statement.where(AuditCheckpoint.chain == chain_for(tenant_id))
    return list(await session.scalars(statement))


async def chains_without_head(session: AsyncSession, tenant_id: str | None = None) -> list[str]:
    """Chains that have entries but no head row (a head deleted by hand)."""
    statement = (
        select(AuditLog.chain)
        .where(AuditLog.chain.not_in(select(AuditChainHead.chain)))
        .distinct()
        .order_by(AuditLog.chain)
    )
    if tenant_id is not None:
        statement = statement.where(AuditLog.chain == chain_for(tenant_id))
    return list(await session.scalars(statement))


async def first_seq(session: AsyncSession, chain: str) -> int | None:
    return await session.scalar(
        select(AuditLog.seq).where(AuditLog.chain == chain).order_by(AuditLog.seq).limit(1)
    )


async def entries_in_order(
    session: AsyncSession, chain: str, *, after: int, through: int
) -> AsyncIterator[dict[str, Any]]:
    """The stored fields of ``chain``'s entries ``after < seq <= through``, in order.

    Read in batches and detached as they go, so a long chain never sits in
    the session's identity map all at once.
    """
    last = after
    while last < through:
        batch = list(
            await session.scalars(
                select(AuditLog)
                .where(AuditLog.chain == chain, AuditLog.seq > last, AuditLog.seq <= through)
                .order_by(AuditLog.seq)
                .limit(BATCH_SIZE)
                .execution_options(populate_existing=True)
            )
        )
        if not batch:
            return
        for row in batch:
            fields = row.hashed_fields()
            session.expunge(row)
            yield fields
        last = batch[-1].seq


async def first_seq_since(
    session: AsyncSession, chain: str, *, cutoff: datetime, after: int
) -> int | None:
    """The first sequence number of ``chain`` after ``after`` created at or after ``cutoff``."""
    return await session.scalar(
        select(AuditLog.seq)
        .where(AuditLog.chain == chain, AuditLog.seq > after, AuditLog.created_at >= cutoff)
        .order_by(AuditLog.seq)
        .limit(1)
    )


async def delete_through(session: AsyncSession, chain: str, seq: int) -> int:
    """Delete ``chain``'s entries up to and including ``seq``; return how many."""
    result = cast(
        CursorResult[Any],
        await session.execute(
            delete(AuditLog)
            .where(AuditLog.chain == chain, AuditLog.seq <= seq)
            .execution_options(synchronize_session=False)
        ),
    )
    return int(result.rowcount)
