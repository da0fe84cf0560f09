"""The alert evaluator: a loop in every worker process (``hostplane worker``, ``up``).

Every ``alerts.evaluate_seconds`` it reads the enabled rules, the latest stats
of every server (kept on the server's row by whichever panel replica holds the
agent's socket) and every node's last heartbeat, then opens and resolves
alerts. A resource threshold must hold for the rule's ``duration`` before it
fires: each evaluator remembers since when a condition has held, so a worker
that restarts starts counting again. Several evaluators may run at once; the
unique ``open_key`` lets only one of them open an alert, and the conditional
resolve lets only one of them resolve it. Crash alerts are opened by the
crash report itself (:func:`service.server_crashed`); the evaluator resolves
them once the server runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.runtime import Runtime
from hostplane.infra.alerts import service
from hostplane.infra.alerts.models import Alert, AlertRule
from hostplane.infra.nodes import service as nodes
from hostplane.infra.nodes.models import Node
from hostplane.infra.servers import service as servers
from hostplane.infra.servers.models import Server

log = structlog.get_logger(__name__)

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
}
NODE_OFFLINE_DEFAULT_SECONDS = 90
UNITS = {"cpu": "%", "memory": "%", "disk": "%"}
NAMES = {"cpu": "CPU", "memory": "Memory", "disk": "Disk"}


def usage_percent(server: Server, metric: str) -> float | None:
    """``metric`` in percent of the server's allocation, from its latest sample."""
    if metric == "cpu":
        if server.cpu_usage is None:
            return None
        # The agent reports percent of one core; an allocation of 2 cores is 200 %.
        cores = server.allocated_cpu_cores
        return server.cpu_usage / cores if cores and cores > 0 else server.cpu_usage
    if metric == "memory":
        used, allocated = server.memory_usage_mb, server.allocated_memory_mb
    else:
        used, allocated = server.disk_usage_mb, server.allocated_disk_mb
    if used is None or not allocated:
        return None
    return used * 100.0 / allocated


def _applies(rule: AlertRule, target_id: str, tenant_id: str) -> bool:
    return rule.tenant_id == tenant_id and rule.target_id in ("*", target_id)


