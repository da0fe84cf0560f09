"""The events endpoints subscribe to, and :func:`emit`, which queues one.

``emit`` is synchronous and only notes the event on the session; right before
that session's transaction commits, a listener writes the event and one
delivery per subscribed, enabled endpoint of the tenant, in the same
transaction. So an event exists if and only if the change that caused it
commits (a rolled-back change sends nothing), and once committed the worker
delivers it even if the process that made it dies the next instant. Tenants
without endpoints pay one indexed query per committing transaction that
emitted something, and write nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from hostplane.core.clock import utcnow
from hostplane.core.db.session import record_event
from hostplane.core.events.bus import Event
from hostplane.core.ids import new_id
from hostplane.platform.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

# SkyPANEL's seven, then the panel's own. Alerts, invoices and tickets are
# emitted by their domains; any name in those families is subscribable.
SKYPANEL_EVENTS = (
    "server.created",
    "server.updated",
    "server.deleted",
    "invoice.created",
    "invoice.paid",
    "ticket.created",
    "ticket.updated",
)
PANEL_EVENTS = (
    "server.installed",
    "server.crashed",
    "backup.completed",
    "backup.failed",
    "user.created",
    "alert.created",
    "alert.resolved",
)
KNOWN_EVENTS = frozenset(SKYPANEL_EVENTS + PANEL_EVENTS)
# Families whose domains may add names without a change here.
OPEN_FAMILIES = frozenset({"alert", "invoice", "ticket", "order", "subscription", "payment"})
FAMILIES = frozenset(name.split(".", 1)[0] for name in KNOWN_EVENTS) | OPEN_FAMILIES
# Sent by POST /api/webhooks/{id}/test to that endpoint only, whatever it subscribes to.
TEST_EVENT = "webhook.test"
# Workers wake on this as soon as a transaction that queued deliveries commits.
QUEUED_TOPIC = "webhook.queued"

_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_PENDING = "hostplane.webhook_events"


def is_event_name(name: str) -> bool:
    """Whether ``name`` is an event the panel emits (now or from a later domain)."""
    if name in KNOWN_EVENTS:
        return True
    return bool(_NAME.match(name)) and name.split(".", 1)[0] in OPEN_FAMILIES


def is_subscription(pattern: str) -> bool:
    """An event name, a family wildcard (``alert.*``) or ``*`` (everything)."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return pattern[:-2] in FAMILIES
    return is_event_name(pattern)


def matches(patterns: list[Any], name: str) -> bool:
    for pattern in patterns:
        if not isinstance(pattern, str):
            continue
        if pattern in ("*", name):
            return True
        if pattern.endswith(".*") and name.startswith(pattern[:-1]):
            return True
    return False


@dataclass(frozen=True, slots=True)
class _Emitted:
    type: str
    data: dict[str, Any]
    tenant_id: str
    endpoint_id: str | None  # only this endpoint (a test event)


def emit(
    session: AsyncSession | Session, event_type: str, data: dict[str, Any], tenant_id: str
) -> None:
    """Queue ``event_type`` with ``data`` for the endpoints of ``tenant_id`` that want it.

    Written when ``session`` commits, in its transaction; nothing if it rolls back.
    """
    if not is_event_name(event_type):
        raise ValueError(f"{event_type!r} is not a webhook event name")
    target = session.sync_session if isinstance(session, AsyncSession) else session
    _queue(target, _Emitted(event_type, dict(data), tenant_id, None))


def emit_test(session: AsyncSession, endpoint_id: str, tenant_id: str) -> None:
    data = {"endpointId": endpoint_id, "message": "A test event sent from the panel"}
    _queue(session.sync_session, _Emitted(TEST_EVENT, data, tenant_id, endpoint_id))


def _queue(session: Session, emitted: _Emitted) -> None:
    session.info.setdefault(_PENDING, []).append(emitted)


@event.listens_for(Session, "before_commit")
def _write_emitted(session: Session) -> None:
    pending: list[_Emitted] = session.info.pop(_PENDING, [])
    if not pending:
        return
    tenants = {item.tenant_id for item in pending}
    endpoints = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.tenant_id, WebhookEndpoint.events)
        .where(WebhookEndpoint.tenant_id.in_(tenants), WebhookEndpoint.enabled.is_(True))
        .order_by(WebhookEndpoint.id)
    ).all()
    now = utcnow()
    planned: list[tuple[WebhookEvent, list[str]]] = []
    for item in pending:
        if item.endpoint_id is not None:
            targets = [e.id for e in endpoints if e.id == item.endpoint_id]
        else:
            targets = [
                e.id
                for e in endpoints
                if e.tenant_id == item.tenant_id and matches(list(e.events or []), item.type)
            ]
        if targets:
            row = WebhookEvent(
                id=new_id(),
                tenant_id=item.tenant_id,
                type=item.type,
                data=item.data,
                created_at=now,
            )
            planned.append((row, targets))
    if not planned:
        return
    # Events first (the deliveries' foreign key), then the deliveries, in event order.
    session.add_all([row for row, _targets in planned])
    session.flush()
    session.add_all(
        [
            WebhookDelivery(
                tenant_id=row.tenant_id,
                endpoint_id=endpoint_id,
                event_id=row.id,
                event_type=row.type,
                status="pending",
                attempts=0,
                next_attempt_at=now,
            )
            for row, targets in planned
            for endpoint_id in targets
        ]
    )
    session.flush()
    # record_event only touches ``info``, which the sync session shares.
    record_event(cast(AsyncSession, session), Event(QUEUED_TOPIC, {"events": len(planned)}))


@event.listens_for(Session, "after_soft_rollback")
def _forget_emitted(session: Session, previous: SessionTransaction) -> None:
    if previous.parent is None:
        session.info.pop(_PENDING, None)
