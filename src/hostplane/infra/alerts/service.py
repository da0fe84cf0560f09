"""Alert rules (admin resources) and alerts (seen by whoever may read their server).

Opening and resolving go through :func:`open_alert` and :func:`resolve`, which
both the evaluator and the API use: an alert is opened at most once per rule
and target while open (the database's unique ``open_key`` decides, so two
workers racing cannot both open it), and resolved at most once (a
conditional UPDATE decides). Each of those moments queues the rule's actions
and the outbound webhook event in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import isoformat, utcnow
from hostplane.core.config import Settings
from hostplane.core.db.session import record_event
from hostplane.core.errors import NotFound, ValidationFailed
from hostplane.core.events.bus import Event
from hostplane.core.net.destinations import check_url
from hostplane.core.pagination import PageMeta, PageParams, paginate
from hostplane.core.principal import Principal
from hostplane.identity.access import service as access
from hostplane.infra.alerts.models import ALERT_TYPES, SEVERITIES, Alert, AlertAction, AlertRule
from hostplane.infra.alerts.schemas import AlertFilters, AlertRuleCreate, AlertRuleUpdate
from hostplane.infra.nodes import service as nodes
from hostplane.infra.servers import service as servers
from hostplane.infra.servers.models import Server
from hostplane.platform.webhooks.events import emit

SYSTEM = "system"
# Workers wake on this as soon as a transaction that queued actions commits.
ACTIONS_QUEUED_TOPIC = "alert.actions.queued"


class AlertNotFound(NotFound):
    def __init__(self, alert_id: str) -> None:
        super().__init__("alert", alert_id)


class AlertRuleNotFound(NotFound):
    def __init__(self, rule_id: str) -> None:
        super().__init__("alert rule", rule_id)


def _field_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, details={"fields": [{"field": field, "message": message}]})


# --- rules ---------------------------------------------------------------------------------


async def _check_actions(actions: list[dict[str, Any]], settings: Settings) -> None:
    for index, action in enumerate(actions):
        if action["type"] == "webhook":
            # The same guard as outbound webhooks; the address is checked again at send.
            check_url(action["url"], allow_private=settings.webhooks.allow_private_destinations)
        elif action["type"] == "email" and not settings.smtp.host:
            raise _field_error(
                f"actions.{index}",
                "E-mail actions need a mail server; the operator has not set HOSTPLANE_SMTP__HOST",
            )


async def _check_target(session: AsyncSession, target: str, target_id: str) -> None:
    if target_id == "*":
        return
    try:
        if target == "server":
            await servers.get_server(session, target_id)
        else:
            await nodes.get_node(session, target_id)
    except NotFound:
        raise _field_error("targetId", f"No {target} has the id {target_id}") from None


def _actions(raw: list[Any]) -> list[dict[str, Any]]:
    return [action.model_dump(by_alias=True) for action in raw]


async def list_rules(
    session: AsyncSession, params: PageParams
) -> tuple[Sequence[AlertRule], PageMeta]:
    return await paginate(session, select(AlertRule).order_by(AlertRule.id), params)


async def get_rule(session: AsyncSession, rule_id: str) -> AlertRule:
    rule = await session.get(AlertRule, rule_id)
    if rule is None:
        raise AlertRuleNotFound(rule_id)
    return rule


async def create_rule(
    session: AsyncSession, principal: Principal, body: AlertRuleCreate, settings: Settings
) -> AlertRule:
    actions = _actions(body.actions)
    await _check_actions(actions, settings)
    target = body.target or "server"
    await _check_target(session, target, body.target_id)
    rule = AlertRule(
        tenant_id=principal.tenant_id,
        name=body.name,
        type=body.type,
        target=target,
        target_id=body.target_id,
        severity=body.severity,
        conditions=body.conditions.model_dump(exclude_none=True),
        actions=actions,
        enabled=body.enabled,
        keep_open=body.keep_open,
    )
    session.add(rule)
    await session.flush()
    return rule


async def update_rule(
    session: AsyncSession, rule_id: str, body: AlertRuleUpdate, settings: Settings
) -> AlertRule:
    rule = await get_rule(session, rule_id)
    changes = body.model_fields_set
    if body.actions is not None:
        actions = _actions(body.actions)
        await _check_actions(actions, settings)
        rule.actions = actions
    if body.target_id is not None:
        await _check_target(session, rule.target, body.target_id)
        rule.target_id = body.target_id
    if body.conditions is not None:
        conditions = body.conditions.model_dump(exclude_none=True)
        if rule.type == "resource_threshold" and not {"metric", "operator", "value"} <= set(
            conditions
        ):
            raise _field_error(
                "conditions", "resource_threshold rules need conditions.metric, operator and value"
            )
        rule.conditions = conditions
    for name in ("name", "severity", "enabled", "keep_open"):
        value = getattr(body, name)
        if name in changes and value is not None:
            setattr(rule, name, value)
    await session.flush()
    return rule


async def delete_rule(session: AsyncSession, rule_id: str) -> None:
    """Delete the rule; its open alerts are resolved by the system (they can no longer clear)."""
    rule = await get_rule(session, rule_id)
    open_alerts = await session.scalars(
        select(Alert).where(Alert.rule_id == rule.id, Alert.resolved.is_(False))
    )
    for alert in open_alerts.all():
        await resolve(session, alert, by=SYSTEM, rule=rule)
    await session.delete(rule)
    await session.flush()


async def enabled_rules(session: AsyncSession, *types: str) -> Sequence[AlertRule]:
    statement = select(AlertRule).where(AlertRule.enabled.is_(True))
    if types:
        statement = statement.where(AlertRule.type.in_(types))
    return (await session.scalars(statement.order_by(AlertRule.id))).all()


# --- opening and resolving -----------------------------------------------------------------


def open_key(rule_id: str, target_id: str) -> str:
    return f"{rule_id}:{target_id}"


def alert_data(alert: Alert) -> dict[str, Any]:
    """The alert as webhook events and notifications carry it (the API's shape)."""
    return {
        "id": alert.id,
        "ruleId": alert.rule_id,
        "serverId": alert.server_id,
        "nodeId": alert.node_id,
        "type": alert.type,
        "severity": alert.severity,
        "title": alert.title,
        "message": alert.message,
        "metadata": dict(alert.details or {}),
        "resolved": alert.resolved,
        "resolvedAt": isoformat(alert.resolved_at) if alert.resolved_at else None,
        "resolvedBy": alert.resolved_by,
        "createdAt": isoformat(alert.created_at),
    }


def _queue_actions(session: AsyncSession, alert: Alert, rule: AlertRule | None, event: str) -> None:
    emit(session, event, alert_data(alert), alert.tenant_id)
    if rule is None:
        return
    now = utcnow()
    for action in rule.actions or []:
        if not isinstance(action, dict) or action.get("type") not in ("webhook", "email"):
            continue
        session.add(
            AlertAction(
                tenant_id=alert.tenant_id,
                alert_id=alert.id,
                event=event,
                kind=action["type"],
                config={k: v for k, v in action.items() if k != "type"},
                status="pending",
                attempts=0,
                next_attempt_at=now,
            )
        )
    if rule.actions:
        record_event(session, Event(ACTIONS_QUEUED_TOPIC, {"alertId": alert.id}))


@dataclass(frozen=True, slots=True)
class Firing:
    server_id: str | None
    node_id: str | None
    title: str
    message: str
    metadata: dict[str, Any]

    @property
    def target_id(self) -> str:
        return self.server_id or self.node_id or "*"


async def open_alert(session: AsyncSession, rule: AlertRule, firing: Firing) -> Alert | None:
    """Open an alert of ``rule`` for the firing's target, unless one is open already.

    Returns the new alert, or None when another is open (here or in a racing
    worker's committed transaction).
    """
    alert = Alert(
        tenant_id=rule.tenant_id,
        rule_id=rule.id,
        server_id=firing.server_id,
        node_id=firing.node_id,
        type=rule.type,
        severity=rule.severity,
        title=firing.title[:200],
        message=firing.message[:1000],
        details=firing.metadata,
        open_key=open_key(rule.id, firing.target_id),
        resolved=False,
        created_at=utcnow(),
    )
    try:
        async with session.begin_nested():
            session.add(alert)
            await session.flush()
    except IntegrityError:
        return None
    _queue_actions(session, alert, rule, "alert.created")
    await session.flush()
    return alert


async def resolve(
    session: AsyncSession, alert: Alert, *, by: str, rule: AlertRule | None = None
) -> bool:
    """Resolve ``alert`` if it is still open; whether this call resolved it."""
    now = utcnow()
    result = cast(
        CursorResult[Any],
        await session.execute(
            update(Alert)
            .where(Alert.id == alert.id, Alert.resolved.is_(False))
            .values(resolved=True, resolved_at=now, resolved_by=by, open_key=None)
            .execution_options(synchronize_session=False)
        ),
    )
    if result.rowcount != 1:
        return False
    await session.refresh(alert)
    if rule is None and alert.rule_id is not None:
        rule = await session.get(AlertRule, alert.rule_id)
    _queue_actions(session, alert, rule, "alert.resolved")
    await session.flush()
    return True


async def open_alerts(session: AsyncSession, *types: str) -> Sequence[Alert]:
    statement = select(Alert).where(Alert.resolved.is_(False))
    if types:
        statement = statement.where(Alert.type.in_(types))
    return (await session.scalars(statement.order_by(Alert.id))).all()


async def server_crashed(session: AsyncSession, server: Server, reason: str | None) -> None:
    """The agent reported ``server`` crashed: open the crash alerts of the rules that watch it."""
    rules = await session.scalars(
        select(AlertRule).where(
            AlertRule.tenant_id == server.tenant_id,
            AlertRule.enabled.is_(True),
            AlertRule.type == "server_crashed",
            AlertRule.target_id.in_(("*", server.id)),
        )
    )
    for rule in rules.all():
        await open_alert(
            session,
            rule,
            Firing(
                server_id=server.id,
                node_id=server.node_id,
                title=f"Server {server.name} crashed",
                message=f"Server {server.name} crashed" + (f": {reason}" if reason else ""),
                metadata={
                    "exitCode": server.last_exit_code,
                    "crashCount": server.crash_count,
                    "reason": reason,
                },
            ),
        )


# --- what users see ------------------------------------------------------------------------


def _actor(principal: Principal) -> str:
    return principal.user_id or principal.id or principal.kind


def _visible(statement: Any, principal: Principal) -> Any:
    """Every alert of the tenant with ``alert.read``; else those of servers the caller reads."""
    if not principal.within_scopes("alert.read"):
        # An API key reads alerts only when its scopes say so.
        raise access.AccessDenied("alert.read")
    if principal.has("alert.read"):
        return statement
    return statement.where(Alert.server_id.in_(servers.visible_server_ids(principal)))


async def list_alerts(
    session: AsyncSession, principal: Principal, filters: AlertFilters, params: PageParams
) -> tuple[Sequence[Alert], PageMeta]:
    statement = _visible(select(Alert), principal)
    if filters.server_id is not None:
        statement = statement.where(Alert.server_id == filters.server_id)
    if filters.node_id is not None:
        statement = statement.where(Alert.node_id == filters.node_id)
    if filters.type is not None:
        statement = statement.where(Alert.type == filters.type)
    if filters.severity is not None:
        statement = statement.where(Alert.severity == filters.severity)
    if filters.resolved is not None:
        statement = statement.where(Alert.resolved.is_(filters.resolved))
    return await paginate(session, statement.order_by(Alert.id.desc()), params)


async def get_alert(session: AsyncSession, principal: Principal, alert_id: str) -> Alert:
    alert: Alert | None = await session.scalar(
        _visible(select(Alert).where(Alert.id == alert_id), principal)
    )
    if alert is None:
        raise AlertNotFound(alert_id)
    return alert


async def actions_of(session: AsyncSession, alert_id: str) -> Sequence[AlertAction]:
    return (
        await session.scalars(
            select(AlertAction).where(AlertAction.alert_id == alert_id).order_by(AlertAction.id)
        )
    ).all()


async def resolve_by_user(session: AsyncSession, principal: Principal, alert_id: str) -> Alert:
    """Resolve one alert the caller can see (resolving a resolved alert changes nothing)."""
    alert = await get_alert(session, principal, alert_id)
    await resolve(session, alert, by=_actor(principal))
    return alert


async def bulk_resolve(session: AsyncSession, principal: Principal, alert_ids: list[str]) -> int:
    """Resolve the open alerts among ``alert_ids`` the caller can see; how many it resolved."""
    alerts = await session.scalars(
        _visible(
            select(Alert).where(Alert.id.in_(set(alert_ids)), Alert.resolved.is_(False)),
            principal,
        ).order_by(Alert.id)
    )
    resolved = 0
    for alert in alerts.all():
        if await resolve(session, alert, by=_actor(principal)):
            resolved += 1
    return resolved


async def stats(session: AsyncSession, principal: Principal) -> dict[str, Any]:
    base = _visible(select(Alert.type, Alert.severity, Alert.resolved, func.count()), principal)
    rows = (await session.execute(base.group_by(Alert.type, Alert.severity, Alert.resolved))).all()
    by_type = dict.fromkeys(ALERT_TYPES, 0)
    by_severity = dict.fromkeys(SEVERITIES, 0)
    total = unresolved = 0
    for type_, severity, resolved, count in rows:
        total += count
        unresolved += 0 if resolved else count
        by_type[type_] = by_type.get(type_, 0) + count
        by_severity[severity] = by_severity.get(severity, 0) + count
    return {
        "total": total,
        "unresolved": unresolved,
        "by_type": by_type,
        "by_severity": by_severity,
    }
