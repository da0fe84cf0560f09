"""Who is making a request: the caller every authorization decision starts from.

A request resolves once into a :class:`Principal`. The identity domain decides
how (tokens, API keys, node credentials); everything else only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PrincipalKind = Literal["anonymous", "user", "api_key", "node", "system"]


def permission_matches(granted: str, wanted: str) -> bool:
    """Whether a granted permission string covers ``wanted``.

    ``*`` covers everything; ``server.*`` covers ``server.start`` and
    ``server.files.read``; anything else must match exactly.
    """
    if granted in ("*", wanted):
        return True
    if granted.endswith(".*"):
        return wanted.startswith(granted[:-1])
    return False


@dataclass(frozen=True, slots=True)
class Principal:
    """The resolved caller, with its tenant and effective permissions."""

    kind: PrincipalKind
    id: str | None = None
    tenant_id: str | None = None
    permissions: frozenset[str] = field(default_factory=frozenset)
    display_name: str | None = None
    # The user acting: the user themselves, or the creator of an API key.
    user_id: str | None = None
    # An API key's own scopes: a ceiling on everything the key does, including
    # what its creator may do as an owner or through per-resource grants.
    scopes: frozenset[str] | None = None
    # The login session an access token belongs to (logout revokes it).
    session_id: str | None = None
    # A role of this user requires two-factor and it is not set up yet: the
    # caller may only enrol (every permission is withheld until then).
    needs_two_factor: bool = False
    # When the credential stops being valid on its own (a token's ``exp``, an
    # API key's expiry), as a Unix time: nothing may reuse this caller later.
    expires_at: float | None = None

    @property
    def is_authenticated(self) -> bool:
        return self.kind != "anonymous"

    def within_scopes(self, permission: str) -> bool:
        """Whether an API key's scopes allow ``permission`` (always true for others)."""
        return self.scopes is None or any(
            permission_matches(scope, permission) for scope in self.scopes
        )

    def has(self, permission: str) -> bool:
        """Whether a global grant covers ``permission``."""
        return any(permission_matches(granted, permission) for granted in self.permissions)


ANONYMOUS = Principal(kind="anonymous")
SYSTEM = Principal(kind="system", id="system", permissions=frozenset({"*"}), display_name="system")
