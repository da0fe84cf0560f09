"""``/api/catalog/plans`` (public) and ``/api/admin/plans`` (operators)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from hostplane.commerce.catalog import service
from hostplane.commerce.catalog.models import Plan
from hostplane.commerce.catalog.schemas import (
    PlanCreate,
    PlanOut,
    PlanPlacement,
    PlanResources,
    PlanUpdate,
    TemplateRef,
)
from hostplane.commerce.subscriptions import service as subscriptions
from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.errors import Conflict
from hostplane.core.http.deps import PrincipalDep, SessionDep, require
from hostplane.core.http.envelope import Empty, Envelope, ok
from hostplane.core.principal import Principal
from hostplane.identity.auth import service as auth
from hostplane.infra.templates import service as templates

router = APIRouter(tags=["catalog"])

PlanReader = Annotated[Principal, Depends(require("plan.read"))]
PlanWriter = Annotated[Principal, Depends(require("plan.write"))]


async def _out(session: SessionDep, plans: list[Plan]) -> list[PlanOut]:
    names = {}
    for template_id in {plan.template_id for plan in plans}:
        names[template_id] = (await templates.get_template(session, template_id)).name
    return [
        PlanOut(
            id=plan.id,
            name=plan.name,
            description=plan.description,
            currency_type=service.as_currency(plan.currency_type),
            currency=service.currency_code(session, plan.currency_type),
            price=service.shown(session, plan.price, plan.currency_type),
            price_minor=plan.price,
            period_days=plan.period_days,
            resources=PlanResources.model_validate(plan),
            template=TemplateRef(id=plan.template_id, name=names[plan.template_id]),
            placement=PlanPlacement(location_ids=plan.location_ids, node_ids=plan.node_ids),
            active=plan.active,
            created_at=plan.created_at,
            updated_at=plan.updated_at,
        )
        for plan in plans
    ]


@router.get("/api/catalog/plans", response_model=Envelope[list[PlanOut]])
async def catalog_plans(
    session: SessionDep,
    principal: PrincipalDep,
    tenant: Annotated[
        str | None,
        Query(max_length=64, description="Tenant slug for anonymous callers; the default one."),
    ] = None,
) -> Envelope[list[PlanOut]]:
    """Public: the plans on sale, cheapest first, with ``currencyType`` (``coins`` or
    ``credits``), price per period, resources, template and where servers are placed."""
    if principal.tenant_id is None:
        # Anonymous visitors browse one tenant's shop: the one they name, or the default.
        scope_to_tenant(session, (await auth.tenant_for_login(session, tenant)).id)
    plans = await service.list_plans(session, include_retired=False)
    return ok(await _out(session, list(plans)))


@router.get("/api/admin/plans", response_model=Envelope[list[PlanOut]])
async def admin_list_plans(session: SessionDep, _principal: PlanReader) -> Envelope[list[PlanOut]]:
    """Every plan of the tenant, retired ones included (``plan.read``)."""
    return ok(await _out(session, list(await service.list_plans(session, include_retired=True))))


@router.post("/api/admin/plans", response_model=Envelope[PlanOut], status_code=201)
async def create_plan(
    body: PlanCreate, session: SessionDep, _principal: PlanWriter
) -> Envelope[PlanOut]:
    """Create a plan (``plan.write``); 404 for an unknown template, location or node."""
    plan = await service.create_plan(session, body.model_dump(by_alias=False))
    return ok((await _out(session, [plan]))[0])


@router.get("/api/admin/plans/{plan_id}", response_model=Envelope[PlanOut])
async def get_plan(plan_id: str, session: SessionDep, _principal: PlanReader) -> Envelope[PlanOut]:
    """One plan (``plan.read``)."""
    return ok((await _out(session, [await service.get_plan(session, plan_id)]))[0])


@router.put("/api/admin/plans/{plan_id}", response_model=Envelope[PlanOut])
async def update_plan(
    plan_id: str, body: PlanUpdate, session: SessionDep, _principal: PlanWriter
) -> Envelope[PlanOut]:
    """Partial update (``plan.write``); ``active: false`` retires a plan from sale. Servers
    already bought on it renew at its new price."""
    plan = await service.update_plan(
        session, plan_id, body.model_dump(by_alias=False, exclude_unset=True)
    )
    return ok((await _out(session, [plan]))[0])


@router.delete("/api/admin/plans/{plan_id}", response_model=Empty)
async def delete_plan(plan_id: str, session: SessionDep, _principal: PlanWriter) -> Empty:
    """Delete a plan nothing was bought on (``plan.write``); 409 otherwise: retire it."""
    await service.get_plan(session, plan_id)
    if await subscriptions.plan_was_sold(session, plan_id):
        raise Conflict(
            "Servers were bought on this plan; retire it (active: false) instead",
            details={"planId": plan_id},
        )
    await service.delete_plan(session, plan_id)
    return Empty()
