"""Signing every chain's checkpoint afresh: the operator's way past a finding.

After ``secret_key`` changes, every checkpoint fails its MAC; after a
reported truncation has been investigated, the chain stays reported. Both
need someone holding the (new) secret to accept the chains as they are now.
Only chains whose entries still verify from their anchor are accepted, and
the act is itself an audit entry (``audit.reseal``) naming what each
checkpoint said before, so accepting a finding never erases it silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.db.tenancy import session_tenant
from hostplane.platform.audit import checkpoint_store, repository
from hostplane.platform.audit.chain import ChainBreak, ChainVerifier
from hostplane.platform.audit.service import AuditChainBroken, record


@dataclass(frozen=True, slots=True)
class ResealReport:
    chains: int
    # What the checkpoints of the resealed chains reported, by chain.
    accepted: dict[str, str]


async def reseal(session: AsyncSession) -> ResealReport:
    """Sign a new checkpoint at each chain's current head where the old one objects.

    Raises :class:`AuditChainBroken` when a chain's entries do not verify
    from its anchor to its head: that is not the checkpoint's finding and no
    signature can make it whole.
    """
    key = checkpoint_store.session_key(session.info)
    heads = await session.run_sync(repository.lock_heads, session_tenant(session))
    accepted: dict[str, str] = {}
    for head in heads:
        verifier = ChainVerifier(
            head.chain, anchor_seq=head.anchor_seq, anchor_hash=head.anchor_hash
        )
        async for fields in repository.entries_in_order(
            session, head.chain, after=head.anchor_seq, through=head.seq
        ):
            problem = verifier.feed(fields)
            if problem is not None:
                raise AuditChainBroken(problem)
        problem = verifier.finish(head_seq=head.seq, head_hash=head.hash)
        if problem is not None:
            raise AuditChainBroken(problem)
        row = await session.run_sync(repository.checkpoint_of, head.chain)
        finding: ChainBreak | None = checkpoint_store.inspect_row(key, head, row).first
        if finding is None:
            continue
        await session.run_sync(checkpoint_store.accept, head)
        accepted[head.chain] = str(finding)
    if accepted:
        record(
            session,
            action="audit.reseal",
            resource_type="audit-log",
            metadata={"accepted": accepted},
        )
    return ResealReport(chains=len(heads), accepted=accepted)
