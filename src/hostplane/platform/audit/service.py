"""The audit log: recording entries, sealing them into the hash chain, reading, retention.

Services call :func:`record` for actions that deserve a precise entry
(``auth.login``, ``server.start`` with the server's name, ...). Recording only
remembers the entry on the session; it is written and chained when the
transaction commits, in that same transaction, so an entry exists if and
only if the change it describes committed.

Two things seal the recorded entries:

- the unit of work's before-commit hook (:func:`before_commit`, installed by
  :func:`hostplane.platform.audit.hooks.install_audit`), which also writes the
  generic entry of a successful mutating request that recorded none;
- SQLAlchemy's ``before_commit`` event, for any other commit of a session
  holding recorded entries (a refused request whose changes are kept, a
  script's own session), so a recorded entry is never lost silently.

A rollback discards what was recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from hostplane.core.clock import isoformat, utcnow
from hostplane.core.context import RequestContext, request_context
from hostplane.core.db.tenancy import CrossTenantWrite, session_tenant
from hostplane.core.errors import HostplaneError
from hostplane.core.ids import new_id
from hostplane.core.pagination import PageMeta, PageParams, paginate
from hostplane.core.principal import SYSTEM, Principal
from hostplane.platform.audit import checkpoint_store, repository
from hostplane.platform.audit.chain import (
    ChainBreak,
    ChainVerifier,
    chain_for,
    clean_text,
    entry_hash,
    normalise_metadata,
)
from hostplane.platform.audit.derivation import derive_action
from hostplane.platform.audit.models import (
    ACTION_LENGTH,
    ACTOR_ID_LENGTH,
    IP_LENGTH,
    REQUEST_ID_LENGTH,
    RESOURCE_ID_LENGTH,
    RESOURCE_TYPE_LENGTH,
    USER_AGENT_LENGTH,
    AuditLog,
)

_PENDING_KEY = "hostplane.audit.pending"


class _Unset(Enum):
    UNSET = "unset"


UNSET: Final = _Unset.UNSET


class AuditChainBroken(HostplaneError):
    """A chain failed verification: an entry was altered, removed or reordered."""

    status = 409
    code = "AUDIT_CHAIN_BROKEN"

    def __init__(self, problem: ChainBreak) -> None:
        super().__init__(
            str(problem),
            details={"chain": problem.chain, "seq": problem.seq, "reason": problem.reason},
        )
        self.problem = problem


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """An entry recorded in a transaction, waiting for the commit to seal it."""

    tenant_id: str | None
    actor_type: str
    actor_id: str | None
    user_id: str | None
    action: str
    resource_type: str
    resource_id: str | None
    ip_address: str | None
    user_agent: str | None
    request_id: str | None
    metadata: dict[str, Any]


# ---- recording -----------------------------------------------------------


def record(
    session: AsyncSession | Session,
    *,
    action: str,
    resource_type: str,
    resource_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    actor: Principal | None = None,
    tenant_id: str | _Unset | None = UNSET,
) -> None:
    """Record an audit entry, written when ``session``'s transaction commits.

    ``action`` is ``resource.action`` (``auth.login``, ``server.start``).
    The actor defaults to the request's caller, or the system outside
    requests (jobs, the CLI); pass ``actor`` when someone else acted (the
    user who just logged in, say). The IP, user agent and request id come
    from the request, if any. The tenant defaults to the session's tenant,
    then the actor's; ``tenant_id=None`` puts the entry in the platform's
    chain. A tenant-confined session cannot record for another tenant.

    Recording any entry replaces the generic entry the request would get.
    """
    if "." not in action.strip(".") or not resource_type:
        raise ValueError(f"audit action must look like 'resource.action', got {action!r}")
    context = request_context(session)
    _pending(session).append(
        _entry(
            session,
            context,
            actor=actor or (context.principal if context is not None else SYSTEM),
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            metadata=metadata,
            tenant_id=tenant_id,
        )
    )


_SKIP_KEY = "hostplane.audit.skip_generic"


def skip_generic(session: AsyncSession | Session) -> None:
    """This mutating request changes nothing worth an entry (a token refresh, say).

    Entries recorded explicitly are still written.
    """
    _info(session)[_SKIP_KEY] = True


def _info(session: AsyncSession | Session) -> dict[Any, Any]:
    target = session.sync_session if isinstance(session, AsyncSession) else session
    return target.info


def _pending(session: AsyncSession | Session) -> list[PendingEntry]:
    pending: list[PendingEntry] = _info(session).setdefault(_PENDING_KEY, [])
    return pending


def _entry(
    session: AsyncSession | Session,
    context: RequestContext | None,
    *,
    actor: Principal,
    action: str,
    resource_type: str,
    resource_id: str | None,
    metadata: Mapping[str, Any] | None,
    tenant_id: str | _Unset | None,
) -> PendingEntry:
    scoped = session_tenant(session)
    if isinstance(tenant_id, _Unset):
        tenant = scoped if scoped is not None else actor.tenant_id
    else:
        if scoped is not None and tenant_id != scoped:
            raise CrossTenantWrite("That belongs to another tenant")
        tenant = tenant_id
    user_id = actor.user_id or (actor.id if actor.kind == "user" else None)
    return PendingEntry(
        tenant_id=tenant,
        actor_type=actor.kind,
        actor_id=clean_text(actor.id, ACTOR_ID_LENGTH),
        user_id=clean_text(user_id, ACTOR_ID_LENGTH),
        action=clean_text(action, ACTION_LENGTH) or action,
        resource_type=clean_text(resource_type, RESOURCE_TYPE_LENGTH) or resource_type,
        resource_id=clean_text(resource_id, RESOURCE_ID_LENGTH),
        ip_address=clean_text(context.ip if context else None, IP_LENGTH),
        user_agent=clean_text(context.user_agent if context else None, USER_AGENT_LENGTH),
        request_id=clean_text(context.request_id if context else None, REQUEST_ID_LENGTH),
        metadata=normalise_metadata(metadata),
    )


# ---- sealing -------------------------------------------------------------


async def before_commit(session: AsyncSession) -> None:
    """The unit of work's hook: seal what was recorded, or the request's generic entry.

    Runs only when the work succeeded (a failed request rolls back instead),
    right before the commit, so the chain heads stay locked as briefly as
    possible. A read-only request that recorded nothing writes nothing.
    """
    context = request_context(session)
    recorded = bool(_info(session).get(_PENDING_KEY))
    skipped = bool(_info(session).pop(_SKIP_KEY, False))
    if context is not None and context.is_mutating and not recorded and not skipped:
        _pending(session).append(_generic_entry(session, context))
        recorded = True
    if recorded:
        await session.run_sync(seal)


def _generic_entry(session: AsyncSession, context: RequestContext) -> PendingEntry:
    principal = context.principal
    derived = derive_action(
        context.method or "POST",
        context.route,
        context.path_params,
        caller_id=principal.user_id or principal.id,
    )
    return _entry(
        session,
        context,
        actor=principal,
        action=derived.action,
        resource_type=derived.resource_type,
        resource_id=derived.resource_id,
        metadata=derived.metadata,
        tenant_id=UNSET,
    )


def seal(session: Session) -> list[AuditLog]:
    """Append the recorded entries to their chains, in the session's transaction.

    Each chain's head is locked first (chains in a fixed order, so two
    transactions never deadlock), then every entry gets the next sequence
    number, the previous entry's hash and its own, and the chain's
    checkpoint is signed at the new head.
    """
    pending: list[PendingEntry] = session.info.pop(_PENDING_KEY, [])
    if not pending:
        return []
    by_chain: dict[str, list[PendingEntry]] = {}
    for entry in pending:
        by_chain.setdefault(chain_for(entry.tenant_id), []).append(entry)
    rows: list[AuditLog] = []
    for chain in sorted(by_chain):
        entries = by_chain[chain]
        head = repository.lock_head(session, chain, entries[0].tenant_id)
        before = checkpoint_store.head_state(head)
        for entry in entries:
            row = AuditLog(
                id=new_id(),
                chain=chain,
                seq=head.seq + 1,
                prev_hash=head.hash,
                tenant_id=entry.tenant_id,
                actor_type=entry.actor_type,
                actor_id=entry.actor_id,
                user_id=entry.user_id,
                action=entry.action,
                resource_type=entry.resource_type,
                resource_id=entry.resource_id,
                ip_address=entry.ip_address,
                user_agent=entry.user_agent,
                request_id=entry.request_id,
                meta=entry.metadata,
                # Stamped under the lock, so time order follows chain order.
                created_at=utcnow(),
            )
            row.hash = entry_hash(row.hashed_fields())
            session.add(row)
            head.seq, head.hash = row.seq, row.hash
            rows.append(row)
        checkpoint_store.advance(session, head, before)
    session.flush()
    return rows


@event.listens_for(Session, "before_commit")
def _seal_on_any_commit(session: Session) -> None:
    # A savepoint's release is not the commit: the entries wait for the
    # outer transaction (a savepoint rolled back would take them with it).
    if session.info.get(_PENDING_KEY) and not session.in_nested_transaction():
        seal(session)


@event.listens_for(Session, "after_soft_rollback")
def _discard_on_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    # Only the outermost transaction's rollback undoes what was recorded; a
    # savepoint (or a failed flush inside one) rolling back leaves the
    # entries to the outer transaction.
    if previous_transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)


# ---- reading -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """Filters of the two listing routes; ``None`` means "any"."""

    user_id: str | None = None
    actor_id: str | None = None
    action: str | None = None
    # Matches the action and every action below it ("server" -> "server.*").
    action_prefix: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditEntryView:
    entry: AuditLog
    username: str | None


async def sees_every_tenant(session: AsyncSession, caller: Principal) -> bool:
    """Whether ``caller`` reads the whole platform's trail, not just its tenant's.

    The platform's operators do: callers of no tenant and callers of the
    installation's own tenant (the one that manages the others). Everyone
    else reads only their own tenant's entries, whatever their permissions.
    """
    if caller.tenant_id is None:
        return True
    return await repository.is_platform_tenant(session, caller.tenant_id)


async def list_entries(
    session: AsyncSession, caller: Principal, filters: AuditFilters, params: PageParams
) -> tuple[list[AuditEntryView], PageMeta]:
    """One page of entries the caller may read, newest first, with usernames."""
    every_tenant = await sees_every_tenant(session, caller)
    statement = repository.filtered(
        own_tenant_only=not every_tenant,
        user_id=filters.user_id,
        actor_id=filters.actor_id,
        action=filters.action,
        action_prefix=filters.action_prefix,
        resource_type=filters.resource_type,
        resource_id=filters.resource_id,
        since=filters.since,
    )
    with repository.platform_view(session) if every_tenant else nullcontext():
        rows, meta = await paginate(session, statement, params)
        names = await repository.usernames(
            session, {row.user_id for row in rows if row.user_id is not None}
        )
    views = [
        AuditEntryView(row, names.get(row.user_id) if row.user_id is not None else None)
        for row in rows
    ]
    return views, meta


# ---- verification and retention -----------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyReport:
    entries: int
    chains: int
    breaks: list[ChainBreak]

    @property
    def ok(self) -> bool:
        return not self.breaks


async def verify(session: AsyncSession) -> VerifyReport:
    """Check every chain (or only the session's tenant's) from its anchor to its head.

    Each head is first held against its signed checkpoint, which is what
    reveals the newest entries cut off with the head rewound. Entries
    appended after a head was read are left for the next run, so
    verification can run beside live traffic. Every broken chain is reported
    with its first bad sequence number.
    """
    tenant_id = session_tenant(session)
    key = checkpoint_store.session_key(session.info)
    heads = await repository.heads_with_checkpoints(session, tenant_id)
    breaks: list[ChainBreak] = []
    entries = 0
    for head, checkpoint in heads:
        # First the head against its signed checkpoint (a truncation leaves
        # a shorter chain that is whole in itself), then the entries.
        signed_problem = checkpoint_store.inspect_row(key, head, checkpoint).first
        if signed_problem is not None:
            breaks.append(signed_problem)
            continue
        verifier = ChainVerifier(
            head.chain, anchor_seq=head.anchor_seq, anchor_hash=head.anchor_hash
        )
        problem: ChainBreak | None = None
        async for fields in repository.entries_in_order(
            session, head.chain, after=head.anchor_seq, through=head.seq
        ):
            problem = verifier.feed(fields)
            if problem is not None:
                break
        if problem is None:
            problem = verifier.finish(head_seq=head.seq, head_hash=head.hash)
        entries += verifier.checked
        if problem is not None:
            breaks.append(problem)
    breaks.extend(
        ChainBreak(
            orphan.chain,
            1,
            f"the chain's head and entries up to {orphan.seq} were deleted "
            "(only its checkpoint is left)",
        )
        for orphan in await repository.checkpoints_without_head(session, tenant_id)
    )
    for chain in await repository.chains_without_head(session, tenant_id):
        first = await repository.first_seq(session, chain)
        breaks.append(ChainBreak(chain, first or 0, "the chain has entries but no head"))
    return VerifyReport(entries=entries, chains=len(heads), breaks=breaks)


@dataclass(frozen=True, slots=True)
class PruneReport:
    deleted: int
    chains: int
    cutoff: datetime


async def prune(session: AsyncSession, older_than: datetime) -> PruneReport:
    """Delete entries created before ``older_than``, keeping every chain verifiable.

    Per chain, the entries before the first one to keep are deleted, and the
    last deleted entry's sequence number and hash become the chain's anchor,
    where verification starts. What is about to be deleted is verified first:
    a broken stretch raises :class:`AuditChainBroken` instead of being
    destroyed with the evidence. The heads stay locked until the transaction
    ends. The prune itself is recorded (``audit.prune``).
    """
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware")
    tenant_id = session_tenant(session)
    heads = await session.run_sync(repository.lock_heads, tenant_id)
    deleted = 0
    pruned_chains: dict[str, int] = {}
    for head in heads:
        keep_from = await repository.first_seq_since(
            session, head.chain, cutoff=older_than, after=head.anchor_seq
        )
        last_pruned = keep_from - 1 if keep_from is not None else head.seq
        if last_pruned <= head.anchor_seq:
            continue
        verifier = ChainVerifier(
            head.chain, anchor_seq=head.anchor_seq, anchor_hash=head.anchor_hash
        )
        async for fields in repository.entries_in_order(
            session, head.chain, after=head.anchor_seq, through=last_pruned
        ):
            problem = verifier.feed(fields)
            if problem is not None:
                raise AuditChainBroken(problem)
        if verifier.next_seq != last_pruned + 1:
            raise AuditChainBroken(
                ChainBreak(head.chain, verifier.next_seq, f"entry {verifier.next_seq} is missing")
            )
        count = await repository.delete_through(session, head.chain, last_pruned)
        before = checkpoint_store.head_state(head)
        head.anchor_seq, head.anchor_hash = last_pruned, verifier.last_hash
        head.pruned_at = utcnow()
        await session.run_sync(checkpoint_store.advance, head, before)
        deleted += count
        pruned_chains[head.chain] = count
    await session.flush()
    record(
        session,
        action="audit.prune",
        resource_type="audit-log",
        metadata={"olderThan": isoformat(older_than), "deleted": deleted, "chains": pruned_chains},
    )
    return PruneReport(deleted=deleted, chains=len(pruned_chains), cutoff=older_than)
