"""Servers bought with the wallet: the deploy, and reading a server's plan term.

A deploy is one outcome. In one transaction the plan's price is debited
(402 when the balance is short, nothing else happens) and the server is
placed on an online node of the plan with room for it; if no node has room,
the debit is reversed by a refund entry in the same transaction, which
commits with the refusal (409 ``NO_CAPACITY``, the reason and ``refunded``).
Once placed, a job installs the server; if the install fails for good, its
failure hook refunds the charge and removes the server
(:mod:`hostplane.commerce.subscriptions.jobs`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.catalog import service as catalog
from hostplane.commerce.catalog.models import Plan
from hostplane.commerce.subscriptions import events
from hostplane.commerce.subscriptions.models import ServerSubscription
from hostplane.commerce.subscriptions.pricing import DAY_SECONDS
from hostplane.commerce.wallet import service as wallet
from hostplane.core.clock import utcnow
from hostplane.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from hostplane.core.ids import new_id
from hostplane.core.principal import Principal
from hostplane.infra.nodes import service as nodes
from hostplane.infra.nodes.models import Node
from hostplane.infra.servers import allocations, terms
from hostplane.infra.servers import service as servers
from hostplane.infra.servers.models import Server
from hostplane.platform.jobs import service as jobs

PROVISION_JOB = "subscriptions.provision"
# Terms that hold a server (the others are history).
HOLDING = ("provisioning", "active", "suspended")


class SubscriptionNotFound(NotFound):
    def __init__(self, subscription_id: str) -> None:
        super().__init__("subscription", subscription_id)


class NotOnPlan(Conflict):
    code = "NO_PLAN"

    def __init__(self, server_id: str) -> None:
        super().__init__("This server was not bought on a plan", details={"serverId": server_id})


class NoCapacity(Conflict):
    """No node of the plan has room: the charge was refunded, and that refund commits."""

    code = "NO_CAPACITY"
    keep_changes = True


@dataclass(frozen=True)
class Deployed:
    subscription: ServerSubscription
    server: Server
    plan: Plan
    job_id: str


def period_of(plan: Plan) -> timedelta:
    return timedelta(seconds=plan.period_days * DAY_SECONDS)


# --- reading --------------------------------------------------------------------------------


async def get_subscription(
    session: AsyncSession, principal: Principal, subscription_id: str
) -> ServerSubscription:
    """The buyer's own subscription, or any with ``billing.read``; 404 otherwise."""
    subscription = await session.get(ServerSubscription, subscription_id)
    if subscription is None or not (
        subscription.user_id == principal.user_id or principal.has("billing.read")
    ):
        raise SubscriptionNotFound(subscription_id)
    return subscription


async def for_server(
    session: AsyncSession, server_id: str, *, for_update: bool = False
) -> ServerSubscription | None:
    statement = select(ServerSubscription).where(ServerSubscription.server_id == server_id)
    if for_update:
        statement = statement.with_for_update()
    return await session.scalar(statement)


async def load_term(
    session: AsyncSession, principal: Principal, server_id: str
) -> tuple[Server, ServerSubscription, str]:
    """The server (404 as the server routes answer), its term, locked, and its buyer, if
    the caller is the buyer or holds ``billing.write``; 409 ``NO_PLAN`` without a plan."""
    server = await servers.load_for(session, principal, server_id, ("server.read",))
    subscription = await for_server(session, server.id, for_update=True)
    if subscription is None or subscription.status not in HOLDING:
        raise NotOnPlan(server.id)
    if subscription.user_id is None:
        raise Conflict("The account that bought this server is gone; its term cannot change")
    if subscription.user_id != principal.user_id and not principal.has("billing.write"):
        raise Forbidden(
            "Only the buyer renews or changes a server's plan",
            details={"permission": "billing.write"},
        )
    return server, subscription, subscription.user_id


async def _terms(
    session: AsyncSession, server_ids: Collection[str]
) -> Mapping[str, terms.ServerTerm]:
    rows = await session.execute(
        select(ServerSubscription.server_id, Plan.id, Plan.name, ServerSubscription.expires_at)
        .join(Plan, Plan.id == ServerSubscription.plan_id)
        .where(
            ServerSubscription.server_id.in_(list(server_ids)),
            ServerSubscription.status.in_(HOLDING),
        )
    )
    return {
        server_id: terms.ServerTerm(plan_id=plan_id, plan_name=name, expires_at=expires_at)
        for server_id, plan_id, name, expires_at in rows
        if server_id is not None
    }


terms.provide(_terms)


async def plan_was_sold(session: AsyncSession, plan_id: str) -> bool:
    """Whether any server was ever bought on the plan (its terms keep it)."""
    found = await session.scalar(
        select(ServerSubscription.id).where(ServerSubscription.plan_id == plan_id).limit(1)
    )
    return found is not None


# --- placement ------------------------------------------------------------------------------


