"""``/api/alerts`` and ``/api/alert-rules``: Catalyst's alerts and their rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from hostplane.core.http.deps import Authenticated, PageDep, RuntimeDep, SessionDep, require
from hostplane.core.http.envelope import Empty, Envelope, PageEnvelope, ok, page
from hostplane.core.principal import Principal
from hostplane.infra.alerts import service
from hostplane.infra.alerts.models import AlertAction
from hostplane.infra.alerts.schemas import (
    AlertActionOut,
    AlertDetail,
    AlertFilters,
    AlertOut,
    AlertRuleCreate,
    AlertRuleOut,
    AlertRuleUpdate,
    AlertStats,
    BulkResolve,
)

router = APIRouter(tags=["alerts"])

AlertResolver = Annotated[Principal, Depends(require("alert.resolve"))]
RuleManager = Annotated[Principal, Depends(require("alert.manage"))]


class AlertResolved(BaseModel):
    """Catalyst's ``{success, message}``, with the alert as ``data``."""

    success: Literal[True] = True
    message: str
    data: AlertOut


class BulkResolved(BaseModel):
    """Catalyst's ``{success, resolved: N}``; ``data`` repeats the count for envelope readers."""

    success: Literal[True] = True
    resolved: int
    data: dict[str, int]


def _action_out(action: AlertAction) -> AlertActionOut:
    config = action.config or {}
    target = config.get("url") if action.kind == "webhook" else ", ".join(config.get("to") or [])
    return AlertActionOut(
        id=action.id,
        event=action.event,
        kind=action.kind,
        target=str(target or ""),
        status=action.status,
        attempts=action.attempts,
        next_attempt_at=action.next_attempt_at if action.status == "pending" else None,
        last_error=action.last_error,
        finished_at=action.finished_at,
    )


def _detail(alert: AlertOut, actions: Sequence[AlertAction]) -> AlertDetail:
    return AlertDetail(**alert.model_dump(), actions=[_action_out(a) for a in actions])


@router.get("/api/alerts", response_model=PageEnvelope[AlertOut])
async def list_alerts(
    session: SessionDep,
    principal: Authenticated,
    params: PageDep,
    filters: Annotated[AlertFilters, Query()],
) -> PageEnvelope[AlertOut]:
    """Alerts, newest first: all of the tenant's with ``alert.read``, else those of the servers
    the caller may read. Filters ``serverId``, ``nodeId``, ``type``, ``severity``, ``resolved``."""
    alerts, meta = await service.list_alerts(session, principal, filters, params)
    return page([AlertOut.model_validate(a) for a in alerts], meta)


@router.get("/api/alerts/stats", response_model=Envelope[AlertStats])
async def alert_stats(session: SessionDep, principal: Authenticated) -> Envelope[AlertStats]:
    """Counts of the alerts the caller can see: ``total``, ``unresolved``, ``byType``,
    ``bySeverity``."""
    return ok(AlertStats(**await service.stats(session, principal)))


@router.post("/api/alerts/bulk-resolve", response_model=BulkResolved)
async def bulk_resolve(
    body: BulkResolve, session: SessionDep, principal: AlertResolver
) -> BulkResolved:
    """Resolve the open alerts among ``alertIds`` the caller can see; ``resolved`` counts them
    (ids that are unknown, hidden or already resolved are not counted)."""
    resolved = await service.bulk_resolve(session, principal, body.alert_ids)
    return BulkResolved(resolved=resolved, data={"resolved": resolved})


@router.get("/api/alerts/{alert_id}", response_model=Envelope[AlertDetail])
async def get_alert(
    alert_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[AlertDetail]:
    """One alert, with its actions: each notification's status, attempts and last error."""
    alert = await service.get_alert(session, principal, alert_id)
    actions = await service.actions_of(session, alert.id)
    return ok(_detail(AlertOut.model_validate(alert), actions))


@router.post("/api/alerts/{alert_id}/resolve", response_model=AlertResolved)
async def resolve_alert(
    alert_id: str, session: SessionDep, principal: AlertResolver
) -> AlertResolved:
    """Resolve an alert (resolving a resolved alert changes nothing)."""
    alert = await service.resolve_by_user(session, principal, alert_id)
    return AlertResolved(message="Alert resolved", data=AlertOut.model_validate(alert))


@router.get("/api/alert-rules", response_model=PageEnvelope[AlertRuleOut])
async def list_rules(
    session: SessionDep, _principal: RuleManager, params: PageDep
) -> PageEnvelope[AlertRuleOut]:
    """The tenant's alert rules (admin)."""
    rules, meta = await service.list_rules(session, params)
    return page([AlertRuleOut.model_validate(r) for r in rules], meta)


@router.post("/api/alert-rules", response_model=Envelope[AlertRuleOut], status_code=201)
async def create_rule(
    body: AlertRuleCreate, session: SessionDep, principal: RuleManager, runtime: RuntimeDep
) -> Envelope[AlertRuleOut]:
    """Create a rule. Webhook actions pass the destination guard; e-mail actions need the
    operator's SMTP server (``HOSTPLANE_SMTP__HOST``)."""
    rule = await service.create_rule(session, principal, body, runtime.settings)
    return ok(AlertRuleOut.model_validate(rule))


@router.get("/api/alert-rules/{rule_id}", response_model=Envelope[AlertRuleOut])
async def get_rule(
    rule_id: str, session: SessionDep, _principal: RuleManager
) -> Envelope[AlertRuleOut]:
    """One alert rule."""
    return ok(AlertRuleOut.model_validate(await service.get_rule(session, rule_id)))


@router.put("/api/alert-rules/{rule_id}", response_model=Envelope[AlertRuleOut])
async def update_rule(
    rule_id: str,
    body: AlertRuleUpdate,
    session: SessionDep,
    _principal: RuleManager,
    runtime: RuntimeDep,
) -> Envelope[AlertRuleOut]:
    """Change a rule's name, target id, severity, conditions, actions, ``enabled`` or
    ``keepOpen`` (its type and target kind stay)."""
    rule = await service.update_rule(session, rule_id, body, runtime.settings)
    return ok(AlertRuleOut.model_validate(rule))


@router.delete("/api/alert-rules/{rule_id}", response_model=Empty)
async def delete_rule(rule_id: str, session: SessionDep, _principal: RuleManager) -> Empty:
    """Delete a rule; its open alerts are resolved by the system."""
    await service.delete_rule(session, rule_id)
    return Empty()
