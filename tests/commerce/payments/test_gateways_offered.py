"""A gateway without keys is not offered; a panel without any still runs."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.config import Settings
from tests.conftest import make_settings
from tests.support.identity import logged_in
from tests.support.payments import gateway_settings


@pytest.fixture
def settings(tmp_path: Path, _postgres_schema: None, stripe_api: str) -> Settings:
    # Stripe only: Razorpay has no keys.
    return make_settings(tmp_path, payments=gateway_settings(stripe_base=stripe_api))


async def test_a_gateway_without_keys_is_400_naming_it(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    buyer = await logged_in(client, db)
    answer = await client.post(
        "/api/billing/top-up", json={"amount": "10", "gateway": "upi"}, headers=buyer.headers
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "GATEWAY_NOT_AVAILABLE", answer.text
    assert "upi" in error["message"]
    assert error["details"] == {"gateway": "upi", "offered": ["stripe"]}
    webhook = await client.post("/api/billing/webhook/razorpay", content=b"{}")
    assert webhook.status_code == 400
    assert webhook.json()["error"]["code"] == "GATEWAY_NOT_AVAILABLE"


async def test_a_gateway_charging_another_currency_is_not_offered(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    settings.payments.stripe.currency = "EUR"
    buyer = await logged_in(client, db)
    answer = await client.post(
        "/api/billing/top-up", json={"amount": "10", "gateway": "stripe"}, headers=buyer.headers
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "GATEWAY_NOT_AVAILABLE"


async def test_api_keys_cannot_buy_credits(client: httpx.AsyncClient, db: AsyncSession) -> None:
    admin = await logged_in(client, db, role="admin")
    minted = await client.post(
        "/api/account/api-keys",
        json={"name": "bot", "scopes": ["server.start"]},
        headers=admin.headers,
    )
    key = minted.json()["data"]["key"]
    answer = await client.post(
        "/api/billing/top-up",
        json={"amount": "10", "gateway": "stripe"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "USER_REQUIRED"
