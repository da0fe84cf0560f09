"""Managing a tenant's endpoints and reading and replaying their deliveries.

Every function runs in the caller's tenant-scoped session, so another
tenant's endpoint is simply not found.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.config import WebhookSettings
from hostplane.core.db.session import record_event
from hostplane.core.errors import Conflict, NotFound
from hostplane.core.events.bus import Event
from hostplane.core.net.destinations import check_url
from hostplane.core.pagination import PageMeta, PageParams, paginate
from hostplane.core.security.crypto import SecretBox
from hostplane.platform.webhooks import signing
from hostplane.platform.webhooks.dispatcher import disable
from hostplane.platform.webhooks.events import QUEUED_TOPIC, emit, emit_test
from hostplane.platform.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

# After a rotation the old secret keeps signing this long, so receivers can switch.
ROTATION_OVERLAP = timedelta(hours=24)

__all__ = ["emit"]


class WebhookEndpointNotFound(NotFound):
    def __init__(self, endpoint_id: str) -> None:
        super().__init__("webhook", endpoint_id)


class WebhookDeliveryNotFound(NotFound):
    def __init__(self, delivery_id: str) -> None:
        super().__init__("delivery", delivery_id)


class EndpointDisabled(Conflict):
    code = "ENDPOINT_DISABLED"

    def __init__(self) -> None:
        super().__init__("The endpoint is disabled; enable it first")


@dataclass(frozen=True, slots=True)
class IssuedEndpoint:
    endpoint: WebhookEndpoint
    secret: str | None  # in the clear, at creation or rotation only


async def list_endpoints(
    session: AsyncSession, params: PageParams
) -> tuple[Sequence[WebhookEndpoint], PageMeta]:
    return await paginate(session, select(WebhookEndpoint).order_by(WebhookEndpoint.id), params)


async def get_endpoint(
    session: AsyncSession, endpoint_id: str, *, for_update: bool = False
) -> WebhookEndpoint:
    endpoint = await session.get(WebhookEndpoint, endpoint_id, with_for_update=for_update)
    if endpoint is None:
        raise WebhookEndpointNotFound(endpoint_id)
    return endpoint


async def create_endpoint(
    session: AsyncSession,
    *,
    tenant_id: str | None,
    url: str,
    events: list[str],
    enabled: bool,
    description: str | None,
    settings: WebhookSettings,
    box: SecretBox,
) -> IssuedEndpoint:
    """Create an endpoint with a fresh signing secret, returned in the clear once.

    The URL's shape and a literal address are checked now; the name's
    addresses are checked again at every delivery (they can change).
    """
    check_url(url, allow_private=settings.allow_private_destinations)
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        tenant_id=tenant_id,
        url=url.strip(),
        events=events,
        enabled=enabled,
        disabled_reason=None if enabled else "manual",
        description=description,
        secret_sealed=box.seal(secret.encode()),
        consecutive_failures=0,
    )
    session.add(endpoint)
    await session.flush()
    return IssuedEndpoint(endpoint, secret)


async def update_endpoint(
    session: AsyncSession,
    endpoint_id: str,
    changes: Mapping[str, Any],
    *,
    settings: WebhookSettings,
    box: SecretBox,
) -> IssuedEndpoint:
    """Change an endpoint; ``rotate_secret`` issues a new secret (the old one signs 24 h more).

    Disabling ends the deliveries it is still owed (they can be redelivered);
    enabling clears the failure count.
    """
    endpoint = await get_endpoint(session, endpoint_id, for_update=True)
    if changes.get("url") is not None:
        check_url(changes["url"], allow_private=settings.allow_private_destinations)
        endpoint.url = str(changes["url"]).strip()
    if changes.get("events") is not None:
        endpoint.events = list(changes["events"])
    if "description" in changes:
        endpoint.description = changes["description"]
    secret = None
    if changes.get("rotate_secret"):
        secret = signing.new_secret()
        endpoint.previous_secret_sealed = endpoint.secret_sealed
        endpoint.previous_secret_expires_at = utcnow() + ROTATION_OVERLAP
        endpoint.secret_sealed = box.seal(secret.encode())
    enabled = changes.get("enabled")
    if enabled is True and not endpoint.enabled:
        endpoint.enabled = True
        endpoint.disabled_reason = None
        endpoint.consecutive_failures = 0
    elif enabled is False and endpoint.enabled:
        await disable(session, endpoint, "manual")
    await session.flush()
    return IssuedEndpoint(endpoint, secret)


async def delete_endpoint(session: AsyncSession, endpoint_id: str) -> None:
    endpoint = await get_endpoint(session, endpoint_id, for_update=True)
    await session.delete(endpoint)
    await session.flush()


@dataclass(frozen=True, slots=True)
class DeliveryView:
    delivery: WebhookDelivery
    attempts: list[WebhookAttempt]


async def list_deliveries(
    session: AsyncSession, endpoint_id: str, params: PageParams, *, status: str | None = None
) -> tuple[list[DeliveryView], PageMeta]:
    """An endpoint's deliveries, newest first, each with its attempts (oldest first)."""
    await get_endpoint(session, endpoint_id)
    statement = (
        select(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint_id)
        .order_by(WebhookDelivery.id.desc())
    )
    if status is not None:
        statement = statement.where(WebhookDelivery.status == status)
    deliveries, meta = await paginate(session, statement, params)
    attempts: dict[str, list[WebhookAttempt]] = defaultdict(list)
    if deliveries:
        rows = await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_([d.id for d in deliveries]))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)
        )
        for attempt in rows:
            attempts[attempt.delivery_id].append(attempt)
    return [DeliveryView(d, attempts[d.id]) for d in deliveries], meta


async def redeliver(session: AsyncSession, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
    """Queue the delivery's event again for its endpoint, after what the endpoint is owed.

    The event keeps its id (``webhook-id``), so a receiver that already has it
    can tell.
    """
    endpoint = await get_endpoint(session, endpoint_id)
    original = await session.get(WebhookDelivery, delivery_id)
    if original is None or original.endpoint_id != endpoint.id:
        raise WebhookDeliveryNotFound(delivery_id)
    if not endpoint.enabled:
        raise EndpointDisabled
    again = WebhookDelivery(
        tenant_id=endpoint.tenant_id,
        endpoint_id=endpoint.id,
        event_id=original.event_id,
        event_type=original.event_type,
        status="pending",
        attempts=0,
        next_attempt_at=utcnow(),
    )
    session.add(again)
    await session.flush()
    record_event(session, Event(QUEUED_TOPIC, {"events": 1}))
    return again


async def send_test(session: AsyncSession, endpoint_id: str) -> WebhookEndpoint:
    """Queue a ``webhook.test`` event for this endpoint only (delivered like any other)."""
    endpoint = await get_endpoint(session, endpoint_id)
    if not endpoint.enabled:
        raise EndpointDisabled
    emit_test(session, endpoint.id, endpoint.tenant_id)
    return endpoint
