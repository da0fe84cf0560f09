"""Keeping the runtime's principal cache true to the database.

A cached caller was resolved from rows of these tables: the user, the login
session, the user's role assignments, the roles (their permissions and
two-factor requirement), the tenant's role settings, and the API key. Any
committed change to one of them drops the entries it may concern:

- in this process at once, from the commit itself (a session hook: the ORM's
  flushed rows, and the ``access.revoked`` / role events the transaction
  recorded for changes made by bulk statements);
- in every other process through the event bus: the commit publishes
  :data:`PRINCIPALS_CHANGED` naming what changed, and each process's
  listener (:func:`listen`) forgets the same entries, as it does for
  ``access.revoked`` and the role events.

Changes to roles and tenant role settings concern anyone: they clear the
whole cache (they are rare). The hooks watch ORM rows, not call sites, so a
new code path that bans a user or edits a role invalidates without having to
remember to.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.orm import Session, UOWTransaction

from hostplane.core.db.session import pending_events, record_event
from hostplane.core.events.bus import Event
from hostplane.core.principal_cache import PrincipalCache
from hostplane.core.runtime import Runtime
from hostplane.identity.access.events import ACCESS_REVOKED
from hostplane.identity.api_keys.models import ApiKey
from hostplane.identity.auth.models import AuthSession
from hostplane.identity.roles.models import Role, TenantRoleSetting, UserRole
from hostplane.identity.roles.service import (
    ROLE_CHANGED_TOPIC,
    ROLE_DELETED_TOPIC,
    ROLES_CHANGED_TOPIC,
)
from hostplane.identity.users.models import User

log = structlog.get_logger("hostplane.identity.principal_cache")

PRINCIPALS_CHANGED = "access.principals_changed"
TOPICS = (
    PRINCIPALS_CHANGED,
    ACCESS_REVOKED,
    ROLES_CHANGED_TOPIC,
    ROLE_CHANGED_TOPIC,
    ROLE_DELETED_TOPIC,
)
_CHANGES = "hostplane.principal_changes"

# Every runtime's cache in this process, found by the pool its commits go through.
_caches: weakref.WeakSet[PrincipalCache] = weakref.WeakSet()


@dataclass
class Changes:
    user_ids: set[str] = field(default_factory=set)
    session_ids: set[str] = field(default_factory=set)
    api_key_ids: set[str] = field(default_factory=set)
    everything: bool = False

    def __bool__(self) -> bool:
        return bool(self.everything or self.user_ids or self.session_ids or self.api_key_ids)

    def add_event(self, topic: str, data: dict[str, Any]) -> None:
        if topic in (ROLE_CHANGED_TOPIC, ROLE_DELETED_TOPIC) or data.get("everything"):
            self.everything = True
        for key, target in (
            ("userId", self.user_ids),
            ("sessionId", self.session_ids),
            ("apiKeyId", self.api_key_ids),
        ):
            if isinstance(data.get(key), str):
                target.add(data[key])
        for key, target in (
            ("userIds", self.user_ids),
            ("sessionIds", self.session_ids),
            ("apiKeyIds", self.api_key_ids),
        ):
            target.update(value for value in data.get(key, ()) if isinstance(value, str))

    def apply(self, cache: PrincipalCache) -> None:
        cache.forget(
            user_ids=self.user_ids,
            session_ids=self.session_ids,
            api_key_ids=self.api_key_ids,
            everything=self.everything,
        )


def _note(changes: Changes, row: object, *, new: bool) -> None:
    if new and isinstance(row, User | AuthSession | ApiKey):
        return  # nothing can have been resolved from a row that did not exist
    if isinstance(row, User):
        changes.user_ids.add(row.id)
    elif isinstance(row, AuthSession):
        changes.session_ids.add(row.id)
        changes.user_ids.add(row.user_id)
    elif isinstance(row, UserRole):
        changes.user_ids.add(row.user_id)
    elif isinstance(row, ApiKey):
        changes.api_key_ids.add(row.id)
    elif isinstance(row, Role | TenantRoleSetting):
        changes.everything = True


def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    changes = Changes()
    for row in session.new:
        _note(changes, row, new=True)
    for row in session.dirty:
        # Rows only touched without a net change are not changes.
        if session.is_modified(row):
            _note(changes, row, new=False)
    for row in session.deleted:
        _note(changes, row, new=False)
    if not changes:
        return
    recorded: tuple[Changes, Event] | None = session.info.get(_CHANGES)
    if recorded is None:
        # One announcement per transaction, naming everything it changed.
        recorded = (Changes(), Event(PRINCIPALS_CHANGED, {}))
        session.info[_CHANGES] = recorded
        record_event(session, recorded[1])
    total, announcement = recorded
    total.user_ids |= changes.user_ids
    total.session_ids |= changes.session_ids
    total.api_key_ids |= changes.api_key_ids
    total.everything |= changes.everything
    # Flushes run up to the commit itself (after ``before_commit``): the
    # announcement is brought up to date by each.
    announcement.data.update(_as_data(total))


def _after_commit(session: Session) -> None:
    session.info.pop(_CHANGES, None)
    changes = Changes()
    for pending in pending_events(session):
        if pending.type in TOPICS:
            changes.add_event(pending.type, pending.data)
    if not changes:
        return
    try:
        bind = session.get_bind()
    except Exception:  # noqa: BLE001 - a session without an engine: no cache of ours
        return
    pool = bind.engine.pool
    for cache in list(_caches):
        if cache.scope is pool:
            changes.apply(cache)


def _after_rollback(session: Session) -> None:
    session.info.pop(_CHANGES, None)


def _as_data(changes: Changes) -> dict[str, Any]:
    return {
        "userIds": sorted(changes.user_ids),
        "sessionIds": sorted(changes.session_ids),
        "apiKeyIds": sorted(changes.api_key_ids),
        "everything": changes.everything,
    }


_installed = False


def install(runtime: Runtime) -> PrincipalCache:
    """Give ``runtime`` a principal cache sized by its settings, kept current by commits."""
    global _installed
    if not _installed:
        event.listen(Session, "after_flush", _after_flush)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_soft_rollback", lambda s, _t: _after_rollback(s))
        _installed = True
    settings = runtime.settings.auth
    cache = PrincipalCache(
        ttl=settings.principal_cache_seconds,
        max_entries=settings.principal_cache_entries,
        scope=runtime.engine.sync_engine.pool,
    )
    _caches.add(cache)
    runtime.principal_cache = cache
    return cache


async def listen(runtime: Runtime, started: asyncio.Event) -> None:
    """Forget what other processes' commits announce, for as long as the app runs."""
    cache = runtime.principal_cache
    while True:
        try:
            async with runtime.bus.subscribe(*TOPICS, max_queue=1024) as events:
                started.set()
                dropped = 0
                async for received in events:
                    if events.dropped != dropped:
                        # Lost events: some entry may be stale, drop them all.
                        dropped = events.dropped
                        cache.forget(everything=True)
                    changes = Changes()
                    changes.add_event(received.type, received.data)
                    if changes:
                        changes.apply(cache)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the bus went away: start over, clean
            log.warning("principal_cache.listen_failed", error=str(exc))
            cache.forget(everything=True)
        # The subscription ended (the bus closed, or failed): until a new one
        # is up, other processes' changes may be missed; the app stops this
        # task before it closes the bus.
        await asyncio.sleep(1.0)
