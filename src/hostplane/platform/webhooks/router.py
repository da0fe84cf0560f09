"""``/api/webhooks``: a tenant's signed outbound webhooks (SkyPANEL's, Standard Webhooks signed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from hostplane.core.http.deps import PageDep, RuntimeDep, SessionDep, require
from hostplane.core.http.envelope import Empty, Envelope, PageEnvelope, ok, page
from hostplane.core.principal import Principal
from hostplane.core.schemas import ApiModel
from hostplane.platform.system import jobs as _system_jobs  # noqa: F401 - registers retention
from hostplane.platform.webhooks import service
from hostplane.platform.webhooks.dispatcher import secret_box
from hostplane.platform.webhooks.events import TEST_EVENT
from hostplane.platform.webhooks.schemas import (
    DeliveryStatus,
    WebhookAttemptOut,
    WebhookDeliveryOut,
    WebhookEndpointCreate,
    WebhookEndpointOut,
    WebhookEndpointUpdate,
    WebhookEndpointUpdated,
    WebhookEndpointWithSecret,
)

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

WebhookReader = Annotated[Principal, Depends(require("webhook.read"))]
WebhookManager = Annotated[Principal, Depends(require("webhook.manage"))]


class TestQueued(ApiModel):
    endpoint_id: str
    event: str


def _delivery_out(view: service.DeliveryView) -> WebhookDeliveryOut:
    out = WebhookDeliveryOut.model_validate(view.delivery)
    out.attempt_log = [WebhookAttemptOut.model_validate(a) for a in view.attempts]
    if view.delivery.status not in ("pending", "sending"):
        out.next_attempt_at = None
    return out


@router.get("", response_model=PageEnvelope[WebhookEndpointOut])
async def list_webhooks(
    session: SessionDep, _principal: WebhookReader, params: PageDep
) -> PageEnvelope[WebhookEndpointOut]:
    """The tenant's endpoints (secrets are never shown again after creation)."""
    endpoints, meta = await service.list_endpoints(session, params)
    return page([WebhookEndpointOut.model_validate(e) for e in endpoints], meta)


@router.post("", response_model=Envelope[WebhookEndpointWithSecret], status_code=201)
async def create_webhook(
    body: WebhookEndpointCreate,
    session: SessionDep,
    principal: WebhookManager,
    runtime: RuntimeDep,
) -> Envelope[WebhookEndpointWithSecret]:
    """Create an endpoint; the answer carries its signing secret, shown only this once."""
    issued = await service.create_endpoint(
        session,
        tenant_id=principal.tenant_id,
        url=body.url,
        events=body.events,
        enabled=body.enabled,
        description=body.description,
        settings=runtime.settings.webhooks,
        box=secret_box(runtime),
    )
    base = WebhookEndpointOut.model_validate(issued.endpoint).model_dump()
    return ok(WebhookEndpointWithSecret(**base, secret=issued.secret or ""))


@router.get("/{endpoint_id}", response_model=Envelope[WebhookEndpointOut])
async def get_webhook(
    endpoint_id: str, session: SessionDep, _principal: WebhookReader
) -> Envelope[WebhookEndpointOut]:
    """One endpoint."""
    return ok(WebhookEndpointOut.model_validate(await service.get_endpoint(session, endpoint_id)))


@router.put("/{endpoint_id}", response_model=Envelope[WebhookEndpointUpdated])
async def update_webhook(
    endpoint_id: str,
    body: WebhookEndpointUpdate,
    session: SessionDep,
    _principal: WebhookManager,
    runtime: RuntimeDep,
) -> Envelope[WebhookEndpointUpdated]:
    """Change the URL, events, description or state; ``rotateSecret`` returns a new secret
    once (the previous one keeps signing for 24 hours)."""
    issued = await service.update_endpoint(
        session,
        endpoint_id,
        body.model_dump(exclude_unset=True, by_alias=False),
        settings=runtime.settings.webhooks,
        box=secret_box(runtime),
    )
    base = WebhookEndpointOut.model_validate(issued.endpoint).model_dump()
    return ok(WebhookEndpointUpdated(**base, secret=issued.secret))


@router.delete("/{endpoint_id}", response_model=Empty)
async def delete_webhook(
    endpoint_id: str, session: SessionDep, _principal: WebhookManager
) -> Empty:
    """Delete an endpoint with its delivery log."""
    await service.delete_endpoint(session, endpoint_id)
    return Empty()


@router.get("/{endpoint_id}/deliveries", response_model=PageEnvelope[WebhookDeliveryOut])
async def list_webhook_deliveries(
    endpoint_id: str,
    session: SessionDep,
    _principal: WebhookReader,
    params: PageDep,
    status: Annotated[
        DeliveryStatus | None, Query(description="pending | sending | succeeded | failed")
    ] = None,
) -> PageEnvelope[WebhookDeliveryOut]:
    """Deliveries, newest first, each with every attempt (status, duration, first 2 KB)."""
    views, meta = await service.list_deliveries(session, endpoint_id, params, status=status)
    return page([_delivery_out(view) for view in views], meta)


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    response_model=Envelope[WebhookDeliveryOut],
    status_code=202,
)
async def redeliver_webhook(
    endpoint_id: str, delivery_id: str, session: SessionDep, _principal: WebhookManager
) -> Envelope[WebhookDeliveryOut]:
    """Send the delivery's event again, as a new delivery after what the endpoint is owed."""
    again = await service.redeliver(session, endpoint_id, delivery_id)
    return ok(_delivery_out(service.DeliveryView(again, [])))


@router.post("/{endpoint_id}/test", response_model=Envelope[TestQueued], status_code=202)
async def send_test_webhook(
    endpoint_id: str, session: SessionDep, _principal: WebhookManager
) -> Envelope[TestQueued]:
    """Queue a ``webhook.test`` event to this endpoint; its delivery appears in the log."""
    endpoint = await service.send_test(session, endpoint_id)
    return ok(TestQueued(endpoint_id=endpoint.id, event=TEST_EVENT))
