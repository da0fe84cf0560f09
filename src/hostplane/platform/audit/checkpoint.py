"""Checkpoints: a chain's head, MAC'd with a key only the panel holds.

The hash chain alone shows an entry altered, removed from the middle or
reordered, but not the newest entries removed together with the head
rewound to the last one kept: what is left is a perfectly good, shorter
chain. The checkpoint closes that gap. It repeats the head's sequence
number, hash and anchor with an HMAC-SHA256 over them, keyed with a key
derived from the panel's ``secret_key`` (never stored in the database), and
is rewritten in the transaction of every append. Rewinding the head then
leaves a checkpoint that names entries no longer there, and rewinding the
checkpoint too needs a MAC nobody without the secret can compute.

An append that finds the head and its checkpoint disagreeing still goes
through (the audit log must not take the panel down), but its new checkpoint
carries what was found (``tampered_seq``, ``tampered_reason``) under the
MAC, so later appends never make the chain look whole again.

What this cannot see, written out in docs/decisions.md: a rewind to an
earlier state whose checkpoint the attacker copied at the time (a replay),
and a chain deleted whole (head, checkpoint and entries). Nothing here
touches the database.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from hostplane.platform.audit.chain import ChainBreak, canonical_json

# Where the unit of work's sessions carry the key (set on the session
# factories by ``install_audit``), so sealing inside a commit can sign.
SESSION_KEY = "hostplane.audit.checkpoint_key"
# Bumped if the signed document ever changes.
CHECKPOINT_VERSION = 1
_KEY_PURPOSE = b"hostplane/audit-checkpoint/v1"


def derive_key(secret_key: str) -> bytes:
    """The checkpoint key: the panel's secret through HMAC with a fixed purpose.

    A key of its own, so a checkpoint MAC can never be mistaken for (or
    turned into) anything else the secret protects.
    """
    return hmac.new(secret_key.encode("utf-8"), _KEY_PURPOSE, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class HeadState:
    """What a checkpoint vouches for: a chain's end and its anchor."""

    seq: int
    hash: str
    anchor_seq: int
    anchor_hash: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A stored checkpoint's fields."""

    chain: str
    state: HeadState
    tampered_seq: int | None
    tampered_reason: str | None
    mac: str


def sign(
    key: bytes,
    chain: str,
    state: HeadState,
    *,
    tampered_seq: int | None = None,
    tampered_reason: str | None = None,
) -> str:
    """The MAC (hex) of a checkpoint."""
    document = {
        "v": CHECKPOINT_VERSION,
        "chain": chain,
        "seq": state.seq,
        "hash": state.hash,
        "anchor_seq": state.anchor_seq,
        "anchor_hash": state.anchor_hash,
        "tampered_seq": tampered_seq,
        "tampered_reason": tampered_reason,
    }
    return hmac.new(key, canonical_json(document).encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Inspection:
    """A head held against its checkpoint.

    ``problem`` is what is wrong now; ``carried`` is a problem an earlier
    append found and signed into the checkpoint (trusted: its MAC checked).
    """

    problem: ChainBreak | None
    carried: ChainBreak | None

    @property
    def first(self) -> ChainBreak | None:
        return self.carried or self.problem


def inspect(key: bytes, chain: str, head: HeadState, checkpoint: Checkpoint | None) -> Inspection:
    """Whether ``head`` is where the panel last left ``chain``."""
    if checkpoint is None:
        if head.seq == 0 and head.anchor_seq == 0:
            # A head created in this very transaction, before its first entry.
            return Inspection(None, None)
        return Inspection(
            ChainBreak(chain, head.seq, "the chain's checkpoint is missing (deleted)"), None
        )
    expected = sign(
        key,
        chain,
        checkpoint.state,
        tampered_seq=checkpoint.tampered_seq,
        tampered_reason=checkpoint.tampered_reason,
    )
    if not hmac.compare_digest(expected, checkpoint.mac):
        return Inspection(
            ChainBreak(
                chain,
                checkpoint.state.seq,
                "the chain's checkpoint was altered or forged (its MAC does not match "
                "this panel's secret key)",
            ),
            None,
        )
    carried = None
    if checkpoint.tampered_seq is not None:
        carried = ChainBreak(
            chain, checkpoint.tampered_seq, checkpoint.tampered_reason or "tampering was found"
        )
    return Inspection(_compare(chain, head, checkpoint.state), carried)


def _compare(chain: str, head: HeadState, signed: HeadState) -> ChainBreak | None:
    if head == signed:
        return None
    if head.seq < signed.seq:
        removed = (
            f"entry {signed.seq} was removed"
            if head.seq + 1 == signed.seq
            else f"entries {head.seq + 1} to {signed.seq} were removed"
        )
        return ChainBreak(
            chain,
            head.seq + 1,
            f"truncated after checkpoint {signed.seq}: the chain's head was rewound to "
            f"entry {head.seq} ({removed})",
        )
    if head.seq > signed.seq:
        return ChainBreak(
            chain,
            signed.seq + 1,
            f"entries {signed.seq + 1} to {head.seq} were not appended by the panel "
            f"(the last checkpoint is {signed.seq})",
        )
    if (head.anchor_seq, head.anchor_hash) != (signed.anchor_seq, signed.anchor_hash):
        return ChainBreak(
            chain,
            head.anchor_seq,
            f"the chain's anchor was moved (checkpoint {signed.seq} has it at "
            f"{signed.anchor_seq}, the head at {head.anchor_seq})",
        )
    return ChainBreak(
        chain, head.seq, f"the chain's head does not match checkpoint {signed.seq} (hash)"
    )
