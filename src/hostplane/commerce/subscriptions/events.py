"""The events of a server's plan term: on the bus once committed, and to webhooks.

``subscription.created`` (deployed and paid), ``subscription.active`` (installed),
``subscription.failed`` (refunded), ``subscription.renewed``,
``subscription.changed`` (upgrade or downgrade), ``subscription.expired`` (the
server is suspended), ``subscription.ended`` (the server is deleted after the grace).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.subscriptions.models import ServerSubscription
from hostplane.core.clock import isoformat
from hostplane.core.db.session import record_event
from hostplane.core.events.bus import Event
from hostplane.platform.webhooks.service import emit


def data(subscription: ServerSubscription) -> dict[str, Any]:
    return {
        "id": subscription.id,
        "serverId": subscription.server_id,
        "planId": subscription.plan_id,
        "userId": subscription.user_id,
        "status": subscription.status,
        "expiresAt": isoformat(subscription.expires_at),
    }


def publish(session: AsyncSession, name: str, subscription: ServerSubscription) -> None:
    """``name`` for ``subscription``, written and published only if the transaction commits."""
    payload = data(subscription)
    record_event(session, Event(name, payload, tenant_id=subscription.tenant_id))
    emit(session, name, payload, subscription.tenant_id)
