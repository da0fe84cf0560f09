"""QeinTech's server purchase routes: deploy, renew, upgrade, and paid extra ports;
mPanel's ``GET /api/subscriptions/{id}`` to follow a deploy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hostplane.commerce.catalog import service as catalog
from hostplane.commerce.subscriptions import changes, service
from hostplane.commerce.subscriptions import expiry as _expiry  # noqa: F401 - registers the jobs
from hostplane.commerce.subscriptions import jobs as _jobs  # noqa: F401 - registers the jobs
from hostplane.commerce.subscriptions.models import ServerSubscription
from hostplane.commerce.subscriptions.schemas import (
    DeployBody,
    DeployOut,
    PaidAllocationOut,
    RenewOut,
    SubscriptionOut,
    UpgradeBody,
    UpgradeOut,
)
from hostplane.core.http.deps import Authenticated, RuntimeDep, SessionDep
from hostplane.core.http.envelope import Envelope, ErrorBody, ErrorEnvelope, ok
from hostplane.infra.servers import service as servers
from hostplane.platform.admin import live as live_config
from hostplane.platform.idempotency.http import IdempotencyKey, replayable

router = APIRouter(tags=["servers"])


def _subscription(subscription: ServerSubscription) -> SubscriptionOut:
    return SubscriptionOut.model_validate(service.as_of(subscription))


@router.post("/api/servers/deploy", response_model=Envelope[DeployOut], status_code=201)
async def deploy(
    body: DeployBody,
    session: SessionDep,
    runtime: RuntimeDep,
    principal: Authenticated,
    key: IdempotencyKey = None,
) -> Any:
    """Buy a server on a plan: the plan's price is debited in its currency (402
    ``INSUFFICIENT_FUNDS`` when the balance is short) and the server is placed on a node
    of the plan with room; 409 ``NO_CAPACITY`` when none has (the charge is refunded). Its
    install runs as a job; if it fails for good the charge is refunded and the server
    removed (``GET /api/subscriptions/{id}`` says why). Accepts ``Idempotency-Key``."""
    async with replayable(session, principal, key, scope="servers.deploy", body=body) as slot:
        if slot.replay is not None:
            return slot.replay
        try:
            done = await service.deploy(
                session,
                principal,
                plan_id=body.plan_id,
                name=body.name,
                environment=body.environment,
                location_id=body.location_id,
                attempts=runtime.settings.billing.provision_attempts,
            )
        except service.NoCapacity as exc:
            # This refusal commits (the charge and its refund): the key replays it.
            slot.keep(
                ErrorEnvelope(
                    error=ErrorBody(code=exc.code, message=exc.message, details=exc.details)
                ),
                status_code=exc.status,
            )
            raise
        out = ok(
            DeployOut(
                message="Server deployed; it is being installed",
                server_id=done.server.id,
                name=done.server.name,
                status=done.server.status,
                plan=done.plan.name,
                plan_id=done.plan.id,
                expires_at=done.subscription.expires_at,
                subscription=_subscription(done.subscription),
                job_id=done.job_id,
                charged=catalog.shown(session, done.plan.price, done.plan.currency_type),
            )
        )
        return slot.keep(out, status_code=201)


@router.post("/api/servers/{server_id}/renew", response_model=Envelope[RenewOut])
async def renew(
    server_id: str, session: SessionDep, principal: Authenticated, key: IdempotencyKey = None
) -> Any:
    """Extend the term by one period at the plan's current price, in its currency (402
    when short). A server suspended because its term ended is unsuspended. The buyer, or
    ``billing.write``. Accepts ``Idempotency-Key``."""
    async with replayable(
        session, principal, key, scope=f"servers.renew:{server_id}", body=None
    ) as slot:
        if slot.replay is not None:
            return slot.replay
        server, subscription = await changes.renew(session, principal, server_id)
        out = ok(
            RenewOut(
                server_id=server.id,
                status=server.status,
                expires_at=subscription.expires_at,
                charged=catalog.shown(session, subscription.price, subscription.currency_type),
                currency_type=catalog.as_currency(subscription.currency_type),
                subscription=_subscription(subscription),
            )
        )
        return slot.keep(out)


@router.post("/api/servers/{server_id}/upgrade", response_model=Envelope[UpgradeOut])
async def upgrade(
    server_id: str,
    body: UpgradeBody,
    session: SessionDep,
    principal: Authenticated,
    key: IdempotencyKey = None,
) -> Any:
    """Switch the server to another plan of the same template for the rest of its term:
    the difference for the remaining seconds is charged, or credited back on a downgrade.
    The new limits reach the agent at the server's next start (``limitsApplied``).
    Accepts ``Idempotency-Key``."""
    async with replayable(
        session, principal, key, scope=f"servers.upgrade:{server_id}", body=body
    ) as slot:
        if slot.replay is not None:
            return slot.replay
        old = await service.for_server(session, server_id)
        old_currency = old.currency_type if old is not None else "credits"
        change = await changes.change_plan(session, principal, server_id, body.plan_id)
        plan = await catalog.get_plan(session, change.subscription.plan_id)
        server = change.server
        out = ok(
            UpgradeOut(
                server_id=server.id,
                plan=plan.name,
                plan_id=plan.id,
                expires_at=change.subscription.expires_at,
                charged=catalog.shown(session, change.charged, plan.currency_type),
                credited=catalog.shown(session, change.credited, old_currency),
                limits_applied="live" if change.limits_applied == "live" else "next_start",
                allocated_memory_mb=server.allocated_memory_mb,
                allocated_cpu_cores=server.allocated_cpu_cores,
                allocated_disk_mb=server.allocated_disk_mb,
                database_limit=server.database_limit,
                subscription=_subscription(change.subscription),
            )
        )
        return slot.keep(out)


@router.post(
    "/api/servers/{server_id}/network/allocations",
    response_model=Envelope[PaidAllocationOut],
    status_code=201,
)
async def auto_allocate(
    server_id: str,
    session: SessionDep,
    runtime: RuntimeDep,
    principal: Authenticated,
    key: IdempotencyKey = None,
) -> Any:
    """Assign the lowest free port of the node's pool (server stopped), charged at the
    runtime configuration's ``prices.extraAllocation`` in the server's plan currency
    (credits without a plan) to the server's owner; free when that price is 0. Accepts
    ``Idempotency-Key``."""
    async with replayable(
        session, principal, key, scope=f"servers.allocate:{server_id}", body=None
    ) as slot:
        if slot.replay is not None:
            return slot.replay
        price = live_config.current(runtime).prices.extra_allocation
        added = await changes.add_paid_port(
            session, principal, server_id, coins=price.coins, credits=price.credits
        )
        server = await servers.get_server(session, server_id)
        node, _template = await servers.node_and_template(session, server)
        allocation = added.allocation
        out = ok(
            PaidAllocationOut(
                container_port=allocation.container_port,
                host_port=allocation.host_port,
                is_primary=allocation.is_primary,
                ip=node.public_address,
                port=allocation.host_port,
                charged=catalog.shown(session, added.charged, added.currency_type),
                currency_type=catalog.as_currency(added.currency_type),
            )
        )
        return slot.keep(out, status_code=201)


@router.get("/api/subscriptions/{subscription_id}", response_model=Envelope[SubscriptionOut])
async def get_subscription(
    subscription_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[SubscriptionOut]:
    """A server's plan term: its status (``failed`` with the reason when a deploy was
    refunded) and when it ends. The buyer's own, or any with ``billing.read``."""
    subscription = await service.get_subscription(session, principal, subscription_id)
    return ok(_subscription(subscription))