class AlertEvaluator:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.alerts
        # (rule id, target id) -> when its condition was first seen holding.
        self._since: dict[tuple[str, str], datetime] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Evaluate every ``evaluate_seconds`` until ``stop`` is set."""
        failures = 0
        while not stop.is_set():
            try:
                await self.evaluate()
                failures = 0
            except Exception:
                failures += 1
                log.exception("alerts.evaluate_failed", attempt=failures)
            delay = self.settings.evaluate_seconds * (2 ** min(failures, 5))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def evaluate(self) -> tuple[int, int]:
        """One pass over every rule; returns (alerts opened, alerts resolved)."""
        async with self.runtime.unit_of_work() as session:
            now = utcnow()
            rules = await service.enabled_rules(session)
            open_alerts = {a.open_key: a for a in await service.open_alerts(session) if a.open_key}
            opened = resolved = 0
            holding: set[tuple[str, str]] = set()
            # The open keys this pass looked at; an open alert outside it lost its target.
            considered: set[str] = set()
            thresholds = [r for r in rules if r.type == "resource_threshold"]
            if thresholds:
                for server in await servers.servers_with_stats(session):
                    for rule in thresholds:
                        if not _applies(rule, server.id, server.tenant_id):
                            continue
                        considered.add(service.open_key(rule.id, server.id))
                        o, r = await self._threshold(session, rule, server, now, open_alerts)
                        opened, resolved = opened + o, resolved + r
                        if o or (rule.id, server.id) in self._since:
                            holding.add((rule.id, server.id))
            offline = [r for r in rules if r.type == "node_offline"]
            if offline:
                for node in await nodes.all_nodes(session):
                    for rule in offline:
                        if _applies(rule, node.id, node.tenant_id):
                            considered.add(service.open_key(rule.id, node.id))
                            o, r = await self._node(session, rule, node, now, open_alerts)
                            opened, resolved = opened + o, resolved + r
            resolved += await self._crashes_cleared(session, rules, open_alerts)
            resolved += await self._targets_gone(session, rules, open_alerts, considered)
            # Forget conditions whose rule or server went away.
            for key in list(self._since):
                if key not in holding:
                    del self._since[key]
        return opened, resolved

    async def _threshold(
        self,
        session: AsyncSession,
        rule: AlertRule,
        server: Server,
        now: datetime,
        open_alerts: dict[str, Alert],
    ) -> tuple[int, int]:
        conditions = rule.conditions or {}
        metric = str(conditions.get("metric", "cpu"))
        compare = OPERATORS.get(str(conditions.get("operator", ">")))
        threshold = conditions.get("value")
        duration = float(conditions.get("duration") or 0)
        key = (rule.id, server.id)
        fresh = server.stats_at is not None and now - server.stats_at <= timedelta(
            seconds=self.settings.stats_stale_seconds
        )
        value = usage_percent(server, metric) if fresh and server.status == "running" else None
        holds = (
            value is not None
            and compare is not None
            and isinstance(threshold, int | float)
            and compare(value, float(threshold))
        )
        existing = open_alerts.get(service.open_key(rule.id, server.id))
        if not holds:
            self._since.pop(key, None)
            if existing is not None and not rule.keep_open:
                return 0, int(
                    await service.resolve(session, existing, by=service.SYSTEM, rule=rule)
                )
            return 0, 0
        since = self._since.setdefault(key, now)
        if existing is not None or value is None or (now - since).total_seconds() < duration:
            return 0, 0
        name = NAMES.get(metric, metric)
        alert = await service.open_alert(
            session,
            rule,
            service.Firing(
                server_id=server.id,
                node_id=server.node_id,
                title=f"High {name} usage"
                if conditions.get("operator") in (">", ">=")
                else f"{name} usage {conditions.get('operator')} {threshold}%",
                message=f"{name} usage of server {server.name} is at {value:.1f}% "
                f"({conditions.get('operator')} {threshold}% for {duration:g} s)",
                metadata={
                    "metric": metric,
                    f"{metric}Usage": round(value, 2),
                    "operator": conditions.get("operator"),
                    "threshold": threshold,
                    "duration": duration,
                },
            ),
        )
        return (1, 0) if alert is not None else (0, 0)

    async def _node(
        self,
        session: AsyncSession,
        rule: AlertRule,
        node: Node,
        now: datetime,
        open_alerts: dict[str, Alert],
    ) -> tuple[int, int]:
        window = float((rule.conditions or {}).get("duration") or NODE_OFFLINE_DEFAULT_SECONDS)
        # A node whose agent never connected has nothing to lose contact with.
        silent = (
            node.last_seen_at is not None and (now - node.last_seen_at).total_seconds() > window
        )
        existing = open_alerts.get(service.open_key(rule.id, node.id))
        if not silent:
            if existing is not None and not rule.keep_open:
                return 0, int(
                    await service.resolve(session, existing, by=service.SYSTEM, rule=rule)
                )
            return 0, 0
        if existing is not None or node.last_seen_at is None:
            return 0, 0
        quiet = int((now - node.last_seen_at).total_seconds())
        alert = await service.open_alert(
            session,
            rule,
            service.Firing(
                server_id=None,
                node_id=node.id,
                title=f"Node {node.name} is offline",
                message=f"No heartbeat from the agent of node {node.name} for {quiet} s",
                metadata={"lastHeartbeatAt": node.last_seen_at.isoformat(), "window": window},
            ),
        )
        return (1, 0) if alert is not None else (0, 0)

    async def _targets_gone(
        self,
        session: AsyncSession,
        rules: Sequence[AlertRule],
        open_alerts: dict[str, Alert],
        considered: set[str],
    ) -> int:
        """Resolve threshold and node alerts whose server or node was deleted (or no longer
        reports at all): nothing can clear them any more."""
        by_rule = {r.id: r for r in rules if r.type in ("resource_threshold", "node_offline")}
        resolved = 0
        for key, alert in open_alerts.items():
            rule = by_rule.get(alert.rule_id or "")
            if rule is None or rule.keep_open or key in considered:
                continue
            resolved += int(await service.resolve(session, alert, by=service.SYSTEM, rule=rule))
        return resolved

    async def _crashes_cleared(
        self, session: AsyncSession, rules: Sequence[AlertRule], open_alerts: dict[str, Alert]
    ) -> int:
        crashes = [a for a in open_alerts.values() if a.type == "server_crashed" and a.server_id]
        if not crashes:
            return 0
        by_rule = {r.id: r for r in rules}
        states = await servers.servers_by_id(session, [a.server_id for a in crashes if a.server_id])
        resolved = 0
        for alert in crashes:
            rule = by_rule.get(alert.rule_id or "")
            server = states.get(alert.server_id or "")
            if rule is None or rule.keep_open or server is None:
                continue
            if server.status == "running" and server.status_changed_at > alert.created_at:
                resolved += int(await service.resolve(session, alert, by=service.SYSTEM, rule=rule))
        return resolved
