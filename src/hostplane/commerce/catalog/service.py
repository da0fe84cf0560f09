"""Plans: the catalogue servers are bought from.

Prices are integer minor units of the plan's currency: whole coins, or the
cents of the credits currency (``wallet.credits_currency()``). Clients send
major units (``4.99``); :func:`to_minor` refuses amounts with more decimals
than the currency has instead of rounding them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.catalog.models import Plan
from hostplane.commerce.wallet import service as wallet
from hostplane.core import money
from hostplane.core.errors import NotFound, ValidationFailed
from hostplane.infra.locations import service as locations
from hostplane.infra.nodes import service as nodes
from hostplane.infra.templates import service as templates


class PlanNotFound(NotFound):
    def __init__(self, plan_id: str) -> None:
        super().__init__("plan", plan_id)


def as_currency(currency_type: str) -> wallet.Currency:
    """A stored currency type as the wallet's type (rows hold only these two)."""
    return "coins" if currency_type == "coins" else "credits"


def currency_code(session: AsyncSession, currency_type: str) -> str:
    """The money code of a wallet currency: ``COINS`` (whole) or the credits' ISO code."""
    return wallet.currency_code(session, as_currency(currency_type))


def price_in_minor(session: AsyncSession, price: Decimal, currency_type: str) -> int:
    try:
        return money.to_minor(price, currency_code(session, currency_type))
    except money.MoneyError as exc:
        raise ValidationFailed(
            str(exc), details={"fields": [{"field": "price", "message": str(exc)}]}
        ) from exc


def shown(session: AsyncSession, minor: int, currency_type: str) -> int | float:
    """A price as the JSON number clients see (credits with decimals, coins whole)."""
    return money.to_json_number(minor, currency_code(session, currency_type))


async def list_plans(session: AsyncSession, *, include_retired: bool) -> Sequence[Plan]:
    statement = select(Plan).order_by(Plan.price, Plan.name, Plan.id)
    if not include_retired:
        statement = statement.where(Plan.active.is_(True))
    return (await session.scalars(statement)).all()


async def get_plan(
    session: AsyncSession, plan_id: str, *, active_only: bool = False, for_update: bool = False
) -> Plan:
    statement = select(Plan).where(Plan.id == plan_id)
    if for_update:
        statement = statement.with_for_update()
    plan = await session.scalar(statement)
    if plan is None or (active_only and not plan.active):
        raise PlanNotFound(plan_id)
    return plan


async def _check_references(session: AsyncSession, values: Mapping[str, Any]) -> None:
    """404 for a template, location or node that is not the tenant's."""
    if values.get("template_id") is not None:
        await templates.get_template(session, values["template_id"])
    for location_id in values.get("location_ids") or ():
        await locations.get_location(session, location_id)
    for node_id in values.get("node_ids") or ():
        await nodes.get_node(session, node_id)


_RESOURCES = ("memory_mb", "cpu_cores", "disk_mb", "databases", "backups", "allocations")
_PLACEMENT = ("location_ids", "node_ids")


def _flatten(changes: Mapping[str, Any]) -> dict[str, Any]:
    values = {k: v for k, v in changes.items() if k not in ("resources", "placement")}
    for group in ("resources", "placement"):
        if changes.get(group) is not None:
            values |= dict(changes[group])
    return values


async def create_plan(session: AsyncSession, values: Mapping[str, Any]) -> Plan:
    flat = _flatten(values)
    await _check_references(session, flat)
    flat["price"] = price_in_minor(session, flat["price"], flat["currency_type"])
    flat["location_ids"] = list(dict.fromkeys(flat.get("location_ids") or []))
    flat["node_ids"] = list(dict.fromkeys(flat.get("node_ids") or []))
    plan = Plan(**flat)
    session.add(plan)
    await session.flush()
    return plan


async def update_plan(session: AsyncSession, plan_id: str, changes: Mapping[str, Any]) -> Plan:
    """Partial update; servers bought on the plan get new prices at their next renewal and
    new resources at their next upgrade or deploy (their own limits stay as bought)."""
    plan = await get_plan(session, plan_id, for_update=True)
    flat = _flatten({k: v for k, v in changes.items() if v is not None or k == "description"})
    await _check_references(session, flat)
    currency_type = flat.get("currency_type", plan.currency_type)
    if "price" in flat:
        flat["price"] = price_in_minor(session, flat["price"], currency_type)
    elif currency_type != plan.currency_type:
        raise ValidationFailed(
            "Give the price in the new currency when the currency changes",
            details={"fields": [{"field": "price", "message": "required with currencyType"}]},
        )
    for key in _PLACEMENT:
        if key in flat:
            flat[key] = list(dict.fromkeys(flat[key]))
    for key, value in flat.items():
        setattr(plan, key, value)
    await session.flush()
    return plan


async def delete_plan(session: AsyncSession, plan_id: str) -> None:
    """Delete a plan nothing was bought on (the caller checks; retire it otherwise)."""
    plan = await get_plan(session, plan_id, for_update=True)
    await session.delete(plan)
    await session.flush()
