"""Renewing and changing the plan of a server, and paying for extra ports.

Every change charges (or credits back) in the same transaction as the change
itself, under the term's row lock, so a refusal leaves the wallet as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.catalog import service as catalog
from hostplane.commerce.subscriptions import events
from hostplane.commerce.subscriptions.models import ServerSubscription
from hostplane.commerce.subscriptions.pricing import DAY_SECONDS, prorated, remaining_seconds
from hostplane.commerce.subscriptions.service import for_server, load_term, period_of
from hostplane.commerce.wallet import service as wallet
from hostplane.core import money
from hostplane.core.clock import utcnow
from hostplane.core.errors import Conflict, ValidationFailed
from hostplane.core.ids import new_id
from hostplane.core.principal import Principal
from hostplane.infra.servers import allocations, terms
from hostplane.infra.servers import service as servers
from hostplane.infra.servers.models import Server, ServerAllocation

# Written on servers the expiry suspends: a renewal lifts only this suspension.
EXPIRY_REASON = "The server's plan expired; renew it to unsuspend"


def system_principal(tenant_id: str) -> Principal:
    """The panel acting on its own (expiry, provisioning) inside one tenant."""
    return Principal(kind="system", id="system", tenant_id=tenant_id, permissions=frozenset({"*"}))


async def renew(
    session: AsyncSession, principal: Principal, server_id: str
) -> tuple[Server, ServerSubscription]:
    """One more period at the plan's current price, from the end of the term (or from now
    when it already ended); a server the expiry suspended is unsuspended."""
    server, subscription, buyer = await load_term(session, principal, server_id)
    if subscription.status == "provisioning":
        raise Conflict("The server is still being set up", details={"status": "provisioning"})
    plan = await catalog.get_plan(session, subscription.plan_id)
    number = subscription.renewals + 1
    if plan.price > 0:
        await wallet.debit(
            session,
            tenant_id=subscription.tenant_id,
            user_id=buyer,
            currency=catalog.as_currency(plan.currency_type),
            amount=plan.price,
            kind="server.renew",
            key=f"renew:{subscription.id}:{number}",
            sink="sales",
            reference=f"subscription:{subscription.id}",
            memo=f"Renewal of server {server.name} on plan {plan.name}",
        )
    now = utcnow()
    subscription.expires_at = max(subscription.expires_at, now) + period_of(plan)
    subscription.renewals = number
    subscription.currency_type = plan.currency_type
    subscription.price = plan.price
    subscription.period_seconds = plan.period_days * DAY_SECONDS
    if subscription.status == "suspended":
        subscription.status = "active"
        subscription.suspended_at = None
        if server.status == "suspended" and server.suspension_reason == EXPIRY_REASON:
            server = await servers.unsuspend_server(
                session, system_principal(subscription.tenant_id), server.id
            )
    await session.flush()
    events.publish(session, "subscription.renewed", subscription)
    return server, subscription


@dataclass(frozen=True)
class PlanChange:
    server: Server
    subscription: ServerSubscription
    charged: int
    credited: int
    limits_applied: str


async def change_plan(
    session: AsyncSession, principal: Principal, server_id: str, plan_id: str
) -> PlanChange:
    """Switch to ``plan_id`` for the rest of the term (its end stays).

    What the rest of the term is worth on the old plan (at the price paid) is
    set against what it costs on the new one, both to the second: the
    difference is charged, or credited back on a downgrade. Across currencies
    the old plan's rest is credited back in its currency and the new plan's
    rest charged in its own. The new limits need room on the server's node
    (400 otherwise, and nothing is charged).
    """
    server, subscription, payer = await load_term(session, principal, server_id)
    if subscription.status != "active":
        raise Conflict(
            "Only a server whose term runs can change plan (renew a suspended one first)",
            details={"status": subscription.status},
        )
    if plan_id == subscription.plan_id:
        raise ValidationFailed(
            "The server is already on this plan",
            details={"fields": [{"field": "planId", "message": "same as the current plan"}]},
        )
    plan = await catalog.get_plan(session, plan_id, active_only=True)
    if plan.template_id != server.template_id:
        raise ValidationFailed(
            "The new plan runs another template; deploy a new server instead",
            details={"fields": [{"field": "planId", "message": "another template"}]},
        )
    seconds = remaining_seconds(subscription.expires_at, utcnow())
    worth = prorated(subscription.price, subscription.period_seconds, seconds)
    cost = prorated(plan.price, plan.period_days * DAY_SECONDS, seconds)
    if plan.currency_type == subscription.currency_type:
        charge, credit = max(cost - worth, 0), max(worth - cost, 0)
    else:
        charge, credit = cost, worth
    number = subscription.changes + 1
    key = f"plan-change:{subscription.id}:{number}"
    if charge > 0:
        await wallet.debit(
            session,
            tenant_id=subscription.tenant_id,
            user_id=payer,
            currency=catalog.as_currency(plan.currency_type),
            amount=charge,
            kind="server.upgrade",
            key=key,
            sink="sales",
            reference=f"subscription:{subscription.id}",
            memo=f"Server {server.name} to plan {plan.name} for {seconds} s",
        )
    if credit > 0:
        await wallet.credit(
            session,
            tenant_id=subscription.tenant_id,
            user_id=payer,
            currency=catalog.as_currency(subscription.currency_type),
            amount=credit,
            kind="server.downgrade",
            key=f"{key}:credit",
            source="sales",
            reference=f"subscription:{subscription.id}",
            memo=f"Unused {seconds} s of the previous plan of server {server.name}",
        )
    applied = await terms.apply_limits(
        session,
        server.id,
        terms.Limits(
            memory_mb=plan.memory_mb,
            cpu_cores=plan.cpu_cores,
            disk_mb=plan.disk_mb,
            database_limit=plan.databases,
        ),
    )
    subscription.plan_id = plan.id
    subscription.currency_type = plan.currency_type
    subscription.price = plan.price
    subscription.period_seconds = plan.period_days * DAY_SECONDS
    subscription.changes = number
    await session.flush()
    events.publish(session, "subscription.changed", subscription)
    return PlanChange(
        server=server,
        subscription=subscription,
        charged=charge,
        credited=credit,
        limits_applied=applied,
    )


@dataclass(frozen=True)
class ExtraPort:
    allocation: ServerAllocation
    currency_type: str
    charged: int


def extra_port_price(
    session: AsyncSession, currency_type: str, *, coins: int, credits: Decimal
) -> int:
    """The configured price of one extra port in minor units of ``currency_type``."""
    if currency_type == "coins":
        return coins
    return money.to_minor(credits, wallet.credits_currency(session))


async def add_paid_port(
    session: AsyncSession,
    principal: Principal,
    server_id: str,
    *,
    coins: int,
    credits: Decimal,
) -> ExtraPort:
    """The lowest free port of the node's pool, charged at ``prices.extraAllocation``.

    In the server's plan currency, or credits for a server without a plan; the
    server's owner pays (the wallet that holds the server), whoever adds it.
    Free when that price is 0.
    """
    allocation = await allocations.add_allocation(session, principal, server_id)
    server = await servers.get_server(session, server_id)
    subscription = await for_server(session, server.id)
    currency_type = subscription.currency_type if subscription is not None else "credits"
    amount = extra_port_price(session, currency_type, coins=coins, credits=credits)
    payer = server.owner_id or principal.user_id
    if amount > 0 and payer is not None:
        await wallet.debit(
            session,
            tenant_id=server.tenant_id,
            user_id=payer,
            currency=catalog.as_currency(currency_type),
            amount=amount,
            kind="server.extra_allocation",
            key=f"extra-allocation:{new_id()}",
            sink="sales",
            reference=f"server:{server.id}",
            memo=f"Port {allocation.host_port} for server {server.name}",
        )
    return ExtraPort(
        allocation=allocation,
        currency_type=currency_type,
        charged=amount if payer is not None else 0,
    )