async def candidate_nodes(
    session: AsyncSession, plan: Plan, *, location_id: str | None
) -> Sequence[Node]:
    """Online nodes the plan may use (in ``location_id`` if given), most free memory first."""
    if location_id is not None and plan.location_ids and location_id not in plan.location_ids:
        raise ValidationFailed(
            "This plan is not sold in that location",
            details={"fields": [{"field": "locationId", "message": "not one of the plan's"}]},
        )
    found = []
    for node in await nodes.list_nodes(session):
        if plan.node_ids and node.id not in plan.node_ids:
            continue
        if plan.location_ids and node.location_id not in plan.location_ids:
            continue
        if location_id is not None and node.location_id != location_id:
            continue
        if nodes.is_online(node):
            used = await servers.node_usage(session, node.id)
            found.append((node.max_memory_mb - used.memory_mb, node.id, node))
    return [node for _free, _id, node in sorted(found, key=lambda x: (-x[0], x[1]))]


async def _place(
    session: AsyncSession,
    principal: Principal,
    plan: Plan,
    *,
    owner_id: str,
    name: str,
    environment: Mapping[str, str],
    location_id: str | None,
) -> Server | None:
    """The server on the first candidate node that fits it, or ``None`` when none does.

    Each try runs in a savepoint, so a node without room leaves nothing behind.
    Variables the caller got wrong are the caller's error (400), not placement's.
    """
    for node in await candidate_nodes(session, plan, location_id=location_id):
        try:
            async with session.begin_nested():
                server = await servers.create_server(
                    session,
                    principal,
                    name=name,
                    template_id=plan.template_id,
                    node_id=node.id,
                    owner_id=owner_id,
                    allocated_memory_mb=plan.memory_mb,
                    allocated_cpu_cores=plan.cpu_cores,
                    allocated_disk_mb=plan.disk_mb,
                    environment=dict(environment),
                    database_limit=plan.databases,
                )
                for _extra in range(plan.allocations - 1):
                    await allocations.add_allocation(session, principal, server.id)
                return server
        except servers.InsufficientResources:
            continue
        except Conflict as exc:
            if exc.code in ("NO_FREE_PORTS", "CONFLICT"):
                continue
            raise
    return None


# --- deploy ---------------------------------------------------------------------------------


async def deploy(
    session: AsyncSession,
    principal: Principal,
    *,
    plan_id: str,
    name: str,
    environment: Mapping[str, str],
    location_id: str | None,
    attempts: int,
) -> Deployed:
    """Charge the plan, place the server, queue its install (see the module's text)."""
    if principal.user_id is None or principal.tenant_id is None:
        raise Forbidden("Only users buy servers")
    if not principal.within_scopes("server.create"):
        # An API key spends its creator's money only when it was minted for that.
        raise Forbidden("This API key may not buy servers", details={"scope": "server.create"})
    plan = await catalog.get_plan(session, plan_id, active_only=True)
    now = utcnow()
    subscription = ServerSubscription(
        id=new_id(),
        user_id=principal.user_id,
        plan_id=plan.id,
        status="provisioning",
        currency_type=plan.currency_type,
        price=plan.price,
        period_seconds=plan.period_days * DAY_SECONDS,
        expires_at=now + period_of(plan),
        renewals=0,
        changes=0,
    )
    key = f"deploy:{subscription.id}"
    if plan.price > 0:
        await wallet.debit(
            session,
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            currency=catalog.as_currency(plan.currency_type),
            amount=plan.price,
            kind="server.deploy",
            key=key,
            sink="sales",
            reference=f"subscription:{subscription.id}",
            memo=f"Server {name} on plan {plan.name}",
        )
        subscription.charge_key = key
    session.add(subscription)
    await session.flush()
    server = await _place(
        session,
        principal,
        plan,
        owner_id=principal.user_id,
        name=name,
        environment=environment,
        location_id=location_id,
    )
    if server is None:
        reason = "No node of this plan has room for the server now"
        await refund(session, subscription, reason=reason)
        raise NoCapacity(
            f"{reason}; the charge was refunded",
            details={"subscriptionId": subscription.id, "refunded": plan.price > 0},
        )
    subscription.server_id = server.id
    await session.flush()
    job = await jobs.enqueue(
        session,
        PROVISION_JOB,
        tenant_id=subscription.tenant_id,
        unique_key=f"provision:{subscription.id}",
        max_attempts=attempts,
        subscription_id=subscription.id,
    )
    events.publish(session, "subscription.created", subscription)
    return Deployed(subscription=subscription, server=server, plan=plan, job_id=job.id)


async def refund(session: AsyncSession, subscription: ServerSubscription, *, reason: str) -> None:
    """Reverse the deploy's charge (once: the refund has its own key) and mark it failed."""
    if subscription.charge_key is not None:
        await wallet.reverse(
            session,
            tenant_id=subscription.tenant_id,
            original_key=subscription.charge_key,
            key=f"{subscription.charge_key}:refund",
            kind="refund",
            memo=reason[:200],
        )
    subscription.status = "failed"
    subscription.failure_reason = reason[:500]
    subscription.ended_at = utcnow()
    await session.flush()
    events.publish(session, "subscription.failed", subscription)


def as_of(subscription: ServerSubscription) -> dict[str, Any]:
    """For answers: the term's fields by their schema names."""
    return {
        "id": subscription.id,
        "server_id": subscription.server_id,
        "plan_id": subscription.plan_id,
        "user_id": subscription.user_id,
        "status": subscription.status,
        "currency_type": subscription.currency_type,
        "expires_at": subscription.expires_at,
        "failure_reason": subscription.failure_reason,
        "created_at": subscription.created_at,
    }
