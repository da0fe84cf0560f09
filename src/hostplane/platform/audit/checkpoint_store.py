"""Reading and rewriting checkpoint rows (the rules are in ``checkpoint.py``).

The write side is synchronous, like the rest of sealing: it runs inside the
committing transaction, under the chain head's lock.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.orm import Session

from hostplane.platform.audit import repository
from hostplane.platform.audit.checkpoint import (
    SESSION_KEY,
    Checkpoint,
    HeadState,
    Inspection,
    inspect,
    sign,
)
from hostplane.platform.audit.models import (
    TAMPERED_REASON_LENGTH,
    AuditChainHead,
    AuditCheckpoint,
)

log = structlog.get_logger(__name__)


def session_key(info: dict[Any, Any]) -> bytes:
    """The checkpoint key a runtime's sessions carry (see ``install_audit``)."""
    key = info.get(SESSION_KEY)
    if not isinstance(key, bytes):
        # Only a session made outside the runtime lacks it: sealing there
        # would write a checkpoint nobody can verify.
        raise RuntimeError("audit entries need a session from the runtime (no checkpoint key)")
    return key


def head_state(head: AuditChainHead) -> HeadState:
    return HeadState(
        seq=head.seq, hash=head.hash, anchor_seq=head.anchor_seq, anchor_hash=head.anchor_hash
    )


def stored(row: AuditCheckpoint | None) -> Checkpoint | None:
    if row is None:
        return None
    return Checkpoint(
        chain=row.chain,
        state=HeadState(
            seq=row.seq, hash=row.hash, anchor_seq=row.anchor_seq, anchor_hash=row.anchor_hash
        ),
        tampered_seq=row.tampered_seq,
        tampered_reason=row.tampered_reason,
        mac=row.mac,
    )


def inspect_row(key: bytes, head: AuditChainHead, row: AuditCheckpoint | None) -> Inspection:
    return inspect(key, head.chain, head_state(head), stored(row))


def advance(session: Session, head: AuditChainHead, before: HeadState) -> None:
    """Sign ``head``'s new state, after checking that ``before`` was the signed one.

    ``before`` is the head as it was locked, before this transaction moved
    it. A disagreement is logged and carried into the new checkpoint.
    """
    key = session_key(session.info)
    row = repository.checkpoint_of(session, head.chain)
    inspection = inspect(key, head.chain, before, stored(row))
    tampered_seq: int | None = None
    tampered_reason: str | None = None
    found = inspection.first
    if found is not None:
        tampered_seq = found.seq
        tampered_reason = found.reason[:TAMPERED_REASON_LENGTH]
        if inspection.carried is None:
            log.error(
                "audit.chain_tampered",
                chain=head.chain,
                seq=found.seq,
                reason=found.reason,
            )
    if row is None:
        row = AuditCheckpoint(chain=head.chain, tenant_id=head.tenant_id)
        session.add(row)
    _write(row, key, head, tampered_seq=tampered_seq, tampered_reason=tampered_reason)


def _write(
    row: AuditCheckpoint,
    key: bytes,
    head: AuditChainHead,
    *,
    tampered_seq: int | None,
    tampered_reason: str | None,
) -> None:
    state = head_state(head)
    row.seq, row.hash = state.seq, state.hash
    row.anchor_seq, row.anchor_hash = state.anchor_seq, state.anchor_hash
    row.tampered_seq, row.tampered_reason = tampered_seq, tampered_reason
    row.mac = sign(
        key, head.chain, state, tampered_seq=tampered_seq, tampered_reason=tampered_reason
    )


def accept(session: Session, head: AuditChainHead) -> None:
    """Sign ``head`` as it is, dropping any finding (``hostplane audit reseal`` only)."""
    key = session_key(session.info)
    row = repository.checkpoint_of(session, head.chain)
    if row is None:
        row = AuditCheckpoint(chain=head.chain, tenant_id=head.tenant_id)
        session.add(row)
    _write(row, key, head, tampered_seq=None, tampered_reason=None)
