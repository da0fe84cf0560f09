"""QeinTech's wallet: balances, the statement, conversion and operator adjustments."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.commerce.wallet import history, operations
from hostplane.commerce.wallet import service as wallet
from hostplane.commerce.wallet.schemas import (
    BalanceAdjust,
    BalanceAdjusted,
    ConvertIn,
    ConvertOut,
    TransactionOut,
    WalletOut,
)
from hostplane.commerce.wallet.service import Currency
from hostplane.core.errors import Forbidden, Unauthorized
from hostplane.core.http.deps import Authenticated, PageDep, RuntimeDep, SessionDep, require
from hostplane.core.http.envelope import Envelope, PageEnvelope, ok, page
from hostplane.core.money import to_json_number
from hostplane.core.principal import Principal
from hostplane.platform.admin import live as live_config
from hostplane.platform.idempotency.http import IdempotencyKey, replayable

router = APIRouter(tags=["wallet"])

BalanceAdjuster = Annotated[Principal, Depends(require("billing.write"))]


def caller_wallet(principal: Principal, *, moves_money: bool = False) -> tuple[str, str]:
    """The caller's tenant and user: wallets belong to users.

    An API key reads its user's wallet; spending or earning from it takes the
    user themselves (a leaked read-only key must not empty a wallet).
    """
    if principal.user_id is None or principal.tenant_id is None:
        raise Unauthorized("Log in as a user to do this", code="USER_REQUIRED")
    if moves_money and principal.kind != "user":
        raise Forbidden(
            "Only a logged-in user can move their own money (not an API key)",
            code="USER_REQUIRED",
        )
    return principal.tenant_id, principal.user_id


async def wallet_out(session: AsyncSession, *, tenant_id: str, user_id: str) -> WalletOut:
    """The user's balances as the wallet routes (and ``/api/auth/me``) show them."""
    found = await wallet.balances(session, tenant_id=tenant_id, user_id=user_id)
    code = wallet.credits_currency(session)
    return WalletOut(
        coins=found.coins,
        credits=to_json_number(found.credits, code),
        credits_currency=code,
    )


@router.get("/api/economy/wallet", response_model=Envelope[WalletOut])
async def get_wallet(session: SessionDep, principal: Authenticated) -> Envelope[WalletOut]:
    """The caller's balances: ``{coins, credits}``, credits in their currency's decimals."""
    tenant_id, user_id = caller_wallet(principal)
    return ok(await wallet_out(session, tenant_id=tenant_id, user_id=user_id))


@router.get("/api/economy/transactions", response_model=PageEnvelope[TransactionOut])
async def list_transactions(
    session: SessionDep,
    principal: Authenticated,
    params: PageDep,
    currency: Annotated[Currency | None, Query()] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
) -> PageEnvelope[TransactionOut]:
    """The caller's statement, newest first: coin earnings, credit purchases and
    spends, each with the balance after it. Filters ``currency`` and ``kind``
    (``reward.daily``, ``topup``, ``server.deploy``, ``conversion``, ...)."""
    tenant_id, user_id = caller_wallet(principal)
    lines, meta = await history.statement(
        session, tenant_id=tenant_id, user_id=user_id, params=params, currency=currency, kind=kind
    )
    return page([_line_out(session, line) for line in lines], meta)


def _line_out(session: AsyncSession, line: history.StatementLine) -> TransactionOut:
    code = wallet.currency_code(session, line.currency)
    return TransactionOut(
        id=line.entry.id,
        transaction_id=line.transaction.id,
        kind=line.transaction.kind,
        currency=line.currency,
        amount=to_json_number(line.entry.amount, code),
        balance_after=to_json_number(line.entry.balance_after, code),
        reference=line.transaction.reference,
        memo=line.transaction.memo,
        created_at=line.entry.created_at,
    )


@router.post("/api/billing/convert", response_model=Envelope[ConvertOut])
async def convert(
    body: ConvertIn,
    session: SessionDep,
    runtime: RuntimeDep,
    principal: Authenticated,
    key: IdempotencyKey = None,
) -> Any:
    """Turn credits into coins at the panel's rate (``economy.coinsPerCredit``).
    Never the other way. 402 ``INSUFFICIENT_FUNDS`` when the credits are not there.
    Accepts ``Idempotency-Key``."""
    tenant_id, user_id = caller_wallet(principal, moves_money=True)
    async with replayable(session, principal, key, scope="billing.convert", body=body) as slot:
        if slot.replay is not None:
            return slot.replay
        rate = live_config.current(runtime).economy.coins_per_credit
        done = await operations.convert_credits(
            session,
            tenant_id=tenant_id,
            user_id=user_id,
            credits=body.credits,
            coins_per_credit=rate,
        )
        code = wallet.credits_currency(session)
        return slot.keep(
            ok(
                ConvertOut(
                    transaction_id=done.transaction.id,
                    credits_spent=to_json_number(done.credits_spent, code),
                    coins_received=done.coins_received,
                    rate=rate,
                    wallet=await wallet_out(session, tenant_id=tenant_id, user_id=user_id),
                )
            )
        )


@router.post("/api/admin/users/{user_id}/balance", response_model=Envelope[BalanceAdjusted])
async def adjust_balance(
    body: BalanceAdjust,
    session: SessionDep,
    principal: BalanceAdjuster,
    user_id: Annotated[str, Path(max_length=40)],
    key: IdempotencyKey = None,
) -> Any:
    """Add to or take from a user's coins or credits (``billing.write``), with a
    reason kept on the movement and in the audit log. Never below zero: 402
    ``INSUFFICIENT_FUNDS``. Accepts ``Idempotency-Key``."""
    async with replayable(session, principal, key, scope="admin.balance", body=body) as slot:
        if slot.replay is not None:
            return slot.replay
        transaction = await operations.adjust_balance(
            session,
            principal,
            user_id=user_id,
            amount=body.amount,
            currency=body.currency,
            reason=body.reason,
        )
        return slot.keep(
            ok(
                BalanceAdjusted(
                    user_id=user_id,
                    transaction_id=transaction.id,
                    wallet=await wallet_out(
                        session, tenant_id=transaction.tenant_id, user_id=user_id
                    ),
                )
            )
        )
