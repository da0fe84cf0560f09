"""Resolved callers kept per credential, so a request need not read them again.

Resolving a caller costs a join of the user and the login session, the roles
and the tenant's role settings: more database work than most reads it guards.
The cache answers a repeated credential from memory until one of these ends
the entry:

- a change to anything the caller was resolved from (the identity domain calls
  :meth:`PrincipalCache.forget` from a commit in this process and from the
  event bus for other processes);
- the credential's own expiry (:attr:`Principal.expires_at`);
- ``ttl`` seconds, a backstop should an event be lost with a bus connection.

A resolution that started before an invalidation is not stored (the
generation check), so a read racing a ban cannot put the banned caller back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from hostplane.core.clock import utcnow
from hostplane.core.principal import Principal


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    until: float  # Unix time, on the product's clock (core.clock)


class PrincipalCache:
    def __init__(self, *, ttl: float, max_entries: int, scope: object = None) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        # What this cache belongs to (the connection pool of its runtime): a
        # commit through that pool invalidates it without waiting for the bus.
        self.scope = scope
        self.generation = 0
        self._entries: OrderedDict[tuple[str, str | None], _Entry] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, str | None]) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.until <= utcnow().timestamp():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.principal

    def put(self, key: tuple[str, str | None], principal: Principal, generation: int) -> None:
        """Keep ``principal`` unless something was invalidated since ``generation``."""
        if not self.enabled or generation != self.generation or not principal.is_authenticated:
            return
        until = utcnow().timestamp() + self.ttl
        if principal.expires_at is not None:
            until = min(until, principal.expires_at)
        self._entries[key] = _Entry(principal, until)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(
        self,
        *,
        user_ids: Iterable[str] = (),
        session_ids: Iterable[str] = (),
        api_key_ids: Iterable[str] = (),
        everything: bool = False,
    ) -> None:
        """Drop the entries of these users, sessions and API keys (or all of them)."""
        self.generation += 1
        if everything:
            self._entries.clear()
            return
        users, sessions, keys = set(user_ids), set(session_ids), set(api_key_ids)
        stale = [
            key
            for key, entry in self._entries.items()
            if entry.principal.user_id in users
            or entry.principal.session_id in sessions
            or (entry.principal.kind == "api_key" and entry.principal.id in keys)
        ]
        for key in stale:
            del self._entries[key]
