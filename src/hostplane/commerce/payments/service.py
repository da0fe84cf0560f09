"""Credit top-ups: the payment page, the gateway's signed event, the credit.

A top-up is paid in three steps, each safe to repeat:

1. ``top_up`` asks the gateway for a payment page and records a pending
   top-up with the gateway's session or link id.
2. ``receive_webhook`` verifies the gateway's signature on the raw body and
   stores the event under its unique (gateway, event id); only a new event
   that reports a payment queues the ``payments.apply_event`` job.
3. ``apply_event`` (in that job) locks the top-up, checks the gateway's
   figures against it, credits the wallet under the key ``topup:{id}``,
   issues the numbered invoice and marks the top-up paid, in one
   transaction. The amount credited is the top-up's, confirmed by the
   gateway's signed figures; nothing the payer sends is trusted.

Replays meet the unique event key; two different events for one payment
meet the locked top-up (already paid) and the wallet's unique key.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.invoices import service as invoices
from hostplane.commerce.payments.models import PaymentEvent, TopUp
from hostplane.commerce.payments.providers import registry
from hostplane.commerce.payments.providers.base import CheckoutRequest, VerifiedEvent
from hostplane.commerce.rewards import service as rewards
from hostplane.commerce.wallet import service as wallet
from hostplane.core.clock import utcnow
from hostplane.core.config import Settings
from hostplane.core.errors import ValidationFailed
from hostplane.core.ids import ID_LENGTH, new_id
from hostplane.core.money import MoneyError, to_major, to_minor
from hostplane.platform.jobs import service as jobs

log = structlog.get_logger(__name__)

APPLY_EVENT_JOB = "payments.apply_event"
# Retried with backoff: the database may be briefly away, the event stays stored.
APPLY_EVENT_ATTEMPTS = 10


class GatewayNotAvailable(ValidationFailed):
    code = "GATEWAY_NOT_AVAILABLE"


class UnknownGateway(ValidationFailed):
    code = "UNKNOWN_GATEWAY"


def _field_error(field: str, message: str, code: str = "VALIDATION_ERROR") -> ValidationFailed:
    return ValidationFailed(
        message, code=code, details={"fields": [{"field": field, "message": message}]}
    )


def _gateway_currency(settings: Settings, kind: str) -> str | None:
    configured = (
        settings.payments.stripe.currency
        if kind == "stripe"
        else settings.payments.razorpay.currency
    )
    return configured.upper() if configured else None


def _limits(settings: Settings, kind: str) -> tuple[Decimal, Decimal]:
    gateway = settings.payments.stripe if kind == "stripe" else settings.payments.razorpay
    return gateway.min_amount, gateway.max_amount


def _return_url(settings: Settings, configured: str | None, outcome: str, topup_id: str) -> str:
    if configured:
        base = configured
    else:
        origin = settings.public_url or f"http://{settings.host}:{settings.port}"
        base = f"{origin.rstrip('/')}/billing?topup={outcome}"
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}topupId={topup_id}"


@dataclass(frozen=True, slots=True)
class Caller:
    """The user buying credits."""

    tenant_id: str
    user_id: str
    email: str | None = None


async def top_up(
    session: AsyncSession, caller: Caller, *, settings: Settings, amount: Decimal, method: str
) -> TopUp:
    """A pending top-up with the gateway's payment page for ``amount`` credits.

    Raises :class:`GatewayNotAvailable` for a method whose gateway has no keys
    (or charges another currency than credits), 400 for an amount outside the
    gateway's limits, and the gateway's errors (503/502).
    """
    kind = registry.METHODS.get(method)
    if kind is None:
        raise _field_error("gateway", f"Unknown gateway {method!r}", UnknownGateway.code)
    gateway = registry.gateway(settings.payments, kind)
    offered = registry.offered_methods(settings.payments)
    if gateway is None:
        raise GatewayNotAvailable(
            f"The {method} gateway is not available on this panel",
            details={"gateway": method, "offered": offered},
        )
    currency = wallet.credits_currency(session)
    charged = _gateway_currency(settings, kind) or currency
    if charged != currency:
        # Credits are bought one for one in their own currency; a gateway set
        # to charge another currency is a configuration error, not a rate.
        raise GatewayNotAvailable(
            f"The {method} gateway charges {charged}, but credits are in {currency}",
            details={"gateway": method, "offered": offered},
        )
    try:
        minor = to_minor(amount, currency)
    except MoneyError as exc:
        raise _field_error("amount", str(exc)) from exc
    low, high = _limits(settings, kind)
    if minor < to_minor(low, currency) or minor > to_minor(high, currency):
        raise _field_error(
            "amount",
            f"A {method} top-up is between {low} and {high} {currency}",
            "AMOUNT_OUT_OF_RANGE",
        )
    topup_id = new_id()
    link = await gateway.create_checkout(
        CheckoutRequest(
            topup_id=topup_id,
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            amount=minor,
            currency=currency,
            description=f"{to_major(minor, currency)} {currency} credits",
            success_url=_return_url(settings, settings.payments.success_url, "success", topup_id),
            cancel_url=_return_url(settings, settings.payments.cancel_url, "cancelled", topup_id),
            customer_email=caller.email,
            idempotency_key=f"topup:{topup_id}",
        )
    )
    # The row is written after the gateway answered, so no write lock is held
    # while it is called.
    topup = TopUp(
        id=topup_id,
        tenant_id=caller.tenant_id,
        user_id=caller.user_id,
        gateway=kind,
        method=method,
        amount=minor,
        currency=currency,
        status="pending",
        gateway_reference=link.reference,
        payment_url=link.url,
    )
    session.add(topup)
    await session.flush()
    return topup


@dataclass(frozen=True, slots=True)
class Received:
    event_id: str
    duplicate: bool


async def receive_webhook(
    session: AsyncSession,
    *,
    settings: Settings,
    gateway_name: str,
    payload: bytes,
    headers: dict[str, str],
) -> Received:
    """Verify and store a gateway's event; queue its credit if it is new and reports a payment.

    Raises :class:`UnknownGateway` (400), :class:`GatewayNotAvailable` (400:
    no secret to verify with) or ``BadSignature`` (401); none stores anything.
    """
    kind = registry.WEBHOOK_NAMES.get(gateway_name)
    if kind is None:
        raise UnknownGateway(f"Unknown gateway {gateway_name!r}", details={"gateway": gateway_name})
    gateway = registry.gateway(settings.payments, kind)
    if gateway is None:
        raise GatewayNotAvailable(
            f"The {gateway_name} gateway is not configured on this panel",
            details={"gateway": gateway_name},
        )
    event = gateway.verify_event(payload, headers)
    row_id = await _store_event(session, kind, event)
    if row_id is None:
        return Received(event_id=event.event_id, duplicate=True)
    if event.paid:
        await jobs.enqueue(
            session,
            APPLY_EVENT_JOB,
            max_attempts=APPLY_EVENT_ATTEMPTS,
            unique_key=f"payment-event:{row_id}",
            payment_event_id=row_id,
        )
    return Received(event_id=event.event_id, duplicate=False)


async def _store_event(session: AsyncSession, kind: str, event: VerifiedEvent) -> str | None:
    """Insert the event once; ``None`` when (gateway, event id) was already there."""
    values: dict[str, Any] = {
        "id": new_id(),
        "gateway": kind,
        "event_id": event.event_id[:255],
        "type": event.type[:100],
        "reference": event.reference[:255] if event.reference else None,
        "status": "received" if event.paid else "ignored",
        "topup_id": event.topup_id[:ID_LENGTH] if event.topup_id else None,
        "paid": event.paid,
        # A figure no column can hold is no payment hostplane could have asked for.
        "amount": event.amount if event.amount is not None and 0 <= event.amount < 2**62 else None,
        "currency": event.currency[:3] if event.currency else None,
        "payload": event.payload,
        "received_at": utcnow(),
    }
    # ON CONFLICT DO NOTHING: of two concurrent deliveries of one event, the
    # second waits for the first to commit and then inserts nothing.
    unique = ["gateway", "event_id"]
    if session.get_bind().dialect.name == "postgresql":
        statement = (
            postgresql_insert(PaymentEvent)
            .values(values)
            .on_conflict_do_nothing(index_elements=unique)
            .returning(PaymentEvent.id)
        )
    else:
        statement = (
            sqlite_insert(PaymentEvent)
            .values(values)
            .on_conflict_do_nothing(index_elements=unique)
            .returning(PaymentEvent.id)
        )
    inserted = (await session.execute(statement)).scalar_one_or_none()
    return str(inserted) if inserted is not None else None


class TopUpNotYetThere(Exception):
    """The event names a top-up that is not (yet) committed: try again later."""


async def apply_event(session: AsyncSession, payment_event_id: str, *, final: bool = True) -> str:
    """Credit the top-up a stored, verified payment event reports; its outcome (status).

    With ``final`` false, an event whose top-up is not found raises
    :class:`TopUpNotYetThere` instead of being settled as unmatched: the
    payer may have been faster than the commit of the top-up's row.
    """
    event = await session.get(PaymentEvent, payment_event_id, with_for_update=True)
    if event is None or event.status != "received":
        return event.status if event is not None else "missing"
    topup = None
    if event.reference is not None:
        topup = await session.scalar(
            select(TopUp)
            .where(TopUp.gateway == event.gateway, TopUp.gateway_reference == event.reference)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    if topup is None:
        if not final:
            raise TopUpNotYetThere(f"no top-up has the reference {event.reference!r} yet")
        return _settle(event, "unmatched", "No top-up has this gateway reference")
    mismatch = _mismatch(event, topup)
    event.topup_id = topup.id
    if topup.status == "paid":
        return _settle(event, "processed", "The top-up was already credited")
    if mismatch is not None:
        log.warning(
            "payment event disagrees with its top-up",
            gateway=event.gateway,
            event_id=event.event_id,
            topup_id=topup.id,
            reason=mismatch,
        )
        return _settle(event, "rejected", mismatch)
    result = await wallet.credit(
        session,
        tenant_id=topup.tenant_id,
        user_id=topup.user_id,
        currency="credits",
        amount=topup.amount,
        kind="topup",
        key=f"topup:{topup.id}",
        source=f"gateway:{topup.gateway}",
        reference=f"topup:{topup.id}",
        memo=f"{topup.method} top-up",
    )
    invoice = await invoices.issue_paid(
        session,
        tenant_id=topup.tenant_id,
        user_id=topup.user_id,
        currency=topup.currency,
        lines=[
            invoices.LineItem(
                description=f"Credits top-up ({to_major(topup.amount, topup.currency)} "
                f"{topup.currency})",
                unit_amount=topup.amount,
            )
        ],
        source="topup",
        source_id=topup.id,
        method=topup.method,
        reference=topup.gateway_reference,
    )
    topup.status = "paid"
    topup.paid_at = utcnow()
    topup.paid_event_id = event.id
    topup.ledger_transaction_id = result.transaction.id
    topup.invoice_id = invoice.id
    if result.created:
        # Referral rewards that wait for the referred user's first credit purchase clear now.
        await rewards.note_credit_purchase(
            session, tenant_id=topup.tenant_id, user_id=topup.user_id
        )
    await session.flush()
    return _settle(event, "processed", None)


def _mismatch(event: PaymentEvent, topup: TopUp) -> str | None:
    if event.topup_id is not None and event.topup_id != topup.id:
        return "The event names another top-up"
    if event.amount != topup.amount:
        return f"The gateway reports {event.amount}, the top-up is {topup.amount}"
    if (event.currency or "").upper() != topup.currency:
        return f"The gateway reports {event.currency}, the top-up is in {topup.currency}"
    return None


def _settle(event: PaymentEvent, status: str, detail: str | None) -> str:
    event.status = status
    event.detail = detail
    event.processed_at = utcnow()
    return status
